//! `memusage`: memory in use, as psutil's `virtual_memory().percent`, against `percent`.
//!
//! Options: [`Config`] (`beacond --describe memusage`).

use super::{usage_percent, Beacon, BeaconError, BuildContext, Data};
use crate::config::de;
use crate::config::types::Percent;
use crate::config::{BeaconConfig, ConfigError};
use crate::sources::procfs;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;

pub struct MemUsage {
    threshold: f64,
    meminfo: procfs::MeminfoFile,
}

/// Memory in use (psutil's `virtual_memory().percent`) against a threshold: an event while it is at or
/// above `percent`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The threshold, e.g. `63%`.
    percent: Percent,
    /// Where procfs is mounted (`<procfs>/meminfo` is read).
    #[serde(default = "default_procfs")]
    procfs: PathBuf,
}

fn default_procfs() -> PathBuf {
    PathBuf::from("/proc")
}

pub fn build(cfg: &BeaconConfig, _ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let c: Config = de::from_config(cfg)?;
    Ok(Box::new(MemUsage {
        threshold: c.percent.0,
        meminfo: procfs::MeminfoFile::new(c.procfs.join("meminfo")),
    }))
}

impl Beacon for MemUsage {
    fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
        if let Err(e) = self.meminfo.refresh() {
            return Err(BeaconError::io(self.meminfo.path(), e));
        }
        let info = &self.meminfo;
        let total = info.field("MemTotal").ok_or_else(|| {
            BeaconError::Message(format!("{}: no MemTotal", info.path().display()))
        })?;
        // psutil: MemAvailable where the kernel has it, else free + buffers + cached.
        let available = info.field("MemAvailable").unwrap_or_else(|| {
            ["MemFree", "Buffers", "Cached"]
                .iter()
                .filter_map(|f| info.field(f))
                .sum()
        });
        let percent = usage_percent(total - available, total);
        let mut out = Vec::new();
        if percent >= self.threshold {
            let mut data = Data::new();
            data.insert("memusage".into(), Value::from(percent));
            out.push(data);
        }
        Ok(out)
    }
}
