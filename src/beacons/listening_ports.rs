//! `listening_ports`: listening sockets opened and closed, with the owning process. beacond's
//! own beacon (Salt has none).
//!
//! Options: [`Config`] (`beacond --describe listening_ports`).
//!
//! Source, on `interval`: the kernel's socket diagnostics (`NETLINK_SOCK_DIAG`), asked for TCP
//! sockets in LISTEN and unconnected UDP sockets only, so the cost follows the number of
//! listeners, not of connections (a busy server's `/proc/net/tcp` lists every connection); or,
//! with `source: proc`, `<procfs>/net/{tcp,tcp6,udp,udp6}` parsed and filtered the same way.
//! Sockets are diffed by inode; the owner of a new socket is found by scanning
//! `<procfs>/<pid>/fd` for `socket:[inode]`, only when there are new sockets, stopping as soon
//! as all are found. Events: tag `salt/beacon/<id>/listening_ports/opened` or `.../closed`,
//! data `proto`, `address`, `port`, `inode`, `uid`, `user`, `pid`, `process` (pid/process are
//! null when the owner cannot be seen, e.g. a socket held only by the kernel).

use super::{Beacon, BeaconError, BuildContext, Data};
use crate::config::de;
use crate::config::types::default_procfs;
use crate::config::{BeaconConfig, ConfigError};
use crate::sources::{netlink, procfs};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

/// `TCP_LISTEN` in the `st` column.
const TCP_LISTEN: u8 = 0x0A;
/// `TCP_CLOSE`: an unconnected UDP socket.
const TCP_CLOSE: u8 = 0x07;

#[derive(Debug, Clone, PartialEq)]
pub struct Socket {
    pub proto: &'static str,
    pub address: String,
    pub port: u16,
    pub uid: u32,
    pub inode: u64,
}

#[derive(Debug, Clone)]
struct Owner {
    pid: Option<u32>,
    process: Option<String>,
}

pub struct ListeningPorts {
    protocols: Vec<&'static str>,
    netlink: bool,
    emitatstartup: bool,
    procfs: PathBuf,
    /// By inode: the socket and its owner, as last seen.
    known: Option<BTreeMap<u64, (Socket, Owner)>>,
    /// uid → user name (NSS lookups can be slow: once per uid).
    users: HashMap<u32, Option<String>>,
}

/// Listening sockets opened and closed, with the owning process (beacond's own beacon).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The socket kinds to watch (default all four).
    #[serde(default = "all_protocols")]
    protocols: Vec<Protocol>,
    /// Where sockets are listed: the kernel's socket diagnostics (`netlink`), or
    /// `<procfs>/net/{tcp,tcp6,udp,udp6}` (`proc`).
    #[serde(default)]
    source: Source,
    /// Fire `opened` for each socket found at startup (else they are the baseline).
    #[serde(default)]
    emitatstartup: bool,
    /// Where procfs is mounted (`<procfs>/<pid>/fd` finds owners; `net/*` with `source: proc`).
    #[serde(default = "default_procfs")]
    procfs: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Protocol {
    Tcp,
    Tcp6,
    Udp,
    Udp6,
}

impl Protocol {
    fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Tcp6 => "tcp6",
            Protocol::Udp => "udp",
            Protocol::Udp6 => "udp6",
        }
    }
}

fn all_protocols() -> Vec<Protocol> {
    vec![Protocol::Tcp, Protocol::Tcp6, Protocol::Udp, Protocol::Udp6]
}

#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Source {
    #[default]
    Netlink,
    Proc,
}

pub fn build(cfg: &BeaconConfig, _ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let c: Config = de::from_config(cfg)?;
    let mut protocols: Vec<&'static str> = Vec::new();
    for p in c.protocols {
        if !protocols.contains(&p.name()) {
            protocols.push(p.name());
        }
    }
    Ok(Box::new(ListeningPorts {
        protocols,
        netlink: c.source == Source::Netlink,
        emitatstartup: c.emitatstartup,
        procfs: c.procfs,
        known: None,
        users: HashMap::new(),
    }))
}

/// An address as the kernel prints it in `/proc/net/*`: the 32-bit words of the address in
/// host byte order, in hex.
fn parse_addr(hex: &str, v6: bool) -> Option<String> {
    if v6 {
        if hex.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for i in 0..4 {
            let word = u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok()?;
            bytes[i * 4..i * 4 + 4].copy_from_slice(&word.to_ne_bytes());
        }
        Some(Ipv6Addr::from(bytes).to_string())
    } else {
        let word = u32::from_str_radix(hex, 16).ok()?;
        Some(Ipv4Addr::from(word.to_ne_bytes()).to_string())
    }
}

/// The listening sockets of one `/proc/net/<proto>` table.
pub fn parse_table(proto: &'static str, text: &str) -> Vec<Socket> {
    let v6 = proto.ends_with('6');
    let tcp = proto.starts_with("tcp");
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let Ok(state) = u8::from_str_radix(f[3], 16) else {
            continue;
        };
        let listening = if tcp {
            state == TCP_LISTEN
        } else {
            // Unconnected: remote port 0.
            state == TCP_CLOSE && f[2].ends_with(":0000")
        };
        if !listening {
            continue;
        }
        let Some((addr, port)) = f[1].split_once(':') else {
            continue;
        };
        let (Some(address), Ok(port)) = (parse_addr(addr, v6), u16::from_str_radix(port, 16))
        else {
            continue;
        };
        let (Ok(uid), Ok(inode)) = (f[7].parse::<u32>(), f[9].parse::<u64>()) else {
            continue;
        };
        out.push(Socket {
            proto,
            address,
            port,
            uid,
            inode,
        });
    }
    out
}

/// `SOCK_DIAG_BY_FAMILY`.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NETLINK_SOCK_DIAG: i32 = 4;

/// Listening sockets of one protocol from the kernel's socket diagnostics.
fn diag(nl: &netlink::Socket, proto: &'static str, seq: u32) -> std::io::Result<Vec<Socket>> {
    let v6 = proto.ends_with('6');
    let tcp = proto.starts_with("tcp");
    // struct inet_diag_req_v2: family, protocol, ext, pad, states, inet_diag_sockid (48 bytes).
    let mut req = vec![0u8; 56];
    req[0] = if v6 { libc::AF_INET6 } else { libc::AF_INET } as u8;
    req[1] = if tcp {
        libc::IPPROTO_TCP
    } else {
        libc::IPPROTO_UDP
    } as u8;
    let states: u32 = 1 << if tcp { TCP_LISTEN } else { TCP_CLOSE };
    req[4..8].copy_from_slice(&states.to_ne_bytes());
    Ok(nl
        .dump_with(SOCK_DIAG_BY_FAMILY, &req, seq)?
        .into_iter()
        .filter(|(ty, _)| *ty == SOCK_DIAG_BY_FAMILY)
        .filter_map(|(_, m)| diag_socket(proto, &m))
        .collect())
}

/// The listening socket one `inet_diag_msg` (a `SOCK_DIAG_BY_FAMILY` payload) describes, for
/// `proto` (`tcp`, `tcp6`, `udp`, `udp6`). Also the fuzzing entry point (fuzz/fuzz_targets/netlink.rs).
pub fn diag_socket(proto: &'static str, m: &[u8]) -> Option<Socket> {
    let v6 = proto.ends_with('6');
    let tcp = proto.starts_with("tcp");
    // struct inet_diag_msg: family, state, timer, retrans, id (sport, dport: big endian;
    // src, dst: 16 bytes each; if; cookie[2]), expires, rqueue, wqueue, uid, inode.
    if m.len() < 72 {
        return None;
    }
    let port = u16::from_be_bytes([m[4], m[5]]);
    let dport = u16::from_be_bytes([m[6], m[7]]);
    if !tcp && dport != 0 {
        return None;
    }
    let address = if v6 {
        let b: [u8; 16] = m[8..24].try_into().unwrap_or([0; 16]);
        Ipv6Addr::from(b).to_string()
    } else {
        Ipv4Addr::new(m[8], m[9], m[10], m[11]).to_string()
    };
    let word = |o: usize| u32::from_ne_bytes([m[o], m[o + 1], m[o + 2], m[o + 3]]);
    Some(Socket {
        proto,
        address,
        port,
        uid: word(64),
        inode: word(68) as u64,
    })
}

impl ListeningPorts {
    fn sockets(&mut self) -> Result<Vec<Socket>, BeaconError> {
        let nl = if self.netlink {
            match netlink::Socket::open_protocol(NETLINK_SOCK_DIAG, 0, false) {
                Ok(nl) => Some(nl),
                Err(e) => {
                    tracing::warn!(
                        "listening_ports: sock_diag unavailable ({e}); reading /proc/net"
                    );
                    self.netlink = false;
                    None
                }
            }
        } else {
            None
        };
        let mut out = Vec::new();
        for (seq, proto) in self.protocols.iter().enumerate() {
            if let Some(nl) = &nl {
                match diag(nl, proto, seq as u32 + 1) {
                    Ok(s) => {
                        out.extend(s);
                        continue;
                    }
                    // E.g. no udp_diag module: this protocol falls back to its /proc table.
                    Err(e) => tracing::debug!("listening_ports: sock_diag {proto}: {e}"),
                }
            }
            let path = self.procfs.join("net").join(proto);
            match std::fs::read_to_string(&path) {
                Ok(text) => out.extend(parse_table(proto, &text)),
                // A kernel without IPv6 has no tcp6/udp6.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && proto.ends_with('6') => {}
                Err(e) => return Err(BeaconError::io(path, e)),
            }
        }
        Ok(out)
    }

    /// Owners of the given socket inodes, by scanning every process's fds (lowest pid first).
    fn owners(&self, wanted: &HashSet<u64>) -> HashMap<u64, Owner> {
        let mut found = HashMap::new();
        if wanted.is_empty() {
            return found;
        }
        let mut pids = procfs::pids(&self.procfs).unwrap_or_default();
        pids.sort_unstable();
        'pids: for pid in pids {
            let fd_dir = self.procfs.join(pid.to_string()).join("fd");
            let Ok(entries) = std::fs::read_dir(&fd_dir) else {
                continue;
            };
            for entry in entries.filter_map(Result::ok) {
                let Ok(target) = std::fs::read_link(entry.path()) else {
                    continue;
                };
                let Some(inode) = target
                    .to_str()
                    .and_then(|t| t.strip_prefix("socket:["))
                    .and_then(|t| t.strip_suffix(']'))
                    .and_then(|t| t.parse::<u64>().ok())
                else {
                    continue;
                };
                if wanted.contains(&inode) && !found.contains_key(&inode) {
                    found.insert(
                        inode,
                        Owner {
                            pid: Some(pid),
                            process: procfs::process_name(&self.procfs, pid),
                        },
                    );
                    if found.len() == wanted.len() {
                        break 'pids;
                    }
                }
            }
        }
        found
    }
}

fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

fn event(kind: &str, s: &Socket, owner: &Owner, user: Option<String>) -> Data {
    let mut d = Data::new();
    d.insert("tag".into(), Value::from(kind));
    d.insert("proto".into(), Value::from(s.proto));
    d.insert("address".into(), Value::from(s.address.clone()));
    d.insert("port".into(), Value::from(s.port));
    d.insert("inode".into(), Value::from(s.inode));
    d.insert("uid".into(), Value::from(s.uid));
    d.insert("user".into(), user.map_or(Value::Null, Value::from));
    d.insert("pid".into(), owner.pid.map_or(Value::Null, Value::from));
    d.insert(
        "process".into(),
        owner.process.clone().map_or(Value::Null, Value::from),
    );
    d
}

impl Beacon for ListeningPorts {
    fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
        let now = self.sockets()?;
        let startup = self.known.is_none();
        let known = self.known.get_or_insert_with(BTreeMap::new);
        let new: HashSet<u64> = now
            .iter()
            .filter(|s| !known.contains_key(&s.inode))
            .map(|s| s.inode)
            .collect();
        let current: HashSet<u64> = now.iter().map(|s| s.inode).collect();
        let mut out = Vec::new();
        // Closed first, so a port moved from one socket to another reads in order.
        let gone: Vec<u64> = known
            .keys()
            .filter(|i| !current.contains(i))
            .copied()
            .collect();
        for inode in gone {
            if let Some((s, owner)) = known.remove(&inode) {
                let user = self
                    .users
                    .entry(s.uid)
                    .or_insert_with(|| user_name(s.uid))
                    .clone();
                out.push(event("closed", &s, &owner, user));
            }
        }
        let mut owners = self.owners(&new);
        let known = self.known.get_or_insert_with(BTreeMap::new);
        for s in now {
            if !new.contains(&s.inode) || known.contains_key(&s.inode) {
                continue;
            }
            let owner = owners.remove(&s.inode).unwrap_or(Owner {
                pid: None,
                process: None,
            });
            if !startup || self.emitatstartup {
                let user = self
                    .users
                    .entry(s.uid)
                    .or_insert_with(|| user_name(s.uid))
                    .clone();
                out.push(event("opened", &s, &owner, user));
            }
            known.insert(s.inode, (s, owner));
        }
        if startup {
            tracing::info!(
                sockets = known.len(),
                "listening_ports: baseline of listening sockets taken"
            );
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_tables() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1234 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:0016 0100007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 1235 1 0000000000000000 100 0 0 10 0\n";
        let s = parse_table("tcp", tcp);
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].address, "127.0.0.1");
        assert_eq!(s[0].port, 22);
        assert_eq!(s[0].inode, 1234);
        let tcp6 = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 99 1 0000000000000000 100 0 0 10 0\n";
        let s = parse_table("tcp6", tcp6);
        assert_eq!(s[0].address, "::1");
        assert_eq!(s[0].port, 8080);
        assert_eq!(s[0].uid, 1000);
    }
}
