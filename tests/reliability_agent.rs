//! The agent's lifecycle: systemd readiness and watchdog over a real `$NOTIFY_SOCKET`, SIGTERM
//! leaving undelivered events in the spool, live reload keeping unchanged beacons' state, and
//! 1,000 reloads with a flat fd count and RSS.

mod common;
use common::beacond::{repo, Agent, ConfigDir, TempDir};
use common::faults::Minion;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// A local port nothing listens on (the master is unreachable).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn fixture() -> String {
    repo()
        .join("tests/fixtures/proc-high")
        .display()
        .to_string()
}

fn memusage(interval: f64) -> String {
    format!(
        "beacons:\n  memusage:\n    - percent: 1%\n    - procfs: {}\n    - interval: {interval}\n",
        fixture()
    )
}

#[test]
fn systemd_ready_watchdog_and_stopping() {
    let dir = TempDir::new("sdnotify");
    let sock_path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut m = Minion::configure(
        &dir.join("cfg"),
        "sdnotify",
        closed_port(),
        "",
        &memusage(1.0),
    );
    m.env = vec![
        ("NOTIFY_SOCKET".into(), sock_path.display().to_string()),
        ("WATCHDOG_USEC".into(), "200000".into()),
    ];
    m.start();
    let mut buf = [0u8; 512];
    let mut recv = || -> String {
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("no notification: {e}"));
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let first = recv();
    assert!(first.starts_with("READY=1"), "{first}");
    assert!(first.contains("STATUS=1 beacon(s) running"), "{first}");
    // Pings at half the watchdog interval (100 ms): three within a second or so.
    let t = Instant::now();
    for _ in 0..3 {
        assert_eq!(recv(), "WATCHDOG=1");
    }
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    m.signal(libc::SIGTERM);
    let mut last = String::new();
    while last != "STOPPING=1" {
        last = recv();
        assert!(last == "WATCHDOG=1" || last == "STOPPING=1", "{last}");
    }
    let st = m.wait_exit(Duration::from_secs(15));
    assert!(st.success(), "{st:?}\n{}", m.log());
}

#[test]
fn sigterm_leaves_undelivered_events_in_the_spool() {
    let dir = TempDir::new("sigterm");
    let mut m = Minion::configure(
        &dir.join("cfg"),
        "sigterm",
        closed_port(),
        "beacond_flush_timeout: 1",
        &memusage(0.05),
    );
    m.start();
    let spool = m.spool_dir();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // Read-only look at the running agent's spool: bytes of its segment files.
        let bytes: u64 = std::fs::read_dir(&spool)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("seg-"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        if bytes >= 4000 {
            break;
        }
        assert!(Instant::now() < deadline, "nothing spooled:\n{}", m.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = Instant::now();
    m.signal(libc::SIGTERM);
    let st = m.wait_exit(Duration::from_secs(10));
    let took = t.elapsed();
    assert!(st.success(), "{st:?}");
    // The flush deadline (1 s) bounds the shutdown, not the master's backoff.
    assert!(took < Duration::from_secs(4), "SIGTERM took {took:?}");
    assert!(m.log().contains("stay in the spool"), "{}", m.log());
    let mut s = beacond::spool::store::Spool::open(&spool, 1 << 20).expect("reopen");
    let n = s.pending();
    let b = s.peek(usize::MAX).expect("peek");
    assert_eq!(b.records.len() as u64, n);
    let uids: std::collections::BTreeSet<String> = b
        .records
        .iter()
        .map(|r| {
            r.event.data["beacond_uid"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(uids.len() as u64, n, "uids are unique");
    eprintln!("sigterm: exited in {took:?} with {n} events kept in the spool");
}

fn reloads(agent: &Agent) -> usize {
    agent.stderr().matches("reloaded configuration").count()
}

fn wait_reloads(agent: &Agent, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while reloads(agent) < n {
        assert!(
            Instant::now() < deadline,
            "reload {n} not done:\n{}",
            agent.stderr()
        );
        // Keep the event pipe drained.
        let _ = agent.next(Duration::from_millis(1));
    }
}

#[test]
fn reload_keeps_unchanged_beacons_with_their_state() {
    // The state that shows: a `run_once` beacon that has run stays done while its config is
    // unchanged, and runs again once its config changes.
    let f = fixture();
    let conf = |mem: &str, once: &str| {
        format!(
            "beacons:\n  once:\n    - beacon_module: memusage\n    - percent: {once}\n    - run_once: True\n    - procfs: {f}\n  memusage:\n    - percent: {mem}\n    - procfs: {f}\n    - interval: 0.1\n"
        )
    };
    let cfg = ConfigDir::new("reloadstate", "").dropin("beacons.conf", &conf("1%", "1%"));
    let agent = Agent::start(cfg.path(), &[]);
    let is_once = |e: &serde_json::Value| e["tag"] == "salt/beacon/reloadstate/once/";
    agent.wait_for(Duration::from_secs(10), "the run_once beacon", is_once);
    // memusage changes, `once` does not: it stays done.
    std::fs::write(cfg.path().join("minion.d/beacons.conf"), conf("2%", "1%")).expect("write");
    agent.signal(libc::SIGHUP);
    wait_reloads(&agent, 1);
    assert!(
        agent.stderr().contains("1 kept, 1 restarted"),
        "{}",
        agent.stderr()
    );
    agent.wait_for(Duration::from_secs(10), "memusage after reload", |e| {
        e["tag"] == "salt/beacon/reloadstate/memusage/"
    });
    let after = agent.collect_for(Duration::from_secs(1));
    assert!(
        !after.iter().any(is_once),
        "the unchanged run_once beacon ran again"
    );
    assert!(after
        .iter()
        .any(|e| e["tag"] == "salt/beacon/reloadstate/memusage/"));
    // An invalid config is rejected whole; the beacons go on.
    std::fs::write(
        cfg.path().join("minion.d/beacons.conf"),
        "beacons:\n  load: [{averages: 5}]\n",
    )
    .expect("write");
    agent.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !agent.stderr().contains("reload rejected") {
        assert!(Instant::now() < deadline, "{}", agent.stderr());
        let _ = agent.next(Duration::from_millis(5));
    }
    agent.wait_for(Duration::from_secs(10), "memusage still running", |e| {
        e["tag"] == "salt/beacon/reloadstate/memusage/"
    });
    // Changing its own config makes it a new beacon: it runs again (the control).
    std::fs::write(cfg.path().join("minion.d/beacons.conf"), conf("2%", "2%")).expect("write");
    agent.signal(libc::SIGHUP);
    agent.wait_for(
        Duration::from_secs(10),
        "once after its config changed",
        is_once,
    );
}

fn proc_stat(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    (fds, rss)
}

#[test]
fn a_thousand_reloads_leak_no_fds_and_no_memory() {
    let f = fixture();
    let conf = |p: u32| {
        format!(
            "beacons:\n  memusage:\n    - percent: {p}%\n    - procfs: {f}\n    - interval: 1\n  swapusage:\n    - percent: 0%\n    - procfs: {f}\n    - interval: 1\n  mem2:\n    - beacon_module: memusage\n    - percent: {p}%\n    - procfs: {f}\n    - interval: 1\n"
        )
    };
    let cfg = ConfigDir::new("reload1000", "").dropin("beacons.conf", &conf(1));
    let agent = Agent::start(cfg.path(), &[]);
    agent.wait_for(Duration::from_secs(10), "first event", |_| true);
    let mut at100 = (0, 0);
    let t = Instant::now();
    for i in 1..=1000 {
        std::fs::write(cfg.path().join("minion.d/beacons.conf"), conf(1 + (i % 2))).expect("write");
        agent.signal(libc::SIGHUP);
        wait_reloads(&agent, i as usize);
        if i == 100 {
            at100 = proc_stat(agent.pid());
        }
    }
    let end = proc_stat(agent.pid());
    eprintln!(
        "1000 reloads in {:.1}s; after 100: {} fds, {:.1} MiB RSS; after 1000: {} fds, {:.1} MiB RSS",
        t.elapsed().as_secs_f64(),
        at100.0,
        at100.1 as f64 / 1048576.0,
        end.0,
        end.1 as f64 / 1048576.0
    );
    assert!(
        agent.stderr().contains("1 kept, 2 restarted"),
        "the reloads restarted beacons"
    );
    assert!(end.0 <= at100.0, "fds grew from {} to {}", at100.0, end.0);
    assert!(
        end.1 <= at100.1 + (2 << 20),
        "RSS grew from {} to {}",
        at100.1,
        end.1
    );
}

#[test]
fn check_names_a_bad_spool_option() {
    let cfg = ConfigDir::new("badspool", "beacond_rate_global: fast\n");
    let out = common::beacond::run(cfg.path(), &["--check"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("beacond_rate_global"), "{}", out.stderr);
    let ok = ConfigDir::new(
        "goodspool",
        "beacond_spool_max_bytes: 1048576\nbeacond_status_interval: 0\n",
    );
    assert_eq!(common::beacond::run(ok.path(), &["--check"]).code, 0);
}
