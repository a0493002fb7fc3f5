//! Log levels: INFO by default, `-v` for DEBUG, `RUST_LOG` for per-module levels; a beacon's
//! log lines carry a span naming it and its kind.
mod common;
use common::beacond::*;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `beacond --check` on `dir` with `RUST_LOG` set (or unset): its stderr.
fn check_log(dir: &std::path::Path, rust_log: Option<&str>, args: &[&str]) -> String {
    let mut cmd = Command::new(bin());
    cmd.arg("-c").arg(dir).arg("--check").args(args);
    cmd.env_remove("RUST_LOG");
    if let Some(v) = rust_log {
        cmd.env("RUST_LOG", v);
    }
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("beacond --check");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn rust_log_sets_levels_per_module_beside_v() {
    // The scheduler logs a disabled beacon at DEBUG; the agent logs each file read at DEBUG.
    let cfg = ConfigDir::new(
        "log1",
        "beacons:\n  load:\n    - enabled: False\n    - averages:\n        1m: [0.0, 2.0]\n",
    );
    let disabled = "disabled (enabled: False)";
    let read = format!("read {}", cfg.path().display());

    let default = check_log(cfg.path(), None, &[]);
    assert!(!default.contains(disabled), "{default}");
    assert!(!default.contains(&read), "{default}");

    let scheduler = check_log(cfg.path(), Some("beacond::scheduler=debug"), &[]);
    assert!(scheduler.contains(disabled), "{scheduler}");
    assert!(scheduler.contains("DEBUG"), "{scheduler}");
    // Only that module: the agent's debug lines stay off.
    assert!(!scheduler.contains(&read), "{scheduler}");

    let verbose = check_log(cfg.path(), None, &["-v"]);
    assert!(
        verbose.contains(disabled) && verbose.contains(&read),
        "{verbose}"
    );

    // -v raises everything; a module named in RUST_LOG keeps its own level.
    let quiet = check_log(cfg.path(), Some("beacond::scheduler=warn"), &["-v"]);
    assert!(quiet.contains(&read), "{quiet}");
    assert!(!quiet.contains(disabled), "{quiet}");

    // A RUST_LOG that does not parse is said, not silently ignored.
    let bad = check_log(cfg.path(), Some("beacond::scheduler=loud"), &[]);
    assert!(bad.contains("RUST_LOG"), "{bad}");
}

#[test]
fn a_beacons_log_lines_name_it_and_its_kind() {
    let tmp = TempDir::new("log2");
    let cfg = ConfigDir::new(
        "log2",
        &format!(
            "beacons:\n  mem_watch:\n    - beacon_module: memusage\n    - percent: 0\n    - procfs: {}\n",
            tmp.join("no-proc").display()
        ),
    );
    let agent = Agent::start(cfg.path(), &[]);
    let ev = agent.wait_for(Duration::from_secs(15), "the error event", |e| {
        e["tag"] == "salt/beacon/log2/mem_watch/"
    });
    assert!(ev["data"]["error"].is_string(), "{ev}");
    agent.wait_log(
        "beacon{name=mem_watch kind=memusage}",
        Duration::from_secs(5),
    );
    let log = agent.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("beacon{name=mem_watch kind=memusage}"))
        .unwrap_or_default();
    assert!(line.contains("ERROR") && line.contains("no-proc"), "{log}");
}
