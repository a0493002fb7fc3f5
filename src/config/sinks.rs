//! `beacond_sinks:` — log aggregators beside the master (Splunk, ELK, syslog), each with its
//! own spool. Parsed from the YAML nodes so every error points at file:line:col.
//!
//! ```yaml
//! beacond_sinks:
//!   splunk:                       # the operator's name; the spool is <cachedir>/beacond/sinks/splunk/
//!     type: tcp_json              # tcp_json | splunk_hec | syslog
//!     address: 127.0.0.1:6000
//!     tags: ['salt/beacon/*/state_results/*', 'salt/beacon/*/btmp/*']
//! ```

use super::yaml::{Node, Pos, Yaml};
use super::ConfigError;
use std::path::PathBuf;
use std::time::Duration;

/// The top-level key.
pub const SINKS_KEY: &str = "beacond_sinks";

/// One configured sink.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkConfig {
    pub name: String,
    pub kind: SinkKind,
    /// Salt tag globs (fnmatch: `*` also matches `/`); an event goes to the sink when one matches.
    pub tags: Vec<glob::Pattern>,
    /// The bound of this sink's spool (default: the master's `beacond_spool_max_bytes`).
    pub spool_max_bytes: Option<u64>,
    /// Events per batch / per second on replay (default: the master's replay options).
    pub batch: Option<usize>,
    pub rate: Option<f64>,
    /// Connect / write / response timeout.
    pub timeout: Duration,
    /// Where the key stood, for messages at run time.
    pub pos: Pos,
}

/// TLS towards a receiver: the CA certificates to trust (PEM; default: the webpki roots) and
/// the name to check in the receiver's certificate (default: the address's host).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub server_name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogTransport {
    Udp,
    Tcp,
    Tls,
    Unix,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SinkKind {
    TcpJson {
        address: String,
        tls: Option<TlsConfig>,
    },
    SplunkHec {
        /// `https://host:8088` (the event path is added) or a full URL.
        url: String,
        token: String,
        sourcetype: String,
        index: Option<String>,
        source: String,
        /// Wait for HEC indexer acknowledgment (`/services/collector/ack`).
        ack: bool,
        tls: TlsConfig,
    },
    Syslog {
        transport: SyslogTransport,
        /// `host:port` (udp/tcp/tls) or a socket path (unix, default `/dev/log`).
        address: String,
        facility: u8,
        app_name: String,
        tls: Option<TlsConfig>,
    },
}

impl SinkConfig {
    /// Whether an event with this tag goes to the sink.
    pub fn wants(&self, tag: &str) -> bool {
        let opts = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: false,
            require_literal_leading_dot: false,
        };
        self.tags.iter().any(|p| p.matches_with(tag, opts))
    }

    pub fn type_name(&self) -> &'static str {
        match self.kind {
            SinkKind::TcpJson { .. } => "tcp_json",
            SinkKind::SplunkHec { .. } => "splunk_hec",
            SinkKind::Syslog { .. } => "syslog",
        }
    }
}

const COMMON: &[&str] = &[
    "type",
    "tags",
    "spool_max_bytes",
    "batch",
    "rate",
    "timeout",
];
const TCP_JSON: &[&str] = &["address", "tls", "ca_file", "server_name"];
const HEC: &[&str] = &[
    "url",
    "token",
    "sourcetype",
    "index",
    "source",
    "ack",
    "ca_file",
    "server_name",
];
const SYSLOG: &[&str] = &[
    "transport",
    "address",
    "path",
    "facility",
    "app_name",
    "ca_file",
    "server_name",
];

/// Syslog facility names (RFC 5424 table 1).
const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

fn err(node: &Node, msg: impl Into<String>) -> ConfigError {
    ConfigError::new(Some(node.pos.clone()), msg)
}

struct Fields<'a> {
    sink: &'a str,
    map: &'a [(String, Node)],
}

impl<'a> Fields<'a> {
    fn get(&self, k: &str) -> Option<&'a Node> {
        self.map
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v)
            .filter(|v| !v.is_null())
    }

    fn text(&self, k: &str) -> Result<Option<String>, ConfigError> {
        match self.get(k) {
            None => Ok(None),
            Some(n) => match &n.value {
                Yaml::Str(s) if !s.is_empty() => Ok(Some(s.clone())),
                Yaml::Int(i) => Ok(Some(i.to_string())),
                _ => Err(err(
                    n,
                    format!(
                        "sink '{}': {k} must be a non-empty string, found {}",
                        self.sink,
                        n.kind()
                    ),
                )),
            },
        }
    }

    fn required(&self, k: &str, whole: &Node) -> Result<String, ConfigError> {
        self.text(k)?
            .ok_or_else(|| err(whole, format!("sink '{}': {k} is required", self.sink)))
    }

    fn number(&self, k: &str, min: f64) -> Result<Option<f64>, ConfigError> {
        match self.get(k) {
            None => Ok(None),
            Some(n) => match n.as_f64() {
                Some(f) if f.is_finite() && f >= min => Ok(Some(f)),
                _ => Err(err(
                    n,
                    format!(
                        "sink '{}': {k} must be a number >= {min}, found {}",
                        self.sink,
                        n.kind()
                    ),
                )),
            },
        }
    }

    fn boolean(&self, k: &str) -> Result<Option<bool>, ConfigError> {
        match self.get(k) {
            None => Ok(None),
            Some(n) => match n.value {
                Yaml::Bool(b) => Ok(Some(b)),
                _ => Err(err(
                    n,
                    format!(
                        "sink '{}': {k} must be True or False, found {}",
                        self.sink,
                        n.kind()
                    ),
                )),
            },
        }
    }

    fn tls(&self) -> Result<TlsConfig, ConfigError> {
        Ok(TlsConfig {
            ca_file: self.text("ca_file")?.map(PathBuf::from),
            server_name: self.text("server_name")?,
        })
    }
}

/// `host:port` with a port.
fn check_address(f: &Fields, node: &Node, addr: &str) -> Result<(), ConfigError> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {
            Ok(())
        }
        _ => Err(err(
            node,
            format!(
                "sink '{}': address must be host:port, found '{addr}'",
                f.sink
            ),
        )),
    }
}

/// Read `beacond_sinks:` from the merged top-level map; problems go to `errors` (that sink is
/// left out, the others are kept).
pub fn from_top(top: &[(String, Node)], errors: &mut Vec<ConfigError>) -> Vec<SinkConfig> {
    let Some((_, node)) = top.iter().find(|(k, _)| k == SINKS_KEY) else {
        return Vec::new();
    };
    let entries = match &node.value {
        Yaml::Null => return Vec::new(),
        Yaml::Map(m) => m,
        _ => {
            errors.push(err(
                node,
                format!(
                    "{SINKS_KEY} must be a map of sink name to settings, found {}",
                    node.kind()
                ),
            ));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for (name, n) in entries {
        match parse_one(name, n) {
            Ok(s) => out.push(s),
            Err(e) => errors.push(e),
        }
    }
    out
}

fn parse_one(name: &str, node: &Node) -> Result<SinkConfig, ConfigError> {
    let at = node.key_pos.clone().unwrap_or_else(|| node.pos.clone());
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
        || name.starts_with('.')
    {
        return Err(ConfigError::new(
            Some(at),
            format!("sink name '{name}': only letters, digits, '_', '-' and '.' (it names a spool directory)"),
        ));
    }
    let Yaml::Map(map) = &node.value else {
        return Err(err(
            node,
            format!(
                "sink '{name}': expected a map of settings, found {}",
                node.kind()
            ),
        ));
    };
    let f = Fields { sink: name, map };
    let kind_name = f.required("type", node)?;
    let own: &[&str] = match kind_name.as_str() {
        "tcp_json" => TCP_JSON,
        "splunk_hec" => HEC,
        "syslog" => SYSLOG,
        other => {
            let n = f.get("type").unwrap_or(node);
            return Err(err(
                n,
                format!("sink '{name}': unknown type '{other}' (tcp_json, splunk_hec or syslog)"),
            ));
        }
    };
    for (k, v) in map {
        if !COMMON.contains(&k.as_str()) && !own.contains(&k.as_str()) {
            let p = v.key_pos.clone().unwrap_or_else(|| v.pos.clone());
            let mut known: Vec<&str> = COMMON.iter().chain(own).copied().collect();
            known.sort_unstable();
            return Err(ConfigError::new(
                Some(p),
                format!(
                    "sink '{name}': unknown option '{k}' for type {kind_name} (known: {})",
                    known.join(", ")
                ),
            ));
        }
    }
    let tags = match f.get("tags") {
        None => {
            return Err(err(
                node,
                format!(
                    "sink '{name}': tags is required (Salt tag globs, e.g. ['salt/beacon/*/sh/*'])"
                ),
            ))
        }
        Some(t) => {
            let items: Vec<&Node> = match &t.value {
                Yaml::Seq(s) => s.iter().collect(),
                Yaml::Str(_) => vec![t],
                _ => {
                    return Err(err(
                        t,
                        format!(
                            "sink '{name}': tags must be a list of tag globs, found {}",
                            t.kind()
                        ),
                    ))
                }
            };
            let mut pats = Vec::new();
            for i in items {
                let Some(s) = i.as_str().filter(|s| !s.is_empty()) else {
                    return Err(err(
                        i,
                        format!(
                            "sink '{name}': a tag glob must be a string, found {}",
                            i.kind()
                        ),
                    ));
                };
                let p = glob::Pattern::new(s)
                    .map_err(|e| err(i, format!("sink '{name}': bad tag glob '{s}': {e}")))?;
                pats.push(p);
            }
            if pats.is_empty() {
                return Err(err(
                    t,
                    format!("sink '{name}': tags is empty: nothing would be sent"),
                ));
            }
            pats
        }
    };
    let timeout = Duration::from_secs_f64(f.number("timeout", 0.1)?.unwrap_or(10.0));
    let spool_max_bytes = f.number("spool_max_bytes", 4096.0)?.map(|v| v as u64);
    let batch = f.number("batch", 1.0)?.map(|v| v as usize);
    let rate = f.number("rate", 0.001)?;
    let kind = match kind_name.as_str() {
        "tcp_json" => {
            let address = f.required("address", node)?;
            check_address(&f, f.get("address").unwrap_or(node), &address)?;
            let tls_on = f.boolean("tls")?.unwrap_or(false);
            let tls = f.tls()?;
            if !tls_on && tls != TlsConfig::default() {
                let n = f.get("ca_file").or(f.get("server_name")).unwrap_or(node);
                return Err(err(
                    n,
                    format!("sink '{name}': ca_file/server_name need tls: True"),
                ));
            }
            SinkKind::TcpJson {
                address,
                tls: tls_on.then_some(tls),
            }
        }
        "splunk_hec" => {
            let url = f.required("url", node)?;
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(err(
                    f.get("url").unwrap_or(node),
                    format!(
                        "sink '{name}': url must start with https:// or http://, found '{url}'"
                    ),
                ));
            }
            SinkKind::SplunkHec {
                url,
                token: f.required("token", node)?,
                sourcetype: f
                    .text("sourcetype")?
                    .unwrap_or_else(|| "salt:beacon".into()),
                index: f.text("index")?,
                source: f.text("source")?.unwrap_or_else(|| "beacond".into()),
                ack: f.boolean("ack")?.unwrap_or(false),
                tls: f.tls()?,
            }
        }
        _ => {
            let transport = match f.text("transport")?.as_deref() {
                None | Some("unix") => SyslogTransport::Unix,
                Some("udp") => SyslogTransport::Udp,
                Some("tcp") => SyslogTransport::Tcp,
                Some("tls") => SyslogTransport::Tls,
                Some(other) => {
                    return Err(err(
                        f.get("transport").unwrap_or(node),
                        format!(
                        "sink '{name}': transport must be udp, tcp, tls or unix, found '{other}'"
                    ),
                    ))
                }
            };
            let address = if transport == SyslogTransport::Unix {
                if let Some(a) = f.get("address") {
                    return Err(err(
                        a,
                        format!("sink '{name}': transport unix takes path, not address"),
                    ));
                }
                f.text("path")?.unwrap_or_else(|| "/dev/log".into())
            } else {
                if let Some(p) = f.get("path") {
                    return Err(err(
                        p,
                        format!(
                            "sink '{name}': path is for transport unix; use address: host:port"
                        ),
                    ));
                }
                let a = f.required("address", node)?;
                check_address(&f, f.get("address").unwrap_or(node), &a)?;
                a
            };
            let facility = match f.text("facility")? {
                None => 1,
                Some(s) => match FACILITIES.iter().position(|x| *x == s) {
                    Some(i) => i as u8,
                    None => {
                        return Err(err(
                            f.get("facility").unwrap_or(node),
                            format!(
                                "sink '{name}': unknown facility '{s}' ({})",
                                FACILITIES.join(", ")
                            ),
                        ))
                    }
                },
            };
            let tls = f.tls()?;
            if transport != SyslogTransport::Tls && tls != TlsConfig::default() {
                let n = f.get("ca_file").or(f.get("server_name")).unwrap_or(node);
                return Err(err(
                    n,
                    format!("sink '{name}': ca_file/server_name need transport: tls"),
                ));
            }
            let app_name = f.text("app_name")?.unwrap_or_else(|| "beacond".into());
            if app_name.len() > 48 || !app_name.bytes().all(|b| (33..=126).contains(&b)) {
                return Err(err(
                    f.get("app_name").unwrap_or(node),
                    format!("sink '{name}': app_name must be 1-48 printable ASCII characters without spaces"),
                ));
            }
            SinkKind::Syslog {
                transport,
                address,
                facility,
                app_name,
                tls: (transport == SyslogTransport::Tls).then_some(tls),
            }
        }
    };
    Ok(SinkConfig {
        name: name.to_owned(),
        kind,
        tags,
        spool_max_bytes,
        batch,
        rate,
        timeout,
        pos: at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (Vec<SinkConfig>, Vec<String>) {
        let node = crate::config::yaml::parse("minion", text)
            .ok()
            .flatten()
            .expect("yaml");
        let Yaml::Map(top) = node.value else {
            panic!("map")
        };
        let mut errors = Vec::new();
        let s = from_top(&top, &mut errors);
        (s, errors.iter().map(|e| e.to_string()).collect())
    }

    #[test]
    fn the_issue_example_parses_and_filters_with_salt_globs() {
        let (s, e) = parse(
            "beacond_sinks:\n  splunk:\n    type: tcp_json\n    address: 127.0.0.1:6000\n    tags: ['salt/beacon/*/state_results/*', 'salt/beacon/*/btmp/*']\n",
        );
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(s.len(), 1);
        assert_eq!(
            s[0].kind,
            SinkKind::TcpJson {
                address: "127.0.0.1:6000".into(),
                tls: None
            }
        );
        assert!(s[0].wants("salt/beacon/web1/btmp/"));
        assert!(s[0].wants("salt/beacon/web1/state_results/False"));
        // fnmatch: `*` spans `/` as in Salt's reactor matching.
        assert!(s[0].wants("salt/beacon/a/b/btmp/x"));
        assert!(!s[0].wants("salt/beacon/web1/sh/1234"));
    }

    #[test]
    fn errors_point_at_the_offending_node() {
        let (s, e) = parse(
            "beacond_sinks:\n  a:\n    type: tcp_json\n    address: nohost\n    tags: ['x']\n  b:\n    type: syslog\n    transport: carrier-pigeon\n    tags: ['x']\n  c:\n    type: splunk_hec\n    url: https://h:8088\n    tags: ['x']\n  d:\n    type: tcp_json\n    address: h:1\n    tags: ['x']\n    colour: red\n  e:\n    type: kafka\n    tags: ['x']\n  f:\n    type: syslog\n    tags: ['[x']\n",
        );
        assert!(s.is_empty(), "{s:?}");
        assert_eq!(e.len(), 6, "{e:#?}");
        assert!(
            e[0].starts_with("minion:4:14: sink 'a': address must be host:port"),
            "{}",
            e[0]
        );
        assert!(
            e[1].starts_with("minion:8:16: sink 'b': transport must be"),
            "{}",
            e[1]
        );
        assert!(
            e[2].starts_with("minion:11:5: sink 'c': token is required"),
            "{}",
            e[2]
        );
        assert!(
            e[3].starts_with("minion:18:5: sink 'd': unknown option 'colour'"),
            "{}",
            e[3]
        );
        assert!(
            e[4].starts_with("minion:20:11: sink 'e': unknown type 'kafka'"),
            "{}",
            e[4]
        );
        assert!(
            e[5].starts_with("minion:24:12: sink 'f': bad tag glob '[x'"),
            "{}",
            e[5]
        );
    }

    #[test]
    fn syslog_defaults_to_dev_log_and_takes_facility_names() {
        let (s, e) = parse(
            "beacond_sinks:\n  siem:\n    type: syslog\n    facility: auth\n    tags: 'salt/beacon/*'\n",
        );
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(
            s[0].kind,
            SinkKind::Syslog {
                transport: SyslogTransport::Unix,
                address: "/dev/log".into(),
                facility: 4,
                app_name: "beacond".into(),
                tls: None
            }
        );
    }
}
