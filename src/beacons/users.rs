//! `users` (beacond's own; Salt has none): accounts and groups added, removed or changed in
//! `/etc/passwd`, `/etc/group` and `/etc/shadow`, event-driven (inotify on their directories:
//! `useradd`, `vipw` and friends replace the files by rename, which a directory watch sees).
//!
//! Options: `passwd` (default `/etc/passwd`), `group` (`/etc/group`), `shadow` (`/etc/shadow`;
//! an empty string disables it), `emitatstartup` (default False: the first snapshot is the
//! baseline, unless one was saved by an earlier run, in which case what changed while beacond
//! was down is reported), `attribute` (default False: each event adds `by: {pid, exe, cmd, comm,
//! uid, user, loginuid, login_user}`, the process that last changed the files, e.g. `useradd`;
//! `btf`: the kernel BTF for it, default `/sys/kernel/btf/vmlinux`).
//!
//! Tags: `users/added`, `users/removed`, `users/changed`, `users/group/added`,
//! `users/group/removed`, `users/group/changed`. User data: `user`, `uid`, `gid`, `group`
//! (primary group name), `groups` (supplementary groups), `gecos`, `home`, `shell`, and from
//! shadow `last_change`, `min_days`, `max_days`, `warn_days`, `inactive_days`, `expire`,
//! `password_locked`. Group data: `group`, `gid`, `members`. Changed events add `changes` (the
//! field names) and `old` (their previous values), and for groups `members_added` /
//! `members_removed`. A password change shows as `password` in `changes`: password hashes are
//! never put in an event, nor kept (only a digest of it, to notice the change).

use super::{Beacon, BeaconError, BuildContext, Data, Drive};
use crate::config::{BeaconConfig, ConfigError};
use crate::sources::attribution::{self, Attribution};
use crate::sources::fswatch::{self, Inotify, DIR_MASK};
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

const USER_FIELDS: [&str; 6] = ["uid", "gid", "gecos", "home", "shell", "group"];
const SHADOW_FIELDS: [&str; 7] = [
    "last_change",
    "min_days",
    "max_days",
    "warn_days",
    "inactive_days",
    "expire",
    "password_locked",
];

pub struct Users {
    passwd: PathBuf,
    group: PathBuf,
    shadow: Option<PathBuf>,
    emitatstartup: bool,
    state_file: PathBuf,
    inotify: Option<Inotify>,
    /// Basenames whose events matter (the files and shadow-utils' lock files).
    names: Vec<OsString>,
    /// shadow-utils' lock files: while one exists, a transaction is under way (useradd writes
    /// passwd, then group, then shadow); evaluating then would report half of it.
    locks: Vec<PathBuf>,
    last: Option<Snapshot>,
    /// `attribute`: name the process that changed the files (`by` in each event).
    attribute: bool,
    btf: PathBuf,
    attribution: Option<Attribution>,
    /// The probe could not load (said once in the log).
    attribution_off: bool,
}

/// Everything known about the accounts, as kept between evaluations (and on disk).
#[derive(Debug, Clone, Default, PartialEq)]
struct Snapshot {
    /// user → fields (strings/numbers), including shadow's when readable.
    users: BTreeMap<String, Map<String, Value>>,
    /// user → digest of the password hash (never the hash).
    secrets: BTreeMap<String, String>,
    /// group → (gid, members)
    groups: BTreeMap<String, (Value, Vec<String>)>,
}

/// The options this beacon takes (checked by `beacons::build`).
pub const OPTIONS: &[&str] = &[
    "passwd",
    "group",
    "shadow",
    "emitatstartup",
    "attribute",
    "btf",
];

pub fn build(cfg: &BeaconConfig, ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let path_opt = |key: &str, default: &str| -> Result<Option<PathBuf>, ConfigError> {
        let s = cfg.str_opt(key, default)?;
        if s.is_empty() {
            return Ok(None);
        }
        if !s.starts_with('/') {
            let node = cfg.opt(key).unwrap_or(&cfg.raw);
            return Err(cfg.error(node, format!("{key} must be an absolute path, found '{s}'")));
        }
        Ok(Some(PathBuf::from(s)))
    };
    let required = |key: &str, default: &str| -> Result<PathBuf, ConfigError> {
        path_opt(key, default)?.ok_or_else(|| cfg.error_here(format!("{key} must not be empty")))
    };
    let passwd = required("passwd", "/etc/passwd")?;
    let group = required("group", "/etc/group")?;
    let shadow = path_opt("shadow", "/etc/shadow")?;
    let mut names: Vec<OsString> = Vec::new();
    let mut locks: Vec<PathBuf> = Vec::new();
    for p in [Some(&passwd), Some(&group), shadow.as_ref()]
        .into_iter()
        .flatten()
    {
        if let Some(n) = p.file_name() {
            names.push(n.to_os_string());
            let mut lock = n.to_os_string();
            lock.push(".lock");
            locks.push(p.with_file_name(&lock));
            names.push(lock);
        }
    }
    // gshadow is locked by the same tools within the same transaction.
    if let Some(dir) = group.parent() {
        locks.push(dir.join("gshadow.lock"));
        names.push(OsString::from("gshadow.lock"));
    }
    let key = format!(
        "{}\0{}\0{}\0{}",
        cfg.name,
        passwd.display(),
        group.display(),
        shadow.as_deref().unwrap_or(Path::new("")).display()
    );
    Ok(Box::new(Users {
        emitatstartup: cfg.bool_opt("emitatstartup", false)?,
        state_file: fswatch::state_path(&ctx.state_dir, "users", &key),
        passwd,
        group,
        shadow,
        inotify: None,
        names,
        locks,
        last: None,
        attribute: cfg.bool_opt("attribute", false)?,
        btf: PathBuf::from(cfg.str_opt("btf", attribution::DEFAULT_BTF)?),
        attribution: None,
        attribution_off: false,
    }))
}

/// FNV-1a of a password hash: enough to notice a change, useless to recover the hash.
fn digest(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// A numeric field as a number, an empty one as null, anything else as the string.
fn num(s: &str) -> Value {
    if s.is_empty() {
        return Value::Null;
    }
    s.parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::from(s))
}

/// The colon-separated records of an `/etc` account file (comments and NIS `+`/`-` lines skipped).
fn records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with(['#', '+', '-']))
        .map(|l| l.split(':').collect())
}

/// A lock older than this is stale (its holder died): ignored.
const STALE_LOCK: std::time::Duration = std::time::Duration::from_secs(30);

impl Users {
    fn locked(&self) -> bool {
        self.locks.iter().any(|l| {
            std::fs::metadata(l)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age < STALE_LOCK)
        })
    }

    fn read(&self) -> Result<Snapshot, BeaconError> {
        let passwd =
            std::fs::read_to_string(&self.passwd).map_err(|e| BeaconError::io(&self.passwd, e))?;
        let group =
            std::fs::read_to_string(&self.group).map_err(|e| BeaconError::io(&self.group, e))?;
        let mut snap = Snapshot::default();
        let mut gid_names: BTreeMap<String, String> = BTreeMap::new();
        for f in records(&group) {
            if f.len() < 3 || snap.groups.contains_key(f[0]) {
                continue;
            }
            let members: Vec<String> = f
                .get(3)
                .map(|m| {
                    m.split(',')
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            gid_names
                .entry(f[2].to_owned())
                .or_insert_with(|| f[0].to_owned());
            snap.groups.insert(f[0].to_owned(), (num(f[2]), members));
        }
        for f in records(&passwd) {
            if f.len() < 7 || snap.users.contains_key(f[0]) {
                continue;
            }
            let mut u = Map::new();
            u.insert("uid".into(), num(f[2]));
            u.insert("gid".into(), num(f[3]));
            u.insert(
                "group".into(),
                gid_names
                    .get(f[3])
                    .map_or(Value::Null, |g| Value::from(g.as_str())),
            );
            u.insert("gecos".into(), Value::from(f[4]));
            u.insert("home".into(), Value::from(f[5]));
            u.insert("shell".into(), Value::from(f[6]));
            let groups: Vec<Value> = snap
                .groups
                .iter()
                .filter(|(_, (_, m))| m.iter().any(|x| x == f[0]))
                .map(|(g, _)| Value::from(g.as_str()))
                .collect();
            u.insert("groups".into(), Value::Array(groups));
            snap.users.insert(f[0].to_owned(), u);
        }
        if let Some(shadow) = &self.shadow {
            match std::fs::read_to_string(shadow) {
                Ok(text) => {
                    for f in records(&text) {
                        let Some(u) = snap.users.get_mut(f[0]) else {
                            continue;
                        };
                        let hash = f.get(1).copied().unwrap_or("");
                        snap.secrets.insert(f[0].to_owned(), digest(hash));
                        u.insert("password_locked".into(), Value::from(hash.starts_with('!')));
                        for (i, k) in SHADOW_FIELDS[..6].iter().enumerate() {
                            let v = f.get(i + 2).copied().unwrap_or("");
                            u.insert((*k).into(), num(v));
                        }
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(BeaconError::io(shadow, e)),
            }
        }
        Ok(snap)
    }

    fn user_event(tag: &str, name: &str, fields: &Map<String, Value>) -> Data {
        let mut d = Data::new();
        d.insert("tag".into(), Value::from(tag));
        d.insert("user".into(), Value::from(name));
        for (k, v) in fields {
            d.insert(k.clone(), v.clone());
        }
        d
    }

    fn group_event(tag: &str, name: &str, gid: &Value, members: &[String]) -> Data {
        let mut d = Data::new();
        d.insert("tag".into(), Value::from(tag));
        d.insert("group".into(), Value::from(name));
        d.insert("gid".into(), gid.clone());
        d.insert("members".into(), json!(members));
        d
    }

    fn diff(old: &Snapshot, new: &Snapshot) -> Vec<Data> {
        let mut out = Vec::new();
        for (name, fields) in &new.users {
            let Some(before) = old.users.get(name) else {
                out.push(Self::user_event("added", name, fields));
                continue;
            };
            let mut changes = Vec::new();
            let mut was = Map::new();
            for k in USER_FIELDS.iter().chain(SHADOW_FIELDS.iter()) {
                let (a, b) = (before.get(*k), fields.get(*k));
                if a != b {
                    changes.push(Value::from(*k));
                    was.insert((*k).into(), a.cloned().unwrap_or(Value::Null));
                }
            }
            if old.secrets.get(name) != new.secrets.get(name) {
                changes.push(Value::from("password"));
            }
            if !changes.is_empty() {
                let mut d = Self::user_event("changed", name, fields);
                d.insert("changes".into(), Value::Array(changes));
                d.insert("old".into(), Value::Object(was));
                out.push(d);
            }
        }
        for (name, fields) in &old.users {
            if !new.users.contains_key(name) {
                out.push(Self::user_event("removed", name, fields));
            }
        }
        for (name, (gid, members)) in &new.groups {
            let Some((gid0, members0)) = old.groups.get(name) else {
                out.push(Self::group_event("group/added", name, gid, members));
                continue;
            };
            let set0: BTreeSet<&String> = members0.iter().collect();
            let set1: BTreeSet<&String> = members.iter().collect();
            if gid0 == gid && set0 == set1 {
                continue;
            }
            let mut d = Self::group_event("group/changed", name, gid, members);
            let mut changes = Vec::new();
            let mut was = Map::new();
            if gid0 != gid {
                changes.push(Value::from("gid"));
                was.insert("gid".into(), gid0.clone());
            }
            if set0 != set1 {
                changes.push(Value::from("members"));
                was.insert("members".into(), json!(members0));
            }
            d.insert("changes".into(), Value::Array(changes));
            d.insert("old".into(), Value::Object(was));
            d.insert(
                "members_added".into(),
                json!(set1.difference(&set0).collect::<Vec<_>>()),
            );
            d.insert(
                "members_removed".into(),
                json!(set0.difference(&set1).collect::<Vec<_>>()),
            );
            out.push(d);
        }
        for (name, (gid, members)) in &old.groups {
            if !new.groups.contains_key(name) {
                out.push(Self::group_event("group/removed", name, gid, members));
            }
        }
        out
    }

    fn save(&self, snap: &Snapshot) -> Result<(), BeaconError> {
        let groups: Map<String, Value> = snap
            .groups
            .iter()
            .map(|(k, (gid, m))| (k.clone(), json!({"gid": gid, "members": m})))
            .collect();
        let v = json!({"users": snap.users, "secrets": snap.secrets, "groups": groups});
        fswatch::save_state(&self.state_file, &v)
    }

    fn load(&self) -> Option<Snapshot> {
        let v = fswatch::load_state(&self.state_file)?;
        let users = v["users"]
            .as_object()?
            .iter()
            .filter_map(|(k, f)| Some((k.clone(), f.as_object()?.clone())))
            .collect();
        let secrets = v["secrets"]
            .as_object()?
            .iter()
            .filter_map(|(k, d)| Some((k.clone(), d.as_str()?.to_owned())))
            .collect();
        let groups = v["groups"]
            .as_object()?
            .iter()
            .map(|(k, g)| {
                let members = g["members"]
                    .as_array()
                    .map(|m| {
                        m.iter()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                (k.clone(), (g["gid"].clone(), members))
            })
            .collect();
        Some(Snapshot {
            users,
            secrets,
            groups,
        })
    }
}

impl Beacon for Users {
    fn start(&mut self) -> Result<(), BeaconError> {
        let mut ino = Inotify::new().map_err(|e| BeaconError::io(&self.passwd, e))?;
        let mut dirs: Vec<&Path> = Vec::new();
        for p in [Some(&self.passwd), Some(&self.group), self.shadow.as_ref()]
            .into_iter()
            .flatten()
        {
            let dir = p.parent().unwrap_or(Path::new("/"));
            if !dirs.contains(&dir) {
                ino.add_watch(dir, DIR_MASK)
                    .map_err(|e| BeaconError::io(dir, e))?;
                dirs.push(dir);
            }
        }
        self.inotify = Some(ino);
        if self.attribute && self.attribution.is_none() && !self.attribution_off {
            self.attribution = attribution::open_for("users", &self.btf);
            self.attribution_off = self.attribution.is_none();
        }
        if let Some(a) = self.attribution.as_mut() {
            for p in [Some(&self.passwd), Some(&self.group), self.shadow.as_ref()]
                .into_iter()
                .flatten()
            {
                a.watch(p.parent().unwrap_or(Path::new("/")));
                a.watch(p);
            }
            a.announce("users");
        }
        if self.last.is_none() {
            self.last = match self.load() {
                Some(saved) => Some(saved),
                None if self.emitatstartup => Some(Snapshot::default()),
                None => {
                    let snap = self.read()?;
                    self.save(&snap)?;
                    Some(snap)
                }
            };
        }
        Ok(())
    }

    fn drive(&mut self) -> Drive<'_> {
        Drive::Source(Box::pin(async move {
            let passwd = self.passwd.clone();
            let ino = self
                .inotify
                .as_mut()
                .ok_or_else(|| BeaconError::Message("users beacon not started".into()))?;
            let names = &self.names;
            ino.wait_until(|evs| {
                evs.iter()
                    .any(|e| e.overflow() || e.name.as_ref().is_some_and(|n| names.contains(n)))
            })
            .await
            .map_err(|e| BeaconError::io(&passwd, e))
        }))
    }

    fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
        if let Some(ino) = &mut self.inotify {
            let _ = ino.drain();
        }
        if self.locked() {
            // The lock's removal wakes us up again.
            return Ok(Vec::new());
        }
        let snap = self.read()?;
        let mut events = match &self.last {
            Some(old) if *old == snap => return Ok(Vec::new()),
            Some(old) => Self::diff(old, &snap),
            None => Vec::new(),
        };
        if let Some(a) = self.attribution.as_mut().filter(|_| !events.is_empty()) {
            let files: Vec<&Path> = [Some(&self.passwd), Some(&self.group), self.shadow.as_ref()]
                .into_iter()
                .flatten()
                .map(PathBuf::as_path)
                .collect();
            // `user`/`uid` name the account here: the process goes under `by`.
            if let Some(actor) = a.last(&files) {
                let by = Value::Object(a.keys(&actor));
                for d in &mut events {
                    d.insert("by".into(), by.clone());
                }
            }
        }
        self.save(&snap)?;
        self.last = Some(snap);
        Ok(events)
    }
}
