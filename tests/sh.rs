//! `sh` on the real kernel proc connector: real commands from real shells (`-c` and an
//! interactive shell on a pty via util-linux `script`), Salt's keys plus pid/ppid/user/source,
//! scope, filters, a process gone before /proc could be read, and the /proc-scan fallback.
//!
//! The shells are real bash and dash binaries copied under a test-only name and listed in a
//! fixture shells file, so that the shell which started `cargo test` (CI's own bash) is not a
//! "shell" to the beacon and the scope assertions mean something.
mod common;
use common::beacond::*;
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(20);

/// A command line that lives 200 ms (long enough for its argv to be read from /proc on a busy
/// CI host) and carries arbitrary arguments: perl is essential in Debian.
const HOLD: &str = "/usr/bin/perl -e 'select(undef,undef,undef,0.2)'";

struct Shells {
    dir: TempDir,
    bash: PathBuf,
    dash: PathBuf,
    file: PathBuf,
}

fn shells(label: &str) -> Shells {
    let dir = TempDir::new(label);
    let bash = dir.join("tbash");
    let dash = dir.join("tdash");
    copy_exe("/bin/bash", &bash);
    copy_exe("/bin/dash", &dash);
    let file = dir.join("shells");
    std::fs::write(
        &file,
        format!("# test shells\n{}\n{}\n", bash.display(), dash.display()),
    )
    .expect("shells file");
    Shells {
        dir,
        bash,
        dash,
        file,
    }
}

fn agent(id: &str, options: &str) -> (ConfigDir, Agent) {
    let cfg = ConfigDir::new(id, &format!("beacons:\n  sh:\n{options}"));
    let agent = Agent::start(cfg.path(), &[]);
    // The beacon subscribes, then logs; wait for that line rather than sleeping.
    let deadline = Instant::now() + WAIT;
    while !agent.stderr().contains("sh: ") {
        assert!(
            Instant::now() < deadline,
            "beacon did not start: {}",
            agent.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (cfg, agent)
}

fn args(e: &Value) -> Vec<String> {
    e["data"]["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn has_arg(e: &Value, marker: &str) -> bool {
    args(e).iter().any(|a| a == marker)
}

fn run_ok(cmd: &mut Command) -> u32 {
    let child = cmd.spawn().expect("spawn");
    let pid = child.id();
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{cmd:?} failed");
    pid
}

#[test]
fn commands_from_real_shells_carry_salts_keys_and_the_process() {
    let sh = shells("sh-shells");
    let (_cfg, agent) = agent(
        "sh1",
        &format!("    - shells_file: {}\n", sh.file.display()),
    );

    // Not from a shell: the test runs it directly. Out of the default scope.
    run_ok(Command::new("/usr/bin/perl").args([
        "-e",
        "select(undef,undef,undef,0.2)",
        "marker-direct",
    ]));

    // bash -c with two commands: bash forks, the child execs echo.
    let bash_pid = run_ok(
        Command::new(&sh.bash)
            .arg("-c")
            .arg(format!(
                "cd /tmp && {HOLD} marker-bash one 'two words'; true"
            ))
            .stdout(Stdio::null()),
    );
    let before = std::cell::RefCell::new(Vec::new());
    let ev = agent.wait_for(WAIT, "marker-bash", |e| {
        before.borrow_mut().push(e.clone());
        has_arg(e, "marker-bash")
    });
    assert!(
        !before.borrow().iter().any(|e| has_arg(e, "marker-direct")),
        "a command not run from a shell was reported under scope: shells"
    );
    assert_eq!(ev["tag"], format!("salt/beacon/sh1/sh/{bash_pid}"));
    let d = &ev["data"];
    assert_eq!(
        args(&ev)[..],
        [
            "/usr/bin/perl",
            "-e",
            "select(undef,undef,undef,0.2)",
            "marker-bash",
            "one",
            "two words"
        ]
    );
    assert_eq!(d["cmd"], "/usr/bin/perl");
    assert_eq!(d["user"], "root");
    assert_eq!(d["uid"], 0);
    assert_eq!(d["ppid"], bash_pid);
    assert_ne!(d["pid"], bash_pid);
    assert_eq!(d["shell_pid"], bash_pid);
    assert_eq!(d["cwd"], "/tmp");
    assert_eq!(d["source"], "proc_connector");
    assert_eq!(d["argv_missing"], false);
    for k in ["args", "cmd", "user", "pid", "ppid", "cwd", "tty", "source"] {
        assert!(data_keys(&ev).contains(&k.to_owned()), "missing {k}");
    }

    // sh (dash) -c ending in exec: the shell's own process becomes the command.
    let dash_pid = run_ok(
        Command::new(&sh.dash)
            .arg("-c")
            .arg(format!("/bin/sleep 0.1; exec {HOLD} marker-dash"))
            .stdout(Stdio::null()),
    );
    let ev = agent.wait_for(WAIT, "marker-dash", |e| has_arg(e, "marker-dash"));
    assert_eq!(ev["data"]["pid"], dash_pid);
    assert_eq!(ev["tag"], format!("salt/beacon/sh1/sh/{dash_pid}"));

    // An interactive shell on a pty (util-linux `script`), typed commands.
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c"])
        .arg(format!("{} --norc --noprofile -i", sh.bash.display()))
        .arg("/dev/null")
        .env("SHELL", &sh.bash)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("script (util-linux)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{HOLD} marker-pty x\nexit\n").as_bytes())
        .expect("type");
    let ev = agent.wait_for(WAIT, "marker-pty", |e| has_arg(e, "marker-pty"));
    let _ = child.wait();
    let tty = ev["data"]["tty"].as_str().unwrap_or("");
    assert!(
        tty.starts_with("pts/"),
        "tty of an interactive command: {ev}"
    );
    assert_eq!(ev["data"]["user"], "root");
    drop(sh.dir);
}

#[test]
fn users_and_exclude_filter_commands() {
    let sh = shells("sh-filters");
    let (_cfg, agent) = agent(
        "sh2",
        &format!(
            "    - shells_file: {}\n    - users: [nobody]\n    - exclude: ['marker-x[a-z]+']\n",
            sh.file.display()
        ),
    );
    let as_nobody = |script: &str| {
        run_ok(
            Command::new("runuser")
                .args(["-u", "nobody", "--"])
                .arg(&sh.bash)
                .arg("-c")
                .arg(script)
                .current_dir("/")
                .stdout(Stdio::null()),
        )
    };
    run_ok(
        Command::new(&sh.bash)
            .arg("-c")
            .arg(format!("{HOLD} marker-root; true"))
            .stdout(Stdio::null()),
    );
    as_nobody(&format!("{HOLD} marker-xexcluded; true"));
    as_nobody(&format!("{HOLD} marker-nobody; true"));
    let before = std::cell::RefCell::new(Vec::new());
    let ev = agent.wait_for(WAIT, "marker-nobody", |e| {
        before.borrow_mut().push(e.clone());
        has_arg(e, "marker-nobody")
    });
    assert_eq!(ev["data"]["user"], "nobody");
    assert_eq!(ev["data"]["uid"], 65534);
    assert!(
        !before.borrow().iter().any(|e| has_arg(e, "marker-root")),
        "users filter"
    );
    assert!(
        !before
            .borrow()
            .iter()
            .any(|e| has_arg(e, "marker-xexcluded")),
        "exclude"
    );
}

/// Wait until every thread of `pid` is stopped (SIGSTOP delivered).
fn wait_stopped(pid: u32) {
    let deadline = Instant::now() + WAIT;
    loop {
        let all = std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("task dir")
            .flatten()
            .all(|t| {
                std::fs::read_to_string(t.path().join("stat"))
                    .ok()
                    .and_then(|s| {
                        s.rsplit(')')
                            .next()
                            .map(|r| r.trim_start().starts_with('T'))
                    })
                    .unwrap_or(true)
            });
        if all {
            return;
        }
        assert!(Instant::now() < deadline, "beacond did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn scope_all_reports_every_exec_even_a_process_already_gone() {
    let sh = shells("sh-all");
    let (_cfg, agent) = agent(
        "sh3",
        &format!(
            "    - scope: all\n    - shells_file: {}\n",
            sh.file.display()
        ),
    );
    let direct = run_ok(Command::new("/usr/bin/perl").args([
        "-e",
        "select(undef,undef,undef,0.2)",
        "marker-all",
    ]));
    let ev = agent.wait_for(WAIT, "marker-all", |e| has_arg(e, "marker-all"));
    assert_eq!(ev["data"]["pid"], direct);
    assert_eq!(ev["data"]["ppid"], std::process::id());
    assert_eq!(ev["data"]["shell_pid"], Value::Null);
    assert_eq!(ev["tag"], format!("salt/beacon/sh3/sh/{direct}"));

    // beacond frozen while a process runs and exits: its exec is still queued in the kernel
    // socket; when beacond resumes, /proc has nothing left to read, and the event still comes.
    agent.signal(libc::SIGSTOP);
    wait_stopped(agent.pid());
    let gone = run_ok(Command::new("/bin/true").arg("marker-gone"));
    agent.signal(libc::SIGCONT);
    let ev = agent.wait_for(WAIT, "the vanished process", |e| e["data"]["pid"] == gone);
    assert_eq!(ev["data"]["argv_missing"], true, "{ev}");
    assert_eq!(
        ev["data"]["ppid"],
        std::process::id(),
        "ppid from the fork event"
    );
    assert_eq!(ev["data"]["source"], "proc_connector");
}

#[test]
fn proc_scan_fallback_sees_processes_that_live_longer_than_a_scan() {
    let sh = shells("sh-scan");
    let (_cfg, agent) = agent(
        "sh4",
        &format!(
            "    - shells_file: {}\n    - source: proc_scan\n    - scan_interval: 0.1\n",
            sh.file.display()
        ),
    );
    assert!(agent.stderr().contains("proc_scan"), "{}", agent.stderr());
    let mut child = Command::new(&sh.bash)
        .arg("-c")
        .arg("/bin/sleep 30.5; true")
        .spawn()
        .expect("spawn");
    let ev = agent.wait_for(WAIT, "sleep 30.5", |e| has_arg(e, "30.5"));
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(ev["data"]["source"], "proc_scan");
    assert_eq!(ev["data"]["cmd"], "/usr/bin/sleep");
    assert_eq!(ev["data"]["ppid"], child.id());
    assert_eq!(ev["data"]["user"], "root");
}

fn check(dir: &Path) -> std::process::Output {
    Command::new(bin())
        .arg("-c")
        .arg(dir)
        .arg("--check")
        .output()
        .expect("beacond --check")
}

#[test]
fn command_audit_dropin_runs() {
    let shipped =
        std::fs::read_to_string(repo().join("beacons/command-audit.conf")).expect("drop-in");
    let cfg = ConfigDir::new("ca0", "").dropin("command-audit.conf", &shipped);
    let out = check(cfg.path());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let sh = shells("sh-dropin");
    let text = shipped.replace("/etc/shells", &sh.file.display().to_string());
    assert_ne!(text, shipped, "the drop-in names its shells file");
    let cfg = ConfigDir::new("ca1", "").dropin("command-audit.conf", &text);
    let agent = Agent::start(cfg.path(), &[]);
    // Until the beacon has subscribed, commands are not seen: repeat until one is.
    let deadline = Instant::now() + WAIT;
    let ev = loop {
        run_ok(
            Command::new(&sh.bash)
                .arg("-c")
                .arg(format!("{HOLD} marker-audit; true"))
                .stdout(Stdio::null()),
        );
        if let Some(ev) = agent
            .next(Duration::from_millis(500))
            .filter(|e| has_arg(e, "marker-audit"))
        {
            break ev;
        }
        assert!(Instant::now() < deadline, "{}", agent.stderr());
    };
    assert!(ev["tag"]
        .as_str()
        .unwrap_or("")
        .starts_with("salt/beacon/ca1/sh/"));
    assert_eq!(ev["data"]["user"], "root");
}

#[test]
fn bad_options_are_precise_errors() {
    let cfg =
        ConfigDir::new("sh5", "").dropin("bad.conf", "beacons:\n  sh:\n    - scope: everything\n");
    let out = check(cfg.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("bad.conf:3") && err.contains("scope must be 'shells' or 'all'"),
        "{err}"
    );
    let cfg = ConfigDir::new("sh6", "").dropin(
        "bad.conf",
        "beacons:\n  sh:\n    - exclude: ['(unclosed']\n",
    );
    let out = check(cfg.path());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.conf:3") && err.contains("not a valid regex"),
        "{err}"
    );
}

#[test]
fn auto_falls_back_to_proc_scan_in_a_new_network_namespace() {
    // The proc connector exists only in the initial network namespace: a real `unshare -n`
    // (util-linux) makes it unavailable, and `source: auto` must say so and scan /proc instead.
    let cfg = ConfigDir::new("sh7", "beacons:\n  sh:\n    - scope: all\n");
    let out = Command::new("unshare")
        .arg("-n")
        .arg(bin())
        .arg("-c")
        .arg(cfg.path())
        .arg("--once")
        .output()
        .expect("unshare (util-linux)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("proc connector unavailable"), "{err}");
    assert!(err.contains("proc_scan mode"), "{err}");
}

#[test]
fn receive_buffer_overrun_is_reported_not_silent() {
    // A small receive buffer and a frozen beacond: the kernel drops messages (ENOBUFS), and
    // beacond must say so with an `overrun` event when it resumes.
    let (_cfg, agent) = agent("sh8", "    - scope: all\n    - rcvbuf: 65536\n");
    agent.signal(libc::SIGSTOP);
    wait_stopped(agent.pid());
    run_ok(
        Command::new("/bin/bash")
            .arg("-c")
            .arg("for ((i=0;i<1500;i++)); do /bin/true; done"),
    );
    agent.signal(libc::SIGCONT);
    let ev = agent.wait_for(WAIT, "an overrun event", |e| {
        e["tag"] == "salt/beacon/sh8/sh/overrun"
    });
    assert!(ev["data"]["overruns"].as_u64().unwrap_or(0) >= 1, "{ev}");
    assert_eq!(ev["data"]["source"], "proc_connector");
}
