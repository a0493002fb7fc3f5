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

/// How the scheduler waits for a beacon's next evaluation.
pub enum Drive<'a> {
    /// On every `interval` tick (polled beacons).
    Interval,
    /// When this resolves: the OS source has something to read (event-driven beacons). An
    /// error is reported and the beacon waits an interval before asking again.
    Source(Ready<'a>),
}

/// One beacon instance. The scheduler starts it, evaluates it once, then evaluates it again
/// each time [`Beacon::drive`] says so. `start`, `evaluate` and the state-run hooks may block
/// (files, D-Bus, child processes): the scheduler runs them on the blocking thread pool, never
/// on the runtime, so a slow beacon delays only itself.
pub trait Beacon: Send + 'static {
    /// Open OS resources (watches, sockets, files). Called before the first evaluation (and
    /// again until it succeeds); never by `--check`.
    fn start(&mut self) -> Result<(), BeaconError> {
        Ok(())
    }

    /// What the next evaluation waits for; asked before every evaluation but the first.
    /// Polled beacons keep the default. A source beacon returns its future here, so being
    /// event-driven without saying what to await cannot be written.
    fn drive(&mut self) -> Drive<'_> {
        Drive::Interval
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

/// The options a beacon kind takes: checked centrally (by [`build`]) before its builder runs,
/// so a misspelt option is an error with its position for every kind.
#[derive(Clone, Copy)]
pub enum Options {
    /// Exactly these keys.
    Known(&'static [&'static str]),
    /// These keys, and keys that are names (diskusage's mount points): `is_name` tells which.
    Named {
        known: &'static [&'static str],
        is_name: fn(&str) -> bool,
    },
    /// A typed config struct (read with `config::de`): its field list is the option list, and
    /// its schema (names, types, defaults, doc comments) is what `--describe` prints.
    Typed {
        fields: fn() -> &'static [&'static str],
        schema: fn() -> schemars::Schema,
    },
}

impl Options {
    /// The option names (not the names a `Named` kind accepts beside them).
    pub fn known(&self) -> &'static [&'static str] {
        match self {
            Options::Known(k) | Options::Named { known: k, .. } => k,
            Options::Typed { fields, .. } => fields(),
        }
    }

    /// The options of config struct `T`.
    pub const fn typed<T: serde::de::DeserializeOwned + schemars::JsonSchema>() -> Options {
        Options::Typed {
            fields: crate::config::de::field_names::<T>,
            schema: schema_of::<T>,
        }
    }
}

fn schema_of<T: schemars::JsonSchema>() -> schemars::Schema {
    schemars::SchemaGenerator::default().into_root_schema_for::<T>()
}

/// A beacon kind: the name Salt gives it, its builder and its options.
pub struct BeaconKind {
    pub name: &'static str,
    pub build: Builder,
    pub options: Options,
}

const fn kind(name: &'static str, build: Builder, options: &'static [&'static str]) -> BeaconKind {
    BeaconKind {
        name,
        build,
        options: Options::Known(options),
    }
}

/// A kind whose options are the typed config struct `T`.
const fn typed<T: serde::de::DeserializeOwned + schemars::JsonSchema>(
    name: &'static str,
    build: Builder,
) -> BeaconKind {
    BeaconKind {
        name,
        build,
        options: Options::typed::<T>(),
    }
}

/// Every beacon kind beacond knows, by the name Salt gives it.
pub const KINDS: &[BeaconKind] = &[
    typed::<btmp::Config>("btmp", btmp::build),
    typed::<cert_info::Config>("cert_info", cert_info::build),
    BeaconKind {
        name: "diskusage",
        build: diskusage::build,
        options: Options::Named {
            known: diskusage::OPTIONS,
            is_name: diskusage::is_mount_key,
        },
    },
    kind("inotify", inotify::build, inotify::OPTIONS),
    kind("journald", journald::build, journald::OPTIONS),
    typed::<listening_ports::Config>("listening_ports", listening_ports::build),
    typed::<load::Config>("load", load::build),
    typed::<log::Config>("log", log::build),
    typed::<memusage::Config>("memusage", memusage::build),
    typed::<network_info::Config>("network_info", network_info::build),
    typed::<network_settings::Config>("network_settings", network_settings::build),
    typed::<pkg::Config>("pkg", pkg::build),
    typed::<ps::Config>("ps", ps::build),
    kind("selinux", selinux::build, selinux::OPTIONS),
    kind("service", service::build, service::OPTIONS),
    kind("sh", sh::build, sh::OPTIONS),
    typed::<state_results::Config>("state_results", state_results::build),
    typed::<status::Config>("status", status::build),
    typed::<swapusage::Config>("swapusage", swapusage::build),
    kind("users", users::build, users::OPTIONS),
    typed::<wtmp::Config>("wtmp", wtmp::build),
];

/// Build (and so validate) a configured beacon: unknown options first, then the builder.
pub fn build(cfg: &BeaconConfig, ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    match KINDS.iter().find(|k| k.name == cfg.module) {
        Some(k) => {
            match k.options {
                Options::Known(known) => cfg.reject_unknown(known, None)?,
                Options::Typed { fields, .. } => cfg.reject_unknown(fields(), None)?,
                Options::Named { known, is_name } => cfg.reject_unknown(known, Some(is_name))?,
            }
            (k.build)(cfg, ctx)
        }
        None => {
            let known: Vec<&str> = KINDS.iter().map(|k| k.name).collect();
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
