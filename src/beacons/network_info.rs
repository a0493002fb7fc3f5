//! `network_info`: per-interface counters against thresholds (Salt's `network_info` beacon).
//!
//! Options: `interfaces` (a map of interface name → `{type, <counter>: <value>, ...}` where the
//! counters are psutil's `net_io_counters(pernic=True)` fields: `bytes_sent`, `bytes_recv`,
//! `packets_sent`, `packets_recv`, `errin`, `errout`, `dropin`, `dropout`), and `procfs` (default
//! `/proc`; beacond's, so tests can use a fixture of `net/dev`).
//!
//! `type: equal` (the default) fires when any configured counter equals its value, `greater`
//! when any is above it. Salt treats every other type as `equal`, including `less`, which its
//! documentation never defined; beacond gives `less` its plain meaning (below the value) and
//! rejects other types. An event per matching interface on every evaluation:
//! `{interface, network_info: {<all eight counters>}}`, tag `salt/beacon/<id>/network_info/`.

use super::{read_text, Beacon, BeaconError, BuildContext, Data};
use crate::config::yaml::{Node, Yaml};
use crate::config::{BeaconConfig, ConfigError};
use crate::sources::procfs;
use serde_json::{Map, Value};
use std::path::PathBuf;

/// psutil's field names, in Salt's `__attrs` order.
pub const COUNTERS: [&str; 8] = [
    "bytes_sent",
    "bytes_recv",
    "packets_sent",
    "packets_recv",
    "errin",
    "errout",
    "dropin",
    "dropout",
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Compare {
    Equal,
    Greater,
    Less,
}

struct Interface {
    name: String,
    compare: Compare,
    /// (index into COUNTERS, value)
    thresholds: Vec<(usize, u64)>,
}

pub struct NetworkInfo {
    interfaces: Vec<Interface>,
    net_dev: PathBuf,
}

/// The options this beacon takes (checked by `beacons::build`).
pub const OPTIONS: &[&str] = &["interfaces", "procfs"];

pub fn build(cfg: &BeaconConfig, _ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let mut interfaces = Vec::new();
    if let Some(node) = cfg.opt("interfaces") {
        let Some(entries) = node.as_map() else {
            return Err(cfg.error(
                node,
                format!(
                    "interfaces must be a map of interface name to counters, found {}",
                    node.kind()
                ),
            ));
        };
        for (name, conf) in entries {
            interfaces.push(interface(cfg, name, conf)?);
        }
    }
    Ok(Box::new(NetworkInfo {
        interfaces,
        net_dev: PathBuf::from(cfg.str_opt("procfs", "/proc")?).join("net/dev"),
    }))
}

fn interface(cfg: &BeaconConfig, name: &str, conf: &Node) -> Result<Interface, ConfigError> {
    let Some(items) = conf.as_map() else {
        return Err(cfg.error(
            conf,
            format!(
                "interfaces.{name} must be a map such as {{type: greater, bytes_sent: 100000}}, found {}",
                conf.kind()
            ),
        ));
    };
    let mut compare = Compare::Equal;
    let mut thresholds = Vec::new();
    for (key, value) in items {
        if key == "type" {
            compare = match value.as_str() {
                Some("equal") => Compare::Equal,
                Some("greater") => Compare::Greater,
                Some("less") => Compare::Less,
                _ => {
                    return Err(cfg.error(
                        value,
                        format!(
                            "interfaces.{name}.type must be equal, greater or less, found {}",
                            value.to_json()
                        ),
                    ))
                }
            };
            continue;
        }
        let Some(i) = COUNTERS.iter().position(|c| c == key) else {
            return Err(cfg.error(
                value,
                format!(
                    "interfaces.{name}.{key} is not a counter; use type or one of {}",
                    COUNTERS.join(", ")
                ),
            ));
        };
        // Salt: int(value), so numbers and numeric strings.
        let n = match &value.value {
            Yaml::Int(n) if *n >= 0 => Some(*n as u64),
            Yaml::Str(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        let Some(n) = n else {
            return Err(cfg.error(
                value,
                format!(
                    "interfaces.{name}.{key} must be a whole number, found {}",
                    value.kind()
                ),
            ));
        };
        thresholds.push((i, n));
    }
    if thresholds.is_empty() {
        return Err(cfg.error(
            conf,
            format!(
                "interfaces.{name} names no counter ({}); it could never fire",
                COUNTERS.join(", ")
            ),
        ));
    }
    Ok(Interface {
        name: name.to_owned(),
        compare,
        thresholds,
    })
}

/// psutil's `net_io_counters(pernic=True)` from `/proc/net/dev`: per interface, the counters in
/// `COUNTERS` order.
pub fn parse_net_dev(text: &str) -> Vec<(String, [u64; 8])> {
    // receive: bytes packets errs drop fifo frame compressed multicast; transmit: bytes
    // packets errs drop ...
    procfs::net_dev(text)
        .into_iter()
        .map(|(name, f)| (name, [f[8], f[0], f[9], f[1], f[2], f[10], f[3], f[11]]))
        .collect()
}

impl Beacon for NetworkInfo {
    fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
        let stats = parse_net_dev(&read_text(&self.net_dev)?);
        let mut out = Vec::new();
        for iface in &self.interfaces {
            let Some((_, counters)) = stats.iter().find(|(n, _)| *n == iface.name) else {
                continue;
            };
            let fire = iface.thresholds.iter().any(|(i, v)| match iface.compare {
                Compare::Equal => counters[*i] == *v,
                Compare::Greater => counters[*i] > *v,
                Compare::Less => counters[*i] < *v,
            });
            if fire {
                let mut info = Map::new();
                for (name, value) in COUNTERS.iter().zip(counters) {
                    info.insert((*name).into(), Value::from(*value));
                }
                let mut data = Data::new();
                data.insert("interface".into(), Value::from(iface.name.clone()));
                data.insert("network_info".into(), Value::Object(info));
                out.push(data);
            }
        }
        Ok(out)
    }
}
