//! `sh`: every command executed, as Salt's `sh` beacon reports it (tag
//! `salt/beacon/<id>/sh/<shell pid>`, data `cmd`, `args` including argv[0], `user`), from the
//! kernel's proc connector (exec events pushed as they happen; no strace), with the process
//! read from /proc at once: `pid`, `ppid`, `uid`, `euid`, `cwd`, `tty`, `comm`, `exe`,
//! `shell_pid`, and `source` (`proc_connector` or `proc_scan`).
//!
//! Options:
//! - `scope`: `shells` (default, Salt's meaning: commands run under a shell listed in the
//!   shells file — the exec'ing process was a shell, or an ancestor is) or `all` (every exec).
//! - `users`: only these users' commands (names). `exclude`: command regexes; a command whose
//!   `cmd` or command line (`args` joined by spaces) matches one is not reported.
//! - `shells_file` (default `/etc/shells`), `procfs` (default `/proc`).
//! - `source`: `auto` (default: the proc connector, else /proc scanning), `proc_connector` or
//!   `proc_scan` (forced; for tests and hosts where the connector misbehaves).
//! - `rcvbuf`: the netlink receive buffer in bytes (default 16 MiB).
//! - `scan_interval`: seconds between /proc scans in `proc_scan` mode (default 0.25).
//!
//! Loss is never silent: a receive buffer overrun (ENOBUFS), or a gap in the kernel's per-CPU
//! event sequence numbers (a message the kernel could not allocate), fires an `overrun` event
//! (`overruns`, `lost`: running totals), then /proc is rescanned and processes still alive that were missed are reported
//! with `recovered: true`. A process gone before /proc could be read is still reported with
//! what is known (pid, ppid, and `argv_missing: true`). In `proc_scan` mode, processes that
//! live less than one scan interval are not seen at all; the log and every event's `source`
//! say which mode is active.
//!
//! The tag's pid is the shell's (Salt tags each event with the pid of the traced shell);
//! `pid` is the process that ran the command.

use super::{Beacon, BeaconError, BuildContext, Data, Drive};
use crate::config::yaml::Yaml;
use crate::config::{BeaconConfig, ConfigError};
use crate::sources::ebpf;
use crate::sources::proc_connector::{self, Msg, ProcConnector, Reader};
use crate::sources::reader_thread::ReaderThread;
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scope {
    Shells,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Auto,
    Ebpf,
    Connector,
    Scan,
}

/// What we know of a live process.
#[derive(Debug, Clone)]
struct Proc {
    ppid: i32,
    /// Its current image is a shell.
    shell: bool,
    /// Its exec was reported (an exit event follows when `exits` is on).
    reported: bool,
    /// /proc/<pid>/stat starttime (scan mode identity).
    start: u64,
}

enum Mode {
    Ebpf(ebpf::Reader<Seen>),
    Connector(Reader<Info>),
    Scan,
}

/// What the eBPF reader thread reads from /proc at once (best effort: the process may be gone).
#[derive(Debug, Default)]
struct Seen {
    cwd: Option<String>,
}

pub struct Sh {
    scope: Scope,
    users: Option<HashSet<String>>,
    exclude: Vec<fancy_regex::Regex>,
    shells_file: PathBuf,
    procfs: PathBuf,
    source: Source,
    rcvbuf: usize,
    scan_interval: Duration,
    shells: Shells,
    mode: Option<Mode>,
    table: HashMap<i32, Proc>,
    names: HashMap<u32, String>,
    overruns: u64,
    /// Events missing from the kernel's per-CPU sequence numbers.
    lost: u64,
    /// A message taken by `ready` and not yet evaluated.
    buffered: Option<Msg<Info>>,
    ebpf_buffered: Option<ebpf::Msg<Seen>>,
    /// Evaluate without waiting (after start, or when a drain stopped early).
    pending: bool,
    ebpf: ebpf::Options,
    argv_max_args: usize,
    exits: bool,
    cgroupfs: Option<PathBuf>,
    btf: PathBuf,
    cgroups: HashMap<u64, String>,
    /// Running totals of records the kernel could not deliver (eBPF).
    lost_exec: u64,
    lost_exit: u64,
    ebpf_overruns: u64,
}

#[derive(Default)]
struct Shells {
    paths: HashSet<String>,
    names: HashSet<String>,
    checked: Option<Instant>,
    mtime: Option<std::time::SystemTime>,
}

impl Shells {
    /// Re-read the shells file when it changed (checked at most every 5 s, as Salt caches).
    fn refresh(&mut self, file: &Path) {
        if self
            .checked
            .is_some_and(|t| t.elapsed() < Duration::from_secs(5))
        {
            return;
        }
        self.checked = Some(Instant::now());
        let mtime = std::fs::metadata(file).and_then(|m| m.modified()).ok();
        if mtime == self.mtime && !self.paths.is_empty() {
            return;
        }
        self.mtime = mtime;
        match std::fs::read_to_string(file) {
            Ok(text) => {
                self.paths.clear();
                self.names.clear();
                for l in text.lines().map(str::trim) {
                    if l.is_empty() || l.starts_with('#') {
                        continue;
                    }
                    self.paths.insert(l.to_owned());
                    if let Some(n) = Path::new(l).file_name() {
                        self.names.insert(n.to_string_lossy().into_owned());
                    }
                }
            }
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "cannot read the shells file")
            }
        }
    }

    fn is_shell(&self, exe: Option<&str>, argv0: Option<&str>) -> bool {
        if exe.is_some_and(|e| self.paths.contains(e)) {
            return true;
        }
        let base = |s: &str| {
            let s = s.trim_start_matches('-');
            s.rsplit('/').next().unwrap_or(s).to_owned()
        };
        argv0.is_some_and(|a| self.names.contains(&base(a)))
            || exe.is_some_and(|e| self.names.contains(&base(e)))
    }
}

fn str_list(cfg: &BeaconConfig, key: &str) -> Result<Option<Vec<String>>, ConfigError> {
    let Some(n) = cfg.opt(key) else {
        return Ok(None);
    };
    match &n.value {
        Yaml::Null => Ok(None),
        Yaml::Str(s) => Ok(Some(vec![s.clone()])),
        Yaml::Seq(items) => items
            .iter()
            .map(|i| match &i.value {
                Yaml::Str(s) => Ok(s.clone()),
                Yaml::Int(v) => Ok(v.to_string()),
                _ => Err(cfg.error(
                    i,
                    format!(
                        "{key} must be a list of strings, found an item that is {}",
                        i.kind()
                    ),
                )),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        _ => Err(cfg.error(
            n,
            format!("{key} must be a list of strings, found {}", n.kind()),
        )),
    }
}

/// The options this beacon takes (checked by `beacons::build`).
pub const OPTIONS: &[&str] = &[
    "scope",
    "users",
    "exclude",
    "shells_file",
    "procfs",
    "source",
    "rcvbuf",
    "scan_interval",
    "ring_bytes",
    "argv_max_bytes",
    "argv_max_args",
    "exits",
    "cgroupfs",
    "btf",
];

pub fn build(cfg: &BeaconConfig, _ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let scope = match cfg.str_opt("scope", "shells")?.as_str() {
        "shells" => Scope::Shells,
        "all" => Scope::All,
        other => {
            let at = cfg
                .opt("scope")
                .map_or_else(|| cfg.error_here(""), |n| cfg.error(n, ""));
            return Err(ConfigError {
                message: format!("scope must be 'shells' or 'all', found '{other}'"),
                ..at
            });
        }
    };
    let source = match cfg.str_opt("source", "auto")?.as_str() {
        "auto" => Source::Auto,
        "ebpf" => Source::Ebpf,
        "proc_connector" => Source::Connector,
        "proc_scan" => Source::Scan,
        other => {
            let at = cfg
                .opt("source")
                .map_or_else(|| cfg.error_here(""), |n| cfg.error(n, ""));
            return Err(ConfigError {
                message: format!(
                    "source must be 'auto', 'ebpf', 'proc_connector' or 'proc_scan', found '{other}'"
                ),
                ..at
            });
        }
    };
    let mut exclude = Vec::new();
    if let Some(list) = str_list(cfg, "exclude")? {
        let node = cfg.opt("exclude");
        for pat in list {
            let re = fancy_regex::Regex::new(&pat).map_err(|e| {
                let at = node.map_or_else(|| cfg.error_here(""), |n| cfg.error(n, ""));
                ConfigError {
                    message: format!("exclude: '{pat}' is not a valid regex: {e}"),
                    ..at
                }
            })?;
            exclude.push(re);
        }
    }
    let rcvbuf = cfg.f64_opt("rcvbuf", 16.0 * 1024.0 * 1024.0)?;
    let scan = cfg.f64_opt("scan_interval", 0.25)?;
    if !(scan > 0.0 && scan.is_finite()) {
        return Err(cfg.error_here("scan_interval must be a positive number of seconds"));
    }
    let ring = cfg.f64_opt("ring_bytes", f64::from(ebpf::DEFAULT_RING_BYTES))?;
    let argv_bytes = cfg.f64_opt("argv_max_bytes", 8192.0)?;
    let argv_args = cfg.f64_opt("argv_max_args", 256.0)?;
    if !(ring >= 4096.0 && ring <= (1u64 << 30) as f64) {
        return Err(cfg.error_here("ring_bytes must be between 4096 and 1073741824"));
    }
    if !(argv_bytes >= 1.0 && argv_bytes <= f64::from(ebpf::ARGV_CAP)) {
        return Err(cfg.error_here(format!(
            "argv_max_bytes must be between 1 and {}",
            ebpf::ARGV_CAP
        )));
    }
    if !(argv_args >= 1.0 && argv_args.is_finite()) {
        return Err(cfg.error_here("argv_max_args must be a positive number"));
    }
    let exits = match cfg.opt("exits").map(|n| &n.value) {
        None | Some(Yaml::Null) => false,
        Some(Yaml::Bool(b)) => *b,
        Some(_) => return Err(cfg.error_here("exits must be True or False")),
    };
    let cgroupfs = match cfg.opt("cgroupfs") {
        Some(_) => Some(PathBuf::from(cfg.str_opt("cgroupfs", "")?)),
        None => None,
    };
    Ok(Box::new(Sh {
        scope,
        users: str_list(cfg, "users")?.map(|v| v.into_iter().collect()),
        exclude,
        shells_file: PathBuf::from(cfg.str_opt("shells_file", "/etc/shells")?),
        procfs: PathBuf::from(cfg.str_opt("procfs", "/proc")?),
        source,
        rcvbuf: rcvbuf.clamp(65_536.0, 1024.0 * 1024.0 * 1024.0) as usize,
        scan_interval: Duration::from_secs_f64(scan),
        shells: Shells::default(),
        mode: None,
        table: HashMap::new(),
        names: HashMap::new(),
        overruns: 0,
        lost: 0,
        buffered: None,
        ebpf_buffered: None,
        pending: false,
        ebpf: ebpf::Options {
            ring_bytes: ring as u32,
            argv_max_bytes: argv_bytes as u32,
        },
        argv_max_args: argv_args as usize,
        exits,
        cgroupfs,
        btf: PathBuf::from(cfg.str_opt("btf", ebpf::DEFAULT_BTF)?),
        cgroups: HashMap::new(),
        lost_exec: 0,
        lost_exit: 0,
        ebpf_overruns: 0,
    }))
}

/// A process as read from /proc right after its exec.
#[derive(Debug, Default)]
struct Info {
    args: Vec<String>,
    comm: Option<String>,
    exe: Option<String>,
    cwd: Option<String>,
    ppid: Option<i32>,
    uid: Option<u32>,
    euid: Option<u32>,
    tty: Option<String>,
    start: Option<u64>,
    /// Source-specific keys added to the event (eBPF: gid, loginuid, namespaces, ...).
    extra: Data,
}

/// argv from `/proc/<pid>/cmdline`; empty when the process is gone (or a zombie).
fn read_args(dir: &Path) -> Vec<String> {
    let Ok(raw) = std::fs::read(dir.join("cmdline")) else {
        return Vec::new();
    };
    let raw = raw.strip_suffix(&[0]).unwrap_or(&raw);
    if raw.is_empty() {
        return Vec::new();
    }
    raw.split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// `tty_nr` (major/minor as the kernel encodes it) as a name like `pts/3` or `tty1`.
fn tty_name(nr: u64) -> Option<String> {
    if nr == 0 {
        return None;
    }
    let major = (nr >> 8) & 0xfff;
    let minor = (nr & 0xff) | ((nr >> 12) & 0xfff00);
    Some(match major {
        136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
        4 if minor < 64 => format!("tty{minor}"),
        4 => format!("ttyS{}", minor - 64),
        5 if minor == 1 => "console".into(),
        _ => format!("{major}:{minor}"),
    })
}

/// A process as /proc shows it now (argv first: it is what vanishes with the process).
fn read_info(procfs: &Path, pid: i32) -> Info {
    let dir = procfs.join(pid.to_string());
    let mut info = Info {
        args: read_args(&dir),
        ..Info::default()
    };
    if let Ok(stat) = std::fs::read_to_string(dir.join("stat")) {
        if let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) {
            // `get`: a crafted stat (procfs is configurable) may have them the other way round.
            info.comm = stat.get(open + 1..close).map(str::to_owned);
            let f: Vec<&str> = stat
                .get(close + 1..)
                .unwrap_or_default()
                .split_whitespace()
                .collect();
            // After ")": state(0) ppid(1) pgrp(2) session(3) tty_nr(4) ... starttime(19)
            info.ppid = f.get(1).and_then(|s| s.parse().ok());
            info.tty = f.get(4).and_then(|s| s.parse().ok()).and_then(tty_name);
            info.start = f.get(19).and_then(|s| s.parse().ok());
        }
    }
    if let Ok(status) = std::fs::read_to_string(dir.join("status")) {
        if let Some(l) = status.lines().find(|l| l.starts_with("Uid:")) {
            let ids: Vec<u32> = l[4..]
                .split_whitespace()
                .filter_map(|s| s.parse().ok())
                .collect();
            info.uid = ids.first().copied();
            info.euid = ids.get(1).copied();
        }
    }
    let link = |name: &str| {
        std::fs::read_link(dir.join(name))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    };
    info.exe = link("exe").map(|e| e.trim_end_matches(" (deleted)").to_owned());
    info.cwd = link("cwd");
    info
}

impl Sh {
    fn read_info(&self, pid: i32) -> Info {
        read_info(&self.procfs, pid)
    }

    fn user_name(&mut self, uid: u32) -> String {
        self.names
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map_or_else(|| uid.to_string(), |u| u.name)
            })
            .clone()
    }

    /// The nearest shell: the process itself before this exec, else an ancestor.
    fn shell_of(&self, pid: i32, ppid: Option<i32>) -> Option<i32> {
        if self.table.get(&pid).is_some_and(|p| p.shell) {
            return Some(pid);
        }
        let mut cur = ppid?;
        for _ in 0..64 {
            if cur <= 1 {
                return None;
            }
            let (shell, next) = match self.table.get(&cur) {
                Some(p) => (p.shell, p.ppid),
                None => {
                    let i = self.read_info(cur);
                    let argv0 = i.args.first().map(String::as_str);
                    (self.shells.is_shell(i.exe.as_deref(), argv0), i.ppid?)
                }
            };
            if shell {
                return Some(cur);
            }
            cur = next;
        }
        None
    }

    /// Turn one exec into an event (or nothing, when out of scope or filtered).
    fn on_exec(
        &mut self,
        pid: i32,
        source: &str,
        recovered: bool,
        read: Option<Info>,
    ) -> Option<Data> {
        let info = read.unwrap_or_else(|| self.read_info(pid));
        let known = self.table.get(&pid).cloned();
        let ppid = info.ppid.or(known.as_ref().map(|p| p.ppid));
        let shell_pid = self.shell_of(pid, ppid);
        let argv0 = info.args.first().map(String::as_str);
        let is_shell = self.shells.is_shell(info.exe.as_deref(), argv0);
        self.table.insert(
            pid,
            Proc {
                ppid: ppid.unwrap_or(0),
                shell: is_shell,
                reported: false,
                start: info.start.unwrap_or(0),
            },
        );
        if self.scope == Scope::Shells && shell_pid.is_none() {
            return None;
        }
        let user = info.uid.map(|u| self.user_name(u));
        if let Some(users) = &self.users {
            if !user.as_ref().is_some_and(|u| users.contains(u)) {
                return None;
            }
        }
        let cmd = info
            .exe
            .clone()
            .or_else(|| info.args.first().cloned())
            .or_else(|| info.comm.clone())
            .unwrap_or_default();
        let line = info.args.join(" ");
        if self
            .exclude
            .iter()
            .any(|re| re.is_match(&cmd).unwrap_or(false) || re.is_match(&line).unwrap_or(false))
        {
            return None;
        }
        let mut d = Data::new();
        d.insert("tag".into(), json!(shell_pid.unwrap_or(pid).to_string()));
        d.insert("cmd".into(), json!(cmd));
        d.insert("args".into(), json!(info.args));
        d.insert("user".into(), user.map_or(Value::Null, Value::from));
        d.insert("uid".into(), info.uid.map_or(Value::Null, Value::from));
        d.insert("euid".into(), info.euid.map_or(Value::Null, Value::from));
        d.insert("pid".into(), json!(pid));
        d.insert("ppid".into(), ppid.map_or(Value::Null, Value::from));
        d.insert(
            "shell_pid".into(),
            shell_pid.map_or(Value::Null, Value::from),
        );
        d.insert("cwd".into(), info.cwd.map_or(Value::Null, Value::from));
        d.insert("tty".into(), info.tty.map_or(Value::Null, Value::from));
        d.insert("comm".into(), info.comm.map_or(Value::Null, Value::from));
        d.insert("exe".into(), info.exe.map_or(Value::Null, Value::from));
        d.insert("argv_missing".into(), json!(info.args.is_empty()));
        d.insert("source".into(), json!(source));
        if recovered {
            d.insert("recovered".into(), json!(true));
        }
        d.extend(info.extra);
        if let Some(p) = self.table.get_mut(&pid) {
            p.reported = true;
        }
        Some(d)
    }

    /// The pids in /proc with their start time.
    fn list_pids(&self) -> Result<Vec<(i32, u64)>, BeaconError> {
        let dir = std::fs::read_dir(&self.procfs).map_err(|e| BeaconError::io(&self.procfs, e))?;
        let mut out = Vec::new();
        for entry in dir.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            let start = std::fs::read_to_string(entry.path().join("stat"))
                .ok()
                .and_then(|s| {
                    let close = s.rfind(')')?;
                    s[close + 1..].split_whitespace().nth(19)?.parse().ok()
                })
                .unwrap_or(0);
            out.push((pid, start));
        }
        Ok(out)
    }

    /// Learn every live process (parents and shells) without reporting it.
    fn baseline(&mut self) -> Result<(), BeaconError> {
        self.table.clear();
        for (pid, _) in self.list_pids()? {
            let i = self.read_info(pid);
            let argv0 = i.args.first().map(String::as_str);
            let shell = self.shells.is_shell(i.exe.as_deref(), argv0);
            self.table.insert(
                pid,
                Proc {
                    ppid: i.ppid.unwrap_or(0),
                    shell,
                    reported: false,
                    start: i.start.unwrap_or(0),
                },
            );
        }
        Ok(())
    }

    /// Report the processes in /proc that are new since the last scan.
    fn scan(&mut self, source: &str, recovered: bool) -> Result<Vec<Data>, BeaconError> {
        let pids = self.list_pids()?;
        let live: HashSet<i32> = pids.iter().map(|(p, _)| *p).collect();
        let mut out = Vec::new();
        // Parents first: a lower pid usually is the older process.
        let mut new: Vec<(i32, u64)> = pids
            .into_iter()
            .filter(|(pid, start)| {
                // A start time of 0 is a process we know from a fork event: not new.
                self.table
                    .get(pid)
                    .is_none_or(|p| p.start != 0 && p.start != *start)
            })
            .collect();
        new.sort();
        for (pid, _) in new {
            if let Some(d) = self.on_exec(pid, source, recovered, None) {
                out.push(d);
            }
        }
        self.table.retain(|pid, _| live.contains(pid));
        Ok(out)
    }

    fn drain_connector(&mut self) -> Result<Vec<Data>, BeaconError> {
        let mut out = Vec::new();
        let mut overrun = false;
        let reader = match &mut self.mode {
            Some(Mode::Connector(reader)) => Some(reader),
            _ => None,
        };
        for msg in next_batch(&mut self.buffered, reader, &mut self.pending) {
            match msg {
                Msg::Fork { parent, child } => {
                    // A forked copy is where the shell runs a command: its nearest shell is the
                    // parent, so the copy itself does not count as one.
                    self.table.insert(
                        child,
                        Proc {
                            ppid: parent,
                            shell: false,
                            reported: false,
                            start: 0,
                        },
                    );
                }
                Msg::Exec { pid, info } => {
                    out.extend(self.on_exec(pid, "proc_connector", false, Some(info)));
                }
                Msg::Exit { pid } => {
                    self.table.remove(&pid);
                }
                Msg::Overrun => {
                    overrun = true;
                    self.overruns += 1;
                }
                Msg::Lost { count } => {
                    overrun = true;
                    self.lost += count;
                }
            }
        }
        if overrun {
            tracing::warn!(
                overruns = self.overruns,
                lost = self.lost,
                "proc connector events were lost; rescanning /proc"
            );
            let counts = [("overruns", self.overruns), ("lost", self.lost)];
            out.extend(self.overrun("proc_connector", &counts, "the kernel dropped proc connector messages (overruns: receive buffer full; lost: gaps in the kernel's per-CPU sequence numbers); processes still alive were rescanned from /proc")?);
        }
        Ok(out)
    }
}

/// Queued reader messages handled per evaluation, so one burst cannot starve the other
/// beacons' output.
const MAX_PER_EVALUATION: usize = 4096;

/// The next batch from a reader thread: the message held back last time first, then what is
/// queued, up to `MAX_PER_EVALUATION`; `pending` says more may be queued.
fn next_batch<M>(
    held: &mut Option<M>,
    reader: Option<&mut ReaderThread<M>>,
    pending: &mut bool,
) -> Vec<M> {
    let mut batch: Vec<M> = held.take().into_iter().collect();
    if let Some(reader) = reader {
        while batch.len() < MAX_PER_EVALUATION {
            match reader.try_recv() {
                Some(m) => batch.push(m),
                None => break,
            }
        }
    }
    *pending = batch.len() == MAX_PER_EVALUATION;
    batch
}

/// Wait for the reader's next message and hold it for `evaluate` (at once when one is held);
/// a reader whose thread ended is an error.
async fn hold_next<M>(
    reader: &mut ReaderThread<M>,
    held: &mut Option<M>,
    what: &str,
) -> Result<(), BeaconError> {
    if held.is_none() {
        let m = reader
            .recv()
            .await
            .ok_or_else(|| BeaconError::Message(format!("{what} reader stopped; see the log")))?;
        *held = Some(m);
    }
    Ok(())
}

/// The cgroup2 mount: `cgroupfs` when configured, else from /proc/self/mountinfo.
fn cgroup2_root(procfs: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(procfs.join("self/mountinfo")).ok()?;
    text.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        (post.split_whitespace().next() == Some("cgroup2"))
            .then(|| pre.split_whitespace().nth(4).map(PathBuf::from))
            .flatten()
    })
}

/// Every cgroup directory under `root` by id (a cgroup2 directory's inode number is its id).
fn cgroup_ids(root: &Path, out: &mut HashMap<u64, String>) {
    use std::os::unix::fs::MetadataExt;
    let mut stack = vec![(root.to_path_buf(), String::from("/"))];
    // Bounded: a host with a huge cgroup tree costs one walk per unknown id, never unbounded.
    while let Some((dir, rel)) = stack.pop() {
        if out.len() > 100_000 {
            return;
        }
        if let Ok(m) = std::fs::symlink_metadata(&dir) {
            out.insert(m.ino(), rel.clone());
        }
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let name = e.file_name().to_string_lossy().into_owned();
                let child = if rel == "/" {
                    format!("/{name}")
                } else {
                    format!("{rel}/{name}")
                };
                stack.push((e.path(), child));
            }
        }
    }
}

impl Sh {
    fn cgroup_path(&mut self, id: u64) -> Option<String> {
        if let Some(p) = self.cgroups.get(&id) {
            return Some(p.clone());
        }
        let root = self
            .cgroupfs
            .clone()
            .or_else(|| cgroup2_root(&self.procfs))?;
        self.cgroups.clear();
        cgroup_ids(&root, &mut self.cgroups);
        // Remember misses too, so an unknown id does not rescan the tree on every exec.
        Some(self.cgroups.entry(id).or_default().clone()).filter(|p| !p.is_empty())
    }

    /// An eBPF exec record as the beacon's process info.
    fn ebpf_info(&mut self, r: ebpf::Record, seen: Seen) -> Info {
        let mut extra = Data::new();
        let mut args = r.args;
        let mut truncated = r.truncated;
        if args.len() > self.argv_max_args {
            args.truncate(self.argv_max_args);
            truncated = true;
        }
        let exe = if r.filename.starts_with('/') || r.filename.is_empty() {
            r.filename
        } else {
            match &seen.cwd {
                Some(cwd) => format!("{}/{}", cwd.trim_end_matches('/'), r.filename),
                None => r.filename,
            }
        };
        let set = |v: u32| (v != u32::MAX).then_some(v);
        extra.insert("tid".into(), json!(r.tid));
        extra.insert("gid".into(), json!(r.gid));
        let login = set(r.loginuid);
        extra.insert("loginuid".into(), login.map_or(Value::Null, Value::from));
        let login_user = login.map(|u| self.user_name(u));
        extra.insert(
            "login_user".into(),
            login_user.map_or(Value::Null, Value::from),
        );
        extra.insert(
            "sessionid".into(),
            set(r.sessionid).map_or(Value::Null, Value::from),
        );
        extra.insert("ns_pid".into(), json!(r.ns_pid));
        extra.insert("pidns_level".into(), json!(r.ns_level));
        extra.insert("cgroup_id".into(), json!(r.cgroup_id));
        let cg = self.cgroup_path(r.cgroup_id);
        extra.insert("cgroup".into(), cg.map_or(Value::Null, Value::from));
        extra.insert("argv_truncated".into(), json!(truncated));
        Info {
            args,
            comm: Some(r.comm),
            exe: (!exe.is_empty()).then_some(exe),
            cwd: seen.cwd,
            ppid: Some(r.ppid as i32),
            uid: Some(r.uid),
            euid: Some(r.euid),
            tty: r.tty,
            start: None,
            extra,
        }
    }

    fn on_ebpf_exit(&mut self, r: ebpf::Record) -> Option<Data> {
        let known = self.table.remove(&(r.pid as i32));
        if !self.exits || !known.is_some_and(|p| p.reported) {
            return None;
        }
        let mut d = Data::new();
        d.insert("tag".into(), json!("exit"));
        d.insert("pid".into(), json!(r.pid));
        d.insert("ppid".into(), json!(r.ppid));
        d.insert("comm".into(), json!(r.comm));
        d.insert("exit_code".into(), json!((r.exit_code >> 8) & 0xff));
        d.insert("signal".into(), json!(r.exit_code & 0x7f));
        let life = r.time_ns.saturating_sub(r.start_ns) as f64 / 1e9;
        d.insert("lifetime".into(), json!(life));
        d.insert("uid".into(), json!(r.uid));
        d.insert("source".into(), json!("ebpf"));
        Some(d)
    }

    fn drain_ebpf(&mut self) -> Result<Vec<Data>, BeaconError> {
        let mut out = Vec::new();
        let mut lost = None;
        let reader = match &mut self.mode {
            Some(Mode::Ebpf(reader)) => Some(reader),
            _ => None,
        };
        for msg in next_batch(&mut self.ebpf_buffered, reader, &mut self.pending) {
            match msg {
                ebpf::Msg::Record(r, _) if r.exit => out.extend(self.on_ebpf_exit(r)),
                ebpf::Msg::Record(r, seen) => {
                    let pid = r.pid as i32;
                    let info = self.ebpf_info(r, seen);
                    out.extend(self.on_exec(pid, "ebpf", false, Some(info)));
                }
                ebpf::Msg::Lost { exec, exit } => lost = Some((exec, exit)),
            }
        }
        if let Some((exec, exit)) = lost {
            self.ebpf_overruns += 1;
            let (new_exec, new_exit) = (
                exec.saturating_sub(self.lost_exec),
                exit.saturating_sub(self.lost_exit),
            );
            self.lost_exec = exec;
            self.lost_exit = exit;
            tracing::warn!(
                lost_exec = exec,
                lost_exit = exit,
                "eBPF ring buffer full: records lost; rescanning /proc"
            );
            let counts = [
                ("overruns", self.ebpf_overruns),
                ("lost", exec + exit),
                ("lost_exec", exec),
                ("lost_exit", exit),
                ("new_lost_exec", new_exec),
                ("new_lost_exit", new_exit),
            ];
            out.extend(self.overrun("ebpf", &counts, "the eBPF ring buffer was full: the kernel counted every exec/exit record it could not reserve (running totals); processes still alive were rescanned from /proc")?);
        }
        Ok(out)
    }

    /// The `overrun` event after the kernel lost messages of `source`, then a /proc rescan
    /// (what is still alive is reported).
    fn overrun(
        &mut self,
        source: &'static str,
        counts: &[(&str, u64)],
        message: &str,
    ) -> Result<Vec<Data>, BeaconError> {
        let mut d = Data::new();
        d.insert("tag".into(), json!("overrun"));
        for (key, n) in counts {
            d.insert((*key).into(), json!(n));
        }
        d.insert("source".into(), json!(source));
        d.insert("message".into(), json!(message));
        let mut out = vec![d];
        out.extend(self.scan(source, true)?);
        Ok(out)
    }

    fn open_ebpf(&self) -> Result<ebpf::Reader<Seen>, ebpf::EbpfError> {
        let procfs = self.procfs.clone();
        ebpf::spawn_reader(self.ebpf, &self.btf, 16_384, move |r: &ebpf::Record| {
            if r.exit {
                return Seen::default();
            }
            let cwd = std::fs::read_link(procfs.join(r.pid.to_string()).join("cwd"))
                .ok()
                .map(|p| p.to_string_lossy().into_owned());
            Seen { cwd }
        })
    }

    /// The reader thread: reads each exec's /proc entry as soon as the kernel reports it.
    fn reader(&self, pc: ProcConnector) -> std::io::Result<Reader<Info>> {
        let procfs = self.procfs.clone();
        proc_connector::spawn_reader(pc, 16_384, move |pid| read_info(&procfs, pid))
    }
}

impl Beacon for Sh {
    fn start(&mut self) -> Result<(), BeaconError> {
        self.mode = None;
        self.buffered = None;
        self.ebpf_buffered = None;
        self.shells.checked = None;
        self.shells.refresh(&self.shells_file);
        let connector = |me: &Self| {
            ProcConnector::open(me.rcvbuf)
                .and_then(|pc| me.reader(pc))
                .map(Mode::Connector)
        };
        let mode = match self.source {
            Source::Scan => Mode::Scan,
            Source::Ebpf => Mode::Ebpf(
                self.open_ebpf()
                    .map_err(|e| BeaconError::Message(format!("eBPF source: {e}")))?,
            ),
            Source::Connector => {
                connector(self).map_err(|e| BeaconError::Message(format!("proc connector: {e}")))?
            }
            Source::Auto => match self.open_ebpf() {
                Ok(r) => Mode::Ebpf(r),
                Err(ebpf_err) => match connector(self) {
                    Ok(m) => {
                        tracing::warn!(error = %ebpf_err, "sh: eBPF exec source unavailable: falling back to the proc connector; argv is read from /proc after the exec and can be missing for short-lived processes");
                        m
                    }
                    Err(e) => {
                        tracing::warn!(ebpf_error = %ebpf_err, error = %e, "sh: eBPF exec source and proc connector unavailable (need CAP_BPF+CAP_PERFMON, resp. CAP_NET_ADMIN in the initial network namespace): falling back to scanning /proc; processes shorter-lived than scan_interval will be missed");
                        Mode::Scan
                    }
                },
            },
        };
        match &mode {
            Mode::Ebpf(_) => tracing::info!(
                ring_bytes = self.ebpf.ring_bytes,
                argv_max_bytes = self.ebpf.argv_max_bytes,
                "sh: following execs from the eBPF exec source"
            ),
            Mode::Connector(_) => tracing::info!(
                rcvbuf = self.rcvbuf,
                "sh: following execs from the kernel proc connector"
            ),
            Mode::Scan => tracing::info!(
                interval = ?self.scan_interval,
                "sh: scanning /proc for new processes (proc_scan mode)"
            ),
        }
        // Subscribe before the baseline so nothing falls between the two.
        self.mode = Some(mode);
        self.baseline()?;
        self.pending = true;
        Ok(())
    }

    fn drive(&mut self) -> Drive<'_> {
        Drive::Source(Box::pin(async move {
            if self.pending {
                return Ok(());
            }
            match self.mode.as_mut() {
                Some(Mode::Ebpf(reader)) => {
                    let r = hold_next(reader, &mut self.ebpf_buffered, "eBPF").await;
                    if r.is_err() {
                        self.mode = None;
                    }
                    r
                }
                Some(Mode::Connector(reader)) => {
                    let r = hold_next(reader, &mut self.buffered, "proc connector").await;
                    if r.is_err() {
                        self.mode = None;
                    }
                    r
                }
                Some(Mode::Scan) => {
                    tokio::time::sleep(self.scan_interval).await;
                    Ok(())
                }
                // The reader stopped (an error was reported): subscribe again.
                None => self.start(),
            }
        }))
    }

    fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
        self.shells.refresh(&self.shells_file);
        match self.mode {
            Some(Mode::Ebpf(_)) => self.drain_ebpf(),
            Some(Mode::Connector(_)) => self.drain_connector(),
            Some(Mode::Scan) => {
                self.pending = false;
                self.scan("proc_scan", false)
            }
            None => Err(BeaconError::Message("not started".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crafted_stat_is_no_panic() {
        let dir = std::env::temp_dir().join(format!("bd-sh-stat-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("7")).expect("dir");
        for stat in ["7 )(", "7 ) x (", "7 (", "7 (é) S 1"] {
            std::fs::write(dir.join("7/stat"), stat).expect("stat");
            let _ = read_info(&dir, 7);
        }
        std::fs::write(dir.join("7/stat"), "7 (a)b) S 1").expect("stat");
        assert_eq!(read_info(&dir, 7).comm.as_deref(), Some("a)b"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn tty_names() {
        assert_eq!(tty_name(0), None);
        assert_eq!(tty_name(136 << 8 | 3), Some("pts/3".into()));
        assert_eq!(tty_name(4 << 8 | 1), Some("tty1".into()));
    }
}
