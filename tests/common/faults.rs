//! Fault-injection helpers: a real salt-master driven through `tests/salt/master.py`, a
//! listener on its event bus, a TCP gate between beacond and the master (to hold traffic back
//! while a restarted master's listener subscribes), and beacond in its normal (master) mode.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The venv of a Salt series made by `tests/salt/setup.sh`, or `None` (skip) with
/// `BEACOND_SKIP_SALT=1`; panics otherwise.
pub fn require_salt(series: &str) -> Option<PathBuf> {
    let base = std::env::var_os("BEACOND_SALT_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/beacond/salt"))
        })?;
    let venv = base.join(series);
    if venv.join(".beacond-ready").is_file() && venv.join("bin/python").exists() {
        return Some(venv);
    }
    if std::env::var("BEACOND_SKIP_SALT").as_deref() == Ok("1") {
        eprintln!("skipped: Salt {series} not installed and BEACOND_SKIP_SALT=1");
        return None;
    }
    panic!(
        "Salt {series} venv not found at {}: run tests/salt/setup.sh {series}, or set BEACOND_SKIP_SALT=1",
        venv.display()
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn master_py() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/salt/master.py")
}

/// A salt-master under a temp root; stopped on drop.
pub struct Master {
    python: PathBuf,
    pub root: PathBuf,
    pub ret_port: u16,
    pub publish_port: u16,
    running: bool,
}

impl Master {
    pub fn start(venv: &Path, root: &Path) -> Master {
        let mut m = Master {
            python: venv.join("bin/python"),
            root: root.to_owned(),
            ret_port: free_port(),
            publish_port: free_port(),
            running: false,
        };
        m.start_again();
        m
    }

    /// Start (again) with the same root, keys and ports.
    pub fn start_again(&mut self) {
        let out = Command::new(&self.python)
            .arg(master_py())
            .args(["start", "--root"])
            .arg(&self.root)
            .args(["--ret-port", &self.ret_port.to_string()])
            .args(["--publish-port", &self.publish_port.to_string()])
            .args(["--log-level", "info"])
            .stdin(Stdio::null())
            .output()
            .expect("run master.py start");
        assert!(
            out.status.success(),
            "master did not start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.running = true;
    }

    pub fn stop(&mut self) {
        let _ = Command::new(&self.python)
            .arg(master_py())
            .args(["stop", "--root"])
            .arg(&self.root)
            .stdin(Stdio::null())
            .output();
        self.running = false;
    }

    /// Subscribe to the event bus (returns once subscribed).
    pub fn listen(&self, prefix: &str) -> Listener {
        Listener::start(&self.python, &self.root, prefix)
    }
}

impl Drop for Master {
    fn drop(&mut self) {
        if self.running {
            self.stop();
        }
    }
}

/// Events seen on a master's bus, in arrival order (shared by several listeners).
pub type Seen = Arc<Mutex<Vec<Value>>>;

/// `master.py events` running in the background.
pub struct Listener {
    child: Child,
    pub seen: Seen,
}

impl Listener {
    fn start(python: &Path, root: &Path, prefix: &str) -> Listener {
        Self::start_into(python, root, prefix, Arc::new(Mutex::new(Vec::new())))
    }

    fn start_into(python: &Path, root: &Path, prefix: &str, seen: Seen) -> Listener {
        let mut child = Command::new(python)
            .arg(master_py())
            .args(["events", "--root"])
            .arg(root)
            .args(["--tag-prefix", prefix, "--timeout", "1800"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("master.py events");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening") {
                    let _ = tx.send(());
                }
            }
        });
        let stdout = child.stdout.take().expect("stdout");
        let sink = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if let Ok(mut s) = sink.lock() {
                        s.push(v);
                    }
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(60))
            .expect("event listener did not subscribe within 60 s");
        Listener { child, seen }
    }

    /// Another listener adding to the same list (after a master restart).
    pub fn resubscribe(&self, master: &Master, prefix: &str) -> Listener {
        Self::start_into(&master.python, &master.root, prefix, self.seen.clone())
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP gate in front of the master's request port: open, it forwards; closed, it cuts every
/// connection and refuses new ones (accepts and closes at once).
pub struct Gate {
    pub port: u16,
    open: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Gate {
    pub fn new(target_port: u16) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind gate");
        let port = listener.local_addr().expect("addr").port();
        let open = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<TcpStream>>> = Arc::new(Mutex::new(Vec::new()));
        let (o, c) = (open.clone(), conns.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !o.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
                    client.try_clone(),
                    server.try_clone(),
                    client.try_clone(),
                    server.try_clone(),
                ) else {
                    continue;
                };
                // Registered under the lock `close` takes, re-checking the flag: a connection
                // accepted while the gate closed never carries a byte.
                let Ok(mut l) = c.lock() else { continue };
                if !o.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    let _ = server.shutdown(Shutdown::Both);
                    continue;
                }
                l.push(c3);
                l.push(s3);
                drop(l);
                pipe(client, s2);
                pipe(server, c2);
            }
        });
        Gate { port, open, conns }
    }

    pub fn close(&self) {
        if let Ok(mut l) = self.conns.lock() {
            self.open.store(false, Ordering::SeqCst);
            for s in l.drain(..) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
    }

    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}

/// beacond in its normal mode (sending to a master), with its log captured.
pub struct Minion {
    pub id: String,
    pub dir: PathBuf,
    child: Option<Child>,
    pub log: Arc<Mutex<String>>,
    /// Extra environment for the process (e.g. `NOTIFY_SOCKET`).
    pub env: Vec<(String, String)>,
}

impl Minion {
    /// `minion` file: id, cachedir, pki_dir under `dir`, master at 127.0.0.1:`port`, `extra`.
    pub fn configure(dir: &Path, id: &str, port: u16, extra: &str, beacons: &str) -> Minion {
        std::fs::create_dir_all(dir.join("minion.d")).expect("mkdir");
        let minion = format!(
            "id: {id}\ncachedir: {d}/cache\npki_dir: {d}/pki\nmaster: 127.0.0.1\nmaster_port: {port}\n\
             acceptance_wait_time: 1\nrecon_default: 200\nrecon_max: 1000\nauth_timeout: 5\nrequest_channel_timeout: 10\n{extra}\n",
            d = dir.display()
        );
        std::fs::write(dir.join("minion"), minion).expect("write minion");
        let m = Minion {
            id: id.to_owned(),
            dir: dir.to_owned(),
            child: None,
            log: Arc::new(Mutex::new(String::new())),
            env: Vec::new(),
        };
        m.set_beacons(beacons);
        m
    }

    pub fn set_beacons(&self, beacons: &str) {
        std::fs::write(self.dir.join("minion.d/beacons.conf"), beacons).expect("write beacons");
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.dir.join("cache/beacond/spool")
    }

    pub fn start(&mut self) {
        let mut child = Command::new(env!("CARGO_BIN_EXE_beacond"))
            .arg("-c")
            .arg(&self.dir)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn beacond");
        let err = child.stderr.take().expect("stderr");
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if let Ok(mut s) = log.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        self.child = Some(child);
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on the pid of our own child, not yet reaped.
            unsafe {
                libc::kill(pid as i32, sig);
            }
        }
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait for the exit (panics after `timeout`).
    pub fn terminate(&mut self, timeout: Duration) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + timeout;
        if let Some(mut c) = self.child.take() {
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => return,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                    _ => {
                        let _ = c.kill();
                        let _ = c.wait();
                        panic!(
                            "{} did not exit within {timeout:?}:\n{}",
                            self.id,
                            self.log()
                        );
                    }
                }
            }
        }
    }

    /// Wait until the process exits by itself (panics after `timeout`).
    pub fn wait_exit(&mut self, timeout: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + timeout;
        let Some(mut c) = self.child.take() else {
            panic!("{} is not running", self.id);
        };
        loop {
            match c.try_wait() {
                Ok(Some(st)) => return st,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = c.kill();
                    let _ = c.wait();
                    panic!(
                        "{} did not exit within {timeout:?}:\n{}",
                        self.id,
                        self.log()
                    );
                }
            }
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The spool as the next start would see it: (last seq assigned, events still pending).
    pub fn spool_state(&self) -> (u64, u64) {
        match beacond::spool::store::Spool::open(&self.spool_dir(), 64 << 20) {
            Ok(s) => (s.next_seq() - 1, s.pending()),
            Err(e) => panic!("{}: {e}", self.id),
        }
    }
}

impl Drop for Minion {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The sequence number of a `beacond_uid` (`<spool id>-<seq>`).
pub fn uid_seq(ev: &Value) -> Option<(String, u64)> {
    let uid = ev["data"]["beacond_uid"].as_str()?;
    let (id, seq) = uid.rsplit_once('-')?;
    Some((id.to_owned(), seq.parse().ok()?))
}
