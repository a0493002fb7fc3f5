//! A minimal ZMTP 3 (RFC 23) client socket with REQ semantics over a tokio TCP stream.
//!
//! Only what talking to a salt-master's request server needs: the NULL security mechanism,
//! the READY handshake announcing `Socket-Type: REQ`, and strictly alternating
//! request/reply messages, each preceded by the empty delimiter frame that a REQ socket adds
//! and the master's ROUTER socket expects. Commands the peer may send between messages
//! (`PING` from a heartbeating libzmq, unknown ones) are answered or skipped.
//!
//! There is no automatic reconnect: a socket whose request failed or timed out is dropped by
//! its owner and a new one is built, so no reply can ever be matched to the wrong request.

use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

/// The largest frame accepted from a master. Replies to `_auth` and `_minion_event` are a
/// few KiB; anything near this is a broken or hostile peer, not a reply.
pub const MAX_FRAME: u64 = 16 * 1024 * 1024;

const FLAG_MORE: u8 = 0x01;
const FLAG_LONG: u8 = 0x02;
const FLAG_COMMAND: u8 = 0x04;

/// What can go wrong on the wire.
#[derive(Debug, thiserror::Error)]
pub enum ZmtpError {
    #[error("timed out")]
    Timeout,
    #[error("cannot resolve {0}")]
    Resolve(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("ZMTP handshake failed: {0}")]
    Handshake(String),
    #[error("ZMTP protocol error: {0}")]
    Protocol(String),
    #[error("peer sent ZMTP ERROR: {0}")]
    PeerError(String),
}

/// One connected REQ socket. Dropping it closes the TCP connection.
#[derive(Debug)]
pub struct ReqSocket {
    stream: BufReader<TcpStream>,
    peer: String,
}

/// The 64-byte ZMTP 3.0 greeting for the NULL mechanism, as a client.
fn greeting() -> [u8; 64] {
    let mut g = [0u8; 64];
    g[0] = 0xFF;
    g[9] = 0x7F;
    g[10] = 3; // version major
    g[11] = 0; // version minor: 3.0 is what we speak; a 3.1 peer downgrades to it
    g[12..16].copy_from_slice(b"NULL");
    // g[32] = 0: as-server false; the rest is filler.
    g
}

/// A command frame body: name-size, name, data.
fn command(name: &str, data: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(1 + name.len() + data.len());
    body.push(name.len() as u8);
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(data);
    body
}

/// Metadata property as READY carries it: name-size, name, value-size (u32 BE), value.
fn property(name: &str, value: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(5 + name.len() + value.len());
    p.push(name.len() as u8);
    p.extend_from_slice(name.as_bytes());
    p.extend_from_slice(&(value.len() as u32).to_be_bytes());
    p.extend_from_slice(value);
    p
}

/// Parse READY metadata into (name, value) pairs.
fn parse_properties(mut data: &[u8]) -> Result<Vec<(String, Vec<u8>)>, ZmtpError> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let n = data[0] as usize;
        if data.len() < 1 + n + 4 {
            return Err(ZmtpError::Handshake("truncated READY metadata".into()));
        }
        let name = String::from_utf8_lossy(&data[1..1 + n]).into_owned();
        let mut len = [0u8; 4];
        len.copy_from_slice(&data[1 + n..1 + n + 4]);
        let vlen = u32::from_be_bytes(len) as usize;
        let start = 1 + n + 4;
        if data.len() < start + vlen {
            return Err(ZmtpError::Handshake("truncated READY metadata".into()));
        }
        out.push((name, data[start..start + vlen].to_vec()));
        data = &data[start + vlen..];
    }
    Ok(out)
}

/// Frame header for a body of `len` bytes.
fn frame_header(flags: u8, len: usize) -> Vec<u8> {
    if len <= 255 {
        vec![flags, len as u8]
    } else {
        let mut h = Vec::with_capacity(9);
        h.push(flags | FLAG_LONG);
        h.extend_from_slice(&(len as u64).to_be_bytes());
        h
    }
}

/// One frame as read from the wire.
struct Frame {
    flags: u8,
    body: Vec<u8>,
}

impl ReqSocket {
    /// Connect to `host:port` and complete the ZMTP handshake before `deadline`.
    pub async fn connect(addr: &str, deadline: Instant) -> Result<Self, ZmtpError> {
        timeout_at(deadline, Self::connect_inner(addr))
            .await
            .map_err(|_| ZmtpError::Timeout)?
    }

    async fn connect_inner(addr: &str) -> Result<Self, ZmtpError> {
        let addrs: Vec<_> = tokio::net::lookup_host(addr)
            .await
            .map_err(|_| ZmtpError::Resolve(addr.to_owned()))?
            .collect();
        if addrs.is_empty() {
            return Err(ZmtpError::Resolve(addr.to_owned()));
        }
        let mut last = None;
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect(a).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = match stream {
            Some(s) => s,
            None => {
                return Err(last
                    .map(ZmtpError::Io)
                    .unwrap_or_else(|| ZmtpError::Resolve(addr.to_owned())))
            }
        };
        stream.set_nodelay(true)?;
        let mut sock = ReqSocket {
            stream: BufReader::new(stream),
            peer: addr.to_owned(),
        };
        sock.handshake().await?;
        Ok(sock)
    }

    async fn handshake(&mut self) -> Result<(), ZmtpError> {
        self.stream.get_mut().write_all(&greeting()).await?;
        let mut peer = [0u8; 64];
        self.stream.read_exact(&mut peer).await?;
        if peer[0] != 0xFF || peer[9] & 0x01 != 0x01 {
            return Err(ZmtpError::Handshake(format!(
                "{} is not a ZeroMQ endpoint (bad greeting signature)",
                self.peer
            )));
        }
        if peer[10] < 3 {
            return Err(ZmtpError::Handshake(format!(
                "{} speaks ZMTP {}.x; 3.0 or later is needed",
                self.peer, peer[10]
            )));
        }
        let mech_end = peer[12..32].iter().position(|&b| b == 0).unwrap_or(20);
        let mech = &peer[12..12 + mech_end];
        if mech != b"NULL" {
            return Err(ZmtpError::Handshake(format!(
                "{} wants security mechanism {:?}; only NULL is supported",
                self.peer,
                String::from_utf8_lossy(mech)
            )));
        }
        let ready = command("READY", &property("Socket-Type", b"REQ"));
        self.write_frame(FLAG_COMMAND, &ready).await?;
        // The peer's READY (or ERROR) comes next.
        let f = self.read_frame().await?;
        if f.flags & FLAG_COMMAND == 0 {
            return Err(ZmtpError::Handshake("expected READY, got a message".into()));
        }
        let (name, data) = split_command(&f.body)?;
        match name {
            "READY" => {
                let props = parse_properties(data)?;
                let st = props
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case("Socket-Type"))
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                if st != "ROUTER" && st != "REP" {
                    return Err(ZmtpError::Handshake(format!(
                        "{} is a {st:?} socket; a REQ client needs ROUTER or REP",
                        self.peer
                    )));
                }
                Ok(())
            }
            "ERROR" => Err(ZmtpError::PeerError(error_reason(data))),
            other => Err(ZmtpError::Handshake(format!(
                "expected READY, got command {other:?}"
            ))),
        }
    }

    async fn write_frame(&mut self, flags: u8, body: &[u8]) -> Result<(), ZmtpError> {
        let mut buf = frame_header(flags, body.len());
        buf.extend_from_slice(body);
        self.stream.get_mut().write_all(&buf).await?;
        Ok(())
    }

    async fn read_frame(&mut self) -> Result<Frame, ZmtpError> {
        let flags = self.stream.read_u8().await?;
        if flags & !(FLAG_MORE | FLAG_LONG | FLAG_COMMAND) != 0 {
            return Err(ZmtpError::Protocol(format!("bad frame flags {flags:#04x}")));
        }
        let len = if flags & FLAG_LONG != 0 {
            self.stream.read_u64().await?
        } else {
            u64::from(self.stream.read_u8().await?)
        };
        if len > MAX_FRAME {
            return Err(ZmtpError::Protocol(format!(
                "frame of {len} bytes exceeds the {MAX_FRAME}-byte limit"
            )));
        }
        let mut body = vec![0u8; len as usize];
        self.stream.read_exact(&mut body).await?;
        Ok(Frame { flags, body })
    }

    /// Send one request (a single message frame after the REQ delimiter) and wait for the
    /// reply before `deadline`. On any error the socket must be dropped: its REQ state is
    /// unknown.
    pub async fn request(&mut self, body: &[u8], deadline: Instant) -> Result<Vec<u8>, ZmtpError> {
        timeout_at(deadline, self.request_inner(body))
            .await
            .map_err(|_| ZmtpError::Timeout)?
    }

    async fn request_inner(&mut self, body: &[u8]) -> Result<Vec<u8>, ZmtpError> {
        // Delimiter and message in one write.
        let mut buf = frame_header(FLAG_MORE, 0);
        buf.extend_from_slice(&frame_header(0, body.len()));
        buf.extend_from_slice(body);
        self.stream.get_mut().write_all(&buf).await?;
        self.stream.get_mut().flush().await?;

        let mut parts: Vec<Vec<u8>> = Vec::new();
        loop {
            let f = self.read_frame().await?;
            if f.flags & FLAG_COMMAND != 0 {
                self.handle_command(&f.body).await?;
                continue;
            }
            let more = f.flags & FLAG_MORE != 0;
            parts.push(f.body);
            if !more {
                break;
            }
            if parts.len() > 16 {
                return Err(ZmtpError::Protocol("reply has too many frames".into()));
            }
        }
        // A REQ socket strips the envelope up to and including the empty delimiter.
        let Some(delim) = parts.iter().position(|p| p.is_empty()) else {
            return Err(ZmtpError::Protocol(
                "reply without the REQ delimiter".into(),
            ));
        };
        let mut rest = parts.split_off(delim + 1);
        match rest.len() {
            1 => Ok(rest.remove(0)),
            n => Err(ZmtpError::Protocol(format!(
                "expected a one-frame reply, got {n} frames"
            ))),
        }
    }

    async fn handle_command(&mut self, body: &[u8]) -> Result<(), ZmtpError> {
        let (name, data) = split_command(body)?;
        match name {
            "PING" => {
                // PING: TTL (2 bytes) then context, echoed back in PONG.
                let ctx = data.get(2..).unwrap_or(&[]);
                let pong = command("PONG", ctx);
                self.write_frame(FLAG_COMMAND, &pong).await
            }
            "ERROR" => Err(ZmtpError::PeerError(error_reason(data))),
            _ => Ok(()),
        }
    }
}

fn split_command(body: &[u8]) -> Result<(&str, &[u8]), ZmtpError> {
    let n = *body
        .first()
        .ok_or_else(|| ZmtpError::Protocol("empty command frame".into()))? as usize;
    if body.len() < 1 + n {
        return Err(ZmtpError::Protocol("truncated command name".into()));
    }
    let name = std::str::from_utf8(&body[1..1 + n])
        .map_err(|_| ZmtpError::Protocol("command name is not ASCII".into()))?;
    Ok((name, &body[1 + n..]))
}

fn error_reason(data: &[u8]) -> String {
    match data.split_first() {
        Some((&n, rest)) => String::from_utf8_lossy(&rest[..rest.len().min(n as usize)]).into(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn deadline_in(d: Duration) -> Instant {
        Instant::now() + d
    }
    use tokio::net::TcpListener;

    /// A tiny ROUTER-ish peer: handshake, then echo each request body reversed.
    async fn fake_router(listener: TcpListener, socket_type: &'static [u8]) {
        let (mut s, _) = listener.accept().await.expect("accept");
        let mut g = [0u8; 64];
        s.read_exact(&mut g).await.expect("greeting");
        let mut mine = greeting();
        mine[11] = 1;
        mine[32] = 1;
        s.write_all(&mine).await.expect("write greeting");
        // client READY
        let _flags = s.read_u8().await.expect("flags");
        let len = s.read_u8().await.expect("len");
        let mut b = vec![0; len as usize];
        s.read_exact(&mut b).await.expect("ready");
        let r = command("READY", &property("Socket-Type", socket_type));
        let mut out = frame_header(FLAG_COMMAND, r.len());
        out.extend_from_slice(&r);
        s.write_all(&out).await.expect("ready out");
        loop {
            // delimiter
            let Ok(f) = s.read_u8().await else { return };
            assert_eq!(f, FLAG_MORE);
            assert_eq!(s.read_u8().await.expect("len"), 0);
            let f = s.read_u8().await.expect("flags");
            let len = if f & FLAG_LONG != 0 {
                s.read_u64().await.expect("len") as usize
            } else {
                s.read_u8().await.expect("len") as usize
            };
            let mut body = vec![0; len];
            s.read_exact(&mut body).await.expect("body");
            body.reverse();
            // a PING first, to check that it is answered and skipped
            let ping = command("PING", &[0, 10, b'x']);
            let mut out = frame_header(FLAG_COMMAND, ping.len());
            out.extend_from_slice(&ping);
            out.extend_from_slice(&frame_header(FLAG_MORE, 0));
            out.extend_from_slice(&frame_header(0, body.len()));
            out.extend_from_slice(&body);
            s.write_all(&out).await.expect("reply");
            // PONG back
            let f = s.read_u8().await.expect("pong flags");
            assert_eq!(f, FLAG_COMMAND);
            let len = s.read_u8().await.expect("len");
            let mut b = vec![0; len as usize];
            s.read_exact(&mut b).await.expect("pong");
            assert_eq!(&b[..5], b"\x04PONG");
            assert_eq!(&b[5..], b"x");
        }
    }

    #[tokio::test]
    async fn request_reply_short_and_long_frames() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let server = tokio::spawn(fake_router(l, b"ROUTER"));
        let mut s = ReqSocket::connect(&addr, deadline_in(Duration::from_secs(5)))
            .await
            .expect("connect");
        let r = s
            .request(b"abc", deadline_in(Duration::from_secs(5)))
            .await
            .expect("req");
        assert_eq!(r, b"cba");
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let r = s
            .request(&big, deadline_in(Duration::from_secs(5)))
            .await
            .expect("req");
        let mut rev = big.clone();
        rev.reverse();
        assert_eq!(r, rev);
        drop(s);
        server.await.expect("server");
    }

    #[tokio::test]
    async fn refuses_wrong_socket_type() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        let _server = tokio::spawn(fake_router(l, b"PUB"));
        let e = ReqSocket::connect(&addr, deadline_in(Duration::from_secs(5)))
            .await
            .expect_err("must refuse");
        assert!(e.to_string().contains("PUB"), "{e}");
    }

    #[tokio::test]
    async fn silent_peer_times_out() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        // Accepts (the kernel does) but never speaks.
        let t0 = Instant::now();
        let e = ReqSocket::connect(&addr, deadline_in(Duration::from_millis(200)))
            .await
            .expect_err("must time out");
        assert!(matches!(e, ZmtpError::Timeout));
        assert!(t0.elapsed() < Duration::from_secs(2));
        drop(l);
    }

    #[tokio::test]
    async fn refused_connection_is_an_error() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr").to_string();
        drop(l);
        let e = ReqSocket::connect(&addr, deadline_in(Duration::from_secs(5)))
            .await
            .expect_err("refused");
        assert!(matches!(e, ZmtpError::Io(_)), "{e:?}");
    }
}
