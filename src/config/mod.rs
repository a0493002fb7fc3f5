//! Salt YAML → typed beacon configs, with precise errors.
//!
//! Files are merged the way salt-minion merges them: every `minion.d/*.conf` (in sorted order) is
//! deep-merged into the ones before it (maps recursively, lists concatenated without duplicates),
//! and the result then replaces the top-level keys of `minion`.

pub mod beacon;
pub mod de;
pub mod describe;
pub mod minion;
pub mod sinks;
pub mod types;
pub mod yaml;

pub use beacon::{BeaconConfig, ConfigError};
pub use minion::MinionOpts;

use std::path::{Path, PathBuf};
use yaml::{Node, Pos, Yaml};

/// Everything read from a config directory, valid or not.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub minion: MinionOpts,
    /// Beacons whose generic keys parsed; the beacon's own options are checked when it is built.
    pub beacons: Vec<BeaconConfig>,
    /// `beacons: {enabled: False}` turns every beacon off, unless beacond owns the beacons.
    pub all_enabled: bool,
    /// Top-level `beacond_owns_beacons: True` (a key salt-minion ignores): this host's beacons
    /// were handed over from salt-minion, whose loop `beacons: enabled: False` switches off; that
    /// switch is then salt-minion's only, and beacond runs the beacons.
    pub owns_beacons: bool,
    /// `beacond_sinks:`: log aggregators beside the master.
    pub sinks: Vec<sinks::SinkConfig>,
    /// Problems found; the beacons they concern are not in `beacons`.
    pub errors: Vec<ConfigError>,
    /// The files that were read, for the log.
    pub files: Vec<PathBuf>,
    /// True when no config file existed and the built-in default set is used.
    pub builtin: bool,
}

/// The built-in beacons used when the machine has no minion config at all: report current load,
/// memory, swap and root-disk usage every 10 s, so a first run shows real events.
pub const BUILTIN_CONFIG: &str = "\
beacons:
  load:
    - averages:
        1m: [0.0, 0.0]
        5m: [0.0, 0.0]
        15m: [0.0, 0.0]
    - interval: 10
  memusage:
    - percent: 0%
    - interval: 10
  swapusage:
    - percent: 0%
    - interval: 10
  diskusage:
    - '^/$': 0%
    - interval: 10
";

/// Read `dir/minion` and `dir/minion.d/*.conf`. With `allow_builtin`, a directory holding neither
/// gives the built-in default set.
pub fn load_dir(dir: &Path, allow_builtin: bool) -> Loaded {
    let mut errors = Vec::new();
    let mut files = Vec::new();
    let main_file = dir.join("minion");
    let mut top: Vec<(String, Node)> = Vec::new();
    if config_file(&main_file, &mut errors) {
        files.push(main_file.clone());
        if let Some(map) = read_map(&main_file, &mut errors) {
            top = map;
        }
    }
    let mut includes: Vec<PathBuf> = match std::fs::read_dir(dir.join("minion.d")) {
        Ok(rd) => rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .filter(|p| config_file(p, &mut errors))
            .collect(),
        Err(_) => Vec::new(),
    };
    includes.sort();
    let mut merged: Vec<(String, Node)> = Vec::new();
    for file in &includes {
        files.push(file.clone());
        if let Some(map) = read_map(file, &mut errors) {
            deep_merge(&mut merged, map);
        }
    }
    // `overrides.update(include_config(...))`: a shallow update.
    for (k, v) in merged {
        match top.iter_mut().find(|(t, _)| *t == k) {
            Some(slot) => slot.1 = v,
            None => top.push((k, v)),
        }
    }
    let builtin = allow_builtin && files.is_empty();
    if builtin {
        if let Ok(Some(node)) = yaml::parse("<built-in>", BUILTIN_CONFIG) {
            if let Yaml::Map(m) = node.value {
                top = m;
            }
        }
    }
    let config_dir = dir.to_path_buf();
    let minion = minion::from_top(&top, &config_dir);
    let (beacons, all_enabled) = beacons_from_top(&top, &mut errors);
    let owns_beacons = owns_beacons(&top, &mut errors);
    let sinks = sinks::from_top(&top, &mut errors);
    Loaded {
        minion,
        beacons,
        all_enabled: all_enabled || owns_beacons,
        owns_beacons,
        sinks,
        errors,
        files,
        builtin,
    }
}

/// The largest config file read: Salt's are kilobytes; a bigger one is a mistake, not a config.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Whether `path` is a config file to read: a regular file (symlinks followed). A missing file
/// is no error; a directory, FIFO, device or symlink loop under a config name is one (a FIFO
/// would block the reader, and skipping any of them silently hides the operator's mistake).
fn config_file(path: &Path, errors: &mut Vec<ConfigError>) -> bool {
    let name = path.display();
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => true,
        Ok(m) => {
            let kind = if m.is_dir() {
                "a directory"
            } else {
                "a FIFO, socket or device"
            };
            errors.push(ConfigError::new(
                None,
                format!("{name}: not a regular file ({kind}): not read"),
            ));
            false
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && path.symlink_metadata().is_err() => {
            false
        }
        Err(e) => {
            errors.push(ConfigError::new(None, format!("{name}: cannot read: {e}")));
            false
        }
    }
}

/// At most `MAX_CONFIG_BYTES` of `file`, or why not.
fn read_bounded(file: &Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(file)?
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {} MiB",
            MAX_CONFIG_BYTES >> 20
        )));
    }
    Ok(bytes)
}

/// Load a file that must hold a map (or nothing).
fn read_map(file: &Path, errors: &mut Vec<ConfigError>) -> Option<Vec<(String, Node)>> {
    let name = file.display().to_string();
    let text = match read_bounded(file) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(t) => t,
            Err(_) => {
                errors.push(ConfigError::new(
                    Some(Pos {
                        file: name.into(),
                        line: 1,
                        col: 1,
                    }),
                    "file is not valid UTF-8",
                ));
                return None;
            }
        },
        Err(e) => {
            errors.push(ConfigError::new(None, format!("{name}: cannot read: {e}")));
            return None;
        }
    };
    match yaml::parse(&name, &text) {
        Ok(None) => Some(Vec::new()),
        Ok(Some(node)) => match node.value {
            Yaml::Map(m) => Some(m),
            _ => {
                errors.push(ConfigError::new(
                    Some(node.pos.clone()),
                    format!(
                        "a minion config file must hold a map of settings, found {}",
                        node.kind()
                    ),
                ));
                None
            }
        },
        Err(e) => {
            errors.push(ConfigError::new(Some(e.pos), e.message));
            None
        }
    }
}

/// `salt.utils.dictupdate.update(dest, upd, recursive_update=True, merge_lists=True)`.
fn deep_merge(dest: &mut Vec<(String, Node)>, upd: Vec<(String, Node)>) {
    for (k, v) in upd {
        let Some(slot) = dest.iter_mut().find(|(d, _)| *d == k) else {
            dest.push((k, v));
            continue;
        };
        match (&mut slot.1.value, v.value) {
            (Yaml::Map(d), Yaml::Map(u)) => deep_merge(d, u),
            (Yaml::Seq(d), Yaml::Seq(u)) => {
                for item in u {
                    if !d.contains(&item) {
                        d.push(item);
                    }
                }
            }
            (_, value) => {
                slot.1 = Node {
                    value,
                    pos: v.pos,
                    key_pos: v.key_pos,
                };
            }
        }
    }
}

/// The top-level key that hands the beacons over from salt-minion to beacond.
pub const OWNS_BEACONS_KEY: &str = "beacond_owns_beacons";

fn owns_beacons(top: &[(String, Node)], errors: &mut Vec<ConfigError>) -> bool {
    let Some((_, node)) = top.iter().find(|(k, _)| k == OWNS_BEACONS_KEY) else {
        return false;
    };
    match node.value {
        Yaml::Bool(b) => b,
        Yaml::Null => false,
        _ => {
            errors.push(ConfigError::new(
                Some(node.pos.clone()),
                format!(
                    "{OWNS_BEACONS_KEY} must be True or False, found {}",
                    node.kind()
                ),
            ));
            false
        }
    }
}

fn beacons_from_top(
    top: &[(String, Node)],
    errors: &mut Vec<ConfigError>,
) -> (Vec<BeaconConfig>, bool) {
    let Some((_, node)) = top.iter().find(|(k, _)| k == "beacons") else {
        return (Vec::new(), true);
    };
    let entries = match &node.value {
        Yaml::Map(m) => m,
        Yaml::Null => return (Vec::new(), true),
        _ => {
            errors.push(ConfigError::new(
                Some(node.pos.clone()),
                format!(
                    "beacons must be a map of beacon name to its configuration, found {}",
                    node.kind()
                ),
            ));
            return (Vec::new(), true);
        }
    };
    let mut all_enabled = true;
    let mut beacons = Vec::new();
    for (name, value) in entries {
        if name == "enabled" {
            match value.value {
                Yaml::Bool(b) => all_enabled = b,
                _ => errors.push(ConfigError::new(
                    Some(value.pos.clone()),
                    format!(
                        "beacons: enabled must be True or False, found {}",
                        value.kind()
                    ),
                )),
            }
            continue;
        }
        let key_pos = value.key_pos.clone().unwrap_or_else(|| value.pos.clone());
        match BeaconConfig::parse(name, key_pos, value) {
            Ok(cfg) => beacons.push(cfg),
            Err(e) => errors.push(e),
        }
    }
    (beacons, all_enabled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn dir_with(files: &[(&str, &str)]) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "beacond-cfg-{}-{}",
            std::process::id(),
            files.len() * 1000 + files.first().map(|f| f.1.len()).unwrap_or(0)
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("minion.d")).expect("mkdir");
        for (name, text) in files {
            fs::write(d.join(name), text).expect("write");
        }
        d
    }

    #[test]
    fn minion_d_merges_like_salt() {
        let d = dir_with(&[
            ("minion", "id: m1\nbeacons:\n  load: []\n"),
            (
                "minion.d/a.conf",
                "beacons:\n  memusage:\n    - percent: 10%\n",
            ),
            (
                "minion.d/b.conf",
                "beacons:\n  memusage:\n    - percent: 20%\n  swapusage: [{percent: 1}]\n",
            ),
        ]);
        let l = load_dir(&d, false);
        assert!(l.errors.is_empty(), "{:?}", l.errors);
        assert_eq!(l.minion.id, "m1");
        let names: Vec<_> = l.beacons.iter().map(|b| b.name.as_str()).collect();
        // minion.d replaces the main file's `beacons:` wholesale, as in Salt.
        assert_eq!(names, ["memusage", "swapusage"]);
        let pct = l.beacons[0].opt("percent").and_then(|n| n.as_str());
        assert_eq!(pct, Some("20%"));
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn owning_the_beacons_overrides_salt_minions_switch() {
        let d = std::env::temp_dir().join(format!("beacond-owns-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(d.join("minion.d")).expect("mkdir");
        fs::write(
            d.join("minion.d/beacons.conf"),
            "beacons:\n  memusage:\n    - percent: 1%\n",
        )
        .expect("write");
        fs::write(
            d.join("minion.d/beacond.conf"),
            "beacons:\n  enabled: False\n",
        )
        .expect("write");
        // salt-minion's switch alone turns beacond off too...
        let l = load_dir(&d, false);
        assert!(!l.all_enabled && !l.owns_beacons);
        // ...unless beacond owns the beacons; the drop-ins' beacons still merge.
        fs::write(
            d.join("minion.d/beacond.conf"),
            "beacond_owns_beacons: True\nbeacons:\n  enabled: False\n",
        )
        .expect("write");
        let l = load_dir(&d, false);
        assert!(l.errors.is_empty(), "{:?}", l.errors);
        assert!(l.all_enabled && l.owns_beacons);
        let names: Vec<_> = l.beacons.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["memusage"]);
        // A typo is an error with its position, not silently false.
        fs::write(
            d.join("minion.d/beacond.conf"),
            "beacond_owns_beacons: yes please\n",
        )
        .expect("write");
        let l = load_dir(&d, false);
        assert!(!l.owns_beacons);
        let msg = l.errors.first().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            msg.contains("beacond.conf:1") && msg.contains("True or False"),
            "{msg}"
        );
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn builtin_only_without_any_file() {
        let d = std::env::temp_dir().join(format!("beacond-empty-{}", std::process::id()));
        let _ = fs::create_dir_all(&d);
        let l = load_dir(&d, true);
        assert!(l.builtin);
        assert_eq!(l.beacons.len(), 4);
        assert!(l.errors.is_empty(), "{:?}", l.errors);
        let l = load_dir(&d, false);
        assert!(!l.builtin && l.beacons.is_empty());
    }
}
