//! `pkg`: packages whose state changes between installed, upgrade available and not installed
//! (Salt's `pkg` beacon).
//!
//! Options (Salt's): `pkgs` (required list of package names, `name` or `name:arch`), `refresh`
//! (accepted; beacond never runs `apt-get update` — Salt's own check of it never fires either).
//! beacond's: `dpkg_status` (default `/var/lib/dpkg/status`), `apt_lists` (default
//! `/var/lib/apt/lists`: the `*_Packages` indexes apt downloaded).
//!
//! As Salt: each package is `installed`, `upgrade` (a newer candidate exists in apt's lists) or
//! `not-installed`; the first evaluation only records it, and an event `{pkg, version, status}`
//! (tag `pkg/`) fires when it changes, `version` being the candidate for `upgrade`, the
//! installed version for `installed`, null otherwise. beacond keeps the states in its state
//! directory, so a change while it was down is reported by the next run.
//!
//! The databases are read directly (no `dpkg-query`/`apt-cache` per tick) and only re-read when
//! a file's mtime changes; versions compare per Debian policy (epoch, `~`, revision). The
//! candidate is the highest version for the package's architecture (or `all`); apt pin
//! priorities are not applied. rpm/dnf are not read: rpm's database is sqlite, which would
//! need a sqlite library in the static binary.

use super::{Beacon, BeaconError, BuildContext, Data};
use crate::config::de;
use crate::config::{BeaconConfig, ConfigError};
use crate::sources::fswatch;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::SystemTime;

/// package → (status, installed version, candidate version)
type States = HashMap<String, (String, Option<String>, Option<String>)>;

pub struct Pkg {
    pkgs: Vec<String>,
    dpkg_status: PathBuf,
    apt_lists: PathBuf,
    state_file: PathBuf,
    /// Last known status per package (None until first evaluated).
    status: BTreeMap<String, String>,
    loaded: bool,
    /// mtimes of the files last parsed, and what they gave.
    stamp: Vec<(PathBuf, Option<SystemTime>)>,
    cache: States,
}

/// Packages whose state changes between installed, upgrade available and not installed: an
/// event `{pkg, version, status}` per change (Salt's `pkg` beacon; dpkg and apt only).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The packages to watch, `name` or `name:arch` (every `pkgs` list item counts).
    pkgs: Vec<PkgName>,
    /// Accepted for Salt's sake; beacond never runs `apt-get update` (Salt's own check of it
    /// never fires either).
    #[serde(default)]
    refresh: bool,
    /// dpkg's status database.
    #[serde(default = "default_dpkg_status")]
    dpkg_status: PathBuf,
    /// Where apt keeps the `*_Packages` indexes it downloaded (upgrade candidates).
    #[serde(default = "default_apt_lists")]
    apt_lists: PathBuf,
}

fn default_dpkg_status() -> PathBuf {
    PathBuf::from("/var/lib/dpkg/status")
}

fn default_apt_lists() -> PathBuf {
    PathBuf::from("/var/lib/apt/lists")
}

/// A package name (`name` or `name:arch`), surrounding blanks dropped.
#[derive(Debug, Clone, JsonSchema)]
#[schemars(with = "String")]
struct PkgName(String);

impl<'de> Deserialize<'de> for PkgName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match s.trim() {
            "" => Err(serde::de::Error::custom("must be a package name, found ''")),
            name => Ok(PkgName(name.to_owned())),
        }
    }
}

pub fn build(cfg: &BeaconConfig, ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let c: Config = de::from_config(cfg)?;
    // Salt merges every `pkgs` list item; the typed config holds the last one.
    let mut pkgs = Vec::new();
    for (k, node) in &cfg.items {
        if k == "pkgs" {
            let items: Vec<PkgName> =
                de::from_node_named(node, "pkgs").map_err(|e| ConfigError {
                    pos: e.pos,
                    beacon: Some(cfg.name.clone()),
                    message: e.message,
                })?;
            pkgs.extend(items.into_iter().map(|PkgName(n)| n));
        }
    }
    let _ = (c.refresh, c.pkgs);
    Ok(Box::new(Pkg {
        state_file: fswatch::state_path(&ctx.state_dir, "pkg", &cfg.name),
        pkgs,
        dpkg_status: c.dpkg_status,
        apt_lists: c.apt_lists,
        status: BTreeMap::new(),
        loaded: false,
        stamp: Vec::new(),
        cache: HashMap::new(),
    }))
}

/// The stanzas of a deb822 file (`Package`, `Version`, `Architecture`, `Status`) for the wanted
/// package names only.
fn scan(text: &str, wanted: &dyn Fn(&str) -> bool, mut each: impl FnMut(&[(&str, &str)])) {
    let mut fields: Vec<(&str, &str)> = Vec::new();
    let mut keep = false;
    for line in text.lines().chain(std::iter::once("")) {
        if line.is_empty() {
            if keep {
                each(&fields);
            }
            fields.clear();
            keep = false;
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k {
            "Package" => {
                keep = wanted(v);
                fields.push((k, v));
            }
            "Version" | "Architecture" | "Status" if keep => fields.push((k, v)),
            _ => {}
        }
    }
}

fn field<'a>(f: &[(&str, &'a str)], k: &str) -> Option<&'a str> {
    f.iter().find(|(n, _)| *n == k).map(|(_, v)| *v)
}

impl Pkg {
    fn list_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(&self.apt_lists)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.ends_with("_Packages"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// package → (status, installed version, candidate version)
    fn states(&mut self) -> Result<States, BeaconError> {
        let mut files = vec![self.dpkg_status.clone()];
        files.extend(self.list_files());
        let stamp: Vec<(PathBuf, Option<SystemTime>)> = files
            .iter()
            .map(|p| {
                (
                    p.clone(),
                    std::fs::metadata(p).and_then(|m| m.modified()).ok(),
                )
            })
            .collect();
        if stamp == self.stamp && !self.cache.is_empty() {
            return Ok(self.cache.clone());
        }
        let base = |p: &str| p.split(':').next().unwrap_or(p).to_owned();
        let names: Vec<String> = self.pkgs.iter().map(|p| base(p)).collect();
        let wanted = |n: &str| names.iter().any(|w| w == n);
        // Installed: name → (version, arch).
        let text = std::fs::read_to_string(&self.dpkg_status)
            .map_err(|e| BeaconError::io(&self.dpkg_status, e))?;
        let mut installed: HashMap<String, Vec<(String, String)>> = HashMap::new();
        scan(&text, &wanted, |f| {
            let ok = field(f, "Status").is_some_and(|s| s.ends_with(" installed"));
            if let (true, Some(n), Some(v)) = (ok, field(f, "Package"), field(f, "Version")) {
                let arch = field(f, "Architecture").unwrap_or("").to_owned();
                installed
                    .entry(n.to_owned())
                    .or_default()
                    .push((v.to_owned(), arch));
            }
        });
        // Available: name → [(version, arch)].
        let mut available: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for p in &files[1..] {
            let text = match std::fs::read_to_string(p) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!("{}: {e}", p.display());
                    continue;
                }
            };
            scan(&text, &wanted, |f| {
                if let (Some(n), Some(v)) = (field(f, "Package"), field(f, "Version")) {
                    let arch = field(f, "Architecture").unwrap_or("").to_owned();
                    available
                        .entry(n.to_owned())
                        .or_default()
                        .push((v.to_owned(), arch));
                }
            });
        }
        let mut out = HashMap::new();
        for spec in &self.pkgs {
            let (name, arch) = match spec.split_once(':') {
                Some((n, a)) => (n.to_owned(), Some(a.to_owned())),
                None => (spec.clone(), None),
            };
            let inst = installed.get(&name).and_then(|v| {
                v.iter()
                    .filter(|(_, a)| arch.as_ref().is_none_or(|want| a == want))
                    .max_by(|x, y| compare_versions(&x.0, &y.0))
                    .cloned()
            });
            let state = match inst {
                None => ("not-installed".to_owned(), None, None),
                Some((ver, iarch)) => {
                    let cand = available.get(&name).and_then(|v| {
                        v.iter()
                            .filter(|(_, a)| a == &iarch || a == "all" || iarch == "all")
                            .map(|(v, _)| v)
                            .max_by(|x, y| compare_versions(x, y))
                            .cloned()
                    });
                    match cand {
                        Some(c) if compare_versions(&c, &ver) == Ordering::Greater => {
                            ("upgrade".to_owned(), Some(ver), Some(c))
                        }
                        _ => ("installed".to_owned(), Some(ver), None),
                    }
                }
            };
            out.insert(spec.clone(), state);
        }
        self.stamp = stamp;
        self.cache = out.clone();
        Ok(out)
    }
}

impl Beacon for Pkg {
    fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
        if !self.loaded {
            if let Some(v) = fswatch::load_state(&self.state_file) {
                if let Some(m) = v.as_object() {
                    for (k, s) in m {
                        if let Some(s) = s.as_str() {
                            self.status.insert(k.clone(), s.to_owned());
                        }
                    }
                }
            }
            self.loaded = true;
        }
        let states = self.states()?;
        let mut out = Vec::new();
        let mut changed = false;
        for spec in &self.pkgs {
            let Some((status, inst, cand)) = states.get(spec) else {
                continue;
            };
            let prev = self.status.insert(spec.clone(), status.clone());
            if prev.as_ref() == Some(status) {
                continue;
            }
            changed = true;
            // Salt skips the first pass of each package.
            if prev.is_none() {
                continue;
            }
            let version = cand.clone().or_else(|| inst.clone());
            let mut d = Data::new();
            d.insert("pkg".into(), Value::from(spec.as_str()));
            d.insert("version".into(), version.map_or(Value::Null, Value::from));
            d.insert("status".into(), Value::from(status.as_str()));
            out.push(d);
        }
        if changed {
            fswatch::save_state(&self.state_file, &json!(self.status))?;
        }
        Ok(out)
    }
}

/// dpkg's ordering of one character of a non-digit run: `~` sorts before everything, even the
/// end of the string; letters before other characters.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp` on an upstream version or revision.
fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let (ac, bc) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while i < a.len() && j < b.len() && a[i].is_ascii_digit() && b[j].is_ascii_digit() {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if i < a.len() && a[i].is_ascii_digit() {
            return Ordering::Greater;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

/// `[epoch:]upstream[-revision]`
fn split_version(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if e.bytes().all(|b| b.is_ascii_digit()) => (e.parse().unwrap_or(0), r),
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((up, rev)) => (epoch, up, rev),
        None => (epoch, rest, ""),
    }
}

/// Debian policy version comparison (as `dpkg --compare-versions`).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split_version(a.trim());
    let (eb, ub, rb) = split_version(b.trim());
    ea.cmp(&eb)
        .then_with(|| verrevcmp(ua, ub))
        .then_with(|| verrevcmp(ra, rb))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_policy_ordering() {
        use Ordering::*;
        for (a, b, want) in [
            ("1.0", "1.0", Equal),
            ("1.0~rc1", "1.0", Less),
            ("1.0~~", "1.0~", Less),
            ("1:0.1", "2.0", Greater),
            ("7.88.1-10+deb12u5", "7.88.1-10", Greater),
            ("1.0-1", "1.0-1ubuntu1", Less),
            ("1.01", "1.1", Equal),
            ("2.4.62-1~deb12u1", "2.4.62-1", Less),
            ("1.0a", "1.0+", Less),
        ] {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
        }
    }

    /// Every pair against the real `dpkg --compare-versions` (Debian's reference).
    #[test]
    fn matches_dpkg_compare_versions() {
        let versions = [
            "1.0",
            "1.0~rc1",
            "1.0~~",
            "1.0~",
            "1:0.1",
            "0:1.0",
            "1.0-1",
            "1.0-1ubuntu1",
            "1.0+b1",
            "1.01",
            "1.0a",
            "1.0+",
            "2.4.62-1~deb12u1",
            "2.4.62-1",
            "10",
            "9.9.9",
            "1.0-1.1",
            "1.0.0",
            "1.0-0",
            "2:1~a",
            "1.0-1~bpo1",
        ];
        for a in versions {
            for b in versions {
                let dpkg = |op: &str| {
                    std::process::Command::new("dpkg")
                        .args(["--compare-versions", a, op, b])
                        .status()
                        .expect("dpkg")
                        .success()
                };
                let want = if dpkg("lt") {
                    Ordering::Less
                } else if dpkg("gt") {
                    Ordering::Greater
                } else {
                    Ordering::Equal
                };
                assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
            }
        }
    }
}
