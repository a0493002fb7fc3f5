//! `load`: the load averages against low/high thresholds (Salt's `load` beacon).
//!
//! Options: `averages` (`1m`/`5m`/`15m` → `[low, high]`), `onchangeonly`, `emitatstartup`, and
//! `procfs` (default `/proc`; beacond's, so tests can use a fixture).

use super::{read_text, Beacon, BeaconError, BuildContext, Data};
use crate::config::{BeaconConfig, ConfigError};
use crate::sources::procfs;
use serde_json::Value;
use std::path::PathBuf;

const KEYS: [&str; 3] = ["1m", "5m", "15m"];
const DEFAULT_PROCFS: &str = "/proc";

pub struct Load {
    /// `[low, high]` per average, `None` where not configured.
    thresholds: [Option<(f64, f64)>; 3],
    onchangeonly: bool,
    emitatstartup: bool,
    /// `None`: the kernel's own values through sysinfo(2), at the full fixed-point precision
    /// Python's `os.getloadavg()` reports; `Some(file)`: a loadavg file (fixtures).
    loadavg: Option<PathBuf>,
    last: Option<[f64; 3]>,
}

/// The options this beacon takes (checked by `beacons::build`).
pub const OPTIONS: &[&str] = &["averages", "onchangeonly", "emitatstartup", "procfs"];

pub fn build(cfg: &BeaconConfig, _ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let averages = cfg.require("averages", "a map of 1m, 5m or 15m to [low, high]")?;
    let Some(entries) = averages.as_map() else {
        return Err(cfg.error(
            averages,
            format!(
                "averages must be a map of 1m, 5m or 15m to [low, high], found {}",
                averages.kind()
            ),
        ));
    };
    let mut thresholds = [None; 3];
    for (key, value) in entries {
        let Some(i) = KEYS.iter().position(|k| k == key) else {
            return Err(cfg.error_at_key(
                value,
                format!("averages.{key} is not a load average; use 1m, 5m or 15m"),
            ));
        };
        let pair = value.as_seq().and_then(|items| match items {
            [lo, hi] => Some((number(lo)?, number(hi)?)),
            _ => None,
        });
        match pair {
            Some(p) => thresholds[i] = Some(p),
            None => {
                return Err(cfg.error(
                    value,
                    format!("averages.{key} must be a list of two numbers [low, high]"),
                ))
            }
        }
    }
    if thresholds.iter().all(Option::is_none) {
        return Err(cfg.error(averages, "averages must contain 1m, 5m or 15m items"));
    }
    Ok(Box::new(Load {
        thresholds,
        onchangeonly: cfg.bool_opt("onchangeonly", false)?,
        emitatstartup: cfg.bool_opt("emitatstartup", true)?,
        loadavg: match cfg.str_opt("procfs", DEFAULT_PROCFS)?.as_str() {
            DEFAULT_PROCFS => None,
            other => Some(PathBuf::from(other).join("loadavg")),
        },
        last: None,
    }))
}

/// The load averages as glibc's getloadavg(3) returns them: sysinfo(2)'s 16.16 fixed point.
fn kernel_loadavg() -> Result<[f64; 3], BeaconError> {
    // SAFETY: sysinfo only writes into the zero-initialised struct we pass; a zeroed
    // `libc::sysinfo` is a valid value of that plain-data struct.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid, exclusively borrowed `struct sysinfo`.
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return Err(BeaconError::Message(format!(
            "sysinfo: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(info.loads.map(|l| l as f64 / 65536.0))
}

fn file_loadavg(file: &std::path::Path) -> Result<[f64; 3], BeaconError> {
    let text = read_text(file)?;
    procfs::loadavg(&text).ok_or_else(|| {
        BeaconError::Message(format!(
            "{}: unexpected content {:?}",
            file.display(),
            text.trim()
        ))
    })
}

/// Python's `float()` accepts numbers and numeric strings.
fn number(n: &crate::config::yaml::Node) -> Option<f64> {
    n.as_f64()
        .or_else(|| n.as_str().and_then(|s| s.trim().parse().ok()))
}

impl Beacon for Load {
    fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
        let avgs = match &self.loadavg {
            None => kernel_loadavg()?,
            Some(file) => file_loadavg(file)?,
        };
        let mut out = Vec::new();
        if self.onchangeonly && self.last.is_none() {
            self.last = Some(avgs);
            if !self.emitatstartup {
                return Ok(out);
            }
        }
        let mut fire = false;
        for (i, t) in self.thresholds.iter().enumerate() {
            let Some((lo, hi)) = *t else { continue };
            let now = avgs[i];
            fire = match (self.onchangeonly, self.last) {
                // Only a crossing of a threshold counts.
                (true, Some(last)) => (now > hi && last[i] < hi) || (now < lo && last[i] > lo),
                _ => now < lo || now > hi,
            };
            if fire {
                break;
            }
        }
        if self.onchangeonly {
            self.last = Some(avgs);
        }
        if fire {
            let mut data = Data::new();
            for (k, v) in KEYS.iter().zip(avgs) {
                data.insert((*k).into(), Value::from(v));
            }
            out.push(data);
        }
        Ok(out)
    }
}
