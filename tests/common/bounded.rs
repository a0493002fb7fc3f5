//! Fault-suite helpers: run the agent with a deadline and learn its peak RSS (GNU time's `%M`
//! for a process that exits, from `/proc/<pid>/status` `VmHWM` for one that runs).
//!
//! Not `wait4`'s own rusage: a child spawned from this (large, multi-threaded) test process
//! counts the test process's peak RSS before its exec in `ru_maxrss`, so the figure would
//! depend on which tests ran before. `/usr/bin/time` is small and forks the agent itself.
#![allow(dead_code)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A finished bounded run.
pub struct Run {
    /// Exit code (`-signal` when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Peak resident set of the process, KiB.
    pub peak_rss_kb: u64,
    pub elapsed: Duration,
}

/// Run `cmd` to completion; panics (after killing it) when it takes longer than `limit`: a
/// fault case must never hang CI.
// The child is reaped by `wait4` (which also gives its rusage), not by `Child::wait`.
#[allow(clippy::zombie_processes)]
pub fn run_bounded(cmd: Command, limit: Duration) -> Run {
    use std::io::Read;
    static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let maxrss_file =
        std::env::temp_dir().join(format!("beacond-maxrss-{}-{n}", std::process::id()));
    let mut timed = Command::new("/usr/bin/time");
    timed
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&maxrss_file)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    // Its own process group, so a hang is killed with the agent under `time`.
    std::os::unix::process::CommandExt::process_group(&mut timed, 0);
    let start = Instant::now();
    let mut child = timed
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let o = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let pid = child.id() as libc::pid_t;
    let status = loop {
        let mut status = 0;
        // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 on our own child's pid with valid out-pointers; WNOHANG never blocks.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
        if r == pid {
            break status;
        }
        assert!(r == 0, "wait4: {}", std::io::Error::last_os_error());
        if start.elapsed() > limit {
            // SAFETY: kill(2) on the process group this function created (-pid).
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&e.join().unwrap_or_default()).into_owned();
            panic!("did not exit within {limit:?} (a hang); stderr:\n{stderr}");
        }
        // Polling a child for exit: wait4 with rusage has no awaitable form here.
        std::thread::sleep(Duration::from_millis(10));
    };
    let peak_rss_kb = std::fs::read_to_string(&maxrss_file)
        .ok()
        .and_then(|t| t.lines().last()?.trim().parse().ok())
        .unwrap_or(0);
    let _ = std::fs::remove_file(&maxrss_file);
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -libc::WTERMSIG(status)
    };
    Run {
        code,
        stdout: String::from_utf8_lossy(&o.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&e.join().unwrap_or_default()).into_owned(),
        peak_rss_kb,
        elapsed: start.elapsed(),
    }
}

/// `beacond -c DIR ARGS...` bounded.
pub fn beacond(dir: &std::path::Path, args: &[&str], limit: Duration) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_beacond"));
    cmd.arg("-c").arg(dir).args(args);
    run_bounded(cmd, limit)
}

/// Peak RSS (`VmHWM`, KiB) of a running process.
pub fn vm_hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// One line for the suite's figures table (collected from the test log by hand).
pub fn figure(case: &str, peak_rss_kb: u64, elapsed: Duration) {
    eprintln!(
        "FIGURE {case}: peak RSS {:.1} MiB, {:.2} s",
        peak_rss_kb as f64 / 1024.0,
        elapsed.as_secs_f64()
    );
}
