//! Flood: 1,000,000 events in a burst through the beacons' bounded channel into the normal
//! mode's pipeline (flood control → spool → transport seam). The inotify beacon has not landed
//! on main yet, so the flood is synthetic (events built as beacons build them). Peak RSS of the
//! whole test process must stay under 64 MiB and the `beacond/suppressed` summaries must account
//! for every event flood control held back. Alone in its file so the RSS figure is its own.

mod common;
use beacond::event::Event;
use beacond::spool::{pipeline, stats::Stats, store::Spool, Options};
use common::sink::{minion, peak_rss, Sink};
use serde_json::{json, Map, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::mpsc;

const TOTAL: u64 = 1_000_000;
const RSS_BOUND: u64 = 64 << 20;

#[test]
fn a_million_event_burst_is_bounded_and_accounted_for() {
    let dir = common::beacond::TempDir::new("flood");
    let opts = Options::from_minion(&minion(
        dir.path(),
        json!({"beacond_rate_per_beacon": 100, "beacond_rate_global": 500, "beacond_rate_window": 1,
               "beacond_status_interval": 0}),
    ))
    .expect("options");
    let spool = Spool::open(&dir.join("spool"), opts.max_bytes).expect("spool");
    let mut sink = Sink::new(false);
    sink.keep_prefix = Some("salt/beacon/m1/beacond/".into());
    let stats = Arc::new(Stats::default());
    // The agent's queue bound between beacons and sink.
    let (tx, rx) = mpsc::channel(4096);
    let start = Instant::now();
    let rss_before = peak_rss();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let task = tokio::spawn(pipeline::run(
                "m1".into(),
                opts,
                spool,
                sink.clone(),
                rx,
                stats.clone(),
            ));
            for i in 0..TOTAL {
                let mut d = Map::new();
                d.insert("tag".into(), Value::from("IN_MODIFY"));
                d.insert(
                    "path".into(),
                    Value::from(format!("/srv/data/file{}", i % 10_000)),
                );
                tx.send(Event::from_beacon("m1", &format!("inotify{}", i % 8), d))
                    .await
                    .expect("send");
            }
            drop(tx);
            task.await.expect("pipeline");
        });
    let elapsed = start.elapsed();
    let peak = peak_rss();
    let rec = sink.rec.lock().expect("lock");
    let summaries: Vec<&Event> = rec
        .events
        .iter()
        .filter(|e| e.tag == "salt/beacon/m1/beacond/suppressed")
        .collect();
    let summarised: u64 = summaries
        .iter()
        .map(|e| e.data["count"].as_u64().unwrap_or(0))
        .sum();
    let passed = stats.spooled.load(Ordering::SeqCst) - summaries.len() as u64;
    let sent = stats.sent.load(Ordering::SeqCst);
    eprintln!(
        "flood: {TOTAL} events in {:.2}s ({:.0}/s); passed {passed}, suppressed {summarised} in {} summaries; sent {sent}; peak RSS {:.1} MiB (before {:.1} MiB)",
        elapsed.as_secs_f64(),
        TOTAL as f64 / elapsed.as_secs_f64(),
        summaries.len(),
        peak as f64 / 1048576.0,
        rss_before as f64 / 1048576.0
    );
    assert_eq!(
        passed + summarised,
        TOTAL,
        "every event passed or was summarised"
    );
    assert_eq!(summarised, stats.suppressed.load(Ordering::SeqCst));
    assert!(!summaries.is_empty());
    for s in &summaries {
        let per: u64 = s.data["beacons"]
            .as_object()
            .expect("beacons")
            .values()
            .filter_map(|b| b["count"].as_u64())
            .sum();
        assert_eq!(per, s.data["count"].as_u64().unwrap_or(0));
        assert!(s.data["first_tag"]
            .as_str()
            .is_some_and(|t| t.starts_with("salt/beacon/m1/inotify")));
    }
    assert_eq!(
        sent,
        stats.spooled.load(Ordering::SeqCst),
        "everything that passed was delivered"
    );
    assert!(peak < RSS_BOUND, "peak RSS {peak} over {RSS_BOUND}");
}
