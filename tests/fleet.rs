//! Fleet behaviour against a real salt-master 3007 (issue 14).
//!
//! - `reauth_after_restart_is_spread_and_loses_nothing`: 200 identities (distinct cached
//!   keys and ids), each with the real transport and spool pipeline, ride out a master
//!   restart that lost the master's sessions. The master's own log ("Authentication accepted from <id>") shows every
//!   identity signing in again, spread over the `random_reauth_delay` window instead of at
//!   once; every event sent before, during and after the outage reaches the master's bus.
//! - `replay_backs_off_when_the_master_answers_slowly`: a backlog replays through a TCP proxy
//!   that delays the master's replies. The proxy is a stand-in (Salt has no knob to slow its
//!   request server down); the master behind it is real.

mod common;

use beacond::config::minion::MinionOpts;
use beacond::event::Event;
use beacond::spool::stats::Stats;
use beacond::spool::store::Spool;
use beacond::spool::{pipeline, Options};
use beacond::transport::salt::Masters;
use common::faults::Gate;
use common::salt::{require_salt, EventStream, Master, MasterOptions, TempDir};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const SERIES: &str = "3007";

fn minion(id: &str, pki: &Path, port: u16, extra: Value) -> MinionOpts {
    let mut settings = json!({
        "auth_timeout": 30,
        "request_channel_timeout": 30,
        "recon_default": 200,
        "recon_max": 1000,
    });
    if let (Some(s), Some(e)) = (settings.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    MinionOpts {
        id: id.into(),
        cachedir: pki.join("cache"),
        pki_dir: pki.to_path_buf(),
        master: vec![format!("127.0.0.1:{port}")],
        master_port: 4506,
        settings: settings.as_object().cloned().unwrap_or_default(),
    }
}

fn spool_options(replay_batch: usize, replay_rate: f64) -> Options {
    Options {
        rate_per_beacon: 1e6,
        rate_global: 1e6,
        replay_batch,
        replay_rate,
        status_interval: Duration::ZERO,
        flush_timeout: Duration::from_secs(60),
        ..Options::default()
    }
}

fn event(id: &str, sub: &str, n: u64) -> Event {
    let mut d = serde_json::Map::new();
    d.insert("tag".into(), json!(sub));
    d.insert("n".into(), json!(n));
    Event::from_beacon(id, "fleet", d)
}

/// Collect bus events until `want` distinct tags with `suffix` arrived.
fn await_tags(bus: &EventStream, suffix: &str, want: usize, timeout: Duration) -> BTreeSet<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = BTreeSet::new();
    while seen.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "only {} of {want} '{suffix}' events reached the master bus",
            seen.len()
        );
        if let Some(ev) = bus.recv_timeout(left) {
            if let Some(tag) = ev["tag"].as_str().filter(|t| t.ends_with(suffix)) {
                seen.insert(tag.to_owned());
            }
        }
    }
    seen
}

/// "2026-12-04 00:59:01,234 [...] Authentication accepted from <id>" → (seconds of day, id).
fn accepted(line: &str) -> Option<(f64, String)> {
    let id = line.split("Authentication accepted from ").nth(1)?.trim();
    let time = line.get(11..23)?; // HH:MM:SS,mmm
    let (hms, ms) = time.split_once(',')?;
    let mut parts = hms.split(':').map(|p| p.parse::<f64>().ok());
    let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
    Some((
        h * 3600.0 + m * 60.0 + s + ms.parse::<f64>().ok()? / 1000.0,
        id.to_owned(),
    ))
}

#[test]
fn reauth_after_restart_is_spread_and_loses_nothing() {
    const N: usize = 200;
    const WINDOW: f64 = 5.0;
    if require_salt(SERIES).is_none() {
        return;
    }
    common::fleet_keys::ensure(N).expect("fleet keys");
    let dir = TempDir::new("fleet-reauth");
    let mut master = Master::start(
        SERIES,
        MasterOptions {
            worker_threads: Some(4),
            ..MasterOptions::default()
        },
    );
    // The gate holds the agents off while the restarted master's bus listener subscribes.
    let gate = Gate::new(master.ret_port());
    let mut senders = Vec::new();
    let mut agents = Vec::new();
    let stats: Vec<Arc<Stats>> = (0..N).map(|_| Arc::new(Stats::default())).collect();
    for (i, st) in stats.iter().enumerate() {
        let id = format!("fleet-{i:04}");
        let pki = dir.path().join(&id);
        common::fleet_keys::install(i, &pki).expect("key");
        let opts = minion(&id, &pki, gate.port, json!({"random_reauth_delay": WINDOW}));
        let masters = Masters::new(&opts).expect("identity");
        let spool = Spool::open(&pki.join("spool"), 1 << 20).expect("spool");
        let (tx, rx) = mpsc::channel(16);
        let st = Arc::clone(st);
        agents.push(pipeline::run(
            id.clone(),
            spool_options(50, 1000.0),
            spool,
            masters,
            rx,
            st,
        ));
        senders.push((id, tx));
    }
    let send_all = |phase: &str| {
        for (id, tx) in &senders {
            tx.blocking_send(event(id, phase, 1)).expect("agent alive");
        }
    };

    let agents = in_background(agents);
    let bus = master.events("salt/beacon/");
    let t0 = Instant::now();
    send_all("before");
    await_tags(&bus, "/before", N, Duration::from_secs(180));
    eprintln!(
        "{N} identities authenticated from cold and delivered in {:?}",
        t0.elapsed()
    );
    drop(bus);

    gate.close();
    master.stop();
    // 3007 keeps each minion's request-channel session key in cachedir/sessions across a
    // restart, so a plain restart needs no sign-in at all. The storm comes when the
    // sessions are gone (a rebuilt master, an expired publish_session, or 3006, whose
    // request channel uses the AES key every restart replaces): remove them.
    remove_sessions(master.root());
    send_all("during");
    let log_start = std::fs::metadata(master.log_file()).map_or(0, |m| m.len());
    master.start_again();
    let bus = master.events("salt/beacon/");
    let t_open = Instant::now();
    gate.open();
    await_tags(&bus, "/during", N, Duration::from_secs(180));
    eprintln!(
        "backlog of {N} identities delivered {:?} after the master came back",
        t_open.elapsed()
    );
    send_all("after");
    await_tags(&bus, "/after", N, Duration::from_secs(120));

    // The master's auth log after the restart.
    let log = std::fs::read(master.log_file()).expect("master log");
    let text = String::from_utf8_lossy(&log[(log_start as usize).min(log.len())..]);
    let mut first: BTreeMap<String, f64> = BTreeMap::new();
    for (t, id) in text.lines().filter_map(accepted) {
        first.entry(id).or_insert(t);
    }
    let ids: BTreeSet<&String> = senders.iter().map(|(id, _)| id).collect();
    let missing: Vec<_> = ids.iter().filter(|id| !first.contains_key(**id)).collect();
    assert!(missing.is_empty(), "not re-authenticated: {missing:?}");
    let times: Vec<f64> = first.values().copied().collect();
    let lo = times.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = times.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut buckets = [0usize; 10];
    for t in &times {
        let b = (((t - lo) / WINDOW) * 10.0).floor() as usize;
        buckets[b.min(9)] += 1;
    }
    eprintln!(
        "re-authentication spread over {:.2}s (random_reauth_delay {WINDOW}s); per {:.1}s: {buckets:?}",
        hi - lo,
        WINDOW / 10.0
    );
    assert!(
        hi - lo >= 0.9 * WINDOW,
        "re-authentication of {N} identities took {:.2}s, less than 90% of the {WINDOW}s window",
        hi - lo
    );
    let peak = buckets.iter().copied().max().unwrap_or(0);
    assert!(
        peak <= N / 4,
        "{peak} of {N} re-authentications fell in one tenth of the window: {buckets:?}"
    );

    drop(senders);
    for spool in agents.join().expect("agents") {
        assert_eq!(spool.pending(), 0, "undelivered events left in a spool");
    }
    let dropped: u64 = stats.iter().map(|s| s.dropped.load(Relaxed)).sum();
    let sent: u64 = stats.iter().map(|s| s.sent.load(Relaxed)).sum();
    assert_eq!(dropped, 0);
    assert_eq!(sent, 3 * N as u64);
}

fn remove_sessions(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            if p.file_name().is_some_and(|n| n == "sessions") {
                std::fs::remove_dir_all(&p).expect("remove the master's sessions");
            } else {
                remove_sessions(&p);
            }
        }
    }
}

/// The agents' tasks on a runtime of their own thread (the test thread blocks on the master).
fn in_background<F>(tasks: Vec<F>) -> std::thread::JoinHandle<Vec<F::Output>>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let handles: Vec<_> = tasks.into_iter().map(tokio::spawn).collect();
            let mut out = Vec::new();
            for h in handles {
                out.push(h.await.expect("agent task"));
            }
            out
        })
    })
}

/// A TCP proxy whose master→agent direction waits `delay_ms` before passing each chunk on.
/// A stand-in: the real master cannot be told to answer slowly.
async fn delaying_proxy(listener: std::net::TcpListener, target: u16, delay_ms: Arc<AtomicU64>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                continue;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut sw).await;
            });
            let delay = Arc::clone(&delay_ms);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let d = delay.load(Relaxed);
                    if d > 0 {
                        tokio::time::sleep(Duration::from_millis(d)).await;
                    }
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    }
}

#[test]
fn replay_backs_off_when_the_master_answers_slowly() {
    const BATCH: usize = 100;
    const DELAY_MS: u64 = 300;
    const BACKLOG: u64 = 8_000;
    if require_salt(SERIES).is_none() {
        return;
    }
    common::fleet_keys::ensure(1).expect("fleet keys");
    let dir = TempDir::new("fleet-pace");
    let master = Master::start(SERIES, MasterOptions::default());
    let delay = Arc::new(AtomicU64::new(0));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    listener.set_nonblocking(true).expect("nonblocking");
    let port = listener.local_addr().expect("addr").port();
    let id = "fleet-pace";
    let pki = dir.path().join(id);
    common::fleet_keys::install(0, &pki).expect("key");
    let masters = Masters::new(&minion(id, &pki, port, json!({}))).expect("identity");
    // The backlog is in the spool before the agent starts: a replay from the first batch.
    let mut spool = Spool::open(&pki.join("spool"), 64 << 20).expect("spool");
    for n in 0..BACKLOG {
        spool.append(event(id, "backlog", n)).expect("append");
    }
    let stats = Arc::new(Stats::default());
    let (tx, rx) = mpsc::channel(16);
    let agent = pipeline::run(
        id.into(),
        spool_options(BATCH, 4000.0),
        spool,
        masters,
        rx,
        Arc::clone(&stats),
    );
    let proxy = delaying_proxy(listener, master.ret_port(), Arc::clone(&delay));
    let agent = in_background(vec![Box::pin(async move {
        tokio::select! {
            spool = agent => Some(spool),
            _ = proxy => None,
        }
    })]);
    let sent = || stats.sent.load(Relaxed);
    let wait_sent = |n: u64| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while sent() < n {
            assert!(Instant::now() < deadline, "replay stalled at {}", sent());
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // Fast master: the pace learns its usual answer time.
    wait_sent(2_000);
    let (t_fast, n_fast) = (Instant::now(), sent());
    wait_sent(n_fast + 2_000);
    let fast = (sent() - n_fast) as f64 / t_fast.elapsed().as_secs_f64();

    delay.store(DELAY_MS, Relaxed);
    // Let the batch in flight finish, then measure a slow stretch.
    let n_switch = sent();
    wait_sent(n_switch + BATCH as u64);
    let (t_slow, n_slow) = (Instant::now(), sent());
    std::thread::sleep(Duration::from_secs(6));
    let slow = (sent() - n_slow) as f64 / t_slow.elapsed().as_secs_f64();
    // One batch in flight alone would give BATCH per DELAY_MS: the pace must do less.
    let one_in_flight = BATCH as f64 / (DELAY_MS as f64 / 1000.0);
    eprintln!(
        "replay: {fast:.0} events/s with a fast master, {slow:.0} events/s when replies take +{DELAY_MS} ms (one batch in flight alone: {one_in_flight:.0})"
    );
    assert!(slow > 0.0, "replay stopped with a slow master");
    assert!(
        slow < 0.5 * one_in_flight,
        "replay did not back off: {slow:.0} events/s against a bound of {one_in_flight:.0} without backing off"
    );

    // Fast again: everything is delivered, nothing lost.
    delay.store(0, Relaxed);
    drop(tx);
    wait_sent(BACKLOG);
    let spool = agent
        .join()
        .expect("agent")
        .pop()
        .flatten()
        .expect("agent ended");
    assert_eq!(spool.pending(), 0);
    assert_eq!(stats.dropped.load(Relaxed), 0);
}
