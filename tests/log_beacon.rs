//! The `log` beacon against real files: Salt's first-run-at-end, new lines matched, no repeats
//! across runs (position persisted), rotation by rename + create and copytruncate followed by a
//! running agent through real inotify.
mod common;
#[path = "common/salt_python.rs"]
mod salt_python;
use common::beacond::*;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .expect("open log");
    f.write_all(text.as_bytes()).expect("append");
}

fn config(id: &str, log: &Path) -> ConfigDir {
    ConfigDir::new(
        id,
        &format!(
            "beacons:\n  log:\n    - file: {}\n    - tags:\n        sshd/fail:\n          regex: '.*Failed password for (\\w+) from (?P<ip>[0-9.]+)'\n        hello:\n          regex: hello\n",
            log.display()
        ),
    )
}

#[test]
fn once_starts_at_end_then_reports_each_new_line_once() {
    let tmp = TempDir::new("log1");
    let log = tmp.join("auth.log");
    append(&log, "hello before start\n");
    let cfg = config("log1", &log);

    // Salt's first run: seek to the end, report nothing.
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.events.is_empty(), "{:?}", out.events);

    append(
        &log,
        "noise\nsshd[1]: Failed password for root from 10.0.0.7 port 22\nhello world\nhello partial",
    );
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.events.len(), 2, "{:?}", out.events);
    let fail = &out.events[0];
    assert_eq!(fail["tag"], "salt/beacon/log1/log/sshd/fail");
    // Salt's keys (tag is popped into the event tag) plus groups/groupdict.
    assert_eq!(
        data_keys(fail),
        [
            "_stamp",
            "error",
            "groupdict",
            "groups",
            "id",
            "match",
            "raw"
        ]
    );
    assert_eq!(fail["data"]["match"], "yes");
    assert_eq!(fail["data"]["error"], "");
    assert_eq!(
        fail["data"]["raw"],
        "sshd[1]: Failed password for root from 10.0.0.7 port 22"
    );
    assert_eq!(
        fail["data"]["groups"],
        serde_json::json!(["root", "10.0.0.7"])
    );
    assert_eq!(fail["data"]["groupdict"]["ip"], "10.0.0.7");
    assert_eq!(out.events[1]["tag"], "salt/beacon/log1/log/hello");
    assert_eq!(out.events[1]["data"]["raw"], "hello world");

    // The incomplete last line is reported once it is complete, and nothing is repeated.
    append(&log, " now complete\n");
    let out = once(cfg.path());
    let raws: Vec<&Value> = out.events.iter().map(|e| &e["data"]["raw"]).collect();
    assert_eq!(raws, ["hello partial now complete"], "{:?}", out.events);
    let out = once(cfg.path());
    assert!(out.events.is_empty(), "{:?}", out.events);
}

fn raws_until(agent: &Agent, want: &[&str]) -> Vec<String> {
    let mut got: Vec<String> = Vec::new();
    while !want.iter().all(|w| got.iter().any(|g| g == w)) {
        let ev = agent.wait_for(Duration::from_secs(10), &format!("{want:?}"), |e| {
            e["tag"].as_str().is_some_and(|t| t.contains("/log/"))
        });
        got.push(ev["data"]["raw"].as_str().unwrap_or_default().to_owned());
    }
    got
}

#[test]
fn agent_follows_rotation_and_truncation_without_loss_or_repeats() {
    let tmp = TempDir::new("log2");
    let log = tmp.join("app.log");
    append(&log, "old content\n");
    let cfg = config("log2", &log);
    // Establish the position (end of file) so the agent resumes from it, whenever it starts.
    assert!(once(cfg.path()).events.is_empty());
    let agent = Agent::start(cfg.path(), &[]);

    append(&log, "hello 1\n");
    assert_eq!(raws_until(&agent, &["hello 1"]), ["hello 1"]);

    // logrotate's rename + create: the writer appends one more line to the renamed file
    // before reopening; the new file gets a long line.
    std::fs::rename(&log, tmp.join("app.log.1")).expect("rotate");
    append(
        &tmp.join("app.log.1"),
        "hello 2 (late write to the rotated file)\n",
    );
    append(
        &log,
        "hello 3 in the new file, long enough to be longer than what follows\n",
    );
    let got = raws_until(
        &agent,
        &[
            "hello 2 (late write to the rotated file)",
            "hello 3 in the new file, long enough to be longer than what follows",
        ],
    );
    assert_eq!(got.len(), 2, "{got:?}");

    // copytruncate: truncated to 0, then a shorter line.
    std::fs::File::create(&log).expect("truncate");
    append(&log, "hello 4\n");
    assert_eq!(raws_until(&agent, &["hello 4"]), ["hello 4"]);

    // Nothing repeated afterwards.
    let extra = agent.collect_for(Duration::from_millis(700));
    assert!(extra.is_empty(), "{extra:?}");
}

#[test]
fn bad_regex_is_a_precise_config_error() {
    let tmp = TempDir::new("log3");
    let cfg = ConfigDir::new("log3", "").dropin(
        "log.conf",
        &format!(
            "beacons:\n  log:\n    - file: {}\n    - tags:\n        x:\n          regex: 'a(b'\n",
            tmp.join("x.log").display()
        ),
    );
    let out = run(cfg.path(), &["--check"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("log.conf:6"), "{}", out.stderr);
    assert!(out.stderr.contains("beacon 'log'"), "{}", out.stderr);
    assert!(out.stderr.contains("tags.x.regex"), "{}", out.stderr);
}

#[test]
fn same_tag_and_keys_as_salts_python_beacon() {
    let Some(py) = salt_python::salt_python("3007") else {
        return;
    };
    let tmp = TempDir::new("log4");
    let log = tmp.join("app.log");
    append(&log, "");
    let cfg = ConfigDir::new(
        "log4",
        &format!(
            "beacons:\n  log:\n    - file: {}\n    - tags:\n        hello:\n          regex: '.*hello (\\d+)'\n",
            log.display()
        ),
    );
    // Salt's first run only seeks to the end and its second one (a loop interval later, with
    // --pace) reports what was appended in between: keep appending until it is done.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (done, log) = (done.clone(), log.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                append(&log, &format!("hello {i}\n"));
                i += 1;
                // Pacing a writer, not synchronising: the Python side is awaited below.
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let salt = salt_python::python_events_paced(&py, cfg.path(), 2);
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    writer.join().expect("writer");
    let salt_ev = salt
        .iter()
        .find(|e| e["tag"] == "salt/beacon/log4/log/hello")
        .unwrap_or_else(|| panic!("no Salt event: {salt:?}"));

    let cfg2 = ConfigDir::new(
        "log4",
        &format!(
            "beacons:\n  log:\n    - file: {}\n    - tags:\n        hello:\n          regex: '.*hello (\\d+)'\n",
            log.display()
        ),
    );
    assert!(once(cfg2.path()).events.is_empty());
    append(&log, "hello again\nhello 7\n");
    let ours = once(cfg2.path()).events;
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(ours[0]["tag"], salt_ev["tag"]);
    salt_python::assert_superset(&ours[0]["data"], &salt_ev["data"], "log event");
    assert_eq!(ours[0]["data"]["raw"], "hello 7");
}

#[test]
fn rotation_while_down_finishes_the_old_file_or_reports_the_loss() {
    let tmp = TempDir::new("log5");
    let log = tmp.join("app.log");
    append(&log, "start\n");
    let cfg = config("log5", &log);
    assert!(once(cfg.path()).events.is_empty());

    // Down: lines appended, rotated (rename + create), more lines in both files.
    append(&log, "hello a\n");
    std::fs::rename(&log, tmp.join("app.log.1")).expect("rotate");
    append(&tmp.join("app.log.1"), "hello b\n");
    append(&log, "hello c\n");
    let out = once(cfg.path());
    let raws: Vec<&str> = out
        .events
        .iter()
        .filter_map(|e| e["data"]["raw"].as_str())
        .collect();
    assert_eq!(raws, ["hello a", "hello b", "hello c"], "{:?}", out.events);

    // Down again: rotated and the old file deleted (compressed away) — the loss is reported.
    append(&log, "hello d\n");
    std::fs::rename(&log, tmp.join("app.log.2")).expect("rotate");
    append(&log, "hello e\n");
    // Deleted after the new file exists, so its inode number cannot be reused by it.
    std::fs::remove_file(tmp.join("app.log.2")).expect("delete");
    let out = once(cfg.path());
    assert_eq!(out.events.len(), 2, "{:?}", out.events);
    assert_eq!(out.events[0]["tag"], "salt/beacon/log5/log/global");
    assert!(
        out.events[0]["data"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("were not read")),
        "{:?}",
        out.events[0]
    );
    assert_eq!(out.events[1]["data"]["raw"], "hello e");
}
