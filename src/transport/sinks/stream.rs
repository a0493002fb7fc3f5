//! A TCP or TLS connection to a receiver (tcp_json, syslog over TCP/TLS), and what
//! "delivered" means on it: the receiver's TCP stack acknowledged every byte written (the
//! socket's send queue is empty, the connection was not reset). TCP inputs (Splunk's, Logstash's
//! `tcp` with `json_lines`) have no application acknowledgment; this is the most they allow.

use crate::config::sinks::TlsConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// TLS settings resolved: the connector and the name checked in the receiver's certificate.
#[derive(Clone)]
pub struct Tls {
    connector: tokio_rustls::TlsConnector,
    name: ServerName<'static>,
}

/// rustls client config with the ring provider: the CAs of `ca_file` only (pinning), or the
/// webpki roots.
pub fn client_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("ca_file {}: no certificate in it", path.display()));
            }
            for c in certs {
                roots
                    .add(c)
                    .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Tls {
    pub fn new(tls: &TlsConfig, address: &str) -> Result<Tls, String> {
        let host = tls.server_name.clone().unwrap_or_else(|| {
            address
                .rsplit_once(':')
                .map(|(h, _)| h.trim_start_matches('[').trim_end_matches(']').to_owned())
                .unwrap_or_default()
        });
        let name =
            ServerName::try_from(host.clone()).map_err(|e| format!("server name '{host}': {e}"))?;
        Ok(Tls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(client_config(tls)?)),
            name,
        })
    }
}

pub enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Conn {
    pub async fn connect(
        address: &str,
        tls: Option<&Tls>,
        limit: Duration,
    ) -> Result<Conn, String> {
        let tcp = timeout(limit, TcpStream::connect(address))
            .await
            .map_err(|_| format!("connect to {address}: timed out"))?
            .map_err(|e| format!("connect to {address}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        match tls {
            None => Ok(Conn::Plain(tcp)),
            Some(t) => {
                let s = timeout(limit, t.connector.connect(t.name.clone(), tcp))
                    .await
                    .map_err(|_| format!("TLS handshake with {address}: timed out"))?
                    .map_err(|e| format!("TLS handshake with {address}: {e}"))?;
                Ok(Conn::Tls(Box::new(s)))
            }
        }
    }

    /// Send `buf` on the kept connection `conn`, (re)connecting first when there is none or
    /// the receiver closed it.
    pub async fn send_kept(
        conn: &mut Option<Conn>,
        address: &str,
        tls: Option<&Tls>,
        limit: Duration,
        buf: &[u8],
    ) -> Result<(), String> {
        if conn.as_ref().is_some_and(|c| !c.alive()) {
            *conn = None;
        }
        let c = match conn {
            Some(c) => c,
            None => conn.insert(Conn::connect(address, tls, limit).await?),
        };
        c.send(buf, limit).await
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(s) => s,
            Conn::Tls(s) => s.get_ref().0,
        }
    }

    /// The connection is still established (the receiver did not close or reset it).
    pub fn alive(&self) -> bool {
        matches!(tcp_state(self.tcp()), Some(s) if s == TCP_ESTABLISHED)
    }

    /// Write `buf` and wait until the receiver's TCP stack acknowledged all of it.
    pub async fn send(&mut self, buf: &[u8], limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let write = async {
            match self {
                Conn::Plain(s) => {
                    s.write_all(buf).await?;
                    s.flush().await
                }
                Conn::Tls(s) => {
                    s.write_all(buf).await?;
                    s.flush().await
                }
            }
        };
        tokio::time::timeout_at(deadline, write)
            .await
            .map_err(|_| "write timed out".to_string())?
            .map_err(|e| format!("write: {e}"))?;
        // Poll the send queue: a few ms on a LAN, longer when the receiver is slow.
        let mut pause = Duration::from_millis(1);
        loop {
            let tcp = self.tcp();
            if let Some(e) = tcp.take_error().ok().flatten() {
                return Err(format!("connection failed: {e}"));
            }
            let state = tcp_state(tcp);
            let queued = send_queue(tcp);
            if queued == Some(0) && matches!(state, Some(TCP_ESTABLISHED | TCP_CLOSE_WAIT)) {
                return Ok(());
            }
            if !matches!(state, Some(TCP_ESTABLISHED | TCP_CLOSE_WAIT)) {
                return Err(
                    "connection closed by the receiver before it acknowledged the batch".into(),
                );
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the receiver did not acknowledge {} byte(s) within {limit:?}",
                    queued.unwrap_or(0)
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }
}

const TCP_ESTABLISHED: u8 = 1;
const TCP_CLOSE_WAIT: u8 = 8;

/// The kernel's TCP state of the socket.
fn tcp_state(s: &TcpStream) -> Option<u8> {
    // SAFETY: TCP_INFO fills at most `len` bytes of the zeroed tcp_info we own; `len` is its size.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let r = libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        (r == 0).then_some(info.tcpi_state)
    }
}

/// Bytes written and not yet acknowledged by the peer (SIOCOUTQ).
fn send_queue(s: &TcpStream) -> Option<i32> {
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (= TIOCOUTQ) writes one int into `n`, which we own.
    let r = unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    (r == 0).then_some(n)
}
