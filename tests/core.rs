//! The agent core, run as a user would: config dirs, `--once`, `--check`, `--stdout`.
mod common;
use common::beacond::*;

#[test]
fn once_prints_salt_shaped_events() {
    let fixture = repo().join("tests/fixtures/proc-high");
    let cfg = ConfigDir::new(
        "core1",
        &format!(
            "beacons:\n  load:\n    - averages:\n        1m: [0.0, 2.0]\n    - procfs: {}\n",
            fixture.display()
        ),
    );
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.events.len(), 1, "{:?}", out.events);
    let ev = &out.events[0];
    assert_eq!(ev["tag"], "salt/beacon/core1/load/");
    assert_eq!(data_keys(ev), ["15m", "1m", "5m", "_stamp", "id"]);
    assert_eq!(ev["data"]["1m"], 3.5);
    assert_eq!(ev["data"]["id"], "core1");
}
