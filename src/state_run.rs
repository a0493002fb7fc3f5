//! Is salt-minion running a `state.*` job? Detected the way salt-minion does it: the msgpack
//! job files in `<cachedir>/proc/`, whose `pid` is alive and is a Salt process.

use serde::Deserialize;
use std::path::Path;

/// A running state job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateJob {
    pub jid: String,
    pub fun: String,
    pub pid: i32,
}

#[derive(Deserialize)]
struct JobFile {
    #[serde(default)]
    jid: Option<JobId>,
    #[serde(default)]
    fun: Option<String>,
    #[serde(default)]
    pid: Option<i64>,
}

/// Salt writes the jid as a string; accept a number too.
#[derive(Deserialize)]
#[serde(untagged)]
enum JobId {
    Text(String),
    Number(i64),
}

/// The first running `state.*` job found in `<cachedir>/proc`, if any. Unlike salt-minion, the
/// files of dead jobs are left alone: they are salt-minion's to clean.
pub fn running_state_job(cachedir: &Path) -> Option<StateJob> {
    let dir = std::fs::read_dir(cachedir.join("proc")).ok()?;
    for entry in dir.flatten() {
        let Ok(bytes) = std::fs::read(entry.path()) else {
            continue;
        };
        let Ok(job) = rmp_serde::from_slice::<JobFile>(&bytes) else {
            continue;
        };
        let (Some(fun), Some(pid)) = (job.fun, job.pid) else {
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
        let jid = match job.jid {
            Some(JobId::Text(s)) => s,
            Some(JobId::Number(n)) => n.to_string(),
            None => String::new(),
        };
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
