//! Replies from a (possibly malicious) master: msgpack decoding, the AES/HMAC envelope and the
//! `_auth` reply handling must reject anything, never panic.
#![no_main]
use beacond::transport::salt::{auth, crypto, wire};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

struct Fixture {
    crypticle: crypto::Crypticle,
    ident: auth::Identity,
    settings: auth::AuthSettings,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let pki = std::env::temp_dir().join(format!("beacond-fuzz-pki-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&pki);
        let key = crypto::Crypticle::generate_key_string();
        Fixture {
            crypticle: crypto::Crypticle::from_key_string(key.as_bytes()).expect("fresh key"),
            ident: auth::Identity::load_or_create("fuzz", &pki, 1024).expect("identity"),
            settings: auth::AuthSettings {
                enc_algo: crypto::EncAlgo::OaepSha1,
                sig_algo: crypto::SigAlgo::Pkcs1v15Sha1,
                master_finger: None,
                hash_type: "sha256".into(),
            },
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    if let Ok(v) = wire::unpack(data) {
        let _ = wire::to_json(&v);
        if let Some(raw) = wire::bytes_of(&v) {
            let _ = f.crypticle.loads(raw, Some("0123456789abcdef0123456789abcdef"));
        }
    }
    let _ = f.crypticle.loads(data, None);
    let _ = f.crypticle.decrypt(data);
    let _ = auth::handle_sign_in_reply(
        &f.ident,
        &f.settings,
        "fuzz-master",
        data,
        "0123456789abcdef0123456789abcdef",
        None,
        None,
    );
});
