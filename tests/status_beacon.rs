//! The `status` beacon: exact values from a /proc fixture (a copy of a real /proc with a known
//! loadavg), and the same tag and key shapes as Salt's own Python beacon on this host's real /proc.
mod common;
#[path = "common/salt_python.rs"]
mod salt_python;
use common::beacond::*;
use serde_json::Value;

fn fixture() -> String {
    repo().join("tests/fixtures/proc").display().to_string()
}

#[test]
fn default_functions_from_a_proc_fixture() {
    let cfg = ConfigDir::new(
        "st1",
        &format!("beacons:\n  status:\n    - procfs: {}\n", fixture()),
    );
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.events.len(), 1, "{:?}", out.events);
    let ev = &out.events[0];
    let tag = ev["tag"].as_str().unwrap_or_default();
    let stamp = tag
        .strip_prefix("salt/beacon/st1/status/")
        .expect("status tag");
    assert!(stamp.len() >= 19 && stamp.as_bytes()[10] == b'T', "{tag}");
    assert_eq!(data_keys(ev), ["_stamp", "data", "id"]);
    let d = &ev["data"]["data"];
    assert_eq!(
        salt_python::keys(d),
        ["cpustats", "loadavg", "meminfo", "time", "vmstats"]
    );
    assert_eq!(
        d["loadavg"],
        serde_json::json!({"1-min": 0.42, "5-min": 1.5, "15-min": 2.0})
    );
    let stat = std::fs::read_to_string(repo().join("tests/fixtures/proc/stat")).expect("stat");
    let user: u64 = stat
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("user");
    assert_eq!(d["cpustats"]["cpu"]["user"], user);
    assert!(d["cpustats"]["intr"]["irqs"].is_array());
    assert!(d["meminfo"]["MemTotal"]["value"].is_string());
    assert_eq!(d["meminfo"]["MemTotal"]["unit"], "kB");
    assert!(d["vmstats"]["nr_free_pages"].is_u64());
    assert!(
        d["time"].as_str().is_some_and(|t| t.contains(", ")),
        "{}",
        d["time"]
    );
}

#[test]
fn selected_items_and_salts_misconfiguration_message() {
    let cfg = ConfigDir::new(
        "st2",
        &format!(
            "beacons:\n  status:\n    - procfs: {}\n    - loadavg: ['1-min']\n    - meminfo: [MemTotal, Bogus]\n    - uptime: all\n",
            fixture()
        ),
    );
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    let d = &out.events[0]["data"]["data"];
    assert_eq!(d["loadavg"], serde_json::json!({"1-min": 0.42}));
    assert_eq!(
        d["meminfo"],
        "Status beacon is incorrectly configured: 'Bogus'"
    );
    assert_eq!(
        salt_python::keys(&d["uptime"]),
        ["days", "seconds", "since_iso", "since_t", "time"]
    );
}

#[test]
fn unknown_function_is_a_config_error() {
    let cfg = ConfigDir::new("st3", "beacons:\n  status:\n    - loadavgs: [all]\n");
    let out = run(cfg.path(), &["--check"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains(
            "minion:5:7: beacon 'status': unknown option 'loadavgs' (did you mean 'loadavg'?"
        ),
        "{}",
        out.stderr
    );
}

#[test]
fn same_tag_and_shapes_as_salts_python_beacon_on_real_proc() {
    for series in ["3006", "3007", "3008"] {
        conformance(series);
    }
}

fn conformance(series: &str) {
    let Some(py) = salt_python::salt_python(series) else {
        return;
    };
    let cfg = ConfigDir::new(
        "st4",
        "beacons:\n  status:\n    - loadavg: [all]\n    - cpustats: [all]\n    - meminfo: [all]\n    - vmstats: [all]\n    - time: [all]\n    - uptime: [all]\n    - nproc: [all]\n    - netdev: [all]\n",
    );
    let salt = salt_python::python_events(&py, cfg.path(), 1, true);
    let ours = once(cfg.path()).events;
    assert_eq!((salt.len(), ours.len()), (1, 1), "{salt:?} {ours:?}");
    let prefix = |e: &Value| {
        e["tag"]
            .as_str()
            .unwrap_or("")
            .rsplit_once('/')
            .map(|(p, _)| p.to_owned())
    };
    assert_eq!(prefix(&ours[0]), prefix(&salt[0]));
    salt_python::assert_superset(&ours[0]["data"], &salt[0]["data"], "event data");
    let (a, b) = (&ours[0]["data"]["data"], &salt[0]["data"]["data"]);
    assert_eq!(salt_python::keys(a), salt_python::keys(b));
    for f in ["loadavg", "cpustats", "meminfo", "vmstats", "netdev"] {
        assert_eq!(salt_python::keys(&a[f]), salt_python::keys(&b[f]), "{f}");
    }
    assert_eq!(
        salt_python::keys(&a["cpustats"]["cpu"]),
        salt_python::keys(&b["cpustats"]["cpu"])
    );
    assert_eq!(
        salt_python::keys(&a["meminfo"]["MemTotal"]),
        salt_python::keys(&b["meminfo"]["MemTotal"])
    );
    // Salt adds `users` from `who -s`; beacond does not run commands.
    let mut salt_uptime = salt_python::keys(&b["uptime"]);
    salt_uptime.retain(|k| k != "users");
    assert_eq!(salt_python::keys(&a["uptime"]), salt_uptime);
    assert_eq!(a["nproc"], b["nproc"]);
    assert!(a["time"].is_string() && b["time"].is_string());
}
