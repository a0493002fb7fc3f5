//! `ps`: processes that should be running or stopped, by name (Salt's `ps` beacon).
//!
//! Options: `processes` (a map of process name → `running` | `stopped`; any other value fires
//! `{name: False}` while the process is absent, as Salt does), and `procfs` (default `/proc`;
//! beacond's, so tests can use a fixture).
//!
//! The name is psutil's `Process.name()`: the kernel's `comm` (from `/proc/<pid>/stat`), or,
//! when that is 15 characters (the kernel truncates it), the basename of `argv[0]` if it starts
//! with the truncated name. Like Salt's beacon, it fires on every evaluation while the condition
//! holds (tag `salt/beacon/<id>/ps/`, data `{<name>: "Running"}` or `{<name>: "Stopped"}`).

use super::{Beacon, BeaconError, BuildContext, Data};
use crate::config::yaml::Yaml;
use crate::config::{BeaconConfig, ConfigError};
use crate::sources::procfs;
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

/// The options this beacon takes (checked by `beacons::build`).
pub const OPTIONS: &[&str] = &["processes", "procfs"];

pub fn build(cfg: &BeaconConfig, _ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let node = cfg.require("processes", "a map of process name to running or stopped")?;
    let Some(entries) = node.as_map() else {
        return Err(cfg.error(
            node,
            format!(
                "processes must be a map of process name to running or stopped, found {}",
                node.kind()
            ),
        ));
    };
    let mut processes = Vec::new();
    for (name, want) in entries {
        let want = match &want.value {
            Yaml::Str(s) if s == "running" => Want::Running,
            Yaml::Str(s) if s == "stopped" => Want::Stopped,
            _ => {
                tracing::warn!(
                    beacon = %cfg.name,
                    "processes.{name}: '{}' is neither running nor stopped; as in Salt, an event \
                     {{{name}: False}} fires while it is not running",
                    want.to_json()
                );
                Want::Other
            }
        };
        processes.push((name.clone(), want));
    }
    Ok(Box::new(Ps {
        processes,
        procfs: PathBuf::from(cfg.str_opt("procfs", "/proc")?),
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
