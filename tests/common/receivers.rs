//! Receivers for the sink tests, started by the test. Logstash and Splunk cannot run here:
//! `LineReceiver` stands in for a TCP input with the `json_lines` codec (it reads one JSON
//! object per line) and `HecServer` for Splunk's HTTP Event Collector (it checks the token
//! and answers with HEC's JSON, indexer acknowledgment included). Syslog goes through a real
//! `rsyslogd` (`Rsyslog`). Each can be taken down and brought back on the same port.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub type Got = Arc<Mutex<Vec<Value>>>;

/// One rsyslog output line: hostname, app-name, msgid, severity, the message as JSON.
pub type SyslogRecord = (String, String, String, String, Value);

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Serve on `port` until `up` goes false; each connection is handled by `handle` on its own
/// thread; going down closes the listener and every connection.
struct Server {
    port: u16,
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    handle: Arc<dyn Fn(TcpStream) + Send + Sync>,
}

impl Server {
    fn new(port: u16, handle: Arc<dyn Fn(TcpStream) + Send + Sync>) -> Server {
        let mut s = Server {
            port,
            up: Arc::new(AtomicBool::new(false)),
            conns: Arc::new(Mutex::new(Vec::new())),
            thread: None,
            handle,
        };
        s.start();
        s
    }

    fn start(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).expect("bind receiver");
        listener.set_nonblocking(true).expect("nonblocking");
        self.up.store(true, Ordering::SeqCst);
        let (up, conns, handle) = (self.up.clone(), self.conns.clone(), self.handle.clone());
        self.thread = Some(std::thread::spawn(move || {
            while up.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        if let (Ok(c), Ok(mut l)) = (s.try_clone(), conns.lock()) {
                            l.push(c);
                        }
                        let h = handle.clone();
                        std::thread::spawn(move || h(s));
                    }
                    // Polling accept keeps "down" simple to implement in a test receiver.
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }));
    }

    fn stop(&mut self) {
        self.up.store(false, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Ok(mut l) = self.conns.lock() {
            for c in l.drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP input reading JSON lines (what Logstash's `tcp` input with `json_lines` does).
pub struct LineReceiver {
    server: Server,
    pub got: Got,
}

impl LineReceiver {
    pub fn start() -> LineReceiver {
        let got: Got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        let handle = Arc::new(move |s: TcpStream| {
            for line in BufReader::new(s).lines().map_while(Result::ok) {
                // A line that is not JSON is kept as a string, for the test to fail on.
                let v = serde_json::from_str::<Value>(&line).unwrap_or(Value::String(line));
                if let Ok(mut x) = g.lock() {
                    x.push(v);
                }
            }
        });
        LineReceiver {
            server: Server::new(free_port(), handle),
            got,
        }
    }
    pub fn port(&self) -> u16 {
        self.server.port
    }
    pub fn down(&mut self) {
        self.server.stop();
    }
    pub fn up(&mut self) {
        self.server.start();
    }
}

/// Splunk HEC as far as beacond uses it: `POST /services/collector/event` (token checked,
/// concatenated event objects) answering `{"text":"Success","code":0,"ackId":N}`, and
/// `POST /services/collector/ack` answering `{"acks":{"N":true}}`.
pub struct HecServer {
    server: Server,
    /// The `event` objects received, and the whole envelopes.
    pub got: Got,
    pub envelopes: Got,
    pub rejected: Arc<Mutex<u64>>,
}

/// Request line, headers (lower-case names), body.
type Request = (String, Vec<(String, String)>, Vec<u8>);

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).ok()? == 0 {
            return None;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).ok()?;
    Some((line, headers, body))
}

impl HecServer {
    pub fn start(token: &str) -> HecServer {
        let got: Got = Arc::new(Mutex::new(Vec::new()));
        let envelopes: Got = Arc::new(Mutex::new(Vec::new()));
        let rejected = Arc::new(Mutex::new(0u64));
        let next_ack = Arc::new(Mutex::new(0u64));
        let (g, e, rj) = (got.clone(), envelopes.clone(), rejected.clone());
        let want = format!("Splunk {token}");
        let handle = Arc::new(move |s: TcpStream| {
            let Ok(mut w) = s.try_clone() else { return };
            let mut r = BufReader::new(s);
            while let Some((line, headers, body)) = read_request(&mut r) {
                let auth = headers
                    .iter()
                    .find(|(k, _)| k == "authorization")
                    .map(|(_, v)| v.as_str());
                let (status, reply) = if auth != Some(want.as_str()) {
                    *rj.lock().expect("lock") += 1;
                    (
                        "401 Unauthorized",
                        r#"{"text":"Invalid token","code":4}"#.to_string(),
                    )
                } else if line.starts_with("POST /services/collector/event ") {
                    let mut evs = Vec::new();
                    for v in serde_json::Deserializer::from_slice(&body).into_iter::<Value>() {
                        match v {
                            Ok(v) => evs.push(v),
                            Err(_) => {
                                evs.clear();
                                break;
                            }
                        }
                    }
                    if evs.is_empty() {
                        (
                            "400 Bad Request",
                            r#"{"text":"Invalid data format","code":6}"#.to_string(),
                        )
                    } else {
                        let mut n = next_ack.lock().expect("lock");
                        let id = *n;
                        *n += 1;
                        let mut gl = g.lock().expect("lock");
                        let mut el = e.lock().expect("lock");
                        for v in evs {
                            gl.push(v["event"].clone());
                            el.push(v);
                        }
                        (
                            "200 OK",
                            format!(r#"{{"text":"Success","code":0,"ackId":{id}}}"#),
                        )
                    }
                } else if line.starts_with("POST /services/collector/ack") {
                    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let acks: serde_json::Map<String, Value> = v["acks"]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .map(|i| (i.to_string(), Value::Bool(true)))
                                .collect()
                        })
                        .unwrap_or_default();
                    ("200 OK", serde_json::json!({ "acks": acks }).to_string())
                } else {
                    (
                        "404 Not Found",
                        r#"{"text":"The requested URL was not found on this server.","code":404}"#
                            .to_string(),
                    )
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{reply}",
                    reply.len()
                );
                if w.write_all(resp.as_bytes()).is_err() {
                    return;
                }
            }
        });
        HecServer {
            server: Server::new(free_port(), handle),
            got,
            envelopes,
            rejected,
        }
    }
    pub fn port(&self) -> u16 {
        self.server.port
    }
    pub fn down(&mut self) {
        self.server.stop();
    }
    pub fn up(&mut self) {
        self.server.start();
    }
}

/// A real rsyslogd, unprivileged, in a temp dir: imtcp on its own port, every message's MSG
/// part (the JSON record) appended to `out` by omfile.
pub struct Rsyslog {
    dir: PathBuf,
    pub port: u16,
    pub out: PathBuf,
    child: Option<Child>,
}

impl Rsyslog {
    pub fn start(dir: &Path) -> Rsyslog {
        std::fs::create_dir_all(dir.join("work")).expect("mkdir");
        let mut r = Rsyslog {
            dir: dir.to_owned(),
            port: free_port(),
            out: dir.join("out.log"),
            child: None,
        };
        let conf = format!(
            "global(workDirectory=\"{d}/work\")\n\
             module(load=\"imtcp\")\n\
             input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{p}\")\n\
             template(name=\"rec\" type=\"string\" string=\"%hostname% %app-name% %msgid% %syslogseverity% %msg%\\n\")\n\
             *.* action(type=\"omfile\" file=\"{o}\" template=\"rec\" flushOnTXEnd=\"on\" asyncWriting=\"off\")\n",
            d = dir.display(),
            p = r.port,
            o = r.out.display()
        );
        std::fs::write(dir.join("rsyslog.conf"), conf).expect("write conf");
        r.up();
        r
    }

    pub fn up(&mut self) {
        let child = Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(self.dir.join("rsyslog.conf"))
            .arg("-i")
            .arg(self.dir.join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("rsyslogd (Debian package rsyslog)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "rsyslogd did not listen on {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM (rsyslogd drains what it read) and wait.
    pub fn down(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid, not yet reaped.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }

    /// The records written so far: (hostname, app-name, msgid, severity, JSON).
    pub fn records(&self) -> Vec<SyslogRecord> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .filter_map(|l| {
                let mut it = l.splitn(5, ' ');
                let (h, a, m, s, j) = (it.next()?, it.next()?, it.next()?, it.next()?, it.next()?);
                let v = serde_json::from_str(j.trim_start()).ok()?;
                Some((h.into(), a.into(), m.into(), s.into(), v))
            })
            .collect()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.down();
    }
}
