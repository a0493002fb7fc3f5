//! The beacons, one file each, behind one small trait: a beacon is built from its config
//! (validation happens there, with precise errors), then evaluated: on its interval (polled
//! beacons) or whenever its OS source is ready (event-driven beacons).

use crate::config::{BeaconConfig, ConfigError, MinionOpts};
use crate::state_run::StateJob;
use serde_json::{Map, Value};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;

pub mod btmp;
pub mod cert_info;
pub mod diskusage;
pub mod inotify;
pub mod journald;
pub mod listening_ports;
pub mod load;
pub mod log;
pub mod memusage;
pub mod network_info;
pub mod network_settings;
pub mod pkg;
pub mod ps;
pub mod selinux;
pub mod service;
pub mod sh;
pub mod state_results;
pub mod status;
pub mod swapusage;
pub mod users;
pub mod utmp;
pub mod wtmp;

/// The data of one event as a beacon returns it; a `tag` key becomes the tag's suffix.
pub type Data = Map<String, Value>;

/// What the scheduler awaits for an event-driven beacon.
pub type Ready<'a> = Pin<Box<dyn Future<Output = Result<(), BeaconError>> + Send + 'a>>;

/// A beacon failed to read its source; reported as Salt's error event, the beacon keeps going.
#[derive(Debug, thiserror::Error)]
pub enum BeaconError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Message(String),
}

impl BeaconError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BeaconError::Io {
            path: path.into(),
            source,
        }
    }
}

/// What a beacon may know of the agent when it is built.
#[derive(Debug, Clone)]
pub struct BuildContext {
    pub minion: MinionOpts,
    /// beacond's own durable state (positions, cursors): `<cachedir>/beacond/state`.
    pub state_dir: PathBuf,
}

impl BuildContext {
    pub fn new(minion: MinionOpts) -> Self {
        let state_dir = minion.cachedir.join("beacond").join("state");
        BuildContext { minion, state_dir }
    }
}

/// One beacon instance.
pub trait Beacon: Send {
    /// Open OS resources (watches, sockets, files). Called before the first evaluation, and
    /// again after a failure; never by `--check`.
    fn start(&mut self) -> Result<(), BeaconError> {
        Ok(())
    }

    /// Polled beacons (the default) are evaluated on every `interval` tick. Event-driven beacons
    /// return false and are evaluated each time `ready` resolves.
    fn polled(&self) -> bool {
        true
    }

    /// Resolves when the OS source has something to read (event-driven beacons only).
    fn ready(&mut self) -> Ready<'_> {
        Box::pin(std::future::pending())
    }

    /// Read the source, diff against the last state, and return the events to fire.
    fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError>;

    /// Called instead of `evaluate` while salt-minion runs a `state.*` job and the beacon has
    /// `disable_during_state_run`. Salt skips the beacon; so does the default.
    fn during_state_run(&mut self, _job: &StateJob) -> Result<(), BeaconError> {
        Ok(())
    }

    /// Called once when that state run is over, before the next `evaluate`.
    fn after_state_run(&mut self, _job: &StateJob) -> Result<Vec<Data>, BeaconError> {
        Ok(Vec::new())
    }
}

/// Builds a beacon from its config, validating every option.
pub type Builder = fn(&BeaconConfig, &BuildContext) -> Result<Box<dyn Beacon>, ConfigError>;

/// Every beacon kind beacond knows, by the name Salt gives it.
pub const KINDS: &[(&str, Builder)] = &[
    ("btmp", btmp::build),
    ("cert_info", cert_info::build),
    ("diskusage", diskusage::build),
    ("inotify", inotify::build),
    ("journald", journald::build),
    ("listening_ports", listening_ports::build),
    ("load", load::build),
    ("log", log::build),
    ("memusage", memusage::build),
    ("network_info", network_info::build),
    ("network_settings", network_settings::build),
    ("pkg", pkg::build),
    ("ps", ps::build),
    ("selinux", selinux::build),
    ("service", service::build),
    ("sh", sh::build),
    ("state_results", state_results::build),
    ("status", status::build),
    ("swapusage", swapusage::build),
    ("users", users::build),
    ("wtmp", wtmp::build),
];

/// Build (and so validate) a configured beacon.
pub fn build(cfg: &BeaconConfig, ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    match KINDS.iter().find(|(name, _)| *name == cfg.module) {
        Some((_, builder)) => builder(cfg, ctx),
        None => {
            let known: Vec<&str> = KINDS.iter().map(|(n, _)| *n).collect();
            Err(cfg.error_here(format!(
                "unknown beacon module '{}' (beacond provides: {})",
                cfg.module,
                known.join(", ")
            )))
        }
    }
}

/// Read a whole small file (under /proc or /sys) as text.
pub fn read_text(path: &std::path::Path) -> Result<String, BeaconError> {
    std::fs::read_to_string(path).map_err(|e| BeaconError::io(path, e))
}

/// `psutil`'s `usage_percent(used, total, round_=1)`: 0 when the total is 0.
pub fn usage_percent(used: f64, total: f64) -> f64 {
    if total <= 0.0 {
        return 0.0;
    }
    (used / total * 1000.0).round() / 10.0
}
