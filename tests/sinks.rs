//! Sinks beside the master (`beacond_sinks:`), against receivers the test starts: Logstash and
//! Splunk are not available here, so a TCP listener reading JSON lines stands in for Logstash's
//! `tcp` input with `json_lines` (and Splunk's TCP input), and a small HTTP server that checks
//! the token and answers in HEC's format (with indexer acknowledgment) stands in for Splunk
//! HEC (`tests/common/receivers.rs`); syslog goes through a real `rsyslogd` (Debian package
//! rsyslog). The master is a real salt-master (3007).
mod common;
use common::faults::{self, uid_seq, Master, Minion};
use common::receivers::{free_port, HecServer, LineReceiver, Rsyslog};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

const TOKEN: &str = "0a1b2c3d-beac-0d00-5151-5plunk7ok3n0";
const BATCH: u64 = 100;

fn wait_until(timeout: Duration, what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The sink's spool id (the prefix of the `beacond_uid`s it sends).
fn spool_id(m: &Minion, sink: &str) -> String {
    let p = m.dir.join("cache/beacond/sinks").join(sink).join("id");
    std::fs::read_to_string(&p)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Sequence numbers of a sink's own uids, in arrival order.
fn seqs(records: &[Value], id: &str) -> Vec<u64> {
    records
        .iter()
        .filter_map(|r| {
            let (i, s) = r["beacond_uid"].as_str()?.rsplit_once('-')?;
            (i == id).then(|| s.parse().ok()).flatten()
        })
        .collect()
}

/// The sink's spool as the next start would see it: (last seq assigned, pending).
fn sink_spool(m: &Minion, sink: &str) -> (u64, u64) {
    let dir = m.dir.join("cache/beacond/sinks").join(sink);
    let s = beacond::spool::store::Spool::open(&dir, 64 << 20).expect("sink spool");
    (s.next_seq() - 1, s.pending())
}

fn records_of(got: &common::receivers::Got) -> Vec<Value> {
    got.lock().map(|g| g.clone()).unwrap_or_default()
}

fn syslog_json(r: &Rsyslog) -> Vec<Value> {
    r.records().into_iter().map(|x| x.4).collect()
}

/// Once, in order: a sink's first `n` records carry its seqs 1..=n exactly.
fn assert_once_in_order(name: &str, s: &[u64], n: usize) {
    let want: Vec<u64> = (1..=n as u64).collect();
    assert!(s.len() >= n, "{name}: only {} records", s.len());
    assert_eq!(&s[..n], &want[..], "{name}: not once and in order");
}

/// Nothing missing from 1..=last; duplicates (at-least-once) within a batch per crash/outage.
fn assert_complete(name: &str, s: &[u64], last: u64, max_dups: u64) {
    let mut t: BTreeMap<u64, u64> = BTreeMap::new();
    for q in s {
        *t.entry(*q).or_default() += 1;
    }
    let missing: Vec<u64> = (1..=last).filter(|q| !t.contains_key(q)).collect();
    assert!(
        missing.is_empty(),
        "{name}: missing seqs {missing:?} of 1..={last}"
    );
    let dups: u64 = t.values().map(|n| n - 1).sum();
    assert!(
        dups <= max_dups,
        "{name}: {dups} duplicates (bound {max_dups})"
    );
    assert!(
        t.keys().all(|q| *q <= last),
        "{name}: seqs beyond the last assigned ({last})"
    );
}

fn sinks_conf(elk: u16, hec: u16, syslog: u16, dead: u16) -> String {
    format!(
        "beacond_rate_per_beacon: 0\nbeacond_rate_global: 0\nbeacond_status_interval: 0\n\
         beacond_flush_timeout: 30\nbeacond_replay_batch: {BATCH}\n\
         beacond_sinks:\n\
         \x20 elk:\n    type: tcp_json\n    address: 127.0.0.1:{elk}\n    tags: ['salt/beacon/*/steady/*']\n\
         \x20 splunk:\n    type: splunk_hec\n    url: http://127.0.0.1:{hec}\n    token: {TOKEN}\n    sourcetype: 'salt:beacon'\n    index: salt\n    ack: True\n    tags: ['salt/beacon/*/steady/*']\n\
         \x20 siem:\n    type: syslog\n    transport: tcp\n    address: 127.0.0.1:{syslog}\n    facility: auth\n    tags: ['salt/beacon/*/steady/*']\n\
         \x20 dead:\n    type: tcp_json\n    address: 127.0.0.1:{dead}\n    spool_max_bytes: 16384\n    tags: ['salt/beacon/*']\n"
    )
}

#[test]
fn every_sink_survives_an_outage_and_a_kill_and_a_dead_sink_holds_nothing_back() {
    let Some(venv) = faults::require_salt("3007") else {
        return;
    };
    let root = common::beacond::TempDir::new("sinks");
    let fixture = common::beacond::repo().join("tests/fixtures/proc-high");
    let mut master = Master::start(&venv, &root.join("master"));
    let l = master.listen("salt/beacon/");
    let seen = l.seen.clone();
    let mut elk = LineReceiver::start();
    let mut hec = HecServer::start(TOKEN);
    let mut rsys = Rsyslog::start(&root.join("rsyslog"));
    // Nothing ever listens there: the sink that is down forever.
    let dead = free_port();
    let id = format!("sinks-{}", std::process::id());
    let beacons = format!(
        "beacons:\n  steady:\n    - beacon_module: memusage\n    - percent: 1%\n    - procfs: {}\n    - interval: 0.1\n",
        fixture.display()
    );
    let mut m = Minion::configure(
        &root.join("minion"),
        &id,
        master.ret_port,
        &sinks_conf(elk.port(), hec.port(), rsys.port, dead),
        &beacons,
    );
    m.start();

    // Steady state: every sink gets the stream once and in order.
    let n = 20;
    wait_until(Duration::from_secs(60), "20 events at every sink", || {
        records_of(&elk.got).len() >= n
            && records_of(&hec.got).len() >= n
            && syslog_json(&rsys).len() >= n
    });
    let ids: BTreeMap<&str, String> = ["elk", "splunk", "siem", "dead"]
        .iter()
        .map(|s| (*s, spool_id(&m, s)))
        .collect();
    assert_eq!(
        ids.values().collect::<BTreeSet<_>>().len(),
        4,
        "one spool per sink"
    );
    assert_once_in_order("elk", &seqs(&records_of(&elk.got), &ids["elk"]), n);
    assert_once_in_order("splunk", &seqs(&records_of(&hec.got), &ids["splunk"]), n);
    assert_once_in_order("siem", &seqs(&syslog_json(&rsys), &ids["siem"]), n);

    // The format mapping: tag, minion id, beacon, the data as fields, _stamp as the time.
    let first = records_of(&elk.got)[0].clone();
    assert_eq!(first["tag"], format!("salt/beacon/{id}/steady/"));
    assert_eq!(first["minion_id"], id.as_str());
    assert_eq!(first["beacon"], "steady");
    assert!(first["memusage"].is_number(), "{first}");
    assert!(first["_stamp"].is_string(), "{first}");
    let env = hec
        .envelopes
        .lock()
        .map(|e| e[0].clone())
        .unwrap_or_default();
    assert_eq!(env["host"], id.as_str());
    assert_eq!(env["sourcetype"], "salt:beacon");
    assert_eq!(env["index"], "salt");
    assert_eq!(env["fields"]["tag"], format!("salt/beacon/{id}/steady/"));
    let stamp = env["event"]["_stamp"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let t = env["time"].as_f64().unwrap_or_default();
    assert_eq!(
        beacond::transport::sinks::stamp_epoch(&stamp).map(|s| (s * 1e6).round()),
        Some((t * 1e6).round()),
        "HEC time is _stamp"
    );
    assert_eq!(
        *hec.rejected.lock().expect("lock"),
        0,
        "the token was accepted"
    );
    let (host, app, msgid, sev, _) = rsys.records()[0].clone();
    assert_eq!(
        (host.as_str(), app.as_str(), msgid.as_str(), sev.as_str()),
        (id.as_str(), "beacond", "steady", "6")
    );

    // Every receiver down for 30 s; beacond SIGKILLed meanwhile and started again.
    let down = Instant::now();
    elk.down();
    hec.down();
    rsys.down();
    let log_has = |s: &str| m.log().contains(s);
    wait_until(
        Duration::from_secs(20),
        "the sinks noticing the outage",
        || {
            ["sink 'elk'", "sink 'splunk'", "sink 'siem'"]
                .iter()
                .all(|s| log_has(&format!("cannot deliver events (kept in the spool): {s}")))
        },
    );
    std::thread::sleep(Duration::from_secs(5));
    m.kill();
    m.start();
    std::thread::sleep(Duration::from_secs(30).saturating_sub(down.elapsed()));
    elk.up();
    hec.up();
    rsys.up();
    let (before_elk, before_hec, before_sys) = (
        records_of(&elk.got).len(),
        records_of(&hec.got).len(),
        syslog_json(&rsys).len(),
    );
    // The backlog (~300 events each) drains paced, then the stream goes on.
    wait_until(
        Duration::from_secs(60),
        "every sink delivering again",
        || {
            records_of(&elk.got).len() > before_elk + 300
                && records_of(&hec.got).len() > before_hec + 300
                && syslog_json(&rsys).len() > before_sys + 300
        },
    );
    m.terminate(Duration::from_secs(90));

    for (name, recs) in [
        ("elk", records_of(&elk.got)),
        ("splunk", records_of(&hec.got)),
        ("siem", syslog_json(&rsys)),
    ] {
        let (last, pending) = sink_spool(&m, name);
        assert_eq!(
            pending,
            0,
            "{name}: left in its spool after SIGTERM\n{}",
            m.log()
        );
        // One batch may be resent per crash and per outage (at-least-once).
        assert_complete(name, &seqs(&recs, &ids[name]), last, 2 * BATCH);
    }
    assert!(
        records_of(&elk.got).iter().all(Value::is_object),
        "elk: a line that is not a JSON object"
    );

    // The dead sink held nothing back: the master has every event, and the dead sink's spool
    // bound was exceeded and reported to the master as a beacond/dropped event naming it.
    let (dead_last, dead_pending) = sink_spool(&m, "dead");
    assert!(
        dead_last > 0 && dead_pending > 0,
        "the dead sink kept a backlog"
    );
    let (last, pending) = m.spool_state();
    assert_eq!(pending, 0, "master spool after SIGTERM\n{}", m.log());
    let prefix = format!("salt/beacon/{id}/");
    let on_bus = || -> Vec<Value> {
        seen.lock()
            .map(|s| {
                s.iter()
                    .filter(|e| e["tag"].as_str().is_some_and(|t| t.starts_with(&prefix)))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    };
    wait_until(
        Duration::from_secs(30),
        "every master event on the bus",
        || {
            let got: BTreeSet<u64> = on_bus()
                .iter()
                .filter_map(|e| uid_seq(e).map(|x| x.1))
                .collect();
            (1..=last).all(|q| got.contains(&q))
        },
    );
    let drops: Vec<Value> = on_bus()
        .into_iter()
        .filter(|e| e["tag"] == format!("salt/beacon/{id}/beacond/dropped"))
        .collect();
    assert!(!drops.is_empty(), "no beacond/dropped on the master");
    assert!(
        drops.iter().all(|d| d["data"]["sink"] == "dead"),
        "{drops:?}"
    );
    assert!(drops
        .iter()
        .any(|d| d["data"]["count"].as_u64().unwrap_or(0) > 0));
    drop(l);
    master.stop();
}

/// A minion config whose master is not there (sinks work without it) with `text` as a drop-in.
fn minion_with(dir: &Path, id: &str, text: &str, overrides: &str) -> Minion {
    let m = Minion::configure(dir, id, free_port(), "beacond_status_interval: 0", "");
    std::fs::remove_file(dir.join("minion.d/beacons.conf")).ok();
    std::fs::write(dir.join("minion.d/dropin.conf"), text).expect("drop-in");
    std::fs::write(dir.join("minion.d/zz-test.conf"), overrides).expect("overrides");
    m
}

fn check(dir: &Path) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_beacond"))
        .arg("-c")
        .arg(dir)
        .arg("--check")
        .output()
        .expect("beacond --check")
}

/// A failed-login record from util-linux's `utmpdump -r`.
fn btmp_record(user: &str) -> Vec<u8> {
    use std::io::Write;
    let text = format!(
        "[6] [04242] [ts/0] [{user:<8}] [ssh:notty   ] [10.9.8.7            ] [10.9.8.7       ] [2024-05-01T09:15:00,000000+00:00]\n"
    );
    let mut child = std::process::Command::new("utmpdump")
        .arg("-r")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("utmpdump (util-linux)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed utmpdump");
    let out = child.wait_with_output().expect("utmpdump");
    assert_eq!(out.stdout.len(), 384);
    out.stdout
}

fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open for append");
    f.write_all(bytes).expect("append");
}

#[test]
fn siem_syslog_dropin_sends_failed_logins_through_rsyslog() {
    let shipped = std::fs::read_to_string(common::beacond::repo().join("beacons/siem-syslog.conf"))
        .expect("drop-in");
    let root = common::beacond::TempDir::new("siem");
    let btmp = root.join("btmp");
    std::fs::write(&btmp, b"").expect("btmp");
    let text = shipped.replace("/var/log/btmp", &btmp.display().to_string());
    assert_ne!(text, shipped, "the drop-in names its file");
    let rsys = Rsyslog::start(&root.join("rsyslog"));
    // As shipped the sink writes to /dev/log; here it goes to the test's rsyslogd over TCP
    // (minion.d files deep-merge, so only the transport changes).
    let overrides = format!(
        "beacond_sinks:\n  siem:\n    transport: tcp\n    address: 127.0.0.1:{}\n    path: null\n",
        rsys.port
    );
    let id = format!("siem-{}", std::process::id());
    let mut m = minion_with(&root.join("minion"), &id, &text, &overrides);
    let out = check(&m.dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 beacon(s), 1 sink(s)"));
    // One evaluation first records the btmp position (the empty file's end), so the record
    // appended after the start is read however late the beacon opens the file.
    let once = std::process::Command::new(env!("CARGO_BIN_EXE_beacond"))
        .arg("-c")
        .arg(&m.dir)
        .arg("--once")
        .output()
        .expect("beacond --once");
    assert!(
        once.status.success(),
        "{}",
        String::from_utf8_lossy(&once.stderr)
    );
    m.start();
    append(&btmp, &btmp_record("intruder"));
    wait_until(
        Duration::from_secs(30),
        "the failed login in rsyslog",
        || rsys.records().iter().any(|r| r.4["user"] == "intruder"),
    );
    let (host, app, msgid, sev, json) = rsys
        .records()
        .into_iter()
        .find(|r| r.4["user"] == "intruder")
        .expect("record");
    assert_eq!(
        (host.as_str(), app.as_str(), msgid.as_str(), sev.as_str()),
        (id.as_str(), "beacond", "btmp", "4")
    );
    assert_eq!(json["tag"], format!("salt/beacon/{id}/btmp/"));
    assert_eq!(json["minion_id"], id.as_str());
    assert!(
        rsys.records().iter().all(|r| r.2 == "btmp" || r.2 == "sh"),
        "only btmp/sh events"
    );
    m.terminate(Duration::from_secs(30));
}

#[test]
fn state_results_splunk_dropin_sends_to_a_tcp_json_receiver() {
    let shipped =
        std::fs::read_to_string(common::beacond::repo().join("beacons/state-results-splunk.conf"))
            .expect("drop-in");
    let root = common::beacond::TempDir::new("srs");
    let btmp = root.join("btmp");
    std::fs::write(&btmp, b"").expect("btmp");
    let elk = LineReceiver::start();
    let text = shipped
        .replace("/var/log/btmp", &btmp.display().to_string())
        .replace("127.0.0.1:6000", &format!("127.0.0.1:{}", elk.port()));
    // The job cache salt-minion writes (`cache_jobs: True`) is the test's own directory; the
    // job's return file below stands in for a salt-minion run (tests/state_results_salt.rs runs
    // real ones).
    let jobs = root.join("minion_jobs");
    std::fs::create_dir_all(&jobs).expect("minion_jobs");
    let text = text.replace(
        "  state_results: []\n",
        &format!("  state_results:\n    - minion_jobs: {}\n", jobs.display()),
    );
    let id = format!("srs-{}", std::process::id());
    let mut m = minion_with(&root.join("minion"), &id, &text, "");
    let out = check(&m.dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    m.start();
    // The job must end after the beacon watches the cache (a job already there at the first
    // start is the baseline, as the README says); the btmp record likewise.
    wait_until(Duration::from_secs(30), "state_results watching", || {
        m.log().contains("watching salt-minion's job cache")
    });
    write_state_return(&jobs.join("20261204000000000001"), &id);
    wait_until(
        Duration::from_secs(30),
        "state results at the receiver",
        || {
            records_of(&elk.got)
                .iter()
                .any(|r| r["beacon"] == "state_results")
        },
    );
    append(&btmp, &btmp_record("mallory"));
    wait_until(
        Duration::from_secs(30),
        "state_results and btmp at the receiver",
        || {
            let g = records_of(&elk.got);
            g.iter().any(|r| r["user"] == "mallory")
                && g.iter().filter(|r| r["beacon"] == "state_results").count() >= 3
        },
    );
    let g = records_of(&elk.got);
    assert!(
        g.iter().all(|r| {
            let t = r["tag"].as_str().unwrap_or_default();
            t.starts_with(&format!("salt/beacon/{id}/state_results/"))
                || t == format!("salt/beacon/{id}/btmp/")
        }),
        "only the drop-in's tags"
    );
    let ids = spool_id(&m, "splunk");
    let s: Vec<u64> = seqs(&g, &ids);
    assert_once_in_order("splunk", &s, s.len());
    m.terminate(Duration::from_secs(30));
}

/// A `state.apply` return with three states (True, False, None), msgpack-encoded as
/// salt-minion caches it in `minion_jobs/<jid>/return.p`.
fn write_state_return(job_dir: &std::path::Path, id: &str) {
    use rmpv::Value as M;
    let s = |x: &str| M::from(x);
    let state = |sid: &str, fun: &str, result: M, run: u64| {
        (
            s(&format!("test_|-{sid}_|-{sid}_|-{fun}")),
            M::Map(vec![
                (s("name"), s(sid)),
                (s("changes"), M::Map(vec![])),
                (s("result"), result),
                (s("comment"), s("done")),
                (s("__run_num__"), M::from(run)),
                (s("start_time"), s("01:02:03.000004")),
                (s("duration"), M::F64(1.5)),
                (s("__id__"), s(sid)),
            ]),
        )
    };
    let jid = job_dir
        .file_name()
        .and_then(|n| n.to_str())
        .expect("jid")
        .to_string();
    let ret = M::Map(vec![
        (s("success"), M::Boolean(false)),
        (s("retcode"), M::from(2)),
        (s("jid"), s(&jid)),
        (s("fun"), s("state.apply")),
        (s("fun_args"), M::Array(vec![s("web")])),
        (s("id"), s(id)),
        (
            s("return"),
            M::Map(vec![
                state("ok", "succeed_with_changes", M::Boolean(true), 0),
                state("bad", "fail_without_changes", M::Boolean(false), 1),
                state("maybe", "succeed_without_changes", M::Nil, 2),
            ]),
        ),
    ]);
    let mut buf = Vec::new();
    rmpv::encode::write_value(&mut buf, &ret).expect("encode");
    std::fs::create_dir_all(job_dir).expect("job dir");
    std::fs::write(job_dir.join("return.p"), buf).expect("return.p");
}

#[test]
fn sink_config_errors_are_precise() {
    let root = common::beacond::TempDir::new("sinkerr");
    let m = Minion::configure(
        &root.join("minion"),
        "e1",
        free_port(),
        "",
        "beacond_sinks:\n  s:\n    type: splunk_hec\n    url: ftp://x\n    token: t\n    tags: ['*']\n  t:\n    type: tcp_json\n    address: h:1\n    tls: True\n    ca_file: /nonexistent/ca.pem\n    tags: ['*']\n",
    );
    let out = check(&m.dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("beacons.conf:4:10: sink 's': url must start with https:// or http://"),
        "{err}"
    );
    assert!(
        err.contains("sink 't': ca_file /nonexistent/ca.pem"),
        "{err}"
    );
}
