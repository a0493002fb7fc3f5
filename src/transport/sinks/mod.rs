//! Sinks beside the master: log aggregators (Splunk, ELK, syslog) configured under
//! `beacond_sinks:`. Each sink runs the same spool pipeline as the master
//! ([`crate::spool::pipeline`]) with its own spool in `<cachedir>/beacond/sinks/<name>/`, so a
//! slow or dead sink only grows its own backlog: the master and the other sinks go on.
//!
//! beacons → [`fan_out`] → master pipeline, and every sink whose `tags` match → its pipeline →
//! its [`Deliver`] (`tcp_json`, `splunk_hec`, `syslog`).
//!
//! Every sink sees the same record for an event ([`fields`]): the tag, the minion id, the
//! beacon name and the event data as top-level fields, `_stamp` (UTC) as the time.

pub mod hec;
pub mod stream;
pub mod syslog;
pub mod tcp_json;

use crate::config::sinks::{SinkConfig, SinkKind};
use crate::config::MinionOpts;
use crate::event::Event;
use crate::spool::pipeline::{self, Deliver, SinkLink};
use crate::spool::stats::Stats;
use crate::spool::store::Spool;
use crate::transport::salt::DeliveryError;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Queue between the fan-out and one sink's pipeline (which only appends to its spool).
const SINK_QUEUE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("sink '{sink}': {message}")]
    Setup { sink: String, message: String },
}

/// `<cachedir>/beacond/sinks/<name>`.
pub fn spool_dir(opts: &MinionOpts, name: &str) -> PathBuf {
    opts.cachedir.join("beacond").join("sinks").join(name)
}

/// The record every sink sends for an event: `tag`, `minion_id`, `beacon`, then the event's
/// data (with `id`, `_stamp`, `beacond_uid`) as top-level fields.
pub fn fields(ev: &Event) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("tag".into(), Value::String(ev.tag.clone()));
    let id = ev.data.get("id").cloned().unwrap_or(Value::Null);
    m.insert("minion_id".into(), id);
    m.insert("beacon".into(), Value::String(ev.beacon.clone()));
    for (k, v) in &ev.data {
        m.entry(k.clone()).or_insert_with(|| v.clone());
    }
    m
}

/// `_stamp` (`YYYY-MM-DDTHH:MM:SS[.ffffff]`, UTC) as seconds since the epoch.
pub fn stamp_epoch(stamp: &str) -> Option<f64> {
    let b = stamp.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| stamp.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let frac = match stamp.get(19..) {
        Some(f) if f.starts_with('.') => format!("0{f}").parse::<f64>().ok()?,
        Some("") | None => 0.0,
        _ => return None,
    };
    let days = crate::calendar::days_from_civil(y, mo, d);
    Some((days * 86_400 + h * 3600 + mi * 60 + s) as f64 + frac)
}

/// The stamp of an event, if it has a valid one.
pub fn event_stamp(ev: &Event) -> Option<&str> {
    ev.data
        .get("_stamp")
        .and_then(Value::as_str)
        .filter(|s| stamp_epoch(s).is_some())
}

/// A receiver that did not take a batch (down, slow, answered an error): retrying can help.
pub fn unavailable(msg: String) -> DeliveryError {
    DeliveryError::Unavailable(crate::transport::salt::TransportError::Sink(msg))
}

/// Retry pacing after a failure: 0.5 s doubling to 10 s, reset by a success.
#[derive(Debug, Default)]
pub struct Backoff {
    delay: Duration,
    next: Option<Instant>,
}

impl Backoff {
    pub fn failed(&mut self) {
        self.delay = (self.delay * 2).clamp(Duration::from_millis(500), Duration::from_secs(10));
        self.next = Some(Instant::now() + self.delay);
    }
    pub fn ok(&mut self) {
        self.delay = Duration::ZERO;
        self.next = None;
    }
    pub fn next(&self) -> Option<Instant> {
        self.next
    }
    /// Pace the next attempt by the outcome of this one, which is passed through.
    pub fn track<T, E>(&mut self, outcome: Result<T, E>) -> Result<T, E> {
        match &outcome {
            Ok(_) => self.ok(),
            Err(_) => self.failed(),
        }
        outcome
    }
}

/// One running sink: its filter, its queue, its pipeline task.
pub struct Running {
    pub config: SinkConfig,
    tx: mpsc::Sender<Event>,
    pub task: JoinHandle<Spool>,
    pub stats: Arc<Stats>,
}

/// The pipeline options of a sink: the master's, with the sink's own bound and replay pace,
/// and no status events of its own.
fn options(base: &crate::spool::Options, c: &SinkConfig) -> crate::spool::Options {
    let mut o = base.clone();
    if let Some(b) = c.spool_max_bytes {
        o.max_bytes = b;
    }
    if let Some(b) = c.batch {
        o.replay_batch = b;
    }
    if let Some(r) = c.rate {
        o.replay_rate = r;
    }
    o.status_interval = Duration::ZERO;
    o
}

/// Build every sink's client (config problems that need the file system, e.g. a CA file,
/// show here) without starting anything.
pub fn check(minion: &MinionOpts, sinks: &[SinkConfig]) -> Vec<SinkError> {
    sinks
        .iter()
        .filter_map(|c| build(minion, c).err())
        .collect()
}

enum Client {
    Tcp(tcp_json::TcpJson),
    Hec(hec::Hec),
    Syslog(syslog::Syslog),
}

fn build(minion: &MinionOpts, c: &SinkConfig) -> Result<Client, SinkError> {
    let setup = |message: String| SinkError::Setup {
        sink: c.name.clone(),
        message,
    };
    Ok(match &c.kind {
        SinkKind::TcpJson { address, tls } => {
            Client::Tcp(tcp_json::TcpJson::new(c, address, tls.as_ref()).map_err(setup)?)
        }
        SinkKind::SplunkHec { .. } => Client::Hec(hec::Hec::new(minion, c).map_err(setup)?),
        SinkKind::Syslog { .. } => Client::Syslog(syslog::Syslog::new(minion, c).map_err(setup)?),
    })
}

/// Open every sink's spool and start its pipeline. `report_to` is the master pipeline's
/// queue: where a sink's `beacond/dropped` reports go as well.
pub fn start(
    minion: &MinionOpts,
    base: &crate::spool::Options,
    sinks: &[SinkConfig],
    report_to: &mpsc::Sender<Event>,
) -> Result<Vec<Running>, SinkError> {
    let mut out = Vec::new();
    for c in sinks {
        let client = build(minion, c)?;
        let opts = options(base, c);
        let dir = spool_dir(minion, &c.name);
        let spool = Spool::open(&dir, opts.max_bytes).map_err(|e| SinkError::Setup {
            sink: c.name.clone(),
            message: e.to_string(),
        })?;
        let (tx, rx) = mpsc::channel(SINK_QUEUE);
        let stats = Arc::new(Stats::default());
        let link = SinkLink {
            name: c.name.clone(),
            report_to: report_to.clone(),
        };
        let id = minion.id.clone();
        let st = stats.clone();
        let task = match client {
            Client::Tcp(d) => spawn(id, opts, spool, d, rx, st, link),
            Client::Hec(d) => spawn(id, opts, spool, d, rx, st, link),
            Client::Syslog(d) => spawn(id, opts, spool, d, rx, st, link),
        };
        tracing::info!(sink = %c.name, kind = c.type_name(), spool = %dir.display(), "sink started");
        out.push(Running {
            config: c.clone(),
            tx,
            task,
            stats,
        });
    }
    Ok(out)
}

fn spawn<D: Deliver>(
    id: String,
    opts: crate::spool::Options,
    spool: Spool,
    d: D,
    rx: mpsc::Receiver<Event>,
    stats: Arc<Stats>,
    link: SinkLink,
) -> JoinHandle<Spool> {
    tokio::spawn(pipeline::run_linked(
        id,
        opts,
        spool,
        d,
        rx,
        stats,
        Some(link),
    ))
}

/// Hand every event to each sink whose tags match, then to the master. Every queue is drained
/// by a pipeline that only appends to its own spool, so waiting on one is short.
pub async fn fan_out(
    mut rx: mpsc::Receiver<Event>,
    master: mpsc::Sender<Event>,
    sinks: Vec<(SinkConfig, mpsc::Sender<Event>)>,
) {
    let mut gone = vec![false; sinks.len()];
    while let Some(ev) = rx.recv().await {
        for (i, (c, tx)) in sinks.iter().enumerate() {
            if gone[i] || !c.wants(&ev.tag) {
                continue;
            }
            if tx.send(ev.clone()).await.is_err() {
                tracing::error!(sink = %c.name, "the sink's pipeline ended; it gets no more events");
                gone[i] = true;
            }
        }
        if master.send(ev).await.is_err() {
            tracing::error!("the master pipeline ended");
            break;
        }
    }
}

impl Running {
    /// The fan-out's side of this sink.
    pub fn feed(&self) -> (SinkConfig, mpsc::Sender<Event>) {
        (self.config.clone(), self.tx.clone())
    }

    /// Let go of the queue (so the pipeline can finish) and keep the task to wait for.
    pub fn into_task(self) -> (String, JoinHandle<Spool>) {
        (self.config.name, self.task)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_convert_to_epoch_seconds() {
        // date -u -d 2020-10-28T11:49:27 +%s
        assert_eq!(stamp_epoch("2020-10-28T11:49:27"), Some(1_603_885_767.0));
        let f = stamp_epoch("2020-10-28T11:49:27.177666").unwrap_or_default();
        assert!((f - 1_603_885_767.177_666).abs() < 1e-6);
        assert_eq!(stamp_epoch("yesterday"), None);
        assert_eq!(stamp_epoch("2020-10-28T11:49:27Z"), None);
    }

    #[test]
    fn the_record_carries_tag_id_beacon_and_data() {
        let mut d = Map::new();
        d.insert("tag".into(), "1234".into());
        d.insert("cmdline".into(), "id".into());
        let ev = Event::from_beacon("web1", "sh", d);
        let f = fields(&ev);
        assert_eq!(f["tag"], "salt/beacon/web1/sh/1234");
        assert_eq!(f["minion_id"], "web1");
        assert_eq!(f["beacon"], "sh");
        assert_eq!(f["cmdline"], "id");
        assert!(f.contains_key("_stamp"));
    }
}
