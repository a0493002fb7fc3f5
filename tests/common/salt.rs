//! Real salt-masters and Salt's own Python beacons for beacond's integration tests.
//!
//! Everything here drives the scripts in `tests/salt/` with the Python of a venv
//! made by `tests/salt/setup.sh` (one venv per Salt series: 3006, 3007, 3008).
//! Use it from a file in `tests/`:
//!
//! ```ignore
//! mod common;
//! use common::salt::{require_salt, Master, MasterOptions};
//! use std::time::Duration;
//!
//! #[test]
//! fn beacon_reaches_master() {
//!     let Some(_venv) = require_salt("3007") else { return };
//!     let master = Master::start("3007", MasterOptions::default());
//!     let events = master.events("salt/beacon/");
//!     // ... run beacond against 127.0.0.1:master.ret_port() ...
//!     let ev = events.expect_tag("salt/beacon/", Duration::from_secs(30));
//! }
//! ```
//!
//! Masters bind 127.0.0.1 only and live in a fresh temp dir. They are stopped
//! when the [`Master`] is dropped (also while a test panics), and a detached
//! watchdog stops them if the test process dies without unwinding. Temp dirs
//! are removed on drop unless the thread is panicking or `BEACOND_KEEP_TEST_DIRS=1`
//! (then their paths are printed, with the master log tail).
//!
//! Environment: `BEACOND_SALT_CACHE` (venv location, as for setup.sh),
//! `BEACOND_SKIP_SALT=1` (see [`require_salt`]), `BEACOND_KEEP_TEST_DIRS=1`.
#![allow(dead_code)]

use std::collections::HashSet;
use std::env;
use std::ffi::OsStr;
use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// The Salt series `tests/salt/setup.sh` installs.
pub const SERIES: [&str; 3] = ["3006", "3007", "3008"];

/// Upper bound for `master.py start` (which itself gives up after 60 s).
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// Upper bound for the other helper commands (salt-key, python_beacon.py, ...).
const CMD_TIMEOUT: Duration = Duration::from_secs(120);
/// How long an [`EventStream`] may take to subscribe.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(60);
/// Lifetime bound of an `events` listener process (it also exits with us).
const LISTENER_LIFETIME_SECS: u32 = 3600;

// ---------------------------------------------------------------------------
// venvs

/// Where setup.sh puts the venvs: `$BEACOND_SALT_CACHE`, else `$HOME/.cache/beacond/salt`.
pub fn salt_cache_dir() -> Option<PathBuf> {
    if let Some(dir) = env::var_os("BEACOND_SALT_CACHE").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".cache/beacond/salt"))
}

/// The venv of a Salt series ("3006", "3007", "3008") if setup.sh completed it.
pub fn salt_venv(series: &str) -> Option<PathBuf> {
    let venv = salt_cache_dir()?.join(series);
    let ready = venv.join(".beacond-ready").is_file() && venv.join("bin/python").exists();
    ready.then_some(venv)
}

/// The venv of `series`, or: with `BEACOND_SKIP_SALT=1`, prints a skip line and
/// returns `None` (the test should return early); otherwise panics telling to
/// run `tests/salt/setup.sh`.
///
/// ```ignore
/// let Some(_venv) = require_salt("3007") else { return };
/// ```
pub fn require_salt(series: &str) -> Option<PathBuf> {
    if let Some(venv) = salt_venv(series) {
        return Some(venv);
    }
    if env::var("BEACOND_SKIP_SALT").as_deref() == Ok("1") {
        eprintln!(
            "skipped: Salt {series} is not installed and BEACOND_SKIP_SALT=1 \
             (install it with tests/salt/setup.sh {series})"
        );
        return None;
    }
    panic!("{}", missing_venv_message(series));
}

/// The python of `series`' venv, under `require_salt`'s rule.
pub fn require_salt_python(series: &str) -> Option<PathBuf> {
    require_salt(series).map(|venv| venv.join("bin/python"))
}

fn missing_venv_message(series: &str) -> String {
    let where_ = salt_cache_dir()
        .map(|d| d.join(series).display().to_string())
        .unwrap_or_else(|| "$BEACOND_SALT_CACHE/<series> (HOME is not set)".to_string());
    format!(
        "Salt {series} venv not found at {where_}: run `tests/salt/setup.sh {series}` \
         (installs Salt 3006/3007/3008 into venvs, ~1.5 min once), \
         or set BEACOND_SKIP_SALT=1 to skip tests that need Salt"
    )
}

fn venv_for(series: &str) -> PathBuf {
    salt_venv(series).unwrap_or_else(|| panic!("{}", missing_venv_message(series)))
}

fn venv_python(venv: &Path) -> PathBuf {
    venv.join("bin/python")
}

/// `tests/salt/` of this crate.
pub fn harness_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/salt")
}

fn master_py() -> PathBuf {
    harness_dir().join("master.py")
}

// ---------------------------------------------------------------------------
// temp dirs, ports, commands

/// A fresh, uniquely named directory under the system temp dir (kept short:
/// Salt puts unix sockets in it, and their paths are limited to 107 bytes).
pub fn unique_temp_dir(label: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut base = env::temp_dir();
    if base.as_os_str().len() > 40 {
        base = PathBuf::from("/tmp");
    }
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!(
            "beacond-{label}-{}-{n}-{:x}",
            std::process::id(),
            nanos & 0xffff
        ));
        match fs::create_dir(&dir) {
            Ok(()) => return dir,
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("cannot create temp dir {}: {e}", dir.display()),
        }
    }
}

fn keep_test_dirs() -> bool {
    env::var("BEACOND_KEEP_TEST_DIRS").as_deref() == Ok("1")
}

/// A temp dir removed on drop (kept, and its path printed, while panicking or
/// with `BEACOND_KEEP_TEST_DIRS=1`). No `tempfile` crate needed.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/beacond-<label>-<pid>-<n>-<x>`.
    pub fn new(label: &str) -> TempDir {
        TempDir {
            path: unique_temp_dir(label),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if thread::panicking() || keep_test_dirs() {
            eprintln!("kept test dir {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A loopback TCP port that was free a moment ago and has not been handed out
/// before by this process.
pub fn free_port() -> u16 {
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let handed = HANDED_OUT.get_or_init(|| Mutex::new(HashSet::new()));
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap_or_else(|e| panic!("cannot bind 127.0.0.1:0: {e}"));
        let port = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr of a bound listener: {e}"))
            .port();
        let mut set = handed.lock().unwrap_or_else(|p| p.into_inner());
        if set.insert(port) {
            return port;
        }
    }
}

/// True if 127.0.0.1:`port` accepts a TCP connection.
pub fn port_open(port: u16) -> bool {
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    TcpStream::connect_timeout(&addr.into(), Duration::from_millis(500)).is_ok()
}

/// Runs `cmd` to completion with stdin closed, capturing stdout/stderr; kills it
/// after `timeout`. Err carries a description with whatever it printed.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    let stdout = child.stdout.take().map(read_all_in_thread);
    let stderr = child.stderr.take().map(read_all_in_thread);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting for {what}: {e}")),
        }
    };
    let stdout = stdout.map(join_bytes).unwrap_or_default();
    let stderr = stderr.map(join_bytes).unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => Err(format!(
            "{what} did not finish within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        )),
    }
}

fn read_all_in_thread<R: Read + Send + 'static>(mut r: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

fn join_bytes(h: thread::JoinHandle<Vec<u8>>) -> Vec<u8> {
    h.join().unwrap_or_default()
}

/// Runs a command that must succeed; Err describes the failure with its output.
fn run_ok(cmd: &mut Command, timeout: Duration) -> Result<String, String> {
    let what = format!("{cmd:?}");
    let out = run_with_timeout(cmd, timeout)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{what} failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn tail(path: &Path, lines: usize) -> String {
    tail_filtered(path, lines, false)
}

/// The last `lines` lines of a Salt log, without DEBUG/TRACE/PROFILE records
/// when `important_only` (the master logs at debug level).
fn tail_filtered(path: &Path, lines: usize, important_only: bool) -> String {
    const NOISE: [&str; 4] = ["[DEBUG", "[TRACE", "[PROFILE", "[GARBAGE"];
    match fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text
                .lines()
                .filter(|l| !important_only || !NOISE.iter().any(|n| l.contains(n)))
                .collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

// ---------------------------------------------------------------------------
// master

/// How to configure a [`Master`].
#[derive(Clone, Debug)]
pub struct MasterOptions {
    /// `auto_accept` in the master config (default true). With false, minion keys
    /// wait in `minions_pre` until [`Master::accept_key`].
    pub auto_accept: bool,
    /// `reactor:` entries as (tag glob, SLS path), e.g. from [`marker_reactor`].
    /// With reactors, start also waits until the reactor reacts to a probe.
    pub reactors: Vec<(String, PathBuf)>,
    /// Directory with `master.pem`/`master.pub` to use as the master key pair
    /// (see [`generate_master_key`]); default: Salt generates a fresh one.
    pub master_key_from: Option<PathBuf>,
    /// `worker_threads` (MWorkers); default 2.
    pub worker_threads: Option<u32>,
}

impl Default for MasterOptions {
    fn default() -> Self {
        MasterOptions {
            auto_accept: true,
            reactors: Vec::new(),
            master_key_from: None,
            worker_threads: None,
        }
    }
}

type SharedChild = Arc<Mutex<Option<Child>>>;

/// A running salt-master of one series under its own temp root, bound to
/// 127.0.0.1:`ret_port` (request server) and `publish_port`.
pub struct Master {
    series: String,
    venv: PathBuf,
    root: PathBuf,
    ret_port: u16,
    publish_port: u16,
    options: MasterOptions,
    pid: Option<u32>,
    listeners: Mutex<Vec<SharedChild>>,
}

impl Master {
    /// Starts a master (panics with the master log tail if it does not come up).
    /// The venv must exist: call [`require_salt`] first.
    pub fn start(series: &str, options: MasterOptions) -> Master {
        Master::try_start(series, options).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Master::start`], returning the failure instead of panicking.
    pub fn try_start(series: &str, options: MasterOptions) -> Result<Master, String> {
        let venv = salt_venv(series).ok_or_else(|| missing_venv_message(series))?;
        let root = unique_temp_dir(&format!("salt{series}"));
        let mut master = Master {
            series: series.to_string(),
            venv,
            root,
            ret_port: 0,
            publish_port: 0,
            options,
            pid: None,
            listeners: Mutex::new(Vec::new()),
        };
        // Ports are only reserved by this process: another may grab one between
        // allocation and bind, so retry with fresh ports on a clash.
        let mut last_err = String::new();
        for _ in 0..3 {
            master.ret_port = free_port();
            master.publish_port = free_port();
            match master.launch() {
                Ok(()) => return Ok(master),
                Err(e) if e.contains("already in use") => last_err = e,
                Err(e) => return Err(e),
            }
        }
        Err(last_err)
    }

    fn launch(&mut self) -> Result<(), String> {
        let mut cmd = Command::new(venv_python(&self.venv));
        cmd.arg(master_py())
            .arg("start")
            .arg("--root")
            .arg(&self.root)
            .arg("--ret-port")
            .arg(self.ret_port.to_string())
            .arg("--publish-port")
            .arg(self.publish_port.to_string())
            .arg("--owner-pid")
            .arg(std::process::id().to_string());
        if !self.options.auto_accept {
            cmd.arg("--no-auto-accept");
        }
        for (glob, sls) in &self.options.reactors {
            cmd.arg("--reactor")
                .arg(format!("{glob}={}", sls.display()));
        }
        if let Some(dir) = &self.options.master_key_from {
            cmd.arg("--master-key-from").arg(dir);
        }
        if let Some(n) = self.options.worker_threads {
            cmd.arg("--worker-threads").arg(n.to_string());
        }
        let out = run_ok(&mut cmd, START_TIMEOUT)
            .map_err(|e| format!("salt-master {} did not start:\n{e}", self.series))?;
        let pid = out
            .lines()
            .find_map(|l| l.strip_prefix("ready pid="))
            .and_then(|p| p.trim().parse::<u32>().ok())
            .ok_or_else(|| format!("master.py start printed no `ready pid=`: {out:?}"))?;
        self.pid = Some(pid);
        Ok(())
    }

    /// Series ("3006", ...) of this master.
    pub fn series(&self) -> &str {
        &self.series
    }

    /// The Salt venv this master runs from.
    pub fn venv(&self) -> &Path {
        &self.venv
    }

    /// Request server port (minions' `master_port`), on 127.0.0.1.
    pub fn ret_port(&self) -> u16 {
        self.ret_port
    }

    /// Publish port (minions' `publish_port`), on 127.0.0.1.
    pub fn publish_port(&self) -> u16 {
        self.publish_port
    }

    /// Root dir holding the master's config, keys, caches, sockets and logs.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/etc/salt` (pass as `-c` to salt tools).
    pub fn conf_dir(&self) -> PathBuf {
        self.root.join("etc/salt")
    }

    /// `<root>/etc/salt/pki/master`: master.pem, master.pub, minions*/.
    pub fn pki_dir(&self) -> PathBuf {
        self.conf_dir().join("pki/master")
    }

    /// The master's public key (PEM), e.g. to pin it on the minion side.
    pub fn master_pub_key(&self) -> String {
        let path = self.pki_dir().join("master.pub");
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
    }

    /// The master's log file (log_level_logfile: debug).
    pub fn log_file(&self) -> PathBuf {
        self.root.join("log/master")
    }

    /// The last `lines` lines of the master log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_file(), lines)
    }

    /// The last `lines` records of the master log at INFO level or above.
    pub fn log_tail_important(&self, lines: usize) -> String {
        tail_filtered(&self.log_file(), lines, true)
    }

    /// Pid of the running salt-master main process (its process group id too).
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// True while started and not stopped.
    pub fn is_running(&self) -> bool {
        self.pid.is_some()
    }

    /// Stops the master (SIGTERM, SIGKILL after 3 s) and waits until its
    /// processes are gone and the request port is closed. Panics on failure.
    pub fn stop(&mut self) {
        if let Err(e) = self.try_stop() {
            panic!("{e}");
        }
    }

    /// Like [`Master::stop`], returning the failure.
    pub fn try_stop(&mut self) -> Result<(), String> {
        self.stop_with_grace(None)
    }

    /// Kills the master's processes with SIGKILL at once (a crash, as far as
    /// minions can tell); [`Master::start_again`] works afterwards.
    pub fn kill(&mut self) {
        if let Err(e) = self.stop_with_grace(Some(0)) {
            panic!("{e}");
        }
    }

    fn stop_with_grace(&mut self, grace_secs: Option<u32>) -> Result<(), String> {
        if self.pid.is_none() {
            return Ok(());
        }
        let mut cmd = Command::new(venv_python(&self.venv));
        cmd.arg(master_py())
            .arg("stop")
            .arg("--root")
            .arg(&self.root);
        if let Some(secs) = grace_secs {
            cmd.arg("--timeout").arg(secs.to_string());
        }
        run_ok(&mut cmd, CMD_TIMEOUT)
            .map_err(|e| format!("stopping salt-master {}: {e}", self.series))?;
        self.pid = None;
        Ok(())
    }

    /// Starts the master again after [`Master::stop`]: same root, keys
    /// (accepted minions included), options and ports. Panics on failure.
    pub fn start_again(&mut self) {
        assert!(
            self.pid.is_none(),
            "start_again: the master is still running; stop() it first"
        );
        if let Err(e) = self.launch() {
            panic!("{e}");
        }
    }

    /// Subscribes to the master's event bus (events whose tag starts with
    /// `tag_prefix`; "" for all). Returns once the subscription is live, so
    /// every event fired afterwards is received. A stream reconnects by itself
    /// after [`Master::start_again`], but events fired before it has done so
    /// are missed: subscribe again after a restart when that matters.
    pub fn events(&self, tag_prefix: &str) -> EventStream {
        let stream = EventStream::spawn(self, tag_prefix);
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::clone(&stream.child));
        stream
    }

    /// Fires an event on the master's event bus (as the master itself would).
    pub fn fire_event(&self, tag: &str, data: &Value) {
        let mut cmd = self.master_py_cmd("fire");
        cmd.arg("--tag")
            .arg(tag)
            .arg("--data")
            .arg(data.to_string());
        if let Err(e) = run_ok(&mut cmd, CMD_TIMEOUT) {
            panic!("firing {tag} on salt-master {}: {e}", self.series);
        }
    }

    /// Runs `salt-run -c <conf_dir> ARGS...` against this master (e.g.
    /// `["event.send", "my/tag", "{\"a\": 1}"]`); returns its output.
    pub fn salt_run<S: AsRef<OsStr>>(&self, args: &[S]) -> Output {
        let mut cmd = Command::new(self.venv.join("bin/salt-run"));
        cmd.arg("-c").arg(self.conf_dir()).args(args);
        run_with_timeout(&mut cmd, CMD_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `salt-key -a ID -y`: accepts a pending minion key.
    pub fn accept_key(&self, id: &str) {
        self.key_change("key-accept", id);
    }

    /// `salt-key -r ID -y`: rejects a pending minion key.
    pub fn reject_key(&self, id: &str) {
        self.key_change("key-reject", id);
    }

    /// `salt-key -d ID -y`: deletes a minion key.
    pub fn delete_key(&self, id: &str) {
        self.key_change("key-delete", id);
    }

    fn key_change(&self, sub: &str, id: &str) {
        let mut cmd = self.master_py_cmd(sub);
        cmd.arg("--id").arg(id);
        if let Err(e) = run_ok(&mut cmd, CMD_TIMEOUT) {
            panic!("{sub} {id} on salt-master {}: {e}", self.series);
        }
    }

    /// `salt-key -L` as JSON: {"minions": [..], "minions_pre": [..],
    /// "minions_rejected": [..], "minions_denied": [..]}.
    pub fn key_list(&self) -> Value {
        let mut cmd = self.master_py_cmd("key-list");
        let out = run_ok(&mut cmd, CMD_TIMEOUT)
            .unwrap_or_else(|e| panic!("key-list on salt-master {}: {e}", self.series));
        serde_json::from_str(out.trim())
            .unwrap_or_else(|e| panic!("key-list printed invalid JSON ({e}): {out:?}"))
    }

    /// Minion ids in one key state ("minions", "minions_pre", ...).
    pub fn keys_in(&self, state: &str) -> Vec<String> {
        self.key_list()[state]
            .as_array()
            .map(|ids| {
                ids.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn master_py_cmd(&self, sub: &str) -> Command {
        let mut cmd = Command::new(venv_python(&self.venv));
        cmd.arg(master_py()).arg(sub).arg("--root").arg(&self.root);
        cmd
    }

    fn kill_listeners(&self) {
        let listeners =
            std::mem::take(&mut *self.listeners.lock().unwrap_or_else(|p| p.into_inner()));
        for child in listeners {
            kill_shared(&child);
        }
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        self.kill_listeners();
        let panicking = thread::panicking();
        if panicking && self.pid.is_some() {
            eprintln!(
                "salt-master {} log tail, INFO and above ({}):\n{}",
                self.series,
                self.log_file().display(),
                self.log_tail_important(40)
            );
        }
        if let Err(e) = self.try_stop() {
            eprintln!("{e}");
        }
        if panicking || keep_test_dirs() {
            eprintln!("kept salt-master root {}", self.root.display());
        } else {
            let _ = fs::remove_dir_all(&self.root);
        }
    }
}

fn kill_shared(child: &SharedChild) {
    if let Some(mut c) = child.lock().unwrap_or_else(|p| p.into_inner()).take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

// ---------------------------------------------------------------------------
// events

/// Events of a master's bus as `{"tag": ..., "data": {...}}` values, from a
/// `master.py events` process (killed on drop or when the master is dropped).
pub struct EventStream {
    child: SharedChild,
    rx: Receiver<Value>,
    stderr: Arc<Mutex<String>>,
    log_file: PathBuf,
}

enum ListenerLine {
    Listening,
    Eof,
}

impl EventStream {
    fn spawn(master: &Master, tag_prefix: &str) -> EventStream {
        let mut cmd = master.master_py_cmd("events");
        cmd.arg("--tag-prefix")
            .arg(tag_prefix)
            .arg("--timeout")
            .arg(LISTENER_LIFETIME_SECS.to_string())
            .arg("--owner-pid")
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
        let stdout = child.stdout.take();
        let stderr_pipe = child.stderr.take();
        let child: SharedChild = Arc::new(Mutex::new(Some(child)));

        let stderr = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        if let Some(pipe) = stderr_pipe {
            let buf = Arc::clone(&stderr);
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    if line.trim() == "listening" {
                        let _ = ready_tx.send(ListenerLine::Listening);
                    }
                    let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
                    b.push_str(&line);
                    b.push('\n');
                }
                let _ = ready_tx.send(ListenerLine::Eof);
            });
        }
        let (tx, rx) = mpsc::channel();
        if let Some(pipe) = stdout {
            let buf = Arc::clone(&stderr);
            thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    match serde_json::from_str::<Value>(&line) {
                        Ok(v) => {
                            if tx.send(v).is_err() {
                                break;
                            }
                        }
                        Err(e) => {
                            let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
                            b.push_str(&format!("(unparsable event line: {e}: {line})\n"));
                        }
                    }
                }
            });
        }
        let stream = EventStream {
            child,
            rx,
            stderr,
            log_file: master.log_file(),
        };
        match ready_rx.recv_timeout(SUBSCRIBE_TIMEOUT) {
            Ok(ListenerLine::Listening) => stream,
            Ok(ListenerLine::Eof) | Err(_) => {
                kill_shared(&stream.child);
                panic!(
                    "could not subscribe to the event bus of salt-master {} within {:?}:\n{}\n\
                     --- master log tail ---\n{}",
                    master.series,
                    SUBSCRIBE_TIMEOUT,
                    stream.stderr(),
                    tail_filtered(&stream.log_file, 30, true)
                );
            }
        }
    }

    /// The next event, or None after `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Option<Value> {
        match self.rx.recv_timeout(timeout) {
            Ok(v) => Some(v),
            Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => None,
        }
    }

    /// The first event for which `pred` holds within `timeout` (others are
    /// discarded), or None.
    pub fn wait_for(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let ev = self.recv_timeout(left)?;
            if pred(&ev) {
                return Some(ev);
            }
        }
    }

    /// The first event whose tag starts with `prefix`; panics after `timeout`
    /// with the tags seen meanwhile and the master log tail.
    pub fn expect_tag(&self, prefix: &str, timeout: Duration) -> Value {
        let mut seen = Vec::new();
        let found = self.wait_for(timeout, |ev| {
            let tag = ev["tag"].as_str().unwrap_or_default();
            seen.push(tag.to_string());
            tag.starts_with(prefix)
        });
        found.unwrap_or_else(|| {
            panic!(
                "no event with tag prefix {prefix:?} within {timeout:?}; saw {seen:?}\n\
                 --- listener stderr ---\n{}\n--- master log tail ---\n{}",
                self.stderr(),
                tail_filtered(&self.log_file, 30, true)
            )
        })
    }

    /// Events that already arrived, without waiting.
    pub fn drain(&self) -> Vec<Value> {
        self.rx.try_iter().collect()
    }

    /// All events arriving within `duration` (waits the whole duration).
    pub fn collect_for(&self, duration: Duration) -> Vec<Value> {
        let deadline = Instant::now() + duration;
        let mut out = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return out;
            }
            match self.rx.recv_timeout(left) {
                Ok(v) => out.push(v),
                Err(RecvTimeoutError::Timeout) => return out,
                Err(RecvTimeoutError::Disconnected) => return out,
            }
        }
    }

    /// What the listener printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        kill_shared(&self.child);
    }
}

// ---------------------------------------------------------------------------
// keys and reactors

/// Writes a fresh master key pair `out_dir/master.pem` + `master.pub` with
/// Salt's own key code (for [`MasterOptions::master_key_from`]).
pub fn generate_master_key(series: &str, out_dir: &Path) {
    let mut cmd = Command::new(venv_python(&venv_for(series)));
    cmd.arg(master_py()).arg("genkey").arg("--out").arg(out_dir);
    if let Err(e) = run_ok(&mut cmd, CMD_TIMEOUT) {
        panic!("generating a master key in {}: {e}", out_dir.display());
    }
}

/// A reactor that records the events it reacts to: `sls` for
/// [`MasterOptions::reactors`], `marker` gets one JSON line
/// `{"tag": ..., "data": {...}}` per event (written by the master itself through
/// `runner.salt.cmd` + `file.append`; no minion involved).
#[derive(Clone, Debug)]
pub struct MarkerReactor {
    pub sls: PathBuf,
    pub marker: PathBuf,
}

impl MarkerReactor {
    /// The `(tag_glob, sls)` pair for [`MasterOptions::reactors`].
    pub fn on(&self, tag_glob: &str) -> (String, PathBuf) {
        (tag_glob.to_string(), self.sls.clone())
    }

    /// Lines recorded so far.
    pub fn lines(&self) -> Vec<Value> {
        fs::read_to_string(&self.marker)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits (polling the file until `timeout`) for at least `count` lines.
    pub fn wait_for_lines(&self, count: usize, timeout: Duration) -> Option<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.lines();
            if lines.len() >= count {
                return Some(lines);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Creates `dir/<name>.sls` and an empty `dir/<name>.jsonl` marker with
/// `master.py reactor-sls` (works on 3006, 3007 and 3008).
pub fn marker_reactor(series: &str, dir: &Path, name: &str) -> MarkerReactor {
    let sls = dir.join(format!("{name}.sls"));
    let marker = dir.join(format!("{name}.jsonl"));
    let mut cmd = Command::new(venv_python(&venv_for(series)));
    cmd.arg(master_py())
        .arg("reactor-sls")
        .arg("--out")
        .arg(&sls)
        .arg("--marker")
        .arg(&marker);
    if let Err(e) = run_ok(&mut cmd, CMD_TIMEOUT) {
        panic!("writing reactor {}: {e}", sls.display());
    }
    MarkerReactor { sls, marker }
}

// ---------------------------------------------------------------------------
// Salt's Python beacons

/// Runs Salt's own beacons configured in `config_dir/minion` (+ `minion.d/*.conf`)
/// `runs` times, as salt-minion's loop does, and returns the events as
/// `{"tag", "data", "beacon_name", "run"}` values (see tests/salt/python_beacon.py).
pub fn run_python_beacons(series: &str, config_dir: &Path, runs: u32) -> Vec<Value> {
    run_python_beacons_with(series, config_dir, &["--runs", &runs.to_string()])
}

/// [`run_python_beacons`] with explicit python_beacon.py arguments
/// (e.g. `["--id", "m1", "--runs", "3", "--pace"]`).
pub fn run_python_beacons_with(series: &str, config_dir: &Path, args: &[&str]) -> Vec<Value> {
    let mut cmd = Command::new(venv_python(&venv_for(series)));
    cmd.arg(harness_dir().join("python_beacon.py"))
        .arg("--config-dir")
        .arg(config_dir)
        .args(args);
    let out = run_ok(&mut cmd, CMD_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("python_beacon.py printed invalid JSON ({e}): {l:?}"))
        })
        .collect()
}
