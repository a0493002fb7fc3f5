//! The Salt transport against masters that are dead, silent or hung, without Salt: every
//! request ends by its deadline, a dead master is reported, the socket is rebuilt after a
//! timeout, and reconnect cycles leak no file descriptors. Also the key-file rules.
//!
//! One test per binary section that counts fds: they run in their own process (this file),
//! serialised by a mutex so parallel test threads do not disturb the counts.
// Each #[tokio::test] runs its own current-thread runtime on its own test thread, so a
// std Mutex held across `.await` only serialises whole tests, which is the point.
#![allow(clippy::await_holding_lock)]

use beacond::config::minion::MinionOpts;
use beacond::event::Event;
use beacond::transport::salt::channel::LinkState;
use beacond::transport::salt::{Masters, TransportError};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::time::Instant;

static SERIAL: Mutex<()> = Mutex::new(());
static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn scratch(label: &str) -> PathBuf {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("offline-{label}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch");
    d
}

fn opts(pki: &Path, masters: Vec<String>, settings: serde_json::Value) -> MinionOpts {
    MinionOpts {
        id: "offline-minion".into(),
        cachedir: pki.join("cache"),
        pki_dir: pki.to_path_buf(),
        master: masters,
        master_port: 4506,
        settings: settings.as_object().cloned().unwrap_or_default(),
    }
}

fn event() -> Event {
    let mut d = serde_json::Map::new();
    d.insert("x".into(), json!(1));
    Event::from_beacon("offline-minion", "probe", d)
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A TCP endpoint that accepts and then says nothing until the peer hangs up.
async fn silent_listener() -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 256];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn dead_master_is_reported_quickly() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let pki = scratch("dead");
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut m = Masters::new(&opts(
        &pki,
        vec![format!("127.0.0.1:{port}")],
        json!({"keysize": 1024}),
    ))
    .expect("masters");
    let t0 = Instant::now();
    let e = m.deliver(&[event()]).await.expect_err("dead master");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert!(matches!(e, TransportError::Unreachable { .. }), "{e:?}");
    assert_eq!(m.states()[0].1, LinkState::Down);
    // Backing off: a second call answers at once, without the network, with the reason.
    let e2 = m.deliver(&[event()]).await.expect_err("still dead");
    assert_eq!(e.to_string(), e2.to_string());
    assert!(m.next_attempt().is_some());
}

#[tokio::test]
async fn hung_master_times_out_rebuilds_socket_and_leaks_nothing() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let pki = scratch("hung");
    let (addr, accepted) = silent_listener().await;
    let mut m = Masters::new(&opts(
        &pki,
        vec![addr],
        json!({"keysize": 1024, "auth_timeout": 0.2, "request_channel_timeout": 0.2,
               "recon_default": 10, "recon_max": 20}),
    ))
    .expect("masters");
    // Warm up once (lazy statics, the runtime's own fds), then count.
    let e = m.deliver(&[event()]).await.expect_err("hung");
    assert!(matches!(e, TransportError::Timeout { .. }), "{e:?}");
    let base = open_fds();
    let rounds = 20;
    for _ in 0..rounds {
        if let Some(t) = m.next_attempt() {
            tokio::time::sleep_until(t).await;
        }
        let t0 = Instant::now();
        let e = m.deliver(&[event()]).await.expect_err("hung");
        assert!(matches!(e, TransportError::Timeout { .. }), "{e:?}");
        assert!(t0.elapsed() < Duration::from_secs(2), "deadline not kept");
    }
    // Every attempt used a new connection: a timed-out REQ socket is never reused.
    assert_eq!(accepted.load(Ordering::SeqCst), rounds + 1);
    // Give the listener tasks a moment to see the hang-ups (bounded wait on a condition).
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_fds() > base + 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let now = open_fds();
    assert!(
        now <= base + 2,
        "fds grew from {base} to {now} over {rounds} reconnects"
    );
}

#[test]
fn key_pair_created_with_salt_modes_and_loose_key_refused() {
    let _g = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let pki = scratch("keys").join("pki");
    let o = opts(&pki, vec!["127.0.0.1".into()], json!({"keysize": 1024}));
    Masters::new(&o).expect("creates keys");
    let mode = |p: &str| {
        std::fs::metadata(pki.join(p))
            .expect("key file")
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("minion.pem"), 0o400);
    assert_eq!(mode("minion.pub"), 0o644);
    let pem = std::fs::read_to_string(pki.join("minion.pem")).expect("pem");
    assert!(pem.starts_with("-----BEGIN RSA PRIVATE KEY-----"), "{pem}");
    let public = std::fs::read_to_string(pki.join("minion.pub")).expect("pub");
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "{public}");
    // Loaded again: same key, not regenerated.
    Masters::new(&o).expect("loads keys");
    assert_eq!(
        std::fs::read_to_string(pki.join("minion.pub")).expect("pub"),
        public
    );
    // Group-readable private key: refused, naming the file and the mode.
    std::fs::set_permissions(
        pki.join("minion.pem"),
        std::fs::Permissions::from_mode(0o440),
    )
    .expect("chmod");
    let e = Masters::new(&o).expect_err("loose key");
    let msg = e.to_string();
    assert!(
        matches!(e, TransportError::KeyPermissions { mode: 0o440, .. }),
        "{e:?}"
    );
    assert!(msg.contains("minion.pem") && msg.contains("0440"), "{msg}");
    // A minion.pub that is not ours: refused.
    std::fs::set_permissions(
        pki.join("minion.pem"),
        std::fs::Permissions::from_mode(0o400),
    )
    .expect("chmod");
    let other = scratch("keys-other").join("pki");
    Masters::new(&opts(&other, vec!["x".into()], json!({"keysize": 1024}))).expect("other");
    std::fs::copy(other.join("minion.pub"), pki.join("minion.pub")).expect("copy");
    let e = Masters::new(&o).expect_err("mismatched pub");
    assert!(e.to_string().contains("does not belong"), "{e}");
}
