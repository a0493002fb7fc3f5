//! `log`: lines of a file matching regexes (Salt's `log_beacon`, configured as `log`).
//!
//! Options (Salt's): `file` (required), `tags` (`<tag>: {regex: <pattern>}`; the pattern must
//! match at the start of the line, as Python's `re.match`). Each matching line fires
//! `salt/beacon/<id>/log/<tag>` with Salt's keys `tag`, `match` (`yes`), `raw` (the line),
//! `error` (empty), plus beacond's `groups` (the regex groups, null where a group did not take
//! part) and `groupdict` (named groups).
//!
//! Like Salt, the first run starts at the end of the file. Unlike Salt, beacond follows the file
//! event-driven (inotify on its directory), keeps reading a renamed file until the writer has
//! moved to the new one (rotation by rename + create loses nothing), restarts at 0 after
//! truncation (copytruncate), only consumes complete lines, and remembers its position across
//! restarts in its state directory (lines written while beacond was down are reported).

use super::{Beacon, BeaconError, BuildContext, Data, Drive};
use crate::config::de::{self, Located};
use crate::config::types::{NameMap, PyRegex};
use crate::config::yaml::Pos;
use crate::config::{BeaconConfig, ConfigError};
use crate::sources::fswatch::{self, Inotify, DIR_MASK};
use fancy_regex::Regex;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// At most this much is read per file per evaluation; the rest follows on the next one.
const MAX_READ: u64 = 16 * 1024 * 1024;

pub struct LogBeacon {
    path: PathBuf,
    dir: PathBuf,
    name: OsString,
    tags: Vec<(String, Regex)>,
    state_file: PathBuf,
    inotify: Option<Inotify>,
    /// The file at `path` being followed.
    cur: Option<Follow>,
    /// A rotated-away file still being drained.
    old: Option<Follow>,
    /// A problem found at start, reported by the first evaluation (Salt's error shape).
    notice: Option<String>,
}

struct Follow {
    file: File,
    dev: u64,
    ino: u64,
    pos: u64,
    /// Inside a line longer than `MAX_READ`, dropping bytes up to its newline.
    skipping: bool,
    /// Such lines dropped since the last evaluation reported them.
    skipped: u64,
}

/// Lines appended to a log file that match a tag's regex: one event per match, with the
/// line and the regex's groups (Salt's `log` beacon).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The absolute path of the log file to follow (across rotation and truncation).
    file: Located<PathBuf>,
    /// Tag suffix to `{regex: <pattern>}`: a line matching the pattern at its start (Python's
    /// `re.match`) fires an event tagged `salt/beacon/<id>/log/<tag>`.
    #[serde(default)]
    tags: NameMap<Tag>,
}

/// What one tag matches.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Tag {
    /// A Python regular expression, matched at the start of each line.
    regex: Located<PyRegex>,
}

pub fn build(cfg: &BeaconConfig, ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let c: Config = de::from_config(cfg)?;
    let err = |pos: &Pos, message: String| ConfigError {
        pos: Some(pos.clone()),
        beacon: Some(cfg.name.clone()),
        message,
    };
    let path = c.file.value.clone();
    if !path.is_absolute() {
        return Err(err(
            &c.file.pos,
            format!("file must be an absolute path, found '{}'", path.display()),
        ));
    }
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(err(
            &c.file.pos,
            "file must name a file, not a directory".into(),
        ));
    };
    let mut tags = Vec::new();
    for (tag, spec) in &c.tags.0 {
        if spec.regex.pattern.is_empty() {
            return Err(err(
                &spec.regex.pos,
                format!("tags.{tag} must be a map with a non-empty `regex` string"),
            ));
        }
        // Python's re.match: anchored at the start of the line only.
        let re = spec
            .regex
            .anchored()
            .map_err(|e| err(&spec.regex.pos, format!("tags.{tag}.regex: {e}")))?;
        tags.push((tag.clone(), re));
    }
    Ok(Box::new(LogBeacon {
        state_file: fswatch::state_path(
            &ctx.state_dir,
            "log",
            &format!("{}\0{}", cfg.name, path.display()),
        ),
        dir: dir.to_path_buf(),
        name: name.to_os_string(),
        path,
        tags,
        inotify: None,
        cur: None,
        old: None,
        notice: None,
    }))
}

impl Follow {
    fn open(path: &std::path::Path) -> std::io::Result<Follow> {
        let file = File::open(path)?;
        let m = file.metadata()?;
        Ok(Follow {
            file,
            dev: m.dev(),
            ino: m.ino(),
            pos: 0,
            skipping: false,
            skipped: 0,
        })
    }

    /// Append the complete lines after `pos` to `out`, advancing `pos` past them.
    fn read_lines(&mut self, out: &mut Vec<String>) -> std::io::Result<()> {
        loop {
            self.file.seek(SeekFrom::Start(self.pos))?;
            let mut buf = Vec::new();
            (&mut self.file).take(MAX_READ).read_to_end(&mut buf)?;
            let Some(last) = buf.iter().rposition(|&b| b == b'\n') else {
                if buf.len() as u64 >= MAX_READ {
                    // A line longer than MAX_READ (a binary file, a runaway writer): waiting for
                    // its newline would stop the beacon for good, keeping it would make a
                    // 16 MiB event. It is dropped, counted and reported.
                    if !self.skipping {
                        self.skipping = true;
                        self.skipped += 1;
                    }
                    self.pos += buf.len() as u64;
                    continue;
                }
                return Ok(());
            };
            let mut lines = buf[..last].split(|&b| b == b'\n');
            if std::mem::take(&mut self.skipping) {
                // The tail of the over-long line.
                lines.next();
            }
            for line in lines {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                out.push(String::from_utf8_lossy(line).into_owned());
            }
            self.pos += last as u64 + 1;
            if (buf.len() as u64) < MAX_READ {
                return Ok(());
            }
        }
    }
}

impl LogBeacon {
    /// The file in the log's directory with this inode (a rotated copy), opened.
    fn find_inode(&self, dev: u64, ino: u64) -> Option<Follow> {
        let rd = std::fs::read_dir(&self.dir).ok()?;
        for e in rd.filter_map(Result::ok) {
            let Ok(m) = e.metadata() else {
                continue;
            };
            if m.ino() == ino && m.dev() == dev && m.is_file() {
                return Follow::open(&e.path()).ok().filter(|f| f.ino == ino);
            }
        }
        None
    }

    fn io(&self, e: std::io::Error) -> BeaconError {
        BeaconError::io(&self.path, e)
    }

    fn save(&self) -> Result<(), BeaconError> {
        let v = match &self.cur {
            Some(f) => json!({"dev": f.dev, "ino": f.ino, "pos": f.pos}),
            None => json!({"missing": true}),
        };
        fswatch::save_state(&self.state_file, &v)
    }

    fn events(&self, lines: &[String]) -> Vec<Data> {
        let mut out = Vec::new();
        for line in lines {
            for (tag, re) in &self.tags {
                let mut d = Data::new();
                d.insert("tag".into(), Value::from(tag.as_str()));
                match re.captures(line) {
                    Ok(Some(caps)) => {
                        d.insert("match".into(), Value::from("yes"));
                        d.insert("raw".into(), Value::from(line.as_str()));
                        d.insert("error".into(), Value::from(""));
                        let groups: Vec<Value> = caps
                            .iter()
                            .skip(1)
                            .map(|m| m.map_or(Value::Null, |m| Value::from(m.as_str())))
                            .collect();
                        d.insert("groups".into(), Value::Array(groups));
                        let mut named = Data::new();
                        for name in re.capture_names().flatten() {
                            let v = caps
                                .name(name)
                                .map_or(Value::Null, |m| Value::from(m.as_str()));
                            named.insert(name.to_owned(), v);
                        }
                        d.insert("groupdict".into(), Value::Object(named));
                    }
                    Ok(None) => continue,
                    // Salt's "bad match" event (e.g. the backtracking limit was hit).
                    Err(e) => {
                        tracing::warn!("{}: tag {tag}: {e}", self.path.display());
                        d.insert("match".into(), Value::from("no"));
                        d.insert("raw".into(), Value::from(""));
                        d.insert("error".into(), Value::from("bad match"));
                    }
                }
                out.push(d);
            }
        }
        out
    }
}

impl Beacon for LogBeacon {
    fn start(&mut self) -> Result<(), BeaconError> {
        let mut ino = Inotify::new().map_err(|e| self.io(e))?;
        ino.add_watch(&self.dir, DIR_MASK)
            .map_err(|e| BeaconError::io(&self.dir, e))?;
        self.inotify = Some(ino);
        self.old = None;
        let saved = fswatch::load_state(&self.state_file);
        self.cur = match Follow::open(&self.path) {
            Ok(mut f) => {
                let size = f.file.metadata().map_err(|e| self.io(e))?.len();
                f.pos = match &saved {
                    // Same file as last time: resume where we were (unless truncated since).
                    Some(s) if s["ino"] == f.ino && s["dev"] == f.dev => {
                        s["pos"].as_u64().filter(|p| *p <= size).unwrap_or(0)
                    }
                    // A different file (rotated, or created after we saw none): all of it is new.
                    Some(_) => 0,
                    // First run ever: start at the end, as Salt does.
                    None => size,
                };
                Some(f)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(self.io(e)),
        };
        // Rotated while beacond was down: finish the old file (now e.g. `app.log.1`) first.
        if let Some(s) = &saved {
            let (dev, ino, pos) = (s["dev"].as_u64(), s["ino"].as_u64(), s["pos"].as_u64());
            let moved = self.cur.as_ref().is_none_or(|f| Some(f.ino) != ino);
            if let (true, Some(dev), Some(ino), Some(pos)) = (moved, dev, ino, pos) {
                match self.find_inode(dev, ino) {
                    Some(mut f) if f.file.metadata().is_ok_and(|m| m.len() >= pos) => {
                        f.pos = pos;
                        self.old = Some(f);
                    }
                    _ => {
                        self.notice = Some(format!(
                            "{} was rotated while beacond was down and the previous file (inode {ino}) is gone: lines after its byte {pos} were not read",
                            self.path.display()
                        ))
                    }
                }
            }
        }
        self.save()?;
        Ok(())
    }

    fn drive(&mut self) -> Drive<'_> {
        Drive::Source(Box::pin(async move {
            let path = self.dir.clone();
            let ino = self
                .inotify
                .as_mut()
                .ok_or_else(|| BeaconError::Message("log beacon not started".into()))?;
            // Only our file's name matters in a busy log directory.
            let name = self.name.as_os_str();
            ino.wait_until(|evs| {
                evs.iter()
                    .any(|e| e.overflow() || e.name.as_deref() == Some(name))
            })
            .await
            .map_err(|e| BeaconError::io(&path, e))
        }))
    }

    fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
        if let Some(ino) = &mut self.inotify {
            let _ = ino.drain();
        }
        let before = self.cur.as_ref().map(|f| (f.ino, f.pos));
        let mut lines = Vec::new();
        // 1. Whatever the writer still appended to a rotated-away file.
        if let Some(old) = &mut self.old {
            old.read_lines(&mut lines)
                .map_err(|e| BeaconError::io(&self.path, e))?;
        }
        // 2. The file now at the path.
        match std::fs::metadata(&self.path) {
            Ok(m) => {
                let same = self
                    .cur
                    .as_ref()
                    .is_some_and(|f| f.ino == m.ino() && f.dev == m.dev());
                if same {
                    if let Some(f) = &mut self.cur {
                        if m.len() < f.pos {
                            tracing::info!("{}: truncated, reading from 0", self.path.display());
                            f.pos = 0;
                        }
                    }
                } else {
                    // Rotated (or appeared): drain the old inode, then follow the new one from 0.
                    if let Some(mut prev) = self.cur.take() {
                        prev.read_lines(&mut lines)
                            .map_err(|e| BeaconError::io(&self.path, e))?;
                        self.old = Some(prev);
                    }
                    match Follow::open(&self.path) {
                        Ok(f) => self.cur = Some(f),
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(self.io(e)),
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Renamed or removed: keep draining it until a new file shows up.
                if let Some(mut prev) = self.cur.take() {
                    prev.read_lines(&mut lines)
                        .map_err(|e| BeaconError::io(&self.path, e))?;
                    self.old = Some(prev);
                }
            }
            Err(e) => return Err(self.io(e)),
        }
        if let Some(f) = &mut self.cur {
            f.read_lines(&mut lines)
                .map_err(|e| BeaconError::io(&self.path, e))?;
            // The writer has moved on to the new file: the old one is done.
            if f.pos > 0 {
                self.old = None;
            }
        }
        if self.cur.as_ref().map(|f| (f.ino, f.pos)) != before {
            self.save()?;
        }
        let skipped: u64 = [&mut self.cur, &mut self.old]
            .into_iter()
            .flatten()
            .map(|f| std::mem::take(&mut f.skipped))
            .sum();
        if skipped > 0 && self.notice.is_none() {
            self.notice = Some(format!(
                "{}: {skipped} line(s) longer than {} MiB skipped",
                self.path.display(),
                MAX_READ >> 20
            ));
        }
        let mut out = Vec::new();
        if let Some(msg) = self.notice.take() {
            tracing::warn!("{msg}");
            let mut d = Data::new();
            d.insert("tag".into(), Value::from("global"));
            d.insert("match".into(), Value::from("no"));
            d.insert("raw".into(), Value::from(""));
            d.insert("error".into(), Value::from(msg));
            out.push(d);
        }
        out.extend(self.events(&lines));
        Ok(out)
    }
}
