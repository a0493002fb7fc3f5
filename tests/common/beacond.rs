//! Running the real `beacond` binary in tests: temp config dirs, `--once`, `--check`, and a
//! long-running `--stdout` agent whose events are awaited with deadlines (never slept for).
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_beacond"))
}

/// The repository root (for `tests/fixtures`, `beacons/`).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A fresh empty directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(label: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p =
            std::env::temp_dir().join(format!("beacond-test-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: impl AsRef<Path>) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A Salt config directory: `minion` plus `minion.d/*.conf`, with `id` and `cachedir` set so
/// nothing on the host is touched.
pub struct ConfigDir {
    pub dir: TempDir,
}

impl ConfigDir {
    /// `minion` holds `id: <id>` and `cachedir: <dir>/cache` followed by `extra`.
    pub fn new(id: &str, extra: &str) -> Self {
        let dir = TempDir::new(id);
        std::fs::create_dir_all(dir.join("minion.d")).expect("minion.d");
        std::fs::create_dir_all(dir.join("cache")).expect("cache");
        let text = format!(
            "id: {id}\ncachedir: {}\n{extra}",
            dir.join("cache").display()
        );
        std::fs::write(dir.join("minion"), text).expect("write minion");
        ConfigDir { dir }
    }
    /// Add `minion.d/<name>`.
    pub fn dropin(self, name: &str, text: &str) -> Self {
        std::fs::write(self.dir.join("minion.d").join(name), text).expect("write drop-in");
        self
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn cachedir(&self) -> PathBuf {
        self.dir.join("cache")
    }
}

/// What a finished run printed.
pub struct Output {
    pub code: i32,
    /// stdout parsed as JSON lines (`--once`, `--stdout`); empty for other modes.
    pub events: Vec<Value>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// Events whose tag starts with `prefix`.
    pub fn tagged(&self, prefix: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["tag"].as_str().is_some_and(|t| t.starts_with(prefix)))
            .collect()
    }
}

/// Run `beacond -c DIR ARGS...` to completion (with a deadline) and parse stdout's JSON lines.
pub fn run(dir: &Path, args: &[&str]) -> Output {
    let child = Command::new(bin())
        .arg("-c")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn beacond");
    let out = wait_with_deadline(child, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // In the event modes every stdout line must be one JSON event: that is the contract.
    let event_mode = args.iter().any(|a| *a == "--once" || *a == "--stdout");
    let events = if event_mode {
        stdout
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    } else {
        Vec::new()
    };
    Output {
        code: out.status.code().unwrap_or(-1),
        events,
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn wait_with_deadline(mut child: Child, limit: Duration) -> std::process::Output {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() > limit => {
                let _ = child.kill();
                panic!("beacond did not exit within {limit:?}");
            }
            // Polling a child for exit: there is no portable awaitable without a runtime.
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("wait: {e}"),
        }
    }
    child.wait_with_output().expect("collect output")
}

/// `beacond --once`.
pub fn once(dir: &Path) -> Output {
    run(dir, &["--once"])
}

/// A running `beacond --stdout`; killed on drop.
pub struct Agent {
    child: Child,
    events: mpsc::Receiver<Value>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Agent {
    pub fn start(dir: &Path, extra_args: &[&str]) -> Agent {
        Self::start_in(&[], dir, extra_args)
    }

    /// The agent run through a command prefix, e.g. `["ip", "netns", "exec", NS]`.
    pub fn start_in(prefix: &[&str], dir: &Path, extra_args: &[&str]) -> Agent {
        let mut cmd = match prefix.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(bin());
                c
            }
            None => Command::new(bin()),
        };
        let mut child = cmd
            .arg("-c")
            .arg(dir)
            .arg("--stdout")
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn beacond --stdout");
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stderr.clone();
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        Agent {
            child,
            events: rx,
            stderr,
        }
    }

    /// The next event, or None after `timeout`.
    pub fn next(&self, timeout: Duration) -> Option<Value> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Wait for the first event satisfying `pred`; panics with the log after `timeout`.
    pub fn wait_for(&self, timeout: Duration, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) if pred(&v) => return v,
                Ok(_) => continue,
                Err(_) => panic!(
                    "no event {what} within {timeout:?}; stderr:\n{}",
                    self.stderr()
                ),
            }
        }
    }

    /// Every event that arrives within `window`.
    pub fn collect_for(&self, window: Duration) -> Vec<Value> {
        let deadline = Instant::now() + window;
        let mut out = Vec::new();
        while let Ok(v) = self
            .events
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            out.push(v);
        }
        out
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Wait until the log shows `text` (e.g. a beacon saying its source is open: there is no
    /// event to await before that). Events that arrive meanwhile stay queued.
    pub fn wait_log(&self, text: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.stderr().contains(text) {
            assert!(
                Instant::now() < deadline,
                "no '{text}' in stderr:\n{}",
                self.stderr()
            );
            // Polling the log: it is read by a thread as it comes.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal (e.g. `libc::SIGHUP`).
    pub fn signal(&self, sig: i32) {
        let _ = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Keys of an event's data, sorted.
/// Copy an executable for a test to run, without this process ever holding a writable fd
/// on the copy: `cp` writes it in a child. Written here, the write fd (close-on-exec, but
/// inherited by any child another test thread forks meanwhile, until that child execs)
/// makes an exec of the copy fail with ETXTBSY ("Text file busy") under parallel tests.
pub fn copy_exe(from: impl AsRef<Path>, to: impl AsRef<Path>) {
    let status = Command::new("cp")
        .arg("--")
        .arg(from.as_ref())
        .arg(to.as_ref())
        .status()
        .expect("cp");
    assert!(status.success(), "cp {:?} failed", from.as_ref());
}

/// Write an executable script (mode 0755) for a test to run, as [`copy_exe`]: the file is
/// written by a child, so no fd of ours on it can leak into another thread's fork.
pub fn write_exe(path: impl AsRef<Path>, text: &str) {
    use std::io::Write;
    let mut child = Command::new("/bin/sh")
        .args(["-c", "cat > \"$1\" && chmod 0755 \"$1\"", "sh"])
        .arg(path.as_ref())
        .stdin(Stdio::piped())
        .spawn()
        .expect("sh");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("script text");
    assert!(
        child.wait().expect("sh").success(),
        "writing {:?} failed",
        path.as_ref()
    );
}

pub fn data_keys(event: &Value) -> Vec<String> {
    let mut keys: Vec<String> = event["data"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}
