//! Fault suite, signals (issue 16): 100 SIGHUPs in a second, SIGHUP while a config file is
//! half written, SIGTERM during a flood, SIGSTOP/SIGCONT while the kernel's inotify queue
//! overflows. The real binary; `--stdout` where it shows the behaviour, the normal mode (no
//! master reachable) where the spool matters.

mod common;
use common::beacond::{repo, Agent, ConfigDir, TempDir};
use common::bounded::{figure, vm_hwm_kb};
use common::faults::Minion;
use serde_json::Value;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(15);

fn fixture() -> String {
    repo()
        .join("tests/fixtures/proc-high")
        .display()
        .to_string()
}

/// One memusage beacon named `name` (quoted procfs path: a file cut inside it is no YAML).
fn conf(name: &str, interval: f64) -> String {
    format!(
        "beacons:\n  {name}:\n    - beacon_module: memusage\n    - percent: 1%\n    - procfs: \"{}\"\n    - interval: {interval}\n",
        fixture()
    )
}

fn tag(id: &str, name: &str) -> String {
    format!("salt/beacon/{id}/{name}/")
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Reconfigure to beacon `name` and wait for its events: every signal sent before was
/// handled once the new beacon speaks (signals are handled in order).
fn switch_to(agent: &Agent, cfg: &ConfigDir, id: &str, name: &str) {
    std::fs::write(cfg.path().join("minion.d/beacons.conf"), conf(name, 0.05)).expect("write");
    agent.signal(libc::SIGHUP);
    let t = tag(id, name);
    agent.wait_for(WAIT, name, |e| e["tag"] == t.as_str());
}

#[test]
fn a_hundred_sighups_in_a_second_keep_it_up_without_growth() {
    let id = "hup100";
    let cfg = ConfigDir::new(id, "").dropin("beacons.conf", &conf("mem0", 0.05));
    let agent = Agent::start(cfg.path(), &[]);
    agent.wait_for(WAIT, "mem0", |e| e["tag"] == tag(id, "mem0").as_str());
    // A first reload, so whatever a reload creates once is there for the baseline.
    switch_to(&agent, &cfg, id, "mem1");
    let (fd0, rss0) = (fds(agent.pid()), rss_kb(agent.pid()));
    std::fs::write(cfg.path().join("minion.d/beacons.conf"), conf("mem2", 0.05)).expect("write");
    let t = Instant::now();
    for _ in 0..100 {
        agent.signal(libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(9));
    }
    let sent_in = t.elapsed();
    assert!(sent_in < Duration::from_millis(1500), "{sent_in:?}");
    // The config of the storm is in effect, and the agent handles a reload after it.
    agent.wait_for(WAIT, "mem2", |e| e["tag"] == tag(id, "mem2").as_str());
    switch_to(&agent, &cfg, id, "mem3");
    let recovered = t.elapsed();
    let after = agent.collect_for(Duration::from_millis(500));
    assert!(
        after.iter().all(|e| e["tag"] == tag(id, "mem3").as_str()),
        "an old beacon still runs: {after:?}"
    );
    let (fd1, rss1) = (fds(agent.pid()), rss_kb(agent.pid()));
    let err = agent.stderr();
    let reloads = err.matches("reloaded configuration").count();
    assert!(reloads >= 3, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(fd1 <= fd0, "fds grew from {fd0} to {fd1}");
    assert!(rss1 <= rss0 + 4096, "RSS grew from {rss0} to {rss1} KiB");
    eprintln!("100 SIGHUPs: {reloads} reloads; fds {fd0} -> {fd1}, RSS {rss0} -> {rss1} KiB");
    figure(
        "signals: 100 SIGHUPs in a second",
        vm_hwm_kb(agent.pid()),
        recovered,
    );
}

#[test]
fn sighup_on_a_half_written_config_keeps_the_old_one() {
    let id = "hupcut";
    let cfg = ConfigDir::new(id, "").dropin("beacons.conf", &conf("mem0", 0.05));
    let agent = Agent::start(cfg.path(), &[]);
    agent.wait_for(WAIT, "mem0", |e| e["tag"] == tag(id, "mem0").as_str());
    // The new file cut in the middle (inside the quoted path), as a writer caught mid-write
    // leaves it.
    let full = conf("mem1", 0.05);
    let cut = &full[..full.find("proc-high").expect("path")];
    std::fs::write(cfg.path().join("minion.d/beacons.conf"), cut).expect("write");
    agent.signal(libc::SIGHUP);
    let deadline = Instant::now() + WAIT;
    while !agent.stderr().contains("reload rejected") {
        assert!(Instant::now() < deadline, "{}", agent.stderr());
        let _ = agent.next(Duration::from_millis(5));
    }
    let err = agent.stderr();
    assert!(
        err.contains("beacons.conf"),
        "the error names the file: {err}"
    );
    // The old config keeps running.
    agent.wait_for(WAIT, "mem0 after the rejected reload", |e| {
        e["tag"] == tag(id, "mem0").as_str()
    });
    let after = agent.collect_for(Duration::from_millis(300));
    assert!(
        after.iter().all(|e| e["tag"] != tag(id, "mem1").as_str()),
        "{after:?}"
    );
    // The finished write is picked up by the next SIGHUP.
    let t = Instant::now();
    switch_to(&agent, &cfg, id, "mem1");
    figure(
        "signals: SIGHUP on a half-written config",
        vm_hwm_kb(agent.pid()),
        t.elapsed(),
    );
}

#[test]
fn sigterm_during_a_flood_exits_in_time_and_keeps_the_rest() {
    let dir = TempDir::new("termflood");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let mut beacons = String::from("beacons:\n");
    for i in 0..4 {
        beacons.push_str(&format!(
            "  flood{i}:\n    - beacon_module: memusage\n    - percent: 1%\n    - procfs: {}\n    - interval: 0.001\n",
            fixture()
        ));
    }
    // No master listens: nothing can be delivered, everything must stay in the spool.
    let mut m = Minion::configure(
        &dir.join("cfg"),
        "termflood",
        port,
        "beacond_flush_timeout: 2\nbeacond_rate_per_beacon: 0\nbeacond_rate_global: 0\nbeacond_status_interval: 0",
        &beacons,
    );
    m.start();
    let spool = m.spool_dir();
    let deadline = Instant::now() + WAIT;
    loop {
        let bytes: u64 = std::fs::read_dir(&spool)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter_map(|e| e.metadata().ok())
                    .map(|md| md.len())
                    .sum()
            })
            .unwrap_or(0);
        if bytes > 200_000 {
            break;
        }
        assert!(Instant::now() < deadline, "no flood:\n{}", m.log());
        std::thread::sleep(Duration::from_millis(20));
    }
    let hwm = m.pid().map_or(0, vm_hwm_kb);
    let t = Instant::now();
    m.signal(libc::SIGTERM);
    let st = m.wait_exit(Duration::from_secs(15));
    let took = t.elapsed();
    assert!(st.success(), "{st:?}\n{}", m.log());
    // Within the flush timeout (2 s) and the stop of the beacons.
    assert!(took < Duration::from_secs(4), "SIGTERM took {took:?}");
    assert!(m.log().contains("stay in the spool"), "{}", m.log());
    let mut s = beacond::spool::store::Spool::open(&spool, 64 << 20).expect("reopen");
    let last = s.next_seq() - 1;
    let b = s.peek(usize::MAX).expect("peek");
    let uids: std::collections::BTreeSet<&str> = b
        .records
        .iter()
        .filter_map(|r| r.event.data["beacond_uid"].as_str())
        .collect();
    // Every event spooled is there, once: 1..=last, none lost in the shutdown.
    assert_eq!(b.records.len() as u64, last, "{}", m.log());
    assert_eq!(uids.len() as u64, last);
    assert!(s.take_dropped().is_none());
    eprintln!("SIGTERM during a flood: exited in {took:?}, {last} events kept in the spool");
    figure("signals: SIGTERM during a flood", hwm, took);
}

/// The agent stopped while the kernel's inotify queue overflows. The stop lasts as long as
/// the flood takes (about a second), not the 60 s: the queue
/// (`fs.inotify.max_queued_events`, global, so not lowered here) is full once that many events
/// are queued, and a longer stop adds nothing but CI time. Timer beacons just resume.
#[test]
fn sigstop_while_the_inotify_queue_overflows_is_reported() {
    let id = "stopcont";
    let tree = TempDir::new("stopcont-tree");
    std::fs::create_dir(tree.join("flood")).expect("mkdir");
    let yaml = format!(
        "beacons:\n  inotify:\n    - files:\n        {}:\n          mask: [create]\n{}",
        tree.join("flood").display(),
        &conf("mem", 0.2)["beacons:\n".len()..]
    );
    let cfg = ConfigDir::new(id, &yaml);
    let agent = Agent::start(cfg.path(), &[]);
    agent.wait_for(WAIT, "mem", |e| e["tag"] == tag(id, "mem").as_str());
    // The inotify watch is in place once a create is seen (probes until one is).
    let deadline = Instant::now() + WAIT;
    'watching: for n in 0.. {
        assert!(
            Instant::now() < deadline,
            "no inotify event:\n{}",
            agent.stderr()
        );
        std::fs::write(tree.join(format!("flood/probe{n}")), b"").expect("probe");
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            if agent.next(Duration::from_millis(50)).is_some_and(|e| {
                e["tag"]
                    .as_str()
                    .is_some_and(|t| t.starts_with(&format!("salt/beacon/{id}/inotify/")))
            }) {
                break 'watching;
            }
        }
    }
    let max: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(16384);
    agent.signal(libc::SIGSTOP);
    let t = Instant::now();
    for i in 0..max + 100 {
        std::fs::File::create(tree.join(format!("flood/f{i}"))).expect("create");
    }
    let stopped = t.elapsed();
    agent.signal(libc::SIGCONT);
    let t = Instant::now();
    let ev: Value = agent.wait_for(WAIT, "the overflow report", |e| {
        e["tag"] == "salt/beacon/stopcont/inotify/overflow"
    });
    let reported = t.elapsed();
    assert_eq!(ev["data"]["change"], "IN_Q_OVERFLOW", "{ev}");
    // The timer beacon goes on after the stop.
    agent.wait_for(WAIT, "mem after SIGCONT", |e| {
        e["tag"] == tag(id, "mem").as_str()
    });
    eprintln!(
        "SIGSTOP {:.2}s over {} creates: overflow reported {:.2}s after SIGCONT",
        stopped.as_secs_f64(),
        max + 100,
        reported.as_secs_f64()
    );
    figure(
        "signals: SIGSTOP/SIGCONT, inotify queue overflow",
        vm_hwm_kb(agent.pid()),
        reported,
    );
}
