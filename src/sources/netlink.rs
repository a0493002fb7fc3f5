//! Netlink sockets, shared by every netlink client (rtnetlink for `network_settings`,
//! sock_diag for `listening_ports`, the proc connector for `sh`): open, bind to multicast
//! groups, dump, receive, and parse the few message layouts beacond needs (`ifinfomsg`,
//! `ifaddrmsg`, `ndmsg` and their attributes). The socket is `socket2`'s and the bind and
//! `SO_RCVBUFFORCE` are `nix`'s, so no socket call is hand-written; the netlink crates bring far
//! more than these few message layouts.

use nix::sys::socket::{setsockopt, sockopt, NetlinkAddr};
use socket2::{Domain, Protocol, Type};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

pub const RTMGRP_LINK: u32 = 0x1;
pub const RTMGRP_NEIGH: u32 = 0x4;
pub const RTMGRP_IPV4_IFADDR: u32 = 0x10;
pub const RTMGRP_IPV6_IFADDR: u32 = 0x100;

pub const NLMSG_ERROR: u16 = 2;
pub const NLMSG_DONE: u16 = 3;
pub const RTM_NEWLINK: u16 = 16;
pub const RTM_DELLINK: u16 = 17;
pub const RTM_GETLINK: u16 = 18;
pub const RTM_NEWADDR: u16 = 20;
pub const RTM_DELADDR: u16 = 21;
pub const RTM_GETADDR: u16 = 22;
pub const RTM_NEWNEIGH: u16 = 28;
pub const RTM_DELNEIGH: u16 = 29;
pub const RTM_GETNEIGH: u16 = 30;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
pub const NLMSG_HDRLEN: usize = 16;

/// An `AF_NETLINK` socket; closed on drop.
pub struct Socket {
    sock: socket2::Socket,
}

impl Socket {
    /// A `NETLINK_ROUTE` socket bound to `groups` (0 for a request-only socket).
    pub fn open(groups: u32, nonblocking: bool) -> io::Result<Socket> {
        Self::open_protocol(libc::NETLINK_ROUTE, groups, nonblocking)
    }

    /// A raw netlink socket of any protocol (`NETLINK_SOCK_DIAG` for socket dumps), with a
    /// 1 MiB receive buffer: overflow (ENOBUFS) stays rare on hosts with many interfaces.
    pub fn open_protocol(protocol: i32, groups: u32, nonblocking: bool) -> io::Result<Socket> {
        let s = Self::open_with(Type::RAW, protocol, nonblocking)?;
        let _ = s.sock.set_recv_buffer_size(1 << 20);
        s.bind(groups)?;
        Ok(s)
    }

    /// An unbound netlink socket of type `ty` (CLOEXEC, as socket2 always opens them).
    pub fn open_with(ty: Type, protocol: i32, nonblocking: bool) -> io::Result<Socket> {
        let sock = socket2::Socket::new(
            Domain::from(libc::AF_NETLINK),
            ty,
            Some(Protocol::from(protocol)),
        )?;
        sock.set_nonblocking(nonblocking)?;
        Ok(Socket { sock })
    }

    /// Bind to the multicast `groups` (the kernel picks the port id).
    pub fn bind(&self, groups: u32) -> io::Result<()> {
        nix::sys::socket::bind(self.sock.as_raw_fd(), &NetlinkAddr::new(0, groups))
            .map_err(io::Error::from)
    }

    /// Ask for a receive buffer of `size` bytes: past `rmem_max` when we have CAP_NET_ADMIN
    /// (SO_RCVBUFFORCE), else as much as `rmem_max` allows.
    pub fn force_recv_buffer(&self, size: usize) {
        let size = size.min(i32::MAX as usize);
        if setsockopt(&self.sock, sockopt::RcvBufForce, &size).is_err() {
            let _ = self.sock.set_recv_buffer_size(size);
        }
    }

    /// One datagram into `buf`; `WouldBlock` on a non-blocking socket when there is none.
    pub fn recv_into(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&self.sock).read(buf)
    }

    /// One datagram (possibly several netlink messages). `WouldBlock` when there is none.
    pub fn recv(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        buf.resize(64 * 1024, 0);
        let n = self.recv_into(buf)?;
        buf.truncate(n);
        Ok(n)
    }

    /// Send one message (a datagram).
    pub fn send(&self, msg: &[u8]) -> io::Result<()> {
        self.sock.send(msg).map(drop)
    }

    /// Dump a table (`RTM_GETLINK`, `RTM_GETADDR`, `RTM_GETNEIGH`) on a blocking socket and
    /// return its messages as (type, payload).
    pub fn dump(&self, ty: u16, seq: u32) -> io::Result<Vec<(u16, Vec<u8>)>> {
        // The family header: ifinfomsg is 16 bytes, ifaddrmsg 8, ndmsg 12; AF_UNSPEC everywhere.
        let body = match ty {
            RTM_GETLINK => 16,
            RTM_GETADDR => 8,
            _ => 12,
        };
        self.dump_with(ty, &vec![0; body], seq)
    }

    /// Send a dump request of type `ty` with `body` after the header; collect the answer.
    pub fn dump_with(&self, ty: u16, body: &[u8], seq: u32) -> io::Result<Vec<(u16, Vec<u8>)>> {
        let len = NLMSG_HDRLEN + body.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        self.send(&msg)?;
        let mut out = Vec::new();
        let mut buf = Vec::new();
        loop {
            self.recv(&mut buf)?;
            for (t, payload) in messages(&buf) {
                match t {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let errno = payload
                            .get(..4)
                            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                            .unwrap_or(0);
                        if errno != 0 {
                            return Err(io::Error::from_raw_os_error(-errno));
                        }
                    }
                    _ => out.push((t, payload.to_vec())),
                }
            }
        }
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.sock.as_raw_fd()
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

/// The netlink messages of a datagram as (type, payload after the header); a truncated or
/// malformed message ends the walk.
pub fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = 0;
    std::iter::from_fn(move || {
        let hdr = buf.get(off..off + NLMSG_HDRLEN)?;
        let len = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        let ty = u16::from_ne_bytes([hdr[4], hdr[5]]);
        if len < NLMSG_HDRLEN || off + len > buf.len() {
            return None;
        }
        let payload = &buf[off + NLMSG_HDRLEN..off + len];
        off += align4(len);
        Some((ty, payload))
    })
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// The route attributes after a family header of `skip` bytes, as (type, data).
pub fn attributes(payload: &[u8], skip: usize) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut off = skip;
    while off + 4 <= payload.len() {
        let len = u16::from_ne_bytes([payload[off], payload[off + 1]]) as usize;
        // Strip NLA_F_NESTED / NLA_F_NET_BYTEORDER.
        let ty = u16::from_ne_bytes([payload[off + 2], payload[off + 3]]) & 0x3fff;
        if len < 4 || off + len > payload.len() {
            break;
        }
        out.push((ty, &payload[off + 4..off + len]));
        off += align4(len);
    }
    out
}

pub fn as_u32(data: &[u8]) -> Option<u64> {
    Some(u32::from_ne_bytes(data.get(..4)?.try_into().ok()?) as u64)
}

pub fn as_u8(data: &[u8]) -> Option<u64> {
    data.first().map(|b| *b as u64)
}

/// A NUL-terminated string attribute.
pub fn as_string(data: &[u8]) -> String {
    let end = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    String::from_utf8_lossy(&data[..end]).into_owned()
}

/// A link-layer address as `aa:bb:cc:dd:ee:ff`.
pub fn as_mac(data: &[u8]) -> String {
    data.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An IPv4 or IPv6 address attribute.
pub fn as_ip(data: &[u8]) -> Option<String> {
    match data.len() {
        4 => Some(std::net::Ipv4Addr::new(data[0], data[1], data[2], data[3]).to_string()),
        16 => {
            let b: [u8; 16] = data.try_into().ok()?;
            Some(std::net::Ipv6Addr::from(b).to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_messages_and_attributes() {
        // One message: header + 4-byte body + one u32 attribute (type 4, value 1500).
        let mut m = Vec::new();
        let len = 16 + 4 + 8;
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&[0; 4]);
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&4u16.to_ne_bytes());
        m.extend_from_slice(&1500u32.to_ne_bytes());
        let msgs: Vec<_> = messages(&m).collect();
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].0, RTM_NEWLINK);
        let attrs = attributes(msgs[0].1, 4);
        assert_eq!(attrs.len(), 1);
        assert_eq!(attrs[0].0, 4);
        assert_eq!(as_u32(attrs[0].1), Some(1500));
    }
}
