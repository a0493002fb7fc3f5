//! `selinux` on fixture files: a selinuxfs `enforce` file and an `/etc/selinux/config` flipped
//! as `setenforce` and an editor would, `who` read from a real utmp file built by `utmpdump -r`.
mod common;
use common::beacond::*;
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

fn utmp() -> Vec<u8> {
    let text = "\
[7] [01001] [ts/0] [alice   ] [pts/0       ] [10.0.0.1            ] [10.0.0.1       ] [2024-05-01T09:15:00,000000+00:00]
[8] [01002] [ts/1] [        ] [pts/1       ] [                    ] [0.0.0.0        ] [2024-05-01T09:20:00,000000+00:00]
[7] [01003] [ts/2] [bob     ] [pts/2       ] [bastion             ] [10.0.0.2       ] [2024-05-01T10:00:00,000000+00:00]
";
    let mut child = Command::new("utmpdump")
        .arg("-r")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("utmpdump (util-linux)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed");
    let out = child.wait_with_output().expect("utmpdump");
    assert!(out.status.success());
    out.stdout
}

struct Fixture {
    dir: TempDir,
}

impl Fixture {
    fn new(label: &str, enforce: &str, config: &str) -> Fixture {
        let dir = TempDir::new(label);
        std::fs::create_dir_all(dir.join("selinuxfs")).expect("selinuxfs");
        std::fs::create_dir_all(dir.join("etc")).expect("etc");
        std::fs::write(dir.join("selinuxfs/enforce"), enforce).expect("enforce");
        let f = Fixture { dir };
        f.config(config);
        std::fs::write(f.dir.join("utmp"), utmp()).expect("utmp");
        f
    }
    /// As `setenforce` does: write the value in place.
    fn enforce(&self, v: &str) {
        std::fs::write(self.dir.join("selinuxfs/enforce"), v).expect("enforce");
    }
    /// As an editor does: a new file renamed over the old one.
    fn config(&self, mode: &str) {
        let tmp = self.dir.join("etc/.config.swp");
        std::fs::write(
            &tmp,
            format!("# SELINUX=enforcing\nSELINUX={mode}\nSELINUXTYPE=targeted\n"),
        )
        .expect("config");
        std::fs::rename(&tmp, self.dir.join("etc/config")).expect("rename config");
    }
    fn options(&self) -> String {
        format!(
            "    - selinuxfs: {}\n    - config_file: {}\n    - utmp_file: {}\n",
            self.dir.join("selinuxfs").display(),
            self.dir.join("etc/config").display(),
            self.dir.join("utmp").display()
        )
    }
}

fn change(e: &Value) -> (String, String) {
    let tag = e["tag"]
        .as_str()
        .unwrap_or("")
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_owned();
    (
        tag,
        e["data"]["changes"][0]["mode"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
    )
}

#[test]
fn leaving_enforcing_fires_with_who_was_logged_in() {
    let fx = Fixture::new("selinux1", "1\n", "enforcing");
    let cfg = ConfigDir::new("se1", &format!("beacons:\n  selinux:\n{}", fx.options()));
    let agent = Agent::start(cfg.path(), &[]);

    fx.enforce("0\n"); // setenforce 0
    let ev = agent.next(WAIT).expect("mode event");
    assert_eq!(ev["tag"], "salt/beacon/se1/selinux/mode");
    assert_eq!(change(&ev), ("mode".into(), "Permissive".into()));
    let who = &ev["data"]["changes"][0]["who"];
    let users: Vec<&str> = who
        .as_array()
        .expect("who is a list")
        .iter()
        .filter_map(|s| s["user"].as_str())
        .collect();
    assert_eq!(users, ["alice", "bob"], "logged-in sessions only: {who}");
    assert_eq!(who[0]["line"], "pts/0");
    assert_eq!(who[0]["host"], "10.0.0.1");
    assert_eq!(who[1]["login"], "2024-05-01T10:00:00Z");

    fx.config("permissive");
    let ev = agent.next(WAIT).expect("config event");
    assert_eq!(ev["tag"], "salt/beacon/se1/selinux/config");
    assert_eq!(change(&ev), ("config".into(), "Permissive".into()));
    assert_eq!(
        ev["data"]["changes"][0]["file"],
        fx.dir.join("etc/config").display().to_string()
    );
    assert_eq!(
        ev["data"]["changes"][0]["who"].as_array().map(Vec::len),
        Some(2)
    );

    // Back to enforcing is not an event; the next departure is.
    fx.enforce("1\n");
    fx.config("disabled");
    let ev = agent.next(WAIT).expect("config event");
    assert_eq!(change(&ev), ("config".into(), "Disabled".into()));
    fx.enforce("0\n");
    let ev = agent.next(WAIT).expect("second mode event");
    assert_eq!(change(&ev), ("mode".into(), "Permissive".into()));
    assert!(agent.collect_for(Duration::from_millis(300)).is_empty());
}

#[test]
fn desired_mode_and_disabled_at_start() {
    // Desired permissive, running enforcing: fires at once (as the talk's beacon does).
    let fx = Fixture::new("selinux2", "1\n", "permissive");
    let cfg = ConfigDir::new(
        "se2",
        &format!(
            "beacons:\n  selinux:\n    - mode: permissive\n{}",
            fx.options()
        ),
    );
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got: Vec<_> = out.events.iter().map(change).collect();
    assert_eq!(got, [("mode".into(), "Enforcing".into())]);

    // No selinuxfs enforce file: SELinux is disabled.
    std::fs::remove_file(fx.dir.join("selinuxfs/enforce")).expect("rm");
    let cfg = ConfigDir::new("se3", &format!("beacons:\n  selinux:\n{}", fx.options()));
    let out = once(cfg.path());
    let got: Vec<_> = out.events.iter().map(change).collect();
    assert_eq!(
        got,
        [
            ("mode".into(), "Disabled".into()),
            ("config".into(), "Permissive".into())
        ]
    );
}
