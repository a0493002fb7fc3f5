//! Conformance with Salt's own Python beacons: the same config run by Salt 3006, 3007 and 3008
//! (`tests/salt/python_beacon.py`, the minion's own beacon machinery) and by `beacond --once`
//! on the same host must give the same tags and the same data keys.
mod common;
use common::beacond::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

/// Tag → sorted data keys of every event.
fn shape(events: &[Value]) -> BTreeMap<String, Vec<String>> {
    events
        .iter()
        .map(|e| {
            (
                e["tag"].as_str().unwrap_or_default().to_owned(),
                data_keys(e),
            )
        })
        .collect()
}

fn python_events(python: &PathBuf, dir: &std::path::Path) -> Vec<Value> {
    let out = Command::new(python)
        .arg(repo().join("tests/salt/python_beacon.py"))
        .arg("--config-dir")
        .arg(dir)
        .args(["--runs", "1"])
        .output()
        .expect("run python_beacon.py");
    assert!(
        out.status.success(),
        "python_beacon.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("python_beacon.py prints JSON lines"))
        .collect()
}

#[test]
fn resource_beacons_match_salt_tags_and_data_keys() {
    // Thresholds that always fire, so both sides must produce every event.
    let cfg = ConfigDir::new(
        "conform",
        "beacons:
  load:
    - averages: {1m: [1000, 1000], 5m: [1000, 1000], 15m: [1000, 1000]}
  memusage: [{percent: 0}]
  swapusage: [{percent: 0}]
  diskusage: [{'^/$': 0}]
  mem_named:
    - beacon_module: memusage
    - percent: 0%
",
    );
    let ours = once(cfg.path());
    assert_eq!(ours.code, 0, "{}", ours.stderr);
    let our_shape = shape(&ours.events);
    assert_eq!(our_shape.len(), 5, "{:?}", ours.events);
    for series in ["3006", "3007", "3008"] {
        let Some(python) = common::salt::require_salt_python(series) else {
            continue;
        };
        let theirs = python_events(&python, cfg.path());
        assert!(
            theirs.iter().all(|e| e.get("error").is_none()),
            "Salt {series} beacon error: {theirs:?}"
        );
        assert_eq!(
            shape(&theirs),
            our_shape,
            "Salt {series} vs beacond:\n{theirs:#?}\n{:#?}",
            ours.events
        );
    }
}
