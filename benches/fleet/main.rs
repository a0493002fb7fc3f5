//! The fleet simulator (issue 14): N beacond identities (distinct keys and ids) in this one
//! process, each with the real transport (`Masters`) and spool pipeline, against a real
//! salt-master on loopback started by `tests/salt/master.py` (own root_dir, ports,
//! auto_accept). Run through `benches/fleet/run.sh`.
//!
//! Phases: cold authentication of the whole fleet; ingest (every identity sends
//! `--events` events); restart (salt-master stopped, `--outage-events` spooled per identity,
//! started again: time until every identity re-authenticated and the backlog is delivered).
//! The master's CPU and RSS (its whole process group) are sampled per phase; events reaching
//! the master's bus are counted by `salt-run state.event`. Writes `results-<label>.md` and
//! `restart-<label>.csv` (delivered events/s over time) to `--out`.

#[path = "../../tests/common/fleet_keys.rs"]
mod fleet_keys;

use beacond::config::minion::MinionOpts;
use beacond::event::Event;
use beacond::spool::stats::Stats;
use beacond::spool::store::Spool;
use beacond::spool::{pipeline, Options};
use beacond::transport::salt::Masters;
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader, Write};
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
        label: "single".into(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut it = argv.iter();
    while let Some(k) = it.next() {
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
            "--bench" => {}
            other => eprintln!("fleet: ignoring argument {other}"),
        }
    }
    a
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

struct SaltMaster {
    python: PathBuf,
    script: PathBuf,
    root: PathBuf,
    ret_port: u16,
    publish_port: u16,
    workers: u32,
    pid: Option<u32>,
}

impl SaltMaster {
    fn start(&mut self) {
        let out = Command::new(&self.python)
            .arg(&self.script)
            .args(["start", "--root"])
            .arg(&self.root)
            .args(["--ret-port", &self.ret_port.to_string()])
            .args(["--publish-port", &self.publish_port.to_string()])
            .args(["--worker-threads", &self.workers.to_string()])
            .args(["--log-level", "info", "--timeout", "120"])
            .args(["--owner-pid", &std::process::id().to_string()])
            .stdin(Stdio::null())
            .output()
            .expect("run master.py");
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
    fn log_file(&self) -> PathBuf {
        self.root.join("log/master")
    }
    fn conf_dir(&self) -> PathBuf {
        self.root.join("etc/salt")
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
    cpu_pct: f64,
    rss_max: u64,
    note: String,
}

/// Samples the master group while `f` runs.
fn measure<T>(master_pid: Option<u32>, name: &str, f: impl FnOnce() -> T) -> (T, Phase) {
    let stop = Arc::new(AtomicBool::new(false));
    let pid = Arc::new(AtomicU64::new(master_pid.unwrap_or(0) as u64));
    let rss_max = Arc::new(AtomicU64::new(0));
    let ticks = Arc::new(AtomicU64::new(0));
    let (s, p, r, t) = (stop.clone(), pid.clone(), rss_max.clone(), ticks.clone());
    let sampler = std::thread::spawn(move || {
        // Ticks are summed per pgid (a restarted master is a new group).
        let mut last: BTreeMap<u64, u64> = BTreeMap::new();
        while !s.load(Relaxed) {
            let g = p.load(Relaxed);
            if g != 0 {
                let (tk, rss) = group_usage(g as u32);
                let prev = last.insert(g, tk).unwrap_or(tk);
                t.fetch_add(tk.saturating_sub(prev), Relaxed);
                r.fetch_max(rss, Relaxed);
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
        cpu_pct: ticks.load(Relaxed) as f64 / hz / secs * 100.0,
        rss_max: rss_max.load(Relaxed),
        note: String::new(),
    };
    (out, phase)
}

/// `salt-run state.event` on the master's bus: beacon events per identity.
struct BusCounter {
    seen: Arc<Mutex<HashSet<(u32, u64)>>>,
    child: std::process::Child,
}

impl BusCounter {
    fn start(venv: &Path, conf: &Path) -> BusCounter {
        let mut child = Command::new(venv.join("bin/salt-run"))
            .arg("-c")
            .arg(conf)
            .args(["state.event", "tagmatch=salt/beacon/*", "count=-1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("salt-run state.event");
        let seen: Arc<Mutex<HashSet<(u32, u64)>>> = Arc::default();
        let s = seen.clone();
        let stdout = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // salt/beacon/fleet-00012/fleet/x\t{"n": 3, ...}
                let Some((tag, data)) = line.split_once('\t') else {
                    continue;
                };
                let Some(ident) = tag
                    .strip_prefix("salt/beacon/fleet-")
                    .and_then(|r| r.split('/').next())
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                let n = serde_json::from_str::<serde_json::Value>(data)
                    .ok()
                    .and_then(|v| v["n"].as_u64());
                if let (Some(n), Ok(mut g)) = (n, s.lock()) {
                    g.insert((ident, n));
                }
            }
        });
        BusCounter { seen, child }
    }
    fn count(&self) -> usize {
        self.seen.lock().map(|g| g.len()).unwrap_or(0)
    }
}

impl Drop for BusCounter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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

fn main() {
    let args = parse_args();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = args.out.join(format!("work-{}", args.label));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    let t_keys = Instant::now();
    fleet_keys::ensure(args.ids).expect("fleet keys");
    eprintln!("fleet: {} keys ready in {:?}", args.ids, t_keys.elapsed());

    let mut master = SaltMaster {
        python: args.venv.join("bin/python"),
        script: repo.join("tests/salt/master.py"),
        root: work.join("master"),
        ret_port: free_port(),
        publish_port: free_port(),
        workers: args.worker_threads,
        pid: None,
    };
    master.start();
    let bus = BusCounter::start(&args.venv, &master.conf_dir());
    std::thread::sleep(Duration::from_secs(3)); // state.event subscribes (no ready signal)

    // Identities: key, id, options as a fleet would set them (Salt's defaults otherwise).
    let mut identities = Vec::new();
    for i in 0..args.ids {
        let id = format!("fleet-{i:05}");
        let pki = work.join("ids").join(&id);
        fleet_keys::install(i, &pki).expect("install key");
        let mut settings = serde_json::Map::new();
        settings.insert("random_reauth_delay".into(), json!(args.reauth_delay));
        let opts = MinionOpts {
            id: id.clone(),
            cachedir: pki.join("cache"),
            pki_dir: pki.clone(),
            master: vec![format!("127.0.0.1:{}", master.ret_port)],
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
    let (authed, mut p) = measure(master.pid, "cold authentication", || {
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

    // Phase 2: ingest.
    let mut next_n = 0u64;
    let total1 = n_ids * args.events;
    let ((), mut p) = measure(master.pid, "ingest", || {
        for k in 0..args.events {
            for (id, tx) in &senders {
                let _ = tx.blocking_send(event(id, next_n + k));
            }
        }
        wait_until("ingest", Duration::from_secs(300), || sent() >= total1);
    });
    next_n += args.events;
    let bus_ok = wait_until("bus count", Duration::from_secs(30), || {
        bus.count() as u64 >= total1
    });
    p.note = format!(
        "{total1} events acknowledged: {:.0} events/s; seen on the bus: {}{}",
        total1 as f64 / p.secs,
        bus.count(),
        if bus_ok { "" } else { " (state.event lagging)" }
    );
    eprintln!("fleet: ingest {:.1}s ({})", p.secs, p.note);
    let ingest_rate = total1 as f64 / p.secs;
    phases.push(p);

    // Phase 3: salt-master restarts with a backlog. 3007 keeps each minion's request-channel
    // session in cachedir/sessions across a restart ("sessions kept": no sign-in needed);
    // "sessions lost" removes them while the master is down (a rebuilt master, an expired
    // publish_session, or 3006 whose request channel uses the AES key a restart replaces):
    // every identity must sign in again.
    let mut total2 = total1;
    let mut restarts = Vec::new();
    for (scenario, wipe) in [("sessions kept", false), ("sessions lost", true)] {
        let log_offset = std::fs::metadata(master.log_file()).map_or(0, |m| m.len());
        let before = sent();
        let (_, p_down) = measure(master.pid, &format!("master stopped ({scenario})"), || {
            master.stop()
        });
        if wipe {
            remove_sessions(&master.root);
        }
        for k in 0..args.outage_events {
            for (id, tx) in &senders {
                let _ = tx.blocking_send(event(id, next_n + k));
            }
        }
        next_n += args.outage_events;
        total2 = before + n_ids * args.outage_events;
        master.start();
        let timeline: Arc<Mutex<Vec<(f64, u64)>>> = Arc::default();
        let ((reauth_s, all_reauth), mut p) = measure(
            master.pid,
            &format!("recovery after restart ({scenario})"),
            || {
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
                    if reauth_at.is_none()
                        && accepted_since(&master.log_file(), log_offset).len() as u64 >= n_ids
                    {
                        reauth_at = Some(t0.elapsed().as_secs_f64());
                    }
                    let reauth_done = !wipe || reauth_at.is_some();
                    if (s >= total2 && reauth_done) || t0.elapsed() > Duration::from_secs(300) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                (
                    reauth_at,
                    accepted_since(&master.log_file(), log_offset).len(),
                )
            },
        );
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
    wait_until("bus count", Duration::from_secs(30), || {
        bus.count() as u64 >= total2
    });
    let bus_seen = bus.count();
    let _ = stop_tx.send(());
    let _ = rt_thread.join();
    drop(bus);
    master.stop();

    // Results.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut md = String::new();
    md.push_str(&format!(
        "## {} — {} identities, one salt-master 3007 (worker_threads {}), loopback\n\n",
        args.label, n_ids, args.worker_threads
    ));
    md.push_str(&format!(
        "- events: {spooled} spooled, {} acknowledged by the master, {pending} left in spools, {dropped} dropped → **lost: {lost}**\n",
        sent()
    ));
    md.push_str(&format!(
        "- events seen on the master's bus (`salt-run state.event`): {bus_seen} of {total2}\n"
    ));
    md.push_str(&format!(
        "- ingest: **{ingest_rate:.0} events/s** ({} events per identity, batches of up to {})\n",
        args.events, opts.replay_batch
    ));
    md.push_str(&format!(
        "- cold authentication of the whole fleet: **{:.1} s**\n",
        phases[0].secs
    ));
    for (scenario, secs, reauth, n) in &restarts {
        md.push_str(&format!(
            "- salt-master restart, {scenario} (random_reauth_delay {} s): backlog delivered after **{secs:.1} s**; {n} identities signed in again{}\n",
            args.reauth_delay,
            reauth.map_or(String::new(), |t| format!(", all of them after **{t:.1} s**"))
        ));
    }
    md.push_str(&format!("- load average at the end: {}\n\n", load.trim()));
    md.push_str("| phase | seconds | master CPU (% of one core) | master RSS max (MiB) | note |\n|---|---|---|---|---|\n");
    for p in &phases {
        md.push_str(&format!(
            "| {} | {:.1} | {:.0} | {:.0} | {} |\n",
            p.name,
            p.secs,
            p.cpu_pct,
            p.rss_max as f64 / 1048576.0,
            p.note
        ));
    }
    md.push('\n');
    let _ = std::fs::create_dir_all(&args.out);
    std::fs::write(args.out.join(format!("results-{}.md", args.label)), &md).expect("results");
    let _ = std::io::stdout().write_all(md.as_bytes());
    let _ = std::fs::remove_dir_all(&work);
}
