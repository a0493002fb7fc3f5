//! `network_info`: per-interface counters against thresholds (Salt's `network_info` beacon).
//!
//! Options: [`Config`] (`beacond --describe network_info`).
//!
//! `type: equal` (the default) fires when any configured counter equals its value, `greater`
//! when any is above it. Salt treats every other type as `equal`, including `less`, which its
//! documentation never defined; beacond gives `less` its plain meaning (below the value) and
//! rejects other types. An event per matching interface on every evaluation:
//! `{interface, network_info: {<all eight counters>}}`, tag `salt/beacon/<id>/network_info/`.

use super::{read_text, Beacon, BeaconError, BuildContext, Data};
use crate::config::de::{self, Located};
use crate::config::types::{default_procfs, Count, NameMap};
use crate::config::{BeaconConfig, ConfigError};
use crate::sources::procfs;
use schemars::JsonSchema;
use serde::Deserialize;
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

/// How a counter is compared with its value.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Compare {
    /// Fires when a counter equals its value.
    #[default]
    Equal,
    /// Fires when a counter is above its value.
    Greater,
    /// Fires when a counter is below its value (Salt treats it as `equal`).
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

/// Per-interface network counters (psutil's `net_io_counters(pernic=True)`) against
/// thresholds: an event per matching interface on every evaluation.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Interface name to its thresholds.
    #[serde(default)]
    interfaces: NameMap<Located<Thresholds>>,
    /// Where procfs is mounted (`<procfs>/net/dev` is read).
    #[serde(default = "default_procfs")]
    procfs: PathBuf,
}

/// One interface's thresholds: the beacon fires when any configured counter compares true.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Thresholds {
    /// How each counter is compared with its value.
    #[serde(default, rename = "type")]
    compare: Compare,
    /// Bytes sent.
    bytes_sent: Option<Count>,
    /// Bytes received.
    bytes_recv: Option<Count>,
    /// Packets sent.
    packets_sent: Option<Count>,
    /// Packets received.
    packets_recv: Option<Count>,
    /// Receive errors.
    errin: Option<Count>,
    /// Transmit errors.
    errout: Option<Count>,
    /// Incoming packets dropped.
    dropin: Option<Count>,
    /// Outgoing packets dropped.
    dropout: Option<Count>,
}

pub fn build(cfg: &BeaconConfig, _ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let c: Config = de::from_config(cfg)?;
    let mut interfaces = Vec::new();
    for (name, t) in c.interfaces.0 {
        let values = [
            t.bytes_sent,
            t.bytes_recv,
            t.packets_sent,
            t.packets_recv,
            t.errin,
            t.errout,
            t.dropin,
            t.dropout,
        ];
        let thresholds: Vec<(usize, u64)> = values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|Count(n)| (i, n)))
            .collect();
        if thresholds.is_empty() {
            return Err(ConfigError {
                pos: Some(t.pos.clone()),
                beacon: Some(cfg.name.clone()),
                message: format!(
                    "interfaces.{name} names no counter ({}); it could never fire",
                    COUNTERS.join(", ")
                ),
            });
        }
        interfaces.push(Interface {
            name,
            compare: t.compare,
            thresholds,
        });
    }
    Ok(Box::new(NetworkInfo {
        interfaces,
        net_dev: c.procfs.join("net/dev"),
    }))
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
