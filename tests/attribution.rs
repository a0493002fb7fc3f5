//! `attribute: True` on the real kernel (root, kprobes, BTF, as CI runs): the `inotify`,
//! `users` and `selinux` events name the process behind a change — its pid, program, command
//! line, user and login user. Each change is made by a process the test spawns, so its pid is
//! known: a bash sets its audit login uid to 1 (`daemon`), as pam_loginuid does at login, then
//! execs the program that makes the change (same pid), so the login user is known too. Without
//! attribution the keys are absent and every test fails.
mod common;
use common::beacond::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn start(id: &str, beacons: &str) -> (ConfigDir, Agent) {
    let cfg = ConfigDir::new(id, &format!("beacons:\n{beacons}"));
    let agent = Agent::start(cfg.path(), &[]);
    // Said once the probe is loaded and the beacon's paths are registered.
    agent.wait_log("attribution on", WAIT);
    (cfg, agent)
}

/// Run `argv` in a login session of `daemon` (login uid 1), wait for it to succeed, return
/// its pid.
fn login_exec(argv: &[&str]) -> u32 {
    let mut child: Child = Command::new("/bin/bash")
        .args(["-c", "echo 1 > /proc/self/loginuid && exec \"$@\"", "login"])
        .args(argv)
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn");
    let pid = child.id();
    let st = child.wait().expect("wait");
    assert!(st.success(), "{argv:?}: {st}");
    pid
}

/// The process keys (flat for inotify, under `by` elsewhere) name `pid`, a program whose file
/// name starts with `exe` (`python3` is `python3.13`), a command line containing `cmd`, root,
/// and the login user `daemon`.
fn assert_actor(keys: &Value, pid: u32, exe: &str, cmd: &str, event: &Value) {
    assert_eq!(keys["pid"], pid, "pid: {event}");
    let path = keys["exe"].as_str().unwrap_or_default();
    let name = path.rsplit('/').next().unwrap_or_default();
    assert!(
        path.starts_with('/') && name.starts_with(exe),
        "exe: {event}"
    );
    assert!(
        keys["cmd"].as_str().is_some_and(|c| c.contains(cmd)),
        "cmd: {event}"
    );
    assert_eq!(keys["uid"], 0, "{event}");
    assert_eq!(keys["user"], "root", "{event}");
    assert_eq!(keys["loginuid"], 1, "{event}");
    assert_eq!(keys["login_user"], "daemon", "{event}");
}

fn inotify_config(file: &Path) -> String {
    format!(
        "  inotify:\n    - files:\n        {}:\n          mask: [modify, moved_to]\n    - attribute: True\n",
        file.display()
    )
}

#[test]
fn inotify_names_the_shell_that_appended() {
    let dir = TempDir::new("attr-echo");
    let watched = dir.join("watched");
    std::fs::write(&watched, "a\n").expect("watched");
    let (_c, agent) = start("at1", &inotify_config(&watched));
    let marker = format!("echo-marker-{}", std::process::id());
    // bash's builtin echo: the append is made by the bash process itself, whose pid is known.
    let script = format!("echo x >> '{}' # {marker}", watched.display());
    let pid = login_exec(&["/bin/bash", "-c", &script]);
    let w = watched.display().to_string();
    let e = agent.wait_for(WAIT, "IN_MODIFY", |e| {
        e["data"]["path"] == w.as_str() && e["data"]["change"] == "IN_MODIFY"
    });
    assert_actor(&e["data"], pid, "bash", &marker, &e);
}

#[test]
fn inotify_names_the_python_that_renamed() {
    let dir = TempDir::new("attr-mv");
    let watched = dir.join("watched");
    let tmp = dir.join("tmp");
    std::fs::write(&watched, "old\n").expect("watched");
    std::fs::write(&tmp, "new\n").expect("tmp");
    let (_c, agent) = start("at2", &inotify_config(&watched));
    let code = format!(
        "import os\nos.rename({:?}, {:?})",
        tmp.display().to_string(),
        watched.display().to_string()
    );
    let pid = login_exec(&["python3", "-c", &code]);
    let w = watched.display().to_string();
    let e = agent.wait_for(WAIT, "IN_MOVED_TO", |e| {
        e["data"]["path"] == w.as_str() && e["data"]["change"] == "IN_MOVED_TO"
    });
    assert_actor(&e["data"], pid, "python3", "os.rename", &e);
}

#[test]
fn users_names_who_ran_useradd() {
    let root = TempDir::new("attr-users");
    std::fs::create_dir_all(root.join("etc")).expect("etc");
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/bash\n").expect("passwd");
    std::fs::write(root.join("etc/group"), "root:x:0:\nusers:x:100:\n").expect("group");
    std::fs::write(root.join("etc/shadow"), "root:*:19000:0:99999:7:::\n").expect("shadow");
    std::fs::write(root.join("etc/gshadow"), "").expect("gshadow");
    let r = root.path().display();
    let (_c, agent) = start(
        "at3",
        &format!(
            "  users:\n    - passwd: {r}/etc/passwd\n    - group: {r}/etc/group\n    - shadow: {r}/etc/shadow\n    - attribute: True\n"
        ),
    );
    let prefix = root.path().display().to_string();
    let pid = login_exec(&["useradd", "--prefix", &prefix, "-M", "carol"]);
    let e = agent.wait_for(WAIT, "users/added", |e| {
        e["tag"] == "salt/beacon/at3/users/added" && e["data"]["user"] == "carol"
    });
    assert_actor(&e["data"]["by"], pid, "useradd", "carol", &e);
}

#[test]
fn selinux_mode_event_names_who_wrote_enforce() {
    // A plain file stands in for selinuxfs's `enforce` (the test host has no SELinux): the
    // write goes through the same VFS path and fsnotify call as a write to selinuxfs.
    let dir = TempDir::new("attr-selinux");
    std::fs::create_dir_all(dir.join("selinuxfs")).expect("selinuxfs");
    std::fs::create_dir_all(dir.join("etc")).expect("etc");
    std::fs::write(dir.join("selinuxfs/enforce"), "1\n").expect("enforce");
    std::fs::write(dir.join("etc/config"), "SELINUX=enforcing\n").expect("config");
    std::fs::write(dir.join("utmp"), "").expect("utmp");
    let (_c, agent) = start(
        "at4",
        &format!(
            "  selinux:\n    - selinuxfs: {}\n    - config_file: {}\n    - utmp_file: {}\n    - attribute: True\n",
            dir.join("selinuxfs").display(),
            dir.join("etc/config").display(),
            dir.join("utmp").display()
        ),
    );
    let marker = format!("setenforce-marker-{}", std::process::id());
    let script = format!(
        "echo 0 > '{}' # {marker}",
        dir.join("selinuxfs/enforce").display()
    );
    let pid = login_exec(&["/bin/bash", "-c", &script]);
    let e = agent.wait_for(WAIT, "selinux/mode", |e| {
        e["tag"] == "salt/beacon/at4/selinux/mode"
    });
    let change = &e["data"]["changes"][0];
    assert_eq!(change["mode"], "Permissive", "{e}");
    assert!(change["who"].is_array(), "seed 002's `who` kept: {e}");
    assert_actor(&change["by"], pid, "bash", &marker, &e);
}

#[test]
fn without_the_capabilities_attribution_is_off_and_events_carry_no_keys() {
    let dir = TempDir::new("attr-nocap");
    let watched = dir.join("watched");
    std::fs::write(&watched, "a\n").expect("watched");
    let cfg = ConfigDir::new("at5", &format!("beacons:\n{}", inotify_config(&watched)));
    // Root without CAP_SYS_ADMIN, CAP_BPF and CAP_PERFMON: neither half can be set up.
    let agent = Agent::start_in(
        &["setpriv", "--bounding-set", "-sys_admin,-bpf,-perfmon"],
        cfg.path(),
        &[],
    );
    agent.wait_log("attribution is off", WAIT);
    let w = watched.display().to_string();
    // The watches are added right after the log line: append until the beacon reports it.
    let mut seen = None;
    for _ in 0..100 {
        std::fs::OpenOptions::new()
            .append(true)
            .open(&watched)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"x\n"))
            .expect("append");
        if let Some(e) = agent.next(Duration::from_millis(200)) {
            if e["data"]["path"] == w.as_str() {
                seen = Some(e);
                break;
            }
        }
    }
    let e = seen.unwrap_or_else(|| panic!("no event; stderr:\n{}", agent.stderr()));
    for k in ["pid", "exe", "cmd", "uid", "user", "loginuid", "login_user"] {
        assert!(e["data"].get(k).is_none(), "{k} without attribution: {e}");
    }
    assert_eq!(
        agent.stderr().matches("attribution is off").count(),
        1,
        "said once: {}",
        agent.stderr()
    );
}
