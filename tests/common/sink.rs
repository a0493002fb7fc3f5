//! A test stand-in for the Salt transport behind the pipeline's `Deliver` seam: it records
//! what it is given and can be "down". (The real transport is exercised against a real
//! salt-master in `reliability_faults.rs`; here the pipeline's own logic is under test.)
#![allow(dead_code)]

use beacond::event::Event;
use beacond::spool::pipeline::{Deliver, DeliveryError};
use beacond::transport::salt::TransportError;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Which events a [`Sink`] refuses.
pub type Refuse = Arc<dyn Fn(&Event) -> bool + Send + Sync>;

#[derive(Default)]
pub struct Record {
    /// Every delivered batch: (when, its events' tags and uids).
    pub batches: Vec<(Instant, Vec<(String, String)>)>,
    /// Events kept whole, when asked to (`keep`).
    pub events: Vec<Event>,
}

#[derive(Clone)]
pub struct Sink {
    pub up: Arc<AtomicBool>,
    pub rec: Arc<Mutex<Record>>,
    pub keep: bool,
    /// Keep whole events only for tags with this prefix (when not `keep`).
    pub keep_prefix: Option<String>,
    /// A batch holding an event for which this is true is refused (as a master that processed
    /// and declined it), every time.
    pub refuse_if: Option<Refuse>,
    /// Refused batches seen.
    pub refused: Arc<Mutex<Vec<usize>>>,
}

impl Sink {
    pub fn new(keep: bool) -> Sink {
        Sink {
            up: Arc::new(AtomicBool::new(true)),
            rec: Arc::new(Mutex::new(Record::default())),
            keep,
            keep_prefix: None,
            refuse_if: None,
            refused: Arc::default(),
        }
    }
}

impl Deliver for Sink {
    fn deliver<'a>(
        &'a mut self,
        batch: &'a [Event],
    ) -> Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>> {
        Box::pin(async move {
            if !self.up.load(Ordering::SeqCst) {
                return Err(DeliveryError::Unavailable(TransportError::Unreachable {
                    master: "test".into(),
                    reason: "master down (test)".into(),
                }));
            }
            if let Some(f) = &self.refuse_if {
                if batch.iter().any(|e| f(e)) {
                    if let Ok(mut r) = self.refused.lock() {
                        r.push(batch.len());
                    }
                    return Err(DeliveryError::Refused {
                        reason: "\"Some exception handling minion payload\" (test)".into(),
                    });
                }
            }
            let mut r = self.rec.lock().map_err(|e| DeliveryError::Refused {
                reason: e.to_string(),
            })?;
            let ids = if self.keep {
                batch
                    .iter()
                    .map(|e| {
                        (
                            e.tag.clone(),
                            e.data["beacond_uid"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned(),
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            };
            r.batches.push((Instant::now(), ids));
            for e in batch {
                let keep = self.keep
                    || self
                        .keep_prefix
                        .as_deref()
                        .is_some_and(|p| e.tag.starts_with(p));
                if keep {
                    r.events.push(e.clone());
                }
            }
            Ok(())
        })
    }

    fn next_attempt(&self) -> Option<tokio::time::Instant> {
        None
    }
}

/// Minion options from JSON settings (as the config loader would give them).
pub fn minion(
    dir: &std::path::Path,
    settings: serde_json::Value,
) -> beacond::config::minion::MinionOpts {
    beacond::config::minion::MinionOpts {
        id: "m1".into(),
        cachedir: dir.to_owned(),
        pki_dir: dir.join("pki"),
        master: vec!["127.0.0.1".into()],
        master_port: 4506,
        settings: settings.as_object().cloned().unwrap_or_default(),
    }
}

/// Peak RSS (VmHWM) of this process, in bytes.
pub fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |k| k * 1024)
}
