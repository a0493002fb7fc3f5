//! Is salt-minion running a `state.*` job? Detected the way salt-minion does it: the msgpack
//! job files in `<cachedir>/proc/`, whose `pid` is alive and is a Salt process.

use std::path::Path;

/// A running state job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateJob {
    pub jid: String,
    pub fun: String,
    pub pid: i32,
}

/// The job file's `key` (a msgpack map with string keys, as `salt.payload.dumps` writes it).
fn field<'a>(job: &'a rmpv::Value, key: &str) -> Option<&'a rmpv::Value> {
    job.as_map()?
        .iter()
        .find(|(k, _)| k.as_str() == Some(key))
        .map(|(_, v)| v)
}

/// The first running `state.*` job found in `<cachedir>/proc`, if any. Unlike salt-minion, the
/// files of dead jobs are left alone: they are salt-minion's to clean.
pub fn running_state_job(cachedir: &Path) -> Option<StateJob> {
    let dir = std::fs::read_dir(cachedir.join("proc")).ok()?;
    for entry in dir.flatten() {
        let Ok(bytes) = std::fs::read(entry.path()) else {
            continue;
        };
        // rmpv bounds nesting depth and preallocation: a crafted file is an error, not a crash.
        let Ok(job) = rmpv::decode::read_value(&mut bytes.as_slice()) else {
            continue;
        };
        let (Some(fun), Some(pid)) = (
            field(&job, "fun").and_then(rmpv::Value::as_str),
            field(&job, "pid").and_then(rmpv::Value::as_i64),
        ) else {
            continue;
        };
        // Salt: re.match("state.*", fun)
        if !fun.starts_with("state") {
            continue;
        }
        let Ok(pid) = i32::try_from(pid) else {
            continue;
        };
        if pid <= 0 || !is_salt_process(pid) {
            continue;
        }
        // Salt writes the jid as a string; accept a number too.
        let jid = match field(&job, "jid") {
            Some(rmpv::Value::String(s)) => s.as_str().unwrap_or_default().to_owned(),
            Some(v) => v.as_i64().map(|n| n.to_string()).unwrap_or_default(),
            None => String::new(),
        };
        let fun = fun.to_owned();
        return Some(StateJob { jid, fun, pid });
    }
    None
}

/// Alive, and (as salt's `_check_cmdline` insists, against recycled pids) a Salt process.
fn is_salt_process(pid: i32) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmdline) => cmdline.windows(4).any(|w| w == b"salt"),
        Err(_) => false,
    }
}
