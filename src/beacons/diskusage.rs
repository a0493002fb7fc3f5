//! `diskusage`: per mount point (or Python regex of mount points), usage as psutil's
//! `disk_usage().percent` against a threshold (Salt's `diskusage` beacon).
//!
//! Options: each item `<mount or regex>: <percent>`; beacond's own `mounts_file` (default
//! `/proc/self/mounts`) names the mount table, so tests can use a fixture.
//!
//! The kernel's mount table is pollable: `poll()` reports POLLPRI|POLLERR on an open
//! `/proc/*/mounts` once the table changed. The table is read once and again only then,
//! and the matched mount points are kept, so an idle tick is one `poll()` and one
//! `statvfs()` per watched mount, without allocating. Any other file (a fixture) is read
//! on every tick.

use super::{usage_percent, Beacon, BeaconError, BuildContext, Data};
use crate::config::{BeaconConfig, ConfigError};
use fancy_regex::Regex;
use serde_json::Value;
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
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
    /// The open mount table, when it is the kernel's (pollable) one.
    table: Option<File>,
    /// Read buffer of the table, reused.
    text: String,
    /// (rule index, mount point, its C path) matched at the last read, in report order.
    matched: Vec<(usize, String, CString)>,
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
        table: None,
        text: String::new(),
        matched: Vec::new(),
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
fn disk_percent(path: &std::ffi::CStr) -> Option<f64> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let frsize = st.fragment_size() as f64;
    let used = (st.blocks() as f64 - st.blocks_free() as f64) * frsize;
    let avail = st.blocks_available() as f64 * frsize;
    Some(usage_percent(used, used + avail))
}

/// Whether the kernel says the mount table behind `f` changed since it was last read.
fn table_changed(f: &File) -> bool {
    let mut pfd = libc::pollfd {
        fd: f.as_raw_fd(),
        events: libc::POLLPRI,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the duration of the call; timeout 0 never blocks.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n != 0 && (n < 0 || pfd.revents & (libc::POLLPRI | libc::POLLERR) != 0)
}

impl DiskUsage {
    /// Re-read the table if it is not the kernel's or the kernel says it changed.
    fn refresh(&mut self) -> Result<(), BeaconError> {
        let io = |e| BeaconError::io(&self.mounts_file, e);
        let pollable = self.mounts_file.starts_with("/proc");
        match &mut self.table {
            Some(f) if pollable => {
                if !table_changed(f) {
                    return Ok(());
                }
                f.seek(SeekFrom::Start(0)).map_err(io)?;
                self.text.clear();
                f.read_to_string(&mut self.text).map_err(io)?;
            }
            _ => {
                let mut f = File::open(&self.mounts_file).map_err(io)?;
                self.text.clear();
                f.read_to_string(&mut self.text).map_err(io)?;
                // The kernel remembers the table's generation at open: later polls report
                // changes made after it.
                if pollable {
                    self.table = Some(f);
                }
            }
        }
        let mounts = mount_points(&self.text);
        self.matched.clear();
        for (i, (re, _)) in self.rules.iter().enumerate() {
            for mount in &mounts {
                if re.is_match(mount).unwrap_or(false) {
                    if let Ok(c) = CString::new(mount.as_bytes()) {
                        self.matched.push((i, mount.clone(), c));
                    }
                }
            }
        }
        Ok(())
    }
}

impl Beacon for DiskUsage {
    fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
        self.refresh()?;
        let mut out = Vec::new();
        for (rule, mount, cpath) in &self.matched {
            let Some(percent) = disk_percent(cpath) else {
                tracing::warn!("{mount} is not a valid mount point");
                continue;
            };
            if percent >= self.rules[*rule].1 {
                let mut data = Data::new();
                data.insert("diskusage".into(), Value::from(percent));
                data.insert("mount".into(), Value::String(mount.clone()));
                out.push(data);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kernel_table_is_read_once_until_it_changes() {
        let mut d = DiskUsage {
            rules: vec![(Regex::new("^(?:/$)").expect("re"), 0.0)],
            mounts_file: PathBuf::from("/proc/self/mounts"),
            table: None,
            text: String::new(),
            matched: Vec::new(),
        };
        for _ in 0..3 {
            let out = d.evaluate().expect("evaluate");
            assert_eq!(out.len(), 1);
            assert_eq!(out[0]["mount"], "/");
        }
        let table = d.table.as_ref().expect("kept open");
        assert!(!table_changed(table), "no mount happened");
    }

    #[test]
    fn mounts_table_unescapes_spaces() {
        let t = "sysfs /sys sysfs rw 0 0\n/dev/sda1 /mnt/my\\040disk ext4 rw 0 0\n";
        assert_eq!(mount_points(t), ["/sys", "/mnt/my disk"]);
    }
}
