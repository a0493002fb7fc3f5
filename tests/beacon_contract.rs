//! The beacon contract, checked for every kind in the registry (`beacons::KINDS`): a kind
//! without a minimal drop-in in `tests/fixtures/kinds/<kind>.conf` fails here, so adding a
//! beacon means adding its entry.
//!
//! - its drop-in passes `--check`, and so does every ready-made drop-in in `beacons/`;
//! - a misspelt option fails `--check` with file:line:col, the option and the nearest known one;
//! - `--once` events carry `salt/beacon/<id>/<name>/` and `id`/`_stamp` (kinds that report at
//!   start on this host: [`REPORTS_AT_ONCE`]);
//! - build/start/drop leaves the process's open fd count flat.
//!
//! Placeholders in the drop-ins: `@DIR@` a scratch directory, `@FIXTURES@` `tests/fixtures`,
//! `@INIT@` the name of pid 1.
mod common;
use beacond::beacons::{self, BuildContext, KINDS};
use beacond::config;
use common::beacond::*;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// `/proc/self/fd` is process-wide and the other tests spawn children (pipes): one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Kinds whose drop-in reports on the first evaluation here (fixture thresholds of 0, pid 1,
/// `emitatstartup`). The event-driven rest report on OS events, covered by their own tests.
const REPORTS_AT_ONCE: &[&str] = &[
    "diskusage",
    "load",
    "memusage",
    "network_info",
    "ps",
    "status",
    "swapusage",
    "users",
];

fn fixture(kind: &str) -> PathBuf {
    repo()
        .join("tests/fixtures/kinds")
        .join(format!("{kind}.conf"))
}

/// The kind's drop-in with its placeholders filled in; scratch files the sources want exist.
fn drop_in(kind: &str, scratch: &Path) -> String {
    let path = fixture(kind);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "beacon kind '{kind}' has no contract entry: {} ({e})",
            path.display()
        )
    });
    let init = std::fs::read_to_string("/proc/1/comm").expect("/proc/1/comm");
    std::fs::write(scratch.join("passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(scratch.join("group"), "root:x:0:\n").unwrap();
    std::fs::write(scratch.join("status"), "").unwrap();
    std::fs::create_dir_all(scratch.join("lists")).unwrap();
    text.replace("@DIR@", &scratch.display().to_string())
        .replace(
            "@FIXTURES@",
            &repo().join("tests/fixtures").display().to_string(),
        )
        .replace("@INIT@", init.trim())
}

#[test]
fn every_kind_has_a_drop_in_that_passes_check() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = TempDir::new("contract-check");
    for kind in KINDS {
        let cfg =
            ConfigDir::new("contract", "").dropin("kind.conf", &drop_in(kind.name, scratch.path()));
        let out = run(cfg.path(), &["--check"]);
        assert_eq!(out.code, 0, "{}: {}", kind.name, out.stderr);
    }
    let mut shipped = 0;
    for entry in std::fs::read_dir(repo().join("beacons")).expect("beacons/") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("drop-in");
        let cfg = ConfigDir::new("contract", "").dropin("shipped.conf", &text);
        let out = run(cfg.path(), &["--check"]);
        assert_eq!(out.code, 0, "{}: {}", path.display(), out.stderr);
        shipped += 1;
    }
    assert!(shipped > 0, "no drop-ins in beacons/");
}

#[test]
fn a_misspelt_option_fails_check_with_its_position_for_every_kind() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = TempDir::new("contract-typo");
    for kind in KINDS {
        let option = kind
            .options
            .known()
            .iter()
            .max_by_key(|o| o.len())
            .unwrap_or_else(|| panic!("{} declares no options", kind.name));
        // Drop the last letter: `procfs` → `procf`, `onchangeonly` → `onchangeonl`.
        let typo = &option[..option.len() - 1];
        let mut text = drop_in(kind.name, scratch.path());
        let line = text.lines().count() + 1;
        text.push_str(&format!("    - {typo}: 1\n"));
        let cfg = ConfigDir::new("contract", "").dropin("typo.conf", &text);
        let out = run(cfg.path(), &["--check"]);
        assert_eq!(out.code, 2, "{}: {}", kind.name, out.stderr);
        let file = cfg.path().join("minion.d/typo.conf");
        let expect = format!(
            "{}:{line}:7: beacon '{}': unknown option '{typo}' (did you mean '{option}'?",
            file.display(),
            kind.name
        );
        assert!(
            out.stderr.contains(&expect),
            "{}: expected {expect}\n{}",
            kind.name,
            out.stderr
        );
    }
}

/// `--describe KIND` documents every option the kind's drop-in uses (typed kinds: with a type
/// and a doc text), and `--describe` alone lists every kind.
#[test]
fn describe_lists_every_option_each_drop_in_uses() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = TempDir::new("contract-describe");
    let empty = ConfigDir::new("contract", "");
    let all = run(empty.path(), &["--describe"]);
    assert_eq!(all.code, 0, "{}", all.stderr);
    for kind in KINDS {
        assert!(
            all.stdout
                .lines()
                .any(|l| l.trim_start().starts_with(kind.name)),
            "--describe does not list {}:\n{}",
            kind.name,
            all.stdout
        );
        let cfg =
            ConfigDir::new("contract", "").dropin("kind.conf", &drop_in(kind.name, scratch.path()));
        let loaded = config::load_dir(cfg.path(), false);
        assert!(
            loaded.errors.is_empty(),
            "{}: {:?}",
            kind.name,
            loaded.errors
        );
        let out = run(empty.path(), &["--describe", kind.name]);
        assert_eq!(out.code, 0, "{}: {}", kind.name, out.stderr);
        let typed = matches!(kind.options, beacons::Options::Typed { .. });
        for (option, _) in &loaded.beacons[0].options {
            // diskusage's mount points are names, not options.
            if let beacons::Options::Named { known, is_name } = kind.options {
                if !known.contains(&option.as_str()) && is_name(option) {
                    continue;
                }
            }
            let line = out
                .stdout
                .lines()
                .position(|l| {
                    l.strip_prefix("  ")
                        .and_then(|l| l.strip_prefix(option.as_str()))
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with(':'))
                })
                .unwrap_or_else(|| {
                    panic!(
                        "{}: --describe omits '{option}':\n{}",
                        kind.name, out.stdout
                    )
                });
            if typed {
                // `  name: type[, default X]`, then its doc text, indented further.
                let lines: Vec<&str> = out.stdout.lines().collect();
                let head = lines[line];
                assert!(
                    head.len() > option.len() + 4,
                    "{}: no type: {head}",
                    kind.name
                );
                assert!(
                    lines.get(line + 1).is_some_and(|d| d.starts_with("      ")),
                    "{}: '{option}' has no doc text:\n{}",
                    kind.name,
                    out.stdout
                );
            }
        }
    }
    let bad = run(empty.path(), &["--describe", "memusge"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("did you mean 'memusage'?"),
        "{}",
        bad.stderr
    );
}

#[test]
fn once_events_carry_the_tag_prefix_id_and_stamp() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = TempDir::new("contract-once");
    let mut cfg = ConfigDir::new("contract", "");
    for kind in KINDS {
        cfg = cfg.dropin(
            &format!("{}.conf", kind.name),
            &drop_in(kind.name, scratch.path()),
        );
    }
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut reported = Vec::new();
    for ev in &out.events {
        let tag = ev["tag"].as_str().expect("tag");
        let Some(rest) = tag.strip_prefix("salt/beacon/contract/") else {
            panic!("tag outside salt/beacon/contract/: {ev}")
        };
        let name = rest.split('/').next().unwrap_or_default();
        assert!(
            KINDS.iter().any(|k| k.name == name),
            "tag names no beacon: {ev}"
        );
        assert_eq!(ev["data"]["id"], "contract", "{ev}");
        assert!(ev["data"]["_stamp"].is_string(), "{ev}");
        reported.push(name.to_owned());
    }
    for kind in REPORTS_AT_ONCE {
        assert!(
            reported.iter().any(|r| r == kind),
            "{kind} reported nothing in --once: {:?}\n{}",
            out.events,
            out.stderr
        );
    }
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

#[test]
fn build_start_drop_leaks_no_fd_for_any_kind() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = TempDir::new("contract-fds");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for kind in KINDS {
        let cfg =
            ConfigDir::new("contract", "").dropin("kind.conf", &drop_in(kind.name, scratch.path()));
        let loaded = config::load_dir(cfg.path(), false);
        assert!(
            loaded.errors.is_empty(),
            "{}: {:?}",
            kind.name,
            loaded.errors
        );
        let ctx = BuildContext::new(loaded.minion.clone());
        let bcfg = &loaded.beacons[0];
        rt.block_on(async {
            let cycle = || {
                let mut b = beacons::build(bcfg, &ctx).expect("build");
                // A source that cannot start here (no SELinux, no journal) must not leak either.
                let _ = b.start();
                let _ = b.start();
                drop(b);
            };
            // Warm up: lazily opened process-wide resources (the runtime's, D-Bus's).
            cycle();
            let before = open_fds();
            for _ in 0..20 {
                cycle();
            }
            let after = open_fds();
            assert_eq!(
                before, after,
                "{}: open fds went from {before} to {after}",
                kind.name
            );
        });
    }
}
