//! The eBPF exec source: `bpf/exec.bpf.c` (CO-RE, compiled by `bpf/build.sh`, the object
//! embedded here) on the `sched_process_exec` / `sched_process_exit` BTF tracepoints, loaded
//! with `aya`. Each exec carries what the kernel knows at that moment — ids, audit login uid and
//! session, tty, the path given to execve, and argv copied from the new image's memory — so a
//! process that is gone before user space looks is still complete. Records travel through a
//! BPF ring buffer; records the kernel could not reserve are counted per CPU (`dropped`) and
//! reported as [`Msg::Lost`] with exact running totals.

use super::reader_thread::{ReaderThread, Stop, Woke};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::BtfTracePoint;
use aya::{Btf, EbpfLoader};
use nix::poll::PollTimeout;
use std::io;
use std::os::fd::AsFd;

/// The compiled BPF object, 8-byte aligned as the ELF parser expects.
#[repr(C, align(8))]
struct Aligned<B: ?Sized>(B);
static OBJECT: &Aligned<[u8]> = &Aligned(*include_bytes!("../../../bpf/exec.bpf.o"));

/// Bytes of argv the program can copy at most (its `ARGS_CAP - 1`).
pub const ARGV_CAP: u32 = 16383;

const KIND_EXEC: u32 = 1;
const KIND_EXIT: u32 = 2;
/// `offsetof(struct event, args)` in exec.bpf.c.
const HEADER: usize = 680;

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    #[error("kernel BTF unavailable ({0}); the eBPF source needs the kernel's BTF")]
    Btf(String),
    #[error("loading the BPF object failed (needs CAP_BPF and CAP_PERFMON, or root): {0}")]
    Load(String),
    #[error("attaching to the {0} tracepoint failed: {1}")]
    Attach(&'static str, String),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Bounds and sizes chosen by the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Ring buffer size in bytes (rounded up to a power of two, at least one page).
    pub ring_bytes: u32,
    /// argv bytes copied per exec (at most [`ARGV_CAP`]).
    pub argv_max_bytes: u32,
}

/// The default ring buffer: ~740 exec+exit record pairs, half a second of this host's fastest
/// exec burst while the reader is not scheduled (records wait in the reader's channel after
/// that, not in the ring). The kernel maps the ring's pages twice (the wrap-around view), so
/// it shows as 2 x `ring_bytes` of the agent's RSS (measured: an 8 MiB ring, +16.5 MiB).
pub const DEFAULT_RING_BYTES: u32 = 1 << 20;

/// After a burst of this many records, the heap the burst used is given back once the ring
/// is quiet for the poll's tick.
const TRIM_AFTER_RECORDS: u64 = 1024;

/// The kernel's BTF, by default `/sys/kernel/btf/vmlinux`.
pub const DEFAULT_BTF: &str = "/sys/kernel/btf/vmlinux";

/// One exec or exit, as the kernel reported it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    pub exit: bool,
    pub tid: u32,
    pub pid: u32,
    pub ppid: u32,
    pub ns_pid: u32,
    pub ns_level: u32,
    pub uid: u32,
    pub euid: u32,
    pub gid: u32,
    /// `u32::MAX` when unset (no login session).
    pub loginuid: u32,
    pub sessionid: u32,
    /// The raw wait status (`exit_code` of the task): code << 8 | signal.
    pub exit_code: u32,
    pub cgroup_id: u64,
    pub start_ns: u64,
    pub time_ns: u64,
    pub comm: String,
    pub tty: Option<String>,
    /// The path given to execve (relative when the caller gave a relative one).
    pub filename: String,
    /// argv as copied (NUL-separated in the kernel).
    pub args: Vec<String>,
    /// The command line was longer than what was copied.
    pub truncated: bool,
    /// The copy from user memory failed (argv unknown).
    pub args_fault: bool,
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

fn cstr_at(b: &[u8], off: usize, len: usize) -> String {
    let s = b.get(off..(off + len).min(b.len())).unwrap_or_default();
    let end = s.iter().position(|c| *c == 0).unwrap_or(s.len());
    String::from_utf8_lossy(&s[..end]).into_owned()
}

/// A pty's kernel name (`pts3`) as /dev names it (`pts/3`).
fn tty_path(name: String) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    match name.strip_prefix("pts") {
        Some(n) if !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) => {
            Some(format!("pts/{n}"))
        }
        _ => Some(name),
    }
}

/// Parse one ring-buffer record (layout: `struct event` in exec.bpf.c). None if malformed.
pub fn parse(b: &[u8]) -> Option<Record> {
    if b.len() < HEADER {
        return None;
    }
    let kind = u32_at(b, 0);
    if kind != KIND_EXEC && kind != KIND_EXIT {
        return None;
    }
    let args_size = u32_at(b, 72) as usize;
    let args_len = (u32_at(b, 76) as usize).min(b.len() - HEADER);
    let args_err = u32_at(b, 80) != 0;
    let raw = &b[HEADER..HEADER + args_len];
    // A complete copy ends in the last argument's NUL; a cut one ends mid-argument.
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    let args = if raw.is_empty() {
        Vec::new()
    } else {
        raw.split(|c| *c == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    };
    Some(Record {
        exit: kind == KIND_EXIT,
        tid: u32_at(b, 4),
        pid: u32_at(b, 8),
        ppid: u32_at(b, 12),
        ns_pid: u32_at(b, 16),
        ns_level: u32_at(b, 20),
        uid: u32_at(b, 24),
        euid: u32_at(b, 28),
        gid: u32_at(b, 32),
        loginuid: u32_at(b, 36),
        sessionid: u32_at(b, 40),
        exit_code: u32_at(b, 44),
        cgroup_id: u64_at(b, 48),
        start_ns: u64_at(b, 56),
        time_ns: u64_at(b, 64),
        comm: cstr_at(b, 88, 16),
        tty: tty_path(cstr_at(b, 104, 64)),
        filename: cstr_at(b, 168, 512),
        truncated: kind == KIND_EXEC && !args_err && args_size > args_len,
        args_fault: kind == KIND_EXEC && args_err,
        args,
    })
}

/// What the reader thread passes on.
#[derive(Debug)]
pub enum Msg<T> {
    /// A record, with what `inspect` added at once (e.g. the cwd from /proc).
    Record(Record, T),
    /// The kernel could not deliver records: running totals since load, and how many execs
    /// the program saw in all (delivered + lost).
    Lost { exec: u64, exit: u64 },
}

/// The loaded program and the thread that drains its ring buffer. Dropping it stops the
/// thread and detaches the programs.
pub type Reader<T> = ReaderThread<Msg<T>>;

/// The loaded programs, the ring buffer they write to, and their per-CPU loss counters.
type Loaded = (aya::Ebpf, RingBuf<MapData>, PerCpuArray<MapData, u64>);

fn load(opts: &Options, btf_path: &std::path::Path) -> Result<Loaded, EbpfError> {
    let loaded = load_with_btf(opts, btf_path);
    release_freed_heap();
    loaded
}

/// Give the heap freed by the BTF parse back to the kernel. Parsing the kernel's BTF
/// (~125,000 types) allocates ~30 MiB in small pieces; freed, glibc keeps them as the
/// process's RSS (measured: +16 MiB for as long as the agent runs) unless asked to trim.
fn release_freed_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks the allocator's own free lists; no pointer is passed.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn load_with_btf(opts: &Options, btf_path: &std::path::Path) -> Result<Loaded, EbpfError> {
    let btf = Btf::parse_file(btf_path, aya::Endianness::default())
        .map_err(|e| EbpfError::Btf(format!("{}: {e}", btf_path.display())))?;
    let ring = opts
        .ring_bytes
        .max(4096)
        .checked_next_power_of_two()
        .unwrap_or(1 << 30);
    let argv = opts.argv_max_bytes.min(ARGV_CAP);
    let mut ebpf = EbpfLoader::new()
        .btf(Some(&btf))
        .map_max_entries("events", ring)
        .override_global("argv_max_bytes", &argv, true)
        .load(&OBJECT.0)
        .map_err(|e| EbpfError::Load(e.to_string()))?;
    for (prog, tp) in [
        ("on_exec", "sched_process_exec"),
        ("on_exit", "sched_process_exit"),
    ] {
        let p: &mut BtfTracePoint = ebpf
            .program_mut(prog)
            .ok_or_else(|| EbpfError::Load(format!("program {prog} missing from the object")))?
            .try_into()
            .map_err(|e: aya::programs::ProgramError| EbpfError::Load(e.to_string()))?;
        p.load(tp, &btf)
            .map_err(|e| EbpfError::Load(format!("{prog}: {e}")))?;
        p.attach()
            .map_err(|e| EbpfError::Attach(tp, e.to_string()))?;
    }
    let events = ebpf
        .take_map("events")
        .ok_or_else(|| EbpfError::Load("map events missing".into()))?;
    let ring = RingBuf::try_from(events).map_err(|e| EbpfError::Load(e.to_string()))?;
    let dropped = ebpf
        .take_map("dropped")
        .ok_or_else(|| EbpfError::Load("map dropped missing".into()))?;
    let dropped = PerCpuArray::try_from(dropped).map_err(|e| EbpfError::Load(e.to_string()))?;
    Ok((ebpf, ring, dropped))
}

/// Load and attach the programs, then drain the ring buffer on a dedicated thread; for each
/// record `inspect` runs at once (it may read /proc while the process still lives).
pub fn spawn_reader<T, F>(
    opts: Options,
    btf: &std::path::Path,
    capacity: usize,
    inspect: F,
) -> Result<Reader<T>, EbpfError>
where
    T: Send + 'static,
    F: Fn(&Record) -> T + Send + 'static,
{
    let (ebpf, ring, dropped) = load(&opts, btf)?;
    Ok(ReaderThread::spawn(
        "sh-ebpf",
        capacity,
        move |stop, tx| reader_loop(ebpf, ring, dropped, stop, tx, inspect),
    )?)
}

/// Sum of the per-CPU drop counters: (exec, exit).
fn drops(map: &PerCpuArray<MapData, u64>) -> (u64, u64) {
    let sum = |i: u32| {
        map.get(&i, 0)
            .map(|v| v.iter().copied().fold(0u64, u64::wrapping_add))
            .unwrap_or(0)
    };
    (sum(0), sum(1))
}

fn reader_loop<T, F: Fn(&Record) -> T>(
    _ebpf: aya::Ebpf,
    mut ring: RingBuf<MapData>,
    dropped: PerCpuArray<MapData, u64>,
    stop: Stop,
    tx: tokio::sync::mpsc::Sender<Msg<T>>,
    inspect: F,
) {
    // SAFETY: setpriority on the calling thread (tid) only changes its nice value; failure
    // (no CAP_SYS_NICE) is harmless and leaves the default.
    unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, -10);
    }
    let mut reported = (0u64, 0u64);
    let mut since_trim = 0u64;
    // Drops are checked after each drain and at least once a second, so a loss is reported
    // even when nothing else arrives afterwards.
    let tick = PollTimeout::from(1000u16);
    loop {
        match stop.wait(ring.as_fd(), tick) {
            Ok(Woke::Readable) => {}
            Ok(Woke::Timeout) => {
                if since_trim >= TRIM_AFTER_RECORDS {
                    // Quiet after a burst: its records, events and queues were freed, but
                    // glibc keeps the pages as the agent's RSS until asked.
                    since_trim = 0;
                    release_freed_heap();
                }
            }
            Ok(Woke::Stopped) => return,
            Err(e) => {
                tracing::error!(error = %e, "eBPF ring buffer poll failed");
                return;
            }
        }
        while let Some(item) = ring.next() {
            since_trim += 1;
            let Some(rec) = parse(&item) else {
                tracing::warn!(len = item.len(), "malformed eBPF exec record skipped");
                continue;
            };
            drop(item);
            let extra = inspect(&rec);
            if tx.blocking_send(Msg::Record(rec, extra)).is_err() {
                return;
            }
        }
        let now = drops(&dropped);
        if now != reported {
            reported = now;
            if tx
                .blocking_send(Msg::Lost {
                    exec: now.0,
                    exit: now.1,
                })
                .is_err()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_record_and_marks_truncation() {
        let mut b = vec![0u8; HEADER + 8];
        b[0..4].copy_from_slice(&KIND_EXEC.to_ne_bytes());
        b[8..12].copy_from_slice(&42u32.to_ne_bytes());
        b[72..76].copy_from_slice(&20u32.to_ne_bytes());
        b[76..80].copy_from_slice(&8u32.to_ne_bytes());
        b[104..108].copy_from_slice(b"pts7");
        b[168..177].copy_from_slice(b"/bin/true");
        b[HEADER..].copy_from_slice(b"ab\0cd\0ef");
        let r = parse(&b).expect("record");
        assert_eq!(r.pid, 42);
        assert_eq!(r.args, ["ab", "cd", "ef"]);
        assert!(r.truncated);
        assert_eq!(r.tty.as_deref(), Some("pts/7"));
        assert_eq!(r.filename, "/bin/true");
        assert!(parse(&b[..HEADER - 1]).is_none());
    }
}
