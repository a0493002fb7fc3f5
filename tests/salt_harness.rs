//! Self-tests of the Salt harness (tests/common/salt.rs + tests/salt/*).
//! Need `tests/salt/setup.sh`; with BEACOND_SKIP_SALT=1 they skip instead.

mod common;

use std::fs;
use std::time::Duration;

use common::salt::{
    generate_master_key, marker_reactor, port_open, require_salt, run_python_beacons, Master,
    MasterOptions, TempDir, SERIES,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

#[test]
fn master_3007_delivers_fired_events() {
    let Some(_venv) = require_salt("3007") else {
        return;
    };
    let master = Master::start("3007", MasterOptions::default());
    assert!(
        port_open(master.ret_port()),
        "request port closed after start"
    );
    let events = master.events("beacond/selftest/");

    let out = master.salt_run(&["event.send", "beacond/selftest/ping", r#"{"n": 1}"#]);
    assert!(
        out.status.success(),
        "salt-run event.send failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = events.expect_tag("beacond/selftest/ping", WAIT);
    assert_eq!(ev["data"]["n"], json!(1), "event: {ev}");
    assert!(ev["data"]["_stamp"].is_string(), "event: {ev}");

    master.fire_event("beacond/selftest/fired", &json!({"k": "v"}));
    let ev = events.expect_tag("beacond/selftest/fired", WAIT);
    assert_eq!(ev["data"]["k"], json!("v"), "event: {ev}");

    let keys = master.key_list();
    assert_eq!(keys["minions"], json!([]), "keys: {keys}");
}

#[test]
fn python_memusage_beacon_3007() {
    let Some(_venv) = require_salt("3007") else {
        return;
    };
    let dir = TempDir::new("pybeacon");
    fs::write(
        dir.path().join("minion"),
        "id: harness-minion\nbeacons:\n  memusage:\n    - percent: 0%\n",
    )
    .expect("write minion config");
    let events = run_python_beacons("3007", dir.path(), 2);
    assert_eq!(events.len(), 2, "one event per run: {events:?}");
    for (run, ev) in events.iter().enumerate() {
        assert_eq!(
            ev["tag"],
            json!("salt/beacon/harness-minion/memusage/"),
            "{ev}"
        );
        assert!(ev["data"]["memusage"].is_number(), "{ev}");
        assert_eq!(ev["data"]["id"], json!("harness-minion"), "{ev}");
        assert!(ev["data"]["_stamp"].is_string(), "{ev}");
        assert_eq!(ev["run"], json!(run), "{ev}");
    }
}

#[test]
fn masters_of_every_series_come_up_and_restart() {
    let series: Vec<&str> = SERIES
        .into_iter()
        .filter(|s| require_salt(s).is_some())
        .collect();
    // One thread per series: starting a master is mostly waiting.
    std::thread::scope(|scope| {
        for s in series {
            scope.spawn(move || start_stop_restart(s));
        }
    });
}

fn start_stop_restart(series: &str) {
    let mut master = Master::start(series, MasterOptions::default());
    let port = master.ret_port();
    let key = master.master_pub_key();
    assert!(port_open(port), "{series}: request port closed after start");
    master.stop();
    assert!(!port_open(port), "{series}: request port open after stop");
    master.start_again();
    assert_eq!(master.ret_port(), port);
    assert!(
        port_open(port),
        "{series}: request port closed after restart"
    );
    assert_eq!(
        master.master_pub_key(),
        key,
        "{series}: master key changed on restart"
    );
    master.kill();
    assert!(!port_open(port), "{series}: request port open after kill");
}

#[test]
fn reactor_and_pinned_master_key_3007() {
    let Some(_venv) = require_salt("3007") else {
        return;
    };
    let dir = TempDir::new("reactor");
    let keys = dir.path().join("keys");
    generate_master_key("3007", &keys);
    let reactor = marker_reactor("3007", dir.path(), "beacons");
    let master = Master::start(
        "3007",
        MasterOptions {
            auto_accept: false,
            reactors: vec![reactor.on("salt/beacon/*/memusage/*")],
            master_key_from: Some(keys.clone()),
            ..MasterOptions::default()
        },
    );
    let expected_key = fs::read_to_string(keys.join("master.pub")).expect("read master.pub");
    assert_eq!(master.master_pub_key(), expected_key);

    master.fire_event(
        "salt/beacon/m1/memusage/",
        &json!({"id": "m1", "memusage": 42.5}),
    );
    let lines = reactor
        .wait_for_lines(1, WAIT)
        .unwrap_or_else(|| panic!("reactor wrote nothing:\n{}", master.log_tail_important(40)));
    assert_eq!(lines[0]["tag"], json!("salt/beacon/m1/memusage/"));
    assert_eq!(lines[0]["data"]["id"], json!("m1"));
    assert_eq!(lines[0]["data"]["memusage"], json!(42.5));
}
