//! One master: its socket, session credentials, link state and backoff.
//!
//! A link owns at most one [`ReqSocket`]. Any failed or timed-out request drops it (a REQ
//! socket cannot be reused after a lost reply) and the next request connects anew, so a
//! reconnect never leaves a socket or task behind. State changes are logged once each:
//! authenticated, waiting for key acceptance, master down, back, re-authenticated, refused.

use super::auth::{self, Creds, Identity, SignIn};
use super::crypto::{self, CryptoError};
use super::wire;
use super::zmtp::{ReqSocket, ZmtpError};
use super::{Settings, TransportError};
use rmpv::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};

/// What the link is doing, as reported in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Not contacted yet.
    New,
    /// Authenticated; the last request was acknowledged.
    Up,
    /// Our key waits for acceptance on the master.
    Pending,
    /// Unreachable or not answering.
    Down,
    /// We refuse it (key changed, fingerprint, bad signature) or it refuses us.
    Refused,
}

/// One configured master.
pub struct MasterLink {
    name: String,
    addr: String,
    sock: Option<ReqSocket>,
    creds: Option<Creds>,
    state: LinkState,
    ever_authenticated: bool,
    retry_at: Option<Instant>,
    last_error: Option<TransportError>,
    accept_wait: Duration,
    down_wait: Duration,
}

impl MasterLink {
    pub fn new(name: &str, addr: &str, settings: &Settings) -> Self {
        MasterLink {
            name: name.to_owned(),
            addr: addr.to_owned(),
            sock: None,
            creds: None,
            state: LinkState::New,
            ever_authenticated: false,
            retry_at: None,
            last_error: None,
            accept_wait: settings.acceptance_wait,
            down_wait: settings.recon_default,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn state(&self) -> LinkState {
        self.state
    }

    /// End of the current backoff, if any.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Forget the backoff (failback probing).
    pub fn clear_backoff(&mut self) {
        self.retry_at = None;
    }

    fn backing_off(&self) -> Option<TransportError> {
        match self.retry_at {
            Some(t) if Instant::now() < t => {
                Some(
                    self.last_error
                        .clone()
                        .unwrap_or_else(|| TransportError::Unreachable {
                            master: self.name.clone(),
                            reason: "backing off".into(),
                        }),
                )
            }
            _ => None,
        }
    }

    /// Make sure we hold session credentials (sign in if not).
    pub async fn ensure_auth(
        &mut self,
        ident: &Identity,
        settings: &Settings,
    ) -> Result<(), TransportError> {
        if self.creds.is_some() {
            return Ok(());
        }
        if let Some(e) = self.backing_off() {
            return Err(e);
        }
        let r = self.authenticate(ident, settings).await;
        match &r {
            Ok(()) => self.on_success(),
            Err(e) => self.on_error(e, settings),
        }
        r
    }

    /// Send `events` in one `_minion_event` and wait for the acknowledgement.
    pub async fn deliver(
        &mut self,
        ident: &Identity,
        settings: &Settings,
        events: &Value,
    ) -> Result<(), TransportError> {
        if let Some(e) = self.backing_off() {
            return Err(e);
        }
        let r = self.try_deliver(ident, settings, events).await;
        match &r {
            Ok(()) => self.on_success(),
            Err(e) => self.on_error(e, settings),
        }
        r
    }

    async fn try_deliver(
        &mut self,
        ident: &Identity,
        settings: &Settings,
        events: &Value,
    ) -> Result<(), TransportError> {
        if self.creds.is_none() {
            self.authenticate(ident, settings).await?;
        }
        // At most one re-authentication per delivery: the master answers a load it cannot
        // decrypt (session key rotated, master restarted with new keys, our key deleted)
        // with a clear "bad load" instead of an encrypted reply.
        for attempt in 0..2 {
            let Some(creds) = self.creds.clone() else {
                return Err(self.proto("no session credentials".into()));
            };
            let nonce = crypto::uuid4_hex();
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            let load = wire::minion_event_load(&ident.id, &ident.tok, events.clone(), &nonce, ts);
            let crypticle = if creds.version >= 3 {
                &creds.session
            } else {
                &creds.aes
            };
            let envelope = wire::aes_envelope(
                &ident.id,
                crypticle.dumps(&load, None),
                settings.auth.enc_algo.name(),
                settings.auth.sig_algo.name(),
                creds.version,
            );
            let deadline = Instant::now() + settings.request_timeout;
            let reply = self
                .request(&wire::pack(&envelope), deadline, settings.request_timeout)
                .await?;
            let outer = wire::unpack(&reply).map_err(|e| self.proto(format!("reply: {e}")))?;
            // Salt packs the encrypted reply as a raw msgpack str; a master that could not
            // decrypt our load answers with a plain text such as "bad load" instead.
            let Some(raw) = wire::bytes_of(&outer) else {
                return Err(self.proto(format!("unexpected reply {}", wire::to_json(&outer))));
            };
            let complaint = match crypticle.loads(raw, Some(&nonce)) {
                Ok(Value::Nil) => return Ok(()),
                Ok(other) => {
                    return Err(TransportError::NotAcknowledged {
                        master: self.name.clone(),
                        reply: wire::to_json(&other).to_string(),
                    })
                }
                Err(CryptoError::NonceMismatch) => {
                    // Never accept a reply that is not for this request.
                    self.sock = None;
                    return Err(TransportError::BadSignature {
                        master: self.name.clone(),
                        what: "reply nonce".into(),
                    });
                }
                Err(e) => match std::str::from_utf8(raw) {
                    // Not "bad load": the master's handler failed on this load (see
                    // `DeliveryError`); re-authenticating cannot change that.
                    Ok(text) if !text.starts_with("bad load") => {
                        return Err(TransportError::NotAcknowledged {
                            master: self.name.clone(),
                            reply: format!("{:?}", text.chars().take(200).collect::<String>()),
                        })
                    }
                    Ok(text) if text.len() < 200 => format!("{text:?}"),
                    _ => e.to_string(),
                },
            };
            if attempt == 0 {
                info!(
                    master = %self.name,
                    reply = %complaint,
                    "master no longer accepts our session key; re-authenticating"
                );
                self.creds = None;
                self.authenticate(ident, settings).await?;
                continue;
            }
            // Still "bad load" with a fresh session: the envelope, not this batch (a clock
            // beyond the master's request_server_ttl, a token it does not take).
            return Err(self.proto(format!(
                "the master answers {complaint} even after re-authentication"
            )));
        }
        Err(self.proto("no acknowledgement after re-authentication".into()))
    }

    /// One `_auth` exchange.
    async fn authenticate(
        &mut self,
        ident: &Identity,
        settings: &Settings,
    ) -> Result<(), TransportError> {
        let cached = auth::cached_master_pub(ident)?;
        let req = auth::sign_in_request(ident, &settings.auth, cached.as_ref().map(|(_, k)| k))?;
        let deadline = Instant::now() + settings.auth_timeout;
        let t0 = std::time::Instant::now();
        let reply = self
            .request(&req.packed, deadline, settings.auth_timeout)
            .await?;
        let outcome = auth::handle_sign_in_reply(
            ident,
            &settings.auth,
            &self.name,
            &reply,
            &req.nonce,
            req.token.as_deref(),
            cached.as_ref(),
        );
        if outcome.is_err() {
            // Whatever the master said, do not keep talking on this connection.
            self.sock = None;
        }
        match outcome? {
            SignIn::Accepted(creds) => {
                debug!(master = %self.name, version = creds.version, elapsed_ms = t0.elapsed().as_millis() as u64, "signed in");
                self.creds = Some(creds);
                if self.ever_authenticated {
                    info!(master = %self.name, "re-authenticated with master {}", self.name);
                } else {
                    info!(master = %self.name, id = %ident.id, "authenticated with master {}", self.name);
                }
                self.ever_authenticated = true;
                self.state = LinkState::Up;
                Ok(())
            }
            SignIn::Pending => Err(TransportError::Pending {
                master: self.name.clone(),
                id: ident.id.clone(),
            }),
            SignIn::Rejected => Err(TransportError::Rejected {
                master: self.name.clone(),
                id: ident.id.clone(),
            }),
            SignIn::Full => Err(TransportError::Full {
                master: self.name.clone(),
            }),
        }
    }

    /// One request/reply, connecting first if needed. A connection that was idle may have
    /// been closed by a restarted master: if it fails before any reply, try once more on a
    /// fresh one. Any failure drops the socket.
    async fn request(
        &mut self,
        body: &[u8],
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        for fresh_retry in [false, true] {
            let fresh = self.sock.is_none();
            if fresh {
                let sock = ReqSocket::connect(&self.addr, deadline)
                    .await
                    .map_err(|e| self.wire_error(e, timeout))?;
                self.sock = Some(sock);
            }
            let Some(sock) = self.sock.as_mut() else {
                continue;
            };
            match sock.request(body, deadline).await {
                Ok(r) => return Ok(r),
                Err(e) => {
                    self.sock = None;
                    let stale = !fresh && !fresh_retry && matches!(e, ZmtpError::Io(_));
                    if stale && Instant::now() < deadline {
                        debug!(master = %self.name, error = %e, "connection was closed; reconnecting");
                        continue;
                    }
                    return Err(self.wire_error(e, timeout));
                }
            }
        }
        Err(TransportError::Unreachable {
            master: self.name.clone(),
            reason: "connection lost".into(),
        })
    }

    fn wire_error(&self, e: ZmtpError, timeout: Duration) -> TransportError {
        match e {
            ZmtpError::Timeout => TransportError::Timeout {
                master: self.name.clone(),
                timeout,
            },
            ZmtpError::Io(e) => TransportError::Unreachable {
                master: self.name.clone(),
                reason: e.to_string(),
            },
            ZmtpError::Resolve(a) => TransportError::Unreachable {
                master: self.name.clone(),
                reason: format!("cannot resolve {a}"),
            },
            other => self.proto(other.to_string()),
        }
    }

    fn proto(&self, msg: String) -> TransportError {
        TransportError::Protocol {
            master: self.name.clone(),
            msg,
        }
    }

    fn on_success(&mut self) {
        if self.state != LinkState::Up {
            // authenticate() logs (re-)authentication; this is a master coming back with
            // the session still valid.
            info!(master = %self.name, "master {} is reachable again", self.name);
        }
        self.state = LinkState::Up;
        self.retry_at = None;
        self.last_error = None;
        self.down_wait = Duration::ZERO;
    }

    fn on_error(&mut self, e: &TransportError, settings: &Settings) {
        let now = Instant::now();
        let (state, wait) = match e {
            TransportError::Pending { .. } => {
                let w = self.accept_wait;
                self.accept_wait = (self.accept_wait * 2).min(settings.acceptance_wait_max);
                (LinkState::Pending, w)
            }
            TransportError::Rejected { .. } | TransportError::Full { .. } => {
                self.creds = None;
                (LinkState::Refused, settings.acceptance_wait_max)
            }
            TransportError::MasterKeyChanged { .. }
            | TransportError::FingerMismatch { .. }
            | TransportError::BadSignature { .. }
            | TransportError::Refused { .. }
            | TransportError::Key { .. }
            | TransportError::Config(_) => {
                self.creds = None;
                (
                    LinkState::Refused,
                    settings.acceptance_wait_max.max(Duration::from_secs(60)),
                )
            }
            _ => {
                self.sock = None;
                self.down_wait = if self.down_wait.is_zero() {
                    settings.recon_default
                } else {
                    (self.down_wait * 2).min(settings.recon_max)
                };
                (LinkState::Down, self.down_wait)
            }
        };
        if state != LinkState::Pending {
            self.accept_wait = settings.acceptance_wait;
        }
        let changed = state != self.state
            || self.last_error.as_ref().map(std::mem::discriminant)
                != Some(std::mem::discriminant(e));
        if changed {
            match state {
                LinkState::Pending => warn!(
                    master = %self.name,
                    "waiting for master {} to accept this minion's key (on the master: salt-key -a {}); retrying in {:.1}s",
                    self.name,
                    match e { TransportError::Pending { id, .. } => id.as_str(), _ => "" },
                    wait.as_secs_f64()
                ),
                LinkState::Down => {
                    warn!(master = %self.name, error = %e, "master {} is down; retrying", self.name)
                }
                _ => error!(master = %self.name, error = %e, "{e}"),
            }
        }
        self.state = state;
        self.last_error = Some(e.clone());
        self.retry_at = Some(now + wait);
    }
}
