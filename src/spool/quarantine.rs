//! Batches a master refused: kept aside, bounded, so they cannot block the spool.
//!
//! `<spool dir>/quarantine.jsonl` holds one JSON line per event (`{"reason", "event"}`); past
//! [`MAX_BYTES`] it becomes `quarantine.jsonl.1` (replacing the older one), so at most twice
//! that is kept. Every quarantine is also reported as a `beacond/quarantined` event.

use crate::event::Event;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Bytes of one quarantine file at most.
pub const MAX_BYTES: u64 = 1 << 20;
pub const FILE: &str = "quarantine.jsonl";

#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct QuarantineError {
    path: PathBuf,
    source: std::io::Error,
}

/// Append `events` (refused for `reason`) to the quarantine file in `dir`. Returns its path.
pub fn put(dir: &Path, events: &[Event], reason: &str) -> Result<PathBuf, QuarantineError> {
    let path = dir.join(FILE);
    let err = |source| QuarantineError {
        path: path.clone(),
        source,
    };
    let mut text = String::new();
    for ev in events {
        let line = serde_json::json!({"reason": reason, "event": ev.to_json()});
        text.push_str(&line.to_string());
        text.push('\n');
    }
    let size = fs::symlink_metadata(&path).map(|m| m.len()).unwrap_or(0);
    if size > 0 && size + text.len() as u64 > MAX_BYTES {
        fs::rename(&path, dir.join(format!("{FILE}.1"))).map_err(err)?;
    }
    // One event bigger than the bound is kept cut short (still reported in full counts).
    if text.len() as u64 > MAX_BYTES {
        let mut end = MAX_BYTES as usize;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('\n');
    }
    // Events can be sensitive: 0600, and never through a symlink planted in the spool dir.
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_data().map_err(err)?;
    Ok(path)
}

/// The `beacond/quarantined` event's data.
pub fn report_data(events: &[Event], reason: &str, file: Option<&Path>) -> Map<String, Value> {
    let mut beacons: BTreeMap<&str, u64> = BTreeMap::new();
    for ev in events {
        *beacons.entry(ev.beacon.as_str()).or_default() += 1;
    }
    let uid = |ev: Option<&Event>| {
        ev.and_then(|e| e.data.get("beacond_uid"))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let mut d = Map::new();
    d.insert("tag".into(), Value::from("quarantined"));
    d.insert("count".into(), Value::from(events.len()));
    d.insert("reason".into(), Value::from(reason));
    d.insert(
        "beacons".into(),
        Value::Object(
            beacons
                .into_iter()
                .map(|(k, v)| (k.to_owned(), Value::from(v)))
                .collect(),
        ),
    );
    d.insert("first_uid".into(), uid(events.first()));
    d.insert("last_uid".into(), uid(events.last()));
    d.insert(
        "file".into(),
        file.map_or(Value::Null, |p| Value::from(p.display().to_string())),
    );
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(i: usize, pad: usize) -> Event {
        let mut d = Map::new();
        d.insert("i".into(), i.into());
        d.insert("pad".into(), "x".repeat(pad).into());
        Event::from_beacon("m", "b", d)
    }

    #[test]
    fn quarantine_is_bounded_to_two_files() {
        let dir = std::env::temp_dir().join(format!("bd-quar-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        for i in 0..40 {
            put(&dir, &[ev(i, 100_000)], "refused").expect("put");
        }
        let a = fs::metadata(dir.join(FILE)).expect("file").len();
        let b = fs::metadata(dir.join(format!("{FILE}.1")))
            .expect("old")
            .len();
        assert!(a <= MAX_BYTES && b <= MAX_BYTES, "{a} {b}");
        let last = fs::read_to_string(dir.join(FILE)).expect("read");
        assert!(last.contains("\"i\":39"));
        // A symlink planted as the file is not followed.
        fs::remove_file(dir.join(FILE)).expect("rm");
        std::os::unix::fs::symlink(dir.join("target"), dir.join(FILE)).expect("symlink");
        assert!(put(&dir, &[ev(0, 1)], "refused").is_err());
        assert!(!dir.join("target").exists());
        let _ = fs::remove_dir_all(&dir);
    }
}
