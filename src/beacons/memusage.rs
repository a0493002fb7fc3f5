//! `memusage`: memory in use, as psutil's `virtual_memory().percent`, against `percent`.
//!
//! Options: `percent` (e.g. `63%`), and `procfs` (default `/proc`; beacond's, for fixtures).

use super::{usage_percent, Beacon, BeaconError, BuildContext, Data};
use crate::config::{BeaconConfig, ConfigError};
use crate::sources::procfs;
use serde_json::Value;
use std::path::PathBuf;

pub struct MemUsage {
    threshold: f64,
    meminfo: procfs::MeminfoFile,
}

/// The options this beacon takes (checked by `beacons::build`).
pub const OPTIONS: &[&str] = &["percent", "procfs"];

pub fn build(cfg: &BeaconConfig, _ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let node = cfg.require("percent", "a percentage such as 63%")?;
    Ok(Box::new(MemUsage {
        threshold: cfg.percent("percent", node)?,
        meminfo: procfs::MeminfoFile::new(
            PathBuf::from(cfg.str_opt("procfs", "/proc")?).join("meminfo"),
        ),
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
