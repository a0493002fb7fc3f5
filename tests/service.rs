//! The `service` beacon against real sources: a real `dbus-daemon` (a private bus per test) with
//! a stand-in for systemd, since systemd cannot run as PID 1 in this sandbox
//! (`tests/fixtures/service/fake_systemd.py`, dbus-python: needs Debian's python3-dbus and
//! python3-gi); the `systemctl` polling fallback against a stand-in `systemctl` script (no
//! systemd to ask here); and the `/proc` fallback against real processes.
mod common;
use common::beacond::*;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(15);

/// A private `dbus-daemon` listening on a socket in a temp dir; killed on drop.
struct PrivateBus {
    daemon: Child,
    address: String,
    _dir: TempDir,
}

impl PrivateBus {
    fn start(label: &str) -> PrivateBus {
        let dir = TempDir::new(label);
        let conf = dir.join("bus.conf");
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>custom</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                dir.join("bus").display()
            ),
        )
        .expect("bus.conf");
        let mut daemon = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (apt-get install dbus-daemon)");
        let mut line = String::new();
        BufReader::new(daemon.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("bus address");
        assert!(line.starts_with("unix:"), "dbus-daemon printed {line:?}");
        PrivateBus {
            daemon,
            address: line.trim().to_owned(),
            _dir: dir,
        }
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// The systemd stand-in on a bus; commands go to its stdin. Killed on drop.
struct FakeSystemd {
    child: Child,
    stdin: ChildStdin,
}

impl FakeSystemd {
    fn start(bus: &PrivateBus, units: &[&str]) -> FakeSystemd {
        let mut child = Command::new("/usr/bin/python3")
            .arg(repo().join("tests/fixtures/service/fake_systemd.py"))
            .arg(&bus.address)
            .args(units)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("fake systemd");
        let stdin = child.stdin.take().expect("stdin");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("fake systemd output");
        assert_eq!(
            line.trim(),
            "ready",
            "fake systemd did not start (python3-dbus and python3-gi installed?)"
        );
        FakeSystemd { child, stdin }
    }

    fn send(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").expect("command to fake systemd");
        self.stdin.flush().expect("flush");
    }
}

impl Drop for FakeSystemd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `beacond --check`, stdout and stderr together.
fn check(dir: &std::path::Path) -> Output {
    let mut out = run(dir, &["--check"]);
    out.stderr.push_str(&out.stdout);
    out
}

fn is(ev: &Value, service: &str, running: bool) -> bool {
    ev["tag"]
        .as_str()
        .is_some_and(|t| t.ends_with(&format!("/service/{service}")))
        && ev["data"][service]["running"] == running
}

#[test]
fn dbus_onchangeonly_fires_once_per_real_change() {
    let bus = PrivateBus::start("svc-bus1");
    let mut systemd = FakeSystemd::start(&bus, &["nginx.service=active"]);
    let pidfile = TempDir::new("svc-pid");
    std::fs::write(pidfile.join("sshd.pid"), "4242\n").expect("pid file");
    let cfg = ConfigDir::new("svc1", "").dropin(
        "beacons.conf",
        &format!(
            "beacons:\n  service:\n    - services:\n        nginx:\n          onchangeonly: True\n        sshd:\n          onchangeonly: True\n          uncleanshutdown: {}\n    - dbus_address: '{}'\n    - backend: dbus\n",
            pidfile.join("sshd.pid").display(),
            bus.address
        ),
    );
    let agent = Agent::start(cfg.path(), &[]);
    // emitatstartup (default True): one event each with the state at start.
    let nginx = agent.wait_for(T, "nginx running at startup", |e| is(e, "nginx", true));
    assert_eq!(nginx["tag"], "salt/beacon/svc1/service/nginx");
    assert_eq!(data_keys(&nginx), ["_stamp", "id", "nginx", "service_name"]);
    assert_eq!(nginx["data"]["service_name"], "nginx");
    // sshd.service was not loaded: LoadUnit loaded it (inactive); the pid file is there, so
    // the shutdown was unclean.
    let sshd = agent.wait_for(T, "sshd stopped at startup", |e| is(e, "sshd", false));
    assert_eq!(sshd["data"]["sshd"]["uncleanshutdown"], true);

    systemd.send("set nginx.service failed");
    agent.wait_for(T, "nginx stopped", |e| is(e, "nginx", false));
    // Not a change of `running`: no event.
    systemd.send("set nginx.service inactive");
    systemd.send("set nginx.service active");
    agent.wait_for(T, "nginx running again", |e| is(e, "nginx", true));
    systemd.send("set nginx.service reloading");
    // A change announced by invalidation only: the beacon reads the property back.
    systemd.send("invalidate sshd.service active");
    let up = agent.wait_for(T, "sshd running", |e| is(e, "sshd", true));
    assert!(up["data"]["sshd"].get("uncleanshutdown").is_none());
    // No storm: nothing else arrives (the window is how absence is observed).
    let rest = agent.collect_for(Duration::from_millis(1500));
    assert!(rest.is_empty(), "unexpected events: {rest:?}");
}

/// Any local client can send a signal straight to beacond's connection: only systemd's own
/// (the current owner of org.freedesktop.systemd1) may count. A second connection claims the
/// name in a forged NameOwnerChanged and forges "nginx failed": no event; systemd's real change
/// still gives one.
#[test]
fn dbus_ignores_signals_not_sent_by_systemd() {
    let bus = PrivateBus::start("svc-forge");
    let mut systemd = FakeSystemd::start(&bus, &["nginx.service=active", "sshd.service=inactive"]);
    let cfg = ConfigDir::new("svcforge", "").dropin(
        "beacons.conf",
        &format!(
            "beacons:\n  service:\n    - services:\n        nginx:\n          onchangeonly: True\n        sshd:\n          onchangeonly: True\n    - dbus_address: '{}'\n    - backend: dbus\n",
            bus.address
        ),
    );
    let agent = Agent::start(cfg.path(), &[]);
    agent.wait_for(T, "nginx running at startup", |e| is(e, "nginx", true));
    agent.wait_for(T, "sshd stopped at startup", |e| is(e, "sshd", false));
    systemd.send("forge nginx.service failed");
    // A real change sent after the forgery: once its event is here, the forgery was handled.
    systemd.send("set sshd.service active");
    let mut seen = Vec::new();
    let deadline = Instant::now() + T;
    while !seen.iter().any(|e| is(e, "sshd", true)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match agent.next(left) {
            Some(e) => seen.push(e),
            None => panic!("no sshd running event; stderr:\n{}", agent.stderr()),
        }
    }
    seen.extend(agent.collect_for(Duration::from_millis(500)));
    assert!(
        !seen.iter().any(|e| is(e, "nginx", false)),
        "a forged signal made an event: {seen:?}"
    );
    // systemd itself is still heard (the forged NameOwnerChanged did not replace it).
    systemd.send("set nginx.service failed");
    agent.wait_for(T, "nginx stopped (real)", |e| is(e, "nginx", false));
}

#[test]
fn dbus_without_onchangeonly_fires_every_interval_as_salt() {
    let bus = PrivateBus::start("svc-bus2");
    let _systemd = FakeSystemd::start(&bus, &["cron.service=active"]);
    let cfg = ConfigDir::new("svc2", "").dropin(
        "beacons.conf",
        &format!(
            "beacons:\n  service:\n    - services:\n        cron: {{}}\n    - dbus_address: '{}'\n    - interval: 0.3\n",
            bus.address
        ),
    );
    let agent = Agent::start(cfg.path(), &[]);
    let start = Instant::now();
    for _ in 0..4 {
        agent.wait_for(T, "cron event", |e| is(e, "cron", true));
    }
    // Four events take at least three intervals: they are paced, not a burst.
    assert!(start.elapsed() >= Duration::from_millis(850));
}

#[test]
fn dbus_delay_fires_after_the_delay() {
    let bus = PrivateBus::start("svc-bus3");
    let mut systemd = FakeSystemd::start(&bus, &["app.service=active"]);
    let cfg = ConfigDir::new("svc3", "").dropin(
        "beacons.conf",
        &format!(
            "beacons:\n  service:\n    - services:\n        app:\n          onchangeonly: True\n          delay: 1\n          emitatstartup: False\n    - dbus_address: '{}'\n",
            bus.address
        ),
    );
    let agent = Agent::start(cfg.path(), &["-v"]);
    // Wait until the beacon watches the bus (there is no startup event to wait for).
    let deadline = Instant::now() + T;
    while !agent.stderr().contains("watching systemd over D-Bus") {
        assert!(Instant::now() < deadline, "no start: {}", agent.stderr());
        std::thread::sleep(Duration::from_millis(20));
    }
    let changed = Instant::now();
    systemd.send("set app.service failed");
    agent.wait_for(T, "app stopped", |e| is(e, "app", false));
    // Salt: int(round(elapsed)) > delay, so 1.5 s for delay 1.
    assert!(
        changed.elapsed() >= Duration::from_millis(1400),
        "fired after {:?}",
        changed.elapsed()
    );
    let rest = agent.collect_for(Duration::from_millis(1000));
    assert!(rest.is_empty(), "unexpected events: {rest:?}");
}

#[test]
fn falls_back_to_polling_systemctl_without_a_bus() {
    // No systemd here: a stand-in `systemctl` answers `show -p ActiveState` from state files.
    let dir = TempDir::new("svc-ctl");
    std::fs::create_dir_all(dir.join("run-systemd")).expect("systemd run dir");
    let states = dir.join("states");
    std::fs::create_dir_all(&states).expect("states");
    std::fs::write(states.join("nginx.service"), "active").expect("state");
    let script = dir.join("systemctl");
    write_exe(
        &script,
        &format!(
            "#!/bin/sh\n# stand-in for `systemctl show --property=ActiveState -- UNIT...`\n[ \"$1\" = show ] || exit 1\nfor u in \"$@\"; do case \"$u\" in show|--*) ;; *) echo \"ActiveState=$(cat {}/$u 2>/dev/null || echo inactive)\"; echo;; esac; done\n",
            states.display()
        ),
    );
    let cfg = ConfigDir::new("svc4", "").dropin(
        "beacons.conf",
        &format!(
            "beacons:\n  service:\n    - services:\n        nginx:\n          onchangeonly: True\n    - dbus_address: unix:path={}\n    - systemd_run_dir: {}\n    - systemctl: {}\n    - interval: 0.2\n",
            dir.join("no-bus").display(),
            dir.join("run-systemd").display(),
            script.display()
        ),
    );
    let agent = Agent::start(cfg.path(), &[]);
    agent.wait_for(T, "nginx running", |e| is(e, "nginx", true));
    std::fs::write(states.join("nginx.service"), "failed").expect("state");
    agent.wait_for(T, "nginx stopped", |e| is(e, "nginx", false));
    // Polled every 0.2 s, but only a change fires.
    let rest = agent.collect_for(Duration::from_millis(1200));
    assert!(rest.is_empty(), "unexpected events: {rest:?}");
    assert!(agent.stderr().contains("Systemctl"), "{}", agent.stderr());
}

#[test]
fn falls_back_to_proc_without_systemd() {
    // A real process whose command line names the "service".
    let name = format!("beacondsvc{}", std::process::id());
    let mut proc_ = Command::new("bash")
        .args(["-c", &format!("exec -a {name} sleep 300")])
        .spawn()
        .expect("sleep");
    let dir = TempDir::new("svc-proc");
    let cfg = ConfigDir::new("svc5", "").dropin(
        "beacons.conf",
        &format!(
            "beacons:\n  service:\n    - services:\n        {name}:\n          onchangeonly: True\n    - dbus_address: unix:path={}\n    - systemd_run_dir: {}\n    - interval: 0.2\n",
            dir.join("no-bus").display(),
            dir.join("no-systemd").display(),
        ),
    );
    let agent = Agent::start(cfg.path(), &[]);
    agent.wait_for(T, "running", |e| is(e, &name, true));
    let _ = proc_.kill();
    let _ = proc_.wait();
    agent.wait_for(T, "stopped", |e| is(e, &name, false));
}

#[test]
fn bad_service_options_are_precise_errors() {
    let cfg = ConfigDir::new("svc6", "").dropin(
        "bad.conf",
        "beacons:\n  service:\n    - services:\n        nginx:\n          onchangeonly: yes please\n",
    );
    let out = check(cfg.path());
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("bad.conf:5")
            && out
                .stderr
                .contains("services.nginx.onchangeonly must be True or False"),
        "{}",
        out.stderr
    );
}

#[test]
fn shipped_service_watch_dropin() {
    let text = std::fs::read_to_string(repo().join("beacons/service-watch.conf")).expect("drop-in");
    // As shipped: valid.
    let cfg = ConfigDir::new("svc7", "").dropin("service-watch.conf", &text);
    let out = check(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Run against the stand-in systemd: the bus address rewritten to the private bus.
    let bus = PrivateBus::start("svc-bus7");
    let mut systemd = FakeSystemd::start(
        &bus,
        &[
            "sshd.service=active",
            "salt-minion.service=active",
            "nginx.service=active",
        ],
    );
    let cfg = ConfigDir::new("svc7b", "").dropin(
        "service-watch.conf",
        &format!("{text}    - dbus_address: '{}'\n", bus.address),
    );
    let agent = Agent::start(cfg.path(), &[]);
    for svc in ["sshd", "salt-minion", "nginx"] {
        agent.wait_for(T, svc, |e| is(e, svc, true));
    }
    systemd.send("set nginx.service failed");
    let ev = agent.wait_for(T, "nginx stopped", |e| is(e, "nginx", false));
    assert_eq!(ev["data"]["nginx"]["uncleanshutdown"], false);
}
