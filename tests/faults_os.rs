//! Fault suite, OS input: garbage kernel/file data gives an error event or is skipped and
//! counted, never a hang, a crash, a blocked agent, unbounded memory or a secret in an event.

mod common;
use common::beacond::{Agent, ConfigDir, TempDir};
use common::bounded::{beacond, figure, vm_hwm_kb};
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(30);

fn append(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open for append");
    f.write_all(bytes).expect("append");
}

/// Pseudo-random bytes (xorshift), so a failure is reproducible.
fn garbage(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn log_agent(id: &str, log: &Path) -> (ConfigDir, Agent) {
    let cfg = ConfigDir::new(
        id,
        &format!(
            "beacons:\n  log:\n    - file: {}\n    - tags:\n        hello:\n          regex: 'hello (\\d+)'\n",
            log.display()
        ),
    );
    let agent = Agent::start(cfg.path(), &[]);
    (cfg, agent)
}

/// Append `hello N` until the agent reports one (its watch may not be in place at first).
fn probe_log(agent: &Agent, log: &Path, from: u32) -> u32 {
    for n in from..from + 100 {
        append(log, format!("hello {n}\n").as_bytes());
        if let Some(ev) = (0..50)
            .filter_map(|_| agent.next(Duration::from_millis(100)))
            .find(|e| {
                e["data"]["raw"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("hello"))
            })
        {
            return ev["data"]["raw"]
                .as_str()
                .and_then(|r| r[6..].parse().ok())
                .unwrap_or(n);
        }
    }
    panic!("log beacon never reported; stderr:\n{}", agent.stderr());
}

#[test]
fn a_100_mb_log_line_without_newline_is_skipped_and_reported() {
    let tmp = TempDir::new("longline");
    let log = tmp.join("app.log");
    std::fs::write(&log, b"").expect("log");
    let (_cfg, agent) = log_agent("longline", &log);
    probe_log(&agent, &log, 1);
    let t = Instant::now();
    {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("open");
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..100 {
            f.write_all(&chunk).expect("write");
        }
        f.write_all(b" hello 999 tail of the long line\nhello 1000\n")
            .expect("write");
    }
    let notice = agent.wait_for(WAIT, "the skipped-line notice", |e| {
        e["data"]["error"]
            .as_str()
            .is_some_and(|m| m.contains("longer than 16 MiB skipped"))
    });
    assert!(
        notice["tag"]
            .as_str()
            .is_some_and(|t| t.ends_with("/log/global")),
        "{notice}"
    );
    let next = agent.wait_for(WAIT, "the line after the long one", |e| {
        e["data"]["raw"]
            .as_str()
            .is_some_and(|r| r.starts_with("hello"))
    });
    // The tail of the over-long line is part of it: dropped, not reported as a line.
    assert_eq!(next["data"]["raw"], "hello 1000", "{next}");
    let rss = vm_hwm_kb(agent.pid());
    figure("os 100 MB log line", rss, t.elapsed());
    assert!(rss < 128 << 10, "peak RSS {rss} KiB");
}

#[test]
fn a_binary_file_as_a_log_does_not_stop_the_beacon() {
    let tmp = TempDir::new("binlog");
    let log = tmp.join("bin.log");
    std::fs::write(&log, b"").expect("log");
    let (_cfg, agent) = log_agent("binlog", &log);
    probe_log(&agent, &log, 1);
    append(&log, &garbage(4 << 20, 7));
    append(&log, b"\nhello 4242\n");
    agent.wait_for(WAIT, "the line after the binary data", |e| {
        e["data"]["raw"] == "hello 4242"
    });
    let rss = vm_hwm_kb(agent.pid());
    figure("os binary log (4 MiB)", rss, Duration::ZERO);
    assert!(rss < 128 << 10, "peak RSS {rss} KiB");
}

/// Binary utmp records from utmpdump text, via the real `utmpdump -r`.
fn failed_login(user: &str) -> Vec<u8> {
    let text = format!(
        "[6] [04242] [ts/0] [{user:<8}] [ssh:notty   ] [10.9.8.7            ] [10.9.8.7       ] [2024-05-01T09:15:00,000000+00:00]\n"
    );
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
        .expect("feed");
    let out = child.wait_with_output().expect("utmpdump");
    assert_eq!(out.stdout.len(), 384);
    out.stdout
}

#[test]
fn garbage_and_truncated_utmp_records_do_not_crash_the_beacon() {
    let tmp = TempDir::new("utmp-garbage");
    let file = tmp.join("btmp");
    std::fs::write(&file, b"").expect("btmp");
    let cfg = ConfigDir::new(
        "utmpgarbage",
        &format!("beacons:\n  btmp:\n    - file: {}\n", file.display()),
    );
    let limit = Duration::from_secs(30);
    assert_eq!(beacond(cfg.path(), &["--once"], limit).code, 0);
    // Three records of garbage (types, pids, times and strings all random), then a real one.
    append(&file, &garbage(3 * 384, 11));
    append(&file, &failed_login("mallory"));
    let r = beacond(cfg.path(), &["--once"], limit);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    assert!(
        r.stdout.contains("\"user\":\"mallory\""),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
    // A truncated record (a writer cut off): nothing read from it yet, no crash; once it is
    // completed it counts.
    let rec = failed_login("trudy");
    append(&file, &rec[..100]);
    let r = beacond(cfg.path(), &["--once"], limit);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stdout.contains("trudy"), "{}", r.stdout);
    append(&file, &rec[100..]);
    let r = beacond(cfg.path(), &["--once"], limit);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("\"user\":\"trudy\""),
        "{}\n{}",
        r.stdout,
        r.stderr
    );
}

#[test]
fn a_garbage_pem_is_an_error_not_a_crash() {
    let tmp = TempDir::new("garbage-pem");
    let files = [
        ("random.pem", garbage(4096, 3)),
        (
            "armour.pem",
            b"-----BEGIN CERTIFICATE-----\nAAAA////not base64 at all****\n-----END CERTIFICATE-----\n".to_vec(),
        ),
        (
            "truncated.pem",
            b"-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n".to_vec(),
        ),
        ("empty.pem", Vec::new()),
    ];
    let mut list = String::new();
    for (name, bytes) in &files {
        std::fs::write(tmp.join(name), bytes).expect("pem");
        list.push_str(&format!("        - {}\n", tmp.join(name).display()));
    }
    let cfg = ConfigDir::new(
        "garbagepem",
        &format!("beacons:\n  cert_info:\n    - files:\n{list}    - notify_days: 30\n"),
    );
    let r = beacond(cfg.path(), &["--once"], Duration::from_secs(30));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    for (name, _) in &files {
        assert!(
            r.stderr.contains(name),
            "{name} not named in the log:\n{}",
            r.stderr
        );
    }
}

/// An inotify beacon on `dir` with `extra` options, and the agent once a probe file is seen.
fn inotify_agent(id: &str, dir: &Path, extra: &str) -> (ConfigDir, Agent) {
    let cfg = ConfigDir::new(
        id,
        &format!(
            "beacons:\n  inotify:\n    - files:\n        {}:\n          mask: [create, close_write]\n          recurse: True\n          auto_add: True\n{extra}",
            dir.display()
        ),
    );
    let agent = Agent::start(cfg.path(), &[]);
    for n in 0..100 {
        let probe = dir.join(format!("probe-{n}"));
        std::fs::write(&probe, b"p").expect("probe");
        let want = probe.display().to_string();
        if (0..10)
            .filter_map(|_| agent.next(Duration::from_millis(100)))
            .any(|e| e["data"]["path"] == want.as_str())
        {
            return (cfg, agent);
        }
    }
    panic!("inotify beacon never reported; stderr:\n{}", agent.stderr());
}

fn wait_path(agent: &Agent, path: &Path, what: &str) -> Value {
    let want = path.display().to_string();
    agent.wait_for(WAIT, what, |e| e["data"]["path"] == want.as_str())
}

const EVIDENCE: &str = "          checksum: sha256\n          diff: True\n";

#[test]
fn a_1_gb_sparse_file_under_checksum_and_diff_is_bounded() {
    let tmp = TempDir::new("sparse");
    let (_cfg, agent) = inotify_agent("sparse", tmp.path(), EVIDENCE);
    let before = vm_hwm_kb(agent.pid());
    let big = tmp.join("big.img");
    let t = Instant::now();
    let f = std::fs::File::create(&big).expect("create");
    f.set_len(1 << 30).expect("1 GiB sparse");
    drop(f);
    let ev = agent.wait_for(WAIT, "the sparse file's close_write", |e| {
        e["data"]["path"] == big.display().to_string().as_str()
            && e["data"]["change"] == "IN_CLOSE_WRITE"
    });
    let took = t.elapsed();
    let rss = vm_hwm_kb(agent.pid());
    figure("os 1 GiB sparse, sha256 + diff", rss, took);
    assert!(ev["data"]["diff"].is_null(), "{ev}");
    assert!(
        ev["data"]["diff_skipped"]
            .as_str()
            .is_some_and(|w| w.starts_with("larger than")),
        "{ev}"
    );
    assert_eq!(
        ev["data"]["checksum"].as_str().map(str::len),
        Some(64),
        "{ev}"
    );
    assert!(
        rss < before + (64 << 10),
        "peak RSS {rss} KiB (was {before})"
    );
    // A later small file is still reported promptly: the hash did not wedge the beacon.
    let small = tmp.join("after");
    std::fs::write(&small, b"x").expect("write");
    wait_path(&agent, &small, "a file after the sparse one");
}

#[test]
fn a_fifo_in_a_watched_directory_with_checksum_does_not_block() {
    let tmp = TempDir::new("fifo");
    let (_cfg, agent) = inotify_agent("fifo", tmp.path(), EVIDENCE);
    let fifo = tmp.join("pipe");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    wait_path(&agent, &fifo, "the FIFO's creation");
    // Nobody writes to the FIFO: a reader that opened it would now hang the beacon.
    let after = tmp.join("after-fifo");
    std::fs::write(&after, b"x").expect("write");
    wait_path(&agent, &after, "a file after the FIFO");
}

#[test]
fn a_watched_file_swapped_for_a_symlink_to_a_secret_leaks_nothing() {
    // A fixture secret stands in for /etc/shadow.
    let secrets = TempDir::new("secret");
    let secret = secrets.join("shadow");
    let needle = "root:$6$FAULTSUITESECRET$hash:19000:0:99999:7:::";
    std::fs::write(&secret, format!("{needle}\n")).expect("secret");
    let tmp = TempDir::new("swap");
    let conf = tmp.join("app.conf");
    std::fs::write(&conf, "setting = 1\n").expect("conf");
    let (_cfg, agent) = inotify_agent("swap", tmp.path(), EVIDENCE);
    std::fs::write(&conf, "setting = 2\n").expect("conf");
    let ev = agent.wait_for(WAIT, "the diff of the real file", |e| {
        e["data"]["path"] == conf.display().to_string().as_str()
            && e["data"]["diff"]
                .as_str()
                .is_some_and(|d| d.contains("+setting = 2"))
    });
    assert_eq!(ev["data"]["change"], "IN_CLOSE_WRITE");
    // The attacker replaces the file by a link to the secret (IN_CREATE: the beacon looks at
    // the new `app.conf` for its checksum and diff), then touches the link target.
    std::fs::remove_file(&conf).expect("rm");
    std::os::unix::fs::symlink(&secret, &conf).expect("symlink");
    append(&secret, b"more secret\n");
    // Another write in the tree marks the end of what the swap produced.
    let end = tmp.join("end");
    std::fs::write(&end, b"x").expect("write");
    let mut events = Vec::new();
    let want = end.display().to_string();
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match agent.next(Duration::from_millis(500)) {
            Some(e) if e["data"]["path"] == want.as_str() => {
                events.push(e);
                // What the link swap queued after it, if anything.
                events.extend(agent.collect_for(Duration::from_millis(500)));
                break;
            }
            Some(e) => events.push(e),
            None => continue,
        }
    }
    assert!(
        events.iter().any(|e| e["data"]["path"] == want.as_str()),
        "{events:#?}"
    );
    let conf_s = conf.display().to_string();
    assert!(
        events
            .iter()
            .any(|e| e["data"]["path"] == conf_s.as_str() && e["data"]["change"] == "IN_CREATE"),
        "the swap was not seen: {events:#?}"
    );
    for e in &events {
        let text = e.to_string();
        assert!(
            !text.contains("FAULTSUITESECRET") && !text.contains("more secret"),
            "secret in {text}"
        );
    }
    // The checksum of the secret is not published either.
    let sum = Command::new("sha256sum")
        .arg(&secret)
        .output()
        .expect("sha256sum");
    let sum = String::from_utf8_lossy(&sum.stdout);
    let sum = sum.split_whitespace().next().unwrap_or("none");
    assert!(
        !events.iter().any(|e| e.to_string().contains(sum)),
        "{events:#?}"
    );
}

#[test]
fn a_watched_tree_of_100_000_files_is_watched_in_bounded_memory() {
    let tmp = TempDir::new("bigtree");
    let t = Instant::now();
    for d in 0..100 {
        let dir = tmp.join(format!("d{d:03}"));
        std::fs::create_dir(&dir).expect("mkdir");
        for f in 0..1000 {
            std::fs::File::create(dir.join(format!("f{f:04}"))).expect("create");
        }
    }
    let made = t.elapsed();
    let t = Instant::now();
    let (_cfg, agent) = inotify_agent("bigtree", tmp.path(), "");
    let ready = t.elapsed();
    let deep = tmp.join("d099/new-file");
    std::fs::write(&deep, b"x").expect("write");
    wait_path(&agent, &deep, "a file deep in the tree");
    let rss = vm_hwm_kb(agent.pid());
    eprintln!("100,000 files made in {made:?}");
    figure("os tree of 100,000 files (ready)", rss, ready);
    assert!(rss < 128 << 10, "peak RSS {rss} KiB");
}
