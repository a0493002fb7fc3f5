//! `inotify`: file and directory changes as the kernel reports them (Salt's `inotify` beacon),
//! event-driven: the inotify fd is awaited with tokio's `AsyncFd`, never polled.
//!
//! Options (Salt's): `files:` maps a path to `mask` (a list of Salt's names: access, attrib,
//! close_nowrite, close_write, create, delete, delete_self, excl_unlink, ignored, modify,
//! moved_from, moved_to, move_self, oneshot, onlydir, open, unmount; default create, delete,
//! modify), `recurse`, `auto_add`, `exclude` (paths as prefixes, globs with `*`, and
//! `<pattern>: {regex: True}` Python regexes); top-level `coalesce`. beacond's own, per path:
//! `checksum: sha256` (the file's new hash in the event), `diff: True` (a unified diff against the
//! previous content, for UTF-8 text files up to `diff_max_bytes`, default 64 KiB), `attribute:
//! True` (per path, or top-level for all; `btf` top-level: the kernel BTF, default
//! `/sys/kernel/btf/vmlinux`): each event adds the process behind the change — `pid`, `exe`,
//! `cmd`, `comm`, `uid`/`user`, `loginuid`/`login_user` — from `sources::attribution`.
//!
//! Events are Salt's: tag `salt/beacon/<id>/<name>/<watch path>`, data `path` (what changed) and
//! `change` (pyinotify's mask name, e.g. `IN_CREATE|IN_ISDIR`). Beyond Salt:
//! - a watched file's directory is watched too, so a file replaced by rename (editors, `sed -i`,
//!   Salt's `file.managed`) or deleted and re-created keeps being watched, and the replacement is
//!   reported (`IN_MOVED_TO` / `IN_CREATE` on the file's path, `replaced: True`); a path that does
//!   not exist yet is picked up the moment it appears;
//! - with `auto_add`, directories created later (`mkdir -p a/b/c` too) are watched and what was
//!   created in them before the watch existed is reported (pyinotify's synthetic `IN_CREATE`s);
//! - a kernel queue overflow is reported (`<name>/overflow`) and every root is re-scanned; the
//!   watch limit (`ENOSPC`) is reported with the sysctl to raise;
//! - with `disable_during_state_run`, changes made during a `state.*` job are summarised in one
//!   `<name>/state_run` event with the job id when the job ends.
//!
//! Semantics kept from Salt/pyinotify on purpose: `IN_IGNORED` and `IN_UNMOUNT` are reported
//! whatever the mask (the kernel always sends them and Salt forwards them); `auto_add` adds
//! `IN_CREATE` to what is reported; `recurse` without `auto_add` does not follow new
//! directories; a plain exclude is a string prefix, one with `*` an `fnmatch` glob (which
//! matches `/` too). Where beacond differs: a replaced file is reported as its replacement
//! (the old inode's `IN_DELETE_SELF`/`IN_IGNORED` are not); `oneshot` mutes a watch for one
//! `interval` (Salt re-adds the kernel-removed watch on its next loop); `coalesce` drops an
//! event identical (watch, mask, cookie, name) to one reported less than 100 ms before, where
//! pyinotify dedups within one read batch; bare globs such as `'*.swp'` work (Salt crashes on
//! them: pyinotify compiles every exclude as a regex). A symlink as a watched path is
//! followed: its target file is watched, and the link's own replacement is seen in its
//! directory.

mod evidence;
mod spec;

use super::{Beacon, BeaconError, BuildContext, Data, Drive};
use crate::config::{BeaconConfig, ConfigError};
use crate::sources::attribution::{self, Attribution};
use crate::sources::fswatch::{Inotify, WatchDescriptor, WatchMask, Watches};
use crate::state_run::StateJob;
use evidence::Text;
use serde_json::{json, Value};
use spec::*;
use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Identical events closer together than this are merged with `coalesce`.
const COALESCE_WINDOW: Duration = Duration::from_millis(100);
/// Reads per evaluation before yielding to the other beacons (64 KiB each).
const MAX_READS: usize = 16;
/// Distinct changes kept in a state-run summary; beyond that they are only counted.
const SUMMARY_MAX: usize = 1000;
/// Diff text kept in a state-run summary (the event must stay a reasonable size).
const SUMMARY_DIFF_MAX: usize = 1024 * 1024;
/// How soon watches that hit the kernel's limit are tried again (at least).
const RETRY_MIN: Duration = Duration::from_secs(30);

/// The options this beacon takes (checked by `beacons::build`).
pub const OPTIONS: &[&str] = &["files", "coalesce", "attribute", "btf"];

pub fn build(cfg: &BeaconConfig, _ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let spec = spec::parse(cfg)?;
    let interval = Duration::from_secs_f64(cfg.interval.unwrap_or(1.0));
    Ok(Box::new(InotifyBeacon {
        spec,
        interval,
        engine: None,
        summary: None,
        attribution_off: false,
    }))
}

pub struct InotifyBeacon {
    spec: Spec,
    interval: Duration,
    /// The OS side, opened by `start`; dropping it closes the inotify fd (and every watch).
    engine: Option<Engine>,
    /// Changes seen during the current state run.
    summary: Option<Summary>,
    /// `attribute` is asked for but the probe could not load (said once in the log).
    attribution_off: bool,
}

impl Beacon for InotifyBeacon {
    fn start(&mut self) -> Result<(), BeaconError> {
        // A restart must not leak the previous instance: drop it first.
        self.engine = None;
        let fd = Inotify::new().map_err(|e| BeaconError::Message(format!("inotify_init1: {e}")))?;
        let api = fd.watches();
        let mut engine = Engine {
            spec: self.spec.clone(),
            interval: self.interval,
            fd,
            api,
            watches: HashMap::new(),
            by_path: HashMap::new(),
            roots: vec![RootState::default(); self.spec.roots.len()],
            pending_moves: Vec::new(),
            retire: Vec::new(),
            synth: HashSet::new(),
            coalesce_seen: HashMap::new(),
            muted: HashMap::new(),
            emitted_now: HashSet::new(),
            more: false,
            retry_at: None,
            out: Vec::new(),
            rescanning: false,
            attribution: None,
            read_at: 0,
        };
        if !self.attribution_off && self.spec.roots.iter().any(|r| r.attribute) {
            engine.attribution = attribution::open_for("inotify", &self.spec.btf);
            self.attribution_off = engine.attribution.is_none();
        }
        for r in 0..engine.spec.roots.len() {
            engine.resolve_root(r, false);
        }
        if let Some(a) = &engine.attribution {
            a.announce("inotify");
        }
        self.engine = Some(engine);
        Ok(())
    }

    fn drive(&mut self) -> Drive<'_> {
        Drive::Source(Box::pin(async move {
            let Some(engine) = self.engine.as_mut() else {
                return Err(BeaconError::Message("inotify is not started".into()));
            };
            // More queued than one evaluation reads, or reports from `start` (watch errors).
            if engine.more || !engine.out.is_empty() {
                return Ok(());
            }
            let timer = engine.next_timer();
            let sleep = async {
                match timer {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = engine.fd.readable() => {
                    // Everything readable is drained by `evaluate`; a later event re-arms.
                    r.map_err(|e| BeaconError::Message(format!("inotify fd: {e}")))
                }
                () = sleep => Ok(()),
            }
        }))
    }

    fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
        let Some(engine) = self.engine.as_mut() else {
            return Ok(Vec::new());
        };
        engine.drain()?;
        engine.timers();
        Ok(std::mem::take(&mut engine.out))
    }

    fn during_state_run(&mut self, job: &StateJob) -> Result<(), BeaconError> {
        let Some(engine) = self.engine.as_mut() else {
            return Ok(());
        };
        engine.drain()?;
        engine.timers();
        let summary = self.summary.get_or_insert_with(|| Summary::new(job));
        summary.absorb(std::mem::take(&mut engine.out));
        Ok(())
    }

    fn after_state_run(&mut self, job: &StateJob) -> Result<Vec<Data>, BeaconError> {
        if let Some(engine) = self.engine.as_mut() {
            engine.drain()?;
            let summary = self.summary.get_or_insert_with(|| Summary::new(job));
            summary.absorb(std::mem::take(&mut engine.out));
        }
        Ok(self
            .summary
            .take()
            .and_then(|s| s.into_event(job))
            .into_iter()
            .collect())
    }
}

/// What changed while a state job ran.
struct Summary {
    jid: String,
    changes: Vec<Data>,
    index: HashMap<(String, String), usize>,
    count: u64,
    omitted: u64,
    overflow: bool,
    errors: Vec<String>,
    /// Bytes of diff text kept so far.
    diff_bytes: usize,
}

impl Summary {
    fn new(job: &StateJob) -> Self {
        Summary {
            jid: job.jid.clone(),
            changes: Vec::new(),
            index: HashMap::new(),
            count: 0,
            omitted: 0,
            overflow: false,
            errors: Vec::new(),
            diff_bytes: 0,
        }
    }

    fn absorb(&mut self, events: Vec<Data>) {
        for ev in events {
            if ev.get("tag").and_then(Value::as_str) == Some("overflow") {
                self.overflow = true;
                continue;
            }
            if let Some(e) = ev.get("error").and_then(Value::as_str) {
                self.errors.push(e.to_owned());
                continue;
            }
            let get = |k: &str| {
                ev.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let key = (get("path"), get("change"));
            self.count += 1;
            if let Some(&i) = self.index.get(&key) {
                if let Some(Value::Number(n)) = self.changes[i].get("count") {
                    let n = n.as_u64().unwrap_or(1) + 1;
                    self.changes[i].insert("count".into(), Value::from(n));
                }
                // Keep the latest checksum, and every diff (in order) within the budget.
                for k in ["checksum", "checksum_type"] {
                    if let Some(v) = ev.get(k) {
                        self.changes[i].insert(k.into(), v.clone());
                    }
                }
                if let Some(more) = ev.get("diff").and_then(Value::as_str) {
                    if !more.is_empty() {
                        let entry = &mut self.changes[i];
                        if self.diff_bytes + more.len() > SUMMARY_DIFF_MAX {
                            entry.insert("diff_truncated".into(), Value::Bool(true));
                        } else {
                            self.diff_bytes += more.len();
                            let mut text = entry
                                .get("diff")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned();
                            text.push_str(more);
                            entry.insert("diff".into(), Value::String(text));
                        }
                    }
                }
                continue;
            }
            if self.changes.len() >= SUMMARY_MAX {
                self.omitted += 1;
                continue;
            }
            let mut entry = ev;
            entry.remove("tag");
            if let Some(len) = entry.get("diff").and_then(Value::as_str).map(str::len) {
                if self.diff_bytes + len > SUMMARY_DIFF_MAX {
                    entry.insert("diff".into(), Value::Null);
                    entry.insert("diff_truncated".into(), Value::Bool(true));
                } else {
                    self.diff_bytes += len;
                }
            }
            entry.insert("count".into(), Value::from(1u64));
            self.index.insert(key, self.changes.len());
            self.changes.push(entry);
        }
    }

    fn into_event(self, job: &StateJob) -> Option<Data> {
        if self.count == 0 && !self.overflow && self.errors.is_empty() {
            return None;
        }
        let mut paths: Vec<Value> = Vec::new();
        let mut seen = HashSet::new();
        for c in &self.changes {
            if let Some(p) = c.get("path").and_then(Value::as_str) {
                if seen.insert(p.to_owned()) {
                    paths.push(Value::String(p.to_owned()));
                }
            }
        }
        let mut d = Data::new();
        d.insert("tag".into(), Value::String("state_run".into()));
        d.insert("change".into(), Value::String("STATE_RUN".into()));
        d.insert("jid".into(), Value::String(self.jid));
        d.insert("fun".into(), Value::String(job.fun.clone()));
        d.insert("paths".into(), Value::Array(paths));
        d.insert(
            "changes".into(),
            Value::Array(self.changes.into_iter().map(Value::Object).collect()),
        );
        d.insert("count".into(), Value::from(self.count));
        d.insert("omitted".into(), Value::from(self.omitted));
        d.insert("overflow".into(), Value::Bool(self.overflow));
        if !self.errors.is_empty() {
            d.insert("errors".into(), json!(self.errors));
        }
        Some(d)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Kind {
    #[default]
    Missing,
    File,
    Dir,
}

#[derive(Debug, Clone, Default)]
struct RootState {
    kind: Kind,
    /// A watch under this root hit the kernel's limit: retried later.
    incomplete: bool,
    limit_reported: bool,
    /// Last seen content of files, for `diff` (and the overflow re-scan).
    texts: HashMap<PathBuf, Text>,
}

/// Why a path is watched; one kernel watch can serve several.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Role {
    /// A directory of root `usize` (the root itself or, recursive, one below it).
    Dir(usize),
    /// The root's path, a file.
    File(usize),
    /// The nearest existing ancestor of the root's path; the name is the next component.
    Anchor(usize, OsString),
}

struct Watch {
    wd: WatchDescriptor,
    path: PathBuf,
    roles: Vec<Role>,
}

struct Engine {
    spec: Spec,
    interval: Duration,
    fd: Inotify,
    api: Watches,
    watches: HashMap<i32, Watch>,
    by_path: HashMap<PathBuf, i32>,
    roots: Vec<RootState>,
    /// Directories moved away (`IN_MOVED_FROM`), awaiting their `IN_MOVED_TO`.
    pending_moves: Vec<(u32, PathBuf)>,
    /// Watches that follow an inode no longer at their path: removed when the queue is drained.
    retire: Vec<i32>,
    /// Entries reported by a scan (synthetic `IN_CREATE`), whose real event is then dropped.
    synth: HashSet<(i32, OsString)>,
    coalesce_seen: HashMap<(i32, u32, u32, OsString), Instant>,
    /// `oneshot` watches that fired, muted until the next interval (Salt re-adds them then).
    muted: HashMap<i32, Instant>,
    emitted_now: HashSet<(String, String, String)>,
    /// Stopped reading with data left: `ready` resolves at once.
    more: bool,
    retry_at: Option<Instant>,
    out: Vec<Data>,
    /// Re-scanning after an overflow.
    rescanning: bool,
    /// Who made each change (roots with `attribute`), when the probe is loaded.
    attribution: Option<Attribution>,
    /// When the batch being processed was read (`attribution::now_ns`).
    read_at: u64,
}

fn lossy(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl Engine {
    /// The kernel mask a role needs.
    fn kmask(&self, role: &Role) -> u32 {
        match role {
            Role::Dir(r) => {
                let s = &self.spec.roots[*r];
                let mut m = s.mask & USER_BITS;
                if s.auto_add {
                    m |= IN_CREATE | IN_MOVED_FROM | IN_MOVED_TO;
                }
                if s.recurse {
                    m |= IN_MOVED_FROM | IN_MOVED_TO;
                }
                if s.excl_unlink {
                    m |= IN_EXCL_UNLINK;
                }
                m
            }
            Role::File(r) => {
                let s = &self.spec.roots[*r];
                let mut m = s.mask & USER_BITS;
                if s.excl_unlink {
                    m |= IN_EXCL_UNLINK;
                }
                m
            }
            Role::Anchor(..) => {
                IN_CREATE | IN_MOVED_TO | IN_DELETE | IN_MOVED_FROM | IN_DELETE_SELF | IN_MOVE_SELF
            }
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        let mute = self.muted.values().min().copied();
        match (mute, self.retry_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Expired mutes and watch retries.
    fn timers(&mut self) {
        let now = Instant::now();
        self.muted.retain(|_, until| *until > now);
        if self.retry_at.is_some_and(|at| at <= now) {
            self.retry_at = None;
            for r in 0..self.roots.len() {
                if self.roots[r].incomplete {
                    self.roots[r].incomplete = false;
                    self.resolve_root(r, false);
                    // Reported once while it lasts; again if it comes back after a success.
                    if !self.roots[r].incomplete {
                        self.roots[r].limit_reported = false;
                    }
                }
            }
        }
    }

    /// Add `role` to the watch on `path` (creating or widening it).
    fn add_role(&mut self, path: &Path, role: Role) -> io::Result<i32> {
        let existing = self.by_path.get(path).copied();
        let mut roles = existing
            .and_then(|wd| self.watches.get(&wd))
            .map(|w| w.roles.clone())
            .unwrap_or_default();
        if !roles.contains(&role) {
            roles.push(role);
        }
        let mask = roles.iter().fold(0, |m, r| m | self.kmask(r));
        // IN_MASK_ADD: the inode may already be watched through another path (a hard link, a
        // root inside another root's tree); never narrow what that watch asks for. Roles filter.
        let wd = self
            .api
            .add(path, WatchMask::from_bits_retain(mask | IN_MASK_ADD))?;
        let id = wd.get_watch_descriptor_id();
        if let Some(old) = existing.filter(|old| *old != id) {
            // The path is another inode now: the old watch follows something else.
            if let Some(w) = self.watches.remove(&old) {
                let _ = self.api.remove(w.wd);
            }
        }
        match self.watches.get_mut(&id) {
            Some(w) => {
                for r in roles {
                    if !w.roles.contains(&r) {
                        w.roles.push(r);
                    }
                }
            }
            None => {
                self.watches.insert(
                    id,
                    Watch {
                        wd,
                        path: path.to_path_buf(),
                        roles,
                    },
                );
            }
        }
        self.by_path.insert(path.to_path_buf(), id);
        self.attribute_watch(path);
        Ok(id)
    }

    /// Register `path` with the attribution probe when one of its watch's roots asks for it.
    fn attribute_watch(&mut self, path: &Path) {
        let Some(a) = self.attribution.as_mut() else {
            return;
        };
        let Some(w) = self.by_path.get(path).and_then(|id| self.watches.get(id)) else {
            return;
        };
        let wanted = w.roles.iter().any(|role| {
            let (Role::Dir(r) | Role::File(r) | Role::Anchor(r, _)) = role;
            self.spec.roots[*r].attribute
        });
        if wanted {
            a.watch(path);
        }
    }

    /// Remove the roles `pred` selects; watches left without a role are removed.
    fn drop_roles(&mut self, pred: impl Fn(&Path, &Role) -> bool) {
        let mut gone = Vec::new();
        for (id, w) in &mut self.watches {
            let path = w.path.clone();
            w.roles.retain(|r| !pred(&path, r));
            if w.roles.is_empty() {
                gone.push(*id);
            }
        }
        for id in gone {
            self.remove_watch(id);
        }
    }

    fn remove_watch(&mut self, id: i32) {
        if let Some(w) = self.watches.remove(&id) {
            if self.by_path.get(&w.path) == Some(&id) {
                self.by_path.remove(&w.path);
            }
            // EINVAL when the kernel already dropped it: nothing to release then.
            let _ = self.api.remove(w.wd);
        }
        self.muted.remove(&id);
    }

    /// A watch could not be added: the limit is reported with its sysctl, other errors once.
    fn watch_failed(&mut self, r: usize, path: &Path, e: io::Error) {
        match e.raw_os_error() {
            // Gone or replaced meanwhile: the anchor will see what comes next.
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => {}
            Some(libc::ENOSPC) => {
                self.roots[r].incomplete = true;
                let retry = self.interval.max(RETRY_MIN);
                self.retry_at.get_or_insert(Instant::now() + retry);
                if self.roots[r].limit_reported {
                    return;
                }
                self.roots[r].limit_reported = true;
                let read = |p: &str| {
                    std::fs::read_to_string(p)
                        .map(|s| s.trim().to_owned())
                        .unwrap_or_else(|_| "?".into())
                };
                let limit = read("/proc/sys/fs/inotify/max_user_watches");
                // In a user namespace (a container) the namespace's own limit may be lower.
                let ns_limit = read("/proc/sys/user/max_inotify_watches");
                let ns_note = if ns_limit != limit && ns_limit != "?" {
                    format!(", user.max_inotify_watches of this user namespace = {ns_limit}")
                } else {
                    String::new()
                };
                let root = lossy(&self.spec.roots[r].path);
                let msg = format!(
                    "inotify watch limit reached watching {} (fs.inotify.max_user_watches = {limit}{ns_note}): \
                     part of {root} is not watched; raise it, e.g. `sysctl -w fs.inotify.max_user_watches=524288` \
                     and persist it in /etc/sysctl.d/; retrying every {}s",
                    lossy(path),
                    retry.as_secs()
                );
                tracing::error!("{msg}");
                let mut d = Data::new();
                d.insert("error".into(), Value::String(msg));
                d.insert("path".into(), Value::String(lossy(path)));
                d.insert("root".into(), Value::String(root));
                d.insert(
                    "sysctl".into(),
                    Value::String("fs.inotify.max_user_watches".into()),
                );
                d.insert("limit".into(), Value::String(limit));
                self.out.push(d);
            }
            _ => {
                let msg = format!("cannot watch {}: {e}", lossy(path));
                tracing::warn!("{msg}");
                let mut d = Data::new();
                d.insert("error".into(), Value::String(msg));
                d.insert("path".into(), Value::String(lossy(path)));
                self.out.push(d);
            }
        }
    }

    /// Watch root `r` as it is now: its anchor, and the file or the directory tree.
    fn resolve_root(&mut self, r: usize, appeared: bool) {
        let path = self.spec.roots[r].path.clone();
        // The anchor: the nearest existing ancestor, watching for the next component. The new
        // one is added before the old is dropped, so an unchanged anchor keeps its watch (and the
        // events already queued for it).
        let mut keep: Option<(PathBuf, Role)> = None;
        if let Some(parent) = path.parent() {
            let mut anchor = parent.to_path_buf();
            while !anchor.is_dir() {
                match anchor.parent() {
                    Some(p) => anchor = p.to_path_buf(),
                    None => break,
                }
            }
            let rest = path.strip_prefix(&anchor).ok();
            let next = rest.and_then(|p| p.components().next());
            if let Some(next) = next {
                let role = Role::Anchor(r, next.as_os_str().to_os_string());
                match self.add_role(&anchor, role.clone()) {
                    Ok(_) => keep = Some((anchor, role)),
                    Err(e) => self.watch_failed(r, &anchor, e),
                }
            }
        }
        self.drop_roles(|wpath, role| {
            matches!(role, Role::Anchor(x, _) if *x == r)
                && keep
                    .as_ref()
                    .is_none_or(|(p, k)| p.as_path() != wpath || k != role)
        });
        let spec = self.spec.roots[r].clone();
        let kind = match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => {
                self.add_tree(
                    r,
                    &path,
                    appeared && spec.auto_add,
                    self.rescanning && spec.auto_add,
                );
                if self.by_path.contains_key(&path) {
                    Kind::Dir
                } else {
                    Kind::Missing
                }
            }
            Ok(_) if spec.onlydir => {
                tracing::warn!("inotify: {} is not a directory (onlydir)", path.display());
                Kind::Missing
            }
            Ok(_) => match self.add_role(&path, Role::File(r)) {
                Ok(_) => {
                    self.remember(r, &path);
                    Kind::File
                }
                Err(e) => {
                    self.watch_failed(r, &path, e);
                    Kind::Missing
                }
            },
            Err(_) => Kind::Missing,
        };
        self.roots[r].kind = kind;
    }

    /// Watch a directory (and, recursively, what is below it). With `synth`, everything found is
    /// new: reported as created (pyinotify's `mkdir -p` trick) and watched.
    fn add_tree(&mut self, r: usize, dir: &Path, synth: bool, all: bool) {
        let spec = self.spec.roots[r].clone();
        let descend = spec.recurse || synth || all;
        let evidence = spec.diff || spec.checksum.is_some();
        let mut queue = VecDeque::from([dir.to_path_buf()]);
        while let Some(d) = queue.pop_front() {
            let ds = lossy(&d);
            if d != spec.path && spec.excluded(&ds) {
                continue;
            }
            let wd = match self.add_role(&d, Role::Dir(r)) {
                Ok(wd) => wd,
                Err(e) => {
                    self.watch_failed(r, &d, e);
                    continue;
                }
            };
            if !(descend || synth || evidence) {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            let mut entries: Vec<_> = entries.flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            for entry in entries {
                let Ok(ft) = entry.file_type() else { continue };
                let child = entry.path();
                if synth {
                    let mask = if ft.is_dir() {
                        IN_CREATE | IN_ISDIR
                    } else {
                        IN_CREATE
                    };
                    self.synth.insert((wd, entry.file_name()));
                    if spec.report_mask() & IN_CREATE != 0 && !spec.excluded(&lossy(&child)) {
                        self.emit(r, &d, &child, mask, None);
                    }
                }
                if ft.is_dir() {
                    if descend && !self.by_path.contains_key(&child) {
                        queue.push_back(child);
                    }
                } else if evidence && !synth {
                    self.remember(r, &child);
                }
            }
        }
    }

    /// Record a file's content as the base of the next diff, unless one is known already (a
    /// re-created file is diffed against what it was); the overflow re-scan refreshes it.
    fn remember(&mut self, r: usize, path: &Path) {
        let spec = &self.spec.roots[r];
        if spec.diff && (self.rescanning || !self.roots[r].texts.contains_key(path)) {
            let text = evidence::read_text(path, spec.diff_max_bytes);
            self.roots[r].texts.insert(path.to_path_buf(), text);
        }
    }

    /// Remove the roles of root `r` except its anchor. Watches following a moved inode are
    /// retired when the queue is drained (events already queued for them still count).
    fn detach_root(&mut self, r: usize, moved: bool) {
        if moved {
            for (id, w) in &self.watches {
                if w.roles
                    .iter()
                    .any(|role| matches!(role, Role::Dir(x) | Role::File(x) if *x == r))
                {
                    self.retire.push(*id);
                }
            }
            let ids: Vec<i32> = self.retire.clone();
            for id in ids {
                if let Some(w) = self.watches.get(&id) {
                    if self.by_path.get(&w.path) == Some(&id) {
                        let p = w.path.clone();
                        self.by_path.remove(&p);
                    }
                }
            }
        }
        self.roots[r].kind = Kind::Missing;
    }

    /// Read everything the kernel has queued and act on it.
    fn drain(&mut self) -> Result<(), BeaconError> {
        self.more = false;
        let mut buf = vec![0u8; 64 * 1024];
        for _ in 0..MAX_READS {
            let batch = match self.fd.read_batch(&mut buf) {
                Ok(events) => events,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.end_of_queue();
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(BeaconError::Message(format!("reading inotify: {e}"))),
            };
            // Every change in this batch was recorded by the probe before it was queued.
            self.read_at = attribution::batch_id();
            for e in batch {
                self.process(e.wd, e.mask, e.cookie, e.name);
            }
        }
        // More is queued: come back at once, after the other beacons had their turn.
        self.more = true;
        Ok(())
    }

    /// The queue is empty: pair-less moves left the tree, retired watches go.
    fn end_of_queue(&mut self) {
        for (_, src) in std::mem::take(&mut self.pending_moves) {
            let gone: Vec<i32> = self
                .watches
                .iter()
                .filter(|(_, w)| w.path == src || w.path.starts_with(&src))
                .filter(|(_, w)| w.roles.iter().all(|r| matches!(r, Role::Dir(_))))
                .map(|(id, _)| *id)
                .collect();
            for id in gone {
                self.remove_watch(id);
            }
        }
        for id in std::mem::take(&mut self.retire) {
            let current = self
                .watches
                .get(&id)
                .is_some_and(|w| self.by_path.get(&w.path) == Some(&id));
            if !current {
                self.remove_watch(id);
            }
        }
        self.synth.clear();
        let now = Instant::now();
        self.coalesce_seen
            .retain(|_, at| now.duration_since(*at) < COALESCE_WINDOW);
    }

    fn process(&mut self, wd: i32, mask: u32, cookie: u32, name: Option<OsString>) {
        if mask & IN_Q_OVERFLOW != 0 {
            self.overflow();
            return;
        }
        let Some(w) = self.watches.get(&wd) else {
            return;
        };
        let wpath = w.path.clone();
        let roles = w.roles.clone();
        let epath = match &name {
            Some(n) => wpath.join(n),
            None => wpath.clone(),
        };
        let mut from_scan = false;
        if let Some(n) = &name {
            let key = (wd, n.clone());
            if self.synth.remove(&key) && mask & IN_CREATE != 0 {
                from_scan = true;
            }
        }
        let real = if from_scan {
            None
        } else {
            Some((wd, cookie, name.clone()))
        };
        self.emitted_now.clear();
        for role in &roles {
            match role {
                Role::Dir(r) => self.on_dir(*r, wd, &wpath, &epath, mask, cookie, &real),
                Role::File(r) => {
                    let report = self.spec.roots[*r].report_mask();
                    if mask & report != 0 && real.is_some() {
                        self.report(*r, wd, &wpath, &wpath, mask, real.clone());
                    }
                }
                Role::Anchor(r, want) => {
                    if name.as_deref() == Some(want.as_os_str()) {
                        self.on_anchor(*r, mask);
                    } else if name.is_none() && mask & (IN_MOVE_SELF | IN_DELETE_SELF) != 0 {
                        // The anchor directory itself went away: find the path again.
                        self.reanchor(*r, IN_MOVED_FROM);
                    }
                }
            }
        }
        if mask & IN_IGNORED != 0 && self.watches.contains_key(&wd) {
            self.watches.remove(&wd);
            if self.by_path.get(&wpath) == Some(&wd) {
                self.by_path.remove(&wpath);
            }
            for role in roles {
                match role {
                    Role::Dir(r) if wpath == self.spec.roots[r].path => self.reanchor(r, IN_DELETE),
                    Role::File(r) if self.roots[r].kind == Kind::File => {
                        self.reanchor(r, IN_DELETE)
                    }
                    Role::Anchor(r, _) => self.reanchor(r, IN_DELETE),
                    _ => {}
                }
            }
        }
    }

    /// The root's path may have changed under us: resolve it again, reporting a disappearance.
    fn reanchor(&mut self, r: usize, how: u32) {
        let was = self.roots[r].kind;
        self.detach_root(r, true);
        self.resolve_root(r, true);
        let now = self.roots[r].kind;
        if was != Kind::Missing && now == Kind::Missing {
            self.identity(r, how, was == Kind::Dir, false);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_dir(
        &mut self,
        r: usize,
        wd: i32,
        wpath: &Path,
        epath: &Path,
        mask: u32,
        cookie: u32,
        real: &Option<(i32, u32, Option<OsString>)>,
    ) {
        let spec = &self.spec.roots[r];
        let es = lossy(epath);
        let excluded = spec.excluded(&es);
        let (auto_add, report) = (spec.auto_add, spec.report_mask());
        if mask & report != 0 && real.is_some() {
            if excluded {
                tracing::debug!("excluding {es} from event for {}", spec.path.display());
            } else {
                self.report(r, wd, wpath, epath, mask, real.clone());
            }
        }
        if real.as_ref().is_some_and(|(_, _, n)| n.is_none()) || mask & IN_ISDIR == 0 {
            return;
        }
        // A directory came or went under a watched one.
        if mask & IN_CREATE != 0 && auto_add && !excluded && real.is_some() {
            self.add_tree(r, epath, true, false);
        }
        if mask & IN_MOVED_FROM != 0 && !self.pending_moves.iter().any(|(c, _)| *c == cookie) {
            self.pending_moves.push((cookie, epath.to_path_buf()));
        }
        if mask & IN_MOVED_TO != 0 {
            if let Some(i) = self.pending_moves.iter().position(|(c, _)| *c == cookie) {
                let (_, src) = self.pending_moves.remove(i);
                self.rename_subtree(&src, epath);
            } else if auto_add && !excluded && !self.by_path.contains_key(epath) {
                // pyinotify: a directory moved in from elsewhere is watched recursively.
                self.add_tree(r, epath, false, true);
            }
        }
    }

    /// A directory moved within the watched tree: its watches keep their wds, paths change.
    fn rename_subtree(&mut self, src: &Path, dst: &Path) {
        let ids: Vec<i32> = self
            .watches
            .iter()
            .filter(|(_, w)| w.path.starts_with(src))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            let Some(w) = self.watches.get_mut(&id) else {
                continue;
            };
            let Ok(rest) = w.path.strip_prefix(src) else {
                continue;
            };
            let new = if rest.as_os_str().is_empty() {
                dst.to_path_buf()
            } else {
                dst.join(rest)
            };
            let old = std::mem::replace(&mut w.path, new.clone());
            if self.by_path.get(&old) == Some(&id) {
                self.by_path.remove(&old);
            }
            self.by_path.insert(new.clone(), id);
            self.attribute_watch(&new);
        }
    }

    /// An event on the root's anchor about the next component of the root's path.
    fn on_anchor(&mut self, r: usize, mask: u32) {
        let was = self.roots[r].kind;
        if mask & (IN_CREATE | IN_MOVED_TO) != 0 {
            self.resolve_root(r, true);
            let now = self.roots[r].kind;
            if now != Kind::Missing {
                let how = mask & (IN_CREATE | IN_MOVED_TO);
                self.identity(r, how, now == Kind::Dir, was != Kind::Missing);
            }
        } else if mask & (IN_DELETE | IN_MOVED_FROM) != 0 {
            let moved = mask & IN_MOVED_FROM != 0;
            self.detach_root(r, moved);
            self.resolve_root(r, true);
            if was != Kind::Missing {
                self.identity(
                    r,
                    mask & (IN_DELETE | IN_MOVED_FROM),
                    was == Kind::Dir,
                    false,
                );
            }
        }
    }

    /// A kernel event for a watch, honouring `oneshot`: once a watch fired, it is quiet until
    /// the next interval (Salt's loop re-adds a oneshot watch the kernel removed).
    fn report(
        &mut self,
        r: usize,
        wd: i32,
        tag: &Path,
        path: &Path,
        mask: u32,
        real: Option<(i32, u32, Option<OsString>)>,
    ) {
        if self.muted.contains_key(&wd) {
            return;
        }
        self.emit(r, tag, path, mask, real);
        if self.spec.roots[r].oneshot {
            self.muted.insert(wd, Instant::now() + self.interval);
        }
    }

    /// Report the watched path itself appearing, being replaced, or going away.
    fn identity(&mut self, r: usize, how: u32, dir: bool, replaced: bool) {
        let spec = &self.spec.roots[r];
        if !spec.reports_identity_changes() {
            return;
        }
        // The watch itself reports IN_DELETE_SELF / IN_MOVE_SELF when asked to.
        if (how & IN_DELETE != 0 && spec.mask & IN_DELETE_SELF != 0)
            || (how & IN_MOVED_FROM != 0 && spec.mask & IN_MOVE_SELF != 0)
        {
            return;
        }
        let path = self.spec.roots[r].path.clone();
        let mask = if dir { how | IN_ISDIR } else { how };
        let before = self.out.len();
        self.emit(r, &path, &path, mask, None);
        if replaced && self.out.len() > before {
            if let Some(d) = self.out.last_mut() {
                d.insert("replaced".into(), Value::Bool(true));
            }
        }
    }

    /// One event, as Salt's beacon builds it, plus evidence; `real` carries the kernel event's
    /// identity for `coalesce`.
    fn emit(
        &mut self,
        r: usize,
        tag: &Path,
        path: &Path,
        mask: u32,
        real: Option<(i32, u32, Option<OsString>)>,
    ) {
        let (tag, path_s, change) = (lossy(tag), lossy(path), maskname(mask));
        if !self
            .emitted_now
            .insert((tag.clone(), path_s.clone(), change.clone()))
        {
            return;
        }
        if self.spec.coalesce {
            if let Some((wd, cookie, name)) = real {
                let key = (wd, mask, cookie, name.unwrap_or_default());
                let now = Instant::now();
                if let Some(at) = self.coalesce_seen.get(&key) {
                    if now.duration_since(*at) < COALESCE_WINDOW {
                        return;
                    }
                }
                self.coalesce_seen.insert(key, now);
            }
        }
        let mut d = Data::new();
        d.insert("tag".into(), Value::String(tag));
        d.insert("path".into(), Value::String(path_s.clone()));
        d.insert("change".into(), Value::String(change));
        let spec = &self.spec.roots[r];
        if mask & IN_ISDIR == 0 && mask & (IN_IGNORED | IN_UNMOUNT) == 0 {
            if spec.checksum.is_some() {
                d.insert("checksum_type".into(), Value::String("sha256".into()));
                d.insert(
                    "checksum".into(),
                    evidence::sha256_file(path).map_or(Value::Null, Value::String),
                );
            }
            if spec.diff {
                let new = evidence::read_text(path, spec.diff_max_bytes);
                let old = self.roots[r]
                    .texts
                    .get(path)
                    .cloned()
                    .unwrap_or(Text::Absent);
                match (&old, &new) {
                    (Text::Skipped(why), _) | (_, Text::Skipped(why)) => {
                        d.insert("diff".into(), Value::Null);
                        d.insert("diff_skipped".into(), Value::String(why.clone()));
                    }
                    _ => {
                        let text = |t: &Text| match t {
                            Text::Utf8(s) => s.clone(),
                            _ => String::new(),
                        };
                        let diff = if old == new {
                            String::new()
                        } else {
                            evidence::unified(&path_s, &text(&old), &text(&new))
                        };
                        d.insert("diff".into(), Value::String(diff));
                    }
                }
                self.roots[r].texts.insert(path.to_path_buf(), new);
            }
        }
        if spec.attribute && mask & (IN_IGNORED | IN_UNMOUNT | IN_Q_OVERFLOW) == 0 {
            if let Some(a) = self.attribution.as_mut() {
                if let Some(actor) = a.take(path, mask, self.read_at) {
                    d.extend(a.keys(&actor));
                }
            }
        }
        self.out.push(d);
    }

    /// The kernel dropped events: say so, then re-scan every root so watches are right again,
    /// reporting the files whose content is known to have changed meanwhile.
    fn overflow(&mut self) {
        tracing::warn!("inotify queue overflow: events were lost; re-scanning every watched path");
        let before: Vec<HashMap<PathBuf, Text>> =
            self.roots.iter().map(|s| s.texts.clone()).collect();
        let ids: Vec<i32> = self.watches.keys().copied().collect();
        for id in ids {
            self.remove_watch(id);
        }
        self.pending_moves.clear();
        self.retire.clear();
        self.synth.clear();
        // Directories created meanwhile would have been auto-added: watch whole trees.
        self.rescanning = true;
        for r in 0..self.roots.len() {
            self.roots[r].kind = Kind::Missing;
            self.resolve_root(r, false);
        }
        self.rescanning = false;
        let mut changed = Vec::new();
        for (r, old) in before.iter().enumerate() {
            for (p, t) in old {
                if self.roots[r].texts.get(p) != Some(t) {
                    changed.push(Value::String(lossy(p)));
                }
            }
        }
        let roots: Vec<Value> = self
            .spec
            .roots
            .iter()
            .map(|s| Value::String(lossy(&s.path)))
            .collect();
        let mut d = Data::new();
        d.insert("tag".into(), Value::String("overflow".into()));
        d.insert("change".into(), Value::String("IN_Q_OVERFLOW".into()));
        d.insert("roots".into(), Value::Array(roots));
        d.insert("changed".into(), Value::Array(changed));
        d.insert(
            "message".into(),
            Value::String(
                "the kernel's inotify queue overflowed (fs.inotify.max_queued_events): changes \
                 were lost; every watched path was re-scanned"
                    .into(),
            ),
        );
        self.out.push(d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(path: &str, change: &str, diff: Option<&str>) -> Data {
        let mut d = Data::new();
        d.insert("tag".into(), Value::String("/d".into()));
        d.insert("path".into(), Value::String(path.into()));
        d.insert("change".into(), Value::String(change.into()));
        if let Some(diff) = diff {
            d.insert("diff".into(), Value::String(diff.into()));
        }
        d
    }

    #[test]
    fn summary_merges_repeats_keeps_diffs_and_bounds_them() {
        let job = StateJob {
            jid: "20260101000000000000".into(),
            fun: "state.apply".into(),
            pid: 1,
        };
        let mut s = Summary::new(&job);
        s.absorb(vec![
            change("/d/a", "IN_MODIFY", Some("-1\n+2\n")),
            change("/d/b", "IN_CREATE", None),
            change("/d/a", "IN_MODIFY", Some("-2\n+3\n")),
            change("/d/a", "IN_MODIFY", Some("")),
        ]);
        let big = "x".repeat(SUMMARY_DIFF_MAX);
        s.absorb(vec![change("/d/c", "IN_MODIFY", Some(&big))]);
        let ev = s.into_event(&job).expect("a summary");
        assert_eq!(ev["tag"], "state_run");
        assert_eq!(ev["jid"], "20260101000000000000");
        assert_eq!(ev["count"], 5);
        assert_eq!(ev["paths"], json!(["/d/a", "/d/b", "/d/c"]));
        let changes = ev["changes"].as_array().expect("changes");
        assert_eq!(changes[0]["count"], 3);
        assert_eq!(changes[0]["diff"], "-1\n+2\n-2\n+3\n");
        assert_eq!(changes[2]["diff"], Value::Null);
        assert_eq!(changes[2]["diff_truncated"], true);
        // Nothing happened: no summary at all.
        assert!(Summary::new(&job).into_event(&job).is_none());
    }
}
