//! Conformance with Salt's own Python beacons, continued (`tests/salt_conformance_ps_service.rs` has
//! `ps`, `network_info`, `service`): same config, same change, same tags and data keys.
//!
//! - `network_settings` on Salt 3006, 3007 and 3008 (all three ship it; it needs `pyroute2`,
//!   which `tests/salt/setup.sh` installs as an extra). Salt's beacon and `beacond --stdout` run
//!   in the same network namespace the test creates (`ip netns exec`): Salt's first run records
//!   the links silently, `python_beacon.py --between-runs` changes mtu, address and promiscuity
//!   between its runs, and beacond, already watching, sees the same change.
//! - `journald` on 3006, 3007 and 3008 (Salt's beacon needs python-systemd: the extra
//!   `systemd-python`, built against apt's `libsystemd-dev`). Salt's beacon always opens the
//!   host journal (`systemd.journal.Reader()`), so `tests/salt/journald_reader.py` wraps
//!   `Reader.__init__` to open the test's directory instead and runs `python_beacon.py`
//!   unchanged: the events are still made by Salt's beacon code. Journal files are written by
//!   `systemd-journal-remote`, as in `tests/journald_beacon.rs`.
//! - `pkg` on 3006, 3007 and 3008: Salt's beacon with its real `aptpkg` module, whose
//!   `dpkg-query`/`apt-cache` are pointed at fixtures by their own environment (`DPKG_ADMINDIR`,
//!   `APT_CONFIG`): read-only, the host's package state is not touched (see the test).
//!
//! Needs `tests/salt/setup.sh` to have run; with `BEACOND_SKIP_SALT=1` these tests pass without
//! comparing.
mod common;
use common::beacond::*;
use common::netns::Netns;
use serde_json::{Map, Value};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(15);
const SERIES: [&str; 3] = ["3006", "3007", "3008"];

/// Fail clearly when the venv lacks a module Salt's beacon needs (an old venv: re-run setup.sh).
fn assert_module(python: &Path, module: &str, series: &str) {
    let ok = Command::new(python)
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "Salt {series}'s venv lacks {module}: run tests/salt/setup.sh (it installs the extras)"
    );
}

/// JSON lines of python_beacon.py's stdout.
fn parse_events(out: &std::process::Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "python_beacon.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

const WATCHING: &str = "network_settings: watching rtnetlink";

#[test]
fn network_settings_matches_salt_in_a_netns() {
    let beacons = "beacons:\n  network_settings:\n    - interfaces:\n        v0:\n          mtu:\n          ipaddr:\n          promiscuity:\n            onvalue: 1\n        v1:\n          mtu:\n";
    let change_cmd = "ip link set dev v0 mtu 1400 && ip addr add 10.77.0.1/24 dev v0 && ip link set dev v0 promisc on";
    for series in SERIES {
        let Some(python) = common::salt::require_salt_python(series) else {
            continue;
        };
        assert_module(&python, "pyroute2", series);
        let ns = Netns::new();
        let id = format!("cm{series}");
        let cfg = ConfigDir::new(&id, beacons);
        let agent = Agent::start_in(&ns.exec_prefix(), cfg.path(), &[]);
        agent.wait_log(WATCHING, T);

        // Salt: run 0 records v0/v1 silently, the change is made, run 1 reports it (--pace
        // sleeps loop_interval after the change, as a minion's loop would).
        let started = Instant::now();
        let out = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(&python)
            .arg(repo().join("tests/salt/python_beacon.py"))
            .arg("--config-dir")
            .arg(cfg.path())
            .args(["--runs", "2", "--pace", "--no-grains", "--between-runs"])
            .arg(change_cmd)
            .output()
            .expect("ip netns exec python_beacon.py");
        let theirs = parse_events(&out);
        eprintln!(
            "Salt {series} network_settings: {:?} for 2 runs",
            started.elapsed()
        );
        let tag = format!("salt/beacon/{id}/network_settings/v0");
        assert_eq!(theirs.len(), 1, "Salt {series}: {theirs:?}");
        let salt_ev = &theirs[0];
        assert_eq!(salt_ev["tag"], tag.as_str(), "Salt {series}: {salt_ev}");
        assert_eq!(salt_ev["run"], 1, "Salt {series}: first run not silent");
        assert_eq!(data_keys(salt_ev), ["_stamp", "change", "id", "interface"]);
        let salt_change = salt_ev["data"]["change"].clone();
        assert_eq!(
            salt_change,
            serde_json::json!({"mtu": 1400, "ipaddr": [["10.77.0.1", 24]], "promiscuity": 1}),
            "Salt {series}"
        );

        // beacond saw the same change live (one event per netlink change, or merged): every
        // event has Salt's tag and keys, and together they carry Salt's change, value for value.
        let mut ours = Map::new();
        let deadline = Instant::now() + T;
        while Value::Object(ours.clone()) != salt_change {
            let Some(ev) = agent.next(deadline.saturating_duration_since(Instant::now())) else {
                panic!(
                    "Salt {series}: beacond reported {ours:?}, Salt {salt_change}; stderr:\n{}",
                    agent.stderr()
                );
            };
            assert_eq!(ev["tag"], tag.as_str(), "unexpected event {ev}");
            assert_eq!(data_keys(&ev), data_keys(salt_ev), "{ev}");
            assert_eq!(ev["data"]["interface"], salt_ev["data"]["interface"]);
            for (k, v) in ev["data"]["change"].as_object().expect("change map") {
                ours.insert(k.clone(), v.clone());
            }
        }
    }
}

const REMOTE: &str = "/lib/systemd/systemd-journal-remote";

/// Journal export text for `entries` (field lists), timestamps from `base` microseconds.
fn export(entries: &[Vec<(&str, String)>], base: u128) -> String {
    let mut text = String::new();
    for (i, fields) in entries.iter().enumerate() {
        text.push_str(&format!(
            "__REALTIME_TIMESTAMP={}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n",
            base + i as u128,
            1000 + base % 1000 + i as u128
        ));
        for (k, v) in fields {
            text.push_str(&format!("{k}={v}\n"));
        }
        text.push('\n');
    }
    text
}

/// Append the export file `from` to the journal file `to` with systemd-journal-remote.
fn journal_remote_cmd(from: &Path, to: &Path) -> String {
    format!(
        "{REMOTE} --output='{}' - < '{}' >/dev/null 2>&1",
        to.display(),
        from.display()
    )
}

fn sh_c(cmd: &str) {
    let st = Command::new("sh")
        .args(["-c", cmd])
        .status()
        .expect("sh -c");
    assert!(st.success(), "{cmd} failed");
}

fn entry(ident: &str, prio: u8, msg: &str) -> Vec<(&'static str, String)> {
    vec![
        ("SYSLOG_IDENTIFIER", ident.into()),
        ("PRIORITY", prio.to_string()),
        ("_PID", "4242".into()),
        ("MESSAGE", msg.into()),
    ]
}

/// Salt's journald beacon (through `tests/salt/journald_reader.py`, which only points
/// `systemd.journal.Reader()` at the test's journal directory) and beacond read the same journal
/// file, written by systemd-journal-remote, and the same entries appended to it.
#[test]
fn journald_matches_salt_on_test_journal_files() {
    assert!(
        Path::new(REMOTE).exists(),
        "{REMOTE} missing: apt-get install systemd-journal-remote"
    );
    for series in SERIES {
        let Some(python) = common::salt::require_salt_python(series) else {
            continue;
        };
        assert_module(&python, "systemd.journal", series);
        let tmp = TempDir::new("conf-jd");
        let jdir = tmp.join("journal");
        std::fs::create_dir_all(&jdir).expect("journal dir");
        let journal = jdir.join("remote.journal");
        let base = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_micros();
        let before = tmp.join("before.export");
        std::fs::write(&before, export(&[entry("sshd", 6, "before start")], base)).expect("export");
        sh_c(&journal_remote_cmd(&before, &journal));
        let big = "k".repeat(4000); // compressed DATA object
        let after = tmp.join("after.export");
        std::fs::write(
            &after,
            export(
                &[
                    entry("sshd", 6, "Accepted publickey for root"),
                    entry("sshd", 3, "error: not matched (priority 3)"),
                    vec![
                        ("SYSLOG_IDENTIFIER", "kernel".into()),
                        ("MESSAGE", big.clone()),
                    ],
                    entry("cron", 6, "x"),
                    entry("sshd", 6, "Disconnected"),
                ],
                base + 10,
            ),
        )
        .expect("export");
        let id = format!("cj{series}");
        let cfg = ConfigDir::new(
            &id,
            &format!(
                "beacons:\n  journald:\n    - paths: [{}]\n    - services:\n        sshd:\n          SYSLOG_IDENTIFIER: sshd\n          PRIORITY: 6\n        kernel:\n          SYSLOG_IDENTIFIER: kernel\n",
                jdir.display()
            ),
        );
        // beacond starts at the tail, as Salt does: nothing yet.
        let first = once(cfg.path());
        assert_eq!(first.code, 0, "{}", first.stderr);
        assert!(first.events.is_empty(), "{:?}", first.events);

        // Salt: run 0 seeks to the tail, the entries are appended, run 1 reads them.
        let started = Instant::now();
        let out = Command::new(&python)
            .arg(repo().join("tests/salt/journald_reader.py"))
            .arg(&jdir)
            .arg("--config-dir")
            .arg(cfg.path())
            .args(["--runs", "2", "--no-grains", "--between-runs"])
            .arg(journal_remote_cmd(&after, &journal))
            .output()
            .expect("journald_reader.py");
        let theirs = parse_events(&out);
        eprintln!("Salt {series} journald: {:?} for 2 runs", started.elapsed());
        // beacond, from where it stopped: the same appended entries.
        let ours = once(cfg.path());
        assert_eq!(ours.code, 0, "{}", ours.stderr);

        let tags = |evs: &[Value]| -> Vec<String> {
            evs.iter()
                .map(|e| e["tag"].as_str().unwrap_or_default().to_owned())
                .collect()
        };
        let sshd = format!("salt/beacon/{id}/journald/sshd");
        let kernel = format!("salt/beacon/{id}/journald/kernel");
        assert_eq!(
            tags(&theirs),
            [sshd.as_str(), kernel.as_str(), sshd.as_str()],
            "Salt {series}"
        );
        assert_eq!(tags(&ours.events), tags(&theirs), "Salt {series}");
        for (o, t) in ours.events.iter().zip(&theirs) {
            assert_eq!(t["run"], 1, "Salt {series}: first run not silent");
            assert_eq!(
                data_keys(o),
                data_keys(t),
                "Salt {series}\nours {o}\nSalt {t}"
            );
            // Same values where both are plain (Salt repr()s datetimes and UUIDs).
            for k in [
                "MESSAGE",
                "PRIORITY",
                "_PID",
                "SYSLOG_IDENTIFIER",
                "__CURSOR",
                "id",
            ] {
                assert_eq!(o["data"][k], t["data"][k], "Salt {series}: {k}");
            }
        }
        assert_eq!(theirs[1]["data"]["MESSAGE"], Value::from(big));
    }
}

fn pkg_stanza(name: &str, version: &str, installed: bool) -> String {
    let status = if installed {
        "Status: install ok installed\n"
    } else {
        ""
    };
    format!(
        "Package: {name}\n{status}Priority: optional\nArchitecture: amd64\nVersion: {version}\nMaintainer: t <t@example.invalid>\nDescription: {name}\n\n"
    )
}

/// Salt's pkg beacon runs its real `aptpkg` execution module (`dpkg-query -W`, `apt-cache
/// policy`), pointed at fixtures through the tools' own environment (`DPKG_ADMINDIR`, and an
/// `APT_CONFIG` file setting the status file, lists, sources and no package cache): read-only,
/// the host's package database is neither read nor written (package names no host has make a
/// stray read visible), and Salt's `refresh` never reaches
/// `apt-get update` (its beacon tests `"refresh" in config` on the list, which is never true).
/// beacond reads the same status file and lists (`dpkg_status`, `apt_lists`).
#[test]
fn pkg_matches_salt_on_dpkg_and_apt_fixtures() {
    for series in SERIES {
        let Some(python) = common::salt::require_salt_python(series) else {
            continue;
        };
        let tmp = TempDir::new("conf-pkg");
        let admin = tmp.join("dpkg");
        let lists = tmp.join("lists");
        let etc = tmp.join("etc");
        for d in [
            admin.join("info"),
            admin.join("updates"),
            lists.join("partial"),
        ] {
            std::fs::create_dir_all(&d).expect("fixture dir");
        }
        for d in ["sources.list.d", "preferences.d", "apt.conf.d"] {
            std::fs::create_dir_all(etc.join(d)).expect("fixture dir");
        }
        std::fs::write(admin.join("available"), "").expect("available");
        let status = admin.join("status");
        // Names no host has, so a stray read of the host's database could not match.
        let (up, gone, new) = ("bcdfx-up", "bcdfx-gone", "bcdfx-new");
        std::fs::write(
            &status,
            pkg_stanza(up, "1.0-1", true) + &pkg_stanza(gone, "2.0-1", true),
        )
        .expect("status");
        std::fs::write(
            lists.join("example.invalid_debian_dists_stable_main_binary-amd64_Packages"),
            pkg_stanza(up, "1.0-2", false)
                + &pkg_stanza(gone, "2.0-1", false)
                + &pkg_stanza(new, "3.0-1", false),
        )
        .expect("lists");
        std::fs::write(
            etc.join("sources.list"),
            "deb [trusted=yes] http://example.invalid/debian stable main\n",
        )
        .expect("sources.list");
        let apt_conf = tmp.join("apt.conf");
        std::fs::write(
            &apt_conf,
            format!(
                "Dir::State::status \"{s}\";\nDir::State::lists \"{l}/\";\nDir::Etc \"{e}/\";\nDir::Etc::sourcelist \"{e}/sources.list\";\nDir::Etc::sourceparts \"{e}/sources.list.d/\";\nDir::Etc::parts \"{e}/apt.conf.d/\";\nDir::Etc::preferencesparts \"{e}/preferences.d/\";\nDir::Cache \"{c}/\";\nDir::Cache::pkgcache \"\";\nDir::Cache::srcpkgcache \"\";\n",
                s = status.display(),
                l = lists.display(),
                e = etc.display(),
                c = tmp.join("cache").display()
            ),
        )
        .expect("apt.conf");
        // After the change: the upgrade is installed, one package removed, one installed.
        let status2 = tmp.join("status.after");
        std::fs::write(
            &status2,
            pkg_stanza(up, "1.0-2", true) + &pkg_stanza(new, "3.0-1", true),
        )
        .expect("status");

        let id = format!("cp{series}");
        let cfg = ConfigDir::new(
            &id,
            &format!(
                "beacons:\n  pkg:\n    - pkgs:\n        - {up}\n        - {gone}\n        - {new}\n    - dpkg_status: {}\n    - apt_lists: {}\n",
                status.display(),
                lists.display()
            ),
        );
        let first = once(cfg.path());
        assert_eq!(first.code, 0, "{}", first.stderr);
        assert!(first.events.is_empty(), "{:?}", first.events);

        // Salt needs its grains here (aptpkg loads on os_family Debian).
        let started = Instant::now();
        let out = Command::new(&python)
            .env("DPKG_ADMINDIR", &admin)
            .env("APT_CONFIG", &apt_conf)
            .arg(repo().join("tests/salt/python_beacon.py"))
            .arg("--config-dir")
            .arg(cfg.path())
            .args(["--runs", "2", "--between-runs"])
            .arg(format!("cp '{}' '{}'", status2.display(), status.display()))
            .output()
            .expect("python_beacon.py");
        let theirs = parse_events(&out);
        eprintln!("Salt {series} pkg: {:?} for 2 runs", started.elapsed());
        let ours = once(cfg.path());
        assert_eq!(ours.code, 0, "{}", ours.stderr);

        let summary = |evs: &[Value]| -> Vec<(String, Vec<String>, String, String, Value)> {
            let mut v: Vec<_> = evs
                .iter()
                .map(|e| {
                    (
                        e["tag"].as_str().unwrap_or_default().to_owned(),
                        data_keys(e),
                        e["data"]["pkg"].as_str().unwrap_or_default().to_owned(),
                        e["data"]["status"].as_str().unwrap_or_default().to_owned(),
                        e["data"]["version"].clone(),
                    )
                })
                .collect();
            v.sort_by(|a, b| a.2.cmp(&b.2));
            v
        };
        let tag = format!("salt/beacon/{id}/pkg/");
        let keys: Vec<String> = ["_stamp", "id", "pkg", "status", "version"]
            .map(String::from)
            .to_vec();
        let want = vec![
            (
                tag.clone(),
                keys.clone(),
                gone.to_owned(),
                "not-installed".to_owned(),
                Value::Null,
            ),
            (
                tag.clone(),
                keys.clone(),
                new.to_owned(),
                "installed".to_owned(),
                Value::from("3.0-1"),
            ),
            (
                tag.clone(),
                keys.clone(),
                up.to_owned(),
                "installed".to_owned(),
                Value::from("1.0-2"),
            ),
        ];
        assert_eq!(summary(&theirs), want, "Salt {series}: {theirs:?}");
        assert!(theirs.iter().all(|e| e["run"] == 1), "Salt {series}");
        assert_eq!(summary(&ours.events), want, "beacond vs Salt {series}");
    }
}
