//! The `cert_info` beacon against real certificates made by `openssl req -x509` (apt `openssl`),
//! checked against `openssl x509` itself and against Salt's own Python beacon.
mod common;
#[path = "common/salt_python.rs"]
mod salt_python;
use common::beacond::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl (apt install openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn make_cert(dir: &Path, name: &str, days: u32, subj: &str, extra: &[&str]) -> String {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    let (c, k) = (cert.display().to_string(), key.display().to_string());
    let days = days.to_string();
    let mut args = vec![
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        &k,
        "-out",
        &c,
        "-days",
        &days,
        "-subj",
        subj,
    ];
    args.extend_from_slice(extra);
    openssl(&args);
    c
}

fn certs_config(id: &str, dir: &Path) -> ConfigDir {
    let soon = make_cert(
        dir,
        "soon",
        10,
        "/C=FR/O=Acme Corp/CN=soon.example.com",
        &[
            "-addext",
            "subjectAltName=DNS:soon.example.com,IP:10.0.0.1",
            "-addext",
            "extendedKeyUsage=serverAuth",
        ],
    );
    let later = make_cert(dir, "later", 400, "/CN=later.example.com", &[]);
    let far = make_cert(dir, "far", 400, "/CN=far.example.com", &[]);
    ConfigDir::new(
        id,
        &format!(
            "beacons:\n  cert_info:\n    - files:\n        - {soon}\n        - {later}:\n            notify_days: 500\n        - {far}\n        - {missing}\n    - notify_days: 30\n",
            missing = dir.join("missing.pem").display()
        ),
    )
}

#[test]
fn reports_certificates_within_their_threshold_with_openssls_values() {
    let tmp = TempDir::new("cert1");
    let cfg = certs_config("cert1", tmp.path());
    let out = once(cfg.path());
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(out.events.len(), 1, "{:?}", out.events);
    let ev = &out.events[0];
    assert_eq!(ev["tag"], "salt/beacon/cert1/cert_info/");
    let certs = ev["data"]["certificates"].as_array().expect("certificates");
    // soon (10 days <= 30) and later (400 <= its own 500); far (400 > 30) and missing are not.
    let paths: Vec<&str> = certs
        .iter()
        .filter_map(|c| c["cert_path"].as_str())
        .collect();
    assert_eq!(paths.len(), 2, "{paths:?}");
    assert!(
        paths[0].ends_with("soon.pem") && paths[1].ends_with("later.pem"),
        "{paths:?}"
    );
    assert!(out.stderr.contains("missing.pem"), "{}", out.stderr);

    let soon = &certs[0];
    let pem = tmp.join("soon.pem").display().to_string();
    // `openssl x509 -enddate` → notAfter=Dec  2 09:50:09 2026 GMT; compare via -dates in ISO form.
    let end = openssl(&[
        "x509", "-in", &pem, "-noout", "-enddate", "-dateopt", "iso_8601",
    ]);
    // notAfter=2026-12-02 09:50:09Z
    assert_eq!(
        end.trim().trim_start_matches("notAfter="),
        soon["notAfter"].as_str().unwrap_or("")
    );
    let serial_hex = openssl(&["x509", "-in", &pem, "-noout", "-serial"]);
    let serial_hex = serial_hex.trim().trim_start_matches("serial=");
    let ours = match &soon["serial_number"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    assert_eq!(hex_to_decimal(serial_hex), ours);
    assert_eq!(
        soon["subject"],
        "C=\"FR\",O=\"Acme Corp\",CN=\"soon.example.com\""
    );
    assert_eq!(soon["subject_dict"]["O"], "Acme Corp");
    assert_eq!(soon["issuer"], soon["subject"]);
    assert_eq!(soon["signature_algorithm"], "ecdsa-with-SHA256");
    assert_eq!(soon["version"], 2);
    assert_eq!(soon["has_expired"], false);
    // Made with -days 10 a moment ago: 10 days minus the seconds elapsed since, floored.
    assert!(
        soon["days_left"] == 9 || soon["days_left"] == 10,
        "{}",
        soon["days_left"]
    );
    let exts: Vec<(&str, &str)> = soon["extensions"]
        .as_array()
        .expect("extensions")
        .iter()
        .map(|e| {
            (
                e["ext_name"].as_str().unwrap_or(""),
                e["ext_data"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(
        exts.contains(&(
            "subjectAltName",
            "DNS:soon.example.com, IP Address:10.0.0.1"
        )),
        "{exts:?}"
    );
    assert!(
        exts.contains(&("extendedKeyUsage", "TLS Web Server Authentication")),
        "{exts:?}"
    );
    assert!(exts.contains(&("basicConstraints", "CA:TRUE")), "{exts:?}");
}

/// Decimal of a hex string (the test's own long division, independent of the beacon's).
fn hex_to_decimal(hex: &str) -> String {
    let mut dec: Vec<u32> = vec![0]; // little-endian base-10 digits
    for c in hex.chars() {
        let mut carry = c.to_digit(16).expect("hex digit");
        for d in dec.iter_mut() {
            let v = *d * 16 + carry;
            *d = v % 10;
            carry = v / 10;
        }
        while carry > 0 {
            dec.push(carry % 10);
            carry /= 10;
        }
    }
    while dec.len() > 1 && dec.last() == Some(&0) {
        dec.pop();
    }
    dec.iter()
        .rev()
        .map(|d| char::from_digit(*d, 10).unwrap_or('?'))
        .collect()
}

#[test]
fn same_tag_and_keys_as_salts_python_beacon() {
    // Not 3008: its cert_info refuses to load with the venv's pyOpenSSL ("pyOpenSSL >= 25
    // removed the X509Extension API used by this beacon"), so Salt 3008 emits nothing.
    for series in ["3006", "3007"] {
        conformance(series);
    }
}

fn conformance(series: &str) {
    let Some(py) = salt_python::salt_python(series) else {
        return;
    };
    let tmp = TempDir::new("cert2");
    let cfg = certs_config("cert2", tmp.path());
    let salt = salt_python::python_events(&py, cfg.path(), 1, false);
    let ours = once(cfg.path()).events;
    assert_eq!(salt.len(), 1, "{salt:?}");
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(ours[0]["tag"], salt[0]["tag"]);
    salt_python::assert_superset(&ours[0]["data"], &salt[0]["data"], "event data");
    let (a, b) = (
        &ours[0]["data"]["certificates"],
        &salt[0]["data"]["certificates"],
    );
    assert_eq!(a.as_array().map(Vec::len), b.as_array().map(Vec::len));
    for (mine, theirs) in a
        .as_array()
        .into_iter()
        .flatten()
        .zip(b.as_array().into_iter().flatten())
    {
        salt_python::assert_superset(mine, theirs, "certificate");
        for k in [
            "cert_path",
            "issuer",
            "issuer_dict",
            "subject",
            "subject_dict",
            "notAfter",
            "notAfter_raw",
            "notBefore",
            "notBefore_raw",
            "signature_algorithm",
            "version",
            "has_expired",
        ] {
            assert_eq!(mine[k], theirs[k], "{k}");
        }
        let names = |v: &Value| -> Vec<Value> {
            v["extensions"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| e["ext_name"].clone())
                .collect()
        };
        assert_eq!(names(mine), names(theirs));
    }
}
