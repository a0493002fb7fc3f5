//! `memusage`: memory in use, as psutil's `virtual_memory().percent`, against `percent`.
//!
//! Options: `percent` (e.g. `63%`), and `procfs` (default `/proc`; beacond's, for fixtures).

use super::{read_text, usage_percent, Beacon, BeaconError, BuildContext, Data};
use crate::config::{BeaconConfig, ConfigError};
use serde_json::Value;
use std::path::{Path, PathBuf};

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

/// `/proc/meminfo` values in bytes, by field name.
pub fn meminfo(path: &Path) -> Result<Vec<(String, f64)>, BeaconError> {
    let text = read_text(path)?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.split_once(':')?;
            let kib: f64 = rest.split_whitespace().next()?.parse().ok()?;
            Some((name.trim().to_owned(), kib * 1024.0))
        })
        .collect())
}

pub fn field(info: &[(String, f64)], name: &str) -> Option<f64> {
    info.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
}

impl Beacon for MemUsage {
    fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
        let info = meminfo(&self.meminfo)?;
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
