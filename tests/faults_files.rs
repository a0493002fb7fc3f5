//! Fault suite, the files beacond writes: keys 0400 (public 0644, as salt-minion), spool and
//! state files 0600 in 0700 directories whatever the umask, and no symlink followed when
//! writing state (a link planted under a state file's or its temporary's name is replaced, its
//! target untouched).

mod common;
use common::beacond::TempDir;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A local port nothing listens on: the master is away, events stay in the spool.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

struct Setup {
    root: TempDir,
    log: PathBuf,
}

impl Setup {
    fn new(label: &str) -> Setup {
        let root = TempDir::new(label);
        let cfg = root.join("cfg");
        std::fs::create_dir_all(cfg.join("minion.d")).expect("mkdir");
        let log = root.join("app.log");
        std::fs::write(&log, "hello 0\n").expect("log");
        let btmp = root.join("btmp");
        std::fs::write(&btmp, b"").expect("btmp");
        std::fs::write(
            cfg.join("minion"),
            format!(
                "id: {label}\ncachedir: {r}/cache\npki_dir: {r}/pki\nmaster: 127.0.0.1\nmaster_port: {}\nbeacond_status_interval: 0\n",
                closed_port(),
                r = root.path().display()
            ),
        )
        .expect("minion");
        std::fs::write(
            cfg.join("minion.d/b.conf"),
            format!(
                "beacons:\n  log:\n    - file: {}\n    - tags:\n        hello:\n          regex: 'hello'\n  btmp:\n    - file: {}\n  memusage:\n    - percent: 1%\n    - procfs: {}\n    - interval: 0.2\n",
                log.display(),
                btmp.display(),
                common::beacond::repo().join("tests/fixtures/proc-high").display()
            ),
        )
        .expect("beacons");
        Setup { root, log }
    }

    fn start(&self, umask: libc::mode_t) -> Child {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_beacond"));
        cmd.arg("-c")
            .arg(self.root.join("cfg"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SAFETY: umask(2) is async-signal-safe and cannot fail.
        unsafe {
            cmd.pre_exec(move || {
                libc::umask(umask);
                Ok(())
            });
        }
        cmd.spawn().expect("spawn beacond")
    }

    fn state_dir(&self) -> PathBuf {
        self.root.join("cache/beacond/state")
    }

    fn spool_dir(&self) -> PathBuf {
        self.root.join("cache/beacond/spool")
    }

    /// Wait until both beacons saved state and the spool holds events.
    fn wait_written(&self, child: &mut Child) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let states = files(&self.state_dir())
                .iter()
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .count();
            let segs = files(&self.spool_dir()).len();
            if states >= 2 && segs >= 2 {
                return;
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!("beacond exited: {st:?}");
            }
            assert!(
                Instant::now() < deadline,
                "state/spool never written ({states} state files)"
            );
            // Polling the file system: the files are the thing under test.
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn stop(mut child: Child) {
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().ok().flatten().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("beacond did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn assert_modes(s: &Setup) {
    let pki = s.root.join("pki");
    assert_eq!(mode(&pki), 0o700, "pki_dir");
    assert_eq!(mode(&pki.join("minion.pem")), 0o400, "minion.pem");
    assert_eq!(mode(&pki.join("minion.pub")), 0o644, "minion.pub");
    for dir in [s.spool_dir(), s.state_dir()] {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        for f in files(&dir) {
            assert_eq!(mode(&f), 0o600, "{}", f.display());
        }
    }
}

#[test]
fn modes_hold_under_a_permissive_umask() {
    let s = Setup::new("umask000");
    let mut child = s.start(0o000);
    s.wait_written(&mut child);
    stop(child);
    assert_modes(&s);
}

#[test]
fn modes_hold_and_everything_works_under_a_restrictive_umask() {
    let s = Setup::new("umask077");
    let mut child = s.start(0o077);
    s.wait_written(&mut child);
    stop(child);
    assert_modes(&s);
    // The spool is readable back: the events are there.
    let spool = beacond::spool::store::Spool::open(&s.spool_dir(), 64 << 20).expect("spool");
    assert!(spool.pending() > 0);
}

#[test]
fn no_symlink_is_followed_when_writing_state() {
    let s = Setup::new("nofollow");
    let mut child = s.start(0o022);
    s.wait_written(&mut child);
    stop(child);
    // Plant links to victim files under every state file's name and its temporary's name,
    // and under the spool's temporaries.
    let victims = TempDir::new("victims");
    let mut planted = Vec::new();
    let state_files: Vec<PathBuf> = files(&s.state_dir())
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    for (i, f) in state_files.iter().enumerate() {
        for (j, link) in [f.clone(), f.with_extension("json.tmp")]
            .into_iter()
            .enumerate()
        {
            let victim = victims.join(format!("victim-{i}-{j}"));
            std::fs::write(&victim, "precious\n").expect("victim");
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&victim, &link).expect("plant");
            planted.push((link, victim));
        }
    }
    for name in ["ack.tmp", "id.tmp"] {
        let victim = victims.join(name);
        std::fs::write(&victim, "precious\n").expect("victim");
        let link = s.spool_dir().join(name);
        std::os::unix::fs::symlink(&victim, &link).expect("plant");
        planted.push((link, victim));
    }
    // Restart and make both beacons write their state again.
    let mut child = s.start(0o022);
    std::fs::OpenOptions::new()
        .append(true)
        .open(&s.log)
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"hello 1\nhello 2\n"))
        .expect("append");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !state_files
        .iter()
        .all(|f| std::fs::symlink_metadata(f).is_ok_and(|m| m.file_type().is_file()))
    {
        assert!(
            Instant::now() < deadline,
            "state never rewritten over the planted links"
        );
        assert!(child.try_wait().ok().flatten().is_none(), "beacond exited");
        std::thread::sleep(Duration::from_millis(50));
    }
    stop(child);
    for (link, victim) in &planted {
        assert_eq!(
            std::fs::read_to_string(victim).expect("victim"),
            "precious\n",
            "written through {}",
            link.display()
        );
    }
    for f in &state_files {
        assert_eq!(mode(f), 0o600, "{}", f.display());
    }
}
