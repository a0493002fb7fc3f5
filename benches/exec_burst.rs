//! Exec-burst benchmark for the `sh` beacon on the real kernel: the eBPF exec source and the
//! proc connector side by side in one run (env `BURST_SOURCES`, default `ebpf,proc_connector`).
//!
//! `cargo bench --bench exec_burst` (env: `BURST_EXECS`, default 10000; `BURST_WORKERS`,
//! default 4; `BURST_ROUNDS`, default 3; `BURST_BEACOND`, a beacond binary to measure instead
//! of the one cargo built for the bench, e.g. the LTO release build). Each round runs the same burst with beacond off and
//! on: `BURST_WORKERS` bash loops that fork+exec, half `/bin/true` (sub-millisecond) and half
//! `/bin/sleep 0.005` (lives >= 5 ms). It reports the share of the burst's execs beacond
//! reported, the share with full argv (all, and for the >= 5 ms processes), the CPU beacond
//! used, its RSS once started (before the burst), after the burst and its peak (VmHWM, which
//! includes the one-time parse of the kernel's BTF when the eBPF source loads), and the
//! burst's slow-down with beacond on against off (median of rounds).
//! A second, CPU-bound burst of `/bin/true` only gives the worst-case slow-down.

use serde_json::Value;
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

struct Seen {
    ppid: i64,
    argv0: Option<String>,
    overrun: bool,
}

/// Run the burst; returns (wall time, worker pids).
fn burst(execs: usize, workers: usize, mixed: bool) -> (Duration, HashSet<i64>) {
    let per = execs / workers;
    let body = if mixed {
        format!(
            "for ((i=0;i<{};i++)); do /bin/true; /bin/sleep 0.005; done",
            per / 2
        )
    } else {
        format!("for ((i=0;i<{per};i++)); do /bin/true; done")
    };
    let start = Instant::now();
    let children: Vec<Child> = (0..workers)
        .map(|_| {
            Command::new("/bin/bash")
                .arg("-c")
                .arg(&body)
                .spawn()
                .expect("spawn bash")
        })
        .collect();
    let pids = children.iter().map(|c| c.id() as i64).collect();
    for mut c in children {
        let st = c.wait().expect("wait");
        assert!(st.success());
    }
    (start.elapsed(), pids)
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = s.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After ")": utime is field 12, stime 13 (0-based from state).
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// A `/proc/<pid>/status` figure in KiB (`VmHWM`, `VmRSS`).
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

struct Agent {
    child: Child,
    pid: u32,
    rx: mpsc::Receiver<Seen>,
}

/// Start `beacond --stdout` and wait until its `sh` beacon has subscribed.
fn start_agent(dir: &std::path::Path) -> Agent {
    let bin =
        std::env::var("BURST_BEACOND").unwrap_or_else(|_| env!("CARGO_BIN_EXE_beacond").into());
    let mut child = Command::new(bin)
        .arg("-c")
        .arg(dir)
        .arg("--stdout")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("beacond");
    let pid = child.id();
    let (tx, rx) = mpsc::channel::<Seen>();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let d = &v["data"];
            let seen = Seen {
                ppid: d["ppid"].as_i64().unwrap_or(-1),
                argv0: d["args"][0].as_str().map(String::from),
                overrun: v["tag"].as_str().is_some_and(|t| t.ends_with("/overrun")),
            };
            if tx.send(seen).is_err() {
                break;
            }
        }
    });
    let (etx, erx) = mpsc::channel::<String>();
    let stderr = child.stderr.take().expect("stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("overrun") {
                eprintln!("{line}");
            }
            let _ = etx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = erx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("beacond did not start");
        if line.contains("sh: ") {
            break;
        }
    }
    // Keep draining stderr in the background.
    std::thread::spawn(move || while erx.recv().is_ok() {});
    Agent { child, pid, rx }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("exec_burst: bench");
        return;
    }
    let execs = env_usize("BURST_EXECS", 10_000);
    let workers = env_usize("BURST_WORKERS", 4).max(1);
    let rounds = env_usize("BURST_ROUNDS", 3).max(1);
    // SAFETY: sysconf only reads a configuration value.
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;

    let dir = std::env::temp_dir().join(format!("beacond-bench-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("minion.d")).expect("dir");
    let sources = std::env::var("BURST_SOURCES").unwrap_or_else(|_| "ebpf,proc_connector".into());
    let mut report = Vec::new();
    for source in sources.split(',') {
        std::fs::write(
            dir.join("minion"),
            format!(
            "id: bench\ncachedir: {}\nbeacons:\n  sh:\n    - scope: all\n    - source: {source}\n",
            dir.join("cache").display()
        ),
        )
        .expect("minion");
        for (label, mixed) in [
            ("mixed (half /bin/true, half sleep 5 ms)", true),
            ("/bin/true only", false),
        ] {
            let expected_long = if mixed {
                execs / workers / 2 * workers
            } else {
                0
            };
            let expected = if mixed {
                expected_long * 2
            } else {
                execs / workers * workers
            };
            let mut slow = Vec::new();
            let (mut reported, mut with_argv, mut long_argv, mut cpu) =
                (0usize, 0usize, 0usize, 0.0);
            let mut wall_on = Duration::ZERO;
            let (mut hwm, mut rss_before, mut rss_after) = (0, 0, 0);
            let mut overruns = 0;
            for _ in 0..rounds {
                // Off: the same burst with no beacond at all.
                let (off, _) = burst(execs, workers, mixed);
                let mut agent = start_agent(&dir);
                let (pid, rx) = (agent.pid, &agent.rx);
                rss_before = rss_before.max(status_kib(pid, "VmRSS:"));
                let c0 = cpu_ticks(pid);
                let (on, pids) = burst(execs, workers, mixed);
                // Drain: until every expected event arrived, 5 s without one of ours, or 60 s.
                let mut r = 0;
                let (mut a, mut l) = (0, 0);
                let mut last = Instant::now();
                let hard = Instant::now() + Duration::from_secs(60);
                while r < expected
                    && last.elapsed() < Duration::from_secs(5)
                    && Instant::now() < hard
                {
                    if let Ok(s) = rx.recv_timeout(Duration::from_millis(200)) {
                        if s.overrun {
                            overruns += 1;
                        }
                        if pids.contains(&s.ppid) {
                            last = Instant::now();
                            r += 1;
                            if s.argv0.is_some() {
                                a += 1;
                            }
                            if s.argv0.as_deref() == Some("/bin/sleep") {
                                l += 1;
                            }
                        }
                    }
                }
                if r < expected {
                    eprintln!("round: {r} of {expected} execs reported");
                }
                let c1 = cpu_ticks(pid);
                hwm = hwm.max(status_kib(pid, "VmHWM:"));
                rss_after = rss_after.max(status_kib(pid, "VmRSS:"));
                let _ = agent.child.kill();
                let _ = agent.child.wait();
                reported += r;
                with_argv += a;
                long_argv += l;
                cpu += (c1 - c0) as f64 / tck;
                wall_on += on;
                slow.push((on.as_secs_f64() / off.as_secs_f64() - 1.0) * 100.0);
            }
            let total = (expected * rounds) as f64;
            let line = format!(
            "[{source}] {label}: {expected} execs x {rounds} rounds, {workers} workers | reported {:.2}% | with argv {:.2}%{} | beacond CPU {:.2} s for {:.1} s of bursts ({:.1}% of one core, {:.2} s per 10,000 execs) | burst slow-down median {:.1}% (rounds: {})",
            reported as f64 / total * 100.0,
            with_argv as f64 / total * 100.0,
            if mixed {
                format!(
                    " (processes living >= 5 ms: {:.2}%)",
                    long_argv as f64 / (expected_long * rounds) as f64 * 100.0
                )
            } else {
                String::new()
            },
            cpu,
            wall_on.as_secs_f64(),
            cpu / wall_on.as_secs_f64() * 100.0,
            cpu / total * 10_000.0,
            median(slow.clone()),
            slow.iter().map(|s| format!("{s:+.1}%")).collect::<Vec<_>>().join(" ")
        );
            let mem = format!(
                "RSS {:.1} MiB started, {:.1} MiB after the burst, peak (VmHWM) {:.1} MiB",
                rss_before as f64 / 1024.0,
                rss_after as f64 / 1024.0,
                hwm as f64 / 1024.0
            );
            println!("{line}; overrun events {overruns}; {mem}");
            report.push(format!("{line}; {mem}"));
        }
    }
    println!("\nside by side:");
    for l in &report {
        println!("  {l}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
