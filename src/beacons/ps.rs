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
use serde_json::Value;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

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

/// The numeric entries of a procfs directory (the pids).
pub(crate) fn pids(procfs: &Path) -> Result<Vec<u32>, BeaconError> {
    let dir = std::fs::read_dir(procfs).map_err(|e| BeaconError::io(procfs, e))?;
    Ok(dir
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .collect())
}

/// The kernel's `comm` of a process from `<procfs>/<pid>/stat` (between the first `(` and the
/// last `)`, since a comm may itself contain parentheses). None if the process is gone.
pub(crate) fn comm(procfs: &Path, pid: u32) -> Option<String> {
    let stat = std::fs::read(procfs.join(pid.to_string()).join("stat")).ok()?;
    let open = stat.iter().position(|b| *b == b'(')?;
    let close = stat.iter().rposition(|b| *b == b')')?;
    (close > open).then(|| String::from_utf8_lossy(&stat[open + 1..close]).into_owned())
}

/// psutil's `Process.name()` on Linux.
pub(crate) fn process_name(procfs: &Path, pid: u32) -> Option<String> {
    let name = comm(procfs, pid)?;
    if name.len() < 15 {
        return Some(name);
    }
    let cmdline = std::fs::read(procfs.join(pid.to_string()).join("cmdline")).unwrap_or_default();
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let argv0 = String::from_utf8_lossy(argv0);
    let base = argv0.rsplit('/').next().unwrap_or_default();
    if !base.is_empty() && base.starts_with(&name) {
        Some(base.to_owned())
    } else {
        Some(name)
    }
}

impl Beacon for Ps {
    fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
        let names: HashSet<String> = pids(&self.procfs)?
            .into_iter()
            .filter_map(|pid| process_name(&self.procfs, pid))
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
