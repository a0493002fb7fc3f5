//! `wtmp`: logins and logouts, one event per record appended to `/var/log/wtmp` (Salt's `wtmp`
//! beacon; tag `salt/beacon/<id>/wtmp/`), with `action: login` for `ut_type` 7 and
//! `action: logout` for 8 (the logout's `user` is the one who logged in on that tty).
//!
//! Options (Salt's): `users`, `groups`, `defaults` (as `btmp`) and `ut_type`
//! (`{login: 7, logout: 8}`; Salt documents it but never applies it, beacond does). beacond's
//! own: `file` (default `/var/log/wtmp`) and `group_file` (default `/etc/group`).

use super::utmp::{self, Kind};
use super::{Beacon, BuildContext};
use crate::config::{BeaconConfig, ConfigError};

/// The options this beacon takes (checked by `beacons::build`).
pub const OPTIONS: &[&str] = &[
    "users",
    "groups",
    "defaults",
    "file",
    "group_file",
    "ut_type",
];

pub fn build(cfg: &BeaconConfig, ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    utmp::build(Kind::Wtmp, cfg, ctx)
}
