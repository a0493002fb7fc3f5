//! The Salt transport against real salt-masters 3006, 3007 and 3008 (tests/salt/setup.sh):
//! beacon events reach the master's event bus with the exact tag, data and minion id, and a
//! reactor fires for them; the master key is cached on first contact, pinned afterwards and
//! checked against `master_finger`; an unaccepted key waits until `salt-key -a`; a master
//! restart is ridden out by the running sender; failover and multi-master.
//!
//! Waits are on events (the master's bus, `salt/auth`, reactor marker lines) with deadlines.

mod common;

use beacond::config::minion::MinionOpts;
use beacond::event::Event;
use beacond::spool::{pipeline, stats::Stats, store::Spool, Options};
use beacond::transport::salt::channel::LinkState;
use beacond::transport::salt::crypto::{clean_key, pem_finger};
use beacond::transport::salt::{Masters, TransportError};
use common::salt::{marker_reactor, require_salt, EventStream, Master, MasterOptions, TempDir};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const EVENT_WAIT: Duration = Duration::from_secs(60);
/// runner.salt.cmd loads the master's modules on first use: allow it time.
const REACTOR_WAIT: Duration = Duration::from_secs(90);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// The normal mode's pipeline (spool in `spool_dir`) on its own thread (the test thread
/// blocks on the master). Returns the spool at the end: what it holds was not delivered.
fn spawn_sender(
    masters: Masters,
    spool_dir: &Path,
) -> (mpsc::Sender<Event>, std::thread::JoinHandle<Spool>) {
    let (tx, rx) = mpsc::channel(64);
    let opts = Options {
        status_interval: Duration::ZERO,
        ..Options::default()
    };
    let spool = Spool::open(spool_dir, opts.max_bytes).expect("spool");
    let id = masters.id().to_owned();
    let h = std::thread::spawn(move || {
        rt().block_on(pipeline::run(
            id,
            opts,
            spool,
            masters,
            rx,
            std::sync::Arc::new(Stats::default()),
        ))
    });
    (tx, h)
}

/// Minion options for `master`, fast timers for tests.
fn minion(id: &str, pki: &Path, masters: &[&Master], extra: Value) -> MinionOpts {
    let mut settings = json!({
        "acceptance_wait_time": 0.5,
        "acceptance_wait_time_max": 1,
        "auth_timeout": 20,
        "request_channel_timeout": 20,
        "recon_default": 100,
        "recon_max": 500,
    });
    if let (Some(s), Some(e)) = (settings.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    MinionOpts {
        id: id.into(),
        cachedir: pki.join("cache"),
        pki_dir: pki.to_path_buf(),
        master: masters
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.ret_port()))
            .collect(),
        master_port: 4506,
        settings: settings.as_object().cloned().unwrap_or_default(),
    }
}

/// A master key pair as salt writes it (PKCS#1 private, SPKI public), made here rather than
/// by another Python process.
fn master_key_pair(dir: &Path) {
    use beacond::transport::salt::crypto::PrivateKey;
    let key = PrivateKey::generate(2048).expect("keygen");
    std::fs::write(dir.join("master.pem"), key.to_pem().expect("pem")).expect("master.pem");
    std::fs::write(dir.join("master.pub"), key.public_pem().expect("pub")).expect("master.pub");
}

fn event(id: &str, beacon: &str, sub: &str, data: Value) -> Event {
    let mut d = data.as_object().cloned().unwrap_or_default();
    d.insert("tag".into(), json!(sub));
    Event::from_beacon(id, beacon, d)
}

/// The bus event with exactly this tag; its data must be the event's data (as sent) with the
/// minion id (plus the `beacond_uid` the spool gives each event it sends).
fn expect_event(bus: &EventStream, ev: &Event) -> Value {
    let got = bus
        .wait_for(EVENT_WAIT, |e| e["tag"] == ev.tag.as_str())
        .unwrap_or_else(|| panic!("event {} did not reach the master bus", ev.tag));
    let data = &got["data"];
    let keys: BTreeSet<&str> = data
        .as_object()
        .map(|m| {
            m.keys()
                .map(String::as_str)
                .filter(|k| *k != "beacond_uid" || ev.data.contains_key(*k))
                .collect()
        })
        .unwrap_or_default();
    let want: BTreeSet<&str> = ev.data.keys().map(String::as_str).collect();
    assert_eq!(keys, want, "data keys of {}", ev.tag);
    for (k, v) in &ev.data {
        // The master's event bus stamps every event it fires (`_stamp` is replaced).
        if k != "_stamp" {
            assert_eq!(&data[k], v, "data[{k}] of {}", ev.tag);
        }
    }
    got
}

fn series_suite(series: &str) {
    let Some(_venv) = require_salt(series) else {
        return;
    };
    let t_start = Instant::now();
    let phase = |what: &str| eprintln!("salt {series}: {what} at {:?}", t_start.elapsed());
    let dir = TempDir::new(&format!("tr{series}"));
    let reactor = marker_reactor(series, dir.path(), "beacon");
    let mut master = Master::start(
        series,
        MasterOptions {
            reactors: vec![reactor.on("salt/beacon/*/probe/*")],
            ..MasterOptions::default()
        },
    );
    phase("master up");
    // A second master with another key and without auto_accept, for the key tests at the
    // end; it starts while the first one is exercised.
    let other_key = dir.path().join("otherkey");
    std::fs::create_dir_all(&other_key).expect("dir");
    let strict = {
        let series = series.to_owned();
        std::thread::spawn(move || {
            master_key_pair(&other_key);
            Master::start(
                &series,
                MasterOptions {
                    auto_accept: false,
                    master_key_from: Some(other_key),
                    ..MasterOptions::default()
                },
            )
        })
    };
    let rt = rt();
    let id = format!("bd-{series}");
    let pki = dir.path().join("pki");
    let opts = minion(&id, &pki, &[&master], json!({}));

    // First contact: authenticate, cache the master key.
    let mut masters = Masters::new(&opts).expect("keys");
    let t0 = Instant::now();
    rt.block_on(masters.authenticate()).expect("auth");
    let auth_time = t0.elapsed();
    let cached = std::fs::read_to_string(pki.join("minion_master.pub")).expect("cached key");
    assert_eq!(
        cached,
        clean_key(&master.master_pub_key()),
        "cached master key"
    );
    // Salt's key permissions and format on the minion side.
    assert!(
        master.keys_in("minions").contains(&id),
        "{:?}",
        master.key_list()
    );

    // Events, batched, with exact tag/data/id on the bus; the reactor fires for them.
    let bus = master.events("salt/beacon/");
    let batch = vec![
        event(
            &id,
            "probe",
            "a",
            json!({"n": 1, "s": "x", "f": 0.5, "l": [1, "2", null]}),
        ),
        event(
            &id,
            "probe",
            "b/c",
            json!({"nested": {"k": true}, "neg": -7}),
        ),
    ];
    let t0 = Instant::now();
    rt.block_on(masters.deliver(&batch)).expect("deliver");
    let one_batch = t0.elapsed();
    for ev in &batch {
        let got = expect_event(&bus, ev);
        assert_eq!(got["data"]["id"], id.as_str());
    }
    let lines = reactor
        .wait_for_lines(1, REACTOR_WAIT)
        .unwrap_or_else(|| panic!("reactor did not fire\n{}", master.log_tail(40)));
    assert!(
        lines
            .iter()
            .any(|l| l["tag"] == batch[0].tag.as_str() || l["tag"] == batch[1].tag.as_str()),
        "{lines:?}"
    );
    assert_eq!(lines[0]["data"]["id"], id.as_str());

    phase("reactor fired");
    // Throughput in batches (debug build; the master's event bus is the bottleneck).
    let n = 1000;
    let many: Vec<Event> = (0..n)
        .map(|i| event(&id, "bulk", "n", json!({"i": i})))
        .collect();
    let t0 = Instant::now();
    for chunk in many.chunks(250) {
        rt.block_on(masters.deliver(chunk)).expect("bulk deliver");
    }
    let bulk = t0.elapsed();
    let mut seen = 0;
    let deadline = Instant::now() + EVENT_WAIT;
    while seen < n && Instant::now() < deadline {
        if bus
            .wait_for(deadline - Instant::now(), |e| {
                e["tag"] == format!("salt/beacon/{id}/bulk/n").as_str()
            })
            .is_some()
        {
            seen += 1;
        }
    }
    assert_eq!(seen, n, "bulk events on the bus");
    eprintln!(
        "salt {series}: auth {:?}, first batch {:?}, {n} events in 250-event batches acked in {:?} ({:.0} events/s)",
        auth_time,
        one_batch,
        bulk,
        n as f64 / bulk.as_secs_f64()
    );

    // master_finger: the right fingerprint is accepted, a wrong one refused.
    let finger = pem_finger(&cached, "sha256").expect("finger");
    let mut pinned = Masters::new(&minion(
        &id,
        &pki,
        &[&master],
        json!({"master_finger": finger}),
    ))
    .expect("pinned");
    rt.block_on(pinned.authenticate()).expect("right finger");
    let mut wrong = Masters::new(&minion(
        &id,
        &pki,
        &[&master],
        json!({"master_finger": "00:11:22"}),
    ))
    .expect("wrong finger");
    let e = rt.block_on(wrong.authenticate()).expect_err("wrong finger");
    assert!(matches!(e, TransportError::FingerMismatch { .. }), "{e:?}");
    drop((pinned, wrong));

    phase("finger checked");

    // The master forgets our key (salt-key -d): it answers "bad load", we re-authenticate
    // (auto_accept takes the key again) and the same delivery goes through.
    master.delete_key(&id);
    let again = event(&id, "probe", "reauth", json!({"k": 1}));
    rt.block_on(masters.deliver(std::slice::from_ref(&again)))
        .expect("deliver after re-auth");
    expect_event(&bus, &again);
    assert!(master.keys_in("minions").contains(&id));
    // The sender task rides out a master restart: events sent while it is down arrive once
    // it is back, without restarting anything on our side.
    let (tx, sender) = spawn_sender(masters, &dir.path().join("spool"));
    let before = event(&id, "probe", "before", json!({"phase": 1}));
    tx.blocking_send(before.clone()).expect("send");
    expect_event(&bus, &before);
    drop(bus);
    master.stop();
    let during = event(&id, "probe", "during", json!({"phase": 2}));
    tx.blocking_send(during.clone()).expect("send");
    master.start_again();
    let bus = master.events("salt/beacon/");
    let after = event(&id, "probe", "after", json!({"phase": 3}));
    tx.blocking_send(after.clone()).expect("send");
    expect_event(&bus, &after);
    // `during` may have been delivered before the new subscription: the reactor saw it.
    let tags = |lines: &[Value]| -> BTreeSet<String> {
        lines
            .iter()
            .filter_map(|l| l["tag"].as_str().map(str::to_owned))
            .collect()
    };
    let deadline = Instant::now() + REACTOR_WAIT;
    loop {
        let seen = tags(&reactor.lines());
        if seen.contains(&during.tag) && seen.contains(&after.tag) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "events around the restart not all seen by the reactor: {seen:?}"
        );
        reactor.wait_for_lines(reactor.lines().len() + 1, Duration::from_secs(5));
    }
    drop(tx);
    let left = sender.join().expect("sender thread");
    assert!(left.is_empty(), "{} undelivered", left.pending());

    phase("restart ridden out");
    // A different master (another key) on the address of a cached one: refused, saying why.
    let strict = strict.join().expect("second master");
    let mut m = Masters::new(&minion(&id, &pki, &[&strict], json!({}))).expect("keys");
    let e = rt
        .block_on(m.deliver(&[event(&id, "probe", "x", json!({}))]))
        .expect_err("must refuse a changed master key");
    assert!(
        matches!(e, TransportError::MasterKeyChanged { .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("not the master whose key is cached") && msg.contains("minion_master.pub"),
        "{msg}"
    );
    assert_eq!(m.states()[0].1, LinkState::Refused);
    // The cached key was not replaced.
    assert_eq!(
        std::fs::read_to_string(pki.join("minion_master.pub")).expect("cached"),
        cached
    );

    phase("changed key refused");
    // A new minion on a master without auto_accept waits, then is accepted while running.
    let id2 = format!("bd-{series}-new");
    let pki2 = dir.path().join("pki2");
    // One listener for both salt/auth and salt/beacon/ (each costs a Python process).
    let bus2 = strict.events("salt/");
    let m2 = Masters::new(&minion(&id2, &pki2, &[&strict], json!({}))).expect("keys");
    let (tx, sender) = spawn_sender(m2, &dir.path().join("spool2"));
    let waiting = event(&id2, "probe", "waiting", json!({"k": "v"}));
    tx.blocking_send(waiting.clone()).expect("send");
    bus2.wait_for(EVENT_WAIT, |e| {
        e["data"]["id"] == id2.as_str() && e["data"]["act"] == "pend"
    })
    .unwrap_or_else(|| panic!("no pending auth from {id2}\n{}", strict.log_tail(30)));
    assert!(strict.keys_in("minions_pre").contains(&id2));
    strict.accept_key(&id2);
    expect_event(&bus2, &waiting);
    drop(tx);
    let left = sender.join().expect("sender thread");
    assert!(left.is_empty(), "{} undelivered", left.pending());
    phase("pending key accepted");
}

#[test]
fn salt_3006() {
    series_suite("3006");
}

#[test]
fn salt_3007() {
    series_suite("3007");
}

#[test]
fn salt_3008() {
    series_suite("3008");
}

/// `master_type: failover` skips a dead master and moves on when the active one goes down;
/// the default multi-master mode sends every event to every master.
#[test]
fn failover_and_multi_master() {
    let series = "3007";
    let Some(_venv) = require_salt(series) else {
        return;
    };
    let dir = TempDir::new("trmulti");
    let key = dir.path().join("key");
    std::fs::create_dir_all(&key).expect("dir");
    master_key_pair(&key);
    let shared = || MasterOptions {
        master_key_from: Some(key.clone()),
        ..MasterOptions::default()
    };
    let mut m1 = Master::start(series, shared());
    let m2 = Master::start(series, shared());
    let rt = rt();
    let id = "bd-multi";
    let pki = dir.path().join("pki");
    let bus1 = m1.events("salt/beacon/");
    let bus2 = m2.events("salt/beacon/");

    // Multi-master: both buses get the event.
    let mut all = Masters::new(&minion(id, &pki, &[&m1, &m2], json!({}))).expect("keys");
    let ev = event(id, "probe", "both", json!({"n": 1}));
    rt.block_on(all.deliver(std::slice::from_ref(&ev)))
        .expect("deliver");
    expect_event(&bus1, &ev);
    expect_event(&bus2, &ev);

    // Failover: a dead master first, then m1, then m2.
    let dead = common::salt::free_port();
    let mut o = minion(id, &pki, &[&m1, &m2], json!({"master_type": "failover"}));
    o.master.insert(0, format!("127.0.0.1:{dead}"));
    let mut fo = Masters::new(&o).expect("keys");
    let ev = event(id, "probe", "fo1", json!({"n": 2}));
    rt.block_on(fo.deliver(std::slice::from_ref(&ev)))
        .expect("deliver");
    expect_event(&bus1, &ev);
    let states = fo.states();
    assert_eq!(states[0].1, LinkState::Down, "{states:?}");
    assert_eq!(states[1].1, LinkState::Up, "{states:?}");
    assert_eq!(states[2].1, LinkState::New, "{states:?}");
    // m1 goes away: the next delivery fails over to m2.
    drop(bus1);
    m1.stop();
    let ev = event(id, "probe", "fo2", json!({"n": 3}));
    rt.block_on(fo.deliver(std::slice::from_ref(&ev)))
        .expect("failover deliver");
    expect_event(&bus2, &ev);
    assert_eq!(fo.states()[2].1, LinkState::Up);
}

/// The `beacond` binary in its normal mode sends a beacon's events to a real master.
#[test]
fn binary_sends_to_master() {
    let series = "3008";
    let Some(_venv) = require_salt(series) else {
        return;
    };
    let master = Master::start(series, MasterOptions::default());
    let bus = master.events("salt/beacon/");
    let dir = TempDir::new("trbin");
    let id = "bd-binary";
    let proc_high = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proc-high");
    let config = format!(
        "id: {id}\nmaster: 127.0.0.1\nmaster_port: {port}\npki_dir: {pki}\ncachedir: {cache}\n\
         acceptance_wait_time: 0.5\nbeacons:\n  load:\n    - averages:\n        1m: [0.0, 2.0]\n\
         \x20   - procfs: {proc}\n    - interval: 1\n",
        port = master.ret_port(),
        pki = dir.path().join("pki").display(),
        cache = dir.path().join("cache").display(),
        proc = proc_high.display(),
    );
    std::fs::write(dir.path().join("minion"), config).expect("config");
    let stderr = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_beacond"))
        .arg("-c")
        .arg(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("run beacond");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(child);
    let got = bus.wait_for(EVENT_WAIT, |e| {
        e["tag"]
            .as_str()
            .is_some_and(|t| t.starts_with(&format!("salt/beacon/{id}/load/")))
    });
    let log = std::fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
    let got = got.unwrap_or_else(|| panic!("no load event from beacond\n--- beacond ---\n{log}"));
    assert_eq!(got["data"]["id"], id);
    assert!(got["data"].get("1m").is_some(), "{got}");
    assert!(log.contains("authenticated with master"), "{log}");
    // SIGTERM: a clean stop.
    let pid = child.0.id() as i32;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    );
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let mut inner = std::mem::replace(
        &mut child.0,
        std::process::Command::new("true")
            .spawn()
            .expect("placeholder"),
    );
    std::thread::spawn(move || {
        let st = inner.wait();
        let _ = done_tx.send(st.map(|s| s.code()));
    });
    let st = done_rx
        .recv_timeout(Duration::from_secs(15))
        .expect("beacond did not stop on SIGTERM");
    assert_eq!(
        st.expect("wait").unwrap_or(-1),
        0,
        "exit status after SIGTERM"
    );
}
