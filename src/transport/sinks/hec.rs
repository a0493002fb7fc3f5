//! `type: splunk_hec`: Splunk's HTTP Event Collector. One POST of concatenated event objects
//! per batch to `/services/collector/event` (`Authorization: Splunk <token>`); delivered when
//! HEC answers 200 with `{"code": 0}`. With `ack: True` (the token has indexer acknowledgment
//! on) the batch counts only once `/services/collector/ack` says its `ackId` is indexed.
//! ureq is blocking: each request runs on tokio's blocking pool.

use super::Backoff;
use crate::config::sinks::{SinkConfig, SinkKind};
use crate::config::MinionOpts;
use crate::event::Event;
use crate::spool::pipeline::Deliver;
use crate::transport::salt::DeliveryError;
use serde_json::{json, Map, Value};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::Instant;

/// Why a request failed: HEC read the batch and refused its data (resending the same batch
/// cannot help: the pipeline narrows it down and quarantines the bad event), or anything else
/// (down, busy, a wrong token: retried until it works).
enum Fail {
    Refused(String),
    Unavailable(String),
}

impl From<String> for Fail {
    fn from(s: String) -> Fail {
        Fail::Unavailable(s)
    }
}

impl From<&str> for Fail {
    fn from(s: &str) -> Fail {
        Fail::Unavailable(s.to_owned())
    }
}

/// HEC's error codes for data it will never take (docs: "HTTP Event Collector error codes"):
/// 5 no data, 6 invalid data format, 7 incorrect index, 12 event field is required,
/// 13 event field cannot be blank.
const DATA_ERRORS: [i64; 5] = [5, 6, 7, 12, 13];

pub struct Hec {
    name: String,
    agent: ureq::Agent,
    event_url: String,
    ack_url: Option<String>,
    auth: String,
    channel: String,
    host: String,
    source: String,
    sourcetype: String,
    index: Option<String>,
    timeout: Duration,
    backoff: Backoff,
}

/// `https://h:8088` → `https://h:8088/services/collector/event`; a URL with a path is kept.
fn endpoint(url: &str, path: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    if rest.trim_end_matches('/').contains('/') {
        url.to_owned()
    } else {
        format!("{}{path}", url.trim_end_matches('/'))
    }
}

fn channel_id() -> String {
    let mut b = [0u8; 16];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

impl Hec {
    pub fn new(minion: &MinionOpts, c: &SinkConfig) -> Result<Hec, String> {
        let SinkKind::SplunkHec {
            url,
            token,
            sourcetype,
            index,
            source,
            ack,
            tls,
        } = &c.kind
        else {
            return Err("not a splunk_hec sink".into());
        };
        let mut tls_builder =
            ureq::tls::TlsConfig::builder().provider(ureq::tls::TlsProvider::Rustls);
        if let Some(path) = &tls.ca_file {
            let pem =
                std::fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
                .filter_map(|i| match i {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(format!("ca_file {}: no certificate in it", path.display()));
            }
            tls_builder = tls_builder.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        if tls.server_name.is_some() {
            return Err(
                "server_name is not supported for splunk_hec (the URL's host is checked)".into(),
            );
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(c.timeout))
            .http_status_as_error(false)
            .tls_config(tls_builder.build())
            .build()
            .into();
        Ok(Hec {
            name: c.name.clone(),
            agent,
            event_url: endpoint(url, "/services/collector/event"),
            ack_url: ack.then(|| endpoint(url, "/services/collector/ack")),
            auth: format!("Splunk {token}"),
            channel: channel_id(),
            host: minion.id.clone(),
            source: source.clone(),
            sourcetype: sourcetype.clone(),
            index: index.clone(),
            timeout: c.timeout,
            backoff: Backoff::default(),
        })
    }

    /// HEC's event envelope: time from `_stamp`, host = minion id, the record as `event`, and
    /// tag / beacon / minion id as indexed `fields`.
    pub fn envelope(&self, ev: &Event) -> Value {
        let mut m = Map::new();
        if let Some(t) = super::event_stamp(ev).and_then(super::stamp_epoch) {
            m.insert("time".into(), json!(t));
        }
        m.insert("host".into(), json!(self.host));
        m.insert("source".into(), json!(self.source));
        m.insert("sourcetype".into(), json!(self.sourcetype));
        if let Some(i) = &self.index {
            m.insert("index".into(), json!(i));
        }
        m.insert("event".into(), Value::Object(super::fields(ev)));
        m.insert(
            "fields".into(),
            json!({"tag": ev.tag, "beacon": ev.beacon, "minion_id": ev.data.get("id")}),
        );
        Value::Object(m)
    }

    async fn send(&self, batch: &[Event]) -> Result<(), Fail> {
        let mut body = Vec::with_capacity(batch.len() * 320);
        for ev in batch {
            if serde_json::to_writer(&mut body, &self.envelope(ev)).is_ok() {
                body.push(b'\n');
            }
        }
        let reply = self.post(self.event_url.clone(), body).await?;
        let Some(ack_url) = &self.ack_url else {
            return Ok(());
        };
        let id = reply
            .get("ackId")
            .and_then(Value::as_u64)
            .ok_or("HEC gave no ackId (is indexer acknowledgment on for this token?)")?;
        // Poll the ack endpoint (HEC's protocol) until the batch is indexed.
        let deadline = Instant::now() + self.timeout * 6;
        let mut pause = Duration::from_millis(100);
        loop {
            let r = self
                .post(
                    ack_url.clone(),
                    serde_json::to_vec(&json!({"acks": [id]})).unwrap_or_default(),
                )
                .await?;
            if r["acks"][id.to_string()].as_bool() == Some(true) {
                return Ok(());
            }
            if Instant::now() + pause > deadline {
                return Err(format!("HEC did not acknowledge ackId {id} in time").into());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// POST and read HEC's JSON answer; anything but 200 with `code: 0` (or an ack answer)
    /// is a failure naming HEC's text.
    async fn post(&self, url: String, body: Vec<u8>) -> Result<Value, Fail> {
        let agent = self.agent.clone();
        let auth = self.auth.clone();
        let channel = self.channel.clone();
        let u = url.clone();
        let r = tokio::task::spawn_blocking(move || -> Result<(u16, String), String> {
            let mut resp = agent
                .post(&u)
                .header("Authorization", &auth)
                .header("X-Splunk-Request-Channel", &channel)
                .header("Content-Type", "application/json")
                .send(&body[..])
                .map_err(|e| format!("{u}: {e}"))?;
            let status = resp.status().as_u16();
            let text = resp
                .body_mut()
                .with_config()
                .limit(1 << 20)
                .read_to_string()
                .map_err(|e| format!("{u}: {e}"))?;
            Ok((status, text))
        })
        .await
        .map_err(|e| format!("HEC request task: {e}"))??;
        let (status, text) = r;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let code = v.get("code").and_then(Value::as_i64);
        if status == 200 && (code == Some(0) || v.get("acks").is_some()) {
            return Ok(v);
        }
        let what = v
            .get("text")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| text.chars().take(200).collect());
        let msg = format!(
            "{url}: HTTP {status}: {what} (code {})",
            code.map_or("-".into(), |c| c.to_string())
        );
        if status == 400 && code.is_some_and(|c| DATA_ERRORS.contains(&c)) {
            Err(Fail::Refused(msg))
        } else {
            Err(Fail::Unavailable(msg))
        }
    }
}

impl Deliver for Hec {
    fn deliver<'a>(
        &'a mut self,
        batch: &'a [Event],
    ) -> Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>> {
        Box::pin(async move {
            let r = self.send(batch).await;
            self.backoff.track(r).map_err(|e| match e {
                Fail::Refused(m) => DeliveryError::Refused {
                    reason: format!("sink '{}': {m}", self.name),
                },
                Fail::Unavailable(m) => super::unavailable(format!("sink '{}': {m}", self.name)),
            })
        })
    }
    fn next_attempt(&self) -> Option<Instant> {
        self.backoff.next()
    }
}

#[cfg(test)]
mod tests {
    use super::endpoint;

    #[test]
    fn the_event_path_is_added_to_a_bare_url() {
        assert_eq!(
            endpoint("https://splunk:8088", "/services/collector/event"),
            "https://splunk:8088/services/collector/event"
        );
        assert_eq!(
            endpoint("https://splunk:8088/", "/services/collector/event"),
            "https://splunk:8088/services/collector/event"
        );
        assert_eq!(
            endpoint("http://h:1/custom/path", "/services/collector/event"),
            "http://h:1/custom/path"
        );
    }
}
