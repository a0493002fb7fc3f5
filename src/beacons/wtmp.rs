//! `wtmp`: logins and logouts, one event per record appended to `/var/log/wtmp` (Salt's `wtmp`
//! beacon; tag `salt/beacon/<id>/wtmp/`), with `action: login` for `ut_type` 7 and
//! `action: logout` for 8 (the logout's `user` is the one who logged in on that tty).
//!
//! Options: [`Config`] (`beacond --describe wtmp`). Salt documents `ut_type` but never applies
//! it; beacond does.

use super::utmp::{self, Common, Entry, Kind, UtType};
use super::{Beacon, BuildContext};
use crate::config::types::NameMap;
use crate::config::{de, BeaconConfig, ConfigError};
use schemars::JsonSchema;
use serde::Deserialize;
use std::path::PathBuf;

/// Logins and logouts: an event per record appended to the wtmp file, filtered by user, group
/// and time of day as Salt's beacon does.
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
    /// The wtmp file followed.
    #[serde(default = "default_file")]
    file: PathBuf,
    /// The group file `groups` members are read from.
    #[serde(default = "default_group_file")]
    group_file: PathBuf,
    /// `{login: 7, logout: 8}`: the record types of a login and a logout.
    #[serde(default)]
    ut_type: Option<UtType>,
}

fn default_file() -> PathBuf {
    PathBuf::from("/var/log/wtmp")
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
    utmp::build(Kind::Wtmp, cfg, ctx, common, c.ut_type.as_ref())
}
