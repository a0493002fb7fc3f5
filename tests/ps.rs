//! The `ps` beacon on the real /proc (processes the test starts) and on a fixture procfs.
mod common;
use common::beacond::*;
use std::process::{Child, Command};

/// A copy of `sleep` under a name longer than the kernel's 15-character `comm`, running.
pub struct LongNamed {
    pub child: Child,
    pub name: String,
    _dir: TempDir,
}

impl LongNamed {
    pub fn start(label: &str) -> LongNamed {
        let dir = TempDir::new(label);
        let name = format!("beacondlongname{}", std::process::id());
        let exe = dir.join(&name);
        copy_exe("/bin/sleep", &exe);
        let child = Command::new(&exe).arg("300").spawn().expect("run copy");
        // Wait (bounded) until the kernel shows the exec'd name, not the forked test's.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let stat = format!("/proc/{}/stat", child.id());
        while !std::fs::read_to_string(&stat).is_ok_and(|s| s.contains("(beacondlongnam")) {
            assert!(std::time::Instant::now() < deadline, "exec not seen");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        LongNamed {
            child,
            name,
            _dir: dir,
        }
    }
}

impl Drop for LongNamed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The CI flake of issue 16: copies of an executable, run right after copying while other
/// threads keep forking, must never fail with ETXTBSY. (With `std::fs::copy` the copy's write
/// fd leaks into the other threads' children until they exec.)
#[test]
fn fresh_copies_run_while_other_threads_fork() {
    let dir = TempDir::new("etxtbsy");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let forkers: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = Command::new("/bin/true").status();
                }
            })
        })
        .collect();
    let runners: Vec<_> = (0..4)
        .map(|t| {
            let base = dir.path().to_owned();
            std::thread::spawn(move || {
                for i in 0..40 {
                    let exe = base.join(format!("true-{t}-{i}"));
                    copy_exe("/bin/true", &exe);
                    let status = Command::new(&exe).status();
                    assert!(
                        status.as_ref().is_ok_and(|s| s.success()),
                        "running a fresh copy: {status:?}"
                    );
                }
            })
        })
        .collect();
    let results: Vec<_> = runners.into_iter().map(|h| h.join()).collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for f in forkers {
        let _ = f.join();
    }
    assert!(
        results.iter().all(Result::is_ok),
        "a fresh copy failed to run"
    );
}

#[test]
fn ps_running_stopped_and_other_on_real_proc() {
    let p = LongNamed::start("ps-real");
    // The comm is truncated to 15 characters; psutil's name() (and so Salt's) is the full
    // name from argv[0].
    let cfg = ConfigDir::new("ps1", "").dropin(
        "beacons.conf",
        &format!(
            "beacons:\n  ps:\n    - processes:\n        {}: running\n        beacond-no-such-process: stopped\n        beacond-other-value: absent\n        beacondlongnam: running\n",
            p.name
        ),
    );
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    let datas: Vec<_> = out.events.iter().map(|e| e["data"].clone()).collect();
    assert_eq!(out.events.len(), 3, "{datas:?}");
    for ev in &out.events {
        assert_eq!(ev["tag"], "salt/beacon/ps1/ps/");
    }
    assert_eq!(datas[0][p.name.as_str()], "Running");
    assert_eq!(datas[1]["beacond-no-such-process"], "Stopped");
    assert_eq!(datas[2]["beacond-other-value"], false);
    let mut keys = vec!["_stamp".to_owned(), "id".to_owned(), p.name.clone()];
    keys.sort();
    assert_eq!(data_keys(&out.events[0]), keys);
}

#[test]
fn ps_reads_comm_with_parentheses_from_a_fixture() {
    let dir = TempDir::new("ps-fixture");
    std::fs::create_dir_all(dir.join("77")).expect("pid dir");
    std::fs::write(
        dir.join("77/stat"),
        "77 (my (odd) proc) S 1 77 77 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 100 1000 10\n",
    )
    .expect("stat");
    std::fs::write(dir.join("77/cmdline"), "odd\0").expect("cmdline");
    let cfg = ConfigDir::new("ps2", "").dropin(
        "beacons.conf",
        &format!(
            "beacons:\n  ps:\n    - procfs: {}\n    - processes:\n        'my (odd) proc': running\n",
            dir.path().display()
        ),
    );
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.events.len(), 1, "{:?}", out.events);
    assert_eq!(out.events[0]["data"]["my (odd) proc"], "Running");
}

#[test]
fn ps_config_errors_name_the_place() {
    let cfg = ConfigDir::new("ps3", "").dropin(
        "bad.conf",
        "beacons:\n  ps:\n    - processes:\n      - sshd\n",
    );
    let out = Command::new(bin())
        .arg("-c")
        .arg(cfg.path())
        .arg("--check")
        .output()
        .expect("--check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("bad.conf:4") && err.contains("processes must be a map"),
        "{err}"
    );
}
