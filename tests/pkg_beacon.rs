//! The `pkg` beacon against dpkg/apt database files (fixtures in the real formats: a dpkg
//! `status` file and apt `*_Packages` indexes — the host's own are never touched). The version
//! ordering is checked against the real `dpkg --compare-versions` in `src/beacons/pkg.rs`.
mod common;
use common::beacond::*;
use std::path::Path;

fn stanza(name: &str, version: &str, arch: &str, installed: bool) -> String {
    let status = if installed {
        "Status: install ok installed\n"
    } else {
        ""
    };
    format!(
        "Package: {name}\n{status}Priority: optional\nArchitecture: {arch}\nVersion: {version}\nDescription: {name}\n multi-line description\n .\n more\n\n"
    )
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write fixture");
}

#[test]
fn status_changes_are_reported_after_the_first_pass() {
    let tmp = TempDir::new("pkg1");
    let lists = tmp.join("lists");
    std::fs::create_dir_all(&lists).expect("lists");
    let status = tmp.join("status");
    write(
        &status,
        &(stanza("zsh", "5.9-4", "amd64", true)
            + &stanza("curl", "7.88.1-10", "amd64", true)
            + "Package: apache2\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 2.4.61-1\n\n"),
    );
    let main = lists.join("deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages");
    write(
        &main,
        &(stanza("zsh", "5.9-4", "amd64", false)
            + &stanza("curl", "7.88.1-10", "amd64", false)
            + &stanza("apache2", "2.4.62-1~deb12u1", "amd64", false)),
    );
    let sec = lists.join("security.debian.org_dists_bookworm-security_main_binary-amd64_Packages");
    write(&sec, &stanza("curl", "7.88.1-10+deb12u5", "amd64", false));
    let cfg = ConfigDir::new(
        "pkg1",
        &format!(
            "beacons:\n  pkg:\n    - pkgs:\n        - zsh\n        - curl\n        - apache2\n    - refresh: True\n    - dpkg_status: {}\n    - apt_lists: {}\n",
            status.display(),
            lists.display()
        ),
    );
    // First pass: recorded, not reported (Salt's behaviour).
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.events.is_empty(), "{:?}", out.events);

    // zsh gets an upgrade candidate (i386 and a lower version must not count), apache2 is
    // installed, curl's security upgrade is installed.
    write(
        &main,
        &(stanza("zsh", "5.9-4+b1", "amd64", false)
            + &stanza("zsh", "5.9-5", "i386", false)
            + &stanza("zsh", "5.8-1", "amd64", false)
            + &stanza("curl", "7.88.1-10", "amd64", false)
            + &stanza("apache2", "2.4.62-1~deb12u1", "amd64", false)),
    );
    write(
        &status,
        &(stanza("zsh", "5.9-4", "amd64", true)
            + &stanza("curl", "7.88.1-10+deb12u5", "amd64", true)
            + &stanza("apache2", "2.4.62-1~deb12u1", "amd64", true)),
    );
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    let got: Vec<(String, String, String)> = out
        .events
        .iter()
        .map(|e| {
            assert_eq!(e["tag"], "salt/beacon/pkg1/pkg/");
            assert_eq!(data_keys(e), ["_stamp", "id", "pkg", "status", "version"]);
            let s = |k: &str| e["data"][k].as_str().unwrap_or("").to_owned();
            (s("pkg"), s("status"), s("version"))
        })
        .collect();
    let want = [
        ("zsh", "upgrade", "5.9-4+b1"),
        ("curl", "installed", "7.88.1-10+deb12u5"),
        ("apache2", "installed", "2.4.62-1~deb12u1"),
    ];
    let want: Vec<(String, String, String)> = want
        .iter()
        .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(got, want);

    // No change: nothing. Removal: not-installed with a null version.
    assert!(once(cfg.path()).events.is_empty());
    write(&status, &stanza("zsh", "5.9-4", "amd64", true));
    let out = once(cfg.path());
    assert_eq!(out.events.len(), 2, "{:?}", out.events);
    for e in &out.events {
        assert_eq!(e["data"]["status"], "not-installed");
        assert!(e["data"]["version"].is_null());
    }
}
