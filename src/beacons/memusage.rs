//! `memusage`: memory in use, as psutil's `virtual_memory().percent`, against `percent`.
//!
//! Options: `percent` (e.g. `63%`), and `procfs` (default `/proc`; beacond's, for fixtures).

use super::{usage_percent, Beacon, BeaconError, BuildContext, Data};
use crate::config::{BeaconConfig, ConfigError};
use serde_json::Value;
use std::path::{Path, PathBuf};

pub struct MemUsage {
    threshold: f64,
    meminfo: MemInfo,
}

pub fn build(cfg: &BeaconConfig, _ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let node = cfg.require("percent", "a percentage such as 63%")?;
    Ok(Box::new(MemUsage {
        threshold: cfg.percent("percent", node)?,
        meminfo: MemInfo::new(PathBuf::from(cfg.str_opt("procfs", "/proc")?).join("meminfo")),
    }))
}

/// `/proc/meminfo`, read into a buffer kept between ticks (an idle tick allocates nothing).
pub struct MemInfo {
    path: PathBuf,
    text: String,
}

impl MemInfo {
    pub fn new(path: PathBuf) -> Self {
        MemInfo {
            path,
            text: String::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Read the file again.
    pub fn read(&mut self) -> Result<&Self, BeaconError> {
        let mut f = std::fs::File::open(&self.path).map_err(|e| BeaconError::io(&self.path, e))?;
        self.text.clear();
        std::io::Read::read_to_string(&mut f, &mut self.text)
            .map_err(|e| BeaconError::io(&self.path, e))?;
        Ok(self)
    }

    /// A field's value in bytes (`MemTotal:  16303004 kB`).
    pub fn field(&self, name: &str) -> Option<f64> {
        self.text.lines().find_map(|line| {
            let (n, rest) = line.split_once(':')?;
            if n.trim() != name {
                return None;
            }
            let kib: f64 = rest.split_whitespace().next()?.parse().ok()?;
            Some(kib * 1024.0)
        })
    }
}

impl Beacon for MemUsage {
    fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
        let info = self.meminfo.read()?;
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
