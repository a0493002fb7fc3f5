//! beacond's Salt crypto against vectors made by Salt's own Python code
//! (`tests/salt/gen_crypto_vectors.py`, one file per Salt series in `target/salt-vectors/`).
//!
//! Missing vector files are generated here with the Salt venvs of `tests/salt/setup.sh`
//! (`$BEACOND_SALT_CACHE`, default `~/.cache/beacond/salt/<series>`). With neither files nor
//! venvs the test fails, naming what to run, unless `BEACOND_SKIP_SALT=1`.

use beacond::event::Event;
use beacond::transport::salt::auth::{self, AuthSettings, Identity, SignIn};
use beacond::transport::salt::crypto::{
    pem_finger, Crypticle, CryptoError, EncAlgo, PrivateKey, PublicKey, SigAlgo,
};
use beacond::transport::salt::{wire, TransportError};
use serde_json::Value as Json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const SERIES: [&str; 3] = ["3006", "3007", "3008"];

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn field<'a>(v: &'a Json, k: &str) -> &'a Json {
    v.get(k)
        .unwrap_or_else(|| panic!("vector field {k} missing"))
}

fn s<'a>(v: &'a Json, k: &str) -> &'a str {
    field(v, k)
        .as_str()
        .unwrap_or_else(|| panic!("{k} is not a string"))
}

fn hx(v: &Json, k: &str) -> Vec<u8> {
    unhex(s(v, k))
}

fn vectors_dir() -> PathBuf {
    std::env::var_os("BEACOND_VECTORS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/salt-vectors"))
}

fn salt_cache() -> PathBuf {
    std::env::var_os("BEACOND_SALT_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/beacond/salt")
        })
}

/// Vector files, generating missing ones from the Salt venvs that exist.
fn vector_files() -> Vec<(String, PathBuf)> {
    let dir = vectors_dir();
    std::fs::create_dir_all(&dir).expect("vectors dir");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/salt/gen_crypto_vectors.py");
    let mut out = Vec::new();
    for series in SERIES {
        let file = dir.join(format!("crypto-{series}.json"));
        let py = salt_cache().join(series).join("bin/python");
        if !file.exists() && py.exists() {
            let st = Command::new(&py)
                .arg(&script)
                .arg(&file)
                .status()
                .expect("run gen_crypto_vectors.py");
            assert!(
                st.success(),
                "gen_crypto_vectors.py failed with {}",
                py.display()
            );
        }
        if file.exists() {
            out.push((series.to_owned(), file));
        }
    }
    if out.is_empty() && std::env::var("BEACOND_SKIP_SALT").as_deref() != Ok("1") {
        panic!(
            "no Salt crypto vectors in {} and no Salt venv to make them: run \
             `tests/salt/setup.sh` (or `<salt venv>/bin/python tests/salt/gen_crypto_vectors.py \
             {}/crypto-<series>.json`), or set BEACOND_SKIP_SALT=1 to skip",
            dir.display(),
            dir.display()
        );
    }
    out
}

fn load(path: &Path) -> Json {
    serde_json::from_str(&std::fs::read_to_string(path).expect("read vectors")).expect("json")
}

#[test]
fn salt_crypto_vectors() {
    let files = vector_files();
    if files.is_empty() {
        eprintln!("BEACOND_SKIP_SALT=1: no Salt vectors, skipped");
        return;
    }
    for (series, file) in files {
        let v = load(&file);
        eprintln!("checking vectors of salt {}", s(&v, "salt_version"));
        aes_framing(&v);
        dumps_loads(&v);
        rsa_pieces(&v);
        minion_event_bytes(&v);
        auth_replies(&v, &series);
    }
}

/// Crypticle.encrypt/decrypt: same bytes for the same IV, Salt's output decrypts, a flipped
/// bit fails the HMAC as Salt's AuthenticationError.
fn aes_framing(v: &Json) {
    let c = Crypticle::from_key_string(s(v, "aes_key").as_bytes()).expect("aes key");
    for case in field(v, "aes").as_array().expect("aes cases") {
        let plain = hx(case, "plain");
        let iv: [u8; 16] = hx(case, "iv").try_into().expect("iv");
        assert_eq!(
            c.encrypt_with_iv(&plain, &iv),
            hx(case, "cipher_fixed_iv"),
            "encrypt"
        );
        assert_eq!(
            c.decrypt(&hx(case, "cipher_fixed_iv")).expect("decrypt"),
            plain
        );
        assert_eq!(
            c.decrypt(&hx(case, "cipher_random_iv")).expect("decrypt"),
            plain
        );
        assert_eq!(case["tamper_error"], "AuthenticationError");
        assert!(matches!(
            c.decrypt(&hx(case, "tampered")),
            Err(CryptoError::HmacMismatch)
        ));
    }
    let other =
        Crypticle::from_key_string(Crypticle::generate_key_string().as_bytes()).expect("key");
    let first = &field(v, "aes")[0];
    assert!(matches!(
        other.decrypt(&hx(first, "cipher_fixed_iv")),
        Err(CryptoError::HmacMismatch)
    ));
}

/// Crypticle.dumps/loads with the `pickle::` marker and the nonce; the master's ack.
fn dumps_loads(v: &Json) {
    let c = Crypticle::from_key_string(s(v, "aes_key").as_bytes()).expect("aes key");
    let d = field(v, "dumps");
    let obj = wire::from_json(field(d, "obj"));
    let nonce = s(d, "nonce");
    let iv: [u8; 16] = hx(d, "iv").try_into().expect("iv");
    assert_eq!(
        c.dumps_with_iv(&obj, Some(nonce), &iv),
        hx(d, "with_nonce"),
        "dumps+nonce"
    );
    assert_eq!(
        c.dumps_with_iv(&obj, None, &iv),
        hx(d, "without_nonce"),
        "dumps"
    );
    let back = c.loads(&hx(d, "with_nonce"), Some(nonce)).expect("loads");
    assert_eq!(wire::to_json(&back), *field(d, "obj"));
    assert!(matches!(
        c.loads(&hx(d, "with_nonce"), Some(&"0".repeat(32))),
        Err(CryptoError::NonceMismatch)
    ));
    // The acknowledgement frame: msgpack raw str around Crypticle.dumps(None, nonce).
    let frame = wire::unpack(&hx(d, "ack_frame")).expect("ack frame");
    let raw = wire::bytes_of(&frame).expect("ack bytes");
    assert_eq!(c.loads(raw, Some(nonce)).expect("ack"), rmpv::Value::Nil);
    let bad = wire::unpack(&hx(d, "bad_load_frame")).expect("bad load frame");
    assert_eq!(bad.as_str(), Some("bad load"));
}

/// OAEP decryption, PKCS#1 v1.5 verification, X9.31 token and signature, fingerprints.
fn rsa_pieces(v: &Json) {
    let minion = PrivateKey::from_pem(s(v, "minion_pem")).expect("minion.pem");
    let master_pub = PublicKey::from_pem(s(v, "master_pub")).expect("master.pub");
    let other_pub = PublicKey::from_pem(s(v, "other_pub")).expect("other.pub");
    for case in field(v, "oaep").as_array().expect("oaep") {
        let algo = EncAlgo::parse(s(case, "algo")).expect("algo");
        assert_eq!(
            minion
                .decrypt(algo, &hx(case, "cipher"))
                .expect("oaep decrypt"),
            hx(case, "plain"),
            "{algo:?}"
        );
        let wrong = if algo == EncAlgo::OaepSha1 {
            EncAlgo::OaepSha224
        } else {
            EncAlgo::OaepSha1
        };
        assert!(minion.decrypt(wrong, &hx(case, "cipher")).is_err());
    }
    for case in field(v, "sign").as_array().expect("sign") {
        let algo = SigAlgo::parse(s(case, "algo")).expect("algo");
        let data = hx(case, "data");
        let sig = hx(case, "sig");
        assert!(master_pub.verify(algo, &data, &sig), "{algo:?}");
        let mut tampered = data.clone();
        tampered[0] ^= 1;
        assert!(!master_pub.verify(algo, &tampered, &sig));
        assert!(!other_pub.verify(algo, &data, &sig));
    }
    let x = field(v, "x931");
    assert_eq!(
        minion.x931_sign(b"salt").expect("tok"),
        hx(x, "tok"),
        "X9.31 token"
    );
    assert_eq!(
        master_pub
            .x931_recover(&hx(x, "master_sig"))
            .expect("recover"),
        hx(x, "digest")
    );
    assert!(other_pub
        .x931_recover(&hx(x, "master_sig"))
        .map(|d| d != hx(x, "digest"))
        .unwrap_or(true));
    let f = field(v, "finger");
    assert_eq!(
        pem_finger(s(v, "master_pub"), "sha256").expect("finger"),
        s(f, "sha256_path")
    );
    // The minion compares master_finger with pem_finger(path=minion_master.pub); the `key=`
    // form hashes the armor too before 3007 fixed it, so only the path form is the reference.
    assert_eq!(
        pem_finger(s(v, "master_pub"), "sha512").expect("finger"),
        s(f, "sha512_path")
    );
}

/// The whole `_minion_event` request, byte for byte as salt-minion sends it.
fn minion_event_bytes(v: &Json) {
    let m = field(v, "minion_event");
    let id = s(m, "id");
    let minion = PrivateKey::from_pem(s(v, "minion_pem")).expect("minion.pem");
    let tok = minion.x931_sign(b"salt").expect("tok");
    let events: Vec<Event> = field(m, "events")
        .as_array()
        .expect("events")
        .iter()
        .map(|e| Event {
            tag: s(e, "tag").to_owned(),
            data: field(e, "data").as_object().cloned().expect("data"),
            beacon: "x".into(),
        })
        .collect();
    let load = wire::minion_event_load(
        id,
        &tok,
        wire::events_value(&events),
        s(m, "nonce"),
        field(m, "ts").as_i64().expect("ts"),
    );
    let mut plain = b"pickle::".to_vec();
    plain.extend_from_slice(&wire::pack(&load));
    assert_eq!(hex(&plain), s(m, "inner_plain"), "inner load bytes");
    let session = Crypticle::from_key_string(s(m, "session_key").as_bytes()).expect("session");
    let iv: [u8; 16] = hx(m, "iv").try_into().expect("iv");
    let env = wire::aes_envelope(
        id,
        session.dumps_with_iv(&load, None, &iv),
        "OAEP-SHA1",
        "PKCS1v15-SHA1",
        3,
    );
    assert_eq!(hex(&wire::pack(&env)), s(m, "wire"), "request bytes");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn scratch(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch dir");
    d
}

/// `_auth` replies signed as the master signs them: first contact caches the key, a cached
/// key must match, the token must come back, pending/rejected are recognised.
fn auth_replies(v: &Json, series: &str) {
    let pki = scratch(&format!("vec-pki-{series}"));
    let pem = pki.join("minion.pem");
    std::fs::write(&pem, s(v, "minion_pem")).expect("write pem");
    std::fs::write(pki.join("minion.pub"), s(v, "minion_pub")).expect("write pub");
    std::fs::set_permissions(&pem, std::fs::Permissions::from_mode(0o400)).expect("chmod");
    let ident = Identity::load_or_create("vec-minion", &pki, 2048).expect("identity");
    let settings = AuthSettings {
        enc_algo: EncAlgo::OaepSha1,
        sig_algo: SigAlgo::Pkcs1v15Sha1,
        master_finger: None,
        hash_type: "sha256".into(),
    };
    let cases = field(v, "auth").as_array().expect("auth");
    let case = |name: &str| {
        cases
            .iter()
            .find(|c| c["case"] == name)
            .unwrap_or_else(|| panic!("auth case {name}"))
    };
    let master_pub = PublicKey::from_pem(s(v, "master_pub")).expect("master pub");
    let master_pub_path = pki.join(auth::MASTER_PUB);

    // First contact: no cached key, no token; the key gets cached.
    let c = case("first_contact");
    let r = auth::handle_sign_in_reply(
        &ident,
        &settings,
        "m",
        &hx(c, "frame"),
        s(c, "nonce"),
        None,
        None,
    )
    .expect("first contact");
    let SignIn::Accepted(creds) = r else {
        panic!("not accepted: {r:?}")
    };
    assert_eq!(creds.version, 3);
    let session = Crypticle::from_key_string(s(c, "session").as_bytes()).expect("session");
    let probe = session.encrypt(b"x");
    assert_eq!(
        creds.session.decrypt(&probe).expect("same session key"),
        b"x"
    );
    let cached = std::fs::read_to_string(&master_pub_path).expect("cached master key");
    assert_eq!(
        cached,
        beacond::transport::salt::crypto::clean_key(s(v, "master_pub"))
    );

    // Wrong nonce.
    let e = auth::handle_sign_in_reply(
        &ident,
        &settings,
        "m",
        &hx(c, "frame"),
        &"1".repeat(32),
        None,
        None,
    )
    .expect_err("nonce");
    assert!(matches!(e, TransportError::BadSignature { .. }), "{e:?}");

    // With a cached key and the token returned.
    let cached_pair = (cached.clone(), master_pub.clone());
    let c = case("with_token");
    let token = hx(c, "token");
    let r = auth::handle_sign_in_reply(
        &ident,
        &settings,
        "m",
        &hx(c, "frame"),
        s(c, "nonce"),
        Some(&token),
        Some(&cached_pair),
    )
    .expect("with token");
    assert!(matches!(r, SignIn::Accepted(_)));
    // A token that is not ours: refused.
    let e = auth::handle_sign_in_reply(
        &ident,
        &settings,
        "m",
        &hx(c, "frame"),
        s(c, "nonce"),
        Some(b"not-it"),
        Some(&cached_pair),
    )
    .expect_err("token");
    assert!(matches!(e, TransportError::BadSignature { .. }), "{e:?}");

    // A master whose key differs from the cached one: refused, naming the file.
    let other = (
        s(v, "other_pub").to_owned(),
        PublicKey::from_pem(s(v, "other_pub")).expect("other"),
    );
    let e = auth::handle_sign_in_reply(
        &ident,
        &settings,
        "m",
        &hx(c, "frame"),
        s(c, "nonce"),
        Some(&token),
        Some(&other),
    )
    .expect_err("key changed");
    assert!(
        matches!(e, TransportError::MasterKeyChanged { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("minion_master.pub"), "{e}");

    // master_finger: right one accepted, wrong one refused.
    let finger = pem_finger(&cached, "sha256").expect("finger");
    let with_finger = |f: &str| AuthSettings {
        master_finger: Some(f.into()),
        ..settings.clone()
    };
    assert!(auth::handle_sign_in_reply(
        &ident,
        &with_finger(&finger),
        "m",
        &hx(c, "frame"),
        s(c, "nonce"),
        Some(&token),
        Some(&cached_pair)
    )
    .is_ok());
    let e = auth::handle_sign_in_reply(
        &ident,
        &with_finger("00:11"),
        "m",
        &hx(c, "frame"),
        s(c, "nonce"),
        Some(&token),
        Some(&cached_pair),
    )
    .expect_err("finger");
    assert!(matches!(e, TransportError::FingerMismatch { .. }), "{e:?}");

    // Signed by another key than the cached one (the reply's pub_key matches the cache but
    // the signature does not): refused as another master.
    let forged_cache = (cached.clone(), other.1.clone());
    let e = auth::handle_sign_in_reply(
        &ident,
        &settings,
        "m",
        &hx(c, "frame"),
        s(c, "nonce"),
        Some(&token),
        Some(&forged_cache),
    )
    .expect_err("signature");
    assert!(
        matches!(e, TransportError::MasterKeyChanged { .. }),
        "{e:?}"
    );

    // A pending answer (no pub_key) signed by another master than the cached one: refused.
    let c = case("pending");
    let e = auth::handle_sign_in_reply(
        &ident,
        &settings,
        "m",
        &hx(c, "frame"),
        s(c, "nonce"),
        None,
        Some(&other),
    )
    .expect_err("another master");
    assert!(
        matches!(e, TransportError::MasterKeyChanged { .. }),
        "{e:?}"
    );

    let r = auth::handle_sign_in_reply(
        &ident,
        &settings,
        "m",
        &hx(c, "frame"),
        s(c, "nonce"),
        None,
        Some(&cached_pair),
    )
    .expect("pending");
    assert!(matches!(r, SignIn::Pending), "{r:?}");
    let c = case("rejected");
    let r = auth::handle_sign_in_reply(
        &ident,
        &settings,
        "m",
        &hx(c, "frame"),
        s(c, "nonce"),
        None,
        Some(&cached_pair),
    )
    .expect("rejected");
    assert!(matches!(r, SignIn::Rejected), "{r:?}");
    let _ = std::fs::remove_dir_all(&pki);
}
