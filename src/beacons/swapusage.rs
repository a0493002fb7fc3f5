//! `swapusage`: swap in use, as psutil's `swap_memory().percent`, against `percent`.
//!
//! Options: `percent` (e.g. `13%`), and `procfs` (default `/proc`; beacond's, for fixtures).

use super::{read_text, usage_percent, Beacon, BeaconError, BuildContext, Data};
use crate::config::{BeaconConfig, ConfigError};
use crate::sources::procfs::{meminfo, meminfo_bytes as field};
use serde_json::Value;
use std::path::PathBuf;

pub struct SwapUsage {
    threshold: f64,
    meminfo: PathBuf,
}

/// The options this beacon takes (checked by `beacons::build`).
pub const OPTIONS: &[&str] = &["percent", "procfs"];

pub fn build(cfg: &BeaconConfig, _ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let node = cfg.require("percent", "a percentage such as 13%")?;
    Ok(Box::new(SwapUsage {
        threshold: cfg.percent("percent", node)?,
        meminfo: PathBuf::from(cfg.str_opt("procfs", "/proc")?).join("meminfo"),
    }))
}

impl Beacon for SwapUsage {
    fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
        let text = read_text(&self.meminfo)?;
        let info = meminfo(&text);
        let total = field(&info, "SwapTotal").unwrap_or(0.0);
        let free = field(&info, "SwapFree").unwrap_or(0.0);
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
