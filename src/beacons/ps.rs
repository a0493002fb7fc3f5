//! `ps`: processes that should be running or stopped, by name (Salt's `ps` beacon).
//!
//! Options: [`Config`] (`beacond --describe ps`).
//!
//! The name is psutil's `Process.name()`: the kernel's `comm` (from `/proc/<pid>/stat`), or,
//! when that is 15 characters (the kernel truncates it), the basename of `argv[0]` if it starts
//! with the truncated name. Like Salt's beacon, it fires on every evaluation while the condition
//! holds (tag `salt/beacon/<id>/ps/`, data `{<name>: "Running"}` or `{<name>: "Stopped"}`).

use super::{Beacon, BeaconError, BuildContext, Data};
use crate::config::de;
use crate::config::types::NameMap;
use crate::config::{BeaconConfig, ConfigError};
use crate::sources::procfs;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use std::collections::HashSet;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq)]
enum Want {
    Running,
    Stopped,
    /// Any other value: Salt fires `{name: False}` while the process is absent.
    Other,
}

pub struct Ps {
    processes: Vec<(String, Want)>,
    procfs: PathBuf,
}

/// Processes that should be running or stopped, by name: an event on every evaluation while
/// one is (`{name: Running}`) or is not (`{name: Stopped}`) found.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Process name (psutil's `Process.name()`) to `running` or `stopped`. Any other value
    /// fires `{name: False}` while the process is absent, as Salt does.
    processes: NameMap<serde_json::Value>,
    /// Where procfs is mounted (`<procfs>/<pid>/stat` is read).
    #[serde(default = "default_procfs")]
    procfs: PathBuf,
}

fn default_procfs() -> PathBuf {
    PathBuf::from("/proc")
}

pub fn build(cfg: &BeaconConfig, _ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let c: Config = de::from_config(cfg)?;
    let mut processes = Vec::new();
    for (name, want) in c.processes.0 {
        let want = match want.as_str() {
            Some("running") => Want::Running,
            Some("stopped") => Want::Stopped,
            _ => {
                tracing::warn!(
                    beacon = %cfg.name,
                    "processes.{name}: '{want}' is neither running nor stopped; as in Salt, an \
                     event {{{name}: False}} fires while it is not running"
                );
                Want::Other
            }
        };
        processes.push((name, want));
    }
    Ok(Box::new(Ps {
        processes,
        procfs: c.procfs,
    }))
}

impl Beacon for Ps {
    fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
        let names: HashSet<String> = procfs::pids(&self.procfs)
            .map_err(|e| BeaconError::io(&self.procfs, e))?
            .into_iter()
            .filter_map(|pid| procfs::process_name(&self.procfs, pid))
            .collect();
        let mut out = Vec::new();
        for (name, want) in &self.processes {
            let running = names.contains(name);
            let value = match (want, running) {
                (Want::Running, true) => Value::from("Running"),
                (Want::Stopped, false) => Value::from("Stopped"),
                (Want::Other, false) => Value::Bool(false),
                _ => continue,
            };
            let mut data = Data::new();
            data.insert(name.clone(), value);
            out.push(data);
        }
        Ok(out)
    }
}
