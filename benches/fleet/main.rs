//! The fleet simulator (issue 14): N beacond identities (distinct keys and ids) in this one
//! process, each with the real transport (`Masters`) and spool pipeline, against real
//! salt-masters on loopback started by `tests/salt/master.py` (own root_dir, ports,
//! auto_accept). Run through `benches/fleet/run.sh`.
//!
//! Topologies (`--topology`):
//! - `single`: one salt-master with a reactor. Phases: cold authentication of the whole
//!   fleet; ingest (every identity sends `--events` events, counted on the bus by
//!   `salt-run state.event` and, for one identity in ten, by a reactor whose reaction fires
//!   an event of its own); two restarts (salt-master stopped, `--outage-events` spooled per
//!   identity, started again: time until every identity re-authenticated and the backlog is
//!   delivered).
//! - `syndic`: a master of masters (`order_masters`) and two salt-masters each with Salt's
//!   own `salt-syndic` (`syndic_master` pointing at the top); half the identities on each
//!   syndic's master. Phases: cold authentication, ingest, counted on the *top* master's bus.
//!
//! The CPU and RSS of every salt process group are sampled per phase. Writes
//! `results-<label>.md` and `restart-<label>-{kept,lost}.csv` (delivered events/s over
//! time) to `--out`.

#[path = "../../tests/common/fleet_keys.rs"]
mod fleet_keys;

use beacond::config::minion::MinionOpts;
use beacond::event::Event;
use beacond::spool::stats::Stats;
use beacond::spool::store::Spool;
use beacond::spool::{pipeline, Options};
use beacond::transport::salt::Masters;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

struct Args {
    ids: usize,
    events: u64,
    outage_events: u64,
    venv: PathBuf,
    out: PathBuf,
    worker_threads: u32,
    reauth_delay: f64,
    label: String,
    topology: String,
}

fn parse_args() -> Args {
    let mut a = Args {
        ids: 2000,
        events: 10,
        outage_events: 5,
        venv: PathBuf::from(std::env::var("HOME").unwrap_or_default())
            .join(".cache/beacond/salt/3007"),
        out: PathBuf::from("target/fleet"),
        worker_threads: 4,
        reauth_delay: 10.0,
        label: String::new(),
        topology: "single".into(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(k) = it.next() {
        if k == "--bench" {
            continue;
        }
        let v = it.next().cloned().unwrap_or_default();
        match k.as_str() {
            "--ids" => a.ids = v.parse().unwrap_or(a.ids),
            "--events" => a.events = v.parse().unwrap_or(a.events),
            "--outage-events" => a.outage_events = v.parse().unwrap_or(a.outage_events),
            "--venv" => a.venv = PathBuf::from(v),
            "--out" => a.out = PathBuf::from(v),
            "--worker-threads" => a.worker_threads = v.parse().unwrap_or(a.worker_threads),
            "--reauth-delay" => a.reauth_delay = v.parse().unwrap_or(a.reauth_delay),
            "--label" => a.label = v,
            "--topology" => a.topology = v,
            other => eprintln!("fleet: ignoring argument {other}"),
        }
    }
    if a.label.is_empty() {
        a.label = a.topology.clone();
    }
    a
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// One salt-master under its own root (tests/salt/master.py); `extra` goes to
/// `etc/salt/master.d/fleet.conf` (included after the harness's own config, so it wins).
struct SaltMaster {
    python: PathBuf,
    script: PathBuf,
    root: PathBuf,
    ret_port: u16,
    publish_port: u16,
    workers: u32,
    extra: serde_json::Value,
    reactor: Option<String>,
    pid: Option<u32>,
}

impl SaltMaster {
    fn new(args: &Args, repo: &Path, root: PathBuf, extra: serde_json::Value) -> SaltMaster {
        SaltMaster {
            python: args.venv.join("bin/python"),
            script: repo.join("tests/salt/master.py"),
            root,
            ret_port: free_port(),
            publish_port: free_port(),
            workers: args.worker_threads,
            extra,
            reactor: None,
            pid: None,
        }
    }
    fn start(&mut self) {
        let inc = self.conf_dir().join("master.d");
        std::fs::create_dir_all(&inc).expect("master.d");
        std::fs::write(inc.join("fleet.conf"), self.extra.to_string()).expect("fleet.conf");
        let mut cmd = Command::new(&self.python);
        cmd.arg(&self.script)
            .args(["start", "--root"])
            .arg(&self.root)
            .args(["--ret-port", &self.ret_port.to_string()])
            .args(["--publish-port", &self.publish_port.to_string()])
            .args(["--worker-threads", &self.workers.to_string()])
            .args(["--log-level", "info", "--timeout", "120"])
            .args(["--owner-pid", &std::process::id().to_string()]);
        if let Some(r) = &self.reactor {
            cmd.args(["--reactor", r]);
        }
        let out = cmd.stdin(Stdio::null()).output().expect("run master.py");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "salt-master did not start: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.pid = text
            .lines()
            .find_map(|l| l.strip_prefix("ready pid="))
            .and_then(|p| p.trim().parse().ok());
    }
    fn stop(&mut self) {
        let _ = Command::new(&self.python)
            .arg(&self.script)
            .args(["stop", "--root"])
            .arg(&self.root)
            .args(["--timeout", "10"])
            .stdin(Stdio::null())
            .output();
        self.pid = None;
    }
    fn fire(&self, tag: &str) {
        let _ = Command::new(&self.python)
            .arg(&self.script)
            .args(["fire", "--root"])
            .arg(&self.root)
            .args(["--tag", tag])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    fn log_file(&self) -> PathBuf {
        self.root.join("log/master")
    }
    fn conf_dir(&self) -> PathBuf {
        self.root.join("etc/salt")
    }
}

/// Salt's own `salt-syndic` next to a syndic's master, in its own process group.
struct Syndic {
    child: std::process::Child,
}

impl Syndic {
    /// The syndic reads the master's config (`syndic_master`, ...) and a `minion` file in the
    /// same directory for its own identity towards the top: id, pki_dir, and the local
    /// master's sock_dir (the minion default would be /var/run/salt/minion).
    fn start(venv: &Path, local: &SaltMaster, id: &str, top: &SaltMaster) -> Syndic {
        let minion = json!({
            "id": id,
            "root_dir": local.root,
            "pki_dir": local.root.join("etc/salt/pki/syndic"),
            "cachedir": local.root.join("cache"),
            "sock_dir": local.root.join("run"),
            "publish_port": top.publish_port,
            "log_level": "warning",
            "acceptance_wait_time": 1,
        });
        std::fs::write(local.conf_dir().join("minion"), minion.to_string()).expect("minion");
        let log = std::fs::File::create(local.root.join("log/syndic-console")).expect("log");
        let child = Command::new(venv.join("bin/salt-syndic"))
            .arg("-c")
            .arg(local.conf_dir())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("salt-syndic");
        Syndic { child }
    }
    fn pgid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Syndic {
    fn drop(&mut self) {
        let pg = Pid::from_raw(self.child.id() as i32);
        let _ = killpg(pg, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = killpg(pg, Signal::SIGKILL); // its children, if any
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = killpg(pg, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// CPU ticks (utime+stime) and RSS bytes of a process group.
fn group_usage(pgid: u32) -> (u64, u64) {
    let page = 4096u64;
    let (mut ticks, mut rss) = (0u64, 0u64);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (0, 0);
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // fields after ")": state(0) ppid(1) pgrp(2) ... utime(11) stime(12) ... rss(21)
        if f.get(2).and_then(|p| p.parse::<u32>().ok()) != Some(pgid) {
            continue;
        }
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        ticks += n(11) + n(12);
        rss += n(21) * page;
    }
    (ticks, rss)
}

#[derive(Default)]
struct Phase {
    name: String,
    secs: f64,
    /// Per sampled process group: name, CPU (% of one core), max RSS (bytes).
    usage: Vec<(String, f64, u64)>,
    note: String,
}

/// Samples the given process groups (name, pgid) while `f` runs.
fn measure<T>(groups: &[(String, Option<u32>)], name: &str, f: impl FnOnce() -> T) -> (T, Phase) {
    let stop = Arc::new(AtomicBool::new(false));
    let n = groups.len();
    let rss_max: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let ticks: Arc<Vec<AtomicU64>> = Arc::new((0..n).map(|_| AtomicU64::new(0)).collect());
    let pgids: Vec<u32> = groups.iter().map(|g| g.1.unwrap_or(0)).collect();
    let (s, r, t) = (stop.clone(), rss_max.clone(), ticks.clone());
    let sampler = std::thread::spawn(move || {
        let mut last: BTreeMap<usize, u64> = BTreeMap::new();
        loop {
            for (i, &g) in pgids.iter().enumerate() {
                if g != 0 {
                    let (tk, rss) = group_usage(g);
                    let prev = last.insert(i, tk).unwrap_or(tk);
                    t[i].fetch_add(tk.saturating_sub(prev), Relaxed);
                    r[i].fetch_max(rss, Relaxed);
                }
            }
            if s.load(Relaxed) {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    });
    let t0 = Instant::now();
    let out = f();
    let secs = t0.elapsed().as_secs_f64();
    stop.store(true, Relaxed);
    let _ = sampler.join();
    let hz = 100.0;
    let phase = Phase {
        name: name.into(),
        secs,
        usage: groups
            .iter()
            .enumerate()
            .map(|(i, g)| {
                (
                    g.0.clone(),
                    ticks[i].load(Relaxed) as f64 / hz / secs * 100.0,
                    rss_max[i].load(Relaxed),
                )
            })
            .collect(),
        note: String::new(),
    };
    (out, phase)
}

/// `salt-run state.event` on a master's bus. Counts distinct (identity, n) pairs of beacon
/// events (`salt/beacon/fleet-NNNNN/...`), or of the reactor's reactions
/// (`beacond/fleet/reacted`, whose data carries the beacon event's tag and n), and keeps
/// the tags of probe events (`.../probe/...`).
struct BusCounter {
    seen: Arc<Mutex<HashSet<(u32, u64)>>>,
    probes: Arc<Mutex<HashSet<String>>>,
    child: std::process::Child,
}

const REACTED_TAG: &str = "beacond/fleet/reacted";

impl BusCounter {
    fn start(venv: &Path, conf: &Path, tagmatch: &str) -> BusCounter {
        let mut child = Command::new(venv.join("bin/salt-run"))
            .arg("-c")
            .arg(conf)
            .args(["state.event", &format!("tagmatch={tagmatch}"), "count=-1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("salt-run state.event");
        let seen: Arc<Mutex<HashSet<(u32, u64)>>> = Arc::default();
        let probes: Arc<Mutex<HashSet<String>>> = Arc::default();
        let (s, pr) = (seen.clone(), probes.clone());
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // salt/beacon/fleet-00012/fleet/x\t{"n": 3, ...}
                let Some((tag, data)) = line.split_once('\t') else {
                    continue;
                };
                if tag.contains("/probe/") {
                    if let Ok(mut g) = pr.lock() {
                        g.insert(tag.to_owned());
                    }
                    continue;
                }
                let Ok(v) = serde_json::from_str::<serde_json::Value>(data) else {
                    continue;
                };
                let beacon_tag = if tag == REACTED_TAG {
                    v["tag"].as_str().unwrap_or_default().to_owned()
                } else {
                    tag.to_owned()
                };
                let Some(ident) = beacon_tag
                    .strip_prefix("salt/beacon/fleet-")
                    .and_then(|r| r.split('/').next())
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                if let (Some(n), Ok(mut g)) = (v["n"].as_u64(), s.lock()) {
                    g.insert((ident, n));
                }
            }
        });
        BusCounter {
            seen,
            probes,
            child,
        }
    }
    fn count(&self) -> usize {
        self.seen.lock().map(|g| g.len()).unwrap_or(0)
    }
    fn saw_probe(&self, tag: &str) -> bool {
        self.probes.lock().map(|g| g.contains(tag)).unwrap_or(false)
    }
}

impl Drop for BusCounter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fires probes on `at`'s bus until one shows up on `bus` (a subscribed state.event, or a
/// syndic forwarding to the top).
fn await_probe(
    at: &SaltMaster,
    bus: &BusCounter,
    prefix: &str,
    what: &str,
    timeout: Duration,
) -> bool {
    let deadline = Instant::now() + timeout;
    let mut k = 0;
    while Instant::now() < deadline {
        k += 1;
        let tag = format!("{prefix}/probe/{what}/{k}");
        at.fire(&tag);
        let until = Instant::now() + Duration::from_secs(1);
        while Instant::now() < until {
            if bus.saw_probe(&tag) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    eprintln!("fleet: no probe from {what} within {timeout:?}");
    false
}

fn event(id: &str, n: u64) -> Event {
    let mut d = serde_json::Map::new();
    d.insert("tag".into(), json!("x"));
    d.insert("n".into(), json!(n));
    d.insert(
        "payload".into(),
        json!("some beacon data of a typical size, ~100 bytes of text"),
    );
    Event::from_beacon(id, "fleet", d)
}

fn accepted_since(log: &Path, offset: u64) -> HashSet<String> {
    let bytes = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes[(offset as usize).min(bytes.len())..]).into_owned();
    text.lines()
        .filter_map(|l| l.split("Authentication accepted from ").nth(1))
        .map(|s| s.trim().to_owned())
        .collect()
}

fn remove_sessions(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            if p.file_name().is_some_and(|n| n == "sessions") {
                let _ = std::fs::remove_dir_all(&p);
            } else {
                remove_sessions(&p);
            }
        }
    }
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            eprintln!("fleet: timed out waiting for {what}");
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

/// The reactor of the single-master run: one identity in twenty (ids ending in 00, 20, ...
/// 80), each reaction a `runner.event.send` that a second `state.event` counts. Salt's
/// reactor takes ~10 such reactions a second here: reacting to every event of the fleet
/// would measure the reactor alone for half an hour.
const REACTOR_GLOB: &str = "salt/beacon/fleet-???[02468]0/fleet/*";
const REACTOR_SLS: &str = "\
# beacond fleet simulator: one reaction per beacon event, counted on the bus.
beacond_fleet_reacted:
  runner.event.send:
    - args:
      - tag: beacond/fleet/reacted
      - data:
          tag: {{ tag | yaml_dquote }}
          n: {{ data.get('n', -1) | int }}
";

fn groups(
    top: &SaltMaster,
    lower: &[SaltMaster],
    syndics: &[Syndic],
) -> Vec<(String, Option<u32>)> {
    if lower.is_empty() {
        return vec![("master".into(), top.pid)];
    }
    let mut g = vec![("top master".into(), top.pid)];
    for (i, m) in lower.iter().enumerate() {
        g.push((format!("syndic {} master", i + 1), m.pid));
    }
    for (i, s) in syndics.iter().enumerate() {
        g.push((format!("salt-syndic {}", i + 1), Some(s.pgid())));
    }
    g
}

fn main() {
    let args = parse_args();
    let syndic = match args.topology.as_str() {
        "single" => false,
        "syndic" => true,
        other => panic!("--topology single|syndic, not {other}"),
    };
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = args.out.join(format!("work-{}", args.label));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    let t_keys = Instant::now();
    fleet_keys::ensure(args.ids).expect("fleet keys");
    eprintln!("fleet: {} keys ready in {:?}", args.ids, t_keys.elapsed());

    // The masters: one with a reactor, or a master of masters and two syndics.
    let top_extra = if syndic {
        json!({"id": "fleet-top", "order_masters": true})
    } else {
        // Salt's default reactor_worker_threads (the harness sets 2 for its tests).
        json!({"id": "fleet-master", "reactor_worker_threads": 10})
    };
    let mut top = SaltMaster::new(&args, &repo, work.join("master"), top_extra);
    let mut lower: Vec<SaltMaster> = Vec::new();
    let mut syndics: Vec<Syndic> = Vec::new();
    if !syndic {
        let sls = top.root.join("srv/reactor/fleet.sls");
        std::fs::create_dir_all(top.root.join("srv/reactor")).expect("reactor dir");
        std::fs::write(&sls, REACTOR_SLS).expect("reactor sls");
        top.reactor = Some(format!("{REACTOR_GLOB}={}", sls.display()));
    }
    top.start();
    let bus = BusCounter::start(&args.venv, &top.conf_dir(), "salt/beacon/*");
    assert!(
        await_probe(&top, &bus, "salt/beacon", "top", Duration::from_secs(60)),
        "state.event on the master did not subscribe"
    );
    let reactions = (!syndic).then(|| {
        let r = BusCounter::start(&args.venv, &top.conf_dir(), "beacond/fleet/*");
        assert!(
            await_probe(
                &top,
                &r,
                "beacond/fleet",
                "reactions",
                Duration::from_secs(60)
            ),
            "state.event for the reactions did not subscribe"
        );
        r
    });
    if syndic {
        for name in ["a", "b"] {
            let root = work.join(format!("syndic-{name}"));
            let id = format!("fleet-syndic-{name}");
            let extra = json!({
                "id": id,
                "syndic_master": "127.0.0.1",
                "syndic_master_port": top.ret_port,
                "syndic_pidfile": root.join("salt-syndic.pid"),
                "syndic_log_file": root.join("log/syndic"),
            });
            let mut m = SaltMaster::new(&args, &repo, root, extra);
            m.start();
            syndics.push(Syndic::start(&args.venv, &m, &id, &top));
            // The syndic signs in at the top and forwards its master's bus: a probe fired on
            // the syndic's master must reach the top master's bus.
            assert!(
                await_probe(&m, &bus, "salt/beacon", &id, Duration::from_secs(120)),
                "{id} does not forward to the master of masters (see {})",
                m.root.join("log").display()
            );
            eprintln!("fleet: {id} forwards to the top master");
            lower.push(m);
        }
    }

    // Identities: key, id, options as a fleet would set them (Salt's defaults otherwise);
    // with syndics, every other identity on each syndic's master.
    let mut identities = Vec::new();
    for i in 0..args.ids {
        let id = format!("fleet-{i:05}");
        let pki = work.join("ids").join(&id);
        fleet_keys::install(i, &pki).expect("install key");
        let mut settings = serde_json::Map::new();
        settings.insert("random_reauth_delay".into(), json!(args.reauth_delay));
        let port = if syndic {
            lower[i % lower.len()].ret_port
        } else {
            top.ret_port
        };
        let opts = MinionOpts {
            id: id.clone(),
            cachedir: pki.join("cache"),
            pki_dir: pki.clone(),
            master: vec![format!("127.0.0.1:{port}")],
            master_port: 4506,
            settings,
        };
        identities.push((id, pki, Masters::new(&opts).expect("identity")));
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let handle = rt.handle().clone();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let rt_thread = std::thread::spawn(move || {
        rt.block_on(async move {
            let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
        })
    });

    let mut phases = Vec::new();
    // Phase 1: cold authentication of every identity at once.
    let g = groups(&top, &lower, &syndics);
    let (authed, mut p) = measure(&g, "cold authentication", || {
        let tasks: Vec<_> = identities
            .into_iter()
            .map(|(id, pki, mut m)| {
                handle.spawn(async move {
                    let mut tries = 0u32;
                    loop {
                        tries += 1;
                        match m.authenticate().await {
                            Ok(()) => return (id, pki, m, tries),
                            Err(_) => {
                                let wait = m
                                    .next_attempt()
                                    .map(|t| {
                                        t.saturating_duration_since(tokio::time::Instant::now())
                                    })
                                    .unwrap_or(Duration::from_millis(100));
                                tokio::time::sleep(wait.max(Duration::from_millis(50))).await;
                            }
                        }
                    }
                })
            })
            .collect();
        handle.block_on(async {
            let mut out = Vec::new();
            for t in tasks {
                if let Ok(v) = t.await {
                    out.push(v);
                }
            }
            out
        })
    });
    let retries: u32 = authed.iter().map(|a| a.3 - 1).sum();
    p.note = format!("{} identities, {retries} retried sign-ins", authed.len());
    eprintln!("fleet: cold auth {:.1}s ({})", p.secs, p.note);
    let cold_auth_s = p.secs;
    phases.push(p);

    // The pipelines (real spool + paced delivery), one per identity.
    let opts = Options {
        rate_per_beacon: 1e6,
        rate_global: 1e6,
        status_interval: Duration::ZERO,
        flush_timeout: Duration::from_secs(120),
        ..Options::default()
    };
    let all_stats: Vec<Arc<Stats>> = authed.iter().map(|_| Arc::new(Stats::default())).collect();
    let mut senders = Vec::new();
    let mut runs = Vec::new();
    for ((id, pki, m, _), st) in authed.into_iter().zip(&all_stats) {
        let spool = Spool::open(&pki.join("spool"), 8 << 20).expect("spool");
        let (tx, rx) = mpsc::channel(1024);
        runs.push(handle.spawn(pipeline::run(
            id.clone(),
            opts.clone(),
            spool,
            m,
            rx,
            st.clone(),
        )));
        senders.push((id, tx));
    }
    let sent = || all_stats.iter().map(|s| s.sent.load(Relaxed)).sum::<u64>();
    let n_ids = senders.len() as u64;

    // Phase 2: ingest. Times from the first event sent: acknowledged by the master(s) the
    // identities talk to; seen on the (top) master's bus; then (one master) the reactor
    // catching up.
    let mut next_n = 0u64;
    let total1 = n_ids * args.events;
    let reacts = |id: &str| {
        let d = id.as_bytes();
        d.len() >= 2 && d[d.len() - 1] == b'0' && b"02468".contains(&d[d.len() - 2])
    };
    let react_expected = senders.iter().filter(|(id, _)| reacts(id)).count() as u64 * args.events;
    let g = groups(&top, &lower, &syndics);
    let ((t0, t_ack, t_bus), mut p) = measure(&g, "ingest", || {
        let t0 = Instant::now();
        for k in 0..args.events {
            for (id, tx) in &senders {
                let _ = tx.blocking_send(event(id, next_n + k));
            }
        }
        wait_until("ingest", Duration::from_secs(300), || sent() >= total1);
        let t_ack = t0.elapsed().as_secs_f64();
        let bus_ok = wait_until("bus count", Duration::from_secs(300), || {
            bus.count() as u64 >= total1
        });
        let t_bus = bus_ok.then(|| t0.elapsed().as_secs_f64());
        (t0, t_ack, t_bus)
    });
    next_n += args.events;
    let ingest_rate = total1 as f64 / t_ack;
    let bus_rate = t_bus.map(|t| total1 as f64 / t);
    let bus_seen1 = bus.count();
    p.note = format!(
        "{total1} events acknowledged after {t_ack:.1} s ({ingest_rate:.0}/s); {} {bus_seen1} of them{}",
        if syndic { "top master's bus saw" } else { "bus saw" },
        t_bus.map_or(" (incomplete)".into(), |t| format!(" after {t:.1} s")),
    );
    eprintln!("fleet: ingest {:.1}s ({})", p.secs, p.note);
    phases.push(p);
    let mut t_react = None;
    if let Some(r) = &reactions {
        let (t, mut p) = measure(&g, "reactor catching up", || {
            // The reactor: until every reaction is in, or none came for 30 s (at most 240 s).
            let (mut last_n, mut last_t) = (r.count(), t0.elapsed());
            loop {
                let n = r.count();
                if n != last_n {
                    (last_n, last_t) = (n, t0.elapsed());
                }
                if n as u64 >= react_expected
                    || t0.elapsed() > last_t + Duration::from_secs(30)
                    || t0.elapsed() > Duration::from_secs(240)
                {
                    break last_t.as_secs_f64();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        p.note = format!(
            "{} of {react_expected} reactions, the last {t:.1} s after the first event",
            r.count()
        );
        eprintln!("fleet: reactor {:.1}s ({})", p.secs, p.note);
        t_react = Some(t);
        phases.push(p);
    }
    let reacted = reactions.as_ref().map(|r| r.count());

    // Phase 3 (one master): salt-master restarts with a backlog. 3007 keeps each minion's
    // request-channel session in cachedir/sessions across a restart ("sessions kept": no
    // sign-in needed); "sessions lost" removes them while the master is down (a rebuilt
    // master, an expired publish_session, or 3006 whose request channel uses the AES key a
    // restart replaces): every identity must sign in again.
    let mut total2 = total1;
    let mut restarts = Vec::new();
    let scenarios: &[(&str, bool)] = if syndic {
        &[]
    } else {
        &[("sessions kept", false), ("sessions lost", true)]
    };
    for &(scenario, wipe) in scenarios {
        let log_offset = std::fs::metadata(top.log_file()).map_or(0, |m| m.len());
        let before = sent();
        let g = groups(&top, &lower, &syndics);
        let (_, p_down) = measure(&g, &format!("master stopped ({scenario})"), || top.stop());
        if wipe {
            remove_sessions(&top.root);
        }
        for k in 0..args.outage_events {
            for (id, tx) in &senders {
                let _ = tx.blocking_send(event(id, next_n + k));
            }
        }
        next_n += args.outage_events;
        total2 = before + n_ids * args.outage_events;
        top.start();
        let timeline: Arc<Mutex<Vec<(f64, u64)>>> = Arc::default();
        let g = groups(&top, &lower, &syndics);
        let log = top.log_file();
        let ((reauth_s, all_reauth), mut p) =
            measure(&g, &format!("recovery after restart ({scenario})"), || {
                let t0 = Instant::now();
                let mut reauth_at = None;
                let mut last_sample = Instant::now();
                loop {
                    let s = sent();
                    if last_sample.elapsed() >= Duration::from_millis(500) || s >= total2 {
                        if let Ok(mut tl) = timeline.lock() {
                            tl.push((t0.elapsed().as_secs_f64(), s - before));
                        }
                        last_sample = Instant::now();
                    }
                    if reauth_at.is_none() && accepted_since(&log, log_offset).len() as u64 >= n_ids
                    {
                        reauth_at = Some(t0.elapsed().as_secs_f64());
                    }
                    let reauth_done = !wipe || reauth_at.is_some();
                    if (s >= total2 && reauth_done) || t0.elapsed() > Duration::from_secs(300) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                (reauth_at, accepted_since(&log, log_offset).len())
            });
        p.note = format!(
            "{all_reauth} identities signed in again{}; backlog of {} of {} delivered",
            reauth_s.map_or(String::new(), |t| format!(" (all after {t:.1}s)")),
            sent() - before,
            n_ids * args.outage_events
        );
        eprintln!("fleet: recovery {:.1}s ({})", p.secs, p.note);
        restarts.push((scenario, p.secs, reauth_s, all_reauth));
        phases.push(p_down);
        phases.push(p);
        let mut csv = String::from("seconds,delivered_per_s\n");
        if let Ok(tl) = timeline.lock() {
            let mut prev = (0.0, 0u64);
            for &(t, n) in tl.iter() {
                if t > prev.0 {
                    csv.push_str(&format!(
                        "{t:.2},{:.1}\n",
                        (n - prev.1) as f64 / (t - prev.0)
                    ));
                }
                prev = (t, n);
            }
        }
        let name = format!(
            "restart-{}-{}.csv",
            args.label,
            if wipe { "lost" } else { "kept" }
        );
        std::fs::write(args.out.join(name), csv).expect("csv");
    }

    // Flush and count losses.
    drop(senders);
    let spools: Vec<_> = handle.block_on(async {
        let mut out = Vec::new();
        for r in runs {
            if let Ok(s) = r.await {
                out.push(s);
            }
        }
        out
    });
    let pending: u64 = spools.iter().map(|s| s.pending()).sum();
    let dropped: u64 = all_stats.iter().map(|s| s.dropped.load(Relaxed)).sum();
    let spooled: u64 = all_stats.iter().map(|s| s.spooled.load(Relaxed)).sum();
    let lost = spooled.saturating_sub(sent()) + dropped;
    wait_until("bus count", Duration::from_secs(60), || {
        bus.count() as u64 >= total2
    });
    let bus_seen = bus.count();
    let queue_full = String::from_utf8_lossy(&std::fs::read(top.log_file()).unwrap_or_default())
        .matches("TaskPool queue is full")
        .count();
    let _ = stop_tx.send(());
    let _ = rt_thread.join();
    drop(bus);
    drop(reactions);
    drop(syndics);
    for m in &mut lower {
        m.stop();
    }
    top.stop();

    // Results.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut md = String::new();
    if syndic {
        md.push_str(&format!(
            "## {} — {} identities, a master of masters and two syndics (salt-master + salt-syndic 3007, worker_threads {}), loopback\n\n",
            args.label, n_ids, args.worker_threads
        ));
        md.push_str(&format!(
            "- {} identities on each syndic's master; events counted on the **top** master's bus (`salt-run state.event` on the master of masters)\n",
            n_ids / 2
        ));
    } else {
        md.push_str(&format!(
            "## {} — {} identities, one salt-master 3007 (worker_threads {}) with a reactor, loopback\n\n",
            args.label, n_ids, args.worker_threads
        ));
    }
    md.push_str(&format!(
        "- events: {spooled} spooled, {} acknowledged, {pending} left in spools, {dropped} dropped → **lost: {lost}**\n",
        sent()
    ));
    md.push_str(&format!(
        "- events seen on the {}master's bus (`salt-run state.event`): {bus_seen} of {total2}\n",
        if syndic { "top " } else { "" }
    ));
    md.push_str(&format!(
        "- ingest ({} events per identity, {total1} in all, batches of up to {}): acknowledged at **{ingest_rate:.0} events/s**; on the {}bus at **{}**\n",
        args.events,
        opts.replay_batch,
        if syndic { "top master's " } else { "" },
        bus_rate.map_or("— (incomplete)".into(), |r| format!("{r:.0} events/s")),
    ));
    if let (Some(n), Some(t)) = (reacted, t_react) {
        md.push_str(&format!(
            "- reactor (`{REACTOR_GLOB}`: one identity in twenty, each reaction a `runner.event.send`; reactor_worker_threads 10): **{n} of {react_expected}** reacted to, the last {t:.1} s after the first event: **{:.1} reactions/s**; \"TaskPool queue is full\" in the master log: {queue_full} times\n",
            n as f64 / t
        ));
    }
    md.push_str(&format!(
        "- cold authentication of the whole fleet: **{cold_auth_s:.1} s**\n"
    ));
    for (scenario, secs, reauth, n) in &restarts {
        md.push_str(&format!(
            "- salt-master restart, {scenario} (random_reauth_delay {} s): backlog delivered after **{secs:.1} s**; {n} identities signed in again{}\n",
            args.reauth_delay,
            reauth.map_or(String::new(), |t| format!(", all of them after **{t:.1} s**"))
        ));
    }
    md.push_str(&format!("- load average at the end: {}\n\n", load.trim()));
    let names: Vec<String> = phases
        .first()
        .map(|p| p.usage.iter().map(|u| u.0.clone()).collect())
        .unwrap_or_default();
    md.push_str("| phase | seconds |");
    for n in &names {
        md.push_str(&format!(" {n} CPU (% of a core) | {n} RSS max (MiB) |"));
    }
    md.push_str(" note |\n|---|---|");
    for _ in &names {
        md.push_str("---|---|");
    }
    md.push_str("---|\n");
    for p in &phases {
        md.push_str(&format!("| {} | {:.1} |", p.name, p.secs));
        for u in &p.usage {
            md.push_str(&format!(" {:.0} | {:.0} |", u.1, u.2 as f64 / 1048576.0));
        }
        md.push_str(&format!(" {} |\n", p.note));
    }
    md.push('\n');
    let _ = std::fs::create_dir_all(&args.out);
    std::fs::write(args.out.join(format!("results-{}.md", args.label)), &md).expect("results");
    let _ = std::io::stdout().write_all(md.as_bytes());
    let _ = std::fs::remove_dir_all(&work);
}
