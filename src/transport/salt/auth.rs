//! The minion's key pair and the `_auth` exchange with a master (`salt.crypt.AsyncAuth`).

use super::crypto::{self, Crypticle, EncAlgo, PrivateKey, PublicKey, SigAlgo};
use super::wire::{self, bytes_of, get, map};
use super::TransportError;
use rmpv::Value;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tracing::{debug, info};

/// File name of the cached master public key (`AsyncAuth.mpub`).
pub const MASTER_PUB: &str = "minion_master.pub";

/// The minion's identity: id and key pair, loaded once.
pub struct Identity {
    pub id: String,
    pub pki_dir: PathBuf,
    key: PrivateKey,
    /// `clean_key(minion.pub)`, as sent in `_auth`.
    pub pub_pem: String,
    /// `tok`: the private key's X9.31 operation on `b"salt"` (deterministic; computed once,
    /// as salt memoizes it).
    pub tok: Vec<u8>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("id", &self.id)
            .field("pki_dir", &self.pki_dir)
            .finish()
    }
}

fn key_err(path: &Path, msg: impl std::fmt::Display) -> TransportError {
    TransportError::Key {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

impl Identity {
    /// Load `minion.pem`/`minion.pub` from `pki_dir`, or create a `keysize`-bit pair as
    /// salt-minion does (pem 0400, pub 0644). Refuses a private key that group or others can
    /// access.
    pub fn load_or_create(
        id: &str,
        pki_dir: &Path,
        keysize: usize,
    ) -> Result<Self, TransportError> {
        let pem_path = pki_dir.join("minion.pem");
        let pub_path = pki_dir.join("minion.pub");
        if !pki_dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(pki_dir)
                .map_err(|e| key_err(pki_dir, format!("cannot create the pki_dir: {e}")))?;
        }
        let key = if pem_path.exists() {
            check_private_mode(&pem_path)?;
            let text = fs::read_to_string(&pem_path).map_err(|e| key_err(&pem_path, e))?;
            PrivateKey::from_pem(&text).map_err(|e| key_err(&pem_path, e))?
        } else {
            if keysize < 1024 {
                return Err(TransportError::Config(format!(
                    "keysize {keysize} is too small (salt-minion uses 2048 or more)"
                )));
            }
            info!(pki_dir = %pki_dir.display(), keysize, "generating the minion key pair");
            let key = PrivateKey::generate(keysize).map_err(|e| key_err(&pem_path, e))?;
            let pem = key.to_pem().map_err(|e| key_err(&pem_path, e))?;
            write_new(&pem_path, pem.as_bytes(), 0o400)?;
            let public = key.public_pem().map_err(|e| key_err(&pub_path, e))?;
            // A stale minion.pub from an older key would be sent to the master: replace it.
            let _ = fs::remove_file(&pub_path);
            write_new(&pub_path, public.as_bytes(), 0o644)?;
            key
        };
        if !pub_path.exists() {
            let public = key.public_pem().map_err(|e| key_err(&pub_path, e))?;
            write_new(&pub_path, public.as_bytes(), 0o644)?;
        }
        let pub_text = fs::read_to_string(&pub_path).map_err(|e| key_err(&pub_path, e))?;
        let pub_key = PublicKey::from_pem(&pub_text).map_err(|e| key_err(&pub_path, e))?;
        let ours = key.public_pem().map_err(|e| key_err(&pub_path, e))?;
        let ours = PublicKey::from_pem(&ours).map_err(|e| key_err(&pub_path, e))?;
        if !same_public(&pub_key, &ours) {
            return Err(key_err(
                &pub_path,
                "does not belong to minion.pem (remove it and beacond writes the right one)",
            ));
        }
        let tok = key.x931_sign(b"salt").map_err(|e| key_err(&pem_path, e))?;
        Ok(Identity {
            id: id.to_owned(),
            pki_dir: pki_dir.to_path_buf(),
            key,
            pub_pem: crypto::clean_key(&pub_text),
            tok,
        })
    }

    /// Decrypt something the master encrypted to our public key.
    pub fn decrypt(&self, algo: EncAlgo, data: &[u8]) -> Result<Vec<u8>, crypto::CryptoError> {
        self.key.decrypt(algo, data)
    }

    /// Path of the cached master key.
    pub fn master_pub_path(&self) -> PathBuf {
        self.pki_dir.join(MASTER_PUB)
    }
}

fn same_public(a: &PublicKey, b: &PublicKey) -> bool {
    matches!((a.to_pem(), b.to_pem()), (Ok(x), Ok(y)) if x == y)
}

/// Refuse a private key file readable (or writable) by group or others.
fn check_private_mode(path: &Path) -> Result<(), TransportError> {
    let meta = fs::metadata(path).map_err(|e| key_err(path, e))?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(TransportError::KeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Create a file that must not exist yet, with `mode` from the start.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), TransportError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| key_err(path, e))?;
    f.write_all(data).map_err(|e| key_err(path, e))?;
    f.sync_all().map_err(|e| key_err(path, e))?;
    // The umask may have taken bits away (never added); make the mode exact.
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(|e| key_err(path, e))?;
    Ok(())
}

/// Replace a file atomically (write a temporary beside it, then rename).
fn write_replace(path: &Path, data: &[u8], mode: u32) -> Result<(), TransportError> {
    let tmp = path.with_extension("tmp-beacond");
    let _ = fs::remove_file(&tmp);
    write_new(&tmp, data, mode)?;
    fs::rename(&tmp, path).map_err(|e| key_err(path, e))
}

/// Options that shape `_auth`.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub enc_algo: EncAlgo,
    pub sig_algo: SigAlgo,
    /// `master_finger`, compared with `pem_finger(master key, hash_type)`.
    pub master_finger: Option<String>,
    pub hash_type: String,
}

/// Session material from a successful sign-in.
#[derive(Debug, Clone)]
pub struct Creds {
    /// Encrypts requests and their replies (protocol version 3).
    pub session: Crypticle,
    /// The master's publish AES key (used for requests only by version-2 masters).
    pub aes: Crypticle,
    /// Protocol version to speak: 3 when the master handed out a session key.
    pub version: u8,
}

/// What a sign-in came to.
#[derive(Debug)]
pub enum SignIn {
    Accepted(Creds),
    /// `ret: True` without keys: our key waits in `minions_pre` for `salt-key -a`.
    Pending,
    /// `ret: False`: rejected or denied (a different key for this id is accepted).
    Rejected,
    /// `ret: "full"`: `max_minions` reached.
    Full,
}

/// A packed `_auth` request and what its reply must echo.
pub struct SignInRequest {
    pub packed: Vec<u8>,
    pub nonce: String,
    /// The random token encrypted to the cached master key, if one was sent.
    pub token: Option<Vec<u8>>,
}

/// The clear `_auth` request (`AsyncAuth.minion_sign_in_payload` in `channel.send` framing).
pub fn sign_in_request(
    ident: &Identity,
    settings: &AuthSettings,
    master_pub: Option<&PublicKey>,
) -> Result<SignInRequest, TransportError> {
    let nonce = crypto::uuid4_hex();
    let mut load = vec![
        (Value::from("cmd"), Value::from("_auth")),
        (Value::from("id"), Value::from(ident.id.as_str())),
        (Value::from("nonce"), Value::from(nonce.as_str())),
        (
            Value::from("enc_algo"),
            Value::from(settings.enc_algo.name()),
        ),
        (
            Value::from("sig_algo"),
            Value::from(settings.sig_algo.name()),
        ),
    ];
    let mut token = None;
    if let Some(mp) = master_pub {
        let t = Crypticle::generate_key_string().into_bytes();
        let enc = mp
            .encrypt(settings.enc_algo, &t)
            .map_err(|e| TransportError::Crypto(e.to_string()))?;
        load.push((Value::from("token"), Value::Binary(enc)));
        token = Some(t);
    }
    load.push((Value::from("pub"), Value::from(ident.pub_pem.as_str())));
    let envelope = map([
        ("enc", Value::from("clear")),
        ("load", Value::Map(load)),
        ("version", Value::from(3)),
    ]);
    Ok(SignInRequest {
        packed: wire::pack(&envelope),
        nonce,
        token,
    })
}

/// Read the cached master key, if there is one.
pub fn cached_master_pub(ident: &Identity) -> Result<Option<(String, PublicKey)>, TransportError> {
    let path = ident.master_pub_path();
    match fs::read_to_string(&path) {
        Ok(text) => {
            let key = PublicKey::from_pem(&text).map_err(|e| key_err(&path, e))?;
            Ok(Some((text, key)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(key_err(&path, e)),
    }
}

/// Check and take apart the master's reply to `_auth` (`AsyncAuth.handle_signin_response`
/// and `verify_master`), caching the master key on first contact.
pub fn handle_sign_in_reply(
    ident: &Identity,
    settings: &AuthSettings,
    master: &str,
    reply: &[u8],
    nonce: &str,
    token: Option<&[u8]>,
    cached: Option<&(String, PublicKey)>,
) -> Result<SignIn, TransportError> {
    let proto = |msg: String| TransportError::Protocol {
        master: master.to_owned(),
        msg,
    };
    let outer = wire::unpack(reply).map_err(|e| proto(format!("auth reply: {e}")))?;
    let load = get(&outer, "load").ok_or_else(|| {
        proto(format!(
            "auth reply without a load: {}",
            short(&wire::to_json(&outer).to_string())
        ))
    })?;
    if let Value::Map(_) = load {
        // Unsigned answers: only the algorithm complaints come this way.
        let ret = get(load, "ret").and_then(Value::as_str).unwrap_or("");
        return Err(TransportError::Refused {
            master: master.to_owned(),
            reason: match ret {
                "bad enc algo" => format!(
                    "the master does not support encryption_algorithm {}",
                    settings.enc_algo.name()
                ),
                "bad sig algo" => format!(
                    "the master does not support signing_algorithm {}",
                    settings.sig_algo.name()
                ),
                other => format!("unexpected unsigned auth reply {other:?}"),
            },
        });
    }
    let signed = bytes_of(load).ok_or_else(|| proto("auth reply load is not bytes".into()))?;
    let sig = get(&outer, "sig")
        .and_then(bytes_of)
        .ok_or_else(|| proto("auth reply is not signed".into()))?;
    let payload = wire::unpack(signed).map_err(|e| proto(format!("auth payload: {e}")))?;

    // Which key vouches for this reply: the cached one, or, on first contact, the one the
    // master presents (trust on first use, as salt-minion).
    let mut new_master_pub: Option<(String, PublicKey)> = None;
    if let Some(pk) = get(&payload, "pub_key") {
        let presented = pk
            .as_str()
            .map(str::to_owned)
            .or_else(|| bytes_of(pk).map(|b| String::from_utf8_lossy(b).into_owned()))
            .ok_or_else(|| proto("pub_key is not a string".into()))?;
        let presented = crypto::clean_key(&presented);
        match cached {
            Some((text, _)) if crypto::clean_key(text) != presented => {
                return Err(TransportError::MasterKeyChanged {
                    master: master.to_owned(),
                    path: ident.master_pub_path(),
                });
            }
            Some(_) => {}
            None => {
                let key = PublicKey::from_pem(&presented)
                    .map_err(|e| proto(format!("master public key: {e}")))?;
                new_master_pub = Some((presented, key));
            }
        }
    }
    let verifier = match (&new_master_pub, cached) {
        (Some((_, k)), _) => Some(k),
        (None, Some((_, k))) => Some(k),
        (None, None) => None,
    };
    if let Some(k) = verifier {
        if !k.verify(settings.sig_algo, signed, sig) {
            if new_master_pub.is_none() && cached.is_some() {
                // Not signed by the key we cached: another master (or someone in between)
                // answers on this address.
                return Err(TransportError::MasterKeyChanged {
                    master: master.to_owned(),
                    path: ident.master_pub_path(),
                });
            }
            return Err(TransportError::BadSignature {
                master: master.to_owned(),
                what: "auth reply".into(),
            });
        }
    }
    let reply_nonce = get(&payload, "nonce").and_then(Value::as_str);
    if reply_nonce != Some(nonce) {
        return Err(TransportError::BadSignature {
            master: master.to_owned(),
            what: "auth reply nonce".into(),
        });
    }

    if let Some(ret) = get(&payload, "ret") {
        return Ok(match ret {
            Value::Boolean(false) | Value::Nil => SignIn::Rejected,
            Value::String(s) if s.as_str() == Some("full") => SignIn::Full,
            _ => SignIn::Pending,
        });
    }

    let Some(master_key) = verifier else {
        return Err(proto("auth reply carries neither ret nor pub_key".into()));
    };
    if let Some(finger) = &settings.master_finger {
        let text = new_master_pub
            .as_ref()
            .map(|(t, _)| t.clone())
            .or_else(|| cached.map(|(t, _)| t.clone()))
            .unwrap_or_default();
        let got = crypto::pem_finger(&text, &settings.hash_type)
            .map_err(|e| TransportError::Config(e.to_string()))?;
        if !got.eq_ignore_ascii_case(finger.trim()) {
            return Err(TransportError::FingerMismatch {
                master: master.to_owned(),
                expected: finger.clone(),
                got,
            });
        }
    }

    // The publish AES key, vouched for by the master's X9.31 signature over its digest.
    let aes_enc = get(&payload, "aes")
        .and_then(bytes_of)
        .ok_or_else(|| proto("accepted auth reply without aes".into()))?;
    let aes_plain = ident
        .decrypt(settings.enc_algo, aes_enc)
        .map_err(|e| proto(format!("cannot decrypt the aes key: {e}")))?;
    let aes_sig = get(&payload, "sig")
        .and_then(bytes_of)
        .ok_or_else(|| proto("accepted auth reply without sig".into()))?;
    let digest = master_key
        .x931_recover(aes_sig)
        .map_err(|_| TransportError::BadSignature {
            master: master.to_owned(),
            what: "aes key signature".into(),
        })?;
    if digest != crypto::sha256_hex(&aes_plain).as_bytes() {
        return Err(TransportError::BadSignature {
            master: master.to_owned(),
            what: "aes key signature".into(),
        });
    }
    // auth_mode >= 2 masters fold the token into the aes string.
    let (aes_key, returned_token) = match find(&aes_plain, b"_|-") {
        Some(i) => (aes_plain[..i].to_vec(), Some(aes_plain[i + 3..].to_vec())),
        None => {
            let t = match get(&payload, "token").and_then(bytes_of) {
                Some(t) => Some(
                    ident
                        .decrypt(settings.enc_algo, t)
                        .map_err(|e| proto(format!("cannot decrypt the token: {e}")))?,
                ),
                None => None,
            };
            (aes_plain.clone(), t)
        }
    };
    if let Some(sent) = token {
        // We encrypted a random token to the cached key: only its holder could return it.
        if returned_token.as_deref() != Some(sent) {
            return Err(TransportError::BadSignature {
                master: master.to_owned(),
                what: "token (the master could not decrypt what we encrypted to its cached key)"
                    .into(),
            });
        }
    }
    let aes = Crypticle::from_key_string(&aes_key).map_err(|e| proto(format!("aes key: {e}")))?;
    let (session, version) = match get(&payload, "session").and_then(bytes_of) {
        Some(s) => {
            let plain = ident
                .decrypt(settings.enc_algo, s)
                .map_err(|e| proto(format!("cannot decrypt the session key: {e}")))?;
            (
                Crypticle::from_key_string(&plain)
                    .map_err(|e| proto(format!("session key: {e}")))?,
                3,
            )
        }
        None => {
            debug!(
                master,
                "master hands out no session key; speaking protocol version 2"
            );
            (aes.clone(), 2)
        }
    };
    if let Some((text, _)) = &new_master_pub {
        let path = ident.master_pub_path();
        write_replace(&path, text.as_bytes(), 0o644)?;
        info!(master, path = %path.display(), "cached the master's public key (first contact)");
    }
    Ok(SignIn::Accepted(Creds {
        session,
        aes,
        version,
    }))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn short(s: &str) -> String {
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}
