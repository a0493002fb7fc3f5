//! Conformance: beacond's `btmp` and `wtmp` against Salt's own Python modules on the same real
//! utmp files (built with `utmpdump -r`). Salt's modules read a hard-coded path; the harness
//! points the module's `BTMP`/`WTMP` constant at the fixture and calls `beacon()` as the
//! loader would (a fresh `__context__`), once to position at the end, once after the append.
//! Needs the Salt venvs of `tests/salt/setup.sh` (or `BEACOND_SKIP_SALT=1` to skip).
mod common;
use common::beacond::*;
use common::salt::require_salt;
use serde_json::Value;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const SEED: &str = "[2] [00000] [~~  ] [reboot  ] [~           ] [6.1.0-18-amd64      ] [0.0.0.0        ] [2024-05-01T06:00:00,000000+00:00]\n";
const RECORDS: &str = "\
[6] [04242] [    ] [mallory ] [ssh:notty   ] [203.0.113.9         ] [203.0.113.9    ] [2024-05-01T09:15:00,123456+00:00]
[7] [01001] [ts/0] [alice   ] [pts/0       ] [10.0.0.1            ] [10.0.0.1       ] [2024-05-01T09:16:00,000000+00:00]
[8] [01001] [ts/0] [        ] [pts/0       ] [                    ] [0.0.0.0        ] [2024-05-01T09:17:00,000000+00:00]
[1] [00053] [~~  ] [runlevel] [~           ] [6.1.0-18-amd64      ] [0.0.0.0        ] [2024-05-01T09:18:00,000000+00:00]
";

fn utmpdump(text: &str) -> Vec<u8> {
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

const PY: &str = r#"
import json, sys, importlib
kind, path, rest = sys.argv[1], sys.argv[2], sys.argv[3]
mod = importlib.import_module("salt.beacons." + kind)
setattr(mod, kind.upper(), path)
mod.__context__ = {}
mod.__salt__ = {}
first = mod.beacon([])
with open(path, "ab") as f, open(rest, "rb") as r:
    f.write(r.read())
for ev in mod.beacon([]):
    print(json.dumps(ev))
"#;

fn salt_events(venv: &Path, kind: &str, file: &Path, rest: &Path) -> Vec<Value> {
    let out = Command::new(venv.join("bin/python"))
        .arg("-c")
        .arg(PY)
        .arg(kind)
        .arg(file)
        .arg(rest)
        .output()
        .expect("salt's python");
    assert!(
        out.status.success(),
        "salt's {kind} beacon failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect()
}

fn beacond_events(kind: &str, file: &Path, rest: &Path) -> Vec<Value> {
    let cfg = ConfigDir::new(
        &format!("conf-{kind}"),
        &format!("beacons:\n  {kind}:\n    - file: {}\n", file.display()),
    );
    assert!(once(cfg.path()).events.is_empty());
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(file)
        .expect("open");
    f.write_all(&std::fs::read(rest).expect("rest"))
        .expect("append");
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    out.events.into_iter().map(|e| e["data"].clone()).collect()
}

#[test]
fn btmp_and_wtmp_match_salts_python_beacons() {
    // Salt 3008 no longer ships btmp/wtmp (moved out to an extension); 3006 and 3007 do.
    for series in ["3006", "3007"] {
        let Some(venv) = require_salt(series) else {
            continue;
        };
        for kind in ["btmp", "wtmp"] {
            let dir = TempDir::new(&format!("conf-{kind}-{series}"));
            let rest = dir.join("rest");
            std::fs::write(&rest, utmpdump(RECORDS)).expect("rest");
            let (py_file, rs_file) = (dir.join("py"), dir.join("rs"));
            std::fs::write(&py_file, utmpdump(SEED)).expect("seed");
            std::fs::write(&rs_file, utmpdump(SEED)).expect("seed");
            let salt = salt_events(&venv, kind, &py_file, &rest);
            let ours = beacond_events(kind, &rs_file, &rest);
            assert_eq!(salt.len(), 4, "salt {series} {kind}: {salt:?}");
            assert_eq!(ours.len(), salt.len(), "{kind}: {ours:?}");
            for (s, o) in salt.iter().zip(&ours) {
                let Some(s) = s.as_object() else {
                    panic!("not an object: {s}")
                };
                for (k, v) in s {
                    assert_eq!(
                        &o[k], v,
                        "salt {series} {kind}: key {k} differs\n salt: {s:?}\n ours: {o}"
                    );
                }
            }
        }
    }
}
