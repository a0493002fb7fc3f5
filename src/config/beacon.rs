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

    /// An error about a map entry, pointing at its key (where the entry starts), else its value.
    pub fn error_at_key(&self, node: &Node, message: impl Into<String>) -> ConfigError {
        let mut e = self.error(node, message);
        if let Some(pos) = &node.key_pos {
            e.pos = Some(pos.clone());
        }
        e
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

impl BeaconConfig {
    /// Reject an option that is neither in `known` nor accepted by `is_name` (beacons whose
    /// keys are names, such as diskusage's mount points). Keys starting with `_` are Salt's
    /// internal ones and always pass. The error points at the key and names the nearest known
    /// option.
    pub fn reject_unknown(
        &self,
        known: &[&str],
        is_name: Option<fn(&str) -> bool>,
    ) -> Result<(), ConfigError> {
        for (key, node) in &self.items {
            if key.starts_with('_')
                || known.contains(&key.as_str())
                || is_name.is_some_and(|f| f(key))
            {
                continue;
            }
            return Err(self.error_at_key(node, unknown_option_message(key, known)));
        }
        Ok(())
    }
}

/// "unknown option 'x' (did you mean 'y'? known: ...)": the nearest known option by edit
/// distance, when it is near enough to be a misspelling.
pub fn unknown_option_message(key: &str, known: &[&str]) -> String {
    let list = if known.is_empty() {
        "this beacon takes no options".to_owned()
    } else {
        format!("known options: {}", known.join(", "))
    };
    match nearest(key, known) {
        Some(near) => format!("unknown option '{key}' (did you mean '{near}'? {list})"),
        None => format!("unknown option '{key}' ({list})"),
    }
}

/// The candidate nearest to `word` (Levenshtein distance), if within a third of its length
/// (at least 2 edits).
pub fn nearest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(2);
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != *cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_option_is_named() {
        let known = ["averages", "onchangeonly", "emitatstartup", "procfs"];
        assert_eq!(nearest("onchangonly", &known), Some("onchangeonly"));
        assert_eq!(nearest("procf", &known), Some("procfs"));
        assert_eq!(nearest("colour", &known), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        let m = unknown_option_message("onchangonly", &known);
        assert!(m.contains("'onchangonly'") && m.contains("did you mean 'onchangeonly'"));
    }
}
