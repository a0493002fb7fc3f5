//! Who changed a file, for the `inotify`, `users` and `selinux` beacons (`attribute: True`).
//!
//! Two halves. fanotify (`FAN_REPORT_DFID_NAME`, marks on the watched directories and files)
//! reports, for each change, the directory and name it happened to and the pid of the process
//! that made it — the kernel's own answer, no guessing by time. The rest of the answer (program,
//! command line, uids, the audit login uid) comes from a process table kept by
//! `bpf/attribute.bpf.c` (BTF tracepoints on fork, exec and exit, loaded with `aya`, the object
//! embedded here): each record is taken in the kernel at that moment, so a process that is gone
//! before the event is read (`useradd`, a subshell's `echo`) is still named, and a reused pid is
//! not mistaken for it. A process that started before beacond is looked up in /proc at once.
//!
//! Why not a probe on the VFS (a kprobe or fentry on `fsnotify()`, an LSM hook): it would
//! capture everything in one place, but needs kprobes or BPF trampolines, and kernels built
//! without them exist (this CI host's 6.18 has neither; only tracepoints). Why not fanotify
//! alone, reading /proc: the short-lived processes above are gone by then. fanotify needs
//! CAP_SYS_ADMIN, the table CAP_BPF + CAP_PERFMON (root has all).
//!
//! What it can miss: a filesystem without file handles (fanotify's FID mode: e.g. selinuxfs,
//! procfs) cannot be marked; records the ring could not take (counted, logged) leave those
//! processes to /proc; when several processes make the same change to the same file between two
//! reads of the inotify queue, the event names the last of them; a uid or login uid changed by
//! a process after its exec is seen only for processes that started before beacond.

use super::ebpf::TracepointError;
use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::{Btf, EbpfLoader};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The compiled BPF object, 8-byte aligned as the ELF parser expects.
#[repr(C, align(8))]
struct Aligned<B: ?Sized>(B);
static OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!("../../bpf/attribute.bpf.o"));

/// The kernel's BTF (CO-RE relocations).
pub const DEFAULT_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Ring buffer: ~5,000 fork/exec/exit records (832 bytes each) between two drains.
const RING_BYTES: u32 = 4 * 1024 * 1024;
/// Processes kept in the table, and how long one is kept after it exited.
const TABLE_MAX: usize = 65_536;
const EXITED_KEEP_NS: u64 = 120 * 1_000_000_000;
/// Changes kept for look-ups.
const CHANGES_MAX: usize = 4096;
/// How long a look-up waits, once per batch, for the fanotify twin of an inotify event (both
/// are queued by the same kernel call; the reader can be woken between the two).
const TWIN_WAIT_MS: i32 = 50;

/// Layout of `struct proc_record` in attribute.bpf.c.
const REC_LEN: usize = 832;
const OFF_COMM: usize = 48;
const OFF_EXE: usize = 64;
const OFF_ARGS: usize = 320;
const EXE_CAP: usize = 256;
const ARGS_CAP: usize = 512;
const KIND_FORK: u32 = 1;
const KIND_EXEC: u32 = 2;
const KIND_EXIT: u32 = 3;

/// What fanotify is asked for (the FAN_* bits equal the IN_* bits).
const FAN_MASK: u64 = libc::FAN_MODIFY
    | libc::FAN_CLOSE_WRITE
    | libc::FAN_ATTRIB
    | libc::FAN_CREATE
    | libc::FAN_DELETE
    | libc::FAN_MOVED_FROM
    | libc::FAN_MOVED_TO;

#[derive(Debug, thiserror::Error)]
pub enum AttributionError {
    #[error("fanotify_init failed (needs CAP_SYS_ADMIN): {0}")]
    Fanotify(io::Error),
    #[error("kernel BTF unavailable ({0})")]
    Btf(String),
    #[error("loading the BPF process table failed (needs CAP_BPF and CAP_PERFMON, or root): {0}")]
    Load(String),
    #[error("attaching to the {0} tracepoint failed: {1}")]
    Attach(&'static str, String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl From<TracepointError> for AttributionError {
    fn from(e: TracepointError) -> Self {
        match e {
            TracepointError::Load(m) => AttributionError::Load(m),
            TracepointError::Attach(tp, m) => AttributionError::Attach(tp, m),
        }
    }
}

/// The process behind a change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actor {
    pub pid: u32,
    pub comm: Option<String>,
    pub exe: Option<String>,
    pub cmd: Option<String>,
    pub cmd_truncated: bool,
    pub uid: Option<u32>,
    /// None when unset (no login session: daemons, or no audit).
    pub loginuid: Option<u32>,
}

#[derive(Debug, Clone)]
struct Proc {
    actor: Actor,
    exited_ns: Option<u64>,
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

/// argv as the kernel keeps it (NUL-separated) → one line.
fn join_args(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    raw.split(|c| *c == 0)
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One ring record: (kind, time, actor). None if malformed.
fn parse_record(b: &[u8]) -> Option<(u32, u64, Actor)> {
    if b.len() < REC_LEN {
        return None;
    }
    let kind = u32_at(b, 0);
    if ![KIND_FORK, KIND_EXEC, KIND_EXIT].contains(&kind) {
        return None;
    }
    let exe_len = (u32_at(b, 28) as usize).min(EXE_CAP);
    let args_size = u32_at(b, 32) as usize;
    let args_len = (u32_at(b, 36) as usize).min(ARGS_CAP);
    let loginuid = u32_at(b, 20);
    Some((
        kind,
        u64_at(b, 40),
        Actor {
            pid: u32_at(b, 4),
            uid: Some(u32_at(b, 12)),
            loginuid: (loginuid != u32::MAX).then_some(loginuid),
            comm: Some(text(&b[OFF_COMM..OFF_COMM + 16])),
            exe: (exe_len > 0).then(|| text(&b[OFF_EXE..OFF_EXE + exe_len])),
            cmd: (args_len > 0).then(|| join_args(&b[OFF_ARGS..OFF_ARGS + args_len])),
            cmd_truncated: args_len > 0 && args_size > args_len,
        },
    ))
}

/// `CLOCK_MONOTONIC` in ns, the clock of `bpf_ktime_get_ns`.
fn now_ns() -> u64 {
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

/// The process table and the ring that feeds it (drained by its thread and before each
/// look-up, so a process's fork/exec record is always in before its changes are looked up).
struct Table {
    ring: RingBuf<MapData>,
    dropped: PerCpuArray<MapData, u64>,
    reported_drops: u64,
    procs: HashMap<u32, Proc>,
}

impl Table {
    fn drain(&mut self) {
        while let Some(item) = self.ring.next() {
            let Some((kind, time, actor)) = parse_record(&item) else {
                tracing::warn!(len = item.len(), "attribution: malformed record skipped");
                continue;
            };
            drop(item);
            match kind {
                KIND_EXIT => {
                    if let Some(p) = self.procs.get_mut(&actor.pid) {
                        p.exited_ns = Some(time);
                    }
                }
                _ => {
                    if self.procs.len() >= TABLE_MAX {
                        let horizon = now_ns().saturating_sub(EXITED_KEEP_NS);
                        self.procs
                            .retain(|_, p| p.exited_ns.is_none_or(|t| t >= horizon));
                        if self.procs.len() >= TABLE_MAX {
                            self.procs.retain(|_, p| p.exited_ns.is_none());
                        }
                    }
                    self.procs.insert(
                        actor.pid,
                        Proc {
                            actor,
                            exited_ns: None,
                        },
                    );
                }
            }
        }
        let lost: u64 = self
            .dropped
            .get(&0, 0)
            .map(|v| v.iter().copied().fold(0u64, u64::wrapping_add))
            .unwrap_or(0);
        if lost != self.reported_drops {
            tracing::warn!(
                lost = lost.saturating_sub(self.reported_drops),
                total = lost,
                "attribution: the kernel dropped process records (ring buffer full); those processes are looked up in /proc"
            );
            self.reported_drops = lost;
        }
    }
}

/// A process that started before beacond: /proc, read at once.
fn from_proc(pid: u32) -> Option<Actor> {
    let dir = PathBuf::from(format!("/proc/{pid}"));
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok());
    let loginuid = std::fs::read_to_string(dir.join("loginuid"))
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .filter(|u| *u != u32::MAX);
    let raw = std::fs::read(dir.join("cmdline")).unwrap_or_default();
    Some(Actor {
        pid,
        comm: std::fs::read_to_string(dir.join("comm"))
            .ok()
            .map(|s| s.trim_end().to_owned()),
        exe: std::fs::read_link(dir.join("exe"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned()),
        cmd: (!raw.is_empty()).then(|| join_args(&raw)),
        cmd_truncated: false,
        uid,
        loginuid,
    })
}

/// A change fanotify reported.
#[derive(Debug, Clone)]
struct Change {
    path: PathBuf,
    mask: u32,
    actor: Actor,
}

/// `name_to_handle_at` of `path` (following symlinks, as inotify does): the handle's type and
/// bytes, as fanotify's FID records carry them.
fn handle_of(path: &Path) -> io::Result<Vec<u8>> {
    const MAX: usize = 128; // MAX_HANDLE_SZ
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))?;
    // struct file_handle: handle_bytes u32, handle_type i32, f_handle[MAX]; u32-aligned.
    let mut buf = [0u32; 2 + MAX / 4];
    buf[0] = MAX as u32;
    let mut mount_id: libc::c_int = 0;
    // SAFETY: `buf` is a u32-aligned struct file_handle with room for MAX_HANDLE_SZ bytes, as
    // handle_bytes says; `c` is NUL-terminated; both outlive the call.
    let rc = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            &mut mount_id,
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let len = (buf[0] as usize).min(MAX);
    let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_ne_bytes()).collect();
    Ok(bytes[4..8 + len].to_vec())
}

/// The fanotify group, the process table, and the changes seen.
pub struct Attribution {
    fan: OwnedFd,
    table: Arc<Mutex<Table>>,
    stop: Option<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Directory handle (type + bytes) → its path.
    dirs: HashMap<Vec<u8>, PathBuf>,
    marked: usize,
    changes: VecDeque<Change>,
    names: HashMap<u32, Option<String>>,
    /// The inotify batch (its read time) that already waited for a twin.
    waited: u64,
}

impl Attribution {
    /// Open the fanotify group and load the process table (`btf`: normally [`DEFAULT_BTF`]).
    pub fn open(btf: &Path) -> Result<Self, AttributionError> {
        // SAFETY: fanotify_init takes flags only and returns a new fd or -1. Called through
        // syscall(2): not every libc (musl) declares it.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_fanotify_init,
                libc::FAN_CLASS_NOTIF
                    | libc::FAN_CLOEXEC
                    | libc::FAN_NONBLOCK
                    | libc::FAN_REPORT_DFID_NAME,
                (libc::O_RDONLY | libc::O_CLOEXEC) as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(AttributionError::Fanotify(io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by the kernel and is owned by nothing else.
        let fan = unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) };

        let btf_data = Btf::parse_file(btf, aya::Endianness::default())
            .map_err(|e| AttributionError::Btf(format!("{}: {e}", btf.display())))?;
        let mut ebpf = EbpfLoader::new()
            .btf(Some(&btf_data))
            .map_max_entries("records", RING_BYTES)
            .load(&OBJECT.0)
            .map_err(|e| AttributionError::Load(e.to_string()))?;
        super::ebpf::attach_tracepoints(
            &mut ebpf,
            &btf_data,
            &[
                ("on_fork", "sched_process_fork"),
                ("on_exec", "sched_process_exec"),
                ("on_exit", "sched_process_exit"),
            ],
        )?;
        let take = |ebpf: &mut aya::Ebpf, name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| AttributionError::Load(format!("map {name} missing")))
        };
        let ring = RingBuf::try_from(take(&mut ebpf, "records")?)
            .map_err(|e| AttributionError::Load(e.to_string()))?;
        let dropped = PerCpuArray::try_from(take(&mut ebpf, "dropped")?)
            .map_err(|e| AttributionError::Load(e.to_string()))?;
        let ring_fd = ring.as_raw_fd();
        let table = Arc::new(Mutex::new(Table {
            ring,
            dropped,
            reported_drops: 0,
            procs: HashMap::new(),
        }));

        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a writable array of two ints, as pipe2 requires.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: both fds were just created by pipe2 and are owned by nothing else.
        let (stop_r, stop_w) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let shared = table.clone();
        let thread = std::thread::Builder::new()
            .name("attribution".into())
            .spawn(move || {
                // The programs stay attached as long as `ebpf` lives: this thread's lifetime.
                let _ebpf = ebpf;
                loop {
                    let mut pfd = [
                        libc::pollfd {
                            fd: ring_fd,
                            events: libc::POLLIN,
                            revents: 0,
                        },
                        libc::pollfd {
                            fd: stop_r.as_raw_fd(),
                            events: libc::POLLIN,
                            revents: 0,
                        },
                    ];
                    // SAFETY: `pfd` is a valid array of two pollfd for the duration of the
                    // call; `ring_fd` stays open while `shared` (holding the ring) lives.
                    let n = unsafe { libc::poll(pfd.as_mut_ptr(), 2, -1) };
                    if n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                        tracing::error!(error = %io::Error::last_os_error(), "attribution: poll failed");
                        return;
                    }
                    if pfd[1].revents != 0 {
                        return;
                    }
                    if let Ok(mut t) = shared.lock() {
                        t.drain();
                    }
                }
            })?;
        Ok(Attribution {
            fan,
            table,
            stop: Some(stop_w),
            thread: Some(thread),
            dirs: HashMap::new(),
            marked: 0,
            changes: VecDeque::new(),
            names: HashMap::new(),
            waited: 0,
        })
    }

    /// Record changes to `path`: a directory (and its entries), or a file. A path that does
    /// not exist is skipped (the beacon watches it again when it appears).
    pub fn watch(&mut self, path: &Path) {
        let Ok(md) = std::fs::metadata(path) else {
            return;
        };
        let dir = md.is_dir();
        // Events name the directory by its handle: know the handle of the directory an event
        // can name (the path itself, or a file's parent).
        let named = if dir { Some(path) } else { path.parent() };
        if let Some(d) = named {
            if let Ok(h) = handle_of(d) {
                self.dirs.insert(h, d.to_path_buf());
            }
        }
        let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
            return;
        };
        let mask = if dir {
            FAN_MASK | libc::FAN_EVENT_ON_CHILD | libc::FAN_ONDIR
        } else {
            FAN_MASK
        };
        // SAFETY: plain syscall on our own fanotify fd with a NUL-terminated path that
        // outlives the call (syscall(2): musl does not declare fanotify_mark).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_fanotify_mark,
                self.fan.as_raw_fd(),
                libc::FAN_MARK_ADD,
                mask,
                libc::AT_FDCWD,
                c.as_ptr(),
            )
        };
        if rc != 0 {
            tracing::warn!(path = %path.display(), error = %io::Error::last_os_error(), "attribution: cannot mark this path (fanotify); its changes carry no attribution");
            return;
        }
        self.marked += 1;
    }

    /// Say in the log that attribution is on, once the beacon's paths are marked (a test or an
    /// operator can wait for it).
    pub fn announce(&self, beacon: &str) {
        tracing::info!(
            beacon,
            paths = self.marked,
            "attribution on: fanotify + eBPF process table"
        );
    }

    /// The process `pid`: from the table (what the kernel recorded at its fork/exec), else
    /// from /proc (it started before beacond).
    fn actor(&self, pid: u32) -> Actor {
        let known = self.table.lock().ok().and_then(|mut t| {
            t.drain();
            t.procs.get(&pid).map(|p| p.actor.clone())
        });
        known.or_else(|| from_proc(pid)).unwrap_or(Actor {
            pid,
            ..Actor::default()
        })
    }

    /// Read what fanotify queued.
    fn poll(&mut self) {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: `buf` is valid for `buf.len()` writable bytes; the fd is ours.
            let n = unsafe { libc::read(self.fan.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                return;
            }
            let mut b = &buf[..n as usize];
            while b.len() >= 24 {
                let len = (u32_at(b, 0) as usize).min(b.len());
                if len < 24 {
                    return;
                }
                self.event(&b[..len]);
                b = &b[len..];
            }
        }
    }

    /// One `fanotify_event_metadata` and its info records.
    fn event(&mut self, e: &[u8]) {
        let meta_len = usize::from(u16::from_ne_bytes([e[6], e[7]]));
        let mask = u64_at(e, 8);
        let fd = u32_at(e, 16) as i32;
        let pid = u32_at(e, 20);
        if fd >= 0 {
            // SAFETY: the kernel gave us this fd with the event; we own it and close it.
            drop(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        if mask & libc::FAN_Q_OVERFLOW != 0 {
            tracing::warn!(
                "attribution: fanotify queue overflow; some changes carry no attribution"
            );
            return;
        }
        let mut info = e.get(meta_len..).unwrap_or_default();
        while info.len() >= 4 {
            let kind = info[0];
            let len = usize::from(u16::from_ne_bytes([info[2], info[3]])).min(info.len());
            if len < 4 {
                return;
            }
            let rec = &info[..len];
            if kind == libc::FAN_EVENT_INFO_TYPE_DFID_NAME || kind == libc::FAN_EVENT_INFO_TYPE_DFID
            {
                // header (4), fsid (8), handle_bytes (4), handle_type (4), f_handle, [name\0]
                let hlen = u32_at(rec, 12) as usize;
                if let Some(handle) = rec.get(16..20 + hlen) {
                    if let Some(dir) = self.dirs.get(handle) {
                        let name = rec.get(20 + hlen..).unwrap_or_default();
                        let name = &name[..name.iter().position(|c| *c == 0).unwrap_or(name.len())];
                        let path = if name.is_empty() || name == b"." {
                            dir.clone()
                        } else {
                            dir.join(OsStr::from_bytes(name))
                        };
                        let actor = self.actor(pid);
                        self.changes.push_back(Change {
                            path,
                            mask: (mask & 0xfff) as u32,
                            actor,
                        });
                        if self.changes.len() > CHANGES_MAX {
                            self.changes.pop_front();
                        }
                    }
                }
            }
            info = &info[len..];
        }
    }

    /// Wait until fanotify has something, at most `ms`.
    fn wait(&self, ms: i32) {
        let mut pfd = [libc::pollfd {
            fd: self.fan.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        }];
        // SAFETY: `pfd` is a valid pollfd for the duration of the call.
        unsafe { libc::poll(pfd.as_mut_ptr(), 1, ms) };
    }

    fn take_now(&mut self, path: &Path, bits: u32) -> Option<Actor> {
        let mut found = None;
        self.changes.retain(|c| {
            let hit = c.mask & bits != 0 && c.path == path;
            if hit {
                found = Some(c.actor.clone());
            }
            !hit
        });
        found
    }

    /// The process behind an inotify event on `path` with `mask` (IN_* bits) from the batch
    /// read at `batch` (any number identifying the read): the last matching change, and the
    /// changes it covers are consumed (a later event is not given an earlier one's process).
    pub fn take(&mut self, path: &Path, mask: u32, batch: u64) -> Option<Actor> {
        // Kinds fanotify is not asked for (access, open, the watch's own deletion) have no twin.
        let bits = mask & FAN_MASK as u32;
        if bits == 0 {
            return None;
        }
        self.poll();
        if let Some(a) = self.take_now(path, bits) {
            return Some(a);
        }
        if self.waited == batch {
            return None;
        }
        self.waited = batch;
        self.wait(TWIN_WAIT_MS);
        self.poll();
        self.take_now(path, bits)
    }

    /// The process that last changed any of `paths` (any kind of change).
    pub fn last(&mut self, paths: &[&Path]) -> Option<Actor> {
        self.poll();
        let hit = |c: &&Change| paths.iter().any(|p| c.path == *p);
        if !self.changes.iter().any(|c| hit(&c)) {
            self.wait(TWIN_WAIT_MS);
            self.poll();
        }
        self.changes.iter().rev().find(hit).map(|c| c.actor.clone())
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

    /// The event keys for `actor`: pid, exe, cmd, comm, uid, user, loginuid, login_user
    /// (unknown values are null, never guessed).
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
        let user = actor.uid.and_then(|u| self.user(u));
        m.insert("user".into(), json!(user));
        m.insert("loginuid".into(), json!(actor.loginuid));
        let login_user = actor.loginuid.and_then(|u| self.user(u));
        m.insert("login_user".into(), json!(login_user));
        m
    }
}

impl Drop for Attribution {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A beacon's attribution: Some when it could be set up, else None with the reason logged.
pub fn open_for(beacon: &str, btf: &Path) -> Option<Attribution> {
    match Attribution::open(btf) {
        Ok(a) => Some(a),
        Err(e) => {
            tracing::warn!(beacon, error = %e, "attribution is off: events carry no process keys");
            None
        }
    }
}

/// A number identifying one read of an inotify queue (for [`Attribution::take`]).
pub fn batch_id() -> u64 {
    now_ns()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_record() {
        let mut b = vec![0u8; REC_LEN];
        b[0..4].copy_from_slice(&KIND_EXEC.to_ne_bytes());
        b[4..8].copy_from_slice(&7u32.to_ne_bytes());
        b[20..24].copy_from_slice(&u32::MAX.to_ne_bytes());
        b[28..32].copy_from_slice(&9u32.to_ne_bytes());
        b[32..36].copy_from_slice(&600u32.to_ne_bytes());
        b[36..40].copy_from_slice(&8u32.to_ne_bytes());
        b[OFF_COMM..OFF_COMM + 4].copy_from_slice(b"bash");
        b[OFF_EXE..OFF_EXE + 9].copy_from_slice(b"/bin/bash");
        b[OFF_ARGS..OFF_ARGS + 8].copy_from_slice(b"bash\0-c\0");
        let (kind, _, a) = parse_record(&b).expect("record");
        assert_eq!(kind, KIND_EXEC);
        assert_eq!(a.pid, 7);
        assert_eq!(a.exe.as_deref(), Some("/bin/bash"));
        assert_eq!(a.cmd.as_deref(), Some("bash -c"));
        assert!(a.cmd_truncated);
        assert_eq!(a.loginuid, None);
        assert!(parse_record(&b[..REC_LEN - 1]).is_none());
    }

    #[test]
    fn directory_handles_are_stable() {
        let dir = std::env::temp_dir();
        match (handle_of(&dir), handle_of(&dir)) {
            (Ok(a), Ok(b)) => assert_eq!(a, b),
            // A filesystem without file handles: nothing to compare.
            (Err(_), _) | (_, Err(_)) => {}
        }
    }
}
