//! `selinux`: SELinux leaving the desired mode, running (`<selinuxfs>/enforce`) or configured
//! (`SELINUX=` in the config file), with who was logged in at the time (from utmp, not `w`).
//! The custom beacon of the "event driven compliance" talk, built in.
//!
//! Events: tag `salt/beacon/<id>/selinux/mode`, data `changes: [{mode, who}]` (`mode` as
//! `getenforce` prints it: `Enforcing`, `Permissive`, `Disabled`); tag `.../selinux/config`,
//! data `changes: [{mode, who, file}]` for the configured mode. `who` lists the logged-in
//! sessions: `{user, line, host, login, pid}`. Each fires when the mode changes to something
//! other than the desired one, and at start when it already differs (as the talk's beacon).
//!
//! Options: `mode` (desired: `enforcing` (default), `permissive` or `disabled`), `selinuxfs`
//! (default `/sys/fs/selinux`), `config_file` (default `/etc/selinux/config`), `utmp_file`
//! (default `/var/run/utmp`), `attribute` (default False: each change adds `by: {pid, exe, cmd,
//! comm, uid, user, loginuid, login_user}`, the process that last wrote `enforce` or the config
//! file; `btf`: the kernel BTF for it). The config file's directory is watched with inotify;
//! selinuxfs does not notify writes to `enforce`, so it is also read every `interval` (default
//! 1 s).

use super::{Beacon, BeaconError, BuildContext, Data, Drive};
use crate::config::{BeaconConfig, ConfigError};
use crate::sources::attribution::{self, Attribution};
use crate::sources::fswatch::Inotify;
use crate::sources::utmp::{self, USER_PROCESS};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub struct Selinux {
    desired: String,
    enforce: PathBuf,
    config_file: PathBuf,
    utmp_file: PathBuf,
    interval: Duration,
    inotify: Option<Inotify>,
    last_mode: Option<String>,
    last_config: Option<String>,
    pending: bool,
    /// `attribute`: name the process that changed the mode (`by` in each change).
    attribute: bool,
    btf: PathBuf,
    attribution: Option<Attribution>,
    /// The probe could not load (said once in the log).
    attribution_off: bool,
}

/// The options this beacon takes (checked by `beacons::build`).
pub const OPTIONS: &[&str] = &[
    "mode",
    "selinuxfs",
    "config_file",
    "utmp_file",
    "attribute",
    "btf",
];

fn capitalize(s: &str) -> String {
    let lower = s.to_ascii_lowercase();
    let mut c = lower.chars();
    match c.next() {
        Some(f) => f.to_ascii_uppercase().to_string() + c.as_str(),
        None => String::new(),
    }
}

pub fn build(cfg: &BeaconConfig, _ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let desired = cfg.str_opt("mode", "enforcing")?.to_ascii_lowercase();
    if !["enforcing", "permissive", "disabled"].contains(&desired.as_str()) {
        let at = cfg
            .opt("mode")
            .map_or_else(|| cfg.error_here(""), |n| cfg.error(n, ""));
        return Err(ConfigError {
            message: format!("mode must be enforcing, permissive or disabled, found '{desired}'"),
            ..at
        });
    }
    Ok(Box::new(Selinux {
        desired: capitalize(&desired),
        enforce: PathBuf::from(cfg.str_opt("selinuxfs", "/sys/fs/selinux")?).join("enforce"),
        config_file: PathBuf::from(cfg.str_opt("config_file", "/etc/selinux/config")?),
        utmp_file: PathBuf::from(cfg.str_opt("utmp_file", "/var/run/utmp")?),
        interval: Duration::from_secs_f64(cfg.interval.unwrap_or(1.0)),
        inotify: None,
        last_mode: None,
        last_config: None,
        pending: true,
        attribute: cfg.bool_opt("attribute", false)?,
        btf: PathBuf::from(cfg.str_opt("btf", attribution::DEFAULT_BTF)?),
        attribution: None,
        attribution_off: false,
    }))
}

/// `getenforce`: `Enforcing`, `Permissive`, or `Disabled` when selinuxfs has no `enforce`;
/// None for an empty file (caught between a truncation and a write: read again next time).
fn running_mode(enforce: &Path) -> Result<Option<String>, BeaconError> {
    match std::fs::read_to_string(enforce) {
        Ok(s) => Ok(match s.trim() {
            "1" => Some("Enforcing".into()),
            "0" => Some("Permissive".into()),
            "" => None,
            other => {
                return Err(BeaconError::Message(format!(
                    "{}: unexpected content {other:?}",
                    enforce.display()
                )))
            }
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Some("Disabled".into())),
        Err(e) => Err(BeaconError::io(enforce, e)),
    }
}

/// The `SELINUX=` value of the config file, capitalized; `Disabled` when the file is absent;
/// None when it has no `SELINUX=` line (or is caught half-written by an in-place edit).
fn configured_mode(file: &Path) -> Result<Option<String>, BeaconError> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some("Disabled".into())),
        Err(e) => return Err(BeaconError::io(file, e)),
    };
    let value = text.lines().rev().find_map(|l| {
        let l = l.trim();
        let v = l.strip_prefix("SELINUX=")?;
        Some(v.trim().trim_matches(['"', '\'']).to_owned())
    });
    Ok(value.filter(|v| !v.is_empty()).map(|v| capitalize(&v)))
}

/// The logged-in sessions, as `who` lists them (USER_PROCESS records of utmp).
pub fn who(utmp_file: &Path) -> Value {
    match utmp::read_all(utmp_file) {
        Ok(records) => Value::Array(
            records
                .into_iter()
                .filter(|r| r.ut_type == USER_PROCESS && !r.user.is_empty())
                .map(|r| {
                    json!({
                        "user": r.user,
                        "line": r.line,
                        "host": r.host,
                        "login": utmp::rfc3339_utc(r.tv_sec),
                        "pid": r.pid,
                    })
                })
                .collect(),
        ),
        Err(e) => {
            tracing::warn!(file = %utmp_file.display(), error = %e, "cannot read utmp for `who`");
            Value::Array(Vec::new())
        }
    }
}

impl Selinux {
    /// `by`: the process that last changed one of `files`, when attribution is on and knows.
    fn attribute_to(&mut self, change: &mut Value, files: &[&Path]) {
        let Some(a) = self.attribution.as_mut() else {
            return;
        };
        if let (Some(actor), Some(obj)) = (a.last(files), change.as_object_mut()) {
            obj.insert("by".into(), Value::Object(a.keys(&actor)));
        }
    }
}

impl Beacon for Selinux {
    fn start(&mut self) -> Result<(), BeaconError> {
        let mut ino = Inotify::new().map_err(|e| BeaconError::Message(format!("inotify: {e}")))?;
        let mask = libc::IN_MODIFY
            | libc::IN_CLOSE_WRITE
            | libc::IN_CREATE
            | libc::IN_MOVED_TO
            | libc::IN_DELETE;
        for f in [&self.config_file, &self.enforce] {
            if let Some(dir) = f.parent() {
                // A missing directory (no SELinux at all) is fine: the poll still reads it.
                if let Err(e) = ino.add_watch(dir, mask) {
                    tracing::debug!(dir = %dir.display(), error = %e, "not watched");
                }
            }
        }
        self.inotify = Some(ino);
        if self.attribute && self.attribution.is_none() && !self.attribution_off {
            self.attribution = attribution::open_for("selinux", &self.btf);
            self.attribution_off = self.attribution.is_none();
        }
        if let Some(a) = self.attribution.as_mut() {
            // The files themselves too: a write to `enforce` is seen on its inode even when
            // nothing watches selinuxfs's directory.
            for f in [&self.config_file, &self.enforce] {
                if let Some(dir) = f.parent() {
                    a.watch(dir);
                }
                a.watch(f);
            }
            a.announce("selinux");
        }
        self.pending = true;
        Ok(())
    }

    fn drive(&mut self) -> Drive<'_> {
        Drive::Source(Box::pin(async move {
            if self.pending {
                return Ok(());
            }
            let interval = self.interval;
            match self.inotify.as_mut() {
                Some(ino) => tokio::select! {
                    r = ino.wait() => r.map(|_| ()).map_err(|e| BeaconError::Message(format!("inotify: {e}"))),
                    _ = tokio::time::sleep(interval) => Ok(()),
                },
                None => {
                    tokio::time::sleep(interval).await;
                    Ok(())
                }
            }
        }))
    }

    fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
        self.pending = false;
        let mut out = Vec::new();
        let mode = running_mode(&self.enforce)?;
        let config = configured_mode(&self.config_file)?;
        let mut who_cache: Option<Value> = None;
        let mut who = |f: &Path| who_cache.get_or_insert_with(|| who(f)).clone();
        let mode = mode.or_else(|| self.last_mode.clone()).unwrap_or_default();
        let config = config
            .or_else(|| self.last_config.clone())
            .unwrap_or_default();
        if self.last_mode.as_ref() != Some(&mode) && !mode.is_empty() && mode != self.desired {
            let mut d = Data::new();
            d.insert("tag".into(), json!("mode"));
            let mut change = json!({ "mode": mode, "who": who(&self.utmp_file) });
            self.attribute_to(&mut change, &[&self.enforce.clone()]);
            d.insert("changes".into(), json!([change]));
            out.push(d);
        }
        if self.last_config.as_ref() != Some(&config)
            && !config.is_empty()
            && config != self.desired
        {
            let mut d = Data::new();
            d.insert("tag".into(), json!("config"));
            let mut change = json!({
                "mode": config,
                "who": who(&self.utmp_file),
                "file": self.config_file.display().to_string(),
            });
            self.attribute_to(&mut change, &[&self.config_file.clone()]);
            d.insert("changes".into(), json!([change]));
            out.push(d);
        }
        self.last_mode = Some(mode).filter(|m| !m.is_empty());
        self.last_config = Some(config).filter(|c| !c.is_empty());
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_values() {
        let dir = std::env::temp_dir().join(format!("beacond-selinux-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("config");
        std::fs::write(
            &f,
            "# SELINUX=enforcing\nSELINUX=permissive\nSELINUXTYPE=targeted\n",
        )
        .expect("write");
        assert_eq!(
            configured_mode(&f).ok().flatten().as_deref(),
            Some("Permissive")
        );
        assert_eq!(
            configured_mode(&dir.join("nope")).ok().flatten().as_deref(),
            Some("Disabled")
        );
        std::fs::write(&f, "").expect("write");
        assert_eq!(configured_mode(&f).ok().flatten(), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
