//! `swapusage`: swap in use, as psutil's `swap_memory().percent`, against `percent`.
//!
//! Options: `percent` (e.g. `13%`), and `procfs` (default `/proc`; beacond's, for fixtures).

use super::{usage_percent, Beacon, BeaconError, BuildContext, Data};
use crate::config::{BeaconConfig, ConfigError};
use crate::sources::procfs;
use serde_json::Value;
use std::path::PathBuf;

pub struct SwapUsage {
    threshold: f64,
    meminfo: procfs::MeminfoFile,
}

/// The options this beacon takes (checked by `beacons::build`).
pub const OPTIONS: &[&str] = &["percent", "procfs"];

pub fn build(cfg: &BeaconConfig, _ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let node = cfg.require("percent", "a percentage such as 13%")?;
    Ok(Box::new(SwapUsage {
        threshold: cfg.percent("percent", node)?,
        meminfo: procfs::MeminfoFile::new(
            PathBuf::from(cfg.str_opt("procfs", "/proc")?).join("meminfo"),
        ),
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
