//! The `inotify` beacon's configuration, validated as Salt's `validate()` does (and a little
//! stricter: unknown keys and bad regexes are errors here, not silent no-ops).

use crate::config::yaml::{Node, Yaml};
use crate::config::{BeaconConfig, ConfigError};
use fancy_regex::Regex;
use std::path::{Component, PathBuf};

/// Salt's mask names (its `VALID_MASK`) and pyinotify's values for them.
pub const MASK_NAMES: [(&str, u32); 17] = [
    ("access", IN_ACCESS),
    ("attrib", IN_ATTRIB),
    ("close_nowrite", IN_CLOSE_NOWRITE),
    ("close_write", IN_CLOSE_WRITE),
    ("create", IN_CREATE),
    ("delete", IN_DELETE),
    ("delete_self", IN_DELETE_SELF),
    ("excl_unlink", IN_EXCL_UNLINK),
    ("ignored", IN_IGNORED),
    ("modify", IN_MODIFY),
    ("moved_from", IN_MOVED_FROM),
    ("moved_to", IN_MOVED_TO),
    ("move_self", IN_MOVE_SELF),
    ("oneshot", IN_ONESHOT),
    ("onlydir", IN_ONLYDIR),
    ("open", IN_OPEN),
    ("unmount", IN_UNMOUNT),
];

pub const IN_ACCESS: u32 = 0x0000_0001;
pub const IN_MODIFY: u32 = 0x0000_0002;
pub const IN_ATTRIB: u32 = 0x0000_0004;
pub const IN_CLOSE_WRITE: u32 = 0x0000_0008;
pub const IN_CLOSE_NOWRITE: u32 = 0x0000_0010;
pub const IN_OPEN: u32 = 0x0000_0020;
pub const IN_MOVED_FROM: u32 = 0x0000_0040;
pub const IN_MOVED_TO: u32 = 0x0000_0080;
pub const IN_CREATE: u32 = 0x0000_0100;
pub const IN_DELETE: u32 = 0x0000_0200;
pub const IN_DELETE_SELF: u32 = 0x0000_0400;
pub const IN_MOVE_SELF: u32 = 0x0000_0800;
pub const IN_UNMOUNT: u32 = 0x0000_2000;
pub const IN_Q_OVERFLOW: u32 = 0x0000_4000;
pub const IN_IGNORED: u32 = 0x0000_8000;
pub const IN_ONLYDIR: u32 = 0x0100_0000;
pub const IN_EXCL_UNLINK: u32 = 0x0400_0000;
pub const IN_MASK_ADD: u32 = 0x2000_0000;
pub const IN_ISDIR: u32 = 0x4000_0000;
pub const IN_ONESHOT: u32 = 0x8000_0000;

/// The event bits a watch can ask for.
pub const EVENT_BITS: u32 = 0x0000_0fff;

/// What a user mask may pass to the kernel (pyinotify passes `ignored` and `unmount` too).
pub const USER_BITS: u32 = EVENT_BITS | IN_UNMOUNT | IN_IGNORED;

/// Salt's `DEFAULT_MASK`: create, delete, modify.
pub const DEFAULT_MASK: u32 = IN_CREATE | IN_DELETE | IN_MODIFY;

/// Events that say the content or the identity of a path changed (not mere reads).
pub const CHANGE_BITS: u32 = IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF;

/// pyinotify's `EventsCodes.maskname`: the event's name, `|IN_ISDIR` appended for directories.
pub fn maskname(mask: u32) -> String {
    const NAMES: [(u32, &str); 15] = [
        (IN_ACCESS, "IN_ACCESS"),
        (IN_MODIFY, "IN_MODIFY"),
        (IN_ATTRIB, "IN_ATTRIB"),
        (IN_CLOSE_WRITE, "IN_CLOSE_WRITE"),
        (IN_CLOSE_NOWRITE, "IN_CLOSE_NOWRITE"),
        (IN_OPEN, "IN_OPEN"),
        (IN_MOVED_FROM, "IN_MOVED_FROM"),
        (IN_MOVED_TO, "IN_MOVED_TO"),
        (IN_CREATE, "IN_CREATE"),
        (IN_DELETE, "IN_DELETE"),
        (IN_DELETE_SELF, "IN_DELETE_SELF"),
        (IN_MOVE_SELF, "IN_MOVE_SELF"),
        (IN_UNMOUNT, "IN_UNMOUNT"),
        (IN_Q_OVERFLOW, "IN_Q_OVERFLOW"),
        (IN_IGNORED, "IN_IGNORED"),
    ];
    let base = mask & !IN_ISDIR;
    let name = NAMES
        .iter()
        .filter(|(bit, _)| base & bit != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join("|");
    let name = if name.is_empty() {
        format!("0x{base:x}")
    } else {
        name
    };
    if mask & IN_ISDIR != 0 {
        format!("{name}|IN_ISDIR")
    } else {
        name
    }
}

/// One `exclude` entry, as Salt's beacon applies it to an event's pathname.
#[derive(Debug, Clone)]
pub enum Exclude {
    /// A plain path: `pathname.startswith(exclude)`.
    Prefix(String),
    /// A pattern with `*`: `fnmatch.fnmatch(pathname, exclude)`.
    Glob(Regex),
    /// `{pattern: {regex: True}}`: `re.search(pattern, pathname)`.
    Regex(Regex),
}

impl Exclude {
    pub fn matches(&self, path: &str) -> bool {
        match self {
            Exclude::Prefix(p) => path.starts_with(p.as_str()),
            // A regex that fails at match time (backtrack limit) excludes nothing, as Salt's
            // `except Exception` does.
            Exclude::Glob(re) | Exclude::Regex(re) => re.is_match(path).unwrap_or(false),
        }
    }
}

/// Checksum algorithms `checksum:` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checksum {
    Sha256,
}

/// One entry under `files:`.
#[derive(Debug, Clone)]
pub struct RootSpec {
    /// Normalised absolute path (pyinotify normalises it too; it is the event tag).
    pub path: PathBuf,
    /// Event bits asked for (Salt's mask, or its default).
    pub mask: u32,
    pub oneshot: bool,
    pub onlydir: bool,
    pub excl_unlink: bool,
    pub recurse: bool,
    pub auto_add: bool,
    pub exclude: Vec<Exclude>,
    pub checksum: Option<Checksum>,
    pub diff: bool,
    pub diff_max_bytes: u64,
    /// Name the process behind each event (`attribute`, per path or for the whole beacon).
    pub attribute: bool,
}

impl RootSpec {
    /// What is reported from this root's own watches: the mask, plus `IN_CREATE` with
    /// `auto_add` (pyinotify adds it to the watch, and Salt then reports those events), plus what
    /// the kernel always sends (`IN_IGNORED`, `IN_UNMOUNT`).
    pub fn report_mask(&self) -> u32 {
        let mut m = self.mask | IN_IGNORED | IN_UNMOUNT;
        if self.auto_add {
            m |= IN_CREATE;
        }
        m
    }

    pub fn excluded(&self, path: &str) -> bool {
        self.exclude.iter().any(|e| e.matches(path))
    }

    /// Whether the replacement, appearance or removal of the watched path itself is reported.
    pub fn reports_identity_changes(&self) -> bool {
        self.mask & CHANGE_BITS != 0
    }
}

/// The whole beacon config.
#[derive(Debug, Clone)]
pub struct Spec {
    pub roots: Vec<RootSpec>,
    pub coalesce: bool,
    /// The kernel BTF the attribution probe is relocated against.
    pub btf: PathBuf,
}

const PATH_KEYS: [&str; 8] = [
    "mask",
    "attribute",
    "recurse",
    "auto_add",
    "exclude",
    "checksum",
    "diff",
    "diff_max_bytes",
];

/// Default size limit of `diff`.
pub const DEFAULT_DIFF_MAX: u64 = 64 * 1024;

/// An error pointing at the key of a map entry (where the entry starts), else at the value.
fn at_key(cfg: &BeaconConfig, node: &Node, message: String) -> ConfigError {
    cfg.error_at_key(node, message)
}

pub fn parse(cfg: &BeaconConfig) -> Result<Spec, ConfigError> {
    let files = cfg.require("files", "a map of paths to watch")?;
    let Some(entries) = files.as_map() else {
        return Err(cfg.error(
            files,
            format!(
                "files must be a map of paths to their options, found {}",
                files.kind()
            ),
        ));
    };
    if entries.is_empty() {
        return Err(cfg.error(files, "files must name at least one path"));
    }
    let attribute = cfg.bool_opt("attribute", false)?;
    let mut roots = Vec::new();
    for (path, opts) in entries {
        roots.push(parse_root(cfg, path, opts, attribute)?);
    }
    let coalesce = cfg.bool_opt("coalesce", false)?;
    let btf = PathBuf::from(cfg.str_opt("btf", crate::sources::attribution::DEFAULT_BTF)?);
    Ok(Spec {
        roots,
        coalesce,
        btf,
    })
}

fn parse_root(
    cfg: &BeaconConfig,
    path: &str,
    opts: &Node,
    attribute: bool,
) -> Result<RootSpec, ConfigError> {
    let Some(map) = opts.as_map() else {
        return Err(cfg.error(
            opts,
            format!(
                "files.{path} must be a map with mask, recurse or auto_add, found {}",
                opts.kind()
            ),
        ));
    };
    if !map
        .iter()
        .any(|(k, _)| matches!(k.as_str(), "mask" | "recurse" | "auto_add"))
    {
        return Err(at_key(
            cfg,
            opts,
            format!("files.{path} must contain mask, recurse or auto_add items"),
        ));
    }
    for (k, v) in map {
        if !PATH_KEYS.contains(&k.as_str()) {
            return Err(at_key(
                cfg,
                v,
                format!(
                    "files.{path}: {}",
                    crate::config::beacon::unknown_option_message(k, &PATH_KEYS)
                ),
            ));
        }
    }
    let get = |k: &str| map.iter().find(|(key, _)| key == k).map(|(_, v)| v);
    let boolean = |k: &str| -> Result<bool, ConfigError> {
        match get(k) {
            None => Ok(false),
            Some(n) => match n.value {
                Yaml::Bool(b) => Ok(b),
                _ => Err(cfg.error(
                    n,
                    format!("files.{path}.{k} must be a boolean, found {}", n.kind()),
                )),
            },
        }
    };
    let norm = normalise(path).ok_or_else(|| {
        at_key(
            cfg,
            opts,
            format!("files: '{path}' must be an absolute path"),
        )
    })?;

    let mut mask = DEFAULT_MASK;
    let (mut oneshot, mut onlydir, mut excl_unlink) = (false, false, false);
    if let Some(m) = get("mask") {
        let Some(items) = m.as_seq() else {
            return Err(cfg.error(
                m,
                format!("files.{path}.mask must be a list, found {}", m.kind()),
            ));
        };
        mask = 0;
        for item in items {
            let name = item.as_str().unwrap_or_default();
            let Some((_, bit)) = MASK_NAMES.iter().find(|(n, _)| *n == name) else {
                let valid: Vec<&str> = MASK_NAMES.iter().map(|(n, _)| *n).collect();
                return Err(cfg.error(
                    item,
                    format!(
                        "files.{path}.mask: invalid mask option {} (valid: {})",
                        item.kind(),
                        valid.join(", ")
                    ),
                ));
            };
            match *bit {
                IN_ONESHOT => oneshot = true,
                IN_ONLYDIR => onlydir = true,
                IN_EXCL_UNLINK => excl_unlink = true,
                b => mask |= b,
            }
        }
        if mask == 0 {
            return Err(cfg.error(
                m,
                format!("files.{path}.mask names no event to watch (e.g. modify, create)"),
            ));
        }
    }

    let mut exclude = Vec::new();
    if let Some(ex) = get("exclude") {
        let Some(items) = ex.as_seq() else {
            return Err(cfg.error(
                ex,
                format!(
                    "files.{path}.exclude must be a list of paths, globs or {{regex: True}} maps, found {}",
                    ex.kind()
                ),
            ));
        };
        for item in items {
            exclude.push(parse_exclude(cfg, path, item)?);
        }
    }

    let checksum = match get("checksum") {
        None => None,
        Some(n) => match n.as_str() {
            Some("sha256") => Some(Checksum::Sha256),
            _ => {
                return Err(cfg.error(
                    n,
                    format!("files.{path}.checksum must be sha256, found {}", n.kind()),
                ))
            }
        },
    };
    let diff_max_bytes = match get("diff_max_bytes") {
        None => DEFAULT_DIFF_MAX,
        Some(n) => match n.value {
            Yaml::Int(i) if i > 0 => i as u64,
            _ => {
                return Err(cfg.error(
                    n,
                    format!(
                        "files.{path}.diff_max_bytes must be a positive number of bytes, found {}",
                        n.kind()
                    ),
                ))
            }
        },
    };

    Ok(RootSpec {
        path: norm,
        mask,
        oneshot,
        onlydir,
        excl_unlink,
        recurse: boolean("recurse")?,
        auto_add: boolean("auto_add")?,
        exclude,
        checksum,
        diff: boolean("diff")?,
        diff_max_bytes,
        attribute: match get("attribute") {
            Some(_) => boolean("attribute")?,
            None => attribute,
        },
    })
}

fn parse_exclude(cfg: &BeaconConfig, path: &str, item: &Node) -> Result<Exclude, ConfigError> {
    let bad = || {
        cfg.error(
            item,
            format!(
                "files.{path}.exclude: each entry must be a path, a glob, or `<pattern>: {{regex: True}}`, found {}",
                item.kind()
            ),
        )
    };
    let (pattern, regex) = match &item.value {
        Yaml::Str(s) => (s.clone(), false),
        Yaml::Map(m) if m.len() == 1 => {
            let (pattern, opts) = &m[0];
            let regex = match &opts.value {
                Yaml::Null => false,
                Yaml::Map(_) => match opts.get("regex").map(|n| &n.value) {
                    None => false,
                    Some(Yaml::Bool(b)) => *b,
                    Some(_) => {
                        return Err(cfg.error(
                            opts,
                            format!("files.{path}.exclude: regex must be True or False"),
                        ))
                    }
                },
                _ => return Err(bad()),
            };
            (pattern.clone(), regex)
        }
        _ => return Err(bad()),
    };
    if regex {
        return Regex::new(&pattern).map(Exclude::Regex).map_err(|e| {
            cfg.error(
                item,
                format!("files.{path}.exclude: '{pattern}' is not a valid regular expression: {e}"),
            )
        });
    }
    if pattern.contains('*') {
        return Regex::new(&fnmatch_translate(&pattern))
            .map(Exclude::Glob)
            .map_err(|e| {
                cfg.error(
                    item,
                    format!("files.{path}.exclude: bad glob '{pattern}': {e}"),
                )
            });
    }
    Ok(Exclude::Prefix(pattern))
}

/// Python's `fnmatch.translate`: `*` and `?` match any character (`/` included), `[...]` sets,
/// anchored at both ends.
pub fn fnmatch_translate(pat: &str) -> String {
    let chars: Vec<char> = pat.chars().collect();
    let mut out = String::from("(?s)^");
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        match c {
            '*' => out.push_str(".*"),
            '?' => out.push('.'),
            '[' => {
                let mut j = i;
                if j < chars.len() && chars[j] == '!' {
                    j += 1;
                }
                if j < chars.len() && chars[j] == ']' {
                    j += 1;
                }
                while j < chars.len() && chars[j] != ']' {
                    j += 1;
                }
                if j >= chars.len() {
                    out.push_str("\\[");
                } else {
                    let mut set: String = chars[i..j].iter().collect();
                    set = set.replace('\\', "\\\\");
                    i = j + 1;
                    let set = if let Some(rest) = set.strip_prefix('!') {
                        format!("^{rest}")
                    } else if set.starts_with('^') {
                        format!("\\{set}")
                    } else {
                        set
                    };
                    out.push('[');
                    out.push_str(&set);
                    out.push(']');
                }
            }
            c => {
                let mut buf = [0u8; 4];
                out.push_str(&fancy_regex::escape(c.encode_utf8(&mut buf)));
            }
        }
    }
    out.push('$');
    out
}

/// `os.path.normpath` of an absolute path; `None` for a relative one.
pub fn normalise(path: &str) -> Option<PathBuf> {
    let p = std::path::Path::new(path);
    if !p.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masknames_follow_pyinotify() {
        assert_eq!(maskname(IN_MODIFY), "IN_MODIFY");
        assert_eq!(maskname(IN_CREATE | IN_ISDIR), "IN_CREATE|IN_ISDIR");
        assert_eq!(maskname(IN_IGNORED), "IN_IGNORED");
        assert_eq!(maskname(IN_Q_OVERFLOW), "IN_Q_OVERFLOW");
    }

    #[test]
    fn fnmatch_like_python() {
        let m = |pat: &str, s: &str| {
            Regex::new(&fnmatch_translate(pat))
                .unwrap()
                .is_match(s)
                .unwrap()
        };
        assert!(m("*.swp", "/etc/.passwd.swp"));
        assert!(m("/etc/*", "/etc/a/b"));
        assert!(!m("*.swp", "/etc/passwd.swpx"));
        assert!(m("/etc/file[0-9]", "/etc/file3"));
        assert!(!m("/etc/file[!0-9]", "/etc/file3"));
        assert!(m("/etc/a?c", "/etc/abc"));
        assert!(m("/etc/a+b*", "/etc/a+b"));
    }

    #[test]
    fn normpath() {
        assert_eq!(
            normalise("/etc/selinux/"),
            Some(PathBuf::from("/etc/selinux"))
        );
        assert_eq!(normalise("/etc//a/../b"), Some(PathBuf::from("/etc/b")));
        assert_eq!(normalise("etc"), None);
        assert_eq!(normalise("/"), Some(PathBuf::from("/")));
    }
}
