//! `type: syslog`: RFC 5424 messages over UDP, TCP (octet counting, RFC 6587), TLS (RFC 5425)
//! or a local socket (`/dev/log`, datagrams). The message is the same JSON record as
//! `tcp_json`; MSGID is the beacon name, HOSTNAME the minion id, TIMESTAMP the event's
//! `_stamp`. Over UDP and the local socket "delivered" means sent: those transports have no
//! acknowledgment at all; TCP/TLS wait for the receiver's TCP acknowledgment.

use super::stream::{Conn, Tls};
use super::Backoff;
use crate::config::sinks::{SinkConfig, SinkKind, SyslogTransport};
use crate::config::MinionOpts;
use crate::event::Event;
use crate::spool::pipeline::Deliver;
use crate::transport::salt::DeliveryError;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::net::{UdpSocket, UnixDatagram};
use tokio::time::Instant;

pub struct Syslog {
    name: String,
    transport: SyslogTransport,
    address: String,
    facility: u8,
    app_name: String,
    hostname: String,
    tls: Option<Tls>,
    conn: Option<Conn>,
    udp: Option<UdpSocket>,
    unix: Option<UnixDatagram>,
    timeout: Duration,
    backoff: Backoff,
}

/// Printable ASCII without spaces, at most `max` bytes, `-` when empty (RFC 5424 header fields).
fn header_field(s: &str, max: usize) -> String {
    let f: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if f.is_empty() {
        "-".into()
    } else {
        f
    }
}

/// Severity: errors 3; loss reports, failed states and failed logins (btmp) 4; the rest 6.
fn severity(ev: &Event) -> u8 {
    if ev.data.contains_key("error") {
        3
    } else if ev.is_loss_report()
        || ev.tag.ends_with("/beacond/dropped")
        || ev.tag.ends_with("/state_results/False")
        || ev.tag.contains("/btmp/")
    {
        4
    } else {
        6
    }
}

/// One RFC 5424 message.
pub fn format(ev: &Event, facility: u8, hostname: &str, app_name: &str) -> String {
    let pri = u16::from(facility) * 8 + u16::from(severity(ev));
    let ts = super::event_stamp(ev)
        .map(|s| format!("{s}Z"))
        .unwrap_or_else(|| "-".into());
    let msg = serde_json::Value::Object(super::fields(ev)).to_string();
    format!(
        "<{pri}>1 {ts} {} {} {} {} - {msg}",
        header_field(hostname, 255),
        header_field(app_name, 48),
        std::process::id(),
        header_field(&ev.beacon, 32),
    )
}

impl Syslog {
    pub fn new(minion: &MinionOpts, c: &SinkConfig) -> Result<Syslog, String> {
        let SinkKind::Syslog {
            transport,
            address,
            facility,
            app_name,
            tls,
        } = &c.kind
        else {
            return Err("not a syslog sink".into());
        };
        Ok(Syslog {
            name: c.name.clone(),
            transport: *transport,
            address: address.clone(),
            facility: *facility,
            app_name: app_name.clone(),
            hostname: minion.id.clone(),
            tls: tls.as_ref().map(|t| Tls::new(t, address)).transpose()?,
            conn: None,
            udp: None,
            unix: None,
            timeout: c.timeout,
            backoff: Backoff::default(),
        })
    }

    async fn send(&mut self, batch: &[Event]) -> Result<(), String> {
        let msgs = batch
            .iter()
            .map(|e| format(e, self.facility, &self.hostname, &self.app_name));
        match self.transport {
            SyslogTransport::Tcp | SyslogTransport::Tls => {
                let mut buf = Vec::new();
                for m in msgs {
                    buf.extend_from_slice(format!("{} ", m.len()).as_bytes());
                    buf.extend_from_slice(m.as_bytes());
                }
                let tls = self.tls.as_ref();
                Conn::send_kept(&mut self.conn, &self.address, tls, self.timeout, &buf).await
            }
            SyslogTransport::Udp => {
                if self.udp.is_none() {
                    let bind = if self.address.starts_with('[') {
                        "[::]:0"
                    } else {
                        "0.0.0.0:0"
                    };
                    let s = UdpSocket::bind(bind).await.map_err(|e| e.to_string())?;
                    s.connect(&self.address)
                        .await
                        .map_err(|e| format!("{}: {e}", self.address))?;
                    self.udp = Some(s);
                }
                let Some(s) = &self.udp else {
                    return Err("no socket".into());
                };
                for m in msgs {
                    s.send(m.as_bytes()).await.map_err(|e| e.to_string())?;
                }
                Ok(())
            }
            SyslogTransport::Unix => {
                if self.unix.is_none() {
                    let s = UnixDatagram::unbound().map_err(|e| e.to_string())?;
                    s.connect(&self.address)
                        .map_err(|e| format!("{}: {e}", self.address))?;
                    self.unix = Some(s);
                }
                let Some(s) = &self.unix else {
                    return Err("no socket".into());
                };
                for m in msgs {
                    tokio::time::timeout(self.timeout, s.send(m.as_bytes()))
                        .await
                        .map_err(|_| "send timed out".to_string())?
                        .map_err(|e| e.to_string())?;
                }
                Ok(())
            }
        }
    }
}

impl Deliver for Syslog {
    fn deliver<'a>(
        &'a mut self,
        batch: &'a [Event],
    ) -> Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>> {
        Box::pin(async move {
            let r = self.send(batch).await;
            if r.is_err() {
                // Reconnect on the next attempt.
                self.conn = None;
                self.udp = None;
                self.unix = None;
            }
            let r = self.backoff.track(r);
            r.map_err(|e| {
                super::unavailable(format!(
                    "sink '{}': syslog {}: {e}",
                    self.name, self.address
                ))
            })
        })
    }
    fn next_attempt(&self) -> Option<Instant> {
        self.backoff.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    #[test]
    fn messages_follow_rfc5424() {
        let mut d = Map::new();
        d.insert("tag".into(), "False".into());
        let mut ev = Event::from_beacon("web 1", "state_results", d);
        ev.data
            .insert("_stamp".into(), "2026-01-02T03:04:05.000006".into());
        let m = format(&ev, 4, "web 1", "beacond");
        let pid = std::process::id();
        assert!(
            m.starts_with(&format!(
                "<36>1 2026-01-02T03:04:05.000006Z web1 beacond {pid} state_results - {{"
            )),
            "{m}"
        );
        let json: serde_json::Value =
            serde_json::from_str(m.split_once(" - ").map(|x| x.1).unwrap_or_default())
                .unwrap_or_default();
        assert_eq!(json["tag"], "salt/beacon/web 1/state_results/False");
    }
}
