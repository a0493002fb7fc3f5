//! The normal mode's event path in-process: durable spool, size bound with drop events, paced
//! replay with new events interleaved, the status event. The transport is the test sink of
//! `common::sink` (the real one runs against a real master in `reliability_faults.rs`).

mod common;
use beacond::event::Event;
use beacond::spool::{pipeline, stats::Stats, store::Spool, Options};
use common::sink::{minion, Sink};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

fn ev(beacon: &str, i: usize) -> Event {
    let mut d = Map::new();
    d.insert("n".into(), Value::from(i));
    d.insert("pad".into(), Value::from("p".repeat(200)));
    Event::from_beacon("m1", beacon, d)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn seq_of(uid: &str) -> u64 {
    uid.rsplit_once('-')
        .and_then(|(_, s)| s.parse().ok())
        .unwrap_or(0)
}

/// Wait (polling the shared state) for `f`, within `timeout`.
async fn until(timeout: Duration, what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn a_full_spool_reports_exactly_what_it_dropped() {
    let dir = common::beacond::TempDir::new("spoolfull");
    let opts = Options::from_minion(&minion(
        dir.path(),
        json!({"beacond_spool_max_bytes": 16384, "beacond_rate_per_beacon": 0, "beacond_rate_global": 0,
               "beacond_status_interval": 0}),
    ))
    .expect("options");
    assert_eq!(opts.max_bytes, 16384);
    let spool = Spool::open(&dir.join("spool"), opts.max_bytes).expect("spool");
    let sink = Sink::new(true);
    sink.up.store(false, Ordering::SeqCst);
    let stats = Arc::new(Stats::default());
    let (tx, rx) = mpsc::channel(4096);
    let total = 1000;
    rt().block_on(async {
        let task = tokio::spawn(pipeline::run(
            "m1".into(),
            opts,
            spool,
            sink.clone(),
            rx,
            stats.clone(),
        ));
        for i in 0..total {
            tx.send(ev(if i % 3 == 0 { "a" } else { "b" }, i))
                .await
                .expect("send");
        }
        until(Duration::from_secs(10), "drops", || {
            stats.dropped.load(Ordering::SeqCst) > 0
        })
        .await;
        until(Duration::from_secs(10), "all spooled", || {
            stats.spooled.load(Ordering::SeqCst) >= total as u64
        })
        .await;
        // The master comes back; everything left goes out.
        sink.up.store(true, Ordering::SeqCst);
        until(Duration::from_secs(20), "spool drained", || {
            stats.queue_depth.load(Ordering::SeqCst) == 0
        })
        .await;
        drop(tx);
        let spool = task.await.expect("pipeline");
        assert!(spool.is_empty());
    });
    let rec = sink.rec.lock().expect("lock");
    let mut received = BTreeSet::new();
    let mut dropped_events = Vec::new();
    for e in &rec.events {
        let uid = e.data["beacond_uid"]
            .as_str()
            .expect("every event has a uid");
        assert!(received.insert(seq_of(uid)), "duplicate {uid}");
        if e.tag == "salt/beacon/m1/beacond/dropped" {
            dropped_events.push(e.data.clone());
        }
    }
    assert!(!dropped_events.is_empty(), "no dropped event");
    let last = *received.iter().next_back().expect("events");
    let missing: BTreeSet<u64> = (1..=last).filter(|s| !received.contains(s)).collect();
    let reported: u64 = dropped_events
        .iter()
        .map(|d| d["count"].as_u64().unwrap_or(0))
        .sum();
    eprintln!(
        "spool-full: {total} events, {} delivered, {} dropped events reporting {reported}, {} missing",
        received.len(),
        dropped_events.len(),
        missing.len()
    );
    // Missing: the events reported dropped, plus earlier drop reports that were themselves
    // pushed out (their counts carried into the later report, which says how many).
    let merged: u64 = dropped_events
        .iter()
        .map(|d| d["reports_merged"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(
        reported + merged,
        missing.len() as u64,
        "the drop events account for every missing uid"
    );
    assert_eq!(reported, stats.dropped.load(Ordering::SeqCst));
    for d in &dropped_events {
        let by_beacon: u64 = d["beacons"]
            .as_object()
            .expect("beacons")
            .values()
            .filter_map(Value::as_u64)
            .sum();
        assert_eq!(by_beacon, d["count"].as_u64().unwrap_or(0));
        let first = seq_of(d["first_uid"].as_str().expect("first_uid"));
        let lastd = seq_of(d["last_uid"].as_str().expect("last_uid"));
        assert!(missing.contains(&first) && missing.contains(&lastd));
        assert!(d["first_stamp"].is_string() && d["last_stamp"].is_string());
    }
    // Delivered in order otherwise: the oldest went, the newest stayed.
    assert!(received.contains(&last));
}

#[test]
fn replay_is_paced_and_new_events_ride_along() {
    let dir = common::beacond::TempDir::new("replay");
    let opts = Options::from_minion(&minion(
        dir.path(),
        json!({"beacond_replay_batch": 50, "beacond_replay_rate": 500, "beacond_rate_per_beacon": 0,
               "beacond_rate_global": 0, "beacond_status_interval": 0}),
    ))
    .expect("options");
    let spool = Spool::open(&dir.join("spool"), opts.max_bytes).expect("spool");
    let sink = Sink::new(true);
    sink.up.store(false, Ordering::SeqCst);
    let stats = Arc::new(Stats::default());
    let (tx, rx) = mpsc::channel(4096);
    let backlog = 2000;
    let (started, t_new) = rt().block_on(async {
        let task = tokio::spawn(pipeline::run(
            "m1".into(),
            opts,
            spool,
            sink.clone(),
            rx,
            stats.clone(),
        ));
        for i in 0..backlog {
            tx.send(ev("old", i)).await.expect("send");
        }
        until(Duration::from_secs(10), "backlog spooled", || {
            stats.spooled.load(Ordering::SeqCst) >= backlog as u64
        })
        .await;
        let started = Instant::now();
        sink.up.store(true, Ordering::SeqCst);
        // A new event while the backlog drains.
        until(Duration::from_secs(10), "replay started", || {
            stats.sent.load(Ordering::SeqCst) >= 200
        })
        .await;
        let t_new = Instant::now();
        tx.send(ev("new", 0)).await.expect("send");
        until(Duration::from_secs(30), "drained", || {
            stats.queue_depth.load(Ordering::SeqCst) == 0
        })
        .await;
        drop(tx);
        task.await.expect("pipeline");
        (started, t_new)
    });
    let rec = sink.rec.lock().expect("lock");
    let sent: usize = rec.batches.iter().map(|(_, b)| b.len()).sum();
    assert_eq!(sent, backlog + 1);
    assert!(
        rec.batches.iter().all(|(_, b)| b.len() <= 50),
        "a batch over beacond_replay_batch"
    );
    let last = rec.batches.last().map(|(t, _)| *t).expect("batches");
    let secs = last.duration_since(started).as_secs_f64();
    let rate = (backlog as f64 - 100.0) / secs;
    // The first batch goes at once (burst of one batch); then at most 500/s.
    assert!(
        rate <= 550.0,
        "replayed at {rate:.0} events/s, over beacond_replay_rate"
    );
    // The new event went out long before the backlog's end.
    let (t, pos) = rec
        .batches
        .iter()
        .enumerate()
        .find_map(|(i, (t, b))| {
            b.iter()
                .any(|(tag, _)| tag.contains("/new/"))
                .then_some((*t, i))
        })
        .expect("new event delivered");
    let remaining_after: usize = rec.batches[pos + 1..].iter().map(|(_, b)| b.len()).sum();
    eprintln!(
        "replay: {backlog} events in {} batches over {secs:.2}s ({rate:.0}/s); new event out after {:.3}s with {remaining_after} backlog events still queued",
        rec.batches.len(),
        t.duration_since(t_new).as_secs_f64()
    );
    assert!(
        remaining_after > 500,
        "the new event waited for the backlog"
    );
}

#[test]
fn status_event_reports_the_pipeline() {
    let dir = common::beacond::TempDir::new("status");
    let opts = Options::from_minion(&minion(dir.path(), json!({"beacond_status_interval": 0.2})))
        .expect("options");
    let spool = Spool::open(&dir.join("spool"), opts.max_bytes).expect("spool");
    let mut sink = Sink::new(false);
    sink.keep_prefix = Some("salt/beacon/m1/beacond/status".into());
    let stats = Arc::new(Stats::default());
    let (tx, rx) = mpsc::channel(16);
    rt().block_on(async {
        let task = tokio::spawn(pipeline::run(
            "m1".into(),
            opts,
            spool,
            sink.clone(),
            rx,
            stats.clone(),
        ));
        for i in 0..5 {
            tx.send(ev("x", i)).await.expect("send");
        }
        until(Duration::from_secs(10), "two status events", || {
            sink.rec
                .lock()
                .map(|r| r.events.len() >= 2)
                .unwrap_or(false)
        })
        .await;
        drop(tx);
        task.await.expect("pipeline");
    });
    let rec = sink.rec.lock().expect("lock");
    let d = &rec.events[1].data;
    for k in [
        "queue_depth",
        "spool_bytes",
        "sent",
        "dropped",
        "suppressed",
        "rss_bytes",
        "cpu_seconds",
        "beacond_uid",
        "id",
        "_stamp",
    ] {
        assert!(d.contains_key(k), "status lacks {k}: {d:?}");
    }
    assert!(d["sent"].as_u64().unwrap_or(0) >= 5, "{d:?}");
    assert!(d["rss_bytes"].as_u64().unwrap_or(0) > 0);
    assert_eq!(d["id"], "m1");
}

#[test]
fn bad_spool_options_are_named() {
    let dir = common::beacond::TempDir::new("opts");
    let e = Options::from_minion(&minion(dir.path(), json!({"beacond_rate_global": "lots"})))
        .expect_err("invalid");
    assert!(e.contains("beacond_rate_global"), "{e}");
    let e = Options::from_minion(&minion(dir.path(), json!({"beacond_spool_max_bytes": 10})))
        .expect_err("too small");
    assert!(e.contains("beacond_spool_max_bytes"), "{e}");
    let d = Options::from_minion(&minion(dir.path(), json!({}))).expect("defaults");
    assert_eq!(d, Options::default());
}

/// A poison event (one the master processes and refuses every time) does not block the spool:
/// after bounded retries its batch is narrowed down to it, it is quarantined (bounded file,
/// `beacond/quarantined` event) and every other event, older and newer, is delivered.
#[test]
fn a_refused_event_is_quarantined_and_the_rest_flows() {
    let dir = common::beacond::TempDir::new("poison");
    let opts = Options::from_minion(&minion(
        dir.path(),
        json!({"beacond_rate_per_beacon": 0, "beacond_rate_global": 0,
               "beacond_status_interval": 0, "beacond_replay_batch": 16,
               "beacond_replay_rate": 100000}),
    ))
    .expect("options");
    let spool_dir = dir.join("spool");
    let spool = Spool::open(&spool_dir, opts.max_bytes).expect("spool");
    let mut sink = Sink::new(true);
    sink.refuse_if = Some(Arc::new(|e: &Event| e.data.get("poison").is_some()));
    let stats = Arc::new(Stats::default());
    let (tx, rx) = mpsc::channel(4096);
    let total = 100;
    rt().block_on(async {
        let task = tokio::spawn(pipeline::run(
            "m1".into(),
            opts,
            spool,
            sink.clone(),
            rx,
            stats.clone(),
        ));
        for i in 0..total {
            let mut e = ev("a", i);
            if i == 7 {
                e.data.insert("poison".into(), json!(true));
            }
            tx.send(e).await.expect("send");
        }
        until(
            Duration::from_secs(30),
            "all but the poison delivered",
            || stats.sent.load(Ordering::SeqCst) >= total as u64,
        )
        .await;
        // Newer events still flow after the quarantine.
        tx.send(ev("late", total)).await.expect("send");
        until(Duration::from_secs(10), "a later event delivered", || {
            stats.sent.load(Ordering::SeqCst) > total as u64
        })
        .await;
        drop(tx);
        let spool = task.await.expect("pipeline");
        assert!(spool.is_empty());
    });
    assert_eq!(stats.quarantined.load(Ordering::SeqCst), 1);
    let rec = sink.rec.lock().expect("lock");
    let ns: BTreeSet<u64> = rec
        .events
        .iter()
        .filter_map(|e| e.data.get("n").and_then(Value::as_u64))
        .collect();
    let want: BTreeSet<u64> = (0..=total as u64).filter(|n| *n != 7).collect();
    assert_eq!(ns, want, "every event but the poison delivered");
    let reports: Vec<_> = rec
        .events
        .iter()
        .filter(|e| e.tag == "salt/beacon/m1/beacond/quarantined")
        .collect();
    assert_eq!(reports.len(), 1, "one quarantine report");
    let d = &reports[0].data;
    assert_eq!(d["count"], 1);
    assert_eq!(d["beacons"]["a"], 1);
    assert!(d["reason"].as_str().unwrap_or("").contains("exception"));
    let q = std::fs::read_to_string(spool_dir.join("quarantine.jsonl")).expect("quarantine");
    assert_eq!(q.lines().count(), 1);
    assert!(
        q.contains("\"poison\":true") && q.contains("\"n\":7"),
        "{q}"
    );
    // Bounded retries: each size tried MAX_REFUSALS times, halving from at most 16 down to 1.
    let refused = sink.refused.lock().expect("lock");
    assert!(
        refused.len() <= 5 * pipeline::MAX_REFUSALS as usize,
        "{refused:?}"
    );
    assert_eq!(refused.last(), Some(&1));
}

/// A master that refuses *every* event (its handler broken, not one poison event) must not
/// drain the spool into the quarantine: after two quarantines without a delivery in between,
/// the next ones wait a growing pause, so the events stay in the spool. (Before the pause,
/// one event went to the quarantine every ~0.3 s, its report event after it, without end.)
#[test]
fn a_master_refusing_everything_does_not_drain_the_spool() {
    let dir = common::beacond::TempDir::new("refuseall");
    let opts = Options::from_minion(&minion(
        dir.path(),
        json!({"beacond_rate_per_beacon": 0, "beacond_rate_global": 0,
               "beacond_status_interval": 0, "beacond_replay_batch": 4,
               "beacond_replay_rate": 100000, "beacond_flush_timeout": 0}),
    ))
    .expect("options");
    let spool = Spool::open(&dir.join("spool"), opts.max_bytes).expect("spool");
    let mut sink = Sink::new(true);
    sink.refuse_if = Some(Arc::new(|_: &Event| true));
    let stats = Arc::new(Stats::default());
    let (tx, rx) = mpsc::channel(4096);
    let total = 40;
    let window = Duration::from_secs(4);
    let spool = rt().block_on(async {
        let task = tokio::spawn(pipeline::run(
            "m1".into(),
            opts,
            spool,
            sink.clone(),
            rx,
            stats.clone(),
        ));
        for i in 0..total {
            tx.send(ev("a", i)).await.expect("send");
        }
        // The first two quarantines come without a pause (batch 4 → 2 → 1, then 1).
        until(Duration::from_secs(30), "two quarantines", || {
            stats.quarantined.load(Ordering::SeqCst) >= 2
        })
        .await;
        // Then at most one more in the next 4 s (paused 1 s, then 2 s, then 4 s); without the
        // pause about 13 would go (3 refusals at 0.1 s each per event).
        tokio::time::sleep(window).await;
        drop(tx);
        task.await.expect("pipeline")
    });
    let quarantined = stats.quarantined.load(Ordering::SeqCst);
    assert!(
        (2..=4).contains(&quarantined),
        "quarantined {quarantined} in {window:?}"
    );
    assert_eq!(stats.sent.load(Ordering::SeqCst), 0);
    // The events not quarantined are still in the spool (plus the quarantine reports).
    assert!(
        spool.pending() >= total as u64 - quarantined,
        "pending {}",
        spool.pending()
    );
}
