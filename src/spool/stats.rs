//! Counters for the self-report (`salt/beacon/<id>/beacond/status`).

use serde_json::{Map, Value};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Shared counters, updated by the pipeline.
#[derive(Debug, Default)]
pub struct Stats {
    /// Events appended to the spool.
    pub spooled: AtomicU64,
    /// Events acknowledged by a master.
    pub sent: AtomicU64,
    /// Events lost: dropped by the spool bound or not writable.
    pub dropped: AtomicU64,
    /// Events a master refused, moved to the quarantine file (each counted in a
    /// `quarantined` event).
    pub quarantined: AtomicU64,
    /// Events held back by flood control (each counted in a `suppressed` event).
    pub suppressed: AtomicU64,
    /// Events waiting in the spool.
    pub queue_depth: AtomicU64,
    /// Bytes of the spool on disk.
    pub spool_bytes: AtomicU64,
}

/// Resident set size and CPU seconds (user + system) of this process.
pub fn process_usage() -> (u64, f64) {
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024);
    // SAFETY: getrusage only writes into the zeroed struct we own.
    let cpu = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) == 0 {
            let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
            t(ru.ru_utime) + t(ru.ru_stime)
        } else {
            0.0
        }
    };
    (rss, cpu)
}

impl Stats {
    /// The status event's data.
    pub fn status_data(&self) -> Map<String, Value> {
        let (rss, cpu) = process_usage();
        let mut d = Map::new();
        d.insert("tag".into(), Value::from("status"));
        d.insert(
            "queue_depth".into(),
            Value::from(self.queue_depth.load(Relaxed)),
        );
        d.insert(
            "spool_bytes".into(),
            Value::from(self.spool_bytes.load(Relaxed)),
        );
        d.insert("spooled".into(), Value::from(self.spooled.load(Relaxed)));
        d.insert("sent".into(), Value::from(self.sent.load(Relaxed)));
        d.insert("dropped".into(), Value::from(self.dropped.load(Relaxed)));
        d.insert(
            "suppressed".into(),
            Value::from(self.suppressed.load(Relaxed)),
        );
        d.insert(
            "quarantined".into(),
            Value::from(self.quarantined.load(Relaxed)),
        );
        d.insert("rss_bytes".into(), Value::from(rss));
        d.insert(
            "cpu_seconds".into(),
            Value::from((cpu * 1000.0).round() / 1000.0),
        );
        d.insert("version".into(), Value::from(env!("CARGO_PKG_VERSION")));
        d
    }
}
