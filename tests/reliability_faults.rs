//! Nothing lost across master outages and agent crashes, against a real salt-master (3007).
//!
//! Four beacond minions run at once against one master, each behind its own TCP gate:
//! - `steady`: a 10 events/s stream; the master is stopped for 60 s.
//! - `burst`: the stream plus a ~200 events/s burst going on when the master stops.
//! - `crash`: the stream plus the burst, SIGKILLed mid-burst (master up) and restarted.
//! - `both`: the stream plus the burst, the master stopped, SIGKILLed during the outage and
//!   restarted.
//!
//! The gates only keep the restarted master's traffic back until a new listener subscribed to
//! its bus (so every event that reaches the bus is seen); the master itself is really down.
//! At the end every minion gets SIGTERM and flushes its spool; its ack pointer is then the
//! last sequence number it assigned, and every `beacond_uid` `1..=acked` must be on the bus.
//! Duplicates are allowed only within the documented bound: one batch
//! (`beacond_replay_batch`) per crash or per outage.

mod common;
use common::faults::*;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const BATCH: u64 = 250;
const OUTAGE: Duration = Duration::from_secs(60);

fn beacons(fixture: &str, burst: bool) -> String {
    let mut s = format!(
        "beacons:\n  steady:\n    - beacon_module: memusage\n    - percent: 1%\n    - procfs: {fixture}\n    - interval: 0.1\n"
    );
    if burst {
        for i in 1..=2 {
            s.push_str(&format!(
                "  burst{i}:\n    - beacon_module: memusage\n    - percent: 1%\n    - procfs: {fixture}\n    - interval: 0.01\n"
            ));
        }
    }
    s
}

fn count_for(seen: &Seen, id: &str) -> usize {
    let prefix = format!("salt/beacon/{id}/");
    seen.lock()
        .map(|s| {
            s.iter()
                .filter(|e| e["tag"].as_str().is_some_and(|t| t.starts_with(&prefix)))
                .count()
        })
        .unwrap_or(0)
}

fn wait_until(timeout: Duration, what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn outages_and_crashes_lose_nothing() {
    let Some(venv) = require_salt("3007") else {
        return;
    };
    let root = common::beacond::TempDir::new("faults");
    let fixture = common::beacond::repo().join("tests/fixtures/proc-high");
    let fixture = fixture.display().to_string();
    let mut master = Master::start(&venv, &root.join("master"));
    let l1 = master.listen("salt/beacon/");
    let seen = l1.seen.clone();

    let extra = format!(
        "beacond_rate_per_beacon: 0\nbeacond_rate_global: 0\nbeacond_flush_timeout: 90\n\
         beacond_replay_batch: {BATCH}\nbeacond_replay_rate: 500\nbeacond_status_interval: 0"
    );
    let names = ["steady", "burst", "crash", "both"];
    let gates: Vec<Gate> = names.iter().map(|_| Gate::new(master.ret_port)).collect();
    let mut minions: Vec<Minion> = names
        .iter()
        .zip(&gates)
        .map(|(n, g)| {
            let id = format!("faults-{n}-{}", std::process::id());
            Minion::configure(
                &root.join(n),
                &id,
                g.port,
                &extra,
                &beacons(&fixture, *n != "steady"),
            )
        })
        .collect();
    for m in &mut minions {
        m.start();
    }
    for m in &minions {
        wait_until(
            Duration::from_secs(60),
            &format!("first events of {}", m.id),
            || count_for(&seen, &m.id) > 0,
        );
    }
    // `crash`: SIGKILL mid-burst (hundreds of events on the bus already), restart.
    wait_until(Duration::from_secs(30), "burst reaching the master", || {
        count_for(&seen, &minions[2].id) > 300
    });
    minions[2].kill();
    minions[2].start();
    let kills_crash = 1;

    // The outage: gates shut (nothing in flight is half-seen), the master stops for 60 s.
    std::thread::sleep(Duration::from_secs(2));
    for g in &gates {
        g.close();
    }
    // Let the listener read what the master published before it goes.
    std::thread::sleep(Duration::from_secs(1));
    master.stop();
    drop(l1);
    let down = Instant::now();
    // `both`: SIGKILL during the outage, mid-burst, and restart.
    std::thread::sleep(Duration::from_secs(3));
    minions[3].kill();
    minions[3].start();
    // The bursts end (reload to the steady stream only): the backlog is bounded.
    std::thread::sleep(Duration::from_secs(2));
    for m in &minions[1..] {
        m.set_beacons(&beacons(&fixture, false));
        m.signal(libc::SIGHUP);
    }
    std::thread::sleep(OUTAGE.saturating_sub(down.elapsed()));
    master.start_again();
    let l2 = l1_resubscribe(&master, &seen);
    for g in &gates {
        g.open();
    }
    // Everything flows again; then every minion stops and flushes its spool.
    for m in &minions {
        let before = count_for(&seen, &m.id);
        wait_until(
            Duration::from_secs(60),
            &format!("{} delivering after the outage", m.id),
            || count_for(&seen, &m.id) > before,
        );
    }
    for m in &mut minions {
        m.terminate(Duration::from_secs(120));
    }
    let mut failures = Vec::new();
    for (name, m) in names.iter().zip(&minions) {
        let (last, pending) = m.spool_state();
        if pending != 0 {
            failures.push(format!(
                "{name}: {pending} events still in the spool after SIGTERM\n{}",
                m.log()
            ));
            continue;
        }
        // Wait for the bus to show every uid up to the last one assigned.
        let prefix = format!("salt/beacon/{}/", m.id);
        let tally = || -> BTreeMap<u64, u32> {
            let mut t = BTreeMap::new();
            if let Ok(s) = seen.lock() {
                for e in s
                    .iter()
                    .filter(|e| e["tag"].as_str().is_some_and(|t| t.starts_with(&prefix)))
                {
                    if let Some((_, seq)) = uid_seq(e) {
                        *t.entry(seq).or_insert(0) += 1;
                    }
                }
            }
            t
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut t = tally();
        while (1..=last).any(|s| !t.contains_key(&s)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            t = tally();
        }
        let missing: Vec<u64> = (1..=last).filter(|s| !t.contains_key(s)).collect();
        let received: u64 = t.values().map(|n| *n as u64).sum();
        let dups: u64 = t.values().map(|n| (*n as u64).saturating_sub(1)).sum();
        let crashes = match *name {
            "crash" => kills_crash,
            "both" => 1,
            _ => 0,
        };
        let bound = BATCH * (crashes + 1);
        eprintln!(
            "{name:>6}: assigned {last}, received {received}, distinct {}, missing {}, duplicates {dups} (bound {bound})",
            t.len(),
            missing.len()
        );
        if !missing.is_empty() {
            let mut ranges: Vec<(u64, u64)> = Vec::new();
            for s in &missing {
                match ranges.last_mut() {
                    Some(r) if r.1 + 1 == *s => r.1 = *s,
                    _ => ranges.push((*s, *s)),
                }
            }
            failures.push(format!(
                "{name}: {} events missing (ranges {:?})\n{}",
                missing.len(),
                &ranges[..ranges.len().min(20)],
                m.log()
            ));
        }
        if dups > bound {
            failures.push(format!("{name}: {dups} duplicates > bound {bound}"));
        }
        if last < 600 {
            failures.push(format!(
                "{name}: only {last} events: the stream did not run through the outage"
            ));
        }
    }
    drop(l2);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn l1_resubscribe(master: &Master, seen: &Seen) -> Listener {
    // A new listener on the restarted master, adding to the same list.
    let l = master.listen("salt/beacon/");
    let into = seen.clone();
    let from = l.seen.clone();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(50));
        let moved: Vec<_> = match from.lock() {
            Ok(mut f) => f.drain(..).collect(),
            Err(_) => return,
        };
        if !moved.is_empty() {
            if let Ok(mut i) = into.lock() {
                i.extend(moved);
            }
        }
    });
    l
}
