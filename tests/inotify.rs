//! The `inotify` beacon on the real kernel inotify, in temp dirs, through the real binary
//! (`beacond --stdout`). Readiness and "nothing else happened" are proven with a sentinel: a file
//! created in a watched sentinel directory; inotify delivers one fd's events in order, so once the
//! sentinel's event is printed every earlier change has been processed.
mod common;
use common::beacond::*;
use common::salt_job::{write_job_file, FakeSaltJob};
use serde_json::Value;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);
static PROBE: AtomicUsize = AtomicUsize::new(0);

/// A config dir with one `inotify` beacon watching `files` (YAML lines indented for `files:`),
/// plus a sentinel directory; `top` adds top-level items (`- coalesce: True`).
struct Setup {
    cfg: ConfigDir,
    tree: TempDir,
}

impl Setup {
    fn new(id: &str, files: &str, top: &str) -> Setup {
        let tree = TempDir::new(&format!("{id}-tree"));
        fs::create_dir_all(tree.join("sentinel")).unwrap();
        let files = files.replace("@", &tree.path().display().to_string());
        let yaml = format!(
            "beacons:\n  inotify:\n    - files:\n        {}/sentinel:\n          mask: [create]\n{files}{top}",
            tree.path().display()
        );
        let cfg = ConfigDir::new(id, &yaml);
        Setup { cfg, tree }
    }

    /// A drop-in from `beacons/`, its `/etc` paths moved into the temp tree, with the sentinel
    /// added to its `files:`.
    fn shipped(id: &str, dropin: &str) -> Setup {
        let tree = TempDir::new(&format!("{id}-tree"));
        fs::create_dir_all(tree.join("sentinel")).unwrap();
        let root = tree.path().display().to_string();
        let text = fs::read_to_string(repo().join("beacons").join(dropin)).unwrap();
        let text = text.replace("/etc", &format!("{root}/etc")).replacen(
            "    - files:\n",
            &format!("    - files:\n        {root}/sentinel:\n          mask: [create]\n"),
            1,
        );
        let cfg = ConfigDir::new(id, "").dropin(dropin, &text);
        Setup { cfg, tree }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.tree.join(rel)
    }

    /// Start the agent and wait until its watches are in place.
    fn start(&self) -> Agent {
        let agent = Agent::start(self.cfg.path(), &[]);
        self.wait_ready(&agent);
        agent
    }

    /// Wait until the beacon reports the sentinel (its watches are in place). A probe may be
    /// created before the watches exist: retry until one is seen.
    fn wait_ready(&self, agent: &Agent) {
        for _ in 0..100 {
            let probe = self.probe();
            if wait_path(agent, &probe, Duration::from_millis(100)).is_some() {
                return;
            }
        }
        panic!(
            "agent never reported the sentinel; stderr:\n{}",
            agent.stderr()
        );
    }

    fn probe(&self) -> PathBuf {
        let n = PROBE.fetch_add(1, Ordering::SeqCst);
        let p = self.p(&format!("sentinel/probe{n}"));
        fs::write(&p, b"").unwrap();
        p
    }

    /// Every event before a fresh sentinel event (so: everything caused so far).
    fn settle(&self, agent: &Agent) -> Vec<Value> {
        let probe = self.probe();
        let mut seen = Vec::new();
        loop {
            let ev = agent.next(WAIT).unwrap_or_else(|| {
                panic!(
                    "sentinel not seen; events so far {seen:#?}; stderr:\n{}",
                    agent.stderr()
                )
            });
            if ev["data"]["path"] == probe.display().to_string() {
                return seen;
            }
            seen.push(ev);
        }
    }
}

fn wait_path(agent: &Agent, path: &Path, timeout: Duration) -> Option<Value> {
    let want = path.display().to_string();
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let ev = agent.next(left)?;
        if ev["data"]["path"] == want.as_str() {
            return Some(ev);
        }
    }
}

fn changes(events: &[Value], path: &Path) -> Vec<String> {
    let want = path.display().to_string();
    events
        .iter()
        .filter(|e| e["data"]["path"] == want.as_str())
        .map(|e| e["data"]["change"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The changes of a path, consecutive repeats folded (a truncating write is two IN_MODIFYs
/// unless the kernel merged them first).
fn distinct(events: &[Value], path: &Path) -> Vec<String> {
    let mut c = changes(events, path);
    c.dedup();
    c
}

fn tag(id: &str, watch: &Path) -> String {
    format!("salt/beacon/{id}/inotify/{}", watch.display())
}

#[test]
fn each_mask_reports_its_event_with_salts_names() {
    // One root per mask, each on its own file or directory.
    let dirs = ["create", "delete", "moved_from", "moved_to", "open_d"];
    let files = [
        "access",
        "attrib",
        "close_nowrite",
        "close_write",
        "delete_self",
        "ignored",
        "modify",
        "move_self",
        "open",
    ];
    let mut yaml = String::new();
    for d in dirs {
        let mask = d.trim_end_matches("_d");
        yaml.push_str(&format!("        @/{d}:\n          mask: [{mask}]\n"));
    }
    for f in files {
        yaml.push_str(&format!("        @/f_{f}:\n          mask: [{f}]\n"));
    }
    let s = Setup::new("masks", &yaml, "");
    for d in dirs {
        fs::create_dir_all(s.p(d)).unwrap();
    }
    for f in files {
        fs::write(s.p(&format!("f_{f}")), b"x").unwrap();
    }
    fs::write(s.p("delete/gone"), b"").unwrap();
    fs::write(s.p("moved_from/out"), b"").unwrap();
    fs::write(s.p("outside"), b"").unwrap();
    let agent = s.start();

    fs::read(s.p("f_access")).unwrap();
    let mut perm = fs::metadata(s.p("f_attrib")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o600);
    fs::set_permissions(s.p("f_attrib"), perm).unwrap();
    drop(fs::File::open(s.p("f_close_nowrite")).unwrap());
    drop(
        fs::OpenOptions::new()
            .append(true)
            .open(s.p("f_close_write"))
            .unwrap(),
    );
    fs::write(s.p("create/new"), b"").unwrap();
    fs::remove_file(s.p("delete/gone")).unwrap();
    fs::remove_file(s.p("f_delete_self")).unwrap();
    fs::remove_file(s.p("f_ignored")).unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(s.p("f_modify"))
        .unwrap()
        .write_all(b"y")
        .unwrap();
    fs::rename(s.p("moved_from/out"), s.p("moved_away")).unwrap();
    fs::rename(s.p("outside"), s.p("moved_to/in")).unwrap();
    fs::rename(s.p("f_move_self"), s.p("moved_self")).unwrap();
    drop(fs::File::open(s.p("f_open")).unwrap());
    fs::create_dir(s.p("open_d/sub")).unwrap(); // open on a dir watch: listing it opens it
    let _ = fs::read_dir(s.p("open_d")).unwrap().count();

    let events = s.settle(&agent);
    let expect = [
        ("f_access", "f_access", "IN_ACCESS"),
        ("f_attrib", "f_attrib", "IN_ATTRIB"),
        ("f_close_nowrite", "f_close_nowrite", "IN_CLOSE_NOWRITE"),
        ("f_close_write", "f_close_write", "IN_CLOSE_WRITE"),
        ("create", "create/new", "IN_CREATE"),
        ("delete", "delete/gone", "IN_DELETE"),
        ("f_delete_self", "f_delete_self", "IN_DELETE_SELF"),
        ("f_ignored", "f_ignored", "IN_IGNORED"),
        ("f_modify", "f_modify", "IN_MODIFY"),
        ("moved_from", "moved_from/out", "IN_MOVED_FROM"),
        ("moved_to", "moved_to/in", "IN_MOVED_TO"),
        ("f_move_self", "f_move_self", "IN_MOVE_SELF"),
        ("f_open", "f_open", "IN_OPEN"),
        ("open_d", "open_d", "IN_OPEN|IN_ISDIR"),
    ];
    for (watch, path, change) in expect {
        let hit = events.iter().find(|e| {
            e["tag"] == tag("masks", &s.p(watch))
                && e["data"]["path"] == s.p(path).display().to_string()
                && e["data"]["change"] == change
        });
        let ev = hit.unwrap_or_else(|| panic!("no {change} for {path}; got {events:#?}"));
        assert_eq!(data_keys(ev), ["_stamp", "change", "id", "path"], "{ev}");
    }
    // A mask is a filter: the modify-only file saw no open/close events.
    let f_modify = changes(&events, &s.p("f_modify"));
    assert!(f_modify.iter().all(|c| c == "IN_MODIFY"), "{f_modify:?}");
}

#[test]
fn unmount_is_reported() {
    let s = Setup::new(
        "unmount",
        "        @/mnt/inside:\n          mask: [unmount]\n",
        "",
    );
    fs::create_dir_all(s.p("mnt")).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "beacond-test"])
        .arg(s.p("mnt"))
        .status()
        .map(|st| st.success())
        .unwrap_or(false);
    assert!(mounted, "this test needs root to mount a tmpfs");
    fs::create_dir(s.p("mnt/inside")).unwrap();
    let agent = s.start();
    let ok = std::process::Command::new("umount")
        .arg(s.p("mnt"))
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let events = s.settle(&agent);
    let c = changes(&events, &s.p("mnt/inside"));
    assert!(c.iter().any(|c| c.starts_with("IN_UNMOUNT")), "{events:#?}");
}

#[test]
fn flags_oneshot_onlydir_excl_unlink() {
    let yaml = "        @/once:\n          mask: [modify, oneshot]\n\
                \x20       @/notdir:\n          mask: [modify, onlydir]\n\
                \x20       @/isdir:\n          mask: [create, onlydir]\n\
                \x20       @/excl:\n          mask: [modify, excl_unlink]\n\
                \x20       @/incl:\n          mask: [modify]\n";
    let s = Setup::new("flags", yaml, "    - interval: 60\n");
    fs::write(s.p("once"), b"").unwrap();
    fs::write(s.p("notdir"), b"").unwrap();
    fs::create_dir(s.p("isdir")).unwrap();
    fs::create_dir(s.p("excl")).unwrap();
    fs::create_dir(s.p("incl")).unwrap();
    let agent = s.start();
    for i in 0..3 {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(s.p("once"))
            .unwrap();
        f.write_all(format!("{i}").as_bytes()).unwrap();
        drop(f);
        // Separate the writes so the kernel does not merge them into one event.
        fs::write(s.p("isdir/sep"), b"").unwrap();
        fs::remove_file(s.p("isdir/sep")).unwrap();
    }
    fs::write(s.p("notdir"), b"changed").unwrap();
    fs::write(s.p("isdir/new"), b"").unwrap();
    for d in ["excl", "incl"] {
        let mut f = fs::File::create(s.p(&format!("{d}/tmp"))).unwrap();
        fs::remove_file(s.p(&format!("{d}/tmp"))).unwrap();
        f.write_all(b"after unlink").unwrap();
    }
    let events = s.settle(&agent);
    assert_eq!(
        changes(&events, &s.p("once")),
        ["IN_MODIFY"],
        "oneshot: {events:#?}"
    );
    assert!(
        changes(&events, &s.p("notdir")).is_empty(),
        "onlydir on a file: {events:#?}"
    );
    assert_eq!(changes(&events, &s.p("isdir/new")), ["IN_CREATE"]);
    assert!(
        changes(&events, &s.p("excl/tmp")).is_empty(),
        "excl_unlink: {events:#?}"
    );
    assert!(changes(&events, &s.p("incl/tmp")).contains(&"IN_MODIFY".to_owned()));
}

#[test]
fn default_mask_is_create_delete_modify() {
    let s = Setup::new("defmask", "        @/d:\n          recurse: False\n", "");
    fs::create_dir(s.p("d")).unwrap();
    fs::write(s.p("d/a"), b"").unwrap();
    let agent = s.start();
    fs::write(s.p("d/b"), b"").unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(s.p("d/a"))
        .unwrap()
        .write_all(b"x")
        .unwrap();
    let mut buf = String::new();
    fs::File::open(s.p("d/a"))
        .unwrap()
        .read_to_string(&mut buf)
        .unwrap();
    fs::remove_file(s.p("d/b")).unwrap();
    let events = s.settle(&agent);
    assert_eq!(
        changes(&events, &s.p("d/b")),
        ["IN_CREATE", "IN_DELETE"],
        "{events:#?}"
    );
    assert_eq!(changes(&events, &s.p("d/a")), ["IN_MODIFY"], "{events:#?}");
}

#[test]
fn recurse_auto_add_follows_mkdir_p_and_reports_what_was_inside() {
    let s = Setup::new(
        "recurse",
        "        @/r:\n          mask: [create, modify]\n          recurse: True\n          auto_add: True\n",
        "",
    );
    fs::create_dir_all(s.p("r/old/deep")).unwrap();
    let agent = s.start();
    // Existing subdirectories are watched (recurse)...
    fs::write(s.p("r/old/deep/f"), b"").unwrap();
    // ... and new ones, created in one go with a file inside, are watched and scanned.
    fs::create_dir_all(s.p("r/a/b/c")).unwrap();
    fs::write(s.p("r/a/b/c/inner"), b"").unwrap();
    let events = s.settle(&agent);
    let find = |watch: &str, path: &str, change: &str| {
        events.iter().any(|e| {
            e["tag"] == tag("recurse", &s.p(watch))
                && e["data"]["path"] == s.p(path).display().to_string()
                && e["data"]["change"] == change
        })
    };
    assert!(
        find("r/old/deep", "r/old/deep/f", "IN_CREATE"),
        "{events:#?}"
    );
    assert!(find("r", "r/a", "IN_CREATE|IN_ISDIR"), "{events:#?}");
    assert!(find("r/a", "r/a/b", "IN_CREATE|IN_ISDIR"), "{events:#?}");
    assert!(
        find("r/a/b", "r/a/b/c", "IN_CREATE|IN_ISDIR"),
        "{events:#?}"
    );
    assert!(find("r/a/b/c", "r/a/b/c/inner", "IN_CREATE"), "{events:#?}");
    // Each change is reported once, scan and kernel event notwithstanding.
    assert_eq!(
        changes(&events, &s.p("r/a/b/c/inner")).len(),
        1,
        "{events:#?}"
    );
    // The new deepest directory is really watched.
    fs::write(s.p("r/a/b/c/inner"), b"more").unwrap();
    let events = s.settle(&agent);
    assert_eq!(distinct(&events, &s.p("r/a/b/c/inner")), ["IN_MODIFY"]);
    // A watched directory moved within the tree keeps reporting under its new path.
    fs::rename(s.p("r/a"), s.p("r/z")).unwrap();
    fs::write(s.p("r/z/b/c/inner"), b"moved").unwrap();
    let events = s.settle(&agent);
    assert!(
        events
            .iter()
            .any(|e| e["tag"] == tag("recurse", &s.p("r/z/b/c"))
                && e["data"]["change"] == "IN_MODIFY"),
        "{events:#?}"
    );
    // Moved out of the tree: no longer watched.
    fs::rename(s.p("r/z"), s.p("gone")).unwrap();
    fs::write(s.p("gone/b/c/inner"), b"outside").unwrap();
    let events = s.settle(&agent);
    assert!(
        events.iter().all(|e| !e["data"]["path"]
            .as_str()
            .unwrap_or_default()
            .contains("/gone/")),
        "{events:#?}"
    );
    // Moved in from outside: watched, recursively (pyinotify does the same).
    fs::rename(s.p("gone"), s.p("r/back")).unwrap();
    // The moved-in tree is watched once the beacon has handled its IN_MOVED_TO: await that
    // (a write racing the move itself can't be seen by any inotify watcher).
    s.settle(&agent);
    fs::write(s.p("r/back/b/c/inner"), b"inside again").unwrap();
    let events = s.settle(&agent);
    assert_eq!(
        distinct(&events, &s.p("r/back/b/c/inner")),
        ["IN_MODIFY"],
        "{events:#?}"
    );
}

#[test]
fn excludes_by_path_glob_and_regex() {
    let yaml = "        @/x:\n          mask: [create]\n          recurse: True\n          auto_add: True\n          exclude:\n            - @/x/skipdir\n            - '*.swp'\n            - '^.*/cache-[0-9]+$':\n                regex: True\n";
    let s = Setup::new("exclude", yaml, "");
    fs::create_dir_all(s.p("x/skipdir")).unwrap();
    let agent = s.start();
    for f in [
        "x/skipdir/a",
        "x/.f.swp",
        "x/cache-12",
        "x/cache-x",
        "x/kept",
    ] {
        fs::write(s.p(f), b"").unwrap();
    }
    let events = s.settle(&agent);
    for f in ["x/skipdir/a", "x/.f.swp", "x/cache-12"] {
        assert!(
            changes(&events, &s.p(f)).is_empty(),
            "{f} not excluded: {events:#?}"
        );
    }
    for f in ["x/cache-x", "x/kept"] {
        assert_eq!(changes(&events, &s.p(f)), ["IN_CREATE"], "{f}: {events:#?}");
    }
}

#[test]
fn coalesce_merges_identical_events() {
    let burst = |id: &str, top: &str| {
        let s = Setup::new(
            id,
            "        @/c:\n          mask: [modify, close_write]\n",
            top,
        );
        fs::write(s.p("c"), b"").unwrap();
        let agent = s.start();
        for i in 0..50 {
            // open/write/close: MODIFY, CLOSE_WRITE, MODIFY, ... never two identical in a row
            // in the kernel queue (which merges those itself).
            fs::write(s.p("c"), format!("{i}")).unwrap();
        }
        changes(&s.settle(&agent), &s.p("c")).len()
    };
    let plain = burst("nocoal", "");
    let merged = burst("coal", "    - coalesce: True\n");
    assert!(
        plain >= 50,
        "without coalesce every write is reported: {plain}"
    );
    assert!(merged <= 10, "with coalesce the burst is merged: {merged}");
    assert!(
        merged >= 2,
        "one MODIFY and one CLOSE_WRITE remain: {merged}"
    );
}

#[test]
fn replaced_by_rename_is_reported_and_still_watched() {
    let s = Setup::new(
        "rename",
        "        @/etc/conf:\n          mask: [modify]\n",
        "",
    );
    fs::create_dir(s.p("etc")).unwrap();
    fs::write(s.p("etc/conf"), b"SELINUX=enforcing\n").unwrap();
    let agent = s.start();
    // sed -i / file.managed: write a temp file, rename it over.
    fs::write(s.p("etc/.conf.tmp"), b"SELINUX=permissive\n").unwrap();
    fs::rename(s.p("etc/.conf.tmp"), s.p("etc/conf")).unwrap();
    let events = s.settle(&agent);
    let ev = events
        .iter()
        .find(|e| e["data"]["path"] == s.p("etc/conf").display().to_string())
        .unwrap_or_else(|| panic!("rename-over was silent: {events:#?}"));
    assert_eq!(ev["tag"], tag("rename", &s.p("etc/conf")));
    assert_eq!(ev["data"]["change"], "IN_MOVED_TO");
    assert_eq!(ev["data"]["replaced"], true);
    // The temp file is not reported: only the watched path is.
    assert!(changes(&events, &s.p("etc/.conf.tmp")).is_empty());
    // The new file is watched.
    fs::OpenOptions::new()
        .append(true)
        .open(s.p("etc/conf"))
        .unwrap()
        .write_all(b"#\n")
        .unwrap();
    assert_eq!(changes(&s.settle(&agent), &s.p("etc/conf")), ["IN_MODIFY"]);
    // vim's way: rename the original away, write a new file.
    fs::rename(s.p("etc/conf"), s.p("etc/conf~")).unwrap();
    fs::write(s.p("etc/conf"), b"SELINUX=disabled\n").unwrap();
    let c = changes(&s.settle(&agent), &s.p("etc/conf"));
    assert!(c.contains(&"IN_CREATE".to_owned()), "{c:?}");
    // The backup (the old inode) is not reported as the config any more.
    fs::write(s.p("etc/conf~"), b"backup edit").unwrap();
    fs::OpenOptions::new()
        .append(true)
        .open(s.p("etc/conf"))
        .unwrap()
        .write_all(b"#\n")
        .unwrap();
    let events = s.settle(&agent);
    assert_eq!(
        changes(&events, &s.p("etc/conf")),
        ["IN_MODIFY"],
        "{events:#?}"
    );
}

#[test]
fn delete_and_recreate_keeps_watching() {
    let s = Setup::new(
        "recreate",
        "        @/f:\n          mask: [modify, delete]\n",
        "",
    );
    fs::write(s.p("f"), b"1").unwrap();
    let agent = s.start();
    fs::remove_file(s.p("f")).unwrap();
    let events = s.settle(&agent);
    // IN_DELETE from the directory; IN_IGNORED as Salt reports it (the kernel dropped the watch).
    let mut c = changes(&events, &s.p("f"));
    c.sort();
    assert_eq!(c, ["IN_DELETE", "IN_IGNORED"], "{events:#?}");
    fs::write(s.p("f"), b"2").unwrap();
    let c = changes(&s.settle(&agent), &s.p("f"));
    assert_eq!(c.first().map(String::as_str), Some("IN_CREATE"), "{c:?}");
    fs::OpenOptions::new()
        .append(true)
        .open(s.p("f"))
        .unwrap()
        .write_all(b"3")
        .unwrap();
    assert_eq!(changes(&s.settle(&agent), &s.p("f")), ["IN_MODIFY"]);
}

#[test]
fn a_path_that_appears_later_is_watched_from_then_on() {
    let s = Setup::new(
        "later",
        "        @/not/yet/there:\n          mask: [modify]\n",
        "",
    );
    let agent = s.start();
    fs::create_dir_all(s.p("not/yet")).unwrap();
    fs::write(s.p("not/yet/there"), b"").unwrap();
    let c = changes(&s.settle(&agent), &s.p("not/yet/there"));
    assert_eq!(c, ["IN_CREATE"]);
    fs::write(s.p("not/yet/there"), b"x").unwrap();
    assert_eq!(
        distinct(&s.settle(&agent), &s.p("not/yet/there")),
        ["IN_MODIFY"]
    );
}

#[test]
fn queue_overflow_is_reported_and_rescanned() {
    let s = Setup::new(
        "overflow",
        "        @/flood:\n          mask: [create]\n          auto_add: True\n",
        "",
    );
    fs::create_dir(s.p("flood")).unwrap();
    let agent = s.start();
    let max: usize = fs::read_to_string("/proc/sys/fs/inotify/max_queued_events")
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(16384);
    // Stop the agent so it cannot read, flood past the kernel's queue, let it go.
    agent.signal(libc::SIGSTOP);
    for i in 0..max + 100 {
        fs::File::create(s.p(&format!("flood/f{i}"))).unwrap();
    }
    fs::create_dir(s.p("flood/newdir")).unwrap();
    agent.signal(libc::SIGCONT);
    let ev = agent.wait_for(WAIT, "overflow", |e| {
        e["tag"] == "salt/beacon/overflow/inotify/overflow"
    });
    assert_eq!(ev["data"]["change"], "IN_Q_OVERFLOW");
    let roots: Vec<&str> = ev["data"]["roots"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        roots.contains(&s.p("flood").display().to_string().as_str()),
        "{ev}"
    );
    // After the re-scan, the directory created during the flood is watched.
    let _ = s.settle(&agent);
    fs::write(s.p("flood/newdir/after"), b"").unwrap();
    let events = s.settle(&agent);
    assert_eq!(
        changes(&events, &s.p("flood/newdir/after")),
        ["IN_CREATE"],
        "{events:#?}"
    );
}

#[test]
fn checksum_and_diff_are_evidence() {
    let s = Setup::new(
        "evidence",
        "        @/conf:\n          mask: [close_write]\n          checksum: sha256\n          diff: True\n",
        "",
    );
    fs::write(s.p("conf"), "a\nSELINUX=enforcing\nc\n").unwrap();
    let agent = s.start();
    fs::write(s.p("conf"), "a\nSELINUX=permissive\nc\n").unwrap();
    let events = s.settle(&agent);
    let ev = events
        .iter()
        .find(|e| e["data"]["path"] == s.p("conf").display().to_string())
        .unwrap_or_else(|| panic!("{events:#?}"));
    let sum = std::process::Command::new("sha256sum")
        .arg(s.p("conf"))
        .output()
        .unwrap();
    let expected = String::from_utf8_lossy(&sum.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(ev["data"]["checksum"], expected.as_str());
    assert_eq!(ev["data"]["checksum_type"], "sha256");
    let diff = ev["data"]["diff"].as_str().unwrap();
    assert!(
        diff.contains("\n-SELINUX=enforcing\n+SELINUX=permissive\n"),
        "{diff}"
    );
    assert!(
        diff.starts_with(&format!("--- a{}", s.p("conf").display())),
        "{diff}"
    );
}

#[test]
fn changes_during_a_state_run_come_as_one_summary() {
    let s = Setup::new(
        "staterun",
        "        @/managed:\n          mask: [modify, create]\n",
        "    - disable_during_state_run: True\n",
    );
    fs::create_dir(s.p("managed")).unwrap();
    let agent = s.start();
    let minion = FakeSaltJob::start();
    let jid = "20261122094500123456";
    let job = write_job_file(&s.cfg.cachedir(), jid, "state.apply", minion.pid());
    // A change wakes the beacon, which then sees the job and pauses (logged). A wake already
    // under way when the job appeared may still report a trigger on its own, so triggers are
    // written until the pause shows, and the managed files change only after it.
    let deadline = std::time::Instant::now() + WAIT;
    let mut n = 0;
    while !agent.stderr().contains("paused: state run in progress") {
        assert!(
            std::time::Instant::now() < deadline,
            "never paused: {}",
            agent.stderr()
        );
        fs::write(s.p(&format!("managed/trigger{n}")), b"t").unwrap();
        n += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    fs::write(s.p("managed/one"), b"1").unwrap();
    fs::write(s.p("managed/two"), b"2").unwrap();
    fs::write(s.p("managed/one"), b"11").unwrap();
    fs::write(s.p("managed/three"), b"3").unwrap();
    // End the run: the next tick sends the summary.
    fs::remove_file(&job).unwrap();
    let mut before = Vec::new();
    let summary = loop {
        let ev = agent
            .next(WAIT)
            .unwrap_or_else(|| panic!("no summary; got {before:#?}; {}", agent.stderr()));
        if ev["tag"] == "salt/beacon/staterun/inotify/state_run" {
            break ev;
        }
        if !ev["data"]["path"]
            .as_str()
            .is_some_and(|p| p.contains("/managed/trigger"))
        {
            before.push(ev);
        }
    };
    // Nothing was fired on its own during the run.
    assert!(before.is_empty(), "{before:#?}");
    let d = &summary["data"];
    assert_eq!(d["jid"], jid);
    assert_eq!(d["fun"], "state.apply");
    let paths: Vec<&str> = d["paths"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for f in ["managed/one", "managed/two", "managed/three"] {
        assert!(
            paths.contains(&s.p(f).display().to_string().as_str()),
            "{f}: {summary}"
        );
    }
    let one_modified = d["changes"].as_array().unwrap().iter().find(|c| {
        c["path"] == s.p("managed/one").display().to_string() && c["change"] == "IN_MODIFY"
    });
    assert!(one_modified.is_some(), "{summary}");
    // After the run, changes fire as usual again.
    fs::write(s.p("managed/four"), b"4").unwrap();
    assert_eq!(
        changes(&s.settle(&agent), &s.p("managed/four")),
        ["IN_CREATE", "IN_MODIFY"]
    );
}

#[test]
fn bad_config_is_a_precise_error() {
    let cfg = ConfigDir::new("badcfg", "").dropin(
        "inotify.conf",
        "beacons:\n  inotify:\n    - files:\n        /etc/selinux/config:\n          mask:\n            - modify\n            - modfy\n        /etc:\n          recurse: True\n          exclude:\n            - '([':\n                regex: True\n",
    );
    let out = run(cfg.path(), &["--check"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("inotify.conf:7:"), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("invalid mask option the string 'modfy'"),
        "{}",
        out.stderr
    );
    let cfg = ConfigDir::new("badcfg2", "").dropin(
        "inotify.conf",
        "beacons:\n  inotify:\n    - files:\n        /etc:\n          recurse: True\n          exclude:\n            - '([':\n                regex: True\n",
    );
    let out = run(cfg.path(), &["--check"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr.contains("is not a valid regular expression"),
        "{}",
        out.stderr
    );
    let cfg = ConfigDir::new("badcfg3", "").dropin(
        "inotify.conf",
        "beacons:\n  inotify:\n    - files:\n        /etc:\n          exclude: [a]\n",
    );
    let out = run(cfg.path(), &["--check"]);
    assert_eq!(out.code, 2);
    assert!(
        out.stderr
            .contains("must contain mask, recurse or auto_add"),
        "{}",
        out.stderr
    );
}

/// Wait until the agent's log holds `n` lines containing `needle`.
fn wait_log_count(agent: &Agent, needle: &str, n: usize) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let log = agent.stderr();
        if log.matches(needle).count() >= n {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "log never had {n} x {needle:?}:\n{log}"
        );
        // Drain events meanwhile so the agent never blocks on a full pipe.
        let _ = agent.next(Duration::from_millis(2));
    }
}

#[test]
fn fd_count_stays_flat_across_1000_reloads() {
    let s = Setup::new(
        "reload",
        "        @/w:\n          mask: [modify]\n          recurse: True\n          auto_add: True\n",
        "",
    );
    fs::create_dir_all(s.p("w/a/b")).unwrap();
    let agent = s.start();
    let fds = || {
        fs::read_dir(format!("/proc/{}/fd", agent.pid()))
            .unwrap()
            .count()
    };
    let before = fds();
    let minion = s.cfg.path().join("minion");
    let base = fs::read_to_string(&minion).unwrap();
    for i in 0..1000 {
        // Alternate the beacon's config so each reload really drops and rebuilds it.
        let text = if i % 2 == 0 {
            base.replace("mask: [modify]", "mask: [modify, create]")
        } else {
            base.clone()
        };
        fs::write(&minion, text).unwrap();
        agent.signal(libc::SIGHUP);
        // Observable per reload: the core logs each one.
        wait_log_count(&agent, "reloaded configuration: 0 kept, 1 restarted", i + 1);
    }
    // The last rebuild is running (its watches in place) once it reports the sentinel.
    s.wait_ready(&agent);
    let after = fds();
    assert!(
        after <= before,
        "open fds grew from {before} to {after} over 1,000 reloads"
    );
    // The rebuilt beacon works (auto_add reports creations whatever the mask, as in Salt).
    fs::write(s.p("w/a/b/new"), b"").unwrap();
    let events = s.settle(&agent);
    assert!(
        !changes(&events, &s.p("w/a/b/new")).is_empty(),
        "{events:#?}"
    );
}

#[test]
fn shipped_dropins_check_clean() {
    for dropin in ["selinux-compliance.conf", "etc-integrity.conf"] {
        let text = fs::read_to_string(repo().join("beacons").join(dropin)).unwrap();
        let cfg = ConfigDir::new("shipped", "").dropin(dropin, &text);
        let out = std::process::Command::new(bin())
            .arg("-c")
            .arg(cfg.path())
            .arg("--check")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{dropin}: {stderr}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
    }
}

#[test]
fn selinux_compliance_sees_every_kind_of_save() {
    let s = Setup::shipped("selinux", "selinux-compliance.conf");
    fs::create_dir_all(s.p("etc/selinux")).unwrap();
    let conf = s.p("etc/selinux/config");
    fs::write(&conf, "SELINUX=enforcing\nSELINUXTYPE=targeted\n").unwrap();
    let agent = s.start();
    let tag = format!("salt/beacon/selinux/inotify/{}", conf.display());
    assert!(tag.contains("inotify//"), "{tag}");

    // An in-place write (echo >>, a text editor that rewrites the file).
    fs::OpenOptions::new()
        .append(true)
        .open(&conf)
        .unwrap()
        .write_all(b"# edited\n")
        .unwrap();
    let events = s.settle(&agent);
    let c = distinct(&events, &conf);
    assert_eq!(c, ["IN_MODIFY", "IN_CLOSE_WRITE"], "{events:#?}");
    for e in events
        .iter()
        .filter(|e| e["data"]["path"] == conf.display().to_string())
    {
        assert_eq!(e["tag"], tag.as_str());
    }
    // The first event carries the diff; the next one has nothing new to show.
    let diffs: Vec<&str> = events
        .iter()
        .filter_map(|e| e["data"]["diff"].as_str())
        .filter(|d| !d.is_empty())
        .collect();
    assert_eq!(diffs.len(), 1, "{events:#?}");
    assert!(diffs[0].contains("+# edited\n"), "{diffs:?}");

    // sed -i: a temp file renamed over the config.
    let status = std::process::Command::new("sed")
        .args(["-i", "s/SELINUX=enforcing/SELINUX=permissive/"])
        .arg(&conf)
        .status()
        .unwrap();
    assert!(status.success());
    let events = s.settle(&agent);
    let ev = events
        .iter()
        .find(|e| e["data"]["path"] == conf.display().to_string())
        .unwrap_or_else(|| panic!("sed -i was silent: {events:#?}"));
    assert_eq!(ev["tag"], tag.as_str());
    assert_eq!(ev["data"]["change"], "IN_MOVED_TO");
    assert_eq!(ev["data"]["replaced"], true);
    let diff = ev["data"]["diff"].as_str().unwrap();
    assert!(
        diff.contains("-SELINUX=enforcing\n+SELINUX=permissive\n"),
        "{diff}: {events:#?}"
    );

    // ... and the file sed left behind is watched.
    fs::OpenOptions::new()
        .append(true)
        .open(&conf)
        .unwrap()
        .write_all(b"#\n")
        .unwrap();
    assert_eq!(
        distinct(&s.settle(&agent), &conf),
        ["IN_MODIFY", "IN_CLOSE_WRITE"]
    );
}

#[test]
fn etc_integrity_reports_changes_below_etc_but_not_the_noise() {
    let s = Setup::shipped("integrity", "etc-integrity.conf");
    fs::create_dir_all(s.p("etc/ssh")).unwrap();
    fs::write(s.p("etc/ssh/sshd_config"), "PermitRootLogin no\n").unwrap();
    fs::write(s.p("etc/mtab"), "").unwrap();
    let agent = s.start();
    fs::write(s.p("etc/ssh/sshd_config"), "PermitRootLogin yes\n").unwrap();
    fs::write(s.p("etc/mtab"), "proc /proc proc rw 0 0\n").unwrap();
    fs::write(s.p("etc/ssh/.sshd_config.swp"), "x").unwrap();
    fs::write(s.p("etc/shadow-"), "x").unwrap();
    fs::create_dir_all(s.p("etc/cron.d/new")).unwrap();
    fs::write(s.p("etc/cron.d/new/job"), "* * * * * root true\n").unwrap();
    let events = s.settle(&agent);
    let ssh = events
        .iter()
        .find(|e| e["data"]["path"] == s.p("etc/ssh/sshd_config").display().to_string())
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(
        ssh["tag"],
        format!(
            "salt/beacon/integrity/etc_integrity/{}",
            s.p("etc/ssh").display()
        )
    );
    assert_eq!(ssh["data"]["checksum_type"], "sha256");
    assert!(ssh["data"].get("diff").is_none(), "no diffs of /etc: {ssh}");
    for noise in ["etc/mtab", "etc/ssh/.sshd_config.swp", "etc/shadow-"] {
        assert!(
            changes(&events, &s.p(noise)).is_empty(),
            "{noise}: {events:#?}"
        );
    }
    assert!(
        !changes(&events, &s.p("etc/cron.d/new/job")).is_empty(),
        "{events:#?}"
    );
}

/// Salt 3007's venv python (the harness's `require_salt`: `None` when Salt is not installed and
/// `BEACOND_SKIP_SALT=1`, a clear failure otherwise), with pyinotify (setup.sh installs it).
fn salt_python() -> Option<PathBuf> {
    let venv = common::salt::require_salt("3007")?;
    let py = venv.join("bin/python");
    let ok = std::process::Command::new(&py)
        .args(["-c", "import pyinotify, salt.beacons.inotify"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "Salt 3007's venv lacks pyinotify: run tests/salt/setup.sh 3007 (it installs it)"
    );
    Some(py)
}

/// Run one scenario through Salt's Python beacon and through beacond, each on its own copy of
/// the tree; every event Salt fires must be fired by beacond with the same tag suffix, path
/// and change (beacond may fire more: replacements, deletions Salt misses).
fn conforms(name: &str, files: &str, prepare: &str, change: &str) {
    let Some(py) = salt_python() else { return };
    let script = repo().join("tests/fixtures/inotify/salt_inotify.py");
    // Salt's side.
    let a = TempDir::new(&format!("salt-{name}"));
    let sh = |dir: &Path, cmd: &str| {
        let ok = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .current_dir(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "{cmd}");
    };
    sh(a.path(), prepare);
    let yaml_files = files.replace("@", &a.path().display().to_string());
    let json_cfg = {
        let doc = format!("- files:\n{yaml_files}");
        let doc = doc.replace("\n        ", "\n    ");
        // A tiny YAML → JSON through Python itself (PyYAML ships with Salt).
        let out = std::process::Command::new(&py)
            .args([
                "-c",
                "import sys,yaml,json;print(json.dumps(yaml.safe_load(sys.argv[1])))",
            ])
            .arg(&doc)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let out = std::process::Command::new(&py)
        .arg(&script)
        .arg(&json_cfg)
        .arg(format!("cd {} && {change}", a.path().display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "salt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let salt: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let norm = |s: &str, root: &Path| s.replace(&root.display().to_string(), "@");
    let salt_set: Vec<(String, String, String)> = salt
        .iter()
        .map(|e| {
            (
                norm(e["tag"].as_str().unwrap_or_default(), a.path()),
                norm(e["path"].as_str().unwrap_or_default(), a.path()),
                e["change"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert!(
        !salt_set.is_empty(),
        "Salt saw nothing for {name}: the scenario proves nothing"
    );

    // beacond's side.
    let s = Setup::new(&format!("conf-{name}"), files, "");
    sh(s.tree.path(), prepare);
    let agent = s.start();
    sh(s.tree.path(), change);
    let events = s.settle(&agent);
    let prefix = format!("salt/beacon/conf-{name}/inotify/");
    let ours: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            assert!(
                ["_stamp", "change", "id", "path"]
                    .iter()
                    .all(|k| e["data"].get(*k).is_some()),
                "{e}"
            );
            (
                norm(
                    e["tag"]
                        .as_str()
                        .unwrap_or_default()
                        .trim_start_matches(&prefix),
                    s.tree.path(),
                ),
                norm(
                    e["data"]["path"].as_str().unwrap_or_default(),
                    s.tree.path(),
                ),
                e["data"]["change"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for ev in &salt_set {
        assert!(
            ours.contains(ev),
            "{name}: Salt fired {ev:?}, beacond did not.\nSalt: {salt_set:#?}\nbeacond: {ours:#?}"
        );
    }
}

#[test]
fn salt_conformance_file_modify() {
    conforms(
        "modify",
        "        @/f:\n          mask: [modify, close_write, attrib]\n",
        "echo a > f",
        "echo b >> f; chmod 600 f",
    );
}

#[test]
fn salt_conformance_directory_default_mask() {
    conforms(
        "dir",
        "        @/d:\n          recurse: False\n",
        "mkdir d; echo a > d/old",
        "echo n > d/new; echo m >> d/old; rm d/old; mkdir d/sub",
    );
}

#[test]
fn salt_conformance_recurse_auto_add() {
    conforms(
        "recurse",
        "        @/r:\n          mask: [create, modify, delete]\n          recurse: True\n          auto_add: True\n",
        "mkdir -p r/x/y",
        "echo 1 > r/x/y/f; mkdir -p r/a/b/c; echo 2 > r/a/b/c/g; rm r/x/y/f",
    );
}

#[test]
fn salt_conformance_deleted_file_and_ignored() {
    conforms(
        "ignored",
        "        @/g:\n          mask: [delete_self, modify]\n",
        "echo a > g",
        "echo b >> g; rm g",
    );
}

#[test]
fn salt_conformance_excludes() {
    conforms(
        "excl",
        // Not a bare '*.swp': Salt compiles every exclude as a regex for pyinotify's
        // ExcludeFilter and crashes on it ("nothing to repeat"); beacond takes it (see above).
        "        @/e:\n          mask: [create]\n          exclude:\n            - '@/e/*.swp'\n            - '^.*/tmp[0-9]+$':\n                regex: True\n            - @/e/skip\n",
        "mkdir e",
        "touch e/a.swp e/tmp12 e/skipme e/kept e/tmpx",
    );
}

#[test]
fn watch_limit_is_reported_with_its_sysctl() {
    // A user namespace of its own, with its watch limit at 10: the host's sysctls are untouched.
    let tree = TempDir::new("limit-tree");
    for i in 0..30 {
        fs::create_dir_all(tree.join(format!("w/d{i}"))).unwrap();
    }
    let cfg = ConfigDir::new(
        "limit",
        &format!(
            "beacons:\n  inotify:\n    - files:\n        {}/w:\n          mask: [create]\n          recurse: True\n",
            tree.path().display()
        ),
    );
    let script = format!(
        "echo 10 > /proc/sys/user/max_inotify_watches && exec {} -c {} --stdout",
        bin().display(),
        cfg.path().display()
    );
    let mut child = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "sh", "-c", &script])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("unshare (util-linux) is needed");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let found = loop {
        match rx.recv_timeout(WAIT) {
            Ok(line) if line.contains("max_user_watches") => break Some(line),
            Ok(_) => continue,
            Err(_) => break None,
        }
    };
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    let line = found.unwrap_or_else(|| {
        panic!(
            "no watch-limit event; stderr:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let ev: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(ev["tag"], "salt/beacon/limit/inotify/");
    assert_eq!(ev["data"]["sysctl"], "fs.inotify.max_user_watches");
    let msg = ev["data"]["error"].as_str().unwrap();
    assert!(
        msg.contains("user.max_inotify_watches of this user namespace = 10"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!(
            "part of {}/w is not watched",
            tree.path().display()
        )),
        "{msg}"
    );
}
