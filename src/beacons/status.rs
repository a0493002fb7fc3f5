//! `status`: Salt's periodic health event (Salt's `status` beacon, Linux implementations of the
//! `status.*` execution functions it calls).
//!
//! Options (Salt's): list items `<function>: [items]` where items are `all` or keys of the
//! function's result; with none, Salt's default `loadavg`, `cpustats`, `meminfo`, `vmstats`,
//! `time` (all). Functions provided: `loadavg`, `cpustats`, `meminfo`, `vmstats`, `time`,
//! `uptime`, `nproc`, `netdev`; beacond's `procfs` (default `/proc`) points them at a fixture.
//!
//! One event per evaluation: tag `status/<UTC ISO time>` (Salt's `datetime.utcnow().isoformat()`)
//! and data `{"data": {<function>: <result>}}`, key names and shapes as Salt's (numbers parsed
//! as `status._number`, `meminfo` values kept as strings). `uptime` has no `users` key (Salt
//! runs `who -s` for it).

use super::{Beacon, BeaconError, BuildContext, Data};
use crate::config::de;
use crate::config::types::default_procfs;
use crate::config::{BeaconConfig, ConfigError};
use crate::sources::procfs;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::PathBuf;

const DEFAULT: [&str; 5] = ["loadavg", "cpustats", "meminfo", "vmstats", "time"];

pub struct Status {
    /// Function → the items asked for (`all` or keys), in config order.
    funcs: Vec<(String, Vec<Value>)>,
    procfs: PathBuf,
}

/// Salt's periodic health event: the results of `status.*` functions, one event per
/// evaluation. With no function configured: `loadavg`, `cpustats`, `meminfo`, `vmstats` and
/// `time`, all items.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Report load averages (`1-min`, `5-min`, `15-min`): `all`, or a list of its keys.
    #[serde(default)]
    loadavg: Option<serde_json::Value>,
    /// Report `/proc/stat` counters: `all`, or a list of its keys.
    #[serde(default)]
    cpustats: Option<serde_json::Value>,
    /// Report `/proc/meminfo` fields: `all`, or a list of its keys.
    #[serde(default)]
    meminfo: Option<serde_json::Value>,
    /// Report `/proc/vmstat` counters: `all`, or a list of its keys.
    #[serde(default)]
    vmstats: Option<serde_json::Value>,
    /// Report the current time (`tm_*` and more): `all`, or a list of its keys.
    #[serde(default)]
    time: Option<serde_json::Value>,
    /// Report the uptime: `all`, or a list of its keys.
    #[serde(default)]
    uptime: Option<serde_json::Value>,
    /// Report the number of CPUs: `all`, or a list of its keys.
    #[serde(default)]
    nproc: Option<serde_json::Value>,
    /// Report per-interface `/proc/net/dev` counters: `all`, or a list of its keys.
    #[serde(default)]
    netdev: Option<serde_json::Value>,
    /// Where procfs is mounted (the functions read under it).
    #[serde(default = "default_procfs")]
    procfs: PathBuf,
}

pub fn build(cfg: &BeaconConfig, _ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let c: Config = de::from_config(cfg)?;
    let by_name = [
        ("loadavg", &c.loadavg),
        ("cpustats", &c.cpustats),
        ("meminfo", &c.meminfo),
        ("vmstats", &c.vmstats),
        ("time", &c.time),
        ("uptime", &c.uptime),
        ("nproc", &c.nproc),
        ("netdev", &c.netdev),
    ];
    // In config order, as Salt iterates its dict.
    let mut funcs = Vec::new();
    for (func, _) in &cfg.options {
        let Some((name, conf)) = by_name.iter().find(|(n, _)| n == func) else {
            continue;
        };
        let items: Vec<Value> = match conf {
            Some(Value::Array(list)) => list.clone(),
            Some(other) => vec![other.clone()],
            None => vec![Value::Null],
        };
        funcs.push(((*name).to_owned(), items));
    }
    if funcs.is_empty() {
        funcs = DEFAULT
            .iter()
            .map(|f| ((*f).to_owned(), vec![Value::from("all")]))
            .collect();
    }
    Ok(Box::new(Status {
        funcs,
        procfs: c.procfs,
    }))
}

/// `status._number`: an int for digit strings, else a float, else the string.
fn number(s: &str) -> Value {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(i) = s.parse::<u64>() {
            return Value::from(i);
        }
    }
    match s.parse::<f64>() {
        Ok(f) if f.is_finite() => Value::from(f),
        _ => Value::from(s),
    }
}

impl Status {
    fn read(&self, name: &str) -> Result<String, BeaconError> {
        super::read_text(&self.procfs.join(name))
    }

    fn call(&self, func: &str) -> Result<Value, BeaconError> {
        Ok(match func {
            "loadavg" => {
                let f = procfs::loadavg(&self.read("loadavg")?).ok_or_else(|| {
                    BeaconError::Message(format!(
                        "{}: unexpected content",
                        self.procfs.join("loadavg").display()
                    ))
                })?;
                serde_json::json!({"1-min": f[0], "5-min": f[1], "15-min": f[2]})
            }
            "cpustats" => {
                let mut ret = Map::new();
                for line in self.read("stat")?.lines() {
                    let c: Vec<&str> = line.split_whitespace().collect();
                    if c.len() < 2 {
                        continue;
                    }
                    let v = match c[0] {
                        "cpu" if c.len() >= 9 => serde_json::json!({
                            "idle": number(c[4]), "iowait": number(c[5]), "irq": number(c[6]),
                            "nice": number(c[2]), "softirq": number(c[7]), "steal": number(c[8]),
                            "system": number(c[3]), "user": number(c[1]),
                        }),
                        "intr" => serde_json::json!({
                            "total": number(c[1]),
                            "irqs": c[2..].iter().map(|x| number(x)).collect::<Vec<_>>(),
                        }),
                        "softirq" => serde_json::json!({
                            "total": number(c[1]),
                            "softirqs": c[2..].iter().map(|x| number(x)).collect::<Vec<_>>(),
                        }),
                        _ => number(c[1]),
                    };
                    ret.insert(c[0].to_owned(), v);
                }
                Value::Object(ret)
            }
            "meminfo" => {
                let mut ret = Map::new();
                for field in procfs::meminfo(&self.read("meminfo")?) {
                    let mut m = Map::new();
                    m.insert("value".into(), Value::from(field.value));
                    if let Some(unit) = field.unit {
                        m.insert("unit".into(), Value::from(unit));
                    }
                    ret.insert(field.name.to_owned(), Value::Object(m));
                }
                Value::Object(ret)
            }
            "vmstats" => {
                let mut ret = Map::new();
                for line in self.read("vmstat")?.lines() {
                    let c: Vec<&str> = line.split_whitespace().collect();
                    if c.len() >= 2 {
                        ret.insert(c[0].to_owned(), number(c[1]));
                    }
                }
                Value::Object(ret)
            }
            "time" => Value::from(local_time("%A, %d. %B %Y %I:%M%p")),
            "uptime" => {
                let text = self.read("uptime")?;
                let secs = text
                    .split_whitespace()
                    .next()
                    .and_then(|s| s.parse::<f64>().ok())
                    .ok_or_else(|| BeaconError::Message("unexpected /proc/uptime".into()))?
                    as i64;
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                let boot = now.as_secs_f64() - secs as f64;
                let boot_secs = boot.floor() as i64;
                let micros = ((boot - boot.floor()) * 1e6).round().min(999_999.0) as u32;
                let day_secs = secs % 86_400;
                serde_json::json!({
                    "seconds": secs,
                    "since_iso": crate::event::format_stamp(boot_secs, micros),
                    "since_t": boot as i64,
                    "days": secs / 86_400,
                    "time": format!("{}:{}", day_secs / 3600, day_secs % 3600 / 60),
                })
            }
            "nproc" => Value::from(
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(0),
            ),
            "netdev" => {
                let mut ret = Map::new();
                const KEYS: [&str; 16] = [
                    "rx_bytes",
                    "rx_packets",
                    "rx_errs",
                    "rx_drop",
                    "rx_fifo",
                    "rx_frame",
                    "rx_compressed",
                    "rx_multicast",
                    "tx_bytes",
                    "tx_packets",
                    "tx_errs",
                    "tx_drop",
                    "tx_fifo",
                    "tx_colls",
                    "tx_carrier",
                    "tx_compressed",
                ];
                for (iface, counters) in procfs::net_dev(&self.read("net/dev")?) {
                    let mut m = Map::new();
                    m.insert("iface".into(), Value::from(iface.as_str()));
                    for (k, v) in KEYS.iter().zip(counters) {
                        m.insert((*k).into(), Value::from(v));
                    }
                    ret.insert(iface, Value::Object(m));
                }
                Value::Object(ret)
            }
            other => {
                return Err(BeaconError::Message(format!(
                    "unknown status function {other}"
                )))
            }
        })
    }
}

/// Python's `datetime.today().strftime(fmt)`: local time through libc.
fn local_time(fmt: &str) -> String {
    let Ok(cfmt) = std::ffi::CString::new(fmt) else {
        return String::new();
    };
    // SAFETY: `time(NULL)` only returns the clock; `localtime_r` writes into our zeroed `tm`;
    // `strftime` writes at most `buf.len()` bytes into `buf` and returns how many it wrote.
    unsafe {
        let t = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return String::new();
        }
        let mut buf = [0u8; 128];
        let n = libc::strftime(buf.as_mut_ptr().cast(), buf.len(), cfmt.as_ptr(), &tm);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

impl Beacon for Status {
    fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
        let mut ret = Map::new();
        for (func, items) in &self.funcs {
            let data = match self.call(func) {
                Ok(d) => d,
                // Salt logs a failing function and leaves its entry empty.
                Err(e) => {
                    tracing::debug!("status.{func}: {e}");
                    ret.insert(func.clone(), Value::Object(Map::new()));
                    continue;
                }
            };
            let mut out = Value::Object(Map::new());
            for item in items {
                if item.as_str() == Some("all") {
                    out = data.clone();
                    continue;
                }
                let key = match item {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                let found = data.get(&key).cloned().or_else(|| {
                    let i: usize = key.parse().ok()?;
                    data.get(i).cloned()
                });
                match (found, out.as_object_mut()) {
                    (Some(v), Some(o)) => {
                        o.insert(key, v);
                    }
                    (None, _) => {
                        out = Value::from(format!(
                            "Status beacon is incorrectly configured: '{key}'"
                        ));
                    }
                    (Some(_), None) => {}
                }
            }
            ret.insert(func.clone(), out);
        }
        let mut d = Data::new();
        d.insert("tag".into(), Value::from(crate::event::stamp_now()));
        d.insert("data".into(), Value::Object(ret));
        Ok(vec![d])
    }
}
