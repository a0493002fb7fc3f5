//! Fault suite, master: a hostile or broken master never grows the agent's memory, never stops
//! it reconnecting and never costs an event (they stay in the spool); a master whose key
//! changed is refused and reported.
//!
//! The hostile masters are stand-ins (a TCP listener speaking just enough ZMTP): a real
//! salt-master cannot be made to send garbage or a 2^62-byte frame. The key change is done to a
//! real salt-master (3007).

mod common;
use common::bounded::{figure, vm_hwm_kb};
use common::faults::{require_salt, Master, Minion};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug)]
enum Hostile {
    Garbage,
    HugeFrame,
    Silent,
    CloseAfterGreeting,
}

/// A ZMTP 3.0 greeting (NULL mechanism, as a server) and a READY command.
fn greeting_and_ready() -> Vec<u8> {
    let mut g = vec![0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0x7F, 3, 0];
    let mut mech = b"NULL".to_vec();
    mech.resize(20, 0);
    g.extend_from_slice(&mech);
    g.push(1); // as-server
    g.resize(64, 0);
    let mut body = vec![5u8];
    body.extend_from_slice(b"READY");
    body.push(11);
    body.extend_from_slice(b"Socket-Type");
    body.extend_from_slice(&3u32.to_be_bytes());
    body.extend_from_slice(b"REP");
    g.push(0x04); // command, short
    g.push(body.len() as u8);
    g.extend_from_slice(&body);
    g
}

/// A fake master; counts the connections it accepted.
fn fake_master(kind: Hostile) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let conns = Arc::new(AtomicUsize::new(0));
    let c = conns.clone();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(s) = s else { continue };
            c.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || serve(kind, s));
        }
    });
    (port, conns)
}

fn serve(kind: Hostile, mut s: TcpStream) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(120)));
    let mut buf = [0u8; 4096];
    match kind {
        Hostile::Garbage => {
            let mut x: u32 = 0x2545_F491;
            let junk: Vec<u8> = (0..65536)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = s.write_all(&junk);
        }
        Hostile::CloseAfterGreeting => {
            let _ = s.write_all(&greeting_and_ready()[..64]);
        }
        Hostile::HugeFrame => {
            let _ = s.write_all(&greeting_and_ready());
            // Wait for the agent's request (after its greeting and READY), then claim a
            // 2^62-byte message frame and send nothing more.
            let mut got = 0;
            while got < 64 + 20 {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got += n,
                }
            }
            let mut h = vec![0x01, 0x00]; // the REQ delimiter (more)
            h.push(0x02); // long frame
            h.extend_from_slice(&(1u64 << 62).to_be_bytes());
            let _ = s.write_all(&h);
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    return;
                }
            }
        }
        Hostile::Silent => {
            // Accepts and reads, never answers, never closes.
            while let Ok(n) = s.read(&mut buf) {
                if n == 0 {
                    return;
                }
            }
        }
    }
}

fn beacons() -> String {
    format!(
        "beacons:\n  memusage:\n    - percent: 1%\n    - procfs: {}\n    - interval: 0.2\n",
        common::beacond::repo()
            .join("tests/fixtures/proc-high")
            .display()
    )
}

fn wait_until(timeout: Duration, what: &str, log: impl Fn() -> String, f: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            log()
        );
        // Polling a counter / the log: neither has an awaitable form.
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn against(kind: Hostile) {
    let (port, conns) = fake_master(kind);
    let root = common::beacond::TempDir::new("hostile");
    let id = format!("hostile-{kind:?}").to_lowercase();
    let mut m = Minion::configure(
        &root.join("m"),
        &id,
        port,
        "beacond_status_interval: 0",
        &beacons(),
    );
    m.start();
    let t = Instant::now();
    // It keeps reconnecting: a second connection after the first failed.
    wait_until(
        Duration::from_secs(45),
        &format!("{kind:?}: 2 connections"),
        || m.log(),
        || conns.load(Ordering::SeqCst) >= 2,
    );
    let pid = m.pid().expect("running");
    let rss = vm_hwm_kb(pid);
    figure(&format!("master {kind:?} (reconnected)"), rss, t.elapsed());
    assert!(rss < 64 << 10, "{kind:?}: peak RSS {rss} KiB");
    m.terminate(Duration::from_secs(30));
    assert!(!m.log().contains("panicked"), "{}", m.log());
    // Every event is still in the spool: none delivered, none dropped.
    let (last, pending) = m.spool_state();
    assert!(last > 0, "{kind:?}: no events made:\n{}", m.log());
    assert_eq!(pending, last, "{kind:?}: events lost:\n{}", m.log());
}

#[test]
fn a_master_sending_garbage() {
    against(Hostile::Garbage);
}

#[test]
fn a_master_claiming_a_2_pow_62_byte_frame() {
    against(Hostile::HugeFrame);
}

#[test]
fn a_master_that_never_replies() {
    against(Hostile::Silent);
}

#[test]
fn a_master_that_closes_after_the_greeting() {
    against(Hostile::CloseAfterGreeting);
}

#[test]
fn a_master_whose_key_changed_is_refused_and_reported() {
    let Some(venv) = require_salt("3007") else {
        return;
    };
    let root = common::beacond::TempDir::new("keychange");
    let mut master = Master::start(&venv, &root.join("master"));
    let listener = master.listen("salt/beacon/");
    let id = format!("keychange-{}", std::process::id());
    let mut m = Minion::configure(
        &root.join("m"),
        &id,
        master.ret_port,
        "beacond_status_interval: 0",
        &beacons(),
    );
    m.start();
    let mine = |seen: &common::faults::Seen| {
        seen.lock()
            .map(|s| {
                s.iter()
                    .filter(|e| e["tag"].as_str().is_some_and(|t| t.contains(&id)))
                    .count()
            })
            .unwrap_or(0)
    };
    wait_until(
        Duration::from_secs(60),
        "first delivery",
        || m.log(),
        || mine(&listener.seen) > 0,
    );
    // An impostor takes the master's address: a salt-master with another key pair and none of
    // the old one's state (its cache holds the minions' session keys: a master that kept it
    // would still be the same master to the minion).
    let t = Instant::now();
    master.stop();
    drop(listener);
    let pki = master.root.join("etc/salt/pki/master");
    for k in ["master.pem", "master.pub"] {
        std::fs::remove_file(pki.join(k)).expect("remove master key");
    }
    std::fs::remove_dir_all(master.root.join("cache")).expect("remove master cache");
    master.start_again();
    let listener = master.listen("salt/beacon/");
    wait_until(
        Duration::from_secs(90),
        "the refusal in the log",
        || m.log(),
        || {
            m.log()
                .contains("refusing it: the master may have been subverted")
        },
    );
    figure(
        "master key changed (refused, from the swap)",
        0,
        t.elapsed(),
    );
    let pinned = m.dir.join("pki/minion_master.pub");
    assert!(pinned.is_file(), "the pinned key is kept");
    m.terminate(Duration::from_secs(30));
    assert_eq!(mine(&listener.seen), 0, "an event reached the impostor");
    let (_, pending) = m.spool_state();
    assert!(
        pending > 0,
        "the events made meanwhile are kept:\n{}",
        m.log()
    );
}
