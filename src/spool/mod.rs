//! Nothing lost: the durable spool between the beacons and the master, flood control, paced
//! replay and the agent's self-report.
//!
//! Normal mode: beacons → bounded channel → [`pipeline::run`]: flood control ([`limit`]) →
//! append to the [`store::Spool`] (`<cachedir>/beacond/spool/`) → batches to the master → acked
//! records leave the spool. `--stdout`/`--once` do not use any of this.
//!
//! Minion options (all optional):
//! - `beacond_spool_max_bytes` (64 MiB): the spool's bound; beyond it the oldest events are
//!   dropped and a `salt/beacon/<id>/beacond/dropped` event says how many, of which beacons,
//!   over which time span.
//! - `beacond_rate_per_beacon` (100 events/s) and `beacond_rate_global` (500 events/s), with
//!   bursts of twice that; `0` turns a limit off. Excess events are counted and summarised in one
//!   `salt/beacon/<id>/beacond/suppressed` event per `beacond_rate_window` (10 s).
//! - `beacond_replay_batch` (250 events) and `beacond_replay_rate` (1000 events/s): how a
//!   backlog goes out after an outage; new events ride along in every batch.
//! - `beacond_status_interval` (300 s, `0` = off): the `salt/beacon/<id>/beacond/status` event.
//! - `beacond_flush_timeout` (5 s): how long SIGTERM waits for the master before leaving the
//!   rest in the spool.
//!
//! An event the master refuses (not: is away) is retried, then quarantined in
//! `<spool dir>/quarantine.jsonl` (bounded) and reported as `beacond/quarantined`.

pub mod limit;
pub mod pipeline;
pub mod quarantine;
pub mod stats;
pub mod store;

use crate::config::minion::MinionOpts;
use serde_json::Value;
use std::time::Duration;

/// Options of the spool, flood control, replay and self-report.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub max_bytes: u64,
    pub rate_per_beacon: f64,
    pub rate_global: f64,
    pub rate_window: Duration,
    pub replay_batch: usize,
    pub replay_rate: f64,
    pub status_interval: Duration,
    pub flush_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_bytes: 64 << 20,
            rate_per_beacon: 100.0,
            rate_global: 500.0,
            rate_window: Duration::from_secs(10),
            replay_batch: 250,
            replay_rate: 1000.0,
            status_interval: Duration::from_secs(300),
            flush_timeout: Duration::from_secs(5),
        }
    }
}

fn number(opts: &MinionOpts, key: &str) -> Result<Option<f64>, String> {
    let v = match opts.setting(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        Some(_) => None,
    };
    match v {
        Some(f) if f.is_finite() && f >= 0.0 => Ok(Some(f)),
        _ => Err(format!(
            "minion option {key}: expected a number >= 0, got {}",
            opts.setting(key).map(|v| v.to_string()).unwrap_or_default()
        )),
    }
}

impl Options {
    /// Read the options from the minion config; a bad value is an error naming the option.
    pub fn from_minion(opts: &MinionOpts) -> Result<Options, String> {
        let d = Options::default();
        let secs = |key: &str, default: Duration| -> Result<Duration, String> {
            Ok(number(opts, key)?.map_or(default, Duration::from_secs_f64))
        };
        let max_bytes = number(opts, "beacond_spool_max_bytes")?.map_or(d.max_bytes, |v| v as u64);
        if max_bytes < 4096 {
            return Err(format!(
                "minion option beacond_spool_max_bytes: {max_bytes} is too small (at least 4096)"
            ));
        }
        let replay_batch =
            number(opts, "beacond_replay_batch")?.map_or(d.replay_batch, |v| v as usize);
        if replay_batch == 0 {
            return Err("minion option beacond_replay_batch: must be at least 1".into());
        }
        let replay_rate = number(opts, "beacond_replay_rate")?.unwrap_or(d.replay_rate);
        if replay_rate <= 0.0 {
            return Err("minion option beacond_replay_rate: must be above 0".into());
        }
        let rate_window = secs("beacond_rate_window", d.rate_window)?;
        if rate_window.is_zero() {
            return Err("minion option beacond_rate_window: must be above 0".into());
        }
        Ok(Options {
            max_bytes,
            rate_per_beacon: number(opts, "beacond_rate_per_beacon")?.unwrap_or(d.rate_per_beacon),
            rate_global: number(opts, "beacond_rate_global")?.unwrap_or(d.rate_global),
            rate_window,
            replay_batch,
            replay_rate,
            status_interval: secs("beacond_status_interval", d.status_interval)?,
            flush_timeout: secs("beacond_flush_timeout", d.flush_timeout)?,
        })
    }
}

/// `<cachedir>/beacond/spool`.
pub fn spool_dir(opts: &MinionOpts) -> std::path::PathBuf {
    opts.cachedir.join("beacond").join("spool")
}
