//! `network_settings`: interface attribute changes (Salt's `network_settings` beacon), event
//! driven from rtnetlink notifications instead of Salt's pyroute2 poll.
//!
//! Options: [`Config`] (`beacond --describe network_settings`). The
//! attributes are Salt's (pyroute2 IPDB names): `family`, `txqlen`, `ipdb_scope`, `index`,
//! `operstate`, `group`, `carrier_changes`, `ipaddr`, `neighbours`, `ifname`, `promiscuity`,
//! `linkmode`, `broadcast`, `address`, `num_tx_queues`, `ipdb_priority`, `kind`, `qdisc`, `mtu`,
//! `num_rx_queues`, `carrier`, `flags`, `ifi_type`, `ports`; plus beacond's `ipaddr4` and
//! `ipaddr6` (`ipaddr` restricted to one family).
//!
//! Source: a `NETLINK_ROUTE` socket subscribed to `RTMGRP_LINK`, `RTMGRP_IPV4_IFADDR`,
//! `RTMGRP_IPV6_IFADDR` (and `RTMGRP_NEIGH` only when `neighbours` is watched), seeded by a
//! dump at start. The first evaluation records the baseline (as Salt's first run); afterwards
//! each notification burst is diffed against the last state, so a change fires once and a flap
//! that ends where it began fires nothing. With an explicit `interval`, changes are batched:
//! at most one evaluation per interval, reporting the net change (Salt's polling semantics).
//! If the kernel drops notifications (socket overflow), the state is dumped again, so the diff
//! stays right, and an `overflow` event says intermediate states may have been missed.
//!
//! Events: tag `.../network_settings/<interface>`, data `{interface, change: {attr: value}}`;
//! coalesced: tag `.../network_settings/result`, data `{changes: {<interface>: {attr: value}}}`.
//! `onvalue`: only fire when the attribute changed to that value (a falsy `onvalue` always fires,
//! as in Salt). An interface that appears after startup reports its watched attributes.

use super::{Beacon, BeaconError, BuildContext, Data, Drive};
use crate::config::de::{self, Located};
use crate::config::types::NameMap;
use crate::config::{BeaconConfig, ConfigError};
use crate::sources::netlink::{self, Socket};
use fancy_regex::Regex;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// Salt's `ATTRS`, plus beacond's `ipaddr4`/`ipaddr6`.
pub const ATTRS: [&str; 26] = [
    "family",
    "txqlen",
    "ipdb_scope",
    "index",
    "operstate",
    "group",
    "carrier_changes",
    "ipaddr",
    "neighbours",
    "ifname",
    "promiscuity",
    "linkmode",
    "broadcast",
    "address",
    "num_tx_queues",
    "ipdb_priority",
    "kind",
    "qdisc",
    "mtu",
    "num_rx_queues",
    "carrier",
    "flags",
    "ifi_type",
    "ports",
    "ipaddr4",
    "ipaddr6",
];

const OPERSTATES: [&str; 7] = [
    "UNKNOWN",
    "NOTPRESENT",
    "DOWN",
    "LOWERLAYERDOWN",
    "TESTING",
    "DORMANT",
    "UP",
];

struct Watch {
    /// The config key: an interface name, else a regex searched in names.
    key: String,
    regex: Option<Regex>,
    /// attribute → onvalue (None: any change).
    attrs: Vec<(String, Option<Value>)>,
}

#[derive(Default)]
struct Link {
    name: String,
    master: Option<u64>,
    attrs: BTreeMap<&'static str, Value>,
}

#[derive(Default)]
struct Model {
    links: BTreeMap<u64, Link>,
    /// (ifindex, family, address, prefixlen), in the order seen.
    addrs: Vec<(u64, u8, String, u64)>,
    /// (ifindex, destination), in the order seen.
    neigh: Vec<(u64, String)>,
}

type Snapshot = BTreeMap<String, BTreeMap<&'static str, Value>>;

pub struct NetworkSettings {
    watches: Vec<Watch>,
    coalesce: bool,
    neighbours: bool,
    batch: Option<Duration>,
    /// The subscribed socket, registered with the runtime on first `ready`.
    sock: Option<Socket>,
    afd: Option<AsyncFd<Socket>>,
    model: Model,
    last: Option<Snapshot>,
    /// Messages read by `ready`, applied by `evaluate`.
    queue: Vec<Vec<u8>>,
    overflowed: bool,
    dirty: bool,
    next_eval: Option<Instant>,
    deadline: Option<Instant>,
    seq: u32,
}

/// Interface attribute changes (from rtnetlink notifications): an event per interface whose
/// watched attributes changed.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Interface name (or a Python regex searched in interface names, as Salt does) → the
    /// attributes watched: attribute → nothing (any change) or `{onvalue: <value>}` (only a
    /// change to that value).
    #[serde(default)]
    interfaces: Option<NameMap<Option<Attributes>>>,
    /// One `result` event with every interface's changes instead of one event per interface.
    #[serde(default)]
    coalesce: bool,
}

/// One interface's watched attributes: attribute → nothing or `{onvalue: <value>}`.
type Attributes = NameMap<Located<Option<OnValue>>>;

/// An attribute's options.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct OnValue {
    /// Fire only when the attribute changed to this value (a falsy one always fires, as Salt).
    #[serde(default)]
    onvalue: Option<Value>,
}

pub fn build(cfg: &BeaconConfig, _ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let c: Config = de::from_config(cfg)?;
    let mut watches = Vec::new();
    for (key, attrs) in c.interfaces.into_iter().flat_map(|m| m.0) {
        watches.push(watch(cfg, key, attrs.map(|a| a.0).unwrap_or_default())?);
    }
    let neighbours = watches
        .iter()
        .any(|w| w.attrs.iter().any(|(a, _)| a == "neighbours"));
    Ok(Box::new(NetworkSettings {
        watches,
        coalesce: c.coalesce,
        neighbours,
        batch: cfg.interval.map(Duration::from_secs_f64),
        sock: None,
        afd: None,
        model: Model::default(),
        last: None,
        queue: Vec::new(),
        overflowed: false,
        dirty: false,
        next_eval: None,
        deadline: None,
        seq: 0,
    }))
}

fn watch(
    cfg: &BeaconConfig,
    key: String,
    items: Vec<(String, Located<Option<OnValue>>)>,
) -> Result<Watch, ConfigError> {
    let mut attrs = Vec::new();
    for (attr, spec) in items {
        if !ATTRS.contains(&attr.as_str()) {
            return Err(ConfigError {
                pos: Some(spec.pos.clone()),
                beacon: Some(cfg.name.clone()),
                message: format!(
                    "interfaces.{key}.{attr} is not an interface attribute; use one of {}",
                    ATTRS.join(", ")
                ),
            });
        }
        attrs.push((attr, spec.value.and_then(|o| o.onvalue)));
    }
    // Salt: a key that is not an interface name is used as a regex (re.search). A key that is
    // no valid regex can still name an interface exactly.
    let regex = match Regex::new(&key) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(beacon = %cfg.name, "interfaces.{key}: not a valid regex ({e}); matched as an exact interface name only");
            None
        }
    };
    Ok(Watch { key, regex, attrs })
}

/// Python's truthiness of a config value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

impl Model {
    fn apply(&mut self, ty: u16, payload: &[u8]) {
        match ty {
            netlink::RTM_NEWLINK => self.new_link(payload),
            netlink::RTM_DELLINK => {
                if let Some(index) = ifindex(payload, 4) {
                    self.links.remove(&index);
                    self.addrs.retain(|a| a.0 != index);
                    self.neigh.retain(|n| n.0 != index);
                }
            }
            netlink::RTM_NEWADDR | netlink::RTM_DELADDR => {
                let Some(addr) = address(payload) else { return };
                self.addrs.retain(|a| *a != addr);
                if ty == netlink::RTM_NEWADDR {
                    self.addrs.push(addr);
                }
            }
            netlink::RTM_NEWNEIGH | netlink::RTM_DELNEIGH => {
                let Some(index) = ifindex(payload, 4) else {
                    return;
                };
                let dst = netlink::attributes(payload, 12)
                    .into_iter()
                    .find(|(t, _)| *t == 1)
                    .and_then(|(_, d)| netlink::as_ip(d));
                let Some(dst) = dst else { return };
                self.neigh.retain(|n| !(n.0 == index && n.1 == dst));
                if ty == netlink::RTM_NEWNEIGH {
                    self.neigh.push((index, dst));
                }
            }
            _ => {}
        }
    }

    fn new_link(&mut self, p: &[u8]) {
        if p.len() < 16 {
            return;
        }
        let index = u32::from_ne_bytes([p[4], p[5], p[6], p[7]]) as u64;
        let link = self.links.entry(index).or_default();
        let a = &mut link.attrs;
        a.insert("family", Value::from(p[0]));
        a.insert("ifi_type", Value::from(u16::from_ne_bytes([p[2], p[3]])));
        a.insert("index", Value::from(index));
        a.insert(
            "flags",
            Value::from(u32::from_ne_bytes([p[8], p[9], p[10], p[11]])),
        );
        a.insert("ipdb_scope", Value::from("system"));
        a.insert("ipdb_priority", Value::from(0));
        a.entry("kind").or_insert(Value::Null);
        for (t, d) in netlink::attributes(p, 16) {
            let (key, value) = match t {
                1 => ("address", Value::from(netlink::as_mac(d))),
                2 => ("broadcast", Value::from(netlink::as_mac(d))),
                3 => {
                    link.name = netlink::as_string(d);
                    ("ifname", Value::from(link.name.clone()))
                }
                4 => ("mtu", netlink::as_u32(d).into()),
                6 => ("qdisc", Value::from(netlink::as_string(d))),
                10 => {
                    link.master = netlink::as_u32(d).filter(|m| *m != 0);
                    continue;
                }
                13 => ("txqlen", netlink::as_u32(d).into()),
                16 => {
                    let s = netlink::as_u8(d)
                        .and_then(|i| OPERSTATES.get(i as usize))
                        .copied()
                        .unwrap_or("UNKNOWN");
                    ("operstate", Value::from(s))
                }
                17 => ("linkmode", netlink::as_u8(d).into()),
                18 => {
                    let kind = netlink::attributes(d, 0)
                        .into_iter()
                        .find(|(t, _)| *t == 1)
                        .map(|(_, k)| Value::from(netlink::as_string(k)))
                        .unwrap_or(Value::Null);
                    ("kind", kind)
                }
                27 => ("group", netlink::as_u32(d).into()),
                30 => ("promiscuity", netlink::as_u32(d).into()),
                31 => ("num_tx_queues", netlink::as_u32(d).into()),
                32 => ("num_rx_queues", netlink::as_u32(d).into()),
                33 => ("carrier", netlink::as_u8(d).into()),
                35 => ("carrier_changes", netlink::as_u32(d).into()),
                _ => continue,
            };
            a.insert(key, value);
        }
        // A link message without IFLA_MASTER means it has none.
        if !netlink::attributes(p, 16).iter().any(|(t, _)| *t == 10) {
            link.master = None;
        }
    }

    /// Every interface's attributes by name, as pyroute2's IPDB view shows them.
    fn snapshot(&self, neighbours: bool) -> Snapshot {
        let mut out = Snapshot::new();
        for (index, link) in &self.links {
            let mut attrs = link.attrs.clone();
            let pairs = |family: Option<u8>| -> Value {
                Value::Array(
                    self.addrs
                        .iter()
                        .filter(|a| a.0 == *index && family.is_none_or(|f| f == a.1))
                        .map(|a| Value::Array(vec![Value::from(a.2.clone()), Value::from(a.3)]))
                        .collect(),
                )
            };
            attrs.insert("ipaddr", pairs(None));
            attrs.insert("ipaddr4", pairs(Some(libc::AF_INET as u8)));
            attrs.insert("ipaddr6", pairs(Some(libc::AF_INET6 as u8)));
            let ports: Vec<Value> = self
                .links
                .iter()
                .filter(|(_, l)| l.master == Some(*index))
                .map(|(i, _)| Value::from(*i))
                .collect();
            attrs.insert("ports", Value::Array(ports));
            if neighbours {
                let n: Vec<Value> = self
                    .neigh
                    .iter()
                    .filter(|n| n.0 == *index)
                    .map(|n| Value::from(n.1.clone()))
                    .collect();
                attrs.insert("neighbours", Value::Array(n));
            }
            out.insert(link.name.clone(), attrs);
        }
        out
    }
}

/// The interfaces (by name, with the attributes the events report) that the rtnetlink messages
/// of `datagram` describe (a dump or notifications). Also the fuzzing entry point
/// (fuzz/fuzz_targets/netlink.rs).
pub fn interfaces_from_netlink(
    datagram: &[u8],
    neighbours: bool,
) -> BTreeMap<String, BTreeMap<&'static str, Value>> {
    let mut model = Model::default();
    for (ty, payload) in netlink::messages(datagram) {
        model.apply(ty, payload);
    }
    model.snapshot(neighbours)
}

fn ifindex(p: &[u8], off: usize) -> Option<u64> {
    Some(u32::from_ne_bytes(p.get(off..off + 4)?.try_into().ok()?) as u64)
}

/// An `ifaddrmsg` as (ifindex, family, address, prefixlen).
fn address(p: &[u8]) -> Option<(u64, u8, String, u64)> {
    if p.len() < 8 {
        return None;
    }
    let attrs = netlink::attributes(p, 8);
    // IFA_ADDRESS, else IFA_LOCAL.
    let addr = attrs
        .iter()
        .find(|(t, _)| *t == 1)
        .or_else(|| attrs.iter().find(|(t, _)| *t == 2))
        .and_then(|(_, d)| netlink::as_ip(d))?;
    Some((ifindex(p, 4)?, p[0], addr, p[1] as u64))
}

impl NetworkSettings {
    fn groups(&self) -> u32 {
        let mut g =
            netlink::RTMGRP_LINK | netlink::RTMGRP_IPV4_IFADDR | netlink::RTMGRP_IPV6_IFADDR;
        if self.neighbours {
            g |= netlink::RTMGRP_NEIGH;
        }
        g
    }

    /// Rebuild the model from dumps on a separate request socket.
    fn resync(&mut self) -> Result<(), BeaconError> {
        let err = |e: std::io::Error| BeaconError::Message(format!("rtnetlink dump: {e}"));
        let req = Socket::open(0, false).map_err(err)?;
        let mut model = Model::default();
        let mut tables = vec![netlink::RTM_GETLINK, netlink::RTM_GETADDR];
        if self.neighbours {
            tables.push(netlink::RTM_GETNEIGH);
        }
        for ty in tables {
            self.seq = self.seq.wrapping_add(1);
            for (t, payload) in req.dump(ty, self.seq).map_err(err)? {
                model.apply(t, &payload);
            }
        }
        self.model = model;
        Ok(())
    }

    /// Apply what `ready` queued and whatever else is waiting on the socket.
    fn drain(&mut self) -> Result<(), BeaconError> {
        let sock = match (&self.sock, &self.afd) {
            (Some(s), _) => s,
            (None, Some(a)) => a.get_ref(),
            (None, None) => return Ok(()),
        };
        let mut buf = Vec::new();
        loop {
            match sock.recv(&mut buf) {
                Ok(_) => self.queue.push(std::mem::take(&mut buf)),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => self.overflowed = true,
                Err(e) => return Err(BeaconError::Message(format!("rtnetlink: {e}"))),
            }
        }
        for dgram in std::mem::take(&mut self.queue) {
            for (ty, payload) in netlink::messages(&dgram) {
                self.model.apply(ty, payload);
                self.dirty = true;
            }
        }
        Ok(())
    }

    fn diff(&mut self) -> Vec<Data> {
        let now = self.model.snapshot(self.neighbours);
        let Some(last) = self.last.as_mut() else {
            self.last = Some(now);
            return Vec::new();
        };
        let mut seen: Vec<&str> = Vec::new();
        let mut changes: Vec<(String, Map<String, Value>)> = Vec::new();
        for w in &self.watches {
            let names: Vec<&String> = if now.contains_key(&w.key) {
                vec![now.keys().find(|k| **k == w.key).unwrap_or(&w.key)]
            } else {
                now.keys()
                    .filter(|n| {
                        w.regex
                            .as_ref()
                            .is_some_and(|r| r.is_match(n).unwrap_or(false))
                    })
                    .collect()
            };
            for name in names {
                if seen.contains(&name.as_str()) {
                    continue;
                }
                seen.push(name);
                let cur = &now[name];
                let before = last.get(name);
                let mut change = Map::new();
                for (attr, onvalue) in &w.attrs {
                    let Some(value) = cur.get(attr.as_str()) else {
                        continue;
                    };
                    if before.and_then(|b| b.get(attr.as_str())) == Some(value) {
                        continue;
                    }
                    match onvalue {
                        Some(want) if truthy(want) && want != value => {}
                        _ => {
                            change.insert(attr.clone(), value.clone());
                        }
                    }
                }
                if !change.is_empty() {
                    changes.push((name.clone(), change));
                }
            }
        }
        *last = now;
        let mut out = Vec::new();
        if self.coalesce {
            if !changes.is_empty() {
                let mut all = Map::new();
                for (name, change) in changes {
                    all.insert(name, Value::Object(change));
                }
                let mut d = Data::new();
                d.insert("tag".into(), Value::from("result"));
                d.insert("changes".into(), Value::Object(all));
                out.push(d);
            }
        } else {
            for (name, change) in changes {
                let mut d = Data::new();
                d.insert("tag".into(), Value::from(name.clone()));
                d.insert("interface".into(), Value::from(name));
                d.insert("change".into(), Value::Object(change));
                out.push(d);
            }
        }
        out
    }
}

impl Beacon for NetworkSettings {
    fn start(&mut self) -> Result<(), BeaconError> {
        self.afd = None;
        // Subscribe first, then dump: nothing can fall between the two.
        let sock = Socket::open(self.groups(), true)
            .map_err(|e| BeaconError::Message(format!("rtnetlink socket: {e}")))?;
        self.sock = Some(sock);
        self.resync()?;
        // The baseline is the state at start (Salt's first run); on a restart after a failure
        // the old baseline stays, so changes made meanwhile are reported.
        if self.last.is_none() {
            self.last = Some(self.model.snapshot(self.neighbours));
        }
        tracing::info!(
            interfaces = self.model.links.len(),
            "network_settings: watching rtnetlink"
        );
        Ok(())
    }

    fn drive(&mut self) -> Drive<'_> {
        Drive::Source(Box::pin(async move {
            let deadline = self.deadline;
            if let Some(raw) = self.sock.take() {
                // SAFETY: the socket's descriptor is owned by `raw`, which the AsyncFd now owns
                // and never replaces, so it stays open and the same until the AsyncFd drops.
                let afd =
                    unsafe { AsyncFd::register_with_interest(raw, tokio::io::Interest::READABLE) }
                        .map_err(|e| BeaconError::Message(format!("rtnetlink socket: {e}")))?;
                self.afd = Some(afd);
            }
            let Some(sock) = &self.afd else {
                return Err(BeaconError::Message("rtnetlink socket not open".into()));
            };
            let mut got: Vec<Vec<u8>> = Vec::new();
            let mut overflow = false;
            loop {
                tokio::select! {
                    guard = sock.readable() => {
                        let mut guard = guard.map_err(|e| BeaconError::Message(format!("rtnetlink: {e}")))?;
                        let res = guard.try_io(|s| {
                            let mut buf = Vec::new();
                            s.get_ref().recv(&mut buf).map(|_| buf)
                        });
                        match res {
                            Ok(Ok(buf)) => { got.push(buf); break; }
                            Ok(Err(e)) if e.raw_os_error() == Some(libc::ENOBUFS) => { overflow = true; break; }
                            Ok(Err(e)) => return Err(BeaconError::Message(format!("rtnetlink: {e}"))),
                            Err(_would_block) => continue,
                        }
                    }
                    _ = async { if let Some(d) = deadline { tokio::time::sleep_until(d).await } }, if deadline.is_some() => break,
                }
            }
            self.queue.extend(got);
            self.overflowed |= overflow;
            Ok(())
        }))
    }

    fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
        self.drain()?;
        let mut out = Vec::new();
        if self.overflowed {
            self.overflowed = false;
            tracing::warn!("rtnetlink notifications were dropped by the kernel; state re-read");
            self.resync()?;
            self.dirty = true;
            let mut d = Data::new();
            d.insert("tag".into(), Value::from("overflow"));
            d.insert(
                "overflow".into(),
                Value::from("the kernel dropped rtnetlink notifications; interface state was re-read, intermediate changes may be missing"),
            );
            if self.last.is_some() {
                out.push(d);
            }
        }
        if self.last.is_some() && !self.dirty {
            return Ok(out);
        }
        let now = Instant::now();
        if let (Some(batch), Some(next)) = (self.batch, self.next_eval) {
            if now < next {
                self.deadline = Some(next);
                return Ok(out);
            }
            self.next_eval = Some(now + batch);
        } else if let Some(batch) = self.batch {
            self.next_eval = Some(now + batch);
        }
        self.deadline = None;
        self.dirty = false;
        out.extend(self.diff());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(name: &str) -> Vec<u8> {
        let p = format!("{}/fuzz/corpus/netlink/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    /// The fuzzing seeds: dumps received from a real kernel (fuzz/tools/capture_netlink.py).
    #[test]
    fn seed_dumps_describe_the_loopback() {
        let mut dump = corpus("rtm-getlink-dump-0.bin");
        dump.extend(corpus("rtm-getaddr-dump-0.bin"));
        let ifs = interfaces_from_netlink(&dump, false);
        let lo = &ifs["lo"];
        assert_eq!(lo["mtu"], 65536);
        assert_eq!(lo["operstate"], "UNKNOWN");
        assert_eq!(lo["ipaddr4"], serde_json::json!([["127.0.0.1", 8]]));
    }
}
