//! Latency of the `inotify` beacon: from a write to a watched file to its event printed by
//! `beacond --stdout`, over many writes; plus the agent's RSS and the CPU it uses while idle.
//!
//! `cargo bench --bench inotify_latency` (env `WRITES`, default 2000). Target: p99 < 10 ms on an
//! idle machine.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this as a quick smoke test.
    let bench = std::env::args().any(|a| a == "--bench");
    let writes: usize = std::env::var("WRITES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if bench { 2000 } else { 50 });
    let dir = std::env::temp_dir().join(format!("beacond-bench-inotify-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("cfg")).expect("mkdir");
    let file = dir.join("watched");
    std::fs::write(&file, b"").expect("create watched file");
    std::fs::write(
        dir.join("cfg/minion"),
        format!(
            "id: bench\ncachedir: {}\nbeacons:\n  inotify:\n    - files:\n        {}:\n          mask: [modify]\n",
            dir.join("cache").display(),
            file.display()
        ),
    )
    .expect("write config");

    let bin = PathBuf::from(env!("CARGO_BIN_EXE_beacond"));
    let mut child = Command::new(&bin)
        .arg("-c")
        .arg(dir.join("cfg"))
        .arg("--stdout")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn beacond");
    let pid = child.id();
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel::<Instant>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("IN_MODIFY") && tx.send(Instant::now()).is_err() {
                break;
            }
        }
    });
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .expect("open watched file");

    // Wait until the watch is in place: write until an event comes back.
    let mut ready = false;
    for _ in 0..200 {
        f.write_all(b"w").expect("write");
        if rx.recv_timeout(Duration::from_millis(50)).is_ok() {
            ready = true;
            break;
        }
    }
    assert!(ready, "beacond never reported a write");
    while rx.recv_timeout(Duration::from_millis(200)).is_ok() {}

    let mut lat = Vec::with_capacity(writes);
    let mut lost = 0;
    for _ in 0..writes {
        let t0 = Instant::now();
        f.write_all(b"x").expect("write");
        match rx.recv_timeout(Duration::from_secs(2)) {
            Ok(t1) => lat.push(t1.duration_since(t0)),
            Err(_) => lost += 1,
        }
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "inotify write->event latency over {} writes: p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, max {:.0} us, lost {lost}",
        lat.len(),
        us(pct(0.50)),
        us(pct(0.90)),
        us(pct(0.99)),
        us(pct(1.0)),
    );

    // Idle cost: CPU ticks used over 3 s of quiet, and resident memory.
    let ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or_default();
        let f: Vec<&str> = after.split_whitespace().collect();
        // utime and stime: fields 14 and 15 of stat, 12 and 13 after the command.
        f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
    };
    let t0 = ticks();
    // Measuring idle CPU is waiting by definition (no event to await).
    let idle_secs = if bench { 3 } else { 0 };
    std::thread::sleep(Duration::from_secs(idle_secs));
    let idle = ticks() - t0;
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .map(|l| l.trim_start_matches("VmRSS:").trim().to_owned())
        .unwrap_or_default();
    println!("idle: {idle} CPU ticks in {idle_secs} s (1 tick = 10 ms); RSS {rss}");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(lost, 0, "events lost");
}
