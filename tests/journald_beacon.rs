//! The `journald` beacon against real journal files written by systemd's own
//! `systemd-journal-remote` (apt `systemd-journal-remote`; it writes journal export format from
//! stdin into a real journal file, compact mode with zstd-compressed large fields, exactly as
//! journald does). No journald runs on CI machines, so the files are produced this way.
//! Conformance with Salt's own journald beacon on such files is in
//! `tests/salt_conformance_network_journald.rs`.
mod common;
use common::beacond::*;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const REMOTE: &str = "/lib/systemd/systemd-journal-remote";

/// Append entries (field lists) to a journal file with systemd-journal-remote.
fn write_entries(journal: &Path, entries: &[Vec<(&str, String)>]) {
    assert!(
        Path::new(REMOTE).exists(),
        "{REMOTE} missing: apt-get install systemd-journal-remote"
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_micros();
    let mut export = String::new();
    for (i, fields) in entries.iter().enumerate() {
        export.push_str(&format!(
            "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n",
            now + i as u128,
            1000 + i
        ));
        for (k, v) in fields {
            export.push_str(&format!("{k}={v}\n"));
        }
        export.push('\n');
    }
    let mut child = Command::new(REMOTE)
        .arg(format!("--output={}", journal.display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-journal-remote");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(export.as_bytes())
        .expect("write export");
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn ssh(msg: &str, prio: u8) -> Vec<(&'static str, String)> {
    vec![
        ("SYSLOG_IDENTIFIER", "sshd".into()),
        ("PRIORITY", prio.to_string()),
        ("_PID", "4242".into()),
        ("MESSAGE", msg.into()),
    ]
}

fn config(id: &str, dir: &Path) -> ConfigDir {
    ConfigDir::new(
        id,
        &format!(
            "beacons:\n  journald:\n    - paths: [{}]\n    - services:\n        sshd:\n          SYSLOG_IDENTIFIER: sshd\n          PRIORITY: 6\n        kernel:\n          SYSLOG_IDENTIFIER: kernel\n",
            dir.display()
        ),
    )
}

/// `journalctl --file F -o export`'s cursor of the entry whose MESSAGE is `msg`.
fn journalctl_cursor(file: &Path, msg: &str) -> Option<String> {
    let out = Command::new("journalctl")
        .arg("--file")
        .arg(file)
        .args(["-o", "export"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split("\n\n")
        .find(|e| e.lines().any(|l| l == format!("MESSAGE={msg}")))
        .and_then(|e| e.lines().find_map(|l| l.strip_prefix("__CURSOR=")))
        .map(str::to_owned)
}

#[test]
fn new_matching_entries_once_each_with_salts_shape() {
    let tmp = TempDir::new("jd1");
    let journal = tmp.join("remote.journal");
    write_entries(&journal, &[ssh("before start", 6)]);
    let cfg = config("jd1", tmp.path());
    // Salt seeks to the tail first: nothing.
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.events.is_empty(), "{:?}", out.events);

    let big = "k".repeat(4000); // above journald's compression threshold: zstd DATA object
    write_entries(
        &journal,
        &[
            ssh("Accepted publickey for root", 6),
            ssh("error: not matched (priority 3)", 3),
            vec![
                ("SYSLOG_IDENTIFIER", "kernel".into()),
                ("MESSAGE", big.clone()),
            ],
            vec![
                ("SYSLOG_IDENTIFIER", "cron".into()),
                ("MESSAGE", "x".into()),
            ],
        ],
    );
    let raw = std::fs::read(&journal).expect("journal");
    assert!(
        !raw.windows(1000).any(|w| w.iter().all(|&b| b == b'k')),
        "the big field should be stored compressed"
    );
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    let tags: Vec<&str> = out
        .events
        .iter()
        .filter_map(|e| e["tag"].as_str())
        .collect();
    assert_eq!(
        tags,
        [
            "salt/beacon/jd1/journald/sshd",
            "salt/beacon/jd1/journald/kernel"
        ]
    );
    let ev = &out.events[0];
    // The entry's own fields plus python-systemd's __CURSOR and timestamps (Salt's shape).
    assert_eq!(
        data_keys(ev),
        [
            "MESSAGE",
            "PRIORITY",
            "SYSLOG_IDENTIFIER",
            "_BOOT_ID",
            "_PID",
            "__CURSOR",
            "__MONOTONIC_TIMESTAMP",
            "__REALTIME_TIMESTAMP",
            "_stamp",
            "id"
        ]
    );
    assert_eq!(ev["data"]["MESSAGE"], "Accepted publickey for root");
    assert_eq!(ev["data"]["PRIORITY"], 6);
    assert_eq!(ev["data"]["_PID"], 4242);
    for k in [
        "__CURSOR",
        "__REALTIME_TIMESTAMP",
        "__MONOTONIC_TIMESTAMP",
        "MESSAGE",
        "id",
    ] {
        assert!(ev["data"].get(k).is_some(), "{k} missing");
    }
    assert_eq!(
        ev["data"]["__CURSOR"].as_str(),
        journalctl_cursor(&journal, "Accepted publickey for root").as_deref()
    );
    assert_eq!(out.events[1]["data"]["MESSAGE"], Value::from(big));

    // Position persisted: nothing repeats.
    let out = once(cfg.path());
    assert!(out.events.is_empty(), "{:?}", out.events);
}

#[test]
fn agent_follows_appends_and_new_files_through_inotify() {
    let tmp = TempDir::new("jd2");
    let journal = tmp.join("remote.journal");
    write_entries(&journal, &[ssh("old", 6)]);
    let cfg = config("jd2", tmp.path());
    assert!(once(cfg.path()).events.is_empty());
    let agent = Agent::start(cfg.path(), &[]);
    let t = Duration::from_secs(10);
    let msg = |m: &'static str| move |e: &Value| e["data"]["MESSAGE"] == m;

    write_entries(&journal, &[ssh("live 1", 6)]);
    agent.wait_for(t, "live 1", msg("live 1"));

    // A new file in a machine-id directory (as journald creates after rotation or a boot).
    let sub = tmp.join("0123456789abcdef0123456789abcdef");
    std::fs::create_dir_all(&sub).expect("machine dir");
    write_entries(&sub.join("system.journal"), &[ssh("new file", 6)]);
    agent.wait_for(t, "new file", msg("new file"));

    write_entries(&journal, &[ssh("live 2", 6)]);
    agent.wait_for(t, "live 2", msg("live 2"));
    let extra = agent.collect_for(Duration::from_millis(500));
    assert!(extra.is_empty(), "{extra:?}");
}

#[test]
fn entries_written_while_down_are_reported_after_restart() {
    let tmp = TempDir::new("jd3");
    let journal = tmp.join("remote.journal");
    write_entries(&journal, &[ssh("old", 6)]);
    let cfg = config("jd3", tmp.path());
    {
        let agent = Agent::start(cfg.path(), &[]);
        write_entries(&journal, &[ssh("while up", 6)]);
        agent.wait_for(Duration::from_secs(10), "while up", |e| {
            e["data"]["MESSAGE"] == "while up"
        });
    }
    write_entries(&journal, &[ssh("while down", 6)]);
    let agent = Agent::start(cfg.path(), &[]);
    let ev = agent.wait_for(Duration::from_secs(10), "while down", |e| {
        e["tag"].as_str().is_some_and(|t| t.contains("/journald/"))
    });
    assert_eq!(ev["data"]["MESSAGE"], "while down");
}

#[test]
fn missing_journal_directory_is_an_error_event_not_silence() {
    let tmp = TempDir::new("jd4");
    let cfg = config("jd4", &tmp.join("nothing-here"));
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.events.len(), 1, "{:?}", out.events);
    assert_eq!(out.events[0]["tag"], "salt/beacon/jd4/journald/");
    let err = out.events[0]["data"]["error"].as_str().unwrap_or_default();
    assert!(err.contains("no journal directory"), "{err}");
}

#[test]
fn catching_up_on_thousands_of_entries_is_exact() {
    let tmp = TempDir::new("jd5");
    let journal = tmp.join("remote.journal");
    let batch = |tag: &str| -> Vec<Vec<(&'static str, String)>> {
        (0..4000)
            .map(|i| {
                let who = if i % 100 == 0 { "sshd" } else { "cron" };
                vec![
                    ("SYSLOG_IDENTIFIER", who.to_owned()),
                    ("PRIORITY", "6".to_owned()),
                    ("_PID", i.to_string()),
                    ("MESSAGE", format!("{tag} {i}")),
                ]
            })
            .collect()
    };
    write_entries(&journal, &batch("old"));
    let cfg = config("jd5", tmp.path());
    assert!(once(cfg.path()).events.is_empty());
    write_entries(&journal, &batch("new"));
    let out = once(cfg.path());
    let msgs: Vec<&str> = out
        .events
        .iter()
        .filter_map(|e| e["data"]["MESSAGE"].as_str())
        .collect();
    let want: Vec<String> = (0..40).map(|i| format!("new {}", i * 100)).collect();
    assert_eq!(msgs, want);
}

/// Patch `len` little-endian bytes at `at` of a journal file (a crafted or corrupt file).
fn patch(journal: &Path, at: usize, value: u64, len: usize) {
    let mut b = std::fs::read(journal).expect("journal");
    b[at..at + len].copy_from_slice(&value.to_le_bytes()[..len]);
    std::fs::write(journal, b).expect("patched journal");
}

fn read_le64(journal: &Path, at: usize) -> u64 {
    let b = std::fs::read(journal).expect("journal");
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[test]
fn unknown_incompatible_header_flags_are_refused_clearly() {
    let tmp = TempDir::new("jd6");
    let journal = tmp.join("remote.journal");
    write_entries(&journal, &[ssh("before", 6)]);
    let cfg = config("jd6", tmp.path());
    assert!(once(cfg.path()).events.is_empty());
    write_entries(&journal, &[ssh("after", 6)]);
    // incompatible_flags (le32 at 12): a bit no systemd this reader knows sets.
    let flags = read_le64(&journal, 8) >> 32;
    patch(&journal, 12, flags | 0x8000_0000, 4);
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.events.is_empty(),
        "read a file it cannot know: {:?}",
        out.events
    );
    assert!(
        out.stderr.contains("incompatible header flags 0x80000000"),
        "{}",
        out.stderr
    );
}

#[test]
fn an_entry_array_cycle_ends_the_read_with_a_warning() {
    let tmp = TempDir::new("jd7");
    let journal = tmp.join("remote.journal");
    // journald's first entry array holds 4 items: 6 entries fill it and start a second one,
    // so the reader leaves the first array through its next pointer (the patched one).
    let before: Vec<_> = (0..6).map(|i| ssh(&format!("before {i}"), 6)).collect();
    write_entries(&journal, &before);
    let cfg = config("jd7", tmp.path());
    assert!(once(cfg.path()).events.is_empty());
    write_entries(&journal, &[ssh("after", 6)]);
    // The first entry array's next_entry_array_offset (at +16) points at itself.
    let first = read_le64(&journal, 176) as usize;
    assert!(first > 0);
    patch(&journal, first + 16, first as u64, 8);
    // Bounded: `run` fails the test if beacond does not exit within 60 s.
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("entry-array chain goes back"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_catch_up_is_spread_over_evaluations() {
    let tmp = TempDir::new("jd8");
    let journal = tmp.join("remote.journal");
    write_entries(&journal, &[ssh("old", 6)]);
    let cfg = ConfigDir::new(
        "jd8",
        &format!(
            "beacons:\n  journald:\n    - paths: [{}]\n    - entries_per_evaluation: 100\n    - services:\n        sshd:\n          SYSLOG_IDENTIFIER: sshd\n",
            tmp.path().display()
        ),
    );
    assert!(once(cfg.path()).events.is_empty());
    let batch: Vec<_> = (0..350).map(|i| ssh(&format!("down {i}"), 6)).collect();
    write_entries(&journal, &batch);
    // One --once evaluation reads one budget's worth (entries already seen count too).
    let out = once(cfg.path());
    let first = out.events.len();
    assert!(
        (90..=100).contains(&first),
        "{first} events\n{}",
        out.stderr
    );
    // The agent goes on where that stopped, evaluation after evaluation, without new writes.
    let agent = Agent::start(cfg.path(), &["-v"]);
    let mut got = Vec::new();
    while got.len() < 350 - first {
        let e = agent.wait_for(Duration::from_secs(20), "the rest of the catch-up", |e| {
            e["tag"]
                .as_str()
                .is_some_and(|t| t.ends_with("/journald/sshd"))
        });
        got.push(e["data"]["MESSAGE"].as_str().unwrap_or_default().to_owned());
    }
    let want: Vec<String> = (first..350).map(|i| format!("down {i}")).collect();
    assert_eq!(got, want);
    assert!(
        agent.stderr().contains("entries_per_evaluation reached"),
        "{}",
        agent.stderr()
    );
}
