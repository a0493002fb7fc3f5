//! `load`: the load averages against low/high thresholds (Salt's `load` beacon).
//!
//! Options: [`Config`] (`beacond --describe load`).

use super::{read_text, Beacon, BeaconError, BuildContext, Data};
use crate::config::de::{self, Located};
use crate::config::types::Float;
use crate::config::{BeaconConfig, ConfigError};
use crate::sources::procfs;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use std::path::{Path, PathBuf};

const KEYS: [&str; 3] = ["1m", "5m", "15m"];
const DEFAULT_PROCFS: &str = "/proc";

/// The load averages (1, 5 and 15 minutes) against low/high thresholds: an event with all
/// three while one is outside its range.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[low, high]` for `1m`, `5m` and/or `15m`: the beacon fires while that average is
    /// below low or above high.
    averages: Located<Averages>,
    /// Fire only when an average crosses one of its thresholds, not on every evaluation
    /// outside the range.
    #[serde(default)]
    onchangeonly: bool,
    /// With `onchangeonly`: also judge the first evaluation (against the thresholds alone).
    #[serde(default = "yes")]
    emitatstartup: bool,
    /// Where procfs is mounted (`<procfs>/loadavg` is read). With `/proc` the kernel's own
    /// values are read through sysinfo(2), at the precision Python's `os.getloadavg()` has.
    #[serde(default = "default_procfs")]
    procfs: PathBuf,
}

/// The thresholds, per load average.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Averages {
    /// `[low, high]` for the 1-minute average.
    #[serde(rename = "1m")]
    one: Option<Range>,
    /// `[low, high]` for the 5-minute average.
    #[serde(rename = "5m")]
    five: Option<Range>,
    /// `[low, high]` for the 15-minute average.
    #[serde(rename = "15m")]
    fifteen: Option<Range>,
}

fn yes() -> bool {
    true
}

fn default_procfs() -> PathBuf {
    PathBuf::from(DEFAULT_PROCFS)
}

/// `[low, high]`: two numbers (Python's `float()`, so `'0.5'` too).
#[derive(Debug, Clone, Copy)]
struct Range(Float, Float);

impl JsonSchema for Range {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Range".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "array", "x-type": "[low, high] (two numbers)" })
    }
}

impl<'de> Deserialize<'de> for Range {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Range;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of two numbers [low, high]")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Range, A::Error> {
                let low: Option<Float> = seq.next_element()?;
                let high: Option<Float> = seq.next_element()?;
                let more = seq.next_element::<serde::de::IgnoredAny>()?.is_some();
                match (low, high, more) {
                    (Some(low), Some(high), false) => Ok(Range(low, high)),
                    _ => Err(serde::de::Error::invalid_length(2, &self)),
                }
            }
        }
        d.deserialize_any(V)
    }
}

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

pub fn build(cfg: &BeaconConfig, _ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let c: Config = de::from_config(cfg)?;
    let a = &c.averages;
    let thresholds = [a.one, a.five, a.fifteen].map(|r| r.map(|Range(lo, hi)| (lo.0, hi.0)));
    if thresholds.iter().all(Option::is_none) {
        return Err(ConfigError {
            pos: Some(a.pos.clone()),
            beacon: Some(cfg.name.clone()),
            message: "averages must contain 1m, 5m or 15m items".into(),
        });
    }
    Ok(Box::new(Load {
        thresholds,
        onchangeonly: c.onchangeonly,
        emitatstartup: c.emitatstartup,
        loadavg: (c.procfs != Path::new(DEFAULT_PROCFS)).then(|| c.procfs.join("loadavg")),
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
