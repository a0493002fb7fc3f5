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

use super::yaml::{Node, Yaml};
use std::path::Path;

/// Salt's defaults for the options beacond reads directly.
pub const DEFAULT_CACHEDIR: &str = "/var/cache/salt/minion";
pub const DEFAULT_PKI_DIR: &str = "/etc/salt/pki/minion";
pub const DEFAULT_MASTER_PORT: u16 = 4506;

/// Build the options from the merged top-level map of a config directory.
pub fn from_top(top: &[(String, Node)], config_dir: &Path) -> MinionOpts {
    let get = |k: &str| top.iter().find(|(t, _)| t == k).map(|(_, v)| v);
    let text = |k: &str| -> Option<String> {
        get(k).and_then(|n| match &n.value {
            Yaml::Str(s) if !s.is_empty() => Some(s.clone()),
            Yaml::Int(i) => Some(i.to_string()),
            _ => None,
        })
    };
    let id = text("id")
        .or_else(|| {
            // salt-minion caches the id it generated in `<config dir>/minion_id`.
            std::fs::read_to_string(config_dir.join("minion_id"))
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(fqdn);
    let master = match get("master").map(|n| &n.value) {
        Some(Yaml::Seq(items)) => items
            .iter()
            .filter_map(|n| n.as_str().map(str::to_owned))
            .collect(),
        Some(Yaml::Str(s)) if !s.is_empty() => vec![s.clone()],
        _ => vec!["salt".to_owned()],
    };
    let master_port = get("master_port")
        .and_then(|n| match &n.value {
            Yaml::Int(p) => u16::try_from(*p).ok(),
            Yaml::Str(s) => s.parse().ok(),
            _ => None,
        })
        .unwrap_or(DEFAULT_MASTER_PORT);
    let mut settings = Map::new();
    // `beacons` is read separately; keeping it out means a reload that only changes beacons
    // leaves the minion options equal.
    for (k, v) in top.iter().filter(|(k, _)| k != "beacons") {
        settings.insert(k.clone(), v.to_json());
    }
    let root_dir = text("root_dir").map(PathBuf::from);
    let under_root = |p: String| prepend_root_dir(root_dir.as_deref(), PathBuf::from(p));
    MinionOpts {
        id,
        cachedir: under_root(text("cachedir").unwrap_or_else(|| DEFAULT_CACHEDIR.into())),
        pki_dir: under_root(text("pki_dir").unwrap_or_else(|| DEFAULT_PKI_DIR.into())),
        master,
        master_port,
        settings,
    }
}

/// Salt's `prepend_root_dir`: paths move under `root_dir` unless they are already there.
fn prepend_root_dir(root: Option<&Path>, path: PathBuf) -> PathBuf {
    match root {
        Some(root) if root != Path::new("/") && !path.starts_with(root) => {
            root.join(path.strip_prefix("/").unwrap_or(&path))
        }
        _ => path,
    }
}

/// The host's fully qualified name, as salt-minion picks a default id: the canonical name of
/// the host name when the resolver knows one, else the plain host name.
pub fn fqdn() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    canonical_name(&host)
        .filter(|c| c.contains('.') && !c.starts_with("localhost"))
        .unwrap_or(host)
}

fn canonical_name(host: &str) -> Option<String> {
    let c_host = std::ffi::CString::new(host).ok()?;
    // SAFETY: `hints` is a zeroed addrinfo (a valid "no constraints" value) with only flags set;
    // `res` is written by getaddrinfo and freed exactly once below; `ai_canonname` is a
    // NUL-terminated string owned by the result list, copied before the list is freed.
    unsafe {
        let mut hints: libc::addrinfo = std::mem::zeroed();
        hints.ai_flags = libc::AI_CANONNAME;
        let mut res: *mut libc::addrinfo = std::ptr::null_mut();
        if libc::getaddrinfo(c_host.as_ptr(), std::ptr::null(), &hints, &mut res) != 0 {
            return None;
        }
        let name = if res.is_null() || (*res).ai_canonname.is_null() {
            None
        } else {
            std::ffi::CStr::from_ptr((*res).ai_canonname)
                .to_str()
                .ok()
                .map(str::to_owned)
        };
        libc::freeaddrinfo(res);
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml;

    fn opts(text: &str) -> MinionOpts {
        let node = yaml::parse("m", text).ok().flatten().expect("yaml");
        let top = node.as_map().map(<[_]>::to_vec).unwrap_or_default();
        from_top(&top, Path::new("/nonexistent"))
    }

    #[test]
    fn defaults_and_root_dir_as_salt() {
        let o = opts("id: a\n");
        assert_eq!(o.cachedir, PathBuf::from(DEFAULT_CACHEDIR));
        assert_eq!(o.master, ["salt"]);
        assert_eq!(o.master_port, 4506);
        let o = opts("id: a\nroot_dir: /srv/root\npki_dir: /srv/root/pki\nmaster: [m1, m2]\nmaster_port: '4510'\n");
        assert_eq!(o.cachedir, PathBuf::from("/srv/root/var/cache/salt/minion"));
        assert_eq!(o.pki_dir, PathBuf::from("/srv/root/pki"));
        assert_eq!(o.master, ["m1", "m2"]);
        assert_eq!(o.master_port, 4510);
        assert!(!o.settings.contains_key("beacons"));
    }
}
