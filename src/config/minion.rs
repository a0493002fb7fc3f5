//! The salt-minion settings beacond understands. Everything else in the minion config belongs
//! to salt-minion and is kept, untyped, in `settings` for the modules that own an option.

use serde_json::{Map, Value};
use std::path::PathBuf;

/// Minion-wide options, merged from `minion` and `minion.d/*.conf`.
#[derive(Debug, Clone, PartialEq)]
pub struct MinionOpts {
    /// Minion id: `id`, else the host's FQDN as salt-minion picks it.
    pub id: String,
    /// `cachedir` (default `/var/cache/salt/minion`): job files in `proc/`, beacond's own state.
    pub cachedir: PathBuf,
    /// `pki_dir` (default `/etc/salt/pki/minion`): `minion.pem`, `minion.pub`, `minion_master.pub`.
    pub pki_dir: PathBuf,
    /// `master`: one or several masters (default `salt`).
    pub master: Vec<String>,
    /// `master_port` (default 4506), the request server.
    pub master_port: u16,
    /// Every top-level minion key as plain JSON (YAML 1.1 scalars resolved as PyYAML does), for
    /// options owned by one module (e.g. `master_type`, `acceptance_wait_time`, `keysize`).
    pub settings: Map<String, Value>,
}

impl MinionOpts {
    /// A plain setting by name.
    pub fn setting(&self, key: &str) -> Option<&Value> {
        self.settings.get(key)
    }
}
