//! What `btmp` and `wtmp` share (records from [`crate::sources::utmp`]): Salt's `users`/`groups`/`defaults`/`time_range` filter, and a
//! follower that reads records as they are appended (inotify on the file's directory), across
//! rotation and truncation, remembering its position in the state dir across restarts.
//!
//! Salt's event keys come from `struct.unpack("hi32s4s32s256shhiii4i20x")` zipped with ten
//! names, which shifts the last four: Salt's `exit_status` is `ut_exit.e_termination`,
//! `session` is `ut_exit.e_exit`, `time` is `ut_session` and `addr` is `ut_tv.tv_sec`. beacond
//! keeps those keys with exactly Salt's values (reactors are written against them) and adds the
//! fields under their own names: `ut_session`, `tv_sec`, `tv_usec`, `timestamp` (RFC 3339, UTC)
//! and `ip` (from `ut_addr_v6`).

use super::{Beacon, BeaconError, BuildContext, Data, Drive};
use crate::config::de::Located;
use crate::config::types::NameMap;
use crate::config::{BeaconConfig, ConfigError};
use crate::sources::fswatch::Inotify;
pub use crate::sources::utmp::{
    read_all, rfc3339_utc, Record, DEAD_PROCESS, RECORD_SIZE, USER_PROCESS,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

// ---------------------------------------------------------------------------------------------
// Filters: users, groups, defaults, time_range.

/// A `time_range` bound: a time of day (`8am`, `16:30`) or a full local date and time.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Bound {
    TimeOfDay(u32),
    At(i64, u32, u32, u32),
}

/// A record's local time: (year, month, day, second of day).
type LocalTime = (i64, u32, u32, u32);

impl Bound {
    fn key(&self, at: LocalTime) -> LocalTime {
        match *self {
            Bound::TimeOfDay(s) => (at.0, at.1, at.2, s),
            Bound::At(y, m, d, s) => (y, m, d, s),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeRange {
    start: Bound,
    end: Bound,
}

impl TimeRange {
    /// Salt's `start <= now <= end`, judged on the record's own local time.
    fn contains(&self, at: LocalTime) -> bool {
        self.start.key(at) <= at && at <= self.end.key(at)
    }
}

/// Parse what `dateutil.parser.parse` accepts in practice for these ranges: `8am`, `4 pm`,
/// `8:30am`, `16:00`, `16:00:30`, and `2024-05-01 08:00[:00]` (or with `T`).
fn parse_bound(s: &str) -> Option<Bound> {
    let s = s.trim().to_ascii_lowercase();
    if let Some((date, time)) = s.split_once([' ', 't']).filter(|(d, _)| d.contains('-')) {
        let mut p = date.split('-').map(|x| x.parse::<i64>().ok());
        let (y, m, d) = (p.next()??, p.next()??, p.next()??);
        if p.next().is_some() || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
            return None;
        }
        let Bound::TimeOfDay(sod) = parse_bound(time)? else {
            return None;
        };
        return Some(Bound::At(y, m as u32, d as u32, sod));
    }
    let (clock, meridiem) = if let Some(c) = s.strip_suffix("am") {
        (c.trim(), Some(false))
    } else if let Some(c) = s.strip_suffix("pm") {
        (c.trim(), Some(true))
    } else {
        (s.as_str(), None)
    };
    let mut parts = clock.split(':');
    let h: u32 = parts.next()?.parse().ok()?;
    let m: u32 = parts.next().map_or(Some(0), |x| x.parse().ok())?;
    let sec: u32 = parts.next().map_or(Some(0), |x| x.parse().ok())?;
    if parts.next().is_some() || m > 59 || sec > 59 {
        return None;
    }
    let h = match meridiem {
        Some(pm) if (1..=12).contains(&h) => h % 12 + if pm { 12 } else { 0 },
        Some(_) => return None,
        None if h <= 23 => h,
        None => return None,
    };
    Some(Bound::TimeOfDay(h * 3600 + m * 60 + sec))
}

/// The local calendar time of a Unix time (the host's time zone, as Salt's naive `now()`).
fn local_time(secs: i64) -> LocalTime {
    let t: libc::time_t = secs as libc::time_t;
    // SAFETY: an all-zero `tm` is a valid value (integers and a nullable pointer).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; localtime_r is the thread-safe variant.
    let ok = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !ok {
        let days = secs.div_euclid(86_400);
        let (y, m, d) = crate::calendar::civil_from_days(days);
        return (y, m, d, secs.rem_euclid(86_400) as u32);
    }
    (
        tm.tm_year as i64 + 1900,
        (tm.tm_mon + 1) as u32,
        tm.tm_mday as u32,
        (tm.tm_hour * 3600 + tm.tm_min * 60 + tm.tm_sec) as u32,
    )
}

/// One `users:`/`groups:` entry: `None` when it has no `time_range`.
type Rule = Option<TimeRange>;

/// Salt's filter for btmp/wtmp events.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    users: BTreeMap<String, Rule>,
    groups: BTreeMap<String, Rule>,
    defaults: Rule,
    group_file: PathBuf,
}

impl<'de> serde::Deserialize<'de> for Bound {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Bound;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a time such as '8am', '16:30' or '2024-05-01 08:00'")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Bound, E> {
                parse_bound(s).ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(s), &self))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Bound, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Bound, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Bound {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TimeBound".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "x-type": "time ('8am', '16:30', '2024-05-01 08:00')" })
    }
}

/// `time_range`: both bounds, or neither (an empty map is no range).
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RangeOptions {
    /// The start of the range: a time of day (`8am`, `16:30`) or a local date and time.
    #[serde(default)]
    start: Option<Bound>,
    /// The end of the range (inclusive), in the same forms as `start`.
    #[serde(default)]
    end: Option<Bound>,
}

/// One `users:`/`groups:` entry, or `defaults`: nothing, or a `time_range`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// `{start, end}`: only records whose own (local) time is within the range fire.
    #[serde(default)]
    time_range: Option<Located<RangeOptions>>,
}

fn rule_of(cfg: &BeaconConfig, what: &str, entry: &Entry) -> Result<Rule, ConfigError> {
    let Some(tr) = &entry.time_range else {
        return Ok(None);
    };
    match (tr.start, tr.end) {
        (None, None) => Ok(None),
        (Some(start), Some(end)) => Ok(Some(TimeRange { start, end })),
        (start, _) => Err(ConfigError {
            pos: Some(tr.pos.clone()),
            beacon: Some(cfg.name.clone()),
            message: format!(
                "{what}.time_range must contain start & end options (missing {})",
                if start.is_none() { "start" } else { "end" }
            ),
        }),
    }
}

fn rules(
    cfg: &BeaconConfig,
    key: &str,
    map: &Option<NameMap<Entry>>,
) -> Result<BTreeMap<String, Rule>, ConfigError> {
    let mut out = BTreeMap::new();
    for (name, entry) in map.iter().flat_map(|m| m.0.iter()) {
        out.insert(name.clone(), rule_of(cfg, &format!("{key}.{name}"), entry)?);
    }
    Ok(out)
}

/// The options `btmp` and `wtmp` share: Salt's filter and the files.
pub struct Common<'a> {
    pub users: &'a Option<NameMap<Entry>>,
    pub groups: &'a Option<NameMap<Entry>>,
    pub defaults: &'a Option<Entry>,
    pub file: &'a Path,
    pub group_file: &'a Path,
}

impl Filter {
    pub fn from_options(cfg: &BeaconConfig, c: &Common<'_>) -> Result<Filter, ConfigError> {
        let defaults = match c.defaults {
            None => None,
            Some(e) => rule_of(cfg, "defaults", e)?,
        };
        Ok(Filter {
            users: rules(cfg, "users", c.users)?,
            groups: rules(cfg, "groups", c.groups)?,
            defaults,
            group_file: c.group_file.to_path_buf(),
        })
    }

    /// Users and their rule: configured users, then members of configured groups (read from the
    /// group file on each call, so membership changes are seen; a user keeps their own rule).
    fn effective_users(&self) -> BTreeMap<String, Rule> {
        let mut users = self.users.clone();
        if self.groups.is_empty() {
            return users;
        }
        let text = std::fs::read_to_string(&self.group_file).unwrap_or_else(|e| {
            tracing::warn!(file = %self.group_file.display(), error = %e, "cannot read groups");
            String::new()
        });
        for (group, rule) in &self.groups {
            let members = text.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 4 && f[0] == group).then(|| f[3].to_owned())
            });
            match members {
                None => tracing::warn!(group = %group, "group does not exist, ignoring"),
                Some(m) => {
                    for member in m.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                        users.entry(member.to_owned()).or_insert(*rule);
                    }
                }
            }
        }
        users
    }

    /// Whether an event for `user` at Unix time `when` passes (Salt's `beacon()` logic, with
    /// the time judged on the record rather than on the clock at reading time).
    pub fn accepts(&self, user: &str, when: i64) -> bool {
        let at = local_time(when);
        let in_range = |r: &Rule| r.as_ref().is_none_or(|tr| tr.contains(at));
        if self.users.is_empty() && self.groups.is_empty() {
            return in_range(&self.defaults);
        }
        match self.effective_users().get(user) {
            None => false,
            Some(Some(tr)) => tr.contains(at),
            Some(None) => in_range(&self.defaults),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The follower.

/// Where we are in the file, persisted as JSON in the state dir.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
struct Position {
    dev: u64,
    ino: u64,
    offset: u64,
    /// FNV-1a of the record just before `offset` (detects truncation and inode reuse).
    last: Option<u64>,
    /// wtmp: the user logged in on each tty (to name the user of a logout).
    #[serde(default)]
    ttys: BTreeMap<String, String>,
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// btmp or wtmp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Btmp,
    Wtmp,
}

pub struct LoginBeacon {
    kind: Kind,
    name: String,
    file: PathBuf,
    state_file: PathBuf,
    filter: Filter,
    login_type: i64,
    logout_type: i64,
    pos: Option<Position>,
    cur: Option<File>,
    inotify: Option<Inotify>,
    /// Evaluate once at start without waiting for an inotify event (records written while
    /// beacond was stopped).
    pending: bool,
}

/// wtmp's `ut_type`: the record types of a login and a logout.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UtType {
    /// The `ut_type` of a login record (default 7, `USER_PROCESS`).
    #[serde(default)]
    login: Option<i64>,
    /// The `ut_type` of a logout record (default 8, `DEAD_PROCESS`).
    #[serde(default)]
    logout: Option<i64>,
}

pub fn build(
    kind: Kind,
    cfg: &BeaconConfig,
    ctx: &BuildContext,
    common: Common<'_>,
    ut_type: Option<&UtType>,
) -> Result<Box<dyn Beacon>, ConfigError> {
    let login_type = ut_type.and_then(|u| u.login).unwrap_or(USER_PROCESS as i64);
    let logout_type = ut_type
        .and_then(|u| u.logout)
        .unwrap_or(DEAD_PROCESS as i64);
    let file = common.file.to_path_buf();
    if file.file_name().is_none() {
        return Err(cfg.error_here(format!("file {} must name a file", file.display())));
    }
    let kind_name = match kind {
        Kind::Btmp => "btmp",
        Kind::Wtmp => "wtmp",
    };
    let state_file = ctx
        .state_dir
        .join(format!("{kind_name}-{}.json", sanitize(&cfg.name)));
    Ok(Box::new(LoginBeacon {
        kind,
        name: cfg.name.clone(),
        file,
        state_file,
        filter: Filter::from_options(cfg, &common)?,
        login_type,
        logout_type,
        pos: None,
        cur: None,
        inotify: None,
        pending: true,
    }))
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl LoginBeacon {
    fn load_state(&self) -> Option<Position> {
        let text = std::fs::read_to_string(&self.state_file).ok()?;
        match serde_json::from_str(&text) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(beacon = %self.name, file = %self.state_file.display(), error = %e,
                    "unreadable position file; starting at the end of the file");
                None
            }
        }
    }

    fn save_state(&self) -> Result<(), BeaconError> {
        let Some(pos) = &self.pos else { return Ok(()) };
        let value = serde_json::to_value(pos).map_err(|e| BeaconError::Message(e.to_string()))?;
        crate::sources::fswatch::save_state(&self.state_file, &value)
    }

    /// The hash of the record ending at `offset` in `f`, if there is one.
    fn record_before(f: &mut File, offset: u64) -> Option<u64> {
        if offset < RECORD_SIZE as u64 {
            return None;
        }
        let mut buf = vec![0u8; RECORD_SIZE];
        f.seek(SeekFrom::Start(offset - RECORD_SIZE as u64)).ok()?;
        f.read_exact(&mut buf).ok()?;
        Some(fnv1a(&buf))
    }

    /// Whether `pos` still describes `f` (same length or longer, same record before offset).
    fn still_valid(f: &mut File, pos: &Position) -> bool {
        let Ok(meta) = f.metadata() else { return false };
        if meta.len() < pos.offset {
            return false;
        }
        Self::record_before(f, pos.offset) == pos.last
    }

    /// Read the complete records after the position and turn them into events.
    fn drain(&mut self, out: &mut Vec<Data>) -> Result<(), BeaconError> {
        let (Some(f), Some(pos)) = (self.cur.as_mut(), self.pos.as_mut()) else {
            return Ok(());
        };
        f.seek(SeekFrom::Start(pos.offset))
            .map_err(|e| BeaconError::io(&self.file, e))?;
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)
            .map_err(|e| BeaconError::io(&self.file, e))?;
        for raw in bytes.chunks_exact(RECORD_SIZE) {
            pos.offset += RECORD_SIZE as u64;
            pos.last = Some(fnv1a(raw));
            let Some(rec) = Record::parse(raw) else {
                continue;
            };
            let mut data = rec.salt_data();
            if self.kind == Kind::Wtmp {
                let t = rec.ut_type as i64;
                if t == self.login_type {
                    data.insert("action".into(), json!("login"));
                    pos.ttys.insert(rec.line.clone(), rec.user.clone());
                } else if t == self.logout_type {
                    data.insert("action".into(), json!("logout"));
                    if let Some(user) = pos.ttys.remove(&rec.line) {
                        data.insert("user".into(), json!(user));
                    }
                }
            }
            let user = data.get("user").and_then(Value::as_str).unwrap_or("");
            if self.filter.accepts(user, rec.tv_sec) {
                out.push(data);
            }
        }
        Ok(())
    }

    /// Open the file at `path` as the current one, reading it from `offset`.
    fn open_current(&mut self, offset: Option<u64>) -> Result<bool, BeaconError> {
        let mut f = match File::open(&self.file) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(BeaconError::io(&self.file, e)),
        };
        let meta = f.metadata().map_err(|e| BeaconError::io(&self.file, e))?;
        let offset = offset.unwrap_or_else(|| meta.len() - meta.len() % RECORD_SIZE as u64);
        let last = Self::record_before(&mut f, offset);
        let ttys = self.pos.take().map(|p| p.ttys).unwrap_or_default();
        self.pos = Some(Position {
            dev: meta.dev(),
            ino: meta.ino(),
            offset,
            last,
            ttys,
        });
        self.cur = Some(f);
        Ok(true)
    }

    /// First evaluation: resume from the saved position (including the rest of a file rotated
    /// away while stopped), or start at the end as Salt does.
    fn resume(&mut self, out: &mut Vec<Data>) -> Result<(), BeaconError> {
        let Some(saved) = self.load_state() else {
            tracing::info!(beacon = %self.name, file = %self.file.display(),
                "no saved position: starting at the end of the file");
            if !self.open_current(None)? {
                // No file yet: everything it will hold is new.
                self.pos = Some(Position::default());
            }
            return self.save_state();
        };
        let same = std::fs::metadata(&self.file)
            .ok()
            .is_some_and(|m| m.dev() == saved.dev && m.ino() == saved.ino);
        if same {
            let mut f = File::open(&self.file).map_err(|e| BeaconError::io(&self.file, e))?;
            if Self::still_valid(&mut f, &saved) {
                self.cur = Some(f);
                self.pos = Some(saved);
                return self.drain(out);
            }
            tracing::warn!(beacon = %self.name, "file was truncated while stopped: reading it from the start");
        } else if saved.ino != 0 {
            // Rotated while stopped: finish the old file if it sits beside the new one.
            for candidate in rotated_candidates(&self.file) {
                let Ok(mut f) = File::open(&candidate) else {
                    continue;
                };
                let ok = f
                    .metadata()
                    .is_ok_and(|m| m.dev() == saved.dev && m.ino() == saved.ino);
                if ok && Self::still_valid(&mut f, &saved) {
                    tracing::info!(beacon = %self.name, file = %candidate.display(),
                        "reading the rest of the rotated file");
                    self.cur = Some(f);
                    self.pos = Some(saved.clone());
                    self.drain(out)?;
                    break;
                }
            }
        }
        self.pos = Some(Position {
            ttys: self.pos.take().map_or(saved.ttys, |p| p.ttys),
            ..Position::default()
        });
        self.cur = None;
        if self.open_current(Some(0))? {
            self.drain(out)?;
        }
        Ok(())
    }

    /// Later evaluations: drain the open file, then follow a rotation or a truncation.
    fn follow(&mut self, out: &mut Vec<Data>) -> Result<(), BeaconError> {
        // Truncated in place?
        if let (Some(f), Some(pos)) = (self.cur.as_mut(), self.pos.as_ref()) {
            if !Self::still_valid(f, pos) {
                tracing::warn!(beacon = %self.name, file = %self.file.display(),
                    "file truncated: reading it from the start");
                let p = self.pos.as_mut().expect("checked above");
                p.offset = 0;
                p.last = None;
            }
        }
        // Whatever was appended to the file we hold (even if it was renamed away).
        self.drain(out)?;
        // A new file at the path?
        let meta = match std::fs::metadata(&self.file) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(BeaconError::io(&self.file, e)),
        };
        let moved = match &self.pos {
            Some(p) if self.cur.is_some() => p.dev != meta.dev() || p.ino != meta.ino(),
            _ => true,
        };
        if moved {
            tracing::info!(beacon = %self.name, file = %self.file.display(),
                "file rotated: following the new file from its start");
            self.cur = None;
            if self.open_current(Some(0))? {
                self.drain(out)?;
            }
        }
        Ok(())
    }
}

/// Where logrotate leaves the previous file.
fn rotated_candidates(file: &Path) -> Vec<PathBuf> {
    let name = file.file_name().map(|n| n.to_string_lossy().into_owned());
    let Some(name) = name else { return Vec::new() };
    let dir = file.parent().unwrap_or(Path::new("."));
    let mut out = vec![
        dir.join(format!("{name}.1")),
        dir.join(format!("{name}.old")),
    ];
    if let Ok(entries) = std::fs::read_dir(dir) {
        let mut dated: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy())
                    .is_some_and(|n| n.starts_with(&format!("{name}-")) && !n.ends_with(".gz"))
            })
            .collect();
        dated.sort();
        dated.reverse();
        out.extend(dated);
    }
    out
}

impl Beacon for LoginBeacon {
    fn start(&mut self) -> Result<(), BeaconError> {
        let dir = match self.file.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut ino = Inotify::new().map_err(|e| BeaconError::io(&dir, e))?;
        ino.add_watch(
            &dir,
            libc::IN_MODIFY
                | libc::IN_CREATE
                | libc::IN_MOVED_TO
                | libc::IN_MOVED_FROM
                | libc::IN_DELETE
                | libc::IN_CLOSE_WRITE,
        )
        .map_err(|e| BeaconError::io(&dir, e))?;
        self.inotify = Some(ino);
        self.pending = true;
        Ok(())
    }

    fn drive(&mut self) -> Drive<'_> {
        Drive::Source(Box::pin(async move {
            if self.pending {
                return Ok(());
            }
            let Some(ino) = self.inotify.as_mut() else {
                return Err(BeaconError::Message("not started".into()));
            };
            let name = self.file.file_name();
            ino.wait_until(|evs| {
                evs.iter()
                    .any(|e| e.overflow() || (e.name.is_some() && e.name.as_deref() == name))
            })
            .await
            .map_err(|e| BeaconError::io(&self.file, e))
        }))
    }

    fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
        let mut out = Vec::new();
        let before = self.pos.clone();
        let result = if self.pos.is_none() {
            self.resume(&mut out)
        } else {
            self.follow(&mut out)
        };
        self.pending = false;
        if self.pos != before {
            self.save_state()?;
        }
        result?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds() {
        assert_eq!(parse_bound("8am"), Some(Bound::TimeOfDay(8 * 3600)));
        assert_eq!(parse_bound("4pm"), Some(Bound::TimeOfDay(16 * 3600)));
        assert_eq!(parse_bound("12am"), Some(Bound::TimeOfDay(0)));
        assert_eq!(
            parse_bound("8:30 PM"),
            Some(Bound::TimeOfDay(20 * 3600 + 1800))
        );
        assert_eq!(parse_bound("16:00"), Some(Bound::TimeOfDay(16 * 3600)));
        assert_eq!(
            parse_bound("2024-05-01 08:00"),
            Some(Bound::At(2024, 5, 1, 8 * 3600))
        );
        assert_eq!(parse_bound("25:00"), None);
        assert_eq!(parse_bound("soon"), None);
    }
}
