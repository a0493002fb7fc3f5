//! `swapusage`: swap in use, as psutil's `swap_memory().percent`, against `percent`.
//!
//! Options: [`Config`] (`beacond --describe swapusage`).

use super::{usage_percent, Beacon, BeaconError, BuildContext, Data};
use crate::config::de;
use crate::config::types::Percent;
use crate::config::{BeaconConfig, ConfigError};
use crate::sources::procfs;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;

pub struct SwapUsage {
    threshold: f64,
    meminfo: procfs::MeminfoFile,
}

/// Swap in use (psutil's `swap_memory().percent`) against a threshold: an event while it is at or
/// above `percent`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The threshold, e.g. `13%`.
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
    Ok(Box::new(SwapUsage {
        threshold: c.percent.0,
        meminfo: procfs::MeminfoFile::new(c.procfs.join("meminfo")),
    }))
}

impl Beacon for SwapUsage {
    fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
        if let Err(e) = self.meminfo.refresh() {
            return Err(BeaconError::io(self.meminfo.path(), e));
        }
        let total = self.meminfo.field("SwapTotal").unwrap_or(0.0);
        let free = self.meminfo.field("SwapFree").unwrap_or(0.0);
        let percent = usage_percent(total - free, total);
        let mut out = Vec::new();
        if percent >= self.threshold {
            let mut data = Data::new();
            data.insert("swapusage".into(), Value::from(percent));
            out.push(data);
        }
        Ok(out)
    }
}
