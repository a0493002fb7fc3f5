//! `btmp` and `wtmp` on real binary utmp files built with util-linux's `utmpdump -r`: appends,
//! rotation (rename + new file), truncation and restarts, each record reported exactly once;
//! Salt's filters and time ranges; Salt's keys and values.
mod common;
use common::beacond::*;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// One utmpdump text line: type, pid, line, id, user, host, address, ISO time.
fn line(
    ut_type: u8,
    pid: u32,
    tty: &str,
    user: &str,
    host: &str,
    addr: &str,
    time: &str,
) -> String {
    format!("[{ut_type}] [{pid:05}] [{:<4}] [{user:<8}] [{tty:<12}] [{host:<20}] [{addr:<15}] [{time}]\n", "ts/0")
}

/// Binary records from utmpdump text, via the real `utmpdump -r`.
fn records(text: &str) -> Vec<u8> {
    let mut child = Command::new("utmpdump")
        .arg("-r")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("utmpdump (util-linux) must be installed");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed utmpdump");
    let out = child.wait_with_output().expect("utmpdump");
    assert!(out.status.success(), "utmpdump -r failed");
    assert_eq!(out.stdout.len() % 384, 0, "utmpdump wrote partial records");
    out.stdout
}

/// A failed-login (btmp) record for `user` at a fixed time.
fn failed(user: &str) -> Vec<u8> {
    records(&line(
        6,
        4242,
        "ssh:notty",
        user,
        "10.9.8.7",
        "10.9.8.7",
        "2024-05-01T09:15:00,000000+00:00",
    ))
}

fn append(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for append");
    f.write_all(bytes).expect("append");
}

fn users(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["data"]["user"].as_str().unwrap_or("?").to_owned())
        .collect()
}

fn wait_user(agent: &Agent, user: &str) -> Value {
    agent.wait_for(WAIT, &format!("for user {user}"), |e| {
        e["data"]["user"] == user
    })
}

#[test]
fn btmp_each_record_once_across_appends_rotation_truncation_and_restarts() {
    let logs = TempDir::new("btmp-logs");
    let file = logs.join("btmp");
    std::fs::write(&file, [failed("old1"), failed("old2")].concat()).expect("seed file");
    let cfg = ConfigDir::new(
        "btmp1",
        &format!("beacons:\n  btmp:\n    - file: {}\n", file.display()),
    );

    // First run ever: Salt starts at the end of the file; beacond too, and remembers it.
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.events.is_empty(),
        "old records reported: {:?}",
        out.events
    );

    let mut seen = Vec::new();
    {
        let agent = Agent::start(cfg.path(), &[]);
        append(&file, &failed("a1"));
        seen.push(wait_user(&agent, "a1"));
        append(&file, &[failed("a2"), failed("a3")].concat());
        seen.push(wait_user(&agent, "a2"));
        seen.push(wait_user(&agent, "a3"));

        // Rotation: the old file is renamed, a late writer still appends to it, a new file
        // starts at the path.
        std::fs::rename(&file, logs.join("btmp.1")).expect("rotate");
        append(&logs.join("btmp.1"), &failed("late-old"));
        append(&file, &failed("new1"));
        seen.push(wait_user(&agent, "late-old"));
        seen.push(wait_user(&agent, "new1"));

        // Truncation in place, then a new record: the new record is reported, nothing repeated.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .expect("open")
            .set_len(0)
            .expect("truncate");
        append(&file, &failed("after-trunc"));
        seen.push(wait_user(&agent, "after-trunc"));
        seen.extend(agent.collect_for(Duration::from_millis(500)));
    }

    // Written while beacond was stopped: reported at the next start.
    append(&file, &failed("while-stopped"));
    {
        let agent = Agent::start(cfg.path(), &[]);
        seen.push(wait_user(&agent, "while-stopped"));
        seen.extend(agent.collect_for(Duration::from_millis(500)));
    }

    // Rotated while stopped: the rest of the old file, then the new one.
    append(&file, &failed("before-rotate"));
    std::fs::rename(&file, logs.join("btmp.1")).expect("rotate while stopped");
    append(&file, &failed("in-new-file"));
    {
        let agent = Agent::start(cfg.path(), &[]);
        seen.push(wait_user(&agent, "before-rotate"));
        seen.push(wait_user(&agent, "in-new-file"));
        seen.extend(agent.collect_for(Duration::from_millis(500)));
    }

    assert_eq!(
        users(&seen),
        [
            "a1",
            "a2",
            "a3",
            "late-old",
            "new1",
            "after-trunc",
            "while-stopped",
            "before-rotate",
            "in-new-file"
        ],
        "every record exactly once, in order"
    );
    for e in &seen {
        assert_eq!(e["tag"], "salt/beacon/btmp1/btmp/");
    }
}

#[test]
fn btmp_empty_file_at_start_does_not_swallow_the_first_record() {
    let logs = TempDir::new("btmp-empty");
    let file = logs.join("btmp");
    std::fs::write(&file, b"").expect("empty file");
    let cfg = ConfigDir::new(
        "btmp2",
        &format!("beacons:\n  btmp:\n    - file: {}\n", file.display()),
    );
    // First start on an empty file: the position is its end, offset 0 (Salt keeps "no
    // position" and "offset 0" apart by neither, and swallows the first record).
    assert!(once(cfg.path()).events.is_empty());
    let agent = Agent::start(cfg.path(), &[]);
    append(&file, &failed("first"));
    let ev = wait_user(&agent, "first");
    assert_eq!(ev["tag"], "salt/beacon/btmp2/btmp/");
}

#[test]
fn btmp_keys_and_values_are_salts() {
    let logs = TempDir::new("btmp-keys");
    let file = logs.join("btmp");
    std::fs::write(&file, b"").expect("empty file");
    let cfg = ConfigDir::new(
        "btmp3",
        &format!("beacons:\n  btmp:\n    - file: {}\n", file.display()),
    );
    assert!(once(cfg.path()).events.is_empty());
    append(&file, &failed("mallory"));
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.events.len(), 1, "{:?}", out.events);
    let ev = &out.events[0];
    let keys = data_keys(ev);
    for k in [
        "PID",
        "addr",
        "exit_status",
        "hostname",
        "inittab",
        "line",
        "session",
        "time",
        "type",
        "user",
    ] {
        assert!(
            keys.contains(&k.to_owned()),
            "missing Salt key {k}: {keys:?}"
        );
    }
    let d = &ev["data"];
    assert_eq!(d["type"], 6);
    assert_eq!(d["PID"], 4242);
    assert_eq!(d["line"], "ssh:notty");
    assert_eq!(d["inittab"], "ts/0");
    assert_eq!(d["user"], "mallory");
    assert_eq!(d["hostname"], "10.9.8.7");
    // Salt's struct unpacking puts tv_sec under `addr` and ut_session under `time`.
    assert_eq!(d["addr"], 1_714_554_900);
    assert_eq!(d["time"], 0);
    assert_eq!(d["tv_sec"], 1_714_554_900);
    assert_eq!(d["timestamp"], "2024-05-01T09:15:00Z");
    assert_eq!(d["ip"], "10.9.8.7");
    // Nothing new: nothing reported again.
    assert!(once(cfg.path()).events.is_empty());
}

#[test]
fn wtmp_login_logout_users_groups_and_time_ranges() {
    // time_range is local time, as Salt's; pin the agent's time zone.
    std::env::set_var("TZ", "UTC");
    let logs = TempDir::new("wtmp-filters");
    let file = logs.join("wtmp");
    let groups = logs.join("group");
    std::fs::write(&groups, "root:x:0:\nops:x:900:carol,dave\n").expect("group file");
    std::fs::write(&file, b"").expect("empty wtmp");
    let cfg = ConfigDir::new(
        "wtmp1",
        &format!(
            "beacons:\n  wtmp:\n    - file: {}\n    - group_file: {}\n    - users:\n        alice: {{}}\n        erin:\n          time_range:\n            start: '6pm'\n            end: '11pm'\n    - groups:\n        ops: {{}}\n    - defaults:\n        time_range:\n          start: '8am'\n          end: '4pm'\n",
            file.display(),
            groups.display()
        ),
    );
    assert!(once(cfg.path()).events.is_empty());
    let morning = "2024-05-01T09:15:00,000000+00:00";
    let evening = "2024-05-01T20:00:00,000000+00:00";
    let text = [
        line(7, 100, "pts/1", "alice", "h1", "10.0.0.1", morning), // in (default range)
        line(8, 100, "pts/1", "", "", "0.0.0.0", morning),         // alice's logout
        line(7, 101, "pts/2", "bob", "h2", "10.0.0.2", morning),   // not a configured user
        line(7, 102, "pts/3", "carol", "h3", "10.0.0.3", morning), // via group ops
        line(7, 103, "pts/4", "alice", "h1", "10.0.0.1", evening), // out of default range
        line(7, 104, "pts/5", "erin", "h5", "10.0.0.5", evening),  // own range 6pm-11pm
        line(7, 105, "pts/6", "erin", "h5", "10.0.0.5", morning),  // out of her range
    ]
    .concat();
    append(&file, &records(&text));
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got: Vec<(String, String, i64)> = out
        .events
        .iter()
        .map(|e| {
            (
                e["data"]["user"].as_str().unwrap_or("").to_owned(),
                e["data"]["action"].as_str().unwrap_or("").to_owned(),
                e["data"]["PID"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("alice".into(), "login".into(), 100),
            ("alice".into(), "logout".into(), 100),
            ("carol".into(), "login".into(), 102),
            ("erin".into(), "login".into(), 104),
        ]
    );
    for e in &out.events {
        assert_eq!(e["tag"], "salt/beacon/wtmp1/wtmp/");
    }
    assert_eq!(out.events[1]["data"]["type"], 8);
}

#[test]
fn bad_time_range_is_a_precise_config_error() {
    let cfg = ConfigDir::new("wtmp2", "").dropin(
        "bad.conf",
        "beacons:\n  wtmp:\n    - users:\n        alice:\n          time_range:\n            start: 'teatime'\n            end: '4pm'\n",
    );
    let out = run(cfg.path(), &["--check"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("bad.conf:6"), "{}", out.stderr);
    assert!(
        out.stderr.contains("users.alice.time_range.start"),
        "{}",
        out.stderr
    );
}

#[test]
fn login_audit_dropin_runs_on_fixture_files() {
    let shipped =
        std::fs::read_to_string(repo().join("beacons/login-audit.conf")).expect("drop-in");
    // As shipped it validates.
    let cfg = ConfigDir::new("la0", "").dropin("login-audit.conf", &shipped);
    let out = Command::new(bin())
        .arg("-c")
        .arg(cfg.path())
        .arg("--check")
        .output()
        .expect("beacond --check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 beacon(s)"));

    // With its paths pointed at fixtures, it reports a failed login and a login.
    let logs = TempDir::new("login-audit");
    std::fs::write(logs.join("btmp"), b"").expect("btmp");
    std::fs::write(logs.join("wtmp"), b"").expect("wtmp");
    let text = shipped
        .replace("/var/log/btmp", &logs.join("btmp").display().to_string())
        .replace("/var/log/wtmp", &logs.join("wtmp").display().to_string());
    assert_ne!(text, shipped, "the drop-in names its files");
    let cfg = ConfigDir::new("la1", "").dropin("login-audit.conf", &text);
    assert!(
        once(cfg.path()).events.is_empty(),
        "positions at the end of each file"
    );
    let agent = Agent::start(cfg.path(), &[]);
    append(&logs.join("btmp"), &failed("intruder"));
    append(
        &logs.join("wtmp"),
        &records(&line(
            7,
            77,
            "pts/9",
            "admin",
            "h",
            "10.0.0.9",
            "2024-05-01T09:15:00,000000+00:00",
        )),
    );
    // The two beacons run side by side: their events may come in either order.
    let (mut b, mut w) = (None, None);
    while b.is_none() || w.is_none() {
        let e = agent.wait_for(WAIT, "btmp and wtmp events", |e| {
            e["tag"] == "salt/beacon/la1/btmp/" || e["tag"] == "salt/beacon/la1/wtmp/"
        });
        if e["tag"] == "salt/beacon/la1/btmp/" {
            b = Some(e);
        } else {
            w = Some(e);
        }
    }
    let (b, w) = (b.unwrap_or_default(), w.unwrap_or_default());
    assert_eq!(b["data"]["user"], "intruder");
    assert_eq!(w["data"]["action"], "login");
    assert_eq!(w["data"]["user"], "admin");
}
