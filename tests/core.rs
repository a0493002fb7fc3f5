//! The agent core, run as a user would: Salt config dirs, `--once`, `--check`, `--stdout`,
//! Salt's generic beacon keys, and the four resource beacons on fixture /proc files.
mod common;
use common::beacond::*;
use common::salt_job::{write_job_file, FakeSaltJob};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// A /proc stand-in: loadavg 3.50 2.25 1.00, memory 75.0 % used, swap 25.0 % used.
fn proc_high() -> PathBuf {
    repo().join("tests/fixtures/proc-high")
}

/// A writable /proc stand-in for beacons whose input changes during a test.
fn proc_copy(dir: &TempDir) -> PathBuf {
    let p = dir.join("proc");
    std::fs::create_dir_all(&p).expect("mkdir proc");
    for f in ["loadavg", "meminfo"] {
        std::fs::copy(proc_high().join(f), p.join(f)).expect("copy fixture");
    }
    p
}

fn set_load(procfs: &std::path::Path, one: f64) {
    // Write then rename, so the beacon never reads a half-written file.
    let tmp = procfs.join("loadavg.tmp");
    std::fs::write(&tmp, format!("{one:.2} 1.00 1.00 1/100 999\n")).expect("write loadavg");
    std::fs::rename(&tmp, procfs.join("loadavg")).expect("rename loadavg");
}

#[test]
fn once_prints_salt_shaped_events() {
    let cfg = ConfigDir::new(
        "core1",
        &format!(
            "beacons:\n  load:\n    - averages:\n        1m: [0.0, 2.0]\n    - procfs: {}\n",
            proc_high().display()
        ),
    );
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.events.len(), 1, "{:?}", out.events);
    let ev = &out.events[0];
    assert_eq!(ev["tag"], "salt/beacon/core1/load/");
    assert_eq!(data_keys(ev), ["15m", "1m", "5m", "_stamp", "id"]);
    assert_eq!(ev["data"]["1m"], 3.5);
    assert_eq!(ev["data"]["5m"], 2.25);
    assert_eq!(ev["data"]["id"], "core1");
    // Python's datetime.utcnow().isoformat(): 2026-01-02T03:04:05.123456 (fraction optional).
    let stamp = ev["data"]["_stamp"].as_str().expect("stamp");
    assert!(stamp.len() == 26 || stamp.len() == 19, "{stamp}");
    assert_eq!(&stamp[10..11], "T");
}

#[test]
fn thresholds_crossed_and_not_crossed() {
    let p = proc_high();
    let cfg = ConfigDir::new(
        "thresholds",
        &format!(
            "beacons:
  load_hot:
    - beacon_module: load
    - averages: {{1m: [0.0, 2.0]}}
    - procfs: {p}
  load_calm:
    - beacon_module: load
    - averages: {{1m: [0.0, 5.0], 5m: ['0', '3'], 15m: [0.5, 1.5]}}
    - procfs: {p}
  load_low:
    - beacon_module: load
    - averages: {{15m: [1.5, 9]}}
    - procfs: {p}
  mem_hot:
    - beacon_module: memusage
    - percent: 75%
    - procfs: {p}
  mem_calm:
    - beacon_module: memusage
    - percent: 75.1
    - procfs: {p}
  swap_hot:
    - beacon_module: swapusage
    - percent: '20'
    - procfs: {p}
  swap_calm:
    - beacon_module: swapusage
    - percent: 30%
    - procfs: {p}
",
            p = p.display()
        ),
    );
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut tags: Vec<&str> = out
        .events
        .iter()
        .filter_map(|e| e["tag"].as_str())
        .collect();
    tags.sort();
    assert_eq!(
        tags,
        [
            "salt/beacon/thresholds/load_hot/",
            "salt/beacon/thresholds/load_low/",
            "salt/beacon/thresholds/mem_hot/",
            "salt/beacon/thresholds/swap_hot/",
        ]
    );
    let mem = out.tagged("salt/beacon/thresholds/mem_hot/")[0];
    assert_eq!(mem["data"]["memusage"], 75.0);
    assert_eq!(data_keys(mem), ["_stamp", "id", "memusage"]);
    let swap = out.tagged("salt/beacon/thresholds/swap_hot/")[0];
    assert_eq!(swap["data"]["swapusage"], 25.0);
}

#[test]
fn diskusage_matches_mounts_and_python_regexes() {
    let dir = TempDir::new("mounts");
    let mounts = dir.join("mounts");
    let tmp = std::env::temp_dir();
    std::fs::write(
        &mounts,
        format!(
            "/dev/vda / ext4 rw 0 0\nproc /proc proc rw 0 0\ntmpfs {} tmpfs rw 0 0\n/dev/vdb /home ext4 rw 0 0\n",
            tmp.display()
        ),
    )
    .expect("mounts fixture");
    let cfg = ConfigDir::new(
        "disk",
        &format!(
            "beacons:
  diskusage:
    - '^\\/(?!home|proc).*$': 0%
    - /proc: 100.5%
    - mounts_file: {}
",
            mounts.display()
        ),
    );
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut seen: Vec<&str> = out
        .events
        .iter()
        .filter_map(|e| e["data"]["mount"].as_str())
        .collect();
    seen.sort();
    let mut want = vec!["/".to_owned(), tmp.display().to_string()];
    want.sort();
    assert_eq!(seen, want, "{:?}", out.events);
    for e in &out.events {
        assert_eq!(e["tag"], "salt/beacon/disk/diskusage/");
        assert_eq!(data_keys(e), ["_stamp", "diskusage", "id", "mount"]);
        assert!(e["data"]["diskusage"].as_f64().is_some());
    }
}

#[test]
fn onchangeonly_fires_only_on_crossing() {
    let dir = TempDir::new("onchange");
    let procfs = proc_copy(&dir);
    set_load(&procfs, 1.0);
    let cfg = ConfigDir::new(
        "onchange",
        &format!(
            "beacons:
  load:
    - averages: {{1m: [0.5, 2.0]}}
    - onchangeonly: True
    - interval: 0.05
    - procfs: {}
  memusage:
    - percent: 0
    - interval: 0.05
    - procfs: {}
",
            procfs.display(),
            procfs.display()
        ),
    );
    let agent = Agent::start(cfg.path(), &[]);
    let is_load = |e: &Value| e["tag"] == "salt/beacon/onchange/load/";
    let is_mem = |e: &Value| e["tag"] == "salt/beacon/onchange/memusage/";
    // The agent is evaluating: wait for a memusage event, then cross the high threshold.
    agent.wait_for(Duration::from_secs(10), "memusage", is_mem);
    set_load(&procfs, 3.0);
    let up = agent.wait_for(Duration::from_secs(10), "load crossing up", is_load);
    assert_eq!(up["data"]["1m"], 3.0);
    // Staying above the threshold fires nothing more (many evaluations happen in 1 s).
    let quiet = agent.collect_for(Duration::from_secs(1));
    assert!(
        quiet.iter().filter(|e| is_load(e)).count() == 0,
        "{quiet:?}"
    );
    assert!(
        quiet.iter().filter(|e| is_mem(e)).count() >= 5,
        "beacons kept running"
    );
    // Crossing below the low threshold fires again.
    set_load(&procfs, 0.1);
    let down = agent.wait_for(Duration::from_secs(10), "load crossing down", is_load);
    assert_eq!(down["data"]["1m"], 0.1);
}

#[test]
fn interval_spaces_evaluations() {
    let p = proc_high();
    let cfg = ConfigDir::new(
        "interval",
        &format!(
            "beacons:
  fast:
    - beacon_module: memusage
    - percent: 0
    - interval: 0.1
    - procfs: {p}
  slow:
    - beacon_module: memusage
    - percent: 0
    - interval: 0.6
    - procfs: {p}
",
            p = p.display()
        ),
    );
    let agent = Agent::start(cfg.path(), &[]);
    agent.wait_for(Duration::from_secs(10), "first slow", |e| {
        e["tag"] == "salt/beacon/interval/slow/"
    });
    let events = agent.collect_for(Duration::from_millis(1900));
    let count = |tag: &str| events.iter().filter(|e| e["tag"] == tag).count();
    let (fast, slow) = (
        count("salt/beacon/interval/fast/"),
        count("salt/beacon/interval/slow/"),
    );
    assert!(
        (2..=4).contains(&slow),
        "slow beacon ran {slow} times in 1.9 s"
    );
    assert!(fast >= 3 * slow, "fast {fast} vs slow {slow}");
}

#[test]
fn enabled_false_per_beacon_and_for_all() {
    let p = proc_high();
    let beacons = format!(
        "  active:
    - beacon_module: memusage
    - percent: 0
    - procfs: {p}
  inactive:
    - beacon_module: memusage
    - percent: 0
    - enabled: False
    - procfs: {p}
",
        p = p.display()
    );
    let cfg = ConfigDir::new("enabled", &format!("beacons:\n{beacons}"));
    let out = once(cfg.path());
    let tags: Vec<&str> = out
        .events
        .iter()
        .filter_map(|e| e["tag"].as_str())
        .collect();
    assert_eq!(tags, ["salt/beacon/enabled/active/"], "{}", out.stderr);

    let cfg = ConfigDir::new("alloff", &format!("beacons:\n  enabled: no\n{beacons}"));
    let out = once(cfg.path());
    assert_eq!(out.code, 0);
    assert!(out.events.is_empty(), "{:?}", out.events);
}

#[test]
fn beacon_module_runs_two_instances_of_one_kind() {
    let p = proc_high();
    let cfg = ConfigDir::new(
        "modules",
        &format!(
            "beacons:
  mem_warn:
    - beacon_module: memusage
    - percent: 50%
    - procfs: {p}
  mem_crit:
    - beacon_module: memusage
    - percent: 70%
    - procfs: {p}
  mem_never:
    - beacon_module: memusage
    - percent: 99%
    - procfs: {p}
",
            p = p.display()
        ),
    );
    let out = once(cfg.path());
    let mut tags: Vec<&str> = out
        .events
        .iter()
        .filter_map(|e| e["tag"].as_str())
        .collect();
    tags.sort();
    assert_eq!(
        tags,
        [
            "salt/beacon/modules/mem_crit/",
            "salt/beacon/modules/mem_warn/"
        ]
    );
    assert!(out.events.iter().all(|e| e["data"]["memusage"] == 75.0));
}

#[test]
fn run_once_fires_a_single_time() {
    let p = proc_high();
    let cfg = ConfigDir::new(
        "runonce",
        &format!(
            "beacons:
  once:
    - beacon_module: memusage
    - percent: 0
    - interval: 0.05
    - run_once: True
    - procfs: {p}
  always:
    - beacon_module: memusage
    - percent: 0
    - interval: 0.05
    - procfs: {p}
",
            p = p.display()
        ),
    );
    let agent = Agent::start(cfg.path(), &[]);
    let mut events = vec![agent.wait_for(Duration::from_secs(10), "first", |_| true)];
    events.extend(agent.collect_for(Duration::from_secs(1)));
    let once = events
        .iter()
        .filter(|e| e["tag"] == "salt/beacon/runonce/once/")
        .count();
    let always = events
        .iter()
        .filter(|e| e["tag"] == "salt/beacon/runonce/always/")
        .count();
    assert_eq!(once, 1, "{events:?}");
    assert!(always >= 5, "the other beacon keeps running: {always}");
}

#[test]
fn disable_during_state_run_skips_only_while_a_live_state_job_runs() {
    let p = proc_high();
    let cfg = ConfigDir::new(
        "staterun",
        &format!(
            "beacons:
  guarded:
    - beacon_module: memusage
    - percent: 0
    - disable_during_state_run: True
    - procfs: {p}
  unguarded:
    - beacon_module: memusage
    - percent: 0
    - procfs: {p}
",
            p = p.display()
        ),
    );
    let tags = |out: &Output| {
        let mut t: Vec<String> = out
            .events
            .iter()
            .filter_map(|e| e["tag"].as_str().map(str::to_owned))
            .collect();
        t.sort();
        t
    };
    // A live salt job running state.apply: the guarded beacon is skipped.
    let job = FakeSaltJob::start();
    write_job_file(
        &cfg.cachedir(),
        "20261122093000123456",
        "state.apply",
        job.pid(),
    );
    let out = once(cfg.path());
    assert_eq!(
        tags(&out),
        ["salt/beacon/staterun/unguarded/"],
        "{}",
        out.stderr
    );

    // A non-state job does not pause it.
    write_job_file(
        &cfg.cachedir(),
        "20261122093000123456",
        "test.ping",
        job.pid(),
    );
    assert_eq!(tags(&once(cfg.path())).len(), 2);

    // The job's process is gone: the job file is stale and the beacon runs again.
    write_job_file(
        &cfg.cachedir(),
        "20261122093000123456",
        "state.highstate",
        job.pid(),
    );
    assert_eq!(tags(&once(cfg.path())).len(), 1);
    drop(job);
    assert_eq!(
        tags(&once(cfg.path())),
        [
            "salt/beacon/staterun/guarded/",
            "salt/beacon/staterun/unguarded/"
        ]
    );
}

#[test]
fn yaml_syntax_error_names_file_line_column_and_other_files_still_run() {
    let p = proc_high();
    let cfg = ConfigDir::new("syntax", "")
        .dropin(
            "10-broken.conf",
            "beacons:\n  load:\n    - averages:\n        1m: [0.0, 2.0\n",
        )
        .dropin(
            "20-good.conf",
            &format!(
                "beacons:\n  memusage:\n    - percent: 0\n    - procfs: {}\n",
                p.display()
            ),
        );
    let out = once(cfg.path());
    assert_eq!(out.code, 0);
    let broken = cfg.path().join("minion.d/10-broken.conf");
    let expect = format!("{}:5:1: YAML syntax error", broken.display());
    assert!(out.stderr.contains(&expect), "{}", out.stderr);
    assert_eq!(out.tagged("salt/beacon/syntax/memusage/").len(), 1);

    let check = run(cfg.path(), &["--check"]);
    assert_eq!(check.code, 2);
    assert!(check.stderr.contains(&expect), "{}", check.stderr);
}

#[test]
fn bad_beacons_get_precise_errors_and_the_others_run() {
    let p = proc_high();
    let cfg = ConfigDir::new(
        "badcfg",
        &format!(
            "beacons:
  load:
    - averages:
        1m: [0.0]
  memusage:
    - interval: 5
  swapusage:
    - percent: lots
  telepathy:
    - range: 5
  diskusage:
    - '^/(unclosed': 90%
  ok:
    - beacon_module: memusage
    - percent: 0
    - procfs: {p}
  bad_interval:
    - beacon_module: memusage
    - percent: 0
    - interval: soon
",
            p = p.display()
        ),
    );
    let minion = cfg.path().join("minion").display().to_string();
    let out = run(cfg.path(), &["--check"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    for want in [
        format!("{minion}:6:13: beacon 'load': averages.1m must be a list of two numbers [low, high]"),
        format!("{minion}:7:3: beacon 'memusage': missing required option 'percent'"),
        format!("{minion}:10:16: beacon 'swapusage': percent must be a percentage such as 90% or 90, found the string 'lots'"),
        format!("{minion}:11:3: beacon 'telepathy': unknown beacon module 'telepathy'"),
        format!("{minion}:14:22: beacon 'diskusage': '^/(unclosed' is neither a mount point nor a valid regular expression"),
        format!("{minion}:22:17: beacon 'bad_interval': interval must be a number of seconds, found the string 'soon'"),
    ] {
        assert!(out.stderr.contains(&want), "missing {want:?} in:\n{}", out.stderr);
    }
    assert!(out.stderr.contains("6 problem(s) found"), "{}", out.stderr);

    // Running: each bad beacon is reported once and skipped; the valid one still fires.
    let out = once(cfg.path());
    assert_eq!(out.code, 0);
    let tags: Vec<&str> = out
        .events
        .iter()
        .filter_map(|e| e["tag"].as_str())
        .collect();
    assert_eq!(tags, ["salt/beacon/badcfg/ok/"]);
    assert_eq!(
        out.stderr
            .matches("unknown beacon module 'telepathy'")
            .count(),
        1
    );
}

#[test]
fn check_accepts_a_valid_config() {
    let cfg = ConfigDir::new(
        "valid",
        "beacons:\n  load:\n    - averages: {1m: [0, 2]}\n  memusage: [{percent: 90%}]\n",
    );
    let out = run(cfg.path(), &["--check"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn missing_config_dir_is_an_error() {
    let out = run(std::path::Path::new("/nonexistent/beacond"), &["--check"]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
}

#[test]
fn source_errors_become_salt_error_events() {
    let cfg = ConfigDir::new(
        "srcerr",
        "beacons:\n  memusage:\n    - percent: 0\n    - procfs: /nonexistent/proc\n",
    );
    let out = once(cfg.path());
    assert_eq!(out.code, 0);
    assert_eq!(out.events.len(), 1, "{:?}", out.events);
    let ev = &out.events[0];
    assert_eq!(ev["tag"], "salt/beacon/srcerr/memusage/");
    let err = ev["data"]["error"].as_str().expect("error key");
    assert!(err.contains("/nonexistent/proc/meminfo"), "{err}");
}

#[test]
fn pretty_prints_indented_json() {
    let cfg = ConfigDir::new(
        "pretty",
        &format!(
            "beacons:\n  memusage:\n    - percent: 0\n    - procfs: {}\n",
            proc_high().display()
        ),
    );
    let child = Command::new(bin())
        .arg("-c")
        .arg(cfg.path())
        .args(["--once", "--pretty"])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&child.stdout);
    assert!(
        text.starts_with("{\n  \"tag\": \"salt/beacon/pretty/memusage/\""),
        "{text}"
    );
    let v: Value = serde_json::from_str(&text).expect("one JSON document");
    assert_eq!(v["data"]["memusage"], 75.0);
}

#[test]
fn sighup_reload_keeps_unchanged_beacons_and_rejects_invalid_configs() {
    let p = proc_high();
    let base = format!(
        "beacons:\n  memusage:\n    - percent: 0\n    - interval: 0.1\n    - procfs: {}\n",
        p.display()
    );
    let cfg = ConfigDir::new("reload", &base);
    let agent = Agent::start(cfg.path(), &[]);
    agent.wait_for(Duration::from_secs(10), "memusage", |e| {
        e["tag"] == "salt/beacon/reload/memusage/"
    });
    // Add a beacon.
    std::fs::write(
        cfg.path().join("minion.d/swap.conf"),
        format!(
            "beacons:\n  swapusage:\n    - percent: 0\n    - interval: 0.1\n    - procfs: {}\n",
            p.display()
        ),
    )
    .expect("write drop-in");
    agent.signal(libc_sighup());
    agent.wait_for(Duration::from_secs(10), "swapusage after reload", |e| {
        e["tag"] == "salt/beacon/reload/swapusage/"
    });
    // minion.d replaced `beacons:` of the main file (Salt's merge), so memusage was removed.
    let log = wait_log(&agent, "reloaded configuration");
    assert!(
        log.contains("0 kept, 0 restarted, 1 added, 1 removed"),
        "{log}"
    );

    // An invalid config is rejected; the running beacons go on.
    std::fs::write(
        cfg.path().join("minion.d/zz.conf"),
        "beacons:\n  load: [{averages: 5}]\n",
    )
    .expect("write bad drop-in");
    agent.signal(libc_sighup());
    wait_log(&agent, "reload rejected");
    agent.wait_for(Duration::from_secs(10), "swapusage still running", |e| {
        e["tag"] == "salt/beacon/reload/swapusage/"
    });
}

fn libc_sighup() -> i32 {
    1
}

/// Wait until the agent's log contains `needle` (the log is read by a thread as it comes).
fn wait_log(agent: &Agent, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let log = agent.stderr();
        if log.contains(needle) {
            return log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {needle:?} in log:\n{log}"
        );
        // Drain events meanwhile so the agent never blocks on a full pipe.
        let _ = agent.next(Duration::from_millis(20));
    }
}

#[test]
fn resource_alerts_dropin_validates_and_fires() {
    let text = std::fs::read_to_string(repo().join("beacons/resource-alerts.conf"))
        .expect("beacons/resource-alerts.conf");
    let cfg = ConfigDir::new("alerts", "").dropin("resource-alerts.conf", &text);
    let check = run(cfg.path(), &["--check"]);
    assert_eq!(check.code, 0, "{}", check.stderr);
    assert!(check.stdout.contains("4 beacon(s)"), "{}", check.stdout);
    // The shipped thresholds rarely fire on a test machine: lower them so each beacon must.
    let hot = text
        .replace("90%", "0%")
        .replace("50%", "0%")
        .replace("95%", "0%");
    let cfg = ConfigDir::new("alerts", "").dropin("resource-alerts.conf", &hot);
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    for kind in ["memusage", "swapusage", "diskusage"] {
        let tag = format!("salt/beacon/alerts/{kind}/");
        assert!(!out.tagged(&tag).is_empty(), "no {tag}: {:?}", out.events);
    }
    assert!(out.tagged("salt/beacon/alerts/diskusage/").iter().all(|e| {
        let m = e["data"]["mount"].as_str().unwrap_or("");
        !m.starts_with("/proc") && !m.starts_with("/sys")
    }));
}
