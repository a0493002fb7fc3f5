//! Heavy beacons do not hold up the others: one agent runs a 1-second `memusage` beside
//! - `pkg` re-reading a 50 MB apt `*_Packages` list (real deb822 format) on every evaluation
//!   (the test flips a candidate version in a second list after each `pkg` event, so every
//!   evaluation parses everything again),
//! - `journald` catching up on 1 million entries written while it was down (real journal files
//!   from systemd's `systemd-journal-remote`, as in `tests/journald_beacon.rs`),
//! - `service` polling a `systemctl` that takes 3 s to answer. That `systemctl` is a stand-in
//!   (no systemd runs here): a script that sleeps, as a busy PID 1 or a D-Bus call near its
//!   timeout would.
//!
//! `memusage`'s events (stamped by the agent when the evaluation ends) must keep coming with no
//! gap above two intervals (one interval late at most), while each heavy beacon is seen
//! working. Before evaluations moved off the runtime thread the gaps were 3 s and more.
mod common;
use common::beacond::*;
use serde_json::Value;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

const REMOTE: &str = "/lib/systemd/systemd-journal-remote";
const JOURNAL_ENTRIES: usize = 1_000_000;
/// Every this many journal entries one matches the beacon's `sshd` service.
const MATCH_EVERY: usize = 10_000;
const LIST_BYTES: usize = 50 * 1024 * 1024;
/// How long the interval beacon is watched while the heavy ones run.
const WINDOW: Duration = Duration::from_secs(15);

/// Write `n` entries (export format) to a journal file in `dir` with systemd-journal-remote,
/// streamed in chunks (1 M entries are ~150 MB of export text).
fn write_journal(dir: &Path, first: usize, n: usize) {
    assert!(
        Path::new(REMOTE).exists(),
        "{REMOTE} missing: apt-get install systemd-journal-remote"
    );
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_micros();
    let mut child = Command::new(REMOTE)
        .arg(format!("--output={}", dir.join("remote.journal").display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("systemd-journal-remote");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut chunk = String::new();
    for i in first..first + n {
        let t = now + i as u128;
        let _ = write!(
            chunk,
            "__REALTIME_TIMESTAMP={t}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n",
            1000 + i
        );
        // Repeated fields are stored once: 1 M entries fit one file (no rotation meanwhile).
        if i % MATCH_EVERY == 0 {
            let _ = write!(
                chunk,
                "SYSLOG_IDENTIFIER=sshd\nPRIORITY=6\n_PID={i}\nMESSAGE=catch-up {i}\n\n"
            );
        } else {
            chunk.push_str(
                "SYSLOG_IDENTIFIER=cron\nMESSAGE=pam_unix(cron:session): session opened for user root\n\n",
            );
        }
        if chunk.len() > 1 << 20 {
            stdin.write_all(chunk.as_bytes()).expect("export");
            chunk.clear();
        }
    }
    stdin.write_all(chunk.as_bytes()).expect("export");
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A directory under /dev/shm, removed on drop.
struct ShmDir(std::path::PathBuf);

impl ShmDir {
    fn new(name: &str) -> ShmDir {
        let p = Path::new("/dev/shm").join(name);
        let _ = std::fs::remove_dir_all(&p);
        ShmDir(p)
    }
}

impl Drop for ShmDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An apt `*_Packages` index of about `bytes` bytes of realistic stanzas.
fn big_list(bytes: usize) -> String {
    let mut s = String::with_capacity(bytes + 4096);
    let mut i = 0;
    while s.len() < bytes {
        let _ = write!(
            s,
            "Package: filler-{i}\nSource: filler-src-{i}\nVersion: 1.{i}-1\nInstalled-Size: {}\nMaintainer: Debian QA Group <packages@qa.debian.org>\nArchitecture: amd64\nDepends: libc6 (>= 2.34), libssl3 (>= 3.0.0)\nDescription: filler package {i}\n A package among many, as in a full Debian mirror index.\n .\n Nothing else.\nHomepage: https://example.org/filler-{i}\nSection: utils\nPriority: optional\nFilename: pool/main/f/filler-{i}/filler-{i}_1.{i}-1_amd64.deb\nSize: {}\nMD5sum: 0123456789abcdef0123456789abcdef\nSHA256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n\n",
            100 + i % 900,
            20_000 + i
        );
        i += 1;
    }
    s
}

fn stanza(version: &str) -> String {
    format!("Package: zsh\nArchitecture: amd64\nVersion: {version}\nDescription: zsh\n\n")
}

/// Seconds since the epoch of an event's `_stamp` (`YYYY-MM-DDTHH:MM:SS[.ffffff]`, UTC).
fn stamp_secs(e: &Value) -> f64 {
    let s = e["data"]["_stamp"].as_str().expect("_stamp");
    let num = |r: std::ops::Range<usize>| -> i64 {
        s.get(r)
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("bad _stamp {s}"))
    };
    let (y, mo, d) = (num(0..4), num(5..7), num(8..10));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (mo + if mo > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + num(11..13) * 3600 + num(14..16) * 60 + num(17..19);
    let frac: f64 = s
        .get(19..)
        .filter(|f| !f.is_empty())
        .and_then(|f| format!("0{f}").parse().ok())
        .unwrap_or(0.0);
    secs as f64 + frac
}

fn max_gap(stamps: &[f64]) -> f64 {
    stamps.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
}

#[test]
fn heavy_beacons_do_not_delay_an_interval_beacon() {
    let started = Instant::now();
    let tmp = TempDir::new("blocking");
    let procfs = tmp.join("proc");
    std::fs::create_dir_all(&procfs).expect("procfs");
    std::fs::copy(
        repo().join("tests/fixtures/proc-high/meminfo"),
        procfs.join("meminfo"),
    )
    .expect("meminfo fixture");

    // pkg: zsh installed; its candidate flips between the installed version and a newer one.
    let lists = tmp.join("lists");
    std::fs::create_dir_all(&lists).expect("lists");
    let status = tmp.join("status");
    std::fs::write(
        &status,
        "Package: zsh\nStatus: install ok installed\nArchitecture: amd64\nVersion: 5.9-4\n\n",
    )
    .expect("dpkg status");
    let big = lists.join("deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages");
    std::fs::write(&big, big_list(LIST_BYTES)).expect("big list");
    let small =
        lists.join("security.debian.org_dists_bookworm-security_main_binary-amd64_Packages");
    std::fs::write(&small, stanza("5.9-4")).expect("small list");

    // journald: one entry before the first run (which records the position), a million after.
    // On tmpfs where there is one: 120 MB of journal written in seconds, not a disk's minute.
    let shm = Path::new("/dev/shm")
        .is_dir()
        .then(|| ShmDir::new(&format!("beacond-blocking-{}", std::process::id())));
    let journal = match &shm {
        Some(d) => d.0.clone(),
        None => tmp.join("journal"),
    };
    std::fs::create_dir_all(&journal).expect("journal dir");
    write_journal(&journal, 0, 1);

    // service: a systemctl that takes 3 s per call.
    let systemctl = tmp.join("systemctl");
    write_exe(
        &systemctl,
        "#!/bin/sh\n# stand-in for `systemctl show --property=ActiveState -- UNIT...`, slow\nsleep 3\nfor u in \"$@\"; do case \"$u\" in show|--*) ;; *) echo ActiveState=active; echo;; esac; done\n",
    );

    let cfg = ConfigDir::new(
        "blk",
        &format!(
            "beacons:
  memusage:
    - percent: 0
    - procfs: {procfs}
    - interval: 1
  pkg:
    - pkgs: [zsh]
    - dpkg_status: {status}
    - apt_lists: {lists}
    - interval: 1
  journald:
    - paths: [{journal}]
    - services:
        sshd:
          SYSLOG_IDENTIFIER: sshd
  service:
    - services:
        nginx: {{}}
    - backend: systemctl
    - systemctl: {systemctl}
    - interval: 1
",
            procfs = procfs.display(),
            status = status.display(),
            lists = lists.display(),
            journal = journal.display(),
            systemctl = systemctl.display(),
        ),
    );
    // The first run: pkg and journald record where they are.
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    write_journal(&journal, 1, JOURNAL_ENTRIES);
    let prepared = started.elapsed();

    let agent = Agent::start(cfg.path(), &[]);
    let tag = |e: &Value| e["tag"].as_str().unwrap_or_default().to_owned();
    let first = agent.wait_for(Duration::from_secs(20), "a first memusage event", |e| {
        tag(e) == "salt/beacon/blk/memusage/"
    });
    let mut mem = vec![stamp_secs(&first)];
    let (mut pkg, mut svc, mut jd) = (Vec::new(), Vec::new(), Vec::new());
    // An upgrade appears: pkg reports it, and each flip after a pkg event makes the next
    // evaluation parse all 50 MB again.
    std::fs::write(&small, stanza("5.9-5")).expect("small list");
    let mut upgraded = true;
    let end = Instant::now() + WINDOW;
    while let Some(e) = agent.next(end.saturating_duration_since(Instant::now())) {
        let t = tag(&e);
        if t == "salt/beacon/blk/memusage/" {
            mem.push(stamp_secs(&e));
        } else if t == "salt/beacon/blk/pkg/" {
            assert!(e["data"].get("error").is_none(), "{e}");
            pkg.push(stamp_secs(&e));
            upgraded = !upgraded;
            let v = if upgraded { "5.9-5" } else { "5.9-4" };
            std::fs::write(&small, stanza(v)).expect("small list");
        } else if t == "salt/beacon/blk/service/nginx" {
            svc.push(stamp_secs(&e));
        } else if t == "salt/beacon/blk/journald/sshd" {
            jd.push(stamp_secs(&e));
        } else if e["data"].get("error").is_some() {
            panic!("error event {e}\n{}", agent.stderr());
        }
        if Instant::now() >= end {
            break;
        }
    }
    let gap = max_gap(&mem);
    eprintln!(
        "prepared in {prepared:?}; in {WINDOW:?}: {} memusage events (largest gap {gap:.3} s), {} pkg, {} service (largest gap {:.3} s), {} journald events; total {:?}",
        mem.len(),
        pkg.len(),
        svc.len(),
        max_gap(&svc),
        jd.len(),
        started.elapsed()
    );
    // Each heavy beacon worked during the window.
    assert!(!svc.is_empty(), "no service event\n{}", agent.stderr());
    assert!(!jd.is_empty(), "no journald event\n{}", agent.stderr());
    assert!(!pkg.is_empty(), "no pkg event\n{}", agent.stderr());
    // One interval late at most (plus scheduling slack on a loaded machine).
    assert!(
        gap <= 2.25,
        "memusage events {gap:.3} s apart: {mem:?}\n{}",
        agent.stderr()
    );
    assert!(mem.len() as f64 >= WINDOW.as_secs_f64() * 0.6, "{mem:?}");
}
