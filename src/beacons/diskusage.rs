//! `diskusage`: per mount point (or Python regex of mount points), usage as psutil's
//! `disk_usage().percent` against a threshold (Salt's `diskusage` beacon).
//!
//! Options: each item `<mount or regex>: <percent>`; beacond's own `mounts_file` (default
//! `/proc/self/mounts`) names the mount table, so tests can use a fixture.

use super::{read_text, usage_percent, Beacon, BeaconError, BuildContext, Data};
use crate::config::{BeaconConfig, ConfigError};
use fancy_regex::Regex;
use serde_json::Value;
use std::path::PathBuf;

/// Options of beacond's that are not mount points.
/// The options this beacon takes beside mount points (checked by `beacons::build`).
pub const OPTIONS: &[&str] = &["mounts_file"];

/// A key that names mount points: a path or a regex (Salt also takes Windows drives), not a
/// plain word, so that a misspelt option such as `mount_file` is an error rather than a
/// pattern that never matches.
pub fn is_mount_key(key: &str) -> bool {
    !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub struct DiskUsage {
    /// In config order: a later regex that matches an earlier mount reports it again, as Salt does.
    rules: Vec<(Regex, f64)>,
    mounts_file: PathBuf,
}

pub fn build(cfg: &BeaconConfig, _ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let mut rules = Vec::new();
    for (mount, threshold) in &cfg.items {
        if OPTIONS.contains(&mount.as_str()) || mount.starts_with('_') {
            continue;
        }
        // Salt appends `$` and uses re.match (anchored at the start).
        let pattern = if mount.ends_with('$') {
            format!("^(?:{mount})")
        } else {
            format!("^(?:{mount}$)")
        };
        let re = Regex::new(&pattern).map_err(|e| {
            cfg.error(
                threshold,
                format!("'{mount}' is neither a mount point nor a valid regular expression: {e}"),
            )
        })?;
        rules.push((re, cfg.percent(mount, threshold)?));
    }
    Ok(Box::new(DiskUsage {
        rules,
        mounts_file: PathBuf::from(cfg.str_opt("mounts_file", "/proc/self/mounts")?),
    }))
}

/// Mount points in a mounts table, octal escapes (`\040` for a space) decoded.
fn mount_points(table: &str) -> Vec<String> {
    table
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(unescape_octal)
        .collect()
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// psutil's `disk_usage(path).percent`: used over (used + available to unprivileged users).
fn disk_percent(path: &str) -> Option<f64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let frsize = st.fragment_size() as f64;
    let used = (st.blocks() as f64 - st.blocks_free() as f64) * frsize;
    let avail = st.blocks_available() as f64 * frsize;
    Some(usage_percent(used, used + avail))
}

impl Beacon for DiskUsage {
    fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
        let mounts = mount_points(&read_text(&self.mounts_file)?);
        let mut out = Vec::new();
        for (re, threshold) in &self.rules {
            for mount in &mounts {
                if !re.is_match(mount).unwrap_or(false) {
                    continue;
                }
                let Some(percent) = disk_percent(mount) else {
                    tracing::warn!("{mount} is not a valid mount point");
                    continue;
                };
                if percent >= *threshold {
                    let mut data = Data::new();
                    data.insert("diskusage".into(), Value::from(percent));
                    data.insert("mount".into(), Value::String(mount.clone()));
                    out.push(data);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_table_unescapes_spaces() {
        let t = "sysfs /sys sysfs rw 0 0\n/dev/sda1 /mnt/my\\040disk ext4 rw 0 0\n";
        assert_eq!(mount_points(t), ["/sys", "/mnt/my disk"]);
    }
}
