//! `btmp`: failed logins, one event per record appended to `/var/log/btmp` (Salt's `btmp`
//! beacon; tag `salt/beacon/<id>/btmp/`).
//!
//! Options: [`Config`] (`beacond --describe btmp`).
//!
//! Unlike Salt: records are read as they are appended (inotify), the position survives restarts,
//! rotation and truncation, and `time_range` is judged on each record's own time. See
//! [`super::utmp`] for the data keys.

use super::utmp::{self, Common, Entry, Kind};
use super::{Beacon, BuildContext};
use crate::config::types::NameMap;
use crate::config::{de, BeaconConfig, ConfigError};
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::PathBuf;

/// Failed logins: an event per record appended to the btmp file, filtered by user, group and
/// time of day as Salt's beacon does.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Only these users (name → nothing, or `{time_range: {start, end}}`).
    #[serde(default)]
    users: Option<NameMap<Entry>>,
    /// Only members of these groups (read from `group_file`), each as in `users`.
    #[serde(default)]
    groups: Option<NameMap<Entry>>,
    /// `{time_range: {start, end}}` for users without their own (and for everyone without
    /// `users`/`groups`).
    #[serde(default)]
    defaults: Option<Entry>,
    /// The btmp file followed.
    #[serde(default = "default_file")]
    file: PathBuf,
    /// The group file `groups` members are read from.
    #[serde(default = "default_group_file")]
    group_file: PathBuf,
}

fn default_file() -> PathBuf {
    PathBuf::from("/var/log/btmp")
}

fn default_group_file() -> PathBuf {
    PathBuf::from("/etc/group")
}

pub fn build(cfg: &BeaconConfig, ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let c: Config = de::from_config(cfg)?;
    let common = Common {
        users: &c.users,
        groups: &c.groups,
        defaults: &c.defaults,
        file: &c.file,
        group_file: &c.group_file,
    };
    utmp::build(Kind::Btmp, cfg, ctx, common, None)
}
