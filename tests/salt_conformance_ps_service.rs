//! Conformance with Salt's own Python beacons (the `tests/salt` harness): same config, same host,
//! same tags and data keys. `ps` and `network_info` on Salt 3006, 3007 and 3008; `service` on
//! 3007 through Salt's non-systemd service module against beacond's `/proc` fallback (systemd
//! cannot run here, so the D-Bus path cannot be compared with Salt's). `network_settings` is in
//! `tests/salt_conformance_network_journald.rs`.
//! `listening_ports` is beacond's own. Needs `tests/salt/setup.sh` to have run; with
//! `BEACOND_SKIP_SALT=1` these tests pass without comparing.
mod common;
use common::beacond::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Salt's beacons, one loop iteration, as JSON events.
fn python_beacons(python: &Path, dir: &Path, grains: bool) -> Vec<Value> {
    let mut cmd = Command::new(python);
    cmd.arg(repo().join("tests/salt/python_beacon.py"))
        .arg("--config-dir")
        .arg(dir)
        .args(["--runs", "1"]);
    if !grains {
        cmd.arg("--no-grains");
    }
    let out = cmd.output().expect("python_beacon.py");
    assert!(
        out.status.success(),
        "python_beacon.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("JSON event"))
        .collect()
}

/// Tag and sorted data keys (nested maps too, one level), per event, sorted.
fn shape(events: &[Value]) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = events
        .iter()
        .map(|e| {
            let mut keys = Vec::new();
            if let Some(m) = e["data"].as_object() {
                for (k, v) in m {
                    keys.push(k.clone());
                    if let Some(inner) = v.as_object() {
                        keys.extend(inner.keys().map(|ik| format!("{k}.{ik}")));
                    }
                }
            }
            keys.sort();
            (e["tag"].as_str().unwrap_or_default().to_owned(), keys)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn ps_and_network_info_match_salt() {
    // A process with a name past the 15-character comm: psutil's name() rules decide it.
    let dir = TempDir::new("conf-ps");
    let name = format!("beacondconform{}", std::process::id());
    let exe = dir.join(&name);
    copy_exe("/bin/sleep", &exe);
    let mut child = Command::new(&exe).arg("300").spawn().expect("run");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(format!("/proc/{}/stat", child.id()))
        .is_ok_and(|s| s.contains("(beacondconform"))
    {
        assert!(std::time::Instant::now() < deadline, "exec not seen");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let beacons = format!(
        "beacons:\n  ps:\n    - processes:\n        {name}: running\n        beacond-no-such-process: stopped\n  network_info:\n    - interfaces:\n        lo:\n          type: equal\n          errin: 0\n"
    );
    let cfg = ConfigDir::new("conf1", &beacons);
    let ours = once(cfg.path());
    assert_eq!(ours.code, 0, "{}", ours.stderr);
    assert_eq!(ours.events.len(), 3, "{:?}", ours.events);
    for series in ["3006", "3007", "3008"] {
        let Some(python) = common::salt::require_salt_python(series) else {
            continue;
        };
        let theirs = python_beacons(&python, cfg.path(), false);
        assert_eq!(
            shape(&ours.events),
            shape(&theirs),
            "Salt {series}: {theirs:?}"
        );
        // Same values where the host cannot change them between the two runs.
        for ev in &theirs {
            if ev["tag"] == "salt/beacon/conf1/ps/" {
                let ours_ev = ours
                    .events
                    .iter()
                    .find(|o| o["tag"] == ev["tag"] && data_keys(o) == data_keys(ev))
                    .expect("same ps event");
                assert_eq!(ours_ev["data"], {
                    let mut d = ev["data"].clone();
                    d["_stamp"] = ours_ev["data"]["_stamp"].clone();
                    d
                });
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn service_matches_salt_without_systemd() {
    let Some(python) = common::salt::require_salt_python("3007") else {
        return;
    };
    let dir = TempDir::new("conf-svc");
    let pidfile = dir.join("svc.pid");
    std::fs::write(&pidfile, "1\n").expect("pid file");
    let cfg = ConfigDir::new(
        "conf2",
        &format!(
            "beacons:\n  service:\n    - services:\n        beacond-no-such-service:\n          onchangeonly: True\n          uncleanshutdown: {}\n",
            pidfile.display()
        ),
    );
    let theirs = python_beacons(&python, cfg.path(), true);
    // beacond's /proc fallback (no bus, no systemd here).
    let ours_cfg = ConfigDir::new(
        "conf2",
        &format!(
            "beacons:\n  service:\n    - services:\n        beacond-no-such-service:\n          onchangeonly: True\n          uncleanshutdown: {}\n    - backend: proc\n",
            pidfile.display()
        ),
    );
    let ours = once(ours_cfg.path());
    assert_eq!(ours.code, 0, "{}", ours.stderr);
    assert_eq!(shape(&ours.events), shape(&theirs), "{theirs:?}");
    assert_eq!(
        ours.events[0]["data"]["beacond-no-such-service"],
        theirs[0]["data"]["beacond-no-such-service"]
    );
}
