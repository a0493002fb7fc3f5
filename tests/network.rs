//! `network_settings`, `listening_ports` and `network_info` against real sources: beacond runs
//! inside a network namespace each test creates (`ip netns exec`), links are changed there with
//! `ip -n`, and real sockets are opened there, so the host's own network is never touched and
//! never seen. `network_info` is also checked on fixtures of `/proc/net/dev`, whose counters a
//! test cannot set to chosen values.
mod common;
use common::beacond::*;
use common::netns::{sh, Netns};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(15);

fn change(ev: &Value, iface: &str, attr: &str) -> Option<Value> {
    let tag = ev["tag"].as_str()?;
    if !tag.ends_with(&format!("/network_settings/{iface}")) {
        return None;
    }
    ev["data"]["change"].get(attr).cloned()
}

const BASELINE: &str = "listening_ports: baseline";
const WATCHING: &str = "network_settings: watching rtnetlink";

#[test]
fn network_settings_reports_each_link_and_address_change() {
    let ns = Netns::new();
    let cfg = ConfigDir::new("net1", "").dropin(
        "beacons.conf",
        "beacons:\n  network_settings:\n    - interfaces:\n        v0:\n          mtu:\n          ipaddr:\n          operstate:\n          promiscuity:\n            onvalue: 1\n        '^br':\n          kind:\n          ports:\n",
    );
    let agent = Agent::start_in(&ns.exec_prefix(), cfg.path(), &[]);
    agent.wait_log(WATCHING, T);

    ns.ip(&["link", "set", "v0", "mtu", "1400"]);
    let ev = agent.wait_for(T, "mtu 1400", |e| change(e, "v0", "mtu").is_some());
    assert_eq!(ev["tag"], "salt/beacon/net1/network_settings/v0");
    assert_eq!(data_keys(&ev), ["_stamp", "change", "id", "interface"]);
    assert_eq!(ev["data"]["interface"], "v0");
    assert_eq!(ev["data"]["change"], serde_json::json!({"mtu": 1400}));

    ns.ip(&["addr", "add", "10.77.0.1/24", "dev", "v0"]);
    let ev = agent.wait_for(T, "ipaddr", |e| change(e, "v0", "ipaddr").is_some());
    assert_eq!(
        ev["data"]["change"]["ipaddr"],
        serde_json::json!([["10.77.0.1", 24]])
    );

    // onvalue 1: promiscuity going to 1 fires, going back to 0 does not.
    ns.ip(&["link", "set", "v0", "promisc", "on"]);
    let ev = agent.wait_for(T, "promiscuity", |e| {
        change(e, "v0", "promiscuity").is_some()
    });
    assert_eq!(ev["data"]["change"]["promiscuity"], 1);
    ns.ip(&["link", "set", "v0", "promisc", "off"]);

    // Link state (operstate follows when both ends are up).
    ns.ip(&["link", "set", "v1", "up"]);
    ns.ip(&["link", "set", "v0", "up"]);
    agent.wait_for(T, "operstate UP", |e| {
        change(e, "v0", "operstate").is_some_and(|v| v == "UP")
    });

    // A bridge appearing (regex key) and gaining a port.
    ns.ip(&["link", "add", "br7", "type", "bridge"]);
    let ev = agent.wait_for(T, "bridge kind", |e| change(e, "br7", "kind").is_some());
    assert_eq!(ev["data"]["change"]["kind"], "bridge");
    ns.ip(&["link", "set", "v1", "master", "br7"]);
    let ev = agent.wait_for(T, "bridge ports", |e| {
        change(e, "br7", "ports").is_some_and(|p| p.as_array().is_some_and(|a| a.len() == 1))
    });
    assert!(ev["data"]["change"]["ports"][0].is_u64());

    // Nothing about promiscuity 0, nor duplicates: every event left is a real change.
    for ev in agent.collect_for(Duration::from_millis(800)) {
        assert!(
            change(&ev, "v0", "promiscuity").is_none(),
            "promiscuity 0 fired: {ev}"
        );
    }
}

#[test]
fn network_settings_coalesce_and_interval_batching() {
    let ns = Netns::new();
    let cfg = ConfigDir::new("net2", "").dropin(
        "beacons.conf",
        "beacons:\n  network_settings:\n    - coalesce: True\n    - interval: 1\n    - interfaces:\n        'v[01]':\n          mtu:\n",
    );
    let agent = Agent::start_in(&ns.exec_prefix(), cfg.path(), &[]);
    agent.wait_log(WATCHING, T);
    ns.ip(&["link", "set", "v0", "mtu", "1400"]);
    let ev = agent.wait_for(T, "coalesced result", |e| {
        e["tag"] == "salt/beacon/net2/network_settings/result"
    });
    assert_eq!(data_keys(&ev), ["_stamp", "changes", "id"]);
    assert_eq!(
        ev["data"]["changes"],
        serde_json::json!({"v0": {"mtu": 1400}})
    );
    // Within the interval: batched, reported once with the net values.
    ns.ip(&["link", "set", "v0", "mtu", "1300"]);
    ns.ip(&["link", "set", "v1", "mtu", "1280"]);
    ns.ip(&["link", "set", "v0", "mtu", "1200"]);
    let ev = agent.wait_for(T, "batched result", |e| {
        e["tag"] == "salt/beacon/net2/network_settings/result"
    });
    assert_eq!(
        ev["data"]["changes"],
        serde_json::json!({"v0": {"mtu": 1200}, "v1": {"mtu": 1280}})
    );
}

/// A process in the namespace holding a listening socket until its stdin closes.
struct Listener {
    child: Child,
    port: u16,
}

impl Listener {
    fn start(ns: &Netns, kind: &str, family: &str, addr: &str) -> Listener {
        let code = format!(
            "import socket,sys\ns=socket.socket(socket.{family},socket.{kind})\ns.bind(('{addr}',0))\n{}print(s.getsockname()[1],flush=True)\nsys.stdin.read()\n",
            if kind == "SOCK_STREAM" { "s.listen()\n" } else { "" }
        );
        let mut child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "/usr/bin/python3", "-c", &code])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 listener");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("port");
        let port = line.trim().parse().expect("port number");
        Listener { child, port }
    }

    /// Close its stdin: the process exits and its socket closes.
    fn close(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn port_event(ev: &Value, kind: &str, proto: &str, port: u16) -> bool {
    ev["tag"]
        .as_str()
        .is_some_and(|t| t.ends_with(&format!("/listening_ports/{kind}")))
        && ev["data"]["proto"] == proto
        && ev["data"]["port"] == port
}

#[test]
fn listening_ports_opened_and_closed_with_owner() {
    let ns = Netns::new();
    let cfg = ConfigDir::new("net3", "").dropin(
        "beacons.conf",
        "beacons:\n  listening_ports:\n    - interval: 0.2\n",
    );
    let agent = Agent::start_in(&ns.exec_prefix(), cfg.path(), &[]);
    // The first evaluation is the baseline (no events); sockets opened after it are reported.
    agent.wait_log(BASELINE, T);
    let tcp = Listener::start(&ns, "SOCK_STREAM", "AF_INET", "0.0.0.0");
    let ev = agent.wait_for(T, "tcp opened", |e| {
        port_event(e, "opened", "tcp", tcp.port)
    });
    assert_eq!(ev["tag"], "salt/beacon/net3/listening_ports/opened");
    assert_eq!(
        data_keys(&ev),
        ["_stamp", "address", "id", "inode", "pid", "port", "process", "proto", "uid", "user"]
    );
    assert_eq!(ev["data"]["address"], "0.0.0.0");
    assert_eq!(ev["data"]["pid"], tcp.child.id());
    assert!(
        ev["data"]["process"]
            .as_str()
            .is_some_and(|p| p.starts_with("python3")),
        "{ev}"
    );
    assert_eq!(ev["data"]["user"], "root");

    let udp6 = Listener::start(&ns, "SOCK_DGRAM", "AF_INET6", "::");
    let ev = agent.wait_for(T, "udp6 opened", |e| {
        port_event(e, "opened", "udp6", udp6.port)
    });
    assert_eq!(ev["data"]["address"], "::");
    assert_eq!(ev["data"]["pid"], udp6.child.id());

    let (tcp_port, tcp_pid) = (tcp.port, tcp.child.id());
    tcp.close();
    let ev = agent.wait_for(T, "tcp closed", |e| {
        port_event(e, "closed", "tcp", tcp_port)
    });
    // The owner is the one seen when it opened.
    assert_eq!(ev["data"]["pid"], tcp_pid);
    let udp6_port = udp6.port;
    udp6.close();
    agent.wait_for(T, "udp6 closed", |e| {
        port_event(e, "closed", "udp6", udp6_port)
    });
}

#[test]
fn listening_ports_fixture_and_protocol_filter() {
    // A fixture procfs: the tables as the kernel prints them, no processes (owner unknown).
    let dir = TempDir::new("lp-fixture");
    std::fs::create_dir_all(dir.join("net")).expect("net");
    std::fs::write(
        dir.join("net/tcp"),
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5001 1 0000000000000000 100 0 0 10 0\n   1: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 5002 1 0000000000000000 100 0 0 10 0\n",
    )
    .expect("tcp");
    std::fs::write(
        dir.join("net/udp"),
        "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n  0: 00000000:0035 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 5003 2 0000000000000000 0\n",
    )
    .expect("udp");
    let cfg = ConfigDir::new("net4", "").dropin(
        "beacons.conf",
        &format!(
            "beacons:\n  listening_ports:\n    - procfs: {}\n    - source: proc\n    - emitatstartup: True\n    - protocols: [tcp]\n",
            dir.path().display()
        ),
    );
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    // Only the listening tcp socket (not the connection, not udp: filtered out).
    assert_eq!(out.events.len(), 1, "{:?}", out.events);
    let ev = &out.events[0];
    assert_eq!(ev["data"]["address"], "127.0.0.1");
    assert_eq!(ev["data"]["port"], 8080);
    assert_eq!(ev["data"]["inode"], 5001);
    assert_eq!(ev["data"]["pid"], Value::Null);
}

#[test]
fn network_info_thresholds_on_fixture_and_real_proc() {
    let dir = TempDir::new("ni-fixture");
    std::fs::create_dir_all(dir.join("net")).expect("net");
    std::fs::write(
        dir.join("net/dev"),
        "Inter-|   Receive                                                |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    lo:  1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0\n  eth0: 500000   4000    3    7    0     0          0         0   200000    1500    1    2    0     0       0          0\n",
    )
    .expect("dev");
    let cfg = ConfigDir::new("net5", "").dropin(
        "beacons.conf",
        &format!(
            "beacons:\n  network_info:\n    - procfs: {}\n    - interfaces:\n        eth0:\n          type: greater\n          errin: 2\n        lo:\n          type: equal\n          bytes_sent: 999\n        missing0:\n          bytes_sent: 1\n",
            dir.path().display()
        ),
    );
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.events.len(), 1, "{:?}", out.events);
    let ev = &out.events[0];
    assert_eq!(ev["tag"], "salt/beacon/net5/network_info/");
    assert_eq!(data_keys(ev), ["_stamp", "id", "interface", "network_info"]);
    assert_eq!(
        ev["data"]["network_info"],
        serde_json::json!({"bytes_sent": 200000, "bytes_recv": 500000, "packets_sent": 1500,
            "packets_recv": 4000, "errin": 3, "errout": 1, "dropin": 7, "dropout": 2})
    );

    // `less`, and the real /proc/net/dev of a fresh namespace (lo only, no traffic yet).
    let ns = Netns::new();
    let cfg = ConfigDir::new("net6", "").dropin(
        "beacons.conf",
        "beacons:\n  network_info:\n    - interfaces:\n        v0:\n          type: less\n          bytes_sent: 1\n",
    );
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(bin())
        .arg("-c")
        .arg(cfg.path())
        .arg("--once")
        .output()
        .expect("beacond --once in netns");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let events: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(events.len(), 1, "{stdout}");
    assert_eq!(events[0]["data"]["interface"], "v0");
    assert_eq!(events[0]["data"]["network_info"]["bytes_sent"], 0);
}

#[test]
fn shipped_network_watch_dropin() {
    let text = std::fs::read_to_string(repo().join("beacons/network-watch.conf")).expect("drop-in");
    let cfg = ConfigDir::new("net7", "").dropin("network-watch.conf", &text);
    let out = Command::new(bin())
        .arg("-c")
        .arg(cfg.path())
        .arg("--check")
        .output()
        .expect("--check");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // In a namespace, with the interface name rewritten to the test's veth and a faster poll.
    let ns = Netns::new();
    let text = text
        .replace("eth0:", "v0:")
        .replace("- interval: 5", "- interval: 0.2");
    let cfg = ConfigDir::new("net8", "").dropin("network-watch.conf", &text);
    let agent = Agent::start_in(&ns.exec_prefix(), cfg.path(), &[]);
    agent.wait_log(WATCHING, T);
    ns.ip(&["addr", "add", "10.78.0.1/24", "dev", "v0"]);
    agent.wait_for(T, "ipaddr", |e| change(e, "v0", "ipaddr").is_some());
    agent.wait_log(BASELINE, T);
    let l = Listener::start(&ns, "SOCK_STREAM", "AF_INET6", "::");
    agent.wait_for(T, "opened", |e| port_event(e, "opened", "tcp6", l.port));
}

#[test]
fn listening_ports_netlink_and_proc_sources_agree() {
    let ns = Netns::new();
    let _a = Listener::start(&ns, "SOCK_STREAM", "AF_INET", "0.0.0.0");
    let _b = Listener::start(&ns, "SOCK_STREAM", "AF_INET6", "::");
    let _c = Listener::start(&ns, "SOCK_DGRAM", "AF_INET", "0.0.0.0");
    let _d = Listener::start(&ns, "SOCK_DGRAM", "AF_INET6", "::");
    let mut seen = Vec::new();
    for source in ["netlink", "proc"] {
        let cfg = ConfigDir::new("net9", "").dropin(
            "beacons.conf",
            &format!(
                "beacons:\n  listening_ports:\n    - emitatstartup: True\n    - source: {source}\n"
            ),
        );
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(bin())
            .arg("-c")
            .arg(cfg.path())
            .arg("--once")
            .output()
            .expect("beacond --once in netns");
        let mut rows: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let v: Value = serde_json::from_str(l).expect("json");
                let d = &v["data"];
                format!(
                    "{} {} {} {} {} {}",
                    d["proto"], d["address"], d["port"], d["inode"], d["pid"], d["user"]
                )
            })
            .collect();
        rows.sort();
        seen.push(rows);
    }
    assert_eq!(seen[0].len(), 4, "{:?}", seen[0]);
    assert_eq!(seen[0], seen[1]);
}

#[test]
fn network_settings_overflow_is_reported_and_state_recovered() {
    let ns = Netns::new();
    let cfg = ConfigDir::new("net10", "").dropin(
        "beacons.conf",
        "beacons:\n  network_settings:\n    - interfaces:\n        v0:\n          mtu:\n",
    );
    let agent = Agent::start_in(&ns.exec_prefix(), cfg.path(), &[]);
    agent.wait_log(WATCHING, T);
    // Freeze beacond, then flood its socket far past the kernel's receive buffer.
    let pid = agent.pid().to_string();
    sh(&["kill", "-STOP", &pid]);
    let batch = TempDir::new("net10-batch");
    let mut lines = String::new();
    for i in 0..4000 {
        lines.push_str(&format!("link set v0 mtu {}\n", 1000 + i % 400));
    }
    lines.push_str("link set v0 mtu 1450\n");
    std::fs::write(batch.join("cmds"), lines).expect("batch");
    let st = Command::new("ip")
        .args(["-n", &ns.name, "-batch"])
        .arg(batch.join("cmds"))
        .status()
        .expect("ip -batch");
    sh(&["kill", "-CONT", &pid]);
    assert!(st.success());
    // The loss is reported, not silent...
    let ev = agent.wait_for(T, "overflow", |e| {
        e["tag"] == "salt/beacon/net10/network_settings/overflow"
    });
    assert!(ev["data"]["overflow"].is_string());
    // ...and the state is re-read, so the final value is right.
    agent.wait_for(T, "final mtu", |e| {
        change(e, "v0", "mtu").is_some_and(|v| v == 1450)
    });
}
