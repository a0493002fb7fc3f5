//! Who changed a file: `bpf/attribute.bpf.c` (a kprobe on the kernel's `fsnotify()`, CO-RE,
//! compiled by `bpf/build.sh`, the object embedded here), loaded with `aya`, shared by the
//! `inotify`, `users` and `selinux` beacons (`attribute: True`).
//!
//! Why this mechanism: every inotify event is born in `fsnotify()`, called in the context of
//! the process making the change. The probe captures that process there — pid, uids, the audit
//! login uid, comm, the executable's path and the command line from its memory — so a process
//! that is gone before user space looks (`useradd`, `echo` in a subshell) is still named, and
//! the record is in the ring buffer before the inotify event is queued, so the beacon finds it
//! when it reads the event, without waiting or guessing. fanotify would give the pid, but the
//! details would then come from /proc after the fact (gone, or a reused pid: wrong), and it
//! would be a second event stream to match against inotify's; a cache of the exec source
//! misses processes that fork without exec (a subshell's `echo`). fentry/LSM hooks would do the
//! same as the kprobe but need BPF trampolines, which not every kernel (nor this CI host)
//! allows; a kprobe on an exported function loads wherever kprobes do.
//!
//! Only inodes the beacon registers ([`Attribution::watch`]: a directory, whose entries are
//! then covered, or a file) produce records. What it can miss: records the ring buffer could not
//! take (counted, logged); a change by a kernel thread (none is claimed); when several processes
//! make the same change to the same file between two reads of the queue, the event names the
//! last of them.

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::KProbe;
use aya::{Btf, EbpfLoader};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The compiled BPF object, 8-byte aligned as the ELF parser expects.
#[repr(C, align(8))]
struct Aligned<B: ?Sized>(B);
static OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!("../../bpf/attribute.bpf.o"));

/// The kernel's BTF (CO-RE relocations).
pub const DEFAULT_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Ring buffer size: ~900 records (1112 bytes each) between two reads.
const RING_BYTES: u32 = 1024 * 1024;
/// Changes kept for look-ups, and for how long.
const KEEP: usize = 4096;
const KEEP_NS: u64 = 600 * 1_000_000_000;

/// Layout of `struct attr_record` in attribute.bpf.c.
const REC_LEN: usize = 1112;
const OFF_NAME: usize = 88;
const OFF_EXE: usize = 344;
const OFF_ARGS: usize = 600;
const NAME_CAP: usize = 256;
const EXE_CAP: usize = 256;
const ARGS_CAP: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum AttributionError {
    #[error("kernel BTF unavailable ({0})")]
    Btf(String),
    #[error("loading the BPF program failed (needs CAP_BPF, CAP_PERFMON and kprobes, or root): {0}")]
    Load(String),
    #[error("attaching the kprobe on fsnotify failed: {0}")]
    Attach(String),
}

/// `struct watch_key` in attribute.bpf.c.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct WatchKey {
    dev: u32,
    pad: u32,
    ino: u64,
}

// SAFETY: WatchKey is repr(C), made of plain integers with explicit padding (`pad`, always
// zero), so every bit pattern is valid and it has no uninitialised bytes.
unsafe impl aya::Pod for WatchKey {}

/// The process behind a change, as the kernel saw it at that moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub pid: u32,
    pub tid: u32,
    pub comm: String,
    /// None when the process had no memory map any more (a file closed at exit).
    pub exe: Option<String>,
    pub cmd: Option<String>,
    pub cmd_truncated: bool,
    pub uid: u32,
    pub euid: u32,
    /// None when unset (no login session: daemons, or no audit).
    pub loginuid: Option<u32>,
    pub sessionid: Option<u32>,
}

#[derive(Debug, Clone)]
struct Change {
    path: PathBuf,
    mask: u32,
    time_ns: u64,
    actor: Actor,
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_ne_bytes)
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_ne_bytes)
}

fn text(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// One record from the ring: (mask, dev, ino, dir_ino, name, time, actor). None if malformed.
fn parse(b: &[u8]) -> Option<(u32, u32, u64, u64, Vec<u8>, u64, Actor)> {
    if b.len() < REC_LEN {
        return None;
    }
    let name_len = (u32_at(b, 48) as usize).min(NAME_CAP - 1);
    let exe_len = (u32_at(b, 52) as usize).min(EXE_CAP);
    let args_size = u32_at(b, 56) as usize;
    let args_len = (u32_at(b, 60) as usize).min(ARGS_CAP);
    let exe = (exe_len > 0).then(|| text(&b[OFF_EXE..OFF_EXE + exe_len]));
    let raw = &b[OFF_ARGS..OFF_ARGS + args_len];
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    let cmd = (args_len > 0).then(|| {
        raw.split(|c| *c == 0)
            .map(String::from_utf8_lossy)
            .collect::<Vec<_>>()
            .join(" ")
    });
    let opt = |v: u32| (v != u32::MAX).then_some(v);
    let actor = Actor {
        tid: u32_at(b, 24),
        pid: u32_at(b, 28),
        uid: u32_at(b, 32),
        euid: u32_at(b, 36),
        loginuid: opt(u32_at(b, 40)),
        sessionid: opt(u32_at(b, 44)),
        comm: text(&b[72..88]),
        exe,
        cmd,
        cmd_truncated: args_len > 0 && args_size > args_len,
    };
    Some((
        u32_at(b, 0),
        u32_at(b, 4),
        u64_at(b, 8),
        u64_at(b, 16),
        b[OFF_NAME..OFF_NAME + name_len].to_vec(),
        u64_at(b, 64),
        actor,
    ))
}

/// The kernel's `dev_t` (major << 20 | minor) of a `stat` st_dev.
fn kernel_dev(st_dev: u64) -> u32 {
    let (major, minor) = (libc::major(st_dev), libc::minor(st_dev));
    (major << 20) | (minor & 0xfffff)
}

/// `CLOCK_MONOTONIC` in ns, the clock of `bpf_ktime_get_ns`.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// The loaded probe, the inodes it watches and the changes it recorded.
pub struct Attribution {
    _ebpf: aya::Ebpf,
    ring: RingBuf<MapData>,
    watched: BpfHashMap<MapData, WatchKey, u8>,
    dropped: PerCpuArray<MapData, u64>,
    reported_drops: u64,
    paths: HashMap<WatchKey, PathBuf>,
    changes: VecDeque<Change>,
    names: HashMap<u32, Option<String>>,
    full_logged: bool,
}

impl Attribution {
    /// Load and attach the probe (`btf`: the kernel's BTF, normally [`DEFAULT_BTF`]).
    pub fn open(btf: &Path) -> Result<Self, AttributionError> {
        let btf_data = Btf::parse_file(btf, aya::Endianness::default())
            .map_err(|e| AttributionError::Btf(format!("{}: {e}", btf.display())))?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf_data))
            .map_max_entries("records", RING_BYTES)
            .load(&OBJECT.0)
            .map_err(|e| AttributionError::Load(e.to_string()))?;
        let prog: &mut KProbe = ebpf
            .program_mut("on_fsnotify")
            .ok_or_else(|| AttributionError::Load("program on_fsnotify missing".into()))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| AttributionError::Load(e.to_string()))?;
        prog.load()
            .map_err(|e| AttributionError::Load(e.to_string()))?;
        prog.attach("fsnotify", 0)
            .map_err(|e| AttributionError::Attach(e.to_string()))?;
        let take = |ebpf: &mut aya::Ebpf, name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| AttributionError::Load(format!("map {name} missing")))
        };
        let ring = RingBuf::try_from(take(&mut ebpf, "records")?)
            .map_err(|e| AttributionError::Load(e.to_string()))?;
        let watched = BpfHashMap::try_from(take(&mut ebpf, "watched")?)
            .map_err(|e| AttributionError::Load(e.to_string()))?;
        let dropped = PerCpuArray::try_from(take(&mut ebpf, "dropped")?)
            .map_err(|e| AttributionError::Load(e.to_string()))?;
        Ok(Attribution {
            _ebpf: ebpf,
            ring,
            watched,
            dropped,
            reported_drops: 0,
            paths: HashMap::new(),
            changes: VecDeque::new(),
            names: HashMap::new(),
            full_logged: false,
        })
    }

    /// Record changes to `path` (a directory: also to its entries). Follows symlinks, as
    /// inotify does; a path that does not exist is skipped (watch it again when it appears).
    pub fn watch(&mut self, path: &Path) {
        let Ok(md) = std::fs::metadata(path) else {
            return;
        };
        let key = WatchKey {
            dev: kernel_dev(md.dev()),
            pad: 0,
            ino: md.ino(),
        };
        if let Err(e) = self.watched.insert(key, 1u8, 0) {
            if !self.full_logged {
                self.full_logged = true;
                tracing::warn!(path = %path.display(), error = %e, "attribution: cannot watch more inodes; changes there carry no attribution");
            }
            return;
        }
        self.paths.insert(key, path.to_path_buf());
    }

    /// Say in the log that attribution is on (once the beacon's paths are registered: a test
    /// or an operator can wait for it).
    pub fn announce(&self, beacon: &str) {
        tracing::info!(
            beacon,
            inodes = self.paths.len(),
            "attribution on: kprobe on fsnotify"
        );
    }

    /// Move what the kernel recorded into the look-up list.
    fn poll(&mut self) {
        while let Some(item) = self.ring.next() {
            let Some((mask, dev, ino, dir_ino, name, time_ns, actor)) = parse(&item) else {
                tracing::warn!(len = item.len(), "attribution: malformed record skipped");
                continue;
            };
            drop(item);
            let dir = self.paths.get(&WatchKey {
                dev,
                pad: 0,
                ino: dir_ino,
            });
            let own = self.paths.get(&WatchKey { dev, pad: 0, ino });
            let path = match (dir, own) {
                (Some(d), _) if !name.is_empty() => d.join(OsStr::from_bytes(&name)),
                (_, Some(p)) => p.clone(),
                (Some(d), None) => d.clone(),
                (None, None) => continue,
            };
            let mut actor = actor;
            if actor.exe.is_none() {
                // Closed at exit (no memory map left): the same process's earlier record.
                if let Some(prev) = self.changes.iter().rev().find(|c| {
                    c.actor.pid == actor.pid && c.actor.comm == actor.comm && c.actor.exe.is_some()
                }) {
                    actor.exe = prev.actor.exe.clone();
                    actor.cmd = prev.actor.cmd.clone();
                    actor.cmd_truncated = prev.actor.cmd_truncated;
                }
            }
            self.changes.push_back(Change {
                path,
                mask,
                time_ns,
                actor,
            });
        }
        let horizon = now_ns().saturating_sub(KEEP_NS);
        while self.changes.len() > KEEP || self.changes.front().is_some_and(|c| c.time_ns < horizon)
        {
            self.changes.pop_front();
        }
        let lost: u64 = self
            .dropped
            .get(&0, 0)
            .map(|v| v.iter().copied().fold(0u64, u64::wrapping_add))
            .unwrap_or(0);
        if lost != self.reported_drops {
            tracing::warn!(
                lost = lost - self.reported_drops.min(lost),
                total = lost,
                "attribution: the kernel dropped change records (ring buffer full); those changes carry no attribution"
            );
            self.reported_drops = lost;
        }
    }

    /// The process behind an inotify event on `path` with `mask` (IN_* bits), read from the
    /// queue at `read_at` ([`now_ns`]): the last matching change recorded up to then. The
    /// changes it covers are consumed, so a later event is not given an older change's process.
    pub fn take(&mut self, path: &Path, mask: u32, read_at: u64) -> Option<Actor> {
        self.poll();
        let bits = mask & 0xfff;
        let mut found: Option<Actor> = None;
        self.changes.retain(|c| {
            let hit = c.time_ns <= read_at && c.mask & bits != 0 && c.path == path;
            if hit {
                found = Some(c.actor.clone());
            }
            !hit
        });
        found
    }

    /// The process that last changed any of `paths` (any kind of change).
    pub fn last(&mut self, paths: &[&Path]) -> Option<Actor> {
        self.poll();
        self.changes
            .iter()
            .rev()
            .find(|c| paths.iter().any(|p| c.path == *p))
            .map(|c| c.actor.clone())
    }

    fn user(&mut self, uid: u32) -> Option<String> {
        self.names
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .clone()
    }

    /// The event keys for `actor`: pid, exe, cmd, uid, user, loginuid, login_user (unknown
    /// values are null, never guessed).
    pub fn keys(&mut self, actor: &Actor) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert("pid".into(), json!(actor.pid));
        m.insert("exe".into(), json!(actor.exe));
        m.insert("cmd".into(), json!(actor.cmd));
        if actor.cmd_truncated {
            m.insert("cmd_truncated".into(), Value::Bool(true));
        }
        m.insert("comm".into(), json!(actor.comm));
        m.insert("uid".into(), json!(actor.uid));
        m.insert("user".into(), json!(self.user(actor.uid)));
        m.insert("loginuid".into(), json!(actor.loginuid));
        let login_user = actor.loginuid.and_then(|u| self.user(u));
        m.insert("login_user".into(), json!(login_user));
        m
    }
}

/// A beacon's attribution: on when configured and the probe loaded, else off with the reason
/// logged once per beacon.
pub fn open_for(beacon: &str, btf: &Path) -> Option<Attribution> {
    match Attribution::open(btf) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(beacon, error = %e, "attribution is off: events carry no process keys");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_record() {
        let mut b = vec![0u8; REC_LEN];
        b[0..4].copy_from_slice(&0x80u32.to_ne_bytes());
        b[24..28].copy_from_slice(&7u32.to_ne_bytes());
        b[28..32].copy_from_slice(&7u32.to_ne_bytes());
        b[40..44].copy_from_slice(&u32::MAX.to_ne_bytes());
        b[48..52].copy_from_slice(&7u32.to_ne_bytes());
        b[52..56].copy_from_slice(&9u32.to_ne_bytes());
        b[56..60].copy_from_slice(&8u32.to_ne_bytes());
        b[60..64].copy_from_slice(&8u32.to_ne_bytes());
        b[72..76].copy_from_slice(b"bash");
        b[OFF_NAME..OFF_NAME + 7].copy_from_slice(b"watched");
        b[OFF_EXE..OFF_EXE + 9].copy_from_slice(b"/bin/bash");
        b[OFF_ARGS..OFF_ARGS + 8].copy_from_slice(b"bash\0-c\0");
        let (mask, _, _, _, name, _, a) = parse(&b).expect("record");
        assert_eq!(mask, 0x80);
        assert_eq!(name, b"watched");
        assert_eq!(a.pid, 7);
        assert_eq!(a.exe.as_deref(), Some("/bin/bash"));
        assert_eq!(a.cmd.as_deref(), Some("bash -c"));
        assert_eq!(a.loginuid, None);
        assert!(parse(&b[..REC_LEN - 1]).is_none());
    }

    #[test]
    fn kernel_dev_encoding() {
        assert_eq!(kernel_dev(libc::makedev(8, 1)), (8 << 20) | 1);
        assert_eq!(kernel_dev(libc::makedev(259, 70000)), (259 << 20) | 70000);
    }
}
