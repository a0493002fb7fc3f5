//! The kernel's netlink proc connector (`NETLINK_CONNECTOR`, `CN_IDX_PROC`): one multicast
//! message per fork, exec and exit on the host, pushed by the kernel as it happens.
//!
//! The socket is the shared netlink one (`super::netlink`); the wire format is three small C
//! structs, parsed by offset here.

use super::netlink::{self, NLMSG_DONE, NLMSG_ERROR, NLMSG_HDRLEN};
use super::reader_thread::{ReaderThread, Stop, Woke};
use nix::poll::PollTimeout;
use std::io;
use std::os::fd::AsFd;

const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_CN_MCAST_IGNORE: u32 = 2;
const CN_MSG_LEN: usize = 20;

/// A process event, by thread-group id (the process id user space sees).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcEvent {
    /// A new process (not a thread): `child` was forked by `parent`.
    Fork { parent: i32, child: i32 },
    /// `pid` replaced its image (`execve`).
    Exec { pid: i32 },
    /// Process `pid` exited (its last thread).
    Exit { pid: i32 },
    /// A gap in a CPU's event sequence numbers: `count` events were lost on the way (the
    /// kernel drops a message it cannot allocate without telling the socket).
    Lost { count: u64 },
}

/// The last sequence number seen per CPU (the kernel numbers proc events per CPU).
#[derive(Debug, Default)]
pub struct Sequences {
    last: std::collections::HashMap<u32, u32>,
}

impl Sequences {
    /// How many events were skipped before `seq` on `cpu`.
    fn gap(&mut self, cpu: u32, seq: u32) -> u64 {
        let gap = match self.last.get(&cpu) {
            Some(&last) => {
                let d = seq.wrapping_sub(last);
                // Small forward jumps are losses; anything else (a restart) is not counted.
                if d > 1 && d < (1 << 30) {
                    (d - 1) as u64
                } else {
                    0
                }
            }
            None => 0,
        };
        self.last.insert(cpu, seq);
        gap
    }
}

/// A subscribed proc connector socket. Dropping it unsubscribes and closes the socket.
pub struct ProcConnector {
    sock: netlink::Socket,
    seqs: Sequences,
}

impl ProcConnector {
    /// Open, size the receive buffer to `rcvbuf` bytes (forced past `rmem_max` when we have
    /// CAP_NET_ADMIN), bind to the proc group and subscribe. Fails without CAP_NET_ADMIN on
    /// older kernels, or in a network namespace other than the initial one.
    pub fn open(rcvbuf: usize) -> io::Result<Self> {
        let sock = netlink::Socket::open_with(socket2::Type::DGRAM, libc::NETLINK_CONNECTOR, true)?;
        sock.force_recv_buffer(rcvbuf);
        sock.bind(CN_IDX_PROC)?;
        let pc = ProcConnector {
            sock,
            seqs: Sequences::default(),
        };
        pc.control(PROC_CN_MCAST_LISTEN)?;
        Ok(pc)
    }

    /// Send a multicast control op (listen / ignore).
    fn control(&self, op: u32) -> io::Result<()> {
        let total = NLMSG_HDRLEN + CN_MSG_LEN + 4;
        let mut msg = Vec::with_capacity(total);
        msg.extend_from_slice(&(total as u32).to_ne_bytes()); // nlmsg_len
        msg.extend_from_slice(&NLMSG_DONE.to_ne_bytes()); // nlmsg_type
        msg.extend_from_slice(&0u16.to_ne_bytes()); // nlmsg_flags
        msg.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_seq
        msg.extend_from_slice(&std::process::id().to_ne_bytes()); // nlmsg_pid
        msg.extend_from_slice(&CN_IDX_PROC.to_ne_bytes()); // cb_id.idx
        msg.extend_from_slice(&CN_VAL_PROC.to_ne_bytes()); // cb_id.val
        msg.extend_from_slice(&0u32.to_ne_bytes()); // seq
        msg.extend_from_slice(&0u32.to_ne_bytes()); // ack
        msg.extend_from_slice(&4u16.to_ne_bytes()); // len
        msg.extend_from_slice(&0u16.to_ne_bytes()); // flags
        msg.extend_from_slice(&op.to_ne_bytes()); // enum proc_cn_mcast_op
        self.sock.send(&msg)
    }

    /// Receive one datagram without blocking: Ok(None) when nothing is queued. An `ENOBUFS`
    /// error means the kernel dropped messages because the receive buffer was full.
    pub fn recv(&mut self, buf: &mut [u8], out: &mut Vec<ProcEvent>) -> io::Result<Option<usize>> {
        loop {
            match self.sock.recv_into(buf) {
                Ok(n) => {
                    parse(&buf[..n], out, &mut self.seqs);
                    return Ok(Some(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for ProcConnector {
    fn drop(&mut self) {
        // Tell the kernel one listener fewer (older kernels count listeners by these messages
        // and keep generating events otherwise); the fd closes right after.
        let _ = self.control(PROC_CN_MCAST_IGNORE);
    }
}

fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    let s = b.get(o..o + 4)?;
    Some(u32::from_ne_bytes([s[0], s[1], s[2], s[3]]))
}

/// Parse the netlink messages of one datagram.
pub fn parse(buf: &[u8], out: &mut Vec<ProcEvent>, seqs: &mut Sequences) {
    const PROC_EVENT_FORK: u32 = 0x1;
    const PROC_EVENT_EXEC: u32 = 0x2;
    const PROC_EVENT_EXIT: u32 = 0x8000_0000;
    for (kind, msg) in netlink::messages(buf) {
        if kind == NLMSG_ERROR {
            continue;
        }
        // cn_msg: idx, val, seq, ack, len (u16), flags (u16), then the proc_event.
        if u32_at(msg, 0) != Some(CN_IDX_PROC) || u32_at(msg, 4) != Some(CN_VAL_PROC) {
            continue;
        }
        let ev = &msg[CN_MSG_LEN.min(msg.len())..];
        // cn_msg.seq is the sending CPU's event counter; proc_event.cpu names that CPU.
        if let (Some(seq), Some(cpu)) = (u32_at(msg, 8), u32_at(ev, 4)) {
            let count = seqs.gap(cpu, seq);
            if count > 0 {
                out.push(ProcEvent::Lost { count });
            }
        }
        // proc_event: what (u32), cpu (u32), timestamp_ns (u64), then event_data.
        let (Some(what), data) = (u32_at(ev, 0), ev.get(16..).unwrap_or(&[])) else {
            continue;
        };
        let w = |i: usize| u32_at(data, i * 4).map(|v| v as i32);
        let parsed = match what {
            PROC_EVENT_FORK => match (w(1), w(2), w(3)) {
                // parent_pid, parent_tgid, child_pid, child_tgid: processes only.
                (Some(parent), Some(cpid), Some(ctgid)) if cpid == ctgid => Some(ProcEvent::Fork {
                    parent,
                    child: ctgid,
                }),
                _ => None,
            },
            PROC_EVENT_EXEC => w(1).map(|pid| ProcEvent::Exec { pid }),
            PROC_EVENT_EXIT => match (w(0), w(1)) {
                (Some(p), Some(tgid)) if p == tgid => Some(ProcEvent::Exit { pid: tgid }),
                _ => None,
            },
            _ => None,
        };
        out.extend(parsed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(what: u32, words: &[u32]) -> Vec<u8> {
        let mut ev = Vec::new();
        ev.extend_from_slice(&what.to_ne_bytes());
        ev.extend_from_slice(&0u32.to_ne_bytes());
        ev.extend_from_slice(&0u64.to_ne_bytes());
        for w in words {
            ev.extend_from_slice(&w.to_ne_bytes());
        }
        let mut cn = Vec::new();
        for v in [CN_IDX_PROC, CN_VAL_PROC, 0, 0] {
            cn.extend_from_slice(&v.to_ne_bytes());
        }
        cn.extend_from_slice(&(ev.len() as u16).to_ne_bytes());
        cn.extend_from_slice(&0u16.to_ne_bytes());
        cn.extend(ev);
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDRLEN + cn.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        m.extend_from_slice(&[0u8; 10]);
        m.extend(cn);
        m
    }

    #[test]
    fn sequence_gaps_count_lost_events() {
        let mut s = Sequences::default();
        assert_eq!(s.gap(0, 10), 0);
        assert_eq!(s.gap(0, 11), 0);
        assert_eq!(s.gap(1, 5), 0);
        assert_eq!(s.gap(0, 15), 3);
        assert_eq!(s.gap(1, 6), 0);
        assert_eq!(s.gap(0, u32::MAX), 0, "a backwards jump is not a loss");
        assert_eq!(s.gap(0, 1), 1, "wrap-around");
    }

    #[test]
    fn parses_fork_exec_exit_and_skips_threads() {
        let mut buf = message(1, &[10, 10, 11, 11]);
        buf.extend(message(1, &[10, 10, 12, 10])); // a thread
        buf.extend(message(2, &[11, 11]));
        buf.extend(message(0x8000_0000, &[11, 11, 0, 0, 10, 10]));
        let mut out = Vec::new();
        parse(&buf, &mut out, &mut Sequences::default());
        assert_eq!(
            out,
            [
                ProcEvent::Fork {
                    parent: 10,
                    child: 11
                },
                ProcEvent::Exec { pid: 11 },
                ProcEvent::Exit { pid: 11 }
            ]
        );
    }
}

/// What the reader thread passes on, in the kernel's order.
#[derive(Debug)]
pub enum Msg<T> {
    Fork {
        parent: i32,
        child: i32,
    },
    /// An exec, with what the thread read of the process at once.
    Exec {
        pid: i32,
        info: T,
    },
    Exit {
        pid: i32,
    },
    /// The kernel dropped messages (ENOBUFS): the receive buffer was full.
    Overrun,
    /// Gaps in the kernel's sequence numbers: `count` events lost.
    Lost {
        count: u64,
    },
}

/// The connector's reader thread (see `reader_thread`): for each exec it reads the process
/// from /proc at once (`inspect`), before a short-lived process is gone. Dropping the reader
/// stops and joins the thread, which unsubscribes and closes the socket.
pub type Reader<T> = ReaderThread<Msg<T>>;

/// Start the reader thread over `pc`, with a channel of `capacity` messages.
pub fn spawn_reader<T, F>(pc: ProcConnector, capacity: usize, inspect: F) -> io::Result<Reader<T>>
where
    T: Send + 'static,
    F: Fn(i32) -> T + Send + 'static,
{
    ReaderThread::spawn("sh-proc-connector", capacity, move |stop, tx| {
        reader_loop(pc, stop, tx, inspect)
    })
}

fn reader_loop<T, F: Fn(i32) -> T>(
    mut pc: ProcConnector,
    stop: Stop,
    tx: tokio::sync::mpsc::Sender<Msg<T>>,
    inspect: F,
) {
    // No setpriority(-10) here: under the shipped unit (@resources filtered, no CAP_SYS_NICE)
    // it can never succeed; the bounded channel and the overrun count cover a slow reader.
    tracing::debug!("proc connector reader thread started");
    let mut buf = vec![0u8; 64 * 1024];
    let mut events = Vec::new();
    loop {
        match stop.wait(pc.sock.as_fd(), PollTimeout::NONE) {
            Ok(Woke::Readable | Woke::Timeout) => {}
            Ok(Woke::Stopped) => return,
            Err(e) => {
                tracing::error!(error = %e, "proc connector poll failed");
                return;
            }
        }
        loop {
            events.clear();
            let msg = match pc.recv(&mut buf, &mut events) {
                Ok(None) => break,
                Ok(Some(_)) => None,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Some(Msg::Overrun),
                Err(e) => {
                    tracing::error!(error = %e, "proc connector receive failed");
                    return;
                }
            };
            let msgs = msg.into_iter().chain(events.drain(..).map(|ev| match ev {
                ProcEvent::Fork { parent, child } => Msg::Fork { parent, child },
                ProcEvent::Exec { pid } => Msg::Exec {
                    pid,
                    info: inspect(pid),
                },
                ProcEvent::Exit { pid } => Msg::Exit { pid },
                ProcEvent::Lost { count } => Msg::Lost { count },
            }));
            for m in msgs {
                if tx.blocking_send(m).is_err() {
                    return;
                }
            }
        }
    }
}
