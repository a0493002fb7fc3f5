//! Salt's ZeroMQ request channel: `_auth`, then `_minion_event`.
//!
//! beacond speaks to the master's request server (`master:master_port`, 4506 by default)
//! exactly as salt-minion 3006/3007/3008 does (request protocol version 3), so the master
//! fires `salt/beacon/<id>/<beacon>/...` on its event bus and existing reactors run unchanged.
//!
//! - [`zmtp`]: a small ZMTP 3 REQ client over tokio (no libzmq, no background reconnects).
//! - [`crypto`]: RSA (OAEP, PKCS#1 v1.5, X9.31), AES-CBC + HMAC-SHA256 as `salt.crypt`.
//! - [`auth`]: the minion key pair and `_auth`.
//! - [`channel`]: one master link (connect, authenticate, send, re-authenticate, back off).
//! - [`Masters`]: the public API: every configured master, `master_type: failover` or
//!   multi-master, [`Masters::deliver`]; [`DeliveryError`] says whether a failed batch
//!   was refused by a master (retrying the same batch cannot help) or no master took it.

pub mod auth;
pub mod channel;
pub mod crypto;
pub mod wire;
pub mod zmtp;

use crate::config::minion::MinionOpts;
use crate::event::Event;
use auth::{AuthSettings, Identity};
use channel::MasterLink;
use crypto::{EncAlgo, SigAlgo};
use serde_json::Value as Json;
use std::path::PathBuf;
use std::time::Duration;
use tokio::time::Instant;
use tracing::{info, warn};

/// Errors of the transport. Cloneable so a link can remember why it is backing off.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("minion configuration: {0}")]
    Config(String),
    #[error("{}: {msg}", path.display())]
    Key { path: PathBuf, msg: String },
    #[error("{} has mode {mode:04o}: the minion private key must not be accessible by group or others (chmod 0400 {})", path.display(), path.display())]
    KeyPermissions { path: PathBuf, mode: u32 },
    #[error("master {master} unreachable: {reason}")]
    Unreachable { master: String, reason: String },
    #[error("master {master} did not answer within {}s", timeout.as_secs_f64())]
    Timeout { master: String, timeout: Duration },
    #[error("master {master}: protocol error: {msg}")]
    Protocol { master: String, msg: String },
    #[error("master {master} is not the master whose key is cached in {} (it presents another public key, or signs with another key); refusing it: the master may have been subverted. If the master's key was replaced on purpose, remove that file", path.display())]
    MasterKeyChanged { master: String, path: PathBuf },
    #[error("master {master}'s key fingerprint {got} does not match master_finger {expected}; refusing it")]
    FingerMismatch {
        master: String,
        expected: String,
        got: String,
    },
    #[error("master {master}: invalid {what}; refusing the reply")]
    BadSignature { master: String, what: String },
    #[error("master {master} refused: {reason}")]
    Refused { master: String, reason: String },
    #[error(
        "master {master} has not accepted this minion's key yet (on the master: salt-key -a {id})"
    )]
    Pending { master: String, id: String },
    #[error("master {master} rejected this minion's key (it is in minions_rejected or another key is accepted for {id})")]
    Rejected { master: String, id: String },
    #[error("master {master} is full (max_minions)")]
    Full { master: String },
    #[error("master {master} did not acknowledge the events: {reply}")]
    NotAcknowledged { master: String, reply: String },
    #[error("crypto: {0}")]
    Crypto(String),
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    AllMasters(Vec<TransportError>),
}

/// Why a batch was not delivered, as the spool needs to know it.
///
/// What Salt's request server (`salt/channel/server.py`, `ReqServerChannel.handle_message`,
/// and `master.py` `AESFuncs._minion_event`) answers a `_minion_event` with:
/// - an encrypted `None`: the events were fired on the master's bus (the acknowledgement);
/// - an encrypted other value (`{}` when `__verify_load` rejects the load): the master read
///   this load and declined it;
/// - a plain "Some exception handling minion payload" / "payload and load must be a dict" /
///   "Server-side exception...": the master's handler failed on this load;
/// - a plain "bad load": it could not decrypt or verify the envelope (session key rotated,
///   token, ttl) — about our session, not the batch, so not a refusal;
/// - nothing within `request_channel_timeout`, a closed connection, an auth problem: the
///   master is away or not usable; whether it processed the batch is unknown.
///
/// The first two cases are [`DeliveryError::Refused`], the rest [`DeliveryError::Unavailable`].
#[derive(Debug, Clone, thiserror::Error)]
pub enum DeliveryError {
    /// Every master that answered processed the batch and refused it.
    #[error("refused by the master: {reason}")]
    Refused { reason: String },
    /// No master took the batch (down, timed out, not authenticated yet, ...).
    #[error(transparent)]
    Unavailable(TransportError),
}

impl From<TransportError> for DeliveryError {
    fn from(e: TransportError) -> Self {
        if e.is_refusal() {
            DeliveryError::Refused {
                reason: e.to_string(),
            }
        } else {
            DeliveryError::Unavailable(e)
        }
    }
}

impl TransportError {
    /// A master processed the request and answered something else than the
    /// acknowledgement (with several masters: every one of them did).
    pub fn is_refusal(&self) -> bool {
        match self {
            TransportError::NotAcknowledged { .. } => true,
            TransportError::AllMasters(all) => {
                !all.is_empty() && all.iter().all(TransportError::is_refusal)
            }
            _ => false,
        }
    }
}

/// `master_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterType {
    /// One master, or several all receiving every event (multi-master).
    Str,
    /// One master at a time, moving on to the next when it is down.
    Failover,
}

/// The minion options the transport reads, with salt-minion's defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    pub master_type: MasterType,
    pub auth: AuthSettings,
    /// `auth_timeout` (5 s): deadline of one `_auth` request.
    pub auth_timeout: Duration,
    /// `request_channel_timeout` (60 s): deadline of one `_minion_event` request.
    pub request_timeout: Duration,
    /// `acceptance_wait_time` (10 s) and `acceptance_wait_time_max` (0 = same).
    pub acceptance_wait: Duration,
    pub acceptance_wait_max: Duration,
    /// `recon_default` (1000 ms) / `recon_max` (10000 ms): backoff for a master that is down.
    pub recon_default: Duration,
    pub recon_max: Duration,
    /// `master_alive_interval` (0 = off) with `master_failback`: how often a failed-over
    /// minion looks whether the first master is back.
    pub master_alive_interval: Duration,
    pub master_failback: bool,
    pub random_master: bool,
    /// `keysize` (2048) for a new key pair.
    pub keysize: usize,
}

fn num(opts: &MinionOpts, key: &str) -> Option<f64> {
    match opts.setting(key)? {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().parse().ok(),
        Json::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

fn secs(opts: &MinionOpts, key: &str, default: f64) -> Duration {
    let v = num(opts, key).unwrap_or(default);
    Duration::from_secs_f64(if v.is_finite() && v > 0.0 { v } else { 0.0 })
}

fn flag(opts: &MinionOpts, key: &str, default: bool) -> bool {
    match opts.setting(key) {
        Some(Json::Bool(b)) => *b,
        Some(Json::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Json::String(s)) => {
            matches!(s.to_ascii_lowercase().as_str(), "true" | "yes" | "on" | "1")
        }
        _ => default,
    }
}

fn text(opts: &MinionOpts, key: &str) -> Option<String> {
    match opts.setting(key)? {
        Json::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Json::Null | Json::Bool(false) => None,
        Json::String(_) => None,
        other => Some(other.to_string()),
    }
}

impl Settings {
    /// Read the options from the minion config, with salt-minion's defaults.
    pub fn from_opts(opts: &MinionOpts) -> Result<Self, TransportError> {
        let master_type = match text(opts, "master_type").as_deref() {
            None | Some("str") => MasterType::Str,
            Some("failover") => MasterType::Failover,
            Some("disable") => {
                return Err(TransportError::Config(
                    "master_type is 'disable': there is no master to send events to".into(),
                ))
            }
            Some(other) => {
                return Err(TransportError::Config(format!(
                    "master_type {other:?} is not supported by beacond (use str or failover)"
                )))
            }
        };
        let enc = text(opts, "encryption_algorithm").unwrap_or_else(|| "OAEP-SHA1".into());
        let sig = text(opts, "signing_algorithm").unwrap_or_else(|| "PKCS1v15-SHA1".into());
        let auth = AuthSettings {
            enc_algo: EncAlgo::parse(&enc)
                .map_err(|e| TransportError::Config(format!("encryption_algorithm: {e}")))?,
            sig_algo: SigAlgo::parse(&sig)
                .map_err(|e| TransportError::Config(format!("signing_algorithm: {e}")))?,
            master_finger: text(opts, "master_finger"),
            hash_type: text(opts, "hash_type")
                .unwrap_or_else(|| "sha256".into())
                .to_ascii_lowercase(),
        };
        if auth.master_finger.is_some() {
            crypto::pem_finger("", &auth.hash_type)
                .map_err(|e| TransportError::Config(format!("hash_type: {e}")))?;
        }
        let acceptance_wait = secs(opts, "acceptance_wait_time", 10.0);
        let mut acceptance_wait_max = secs(opts, "acceptance_wait_time_max", 0.0);
        if acceptance_wait_max < acceptance_wait {
            acceptance_wait_max = acceptance_wait;
        }
        let recon_default =
            Duration::from_millis(num(opts, "recon_default").unwrap_or(1000.0).max(10.0) as u64);
        let recon_max =
            Duration::from_millis(num(opts, "recon_max").unwrap_or(10000.0).max(10.0) as u64)
                .max(recon_default);
        let keysize = num(opts, "keysize").unwrap_or(2048.0) as usize;
        Ok(Settings {
            master_type,
            auth,
            auth_timeout: secs(opts, "auth_timeout", 5.0).max(Duration::from_millis(100)),
            request_timeout: secs(opts, "request_channel_timeout", 60.0)
                .max(Duration::from_millis(100)),
            acceptance_wait,
            acceptance_wait_max,
            recon_default,
            recon_max,
            master_alive_interval: secs(opts, "master_alive_interval", 0.0),
            master_failback: flag(opts, "master_failback", false),
            random_master: flag(opts, "random_master", false),
            keysize,
        })
    }
}

/// `host:port` for a `master` entry: `host`, `host:port`, `[v6]:port`, or a bare IPv6
/// address (then `master_port`).
pub fn master_addr(master: &str, default_port: u16) -> String {
    let m = master.trim();
    if let Some(rest) = m.strip_prefix('[') {
        if let Some((host, tail)) = rest.split_once(']') {
            let port = tail
                .strip_prefix(':')
                .and_then(|p| p.parse::<u16>().ok())
                .unwrap_or(default_port);
            return format!("[{host}]:{port}");
        }
    }
    match m.matches(':').count() {
        0 => format!("{m}:{default_port}"),
        1 => match m.split_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => format!("{h}:{p}"),
            _ => format!("{m}:{default_port}"),
        },
        _ => format!("[{m}]:{default_port}"),
    }
}

/// Every configured master, and the policy to send to them.
pub struct Masters {
    ident: Identity,
    settings: Settings,
    links: Vec<MasterLink>,
    /// `failover`: the master in use.
    active: usize,
    last_failback_check: Instant,
}

impl std::fmt::Debug for Masters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masters")
            .field("id", &self.ident.id)
            .field(
                "masters",
                &self.links.iter().map(|l| l.name()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Masters {
    /// Load (or create) the minion keys and set up one link per master. Does not touch the
    /// network.
    pub fn new(opts: &MinionOpts) -> Result<Self, TransportError> {
        let settings = Settings::from_opts(opts)?;
        if opts.master.is_empty() {
            return Err(TransportError::Config("no master configured".into()));
        }
        if opts.id.is_empty() {
            return Err(TransportError::Config("the minion id is empty".into()));
        }
        let ident = Identity::load_or_create(&opts.id, &opts.pki_dir, settings.keysize)?;
        let mut names = opts.master.clone();
        if settings.random_master && names.len() > 1 {
            shuffle(&mut names);
        }
        let links = names
            .iter()
            .map(|m| MasterLink::new(m, &master_addr(m, opts.master_port), &settings))
            .collect();
        Ok(Masters {
            ident,
            settings,
            links,
            active: 0,
            last_failback_check: Instant::now(),
        })
    }

    /// The options in force.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The minion id.
    pub fn id(&self) -> &str {
        &self.ident.id
    }

    /// Deliver one batch as a single `_minion_event` load. `Ok` only once the master (every
    /// reachable master, at least one, in multi-master mode; the active one with
    /// `master_type: failover`) returned a valid encrypted acknowledgement. Authentication,
    /// re-authentication and reconnects happen inside, each request with its deadline, so
    /// this returns an error instead of hanging when no master can take the events.
    pub async fn deliver(&mut self, batch: &[Event]) -> Result<(), TransportError> {
        if batch.is_empty() {
            return Ok(());
        }
        let events = wire::events_value(batch);
        match self.settings.master_type {
            MasterType::Failover => self.deliver_failover(&events).await,
            MasterType::Str => self.deliver_all(&events).await,
        }
    }

    async fn deliver_all(&mut self, events: &rmpv::Value) -> Result<(), TransportError> {
        let mut errors = Vec::new();
        let mut delivered = 0usize;
        for link in &mut self.links {
            match link.deliver(&self.ident, &self.settings, events).await {
                Ok(()) => delivered += 1,
                Err(e) => errors.push(e),
            }
        }
        if delivered > 0 {
            if !errors.is_empty() {
                tracing::debug!(
                    delivered,
                    missed = errors.len(),
                    "events delivered to some masters only"
                );
            }
            return Ok(());
        }
        Err(one_or_all(errors))
    }

    async fn deliver_failover(&mut self, events: &rmpv::Value) -> Result<(), TransportError> {
        let n = self.links.len();
        let mut start = self.active;
        if self.settings.master_failback
            && self.active != 0
            && !self.settings.master_alive_interval.is_zero()
            && self.last_failback_check.elapsed() >= self.settings.master_alive_interval
        {
            self.last_failback_check = Instant::now();
            start = 0;
            self.links[0].clear_backoff();
        }
        let mut errors = Vec::new();
        for k in 0..n {
            let idx = (start + k) % n;
            match self.links[idx]
                .deliver(&self.ident, &self.settings, events)
                .await
            {
                Ok(()) => {
                    if idx != self.active {
                        info!(
                            from = self.links[self.active].name(),
                            to = self.links[idx].name(),
                            "failed over to master {}",
                            self.links[idx].name()
                        );
                        self.active = idx;
                    }
                    return Ok(());
                }
                Err(e) => {
                    if idx == self.active && n > 1 {
                        warn!(master = self.links[idx].name(), error = %e, "master unusable; trying the next one");
                    }
                    errors.push(e)
                }
            }
        }
        Err(one_or_all(errors))
    }

    /// Sign in to every master that is not backing off (startup check, tests). `Ok` when
    /// at least one master accepted us.
    pub async fn authenticate(&mut self) -> Result<(), TransportError> {
        let mut errors = Vec::new();
        let mut ok = false;
        for link in &mut self.links {
            match link.ensure_auth(&self.ident, &self.settings).await {
                Ok(()) => ok = true,
                Err(e) => errors.push(e),
            }
            if ok && self.settings.master_type == MasterType::Failover {
                break;
            }
        }
        if ok {
            Ok(())
        } else {
            Err(one_or_all(errors))
        }
    }

    /// When the next attempt can do anything: `None` if a master is ready now, else the
    /// earliest end of a backoff (a master down, a key waiting for acceptance).
    pub fn next_attempt(&self) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        for l in &self.links {
            match l.retry_at() {
                None => return None,
                Some(t) if t <= Instant::now() => return None,
                Some(t) => earliest = Some(earliest.map_or(t, |e| e.min(t))),
            }
        }
        earliest
    }

    /// Each master's link state, for status output and tests.
    pub fn states(&self) -> Vec<(String, channel::LinkState)> {
        self.links
            .iter()
            .map(|l| (l.name().to_owned(), l.state()))
            .collect()
    }
}

fn one_or_all(mut errors: Vec<TransportError>) -> TransportError {
    if errors.len() == 1 {
        errors.remove(0)
    } else {
        TransportError::AllMasters(errors)
    }
}

/// Fisher–Yates with the OS RNG (`random_master`).
fn shuffle<T>(v: &mut [T]) {
    use rand_core::{OsRng, RngCore};
    for i in (1..v.len()).rev() {
        let j = (OsRng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_needs_an_answer_from_every_master() {
        let refused = TransportError::NotAcknowledged {
            master: "a".into(),
            reply: "{}".into(),
        };
        let down = TransportError::Unreachable {
            master: "b".into(),
            reason: "refused".into(),
        };
        let timeout = TransportError::Timeout {
            master: "c".into(),
            timeout: Duration::from_secs(1),
        };
        assert!(refused.is_refusal());
        assert!(!down.is_refusal());
        assert!(!timeout.is_refusal());
        assert!(matches!(
            DeliveryError::from(refused.clone()),
            DeliveryError::Refused { .. }
        ));
        assert!(matches!(
            DeliveryError::from(timeout),
            DeliveryError::Unavailable(_)
        ));
        assert!(TransportError::AllMasters(vec![refused.clone(), refused.clone()]).is_refusal());
        assert!(!TransportError::AllMasters(vec![refused, down]).is_refusal());
        assert!(!TransportError::AllMasters(vec![]).is_refusal());
    }

    #[test]
    fn master_addresses() {
        assert_eq!(master_addr("salt", 4506), "salt:4506");
        assert_eq!(master_addr("10.0.0.1:5506", 4506), "10.0.0.1:5506");
        assert_eq!(master_addr("::1", 4506), "[::1]:4506");
        assert_eq!(master_addr("[::1]:7", 4506), "[::1]:7");
        assert_eq!(master_addr("[fe80::1]", 4506), "[fe80::1]:4506");
    }

    fn opts(settings: serde_json::Value) -> MinionOpts {
        MinionOpts {
            id: "m1".into(),
            cachedir: "/nonexistent".into(),
            pki_dir: "/nonexistent".into(),
            master: vec!["salt".into()],
            master_port: 4506,
            settings: settings.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn settings_defaults_follow_salt() {
        let s = Settings::from_opts(&opts(serde_json::json!({}))).expect("settings");
        assert_eq!(s.master_type, MasterType::Str);
        assert_eq!(s.auth_timeout, Duration::from_secs(5));
        assert_eq!(s.request_timeout, Duration::from_secs(60));
        assert_eq!(s.acceptance_wait, Duration::from_secs(10));
        assert_eq!(s.acceptance_wait_max, Duration::from_secs(10));
        assert_eq!(s.keysize, 2048);
        assert_eq!(s.auth.enc_algo, EncAlgo::OaepSha1);
        let s = Settings::from_opts(&opts(serde_json::json!({
            "master_type": "failover", "acceptance_wait_time": 0.5,
            "acceptance_wait_time_max": 4, "signing_algorithm": "PKCS1v15-SHA224"
        })))
        .expect("settings");
        assert_eq!(s.master_type, MasterType::Failover);
        assert_eq!(s.acceptance_wait, Duration::from_millis(500));
        assert_eq!(s.acceptance_wait_max, Duration::from_secs(4));
        assert_eq!(s.auth.sig_algo, SigAlgo::Pkcs1v15Sha224);
        assert!(Settings::from_opts(&opts(serde_json::json!({"master_type": "func"}))).is_err());
        assert!(
            Settings::from_opts(&opts(serde_json::json!({"encryption_algorithm": "RSA"}))).is_err()
        );
    }
}
