//! The `users` beacon against real account files changed by the real shadow-utils tools
//! (`useradd`/`usermod`/`groupadd`/`userdel --prefix DIR` write `DIR/etc/*` by rename-over, as
//! on a live host), followed through real inotify.
mod common;
use common::beacond::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn tool(prefix: &Path, args: &[&str]) {
    let st = Command::new(args[0])
        .arg("--prefix")
        .arg(prefix)
        .args(&args[1..])
        .status()
        .expect("shadow-utils tool");
    assert!(st.success(), "{args:?} failed");
}

fn fixture(label: &str) -> TempDir {
    let root = TempDir::new(label);
    std::fs::create_dir_all(root.join("etc")).expect("etc");
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\nbob:x:1001:1001:Bob:/home/bob:/bin/bash\n",
    )
    .expect("passwd");
    std::fs::write(
        root.join("etc/group"),
        "root:x:0:\nsudo:x:27:bob\nbob:x:1001:\nusers:x:100:\n",
    )
    .expect("group");
    std::fs::write(
        root.join("etc/shadow"),
        "root:*:19000:0:99999:7:::\nbob:$6$saltsalt$OLDHASHOLDHASH:19000:0:99999:7:::\n",
    )
    .expect("shadow");
    std::fs::write(root.join("etc/gshadow"), "").expect("gshadow");
    root
}

fn config(id: &str, root: &Path) -> ConfigDir {
    ConfigDir::new(
        id,
        &format!(
            "beacons:\n  users:\n    - passwd: {0}/etc/passwd\n    - group: {0}/etc/group\n    - shadow: {0}/etc/shadow\n",
            root.display()
        ),
    )
}

fn tagged<'a>(tag: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |e: &Value| e["tag"].as_str() == Some(tag)
}

#[test]
fn account_changes_by_real_tools_are_reported_without_hashes() {
    let root = fixture("users1");
    let cfg = config("users1", root.path());
    // Baseline (saved in the state dir): nothing to report.
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.events.is_empty(), "{:?}", out.events);

    let agent = Agent::start(cfg.path(), &[]);
    let t = Duration::from_secs(10);
    let p = root.path();

    tool(p, &["useradd", "-s", "/bin/sh", "-G", "sudo", "alice"]);
    let ev = agent.wait_for(t, "added", tagged("salt/beacon/users1/users/added"));
    assert_eq!(ev["data"]["user"], "alice");
    assert_eq!(ev["data"]["shell"], "/bin/sh");
    assert_eq!(ev["data"]["groups"], serde_json::json!(["sudo"]));
    assert_eq!(ev["data"]["password_locked"], true);
    for k in [
        "uid",
        "gid",
        "gecos",
        "home",
        "group",
        "last_change",
        "expire",
    ] {
        assert!(ev["data"].get(k).is_some(), "{k} missing: {ev}");
    }
    let ev = agent.wait_for(
        t,
        "sudo changed",
        tagged("salt/beacon/users1/users/group/changed"),
    );
    assert_eq!(ev["data"]["group"], "sudo");
    assert_eq!(ev["data"]["members_added"], serde_json::json!(["alice"]));
    assert_eq!(ev["data"]["members"], serde_json::json!(["bob", "alice"]));

    tool(p, &["usermod", "-p", "$6$newsalt$NEWHASHNEWHASH", "bob"]);
    let ev = agent.wait_for(t, "bob changed", tagged("salt/beacon/users1/users/changed"));
    assert_eq!(ev["data"]["user"], "bob");
    let changes = ev["data"]["changes"].as_array().expect("changes");
    assert!(changes.contains(&Value::from("password")), "{ev}");
    let text = ev.to_string();
    assert!(
        !text.contains("HASH") && !text.contains("salt$"),
        "hash leaked: {text}"
    );

    tool(p, &["usermod", "-s", "/bin/bash", "alice"]);
    let ev = agent.wait_for(
        t,
        "alice changed",
        tagged("salt/beacon/users1/users/changed"),
    );
    assert_eq!(ev["data"]["user"], "alice");
    assert_eq!(ev["data"]["changes"], serde_json::json!(["shell"]));
    assert_eq!(ev["data"]["old"]["shell"], "/bin/sh");

    tool(p, &["groupadd", "-g", "2000", "devs"]);
    let ev = agent.wait_for(
        t,
        "group added",
        tagged("salt/beacon/users1/users/group/added"),
    );
    assert_eq!(ev["data"]["group"], "devs");
    assert_eq!(ev["data"]["gid"], 2000);

    tool(p, &["userdel", "alice"]);
    let ev = agent.wait_for(t, "removed", tagged("salt/beacon/users1/users/removed"));
    assert_eq!(ev["data"]["user"], "alice");
    drop(agent);

    // A change made while beacond is down is reported by the next run (saved snapshot).
    tool(p, &["groupdel", "devs"]);
    let out = once(cfg.path());
    let tags: Vec<&str> = out
        .events
        .iter()
        .filter_map(|e| e["tag"].as_str())
        .collect();
    assert_eq!(
        tags,
        ["salt/beacon/users1/users/group/removed"],
        "{:?}",
        out.events
    );
}

#[test]
fn vipw_style_rename_over_is_seen() {
    let root = fixture("users2");
    let cfg = config("users2", root.path());
    assert!(once(cfg.path()).events.is_empty());
    let agent = Agent::start(cfg.path(), &[]);
    // vipw edits a copy and renames it over the original.
    let edit = root.join("etc/passwd.edit");
    std::fs::write(
        &edit,
        "root:x:0:0:root:/root:/bin/bash\nbob:x:1001:1001:Bob:/srv/bob:/bin/bash\n",
    )
    .expect("edit");
    std::fs::rename(&edit, root.join("etc/passwd")).expect("rename");
    let ev = agent.wait_for(
        Duration::from_secs(10),
        "changed",
        tagged("salt/beacon/users2/users/changed"),
    );
    assert_eq!(ev["data"]["changes"], serde_json::json!(["home"]));
    assert_eq!(ev["data"]["old"]["home"], "/home/bob");
    assert_eq!(ev["data"]["home"], "/srv/bob");
}
