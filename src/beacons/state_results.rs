//! `state_results`: one event per state result of every finished `state.*` job, and one
//! summary event per job (seed 001's fields, as its master-side TCP returner sends them).
//!
//! Where the results come from: salt-minion's own job cache. With `cache_jobs: True`,
//! salt-minion writes each job's whole return (`jid`, `fun`, `fun_args`, `return`, `retcode`,
//! `success`) to `<cachedir>/minion_jobs/<jid>/return.p` (msgpack, `salt.utils.minion.
//! cache_jobs`) before it sends the return to the master; `salt-call --local` writes the same
//! file. It was chosen over the alternatives because:
//! - the proc dir (`<cachedir>/proc/<jid>`) only holds the job's *start* (its file is removed
//!   when the job ends, the results are never in it);
//! - the master's `salt/job/<jid>/ret/<id>` event needs a subscription to the master's
//!   publisher (beacond only holds a request channel), is lost when the master is down, and
//!   never exists for `salt-call --local`;
//! - the file is on the minion's disk, so a job that ends while beacond is down is still
//!   reported after its restart (a durable cursor: the last jid reported).
//!
//! `salt-call` *with* a master returns straight to the master and does not write the cache
//! (`salt/cli/caller.py`), so those runs are not seen; run them with `--local` or from the
//! master.
//!
//! Event-driven: inotify on `minion_jobs/` (a new job directory) and on each new job
//! directory (`return.p` closed after writing); nothing is polled.
//!
//! Options: [`Config`] (`beacond --describe state_results`).

use super::{Beacon, BeaconError, BuildContext, Data, Drive};
use crate::config::{de, BeaconConfig, ConfigError, MinionOpts};
use crate::sources::fswatch::{self, Inotify, WatchEvent};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};

/// Every finished `state.*` job (from salt-minion's job cache, `cache_jobs: True`): one event
/// per state result and one summary per job.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Send per-state events only for `result: False` states (the summary is always sent).
    #[serde(default)]
    only_failed: bool,
    /// Globs on the job's function (default: the state-running functions, `state.apply`,
    /// `state.sls`, `state.highstate`, ...).
    #[serde(default)]
    fun: Option<Globs>,
    /// Globs on state ids whose results are not sent.
    #[serde(default)]
    exclude: Option<Globs>,
    /// salt-minion's job cache (default `<cachedir>/minion_jobs`).
    #[serde(default)]
    minion_jobs: Option<PathBuf>,
}

/// A glob, or a list of globs (none empty).
#[derive(Debug, Clone, Default)]
struct Globs(Vec<String>);

/// One non-empty glob.
struct Glob(String);

impl<'de> Deserialize<'de> for Glob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Glob;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a glob")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Glob, E> {
                if s.is_empty() {
                    return Err(E::invalid_value(serde::de::Unexpected::Str(s), &self));
                }
                Ok(Glob(s.to_owned()))
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for Globs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Globs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of globs")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Globs, E> {
                Ok(Globs(vec![s.to_owned()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Globs, A::Error> {
                let mut out = Vec::new();
                while let Some(Glob(g)) = seq.next_element()? {
                    out.push(g);
                }
                Ok(Globs(out))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Globs {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Globs".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": ["array", "string"], "x-type": "list of globs" })
    }
}

/// The `state` functions whose return is a dict of state results.
const DEFAULT_FUN: &[&str] = &[
    "state.apply",
    "state.sls",
    "state.highstate",
    "state.single",
    "state.sls_id",
    "state.top",
    "state.low",
    "state.high",
    "state.template",
    "state.template_str",
];

/// The jids recently reported, so a job seen twice (a rescan racing the watch) is sent once.
const SEEN_MAX: usize = 4096;

/// A `return.p` that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ReturnFileError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a Salt job return (msgpack): {reason}")]
    Decode { path: PathBuf, reason: String },
}

/// salt-minion's setting the beacon needs, for `--check` and the agent's start-up log.
pub fn minion_warning(minion: &MinionOpts) -> Option<String> {
    let on = match minion.setting("cache_jobs") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    };
    (!on).then(|| {
        "beacon 'state_results' needs salt-minion's `cache_jobs: True` in the minion config \
         (salt-minion writes no job results to <cachedir>/minion_jobs without it); \
         restart salt-minion after setting it"
            .to_owned()
    })
}

pub struct StateResults {
    minion_id: String,
    jobs_dir: PathBuf,
    only_failed: bool,
    fun: Vec<String>,
    exclude: Vec<String>,
    state_file: PathBuf,
    inotify: Option<Inotify>,
    /// Watch on `jobs_dir`, or on its parent while `jobs_dir` does not exist yet.
    jobs_wd: Option<i32>,
    parent_wd: Option<i32>,
    /// Watches on job directories not yet returned: wd → jid.
    job_wds: HashMap<i32, String>,
    pending: Vec<WatchEvent>,
    rescan: bool,
    /// The highest jid reported (durable): jobs above it are reported after a restart.
    cursor: Option<String>,
    /// The cursor as last written to the state file.
    saved: Option<String>,
    loaded: bool,
    seen: VecDeque<String>,
    seen_set: HashSet<String>,
}

pub fn build(cfg: &BeaconConfig, ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let c: Config = de::from_config(cfg)?;
    let fun = c
        .fun
        .map(|g| g.0)
        .unwrap_or_else(|| DEFAULT_FUN.iter().map(|s| s.to_string()).collect());
    let exclude = c.exclude.map(|g| g.0).unwrap_or_default();
    let jobs_dir = c
        .minion_jobs
        .unwrap_or_else(|| ctx.minion.cachedir.join("minion_jobs"));
    if let Some(w) = minion_warning(&ctx.minion) {
        tracing::warn!("{w}");
    }
    Ok(Box::new(StateResults {
        minion_id: ctx.minion.id.clone(),
        state_file: fswatch::state_path(
            &ctx.state_dir,
            "state_results",
            &format!("{}\0{}", cfg.name, jobs_dir.display()),
        ),
        jobs_dir,
        only_failed: c.only_failed,
        fun,
        exclude,
        inotify: None,
        jobs_wd: None,
        parent_wd: None,
        job_wds: HashMap::new(),
        pending: Vec::new(),
        rescan: false,
        cursor: None,
        saved: None,
        loaded: false,
        seen: VecDeque::new(),
        seen_set: HashSet::new(),
    }))
}

/// Python's `fnmatch` for `*` and `?` (what Salt users write in these lists).
pub fn glob_match(pat: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pat.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// jids are `YYYYmmddHHMMSSffffff`: order by length, then text.
fn jid_newer(a: &str, b: &str) -> bool {
    (a.len(), a) > (b.len(), b)
}

/// Decode a `return.p` (salt.payload: msgpack, strings as str, bytes as bin) as JSON.
pub fn decode_return(path: &Path, bytes: &[u8]) -> Result<Value, ReturnFileError> {
    let bad = |reason: String| ReturnFileError::Decode {
        path: path.to_owned(),
        reason,
    };
    let mut rd = bytes;
    let value = rmpv::decode::read_value(&mut rd).map_err(|e| bad(e.to_string()))?;
    if !rd.is_empty() {
        return Err(bad(format!("{} trailing bytes", rd.len())));
    }
    let json = to_json(value);
    if !json.is_object() {
        return Err(bad("the top level is not a map".into()));
    }
    Ok(json)
}

fn to_json(v: rmpv::Value) -> Value {
    use rmpv::Value as M;
    match v {
        M::Nil => Value::Null,
        M::Boolean(b) => Value::Bool(b),
        M::Integer(i) => i
            .as_i64()
            .map(Value::from)
            .or_else(|| i.as_u64().map(Value::from))
            .unwrap_or(Value::Null),
        M::F32(f) => json!(f),
        M::F64(f) => json!(f),
        M::String(s) => Value::String(s.into_str().unwrap_or_default()),
        M::Binary(b) => Value::String(String::from_utf8_lossy(&b).into_owned()),
        M::Array(a) => Value::Array(a.into_iter().map(to_json).collect()),
        M::Map(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    M::String(s) => s.into_str().unwrap_or_default(),
                    other => match to_json(other) {
                        Value::String(s) => s,
                        j => j.to_string(),
                    },
                };
                out.insert(key, to_json(v));
            }
            Value::Object(out)
        }
        M::Ext(_, b) => Value::String(String::from_utf8_lossy(&b).into_owned()),
    }
}

/// What one job return becomes: the per-state events (in run order) and the summary.
pub struct JobEvents {
    pub states: Vec<Data>,
    pub summary: Data,
}

/// The `result` as Salt's tags spell it.
fn result_tag(v: &Value) -> &'static str {
    match v {
        Value::Bool(true) => "True",
        Value::Bool(false) => "False",
        _ => "None",
    }
}

impl StateResults {
    /// The events of one job return; `None` for a job that is not a selected state job.
    pub fn job_events(&self, ret: &Value) -> Option<JobEvents> {
        let fun = ret.get("fun").and_then(Value::as_str)?;
        if !self.fun.iter().any(|g| glob_match(g, fun)) {
            return None;
        }
        let jid = match ret.get("jid") {
            Some(Value::String(s)) => Value::String(s.clone()),
            Some(Value::Number(n)) => Value::String(n.to_string()),
            _ => Value::Null,
        };
        let minion_id = ret
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or(&self.minion_id)
            .to_owned();
        let fun_args = ret.get("fun_args").cloned().unwrap_or(Value::Null);
        let base = |tag: &str| -> Data {
            let mut d = Data::new();
            d.insert("tag".into(), Value::from(tag));
            d.insert("minion_id".into(), Value::from(minion_id.clone()));
            d.insert("jid".into(), jid.clone());
            d.insert("fun".into(), Value::from(fun));
            d.insert("fun_args".into(), fun_args.clone());
            d
        };
        let mut summary = base("summary");
        let mut states = Vec::new();
        let (mut ok, mut failed, mut none, mut changed) = (0u64, 0u64, 0u64, 0u64);
        let mut duration = 0.0f64;
        let results = ret
            .get("return")
            .and_then(Value::as_object)
            .filter(|m| m.values().all(|r| r.get("result").is_some()));
        match results {
            Some(map) => {
                let mut rows: Vec<(&String, &Value)> = map.iter().collect();
                rows.sort_by_key(|(_, r)| r.get("__run_num__").and_then(Value::as_u64));
                for (state_name, r) in rows {
                    // `module_|-id_|-name_|-function`
                    let parts: Vec<&str> = state_name.split("_|-").collect();
                    let state_id = r
                        .get("__id__")
                        .and_then(Value::as_str)
                        .or(parts.get(1).copied())
                        .unwrap_or_default();
                    if self.exclude.iter().any(|g| glob_match(g, state_id)) {
                        continue;
                    }
                    let result = r.get("result").cloned().unwrap_or(Value::Null);
                    match result {
                        Value::Bool(true) => ok += 1,
                        Value::Bool(false) => failed += 1,
                        _ => none += 1,
                    }
                    if r.get("changes")
                        .is_some_and(|c| c.as_object().is_some_and(|m| !m.is_empty()))
                    {
                        changed += 1;
                    }
                    duration += r.get("duration").and_then(Value::as_f64).unwrap_or(0.0);
                    if self.only_failed && result != Value::Bool(false) {
                        continue;
                    }
                    let mut d = base(result_tag(&result));
                    d.insert("state_id".into(), Value::from(state_id));
                    d.insert("state_name".into(), Value::from(state_name.as_str()));
                    let name = r
                        .get("name")
                        .cloned()
                        .unwrap_or_else(|| Value::from(parts.get(2).copied().unwrap_or_default()));
                    d.insert("name".into(), name);
                    d.insert("result".into(), result);
                    for k in [
                        "comment",
                        "changes",
                        "duration",
                        "start_time",
                        "__run_num__",
                        "__sls__",
                    ] {
                        d.insert(k.into(), r.get(k).cloned().unwrap_or(Value::Null));
                    }
                    states.push(d);
                }
            }
            None => {
                // A job that failed before running states: the return is a list of errors
                // (render, requisite, conflict) or a message.
                let errors = match ret.get("return") {
                    Some(Value::Array(a)) => a.clone(),
                    Some(Value::Null) | None => Vec::new(),
                    Some(other) => vec![other.clone()],
                };
                summary.insert("errors".into(), Value::Array(errors));
            }
        }
        summary.insert("total".into(), json!(ok + failed + none));
        summary.insert(
            "counts".into(),
            json!({"True": ok, "False": failed, "None": none}),
        );
        summary.insert("changed".into(), json!(changed));
        summary.insert(
            "duration".into(),
            json!((duration * 1000.0).round() / 1000.0),
        );
        for k in ["success", "retcode"] {
            summary.insert(k.into(), ret.get(k).cloned().unwrap_or(Value::Null));
        }
        Some(JobEvents { states, summary })
    }

    fn mark_seen(&mut self, jid: &str) {
        self.remember(jid);
        if self.cursor.as_deref().is_none_or(|c| jid_newer(jid, c)) {
            self.cursor = Some(jid.to_owned());
        }
    }

    fn remember(&mut self, jid: &str) {
        if self.seen_set.insert(jid.to_owned()) {
            self.seen.push_back(jid.to_owned());
            while self.seen.len() > SEEN_MAX {
                if let Some(old) = self.seen.pop_front() {
                    self.seen_set.remove(&old);
                }
            }
        }
    }

    /// Read one job's `return.p`. `strict`: the file is complete (closed after writing, or
    /// found by a rescan), so a decoding failure is reported; otherwise salt-minion may be
    /// writing it right now and its close will bring it back.
    fn process(&mut self, jid: &str, strict: bool, out: &mut Vec<Data>) {
        if self.seen_set.contains(jid) {
            return;
        }
        let path = self.jobs_dir.join(jid).join("return.p");
        let bytes = match std::fs::read(&path) {
            // Salt 3006 closes an empty return.p once before writing it (seen on the
            // minion): an empty file is "not yet written", its next close brings it back.
            Ok(b) if b.is_empty() => return,
            other => other,
        };
        let parsed = bytes
            .map_err(|source| ReturnFileError::Read {
                path: path.clone(),
                source,
            })
            .and_then(|b| decode_return(&path, &b));
        match parsed {
            Ok(ret) => {
                if let Some(ev) = self.job_events(&ret) {
                    tracing::debug!(jid, states = ev.states.len(), "state job returned");
                    out.extend(ev.states);
                    out.push(ev.summary);
                }
            }
            Err(ReturnFileError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return;
            }
            Err(e) if strict => {
                tracing::warn!("{e}");
                let mut d = Data::new();
                d.insert("error".into(), Value::from(e.to_string()));
                d.insert("jid".into(), Value::from(jid));
                out.push(d);
                // Reported once, but the cursor only follows real jobs: a stray directory
                // named like a future jid must not hide the jobs after it from a restart.
                self.remember(jid);
                self.drop_job_watch(jid);
                return;
            }
            Err(_) => return,
        }
        self.mark_seen(jid);
        self.drop_job_watch(jid);
    }

    fn drop_job_watch(&mut self, jid: &str) {
        let done: Vec<i32> = self
            .job_wds
            .iter()
            .filter(|(_, j)| j.as_str() == jid)
            .map(|(w, _)| *w)
            .collect();
        for wd in done {
            self.job_wds.remove(&wd);
            if let Some(ino) = &mut self.inotify {
                ino.rm_watch(wd);
            }
        }
    }

    fn watch_jobs_dir(&mut self) -> Result<(), BeaconError> {
        let Some(ino) = &mut self.inotify else {
            return Ok(());
        };
        let mask = libc::IN_CREATE | libc::IN_MOVED_TO | libc::IN_ONLYDIR;
        match ino.add_watch(&self.jobs_dir, mask) {
            Ok(wd) => {
                self.jobs_wd = Some(wd);
                if let Some(p) = self.parent_wd.take() {
                    ino.rm_watch(p);
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // salt-minion creates minion_jobs/ with its first cached job.
                let parent = self.jobs_dir.parent().unwrap_or(Path::new("/"));
                let wd = ino
                    .add_watch(parent, libc::IN_CREATE | libc::IN_MOVED_TO)
                    .map_err(|e| BeaconError::io(parent, e))?;
                self.parent_wd = Some(wd);
                Ok(())
            }
            Err(e) => Err(BeaconError::io(&self.jobs_dir, e)),
        }
    }

    fn watch_job(&mut self, jid: &str, out: &mut Vec<Data>) {
        if self.seen_set.contains(jid) || self.job_wds.values().any(|j| j == jid) {
            return;
        }
        let dir = self.jobs_dir.join(jid);
        if let Some(ino) = &mut self.inotify {
            let mask = libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO | libc::IN_ONLYDIR;
            match ino.add_watch(&dir, mask) {
                Ok(wd) => {
                    self.job_wds.insert(wd, jid.to_owned());
                }
                Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "job dir gone"),
            }
        }
        // The file may have been written before the watch was in place.
        self.process(jid, false, out);
    }

    /// Every job directory newer than the cursor (start-up catch-up, queue overflow).
    fn rescan(&mut self, out: &mut Vec<Data>) {
        let mut jids: Vec<String> = match std::fs::read_dir(&self.jobs_dir) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().into_string().ok())
                .collect(),
            Err(_) => return,
        };
        jids.sort_by(|a, b| (a.len(), a).cmp(&(b.len(), b)));
        let cursor = self.cursor.clone().unwrap_or_default();
        for jid in jids.into_iter().filter(|j| jid_newer(j, &cursor)) {
            if self.jobs_dir.join(&jid).join("return.p").exists() {
                self.process(&jid, true, out);
            } else {
                self.watch_job(&jid, out);
            }
        }
    }

    /// The newest job directory now (the start of a first run: history is not reported).
    fn newest_jid(&self) -> String {
        std::fs::read_dir(&self.jobs_dir)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .max_by(|a, b| (a.len(), a).cmp(&(b.len(), b)))
                    .unwrap_or_default()
            })
            .unwrap_or_default()
    }
}

impl Beacon for StateResults {
    fn start(&mut self) -> Result<(), BeaconError> {
        self.inotify =
            Some(Inotify::new().map_err(|e| BeaconError::Message(format!("inotify: {e}")))?);
        self.job_wds.clear();
        self.jobs_wd = None;
        self.parent_wd = None;
        self.watch_jobs_dir()?;
        if !self.loaded {
            // Before the first evaluation, so a job ending right after start is not taken
            // for history.
            self.loaded = true;
            self.saved = fswatch::load_state(&self.state_file)
                .and_then(|v| v["last_jid"].as_str().map(str::to_owned));
            self.cursor = Some(self.saved.clone().unwrap_or_else(|| self.newest_jid()));
        }
        self.rescan = true;
        tracing::info!(dir = %self.jobs_dir.display(), "state_results: watching salt-minion's job cache");
        Ok(())
    }

    fn drive(&mut self) -> Drive<'_> {
        Drive::Source(Box::pin(async move {
            loop {
                if self.rescan || !self.pending.is_empty() {
                    return Ok(());
                }
                let Some(ino) = self.inotify.as_mut() else {
                    return Err(BeaconError::Message("inotify not started".into()));
                };
                let events = ino
                    .wait()
                    .await
                    .map_err(|e| BeaconError::Message(format!("inotify: {e}")))?;
                self.pending.extend(events);
            }
        }))
    }

    fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
        let before = self.saved.clone();
        let mut out = Vec::new();
        let events = std::mem::take(&mut self.pending);
        for ev in &events {
            if ev.overflow() {
                self.rescan = true;
                continue;
            }
            let name = ev
                .name
                .as_ref()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if Some(ev.wd) == self.parent_wd {
                if self.jobs_dir.file_name().is_some_and(|n| n == name) {
                    self.watch_jobs_dir()?;
                    self.rescan = true;
                }
            } else if Some(ev.wd) == self.jobs_wd {
                if ev.mask & libc::IN_ISDIR != 0 && !name.is_empty() {
                    self.watch_job(name, &mut out);
                }
            } else if let Some(jid) = self.job_wds.get(&ev.wd).cloned() {
                if ev.mask & libc::IN_IGNORED != 0 {
                    self.job_wds.remove(&ev.wd);
                } else if name == "return.p" {
                    self.process(&jid, true, &mut out);
                }
            }
        }
        if self.rescan {
            self.rescan = false;
            self.rescan(&mut out);
        }
        if self.cursor != before {
            fswatch::save_state(&self.state_file, &json!({ "last_jid": self.cursor }))?;
            self.saved = self.cursor.clone();
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beacon(opts: &str) -> StateResults {
        let dir = std::env::temp_dir().join(format!("sr-unit-{}", std::process::id()));
        StateResults {
            minion_id: "m1".into(),
            jobs_dir: dir.join("minion_jobs"),
            only_failed: opts.contains("only_failed"),
            fun: DEFAULT_FUN.iter().map(|s| s.to_string()).collect(),
            exclude: if opts.contains("exclude") {
                vec!["skip*".into()]
            } else {
                vec![]
            },
            state_file: dir.join("state.json"),
            inotify: None,
            jobs_wd: None,
            parent_wd: None,
            job_wds: HashMap::new(),
            pending: Vec::new(),
            rescan: false,
            cursor: None,
            saved: None,
            loaded: true,
            seen: VecDeque::new(),
            seen_set: HashSet::new(),
        }
    }

    /// A return as salt-minion caches it, encoded the way salt.payload does (msgpack).
    fn return_p() -> Vec<u8> {
        use rmpv::Value as M;
        let s = |x: &str| M::from(x);
        let state = |id: &str, name: &str, fun: &str, result: M, run: u64, changes: M| {
            (
                s(&format!("test_|-{id}_|-{name}_|-{fun}")),
                M::Map(vec![
                    (s("name"), s(name)),
                    (s("changes"), changes),
                    (s("result"), result),
                    (s("comment"), s("Success!")),
                    (s("__sls__"), s("beacond_test")),
                    (s("__run_num__"), M::from(run)),
                    (s("start_time"), s("19:30:37.613000")),
                    (s("duration"), M::F64(1.5)),
                    (s("__id__"), s(id)),
                ]),
            )
        };
        let ret = M::Map(vec![
            (s("success"), M::Boolean(false)),
            (s("retcode"), M::from(2)),
            (s("jid"), s("20251209123456789012")),
            (s("fun"), s("state.sls")),
            (s("fun_args"), M::Array(vec![s("beacond_test")])),
            (s("id"), s("server01")),
            (
                s("return"),
                M::Map(vec![
                    state(
                        "b",
                        "two",
                        "fail_without_changes",
                        M::Boolean(false),
                        1,
                        M::Map(vec![]),
                    ),
                    state(
                        "a",
                        "one",
                        "succeed_with_changes",
                        M::Boolean(true),
                        0,
                        M::Map(vec![(s("x"), M::Binary(b"y".to_vec()))]),
                    ),
                    state("skip_me", "three", "nop", M::Nil, 2, M::Map(vec![])),
                ]),
            ),
        ]);
        let mut buf = Vec::new();
        rmpv::encode::write_value(&mut buf, &ret).expect("encode");
        buf
    }

    #[test]
    fn a_return_file_becomes_one_event_per_state_and_a_summary() {
        let b = beacon("");
        let ret = decode_return(Path::new("return.p"), &return_p()).expect("decode");
        let ev = b.job_events(&ret).expect("a state job");
        assert_eq!(ev.states.len(), 3);
        let first = &ev.states[0];
        assert_eq!(first["tag"], "True");
        assert_eq!(first["state_id"], "a");
        assert_eq!(first["state_name"], "test_|-a_|-one_|-succeed_with_changes");
        assert_eq!(first["name"], "one");
        assert_eq!(first["minion_id"], "server01");
        assert_eq!(first["jid"], "20251209123456789012");
        assert_eq!(first["fun"], "state.sls");
        assert_eq!(first["fun_args"], json!(["beacond_test"]));
        assert_eq!(first["changes"], json!({"x": "y"}));
        assert_eq!(first["duration"], json!(1.5));
        assert_eq!(first["start_time"], "19:30:37.613000");
        assert_eq!(first["__run_num__"], 0);
        assert_eq!(first["comment"], "Success!");
        assert_eq!(ev.states[1]["tag"], "False");
        assert_eq!(ev.states[1]["result"], false);
        assert_eq!(ev.states[2]["tag"], "None");
        assert_eq!(ev.states[2]["result"], Value::Null);
        let s = &ev.summary;
        assert_eq!(s["tag"], "summary");
        assert_eq!(s["counts"], json!({"True": 1, "False": 1, "None": 1}));
        assert_eq!(s["total"], 3);
        assert_eq!(s["changed"], 1);
        assert_eq!(s["duration"], json!(4.5));
        assert_eq!(s["retcode"], 2);
    }

    #[test]
    fn only_failed_and_exclude_filter_the_state_events() {
        let ret = decode_return(Path::new("r"), &return_p()).expect("decode");
        let ev = beacon("only_failed").job_events(&ret).expect("job");
        assert_eq!(ev.states.len(), 1);
        assert_eq!(ev.states[0]["state_id"], "b");
        assert_eq!(ev.summary["total"], 3);
        let ev = beacon("exclude").job_events(&ret).expect("job");
        assert_eq!(ev.states.len(), 2);
        assert_eq!(ev.summary["counts"]["None"], 0);
    }

    #[test]
    fn other_functions_are_ignored_and_render_errors_are_a_summary() {
        let b = beacon("");
        assert!(b
            .job_events(&json!({"fun": "test.ping", "jid": "1", "return": true}))
            .is_none());
        assert!(b
            .job_events(&json!({"fun": "state.show_sls", "jid": "1", "return": {}}))
            .is_none());
        let ev = b
            .job_events(&json!({"fun": "state.apply", "jid": "1", "retcode": 1,
                "return": ["Rendering SLS 'base:x' failed: mapping values are not allowed"]}))
            .expect("job");
        assert!(ev.states.is_empty());
        assert_eq!(ev.summary["total"], 0);
        assert_eq!(ev.summary["errors"].as_array().map(Vec::len), Some(1));
        assert_eq!(ev.summary["minion_id"], "m1");
    }

    #[test]
    fn a_malformed_return_file_is_a_clear_error() {
        let p = Path::new("/c/minion_jobs/1/return.p");
        for bad in [
            &b"\xc1garbage"[..],
            b"",
            &return_p()[..10],
            b"\x93\x01\x02\x03",
        ] {
            let e = decode_return(p, bad).expect_err("must fail");
            let msg = e.to_string();
            assert!(
                msg.starts_with("/c/minion_jobs/1/return.p: not a Salt job return"),
                "{msg}"
            );
        }
        let mut extra = return_p();
        extra.push(0);
        assert!(decode_return(p, &extra)
            .expect_err("trailing")
            .to_string()
            .contains("trailing"));
    }

    #[test]
    fn malformed_file_on_disk_sends_an_error_event_and_the_next_job_still_works() {
        let dir = std::env::temp_dir().join(format!("sr-unit-disk-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut b = beacon("");
        b.jobs_dir = dir.join("minion_jobs");
        for (jid, body) in [
            ("20250101000000000001", b"\xc1".to_vec()),
            ("20250101000000000002", return_p()),
        ] {
            std::fs::create_dir_all(b.jobs_dir.join(jid)).expect("mkdir");
            std::fs::write(b.jobs_dir.join(jid).join("return.p"), body).expect("write");
        }
        let mut out = Vec::new();
        b.process("20250101000000000001", true, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("not a Salt job return")));
        assert!(
            out[0].get("tag").is_none(),
            "Salt's error event has no sub-tag"
        );
        out.clear();
        b.process("20250101000000000002", true, &mut out);
        assert_eq!(out.len(), 4);
        // Sent once only.
        out.clear();
        b.process("20250101000000000002", true, &mut out);
        assert!(out.is_empty());
        assert_eq!(b.cursor.as_deref(), Some("20250101000000000002"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn globs_match_like_fnmatch() {
        assert!(glob_match("state.*", "state.apply"));
        assert!(glob_match("state.s?s", "state.sls"));
        assert!(!glob_match("state.sls", "state.sls_id"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a*b", "acbd"));
        assert!(jid_newer("20250101000000000010", "20250101000000000009"));
        assert!(!jid_newer("2025", "20250101000000000009"));
    }
}
