//! One configured beacon: Salt's generic keys taken out, the beacon's own options kept with
//! their positions, and helpers that turn a wrong option into a precise error.

use super::yaml::{Node, Pos, Yaml};
use std::fmt;

/// A configuration problem, pointing at the file, line and column, and naming the beacon.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub pos: Option<Pos>,
    pub beacon: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(pos) = &self.pos {
            write!(f, "{pos}: ")?;
        }
        if let Some(b) = &self.beacon {
            write!(f, "beacon '{b}': ")?;
        }
        f.write_str(&self.message)
    }
}

impl ConfigError {
    pub fn new(pos: Option<Pos>, message: impl Into<String>) -> Self {
        ConfigError {
            pos,
            beacon: None,
            message: message.into(),
        }
    }
}

/// The keys every beacon understands, handled by the scheduler rather than the beacon.
pub const GENERIC_KEYS: [&str; 5] = [
    "interval",
    "enabled",
    "beacon_module",
    "run_once",
    "disable_during_state_run",
];

/// A beacon as configured under `beacons:`.
#[derive(Debug, Clone)]
pub struct BeaconConfig {
    /// The key under `beacons:`; it names the beacon in event tags.
    pub name: String,
    /// The beacon kind: `beacon_module`, else the name.
    pub module: String,
    /// Where the beacon's key stands.
    pub pos: Pos,
    /// The beacon's own options, list items merged as Salt's `list_to_dict` does.
    pub options: Vec<(String, Node)>,
    /// The original list items in order (beacons like `diskusage` iterate them).
    pub items: Vec<(String, Node)>,
    /// The whole config node, for change detection on reload.
    pub raw: Node,
    /// Seconds between evaluations (`interval`); `None` means Salt's loop interval (1 s).
    pub interval: Option<f64>,
    pub enabled: bool,
    pub run_once: bool,
    pub disable_during_state_run: bool,
}

impl BeaconConfig {
    /// Read a beacon's config node: a list of single-key maps, or a map (or nothing at all).
    pub fn parse(name: &str, key_pos: Pos, node: &Node) -> Result<Self, ConfigError> {
        let err = |pos: &Pos, msg: String| ConfigError {
            pos: Some(pos.clone()),
            beacon: Some(name.to_owned()),
            message: msg,
        };
        let mut items: Vec<(String, Node)> = Vec::new();
        match &node.value {
            Yaml::Null => {}
            Yaml::Map(entries) => items.extend(entries.iter().cloned()),
            Yaml::Seq(list) => {
                for item in list {
                    match &item.value {
                        Yaml::Map(entries) => items.extend(entries.iter().cloned()),
                        Yaml::Null => {}
                        _ => {
                            return Err(err(
                                &item.pos,
                                format!(
                                "each list item must be a map such as `- interval: 10`, found {}",
                                item.kind()
                            ),
                            ))
                        }
                    }
                }
            }
            _ => {
                return Err(err(
                    &node.pos,
                    format!(
                        "configuration must be a list of single-key maps (or a map), found {}",
                        node.kind()
                    ),
                ))
            }
        }
        let mut options: Vec<(String, Node)> = Vec::new();
        for (k, v) in &items {
            match options.iter_mut().find(|(o, _)| o == k) {
                Some(slot) => slot.1 = v.clone(),
                None => options.push((k.clone(), v.clone())),
            }
        }
        let mut cfg = BeaconConfig {
            name: name.to_owned(),
            module: name.to_owned(),
            pos: key_pos,
            options: Vec::new(),
            items: Vec::new(),
            raw: node.clone(),
            interval: None,
            enabled: true,
            run_once: false,
            disable_during_state_run: false,
        };
        for (k, v) in &options {
            match k.as_str() {
                "interval" => {
                    let secs = match (&v.value, v.as_f64()) {
                        (Yaml::Null, _) => None,
                        (_, Some(s)) if s >= 0.0 && s.is_finite() => Some(s),
                        _ => {
                            return Err(err(
                                &v.pos,
                                format!("interval must be a number of seconds, found {}", v.kind()),
                            ))
                        }
                    };
                    // Salt treats a falsy interval (0) as "every loop".
                    cfg.interval = secs.filter(|s| *s > 0.0);
                }
                "enabled" => cfg.enabled = generic_bool(name, k, v)?,
                "run_once" => cfg.run_once = generic_bool(name, k, v)?,
                "disable_during_state_run" => {
                    cfg.disable_during_state_run = generic_bool(name, k, v)?
                }
                "beacon_module" => match v.as_str() {
                    Some(m) if !m.is_empty() => cfg.module = m.to_owned(),
                    _ => {
                        return Err(err(
                            &v.pos,
                            format!("beacon_module must be a beacon name, found {}", v.kind()),
                        ))
                    }
                },
                _ => {}
            }
        }
        let own = |k: &String| !GENERIC_KEYS.contains(&k.as_str());
        cfg.options = options.into_iter().filter(|(k, _)| own(k)).collect();
        cfg.items = items.into_iter().filter(|(k, _)| own(k)).collect();
        Ok(cfg)
    }

    /// An error about this beacon at a node's position.
    pub fn error(&self, at: &Node, message: impl Into<String>) -> ConfigError {
        ConfigError {
            pos: Some(at.pos.clone()),
            beacon: Some(self.name.clone()),
            message: message.into(),
        }
    }

    /// An error about this beacon at its key.
    pub fn error_here(&self, message: impl Into<String>) -> ConfigError {
        ConfigError {
            pos: Some(self.pos.clone()),
            beacon: Some(self.name.clone()),
            message: message.into(),
        }
    }

    /// An option by name (the last one wins, as in Salt).
    pub fn opt(&self, key: &str) -> Option<&Node> {
        self.options.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A required option.
    pub fn require(&self, key: &str, expected: &str) -> Result<&Node, ConfigError> {
        self.opt(key)
            .ok_or_else(|| self.error_here(format!("missing required option '{key}' ({expected})")))
    }

    /// A boolean option with a default.
    pub fn bool_opt(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.opt(key) {
            None => Ok(default),
            Some(n) => match n.value {
                Yaml::Bool(b) => Ok(b),
                _ => Err(self.error(n, format!("{key} must be a boolean, found {}", n.kind()))),
            },
        }
    }

    /// A string option with a default.
    pub fn str_opt(&self, key: &str, default: &str) -> Result<String, ConfigError> {
        match self.opt(key) {
            None => Ok(default.to_owned()),
            Some(n) => match &n.value {
                Yaml::Str(s) => Ok(s.clone()),
                Yaml::Int(i) => Ok(i.to_string()),
                _ => Err(self.error(n, format!("{key} must be a string, found {}", n.kind()))),
            },
        }
    }

    /// A number option (seconds, counts) with a default.
    pub fn f64_opt(&self, key: &str, default: f64) -> Result<f64, ConfigError> {
        match self.opt(key) {
            None => Ok(default),
            Some(n) => n.as_f64().ok_or_else(|| {
                self.error(n, format!("{key} must be a number, found {}", n.kind()))
            }),
        }
    }

    /// A percentage as Salt reads it: `63%`, `'63'` or `63`.
    pub fn percent(&self, what: &str, n: &Node) -> Result<f64, ConfigError> {
        let bad = || {
            self.error(
                n,
                format!(
                    "{what} must be a percentage such as 90% or 90, found {}",
                    n.kind()
                ),
            )
        };
        match &n.value {
            Yaml::Int(_) | Yaml::Float(_) => n.as_f64().ok_or_else(bad),
            Yaml::Str(s) => s.replace('%', "").trim().parse::<f64>().map_err(|_| bad()),
            _ => Err(bad()),
        }
    }
}

fn generic_bool(beacon: &str, key: &str, v: &Node) -> Result<bool, ConfigError> {
    match v.value {
        Yaml::Bool(b) => Ok(b),
        _ => Err(ConfigError {
            pos: Some(v.pos.clone()),
            beacon: Some(beacon.to_owned()),
            message: format!("{key} must be True or False, found {}", v.kind()),
        }),
    }
}
