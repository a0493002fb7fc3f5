//! Spool and flood-control throughput (`cargo bench --bench spool`): no criterion, plain
//! timings printed as figures.
//!
//! - append: events/s and bytes/event written to the spool (one write(2) per event).
//! - drain: peek + acknowledge in batches of 250 (what replay does), events/s.
//! - limiter: events/s through the per-beacon + global token buckets.

use beacond::event::Event;
use beacond::spool::limit::Limiter;
use beacond::spool::store::Spool;
use serde_json::{Map, Value};
use std::time::{Duration, Instant};

fn event(i: usize) -> Event {
    let mut d = Map::new();
    d.insert("tag".into(), Value::from("IN_MODIFY"));
    d.insert(
        "path".into(),
        Value::from(format!("/srv/data/file{}", i % 1000)),
    );
    d.insert("change".into(), Value::from("IN_MODIFY"));
    Event::from_beacon("bench-minion", "inotify", d)
}

fn main() {
    let n = 200_000;
    let dir = std::env::temp_dir().join(format!("beacond-bench-spool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut spool = Spool::open(&dir, 256 << 20).expect("spool");
    let events: Vec<Event> = (0..n).map(event).collect();
    let t = Instant::now();
    for e in events.iter().cloned() {
        spool.append(e).expect("append");
    }
    spool.sync().expect("sync");
    let append = t.elapsed();
    let bytes = spool.bytes();
    let t = Instant::now();
    let mut drained = 0;
    while !spool.is_empty() {
        let b = spool.peek(250).expect("peek");
        drained += b.records.len();
        spool.ack_through(b.last_seq, b.records.len()).expect("ack");
    }
    let drain = t.elapsed();
    assert_eq!(drained, n);
    let mut limiter = Limiter::new(100.0, 500.0, Duration::from_secs(10));
    let t = Instant::now();
    let now = Instant::now();
    let mut passed = 0;
    for e in &events {
        if limiter.admit(e, now) {
            passed += 1;
        }
    }
    let limit = t.elapsed();
    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "spool append: {n} events in {:.3}s = {:.0} events/s, {:.0} bytes/event",
        append.as_secs_f64(),
        rate(append),
        bytes as f64 / n as f64
    );
    println!(
        "spool drain (peek+ack, batches of 250): {:.0} events/s",
        rate(drain)
    );
    println!(
        "flood control: {:.0} events/s ({passed} passed)",
        rate(limit)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
