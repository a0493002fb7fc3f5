//! `type: tcp_json`: one JSON object per line over TCP, optionally TLS — what Splunk's TCP
//! input (with `INDEXED_EXTRACTIONS = json`) and Logstash's `tcp` input with the `json_lines`
//! codec read. A batch counts as delivered once the receiver's TCP stack acknowledged it
//! ([`super::stream`]).

use super::stream::{Conn, Tls};
use super::Backoff;
use crate::config::sinks::{SinkConfig, TlsConfig};
use crate::event::Event;
use crate::spool::pipeline::Deliver;
use crate::transport::salt::DeliveryError;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::time::Instant;

pub struct TcpJson {
    name: String,
    address: String,
    tls: Option<Tls>,
    conn: Option<Conn>,
    timeout: Duration,
    backoff: Backoff,
}

/// The batch as JSON lines.
pub fn encode(batch: &[Event]) -> Vec<u8> {
    let mut out = Vec::with_capacity(batch.len() * 256);
    for ev in batch {
        let v = serde_json::Value::Object(super::fields(ev));
        if serde_json::to_writer(&mut out, &v).is_ok() {
            out.push(b'\n');
        }
    }
    out
}

impl TcpJson {
    pub fn new(c: &SinkConfig, address: &str, tls: Option<&TlsConfig>) -> Result<TcpJson, String> {
        Ok(TcpJson {
            name: c.name.clone(),
            address: address.to_owned(),
            tls: tls.map(|t| Tls::new(t, address)).transpose()?,
            conn: None,
            timeout: c.timeout,
            backoff: Backoff::default(),
        })
    }

    async fn send(&mut self, batch: &[Event]) -> Result<(), String> {
        let buf = encode(batch);
        let tls = self.tls.as_ref();
        Conn::send_kept(&mut self.conn, &self.address, tls, self.timeout, &buf).await
    }
}

impl Deliver for TcpJson {
    fn deliver<'a>(
        &'a mut self,
        batch: &'a [Event],
    ) -> Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>> {
        Box::pin(async move {
            let r = self.send(batch).await;
            if r.is_err() {
                // Reconnect on the next attempt.
                self.conn = None;
            }
            let r = self.backoff.track(r);
            r.map_err(|e| {
                super::unavailable(format!("sink '{}': {}: {e}", self.name, self.address))
            })
        })
    }
    fn next_attempt(&self) -> Option<Instant> {
        self.backoff.next()
    }
}
