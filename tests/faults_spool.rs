//! Fault suite, the spool (issue 16): a cachedir on a 2 MiB tmpfs filled to the last byte while
//! the master is down, spool files corrupted and cut off while the agent is stopped, and a
//! read-only spool directory. Loss must be counted and reported as a `beacond/dropped` event,
//! the rest delivered; a spool that cannot be written at all is a clear error at start.
//!
//! One real salt-master (3007) serves both delivery cases, which run at the same time, each
//! minion behind its own TCP gate (closed = the master is away for that minion).

mod common;
use common::bounded::{figure, vm_hwm_kb};
use common::faults::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmpfs mounted for the test, unmounted on drop (also when the test panics).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).expect("mount point");
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .expect("mount");
        assert!(
            st.success(),
            "mount tmpfs at {} (tests run as root)",
            at.display()
        );
        Tmpfs(at.to_owned())
    }

    fn remount(&self, opts: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(&self.0)
            .status()
            .expect("mount");
        assert!(st.success(), "remount {opts} {}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a process still holding a file there does not keep the mount.
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn beacons(fixture: &str) -> String {
    format!(
        "beacons:\n  memusage:\n    - percent: 1%\n    - procfs: {fixture}\n    - interval: 0.01\n"
    )
}

fn fixture() -> String {
    common::beacond::repo()
        .join("tests/fixtures/proc-high")
        .display()
        .to_string()
}

fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Events on the bus from minion `id`.
fn of(seen: &Seen, id: &str) -> Vec<Value> {
    let prefix = format!("salt/beacon/{id}/");
    seen.lock()
        .map(|s| {
            s.iter()
                .filter(|e| e["tag"].as_str().is_some_and(|t| t.starts_with(&prefix)))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

fn seqs(evs: &[Value]) -> BTreeSet<u64> {
    evs.iter()
        .filter_map(|e| uid_seq(e).map(|(_, s)| s))
        .collect()
}

fn dropped(evs: &[Value]) -> Vec<Value> {
    evs.iter()
        .filter(|e| {
            e["tag"]
                .as_str()
                .is_some_and(|t| t.ends_with("/beacond/dropped"))
        })
        .cloned()
        .collect()
}

fn segments(spool: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(spool)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("seg-"))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// (seq, offset, size) of every record of a segment file.
fn records(path: &Path) -> Vec<(u64, usize, usize)> {
    let b = std::fs::read(path).expect("segment");
    let mut out = Vec::new();
    let mut off = 0;
    while let Ok(Some((r, n))) = beacond::spool::store::decode(&b[off..]) {
        out.push((r.seq, off, n));
        off += n;
    }
    out
}

/// Disk full while the master is away: what could not be written is counted and reported
/// once space returns, everything written is delivered (no torn record in the spool).
fn disk_full(master: &Master, seen: &Seen, root: &Path) {
    let id = format!("faults-spool-full-{}", std::process::id());
    let dir = root.join("full");
    let tmpfs = Tmpfs::mount(&dir.join("cache"), "2m");
    let gate = Gate::new(master.ret_port);
    gate.close();
    let extra = "beacond_rate_per_beacon: 0\nbeacond_rate_global: 0\nbeacond_status_interval: 0\nbeacond_flush_timeout: 2";
    let mut m = Minion::configure(&dir, &id, gate.port, extra, &beacons(&fixture()));
    m.start();
    let spool = m.spool_dir();
    wait_until(Duration::from_secs(30), "events spooled", || {
        segments(&spool)
            .iter()
            .any(|p| std::fs::metadata(p).is_ok_and(|md| md.len() > 0))
    });
    // Fill the tmpfs to the last byte: big writes, then single bytes until ENOSPC.
    let filler = tmpfs.0.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0xa5u8; 64 << 10];
        while f.write_all(&chunk).is_ok() {}
        while f.write(&[0xa5]).is_ok_and(|n| n == 1) {}
    }
    wait_until(Duration::from_secs(30), "the agent meeting ENOSPC", || {
        m.log().contains("cannot write to the spool")
    });
    assert!(m.log().contains("No space left on device"), "{}", m.log());
    // The disk stays full for a while (the outage, not a synchronisation).
    std::thread::sleep(Duration::from_millis(500));
    std::fs::remove_file(&filler).expect("remove filler");
    let space = Instant::now();
    wait_until(Duration::from_secs(30), "writes succeeding again", || {
        m.log().contains("spool writable again")
    });
    let writable = space.elapsed();
    gate.open();
    let open = Instant::now();
    wait_until(Duration::from_secs(60), "the dropped report", || {
        !dropped(&of(seen, &id)).is_empty()
    });
    let report_after = open.elapsed();
    let evs = of(seen, &id);
    let reports = dropped(&evs);
    assert_eq!(reports.len(), 1, "{reports:?}");
    let d = &reports[0]["data"];
    let count = d["count"].as_u64().expect("count");
    assert!(count >= 1, "{d}");
    assert!(
        d["reason"]
            .as_str()
            .is_some_and(|r| r.contains("No space left on device")),
        "{d}"
    );
    assert_eq!(d["beacons"]["memusage"], count, "{d}");
    // Delivery resumes: events after the report, and every seq up to there on the bus (a
    // record torn by ENOSPC would make the reader skip the ones after it).
    let (_, rseq) = uid_seq(&reports[0]).expect("report uid");
    wait_until(Duration::from_secs(60), "events after the report", || {
        let s = seqs(&of(seen, &id));
        (1..=rseq + 20).all(|q| s.contains(&q))
    });
    let hwm = m.pid().map_or(0, vm_hwm_kb);
    m.terminate(Duration::from_secs(15));
    eprintln!(
        "disk full: {count} events lost and reported; writable {:.2}s after space returned, report on the bus {:.2}s after the master came back",
        writable.as_secs_f64(),
        report_after.as_secs_f64()
    );
    figure("spool: 2 MiB tmpfs full, master down", hwm, report_after);
}

/// Corrupted and cut-off segments while the agent is stopped: the damage is cut out, the loss
/// counted exactly (sequence numbers are contiguous), everything else delivered.
fn damaged(master: &Master, seen: &Seen, root: &Path) {
    let id = format!("faults-spool-damaged-{}", std::process::id());
    let dir = root.join("damaged");
    let gate = Gate::new(master.ret_port);
    gate.close();
    // 64 KiB bound: 8 KiB segments.
    let extra = "beacond_rate_per_beacon: 0\nbeacond_rate_global: 0\nbeacond_status_interval: 0\n\
                 beacond_flush_timeout: 1\nbeacond_spool_max_bytes: 65536";
    let mut m = Minion::configure(&dir, &id, gate.port, extra, &beacons(&fixture()));
    m.start();
    let spool = m.spool_dir();
    wait_until(Duration::from_secs(30), "four segments", || {
        segments(&spool).len() >= 4
    });
    m.terminate(Duration::from_secs(15));
    let segs = segments(&spool);
    let all: Vec<Vec<(u64, usize, usize)>> = segs.iter().map(|p| records(p)).collect();
    let last = all.iter().flatten().map(|r| r.0).max().expect("records");
    assert!(
        all.iter().flatten().count() as u64 == last,
        "the spool holds 1..={last} before the damage"
    );
    assert!(
        all[0].len() >= 3 && all[1].len() >= 3,
        "{:?}",
        all[..2].to_vec()
    );
    // A flipped byte in the third record of the first segment.
    let mut lost = BTreeSet::new();
    let mut b = std::fs::read(&segs[0]).expect("read");
    let (seq, off, n) = all[0][2];
    b[off + n / 2] ^= 0x55;
    std::fs::write(&segs[0], &b).expect("write");
    lost.insert(seq);
    // The second segment cut in the middle of its second record.
    let b = std::fs::read(&segs[1]).expect("read");
    let (_, off, n) = all[1][1];
    std::fs::write(&segs[1], &b[..off + n / 2]).expect("write");
    lost.extend(all[1][1..].iter().map(|r| r.0));
    gate.open();
    let start = Instant::now();
    m.start();
    wait_until(Duration::from_secs(60), "the damage report", || {
        !dropped(&of(seen, &id)).is_empty()
    });
    wait_until(Duration::from_secs(60), "every undamaged event", || {
        let s = seqs(&of(seen, &id));
        (1..=last).all(|q| lost.contains(&q) || s.contains(&q)) && s.range(last + 1..).count() > 5
    });
    let recovered = start.elapsed();
    let evs = of(seen, &id);
    let reports = dropped(&evs);
    assert_eq!(reports.len(), 1, "{reports:?}");
    let d = &reports[0]["data"];
    assert_eq!(d["count"], lost.len() as u64, "{d}\nlost: {lost:?}");
    assert!(
        d["reason"].as_str().is_some_and(|r| r.contains("damaged")),
        "{d}"
    );
    let s = seqs(&evs);
    assert!(
        lost.iter().all(|q| !s.contains(q)),
        "a damaged record was sent"
    );
    assert!(m.log().contains("corrupt data"), "{}", m.log());
    let hwm = m.pid().map_or(0, vm_hwm_kb);
    m.terminate(Duration::from_secs(15));
    eprintln!(
        "damaged spool: {} of {last} events lost and reported, the rest delivered {:.2}s after the start",
        lost.len(),
        recovered.as_secs_f64()
    );
    figure("spool: corrupt + truncated segments", hwm, recovered);
}

#[test]
fn spool_faults_are_counted_reported_and_recovered() {
    let Some(venv) = require_salt("3007") else {
        return;
    };
    let root = common::beacond::TempDir::new("faults-spool");
    let t = Instant::now();
    let master = Master::start(&venv, &root.join("master"));
    let listener = master.listen("salt/beacon/");
    eprintln!("master up in {:.1}s", t.elapsed().as_secs_f64());
    let seen = listener.seen.clone();
    std::thread::scope(|s| {
        let full = s.spawn(|| disk_full(&master, &seen, root.path()));
        let dmg = s.spawn(|| damaged(&master, &seen, root.path()));
        let (a, b) = (full.join(), dmg.join());
        if let Err(e) = a {
            std::panic::resume_unwind(e);
        }
        if let Err(e) = b {
            std::panic::resume_unwind(e);
        }
    });
}

/// A read-only spool directory: the normal mode refuses to start with a clear error naming
/// it (it could keep no event); `--stdout`, which uses no spool, keeps printing.
#[test]
fn a_read_only_spool_is_a_clear_error_and_stdout_goes_on() {
    let root = common::beacond::TempDir::new("faults-spool-ro");
    let cfg = root.join("cfg");
    let m = Minion::configure(&cfg, "faults-ro", 1, "", &beacons(&fixture()));
    let tmpfs = Tmpfs::mount(&cfg.join("cache"), "2m");
    let spool = m.spool_dir();
    std::fs::create_dir_all(&spool).expect("spool dir");
    // An existing spool id: the open itself has nothing to create.
    std::fs::write(spool.join("id"), "0123456789abcdef").expect("id");
    tmpfs.remount("ro");
    let run = common::bounded::beacond(&cfg, &[], Duration::from_secs(30));
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("cannot open the spool")
            && run.stderr.contains("Read-only file system")
            && run.stderr.contains(&spool.display().to_string()),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    figure(
        "spool: read-only spool directory",
        run.peak_rss_kb,
        run.elapsed,
    );
    let agent = common::beacond::Agent::start(&cfg, &[]);
    for _ in 0..5 {
        agent.wait_for(Duration::from_secs(10), "memusage on stdout", |e| {
            e["tag"] == "salt/beacon/faults-ro/memusage/"
        });
    }
}
