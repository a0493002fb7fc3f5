//! `btmp`: failed logins, one event per record appended to `/var/log/btmp` (Salt's `btmp`
//! beacon; tag `salt/beacon/<id>/btmp/`).
//!
//! Options (Salt's): `users` (name → `{time_range: {start, end}}` or nothing), `groups` (same,
//! members from the group file), `defaults` (`{time_range: ...}`). beacond's own: `file`
//! (default `/var/log/btmp`) and `group_file` (default `/etc/group`).
//!
//! Unlike Salt: records are read as they are appended (inotify), the position survives restarts,
//! rotation and truncation, and `time_range` is judged on each record's own time. See
//! [`super::utmp`] for the data keys.

use super::utmp::{self, Kind};
use super::{Beacon, BuildContext};
use crate::config::{BeaconConfig, ConfigError};

/// The options this beacon takes (checked by `beacons::build`).
pub const OPTIONS: &[&str] = &["users", "groups", "defaults", "file", "group_file"];

pub fn build(cfg: &BeaconConfig, ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    utmp::build(Kind::Btmp, cfg, ctx)
}
