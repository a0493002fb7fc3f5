//! `memusage`: memory in use, as psutil's `virtual_memory().percent`, against `percent`.
//!
//! Options: `percent` (e.g. `63%`), and `procfs` (default `/proc`; beacond's, for fixtures).

use super::{read_text, usage_percent, Beacon, BeaconError, BuildContext, Data};
use crate::config::{BeaconConfig, ConfigError};
use crate::sources::procfs;
use serde_json::Value;
use std::path::PathBuf;

pub struct MemUsage {
    threshold: f64,
    meminfo: PathBuf,
}

/// The options this beacon takes (checked by `beacons::build`).
pub const OPTIONS: &[&str] = &["percent", "procfs"];

pub fn build(cfg: &BeaconConfig, _ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let node = cfg.require("percent", "a percentage such as 63%")?;
    Ok(Box::new(MemUsage {
        threshold: cfg.percent("percent", node)?,
        meminfo: PathBuf::from(cfg.str_opt("procfs", "/proc")?).join("meminfo"),
    }))
}

impl Beacon for MemUsage {
    fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
        let text = read_text(&self.meminfo)?;
        let info = procfs::meminfo(&text);
        let field = procfs::meminfo_bytes;
        let total = field(&info, "MemTotal").ok_or_else(|| {
            BeaconError::Message(format!("{}: no MemTotal", self.meminfo.display()))
        })?;
        // psutil: MemAvailable where the kernel has it, else free + buffers + cached.
        let available = field(&info, "MemAvailable").unwrap_or_else(|| {
            ["MemFree", "Buffers", "Cached"]
                .iter()
                .filter_map(|f| field(&info, f))
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
