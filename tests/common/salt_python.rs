//! Salt's own Python beacons, run by the salt harness (`tests/salt/setup.sh` installs venvs
//! under `~/.cache/beacond/salt/<series>`; `tests/salt/python_beacon.py` runs the beacons the
//! way salt-minion does). A stand-in until `tests/common/salt.rs` lands from `salt-harness`:
//! same gating (fails clearly when Salt is missing, unless `BEACOND_SKIP_SALT=1`).
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The venv's python for a Salt series, or None when the test must be skipped
/// (`BEACOND_SKIP_SALT=1`); panics with instructions when Salt is missing.
pub fn salt_python(series: &str) -> Option<PathBuf> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let py = home
        .join(".cache/beacond/salt")
        .join(series)
        .join("bin/python");
    if py.exists() {
        return Some(py);
    }
    if std::env::var("BEACOND_SKIP_SALT").as_deref() == Ok("1") {
        eprintln!("skipped: Salt {series} not installed and BEACOND_SKIP_SALT=1");
        return None;
    }
    panic!(
        "Salt {series} is not installed at {}: run tests/salt/setup.sh (or set BEACOND_SKIP_SALT=1)",
        py.display()
    );
}

/// Run Salt's Python beacons of `config_dir` `runs` times; the events they fired.
/// As `python_events` without grains, sleeping `loop_interval` between runs (`--pace`), as a
/// minion does: for beacons that report what happened between two runs.
pub fn python_events_paced(py: &Path, config_dir: &Path, runs: u32) -> Vec<Value> {
    run_script(py, config_dir, runs, false, true)
}

/// `grains`: load Salt's grains (needed by execution modules that dispatch on `kernel`).
pub fn python_events(py: &Path, config_dir: &Path, runs: u32, grains: bool) -> Vec<Value> {
    run_script(py, config_dir, runs, grains, false)
}

fn run_script(py: &Path, config_dir: &Path, runs: u32, grains: bool, pace: bool) -> Vec<Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/salt/python_beacon.py");
    let mut cmd = Command::new(py);
    cmd.arg(script)
        .arg("--config-dir")
        .arg(config_dir)
        .arg("--runs")
        .arg(runs.to_string());
    if !grains {
        cmd.arg("--no-grains");
    }
    if pace {
        cmd.arg("--pace");
    }
    let out = cmd.output().expect("run python_beacon.py");
    assert!(
        out.status.success(),
        "python_beacon.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// Sorted keys of a JSON object.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

/// Every key of Salt's object is in ours (extra keys allowed).
pub fn assert_superset(ours: &Value, salt: &Value, what: &str) {
    let mine = keys(ours);
    let missing: Vec<String> = keys(salt)
        .into_iter()
        .filter(|k| !mine.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "{what}: keys missing vs Salt: {missing:?}\nours: {ours}\nsalt: {salt}"
    );
}
