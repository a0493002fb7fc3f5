//! `service`: service status events (Salt's `service` beacon), from systemd's D-Bus signals.
//!
//! Options: `services` (a map of service name → options: `onchangeonly` (default False: an
//! event every interval), `delay` (seconds, with onchangeonly: fire that long after a change),
//! `emitatstartup` (default True), `uncleanshutdown` (a pid file; when the service is not
//! running the event says whether it exists), `is_running_state` (Salt 3008: only fire while
//! the running state equals this; `onlyifrunning: True` is accepted as its alias)). beacond's
//! own: `backend` (`auto` (default), `dbus`, `systemctl`, `proc`), `dbus_address` (default
//! `$DBUS_SYSTEM_BUS_ADDRESS`, else `unix:path=/run/dbus/system_bus_socket`), `systemctl`
//! (the command, default `systemctl`), `systemd_run_dir` (default `/run/systemd/system`: its
//! presence says systemd is the init), `procfs` (default `/proc`).
//!
//! Sources: with `dbus` the beacon subscribes to systemd's manager and to each unit's
//! `PropertiesChanged` signal and holds the units' `ActiveState`; it wakes only when systemd
//! says something changed (or for a `delay`, or on the interval for services without
//! `onchangeonly`, whose every-interval events are Salt's contract). `auto` falls back when no
//! systemd answers on the bus: to polling `systemctl show -p ActiveState` on the interval when
//! systemd is the init (its private socket still works without a bus), else to `/proc` (a
//! process whose name or command line matches the service name as a regex: Salt's generic
//! `service.status` on hosts without an init system it knows). Running means `ActiveState` is
//! `active`, `reloading` or `refreshing`, as `systemctl is-active` (Salt's `service.status`).
//!
//! Events: tag `.../service/<name>`, data `{<name>: {running, [uncleanshutdown]}, service_name}`.

use super::{Beacon, BeaconError, BuildContext, Data, Drive};
use crate::config::yaml::{Node, Yaml};
use crate::config::{BeaconConfig, ConfigError};
use crate::sources::dbus::{self, Conn, Message, NameOwner, Val};
use crate::sources::procfs;
use fancy_regex::Regex;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

const SYSTEMD: &str = "org.freedesktop.systemd1";
const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
const UNIT: &str = "org.freedesktop.systemd1.Unit";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
const BUS: &str = "org.freedesktop.DBus";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Backend {
    Auto,
    Dbus,
    Systemctl,
    Proc,
}

struct Last {
    running: bool,
    since: Option<Instant>,
}

struct Svc {
    name: String,
    /// The systemd unit: the name, with `.service` added when it has no unit suffix.
    unit: String,
    onchangeonly: bool,
    delay: f64,
    emitatstartup: bool,
    uncleanshutdown: Option<PathBuf>,
    is_running_state: Option<bool>,
    proc_regex: Regex,
    /// The unit's object path and `ActiveState` (D-Bus backend).
    path: Option<String>,
    active: Option<String>,
    last: Option<Last>,
}

struct Bus {
    /// Registered first so it is dropped before `conn` (both refer to one socket).
    afd: Option<AsyncFd<UnixStream>>,
    conn: Conn,
    /// Messages read during blocking calls, handled by the next evaluation.
    pending: Vec<Message>,
    /// Outstanding `Get ActiveState` calls: serial → service index.
    gets: HashMap<u32, usize>,
    /// systemd's unique name: only its messages count (anyone can send us a signal).
    systemd: NameOwner,
}

pub struct Service {
    services: Vec<Svc>,
    backend: Backend,
    /// What `start` chose.
    live: Option<Backend>,
    bus: Option<Bus>,
    dbus_address: String,
    systemctl: String,
    systemd_run_dir: PathBuf,
    procfs: PathBuf,
    tick: Duration,
    next_tick: Option<Instant>,
}

/// The options this beacon takes (checked by `beacons::build`).
pub const OPTIONS: &[&str] = &[
    "services",
    "backend",
    "dbus_address",
    "systemctl",
    "systemd_run_dir",
    "procfs",
];

pub fn build(cfg: &BeaconConfig, _ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let node = cfg.require("services", "a map of service name to options")?;
    let Some(entries) = node.as_map() else {
        return Err(cfg.error(
            node,
            format!(
                "services must be a map of service name to options (e.g. sshd: {{onchangeonly: True}}), found {}",
                node.kind()
            ),
        ));
    };
    let mut services = Vec::new();
    for (name, conf) in entries {
        services.push(service(cfg, name, conf)?);
    }
    let backend = match cfg.str_opt("backend", "auto")?.as_str() {
        "auto" => Backend::Auto,
        "dbus" => Backend::Dbus,
        "systemctl" => Backend::Systemctl,
        "proc" => Backend::Proc,
        other => {
            let at = cfg.opt("backend").unwrap_or(node);
            return Err(cfg.error(
                at,
                format!("backend must be auto, dbus, systemctl or proc, found '{other}'"),
            ));
        }
    };
    let default_bus = std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
        .unwrap_or_else(|_| "unix:path=/run/dbus/system_bus_socket".into());
    Ok(Box::new(Service {
        services,
        backend,
        live: None,
        bus: None,
        dbus_address: cfg.str_opt("dbus_address", &default_bus)?,
        systemctl: cfg.str_opt("systemctl", "systemctl")?,
        systemd_run_dir: PathBuf::from(cfg.str_opt("systemd_run_dir", "/run/systemd/system")?),
        procfs: PathBuf::from(cfg.str_opt("procfs", "/proc")?),
        tick: Duration::from_secs_f64(cfg.interval.unwrap_or(1.0)),
        next_tick: None,
    }))
}

fn service(cfg: &BeaconConfig, name: &str, conf: &Node) -> Result<Svc, ConfigError> {
    let items: &[(String, Node)] = match &conf.value {
        Yaml::Null => &[],
        Yaml::Map(m) => m,
        _ => {
            return Err(cfg.error(
                conf,
                format!(
                    "services.{name} must be a map of options (or {{}}), found {}",
                    conf.kind()
                ),
            ))
        }
    };
    let mut s = Svc {
        name: name.to_owned(),
        unit: if [
            ".service",
            ".socket",
            ".target",
            ".timer",
            ".mount",
            ".automount",
            ".path",
            ".scope",
            ".slice",
            ".swap",
            ".device",
        ]
        .iter()
        .any(|sfx| name.ends_with(sfx))
        {
            name.to_owned()
        } else {
            format!("{name}.service")
        },
        onchangeonly: false,
        delay: 0.0,
        emitatstartup: true,
        uncleanshutdown: None,
        is_running_state: None,
        proc_regex: Regex::new(name).unwrap_or_else(|_| {
            Regex::new(&fancy_regex::escape(name)).unwrap_or_else(|_| unreachable_regex())
        }),
        path: None,
        active: None,
        last: None,
    };
    for (key, v) in items {
        let boolean = || match v.value {
            Yaml::Bool(b) => Ok(b),
            _ => Err(cfg.error(
                v,
                format!(
                    "services.{name}.{key} must be True or False, found {}",
                    v.kind()
                ),
            )),
        };
        match key.as_str() {
            // Salt: `onchangeonly is True` — only a real boolean counts.
            "onchangeonly" => s.onchangeonly = boolean()?,
            "emitatstartup" => s.emitatstartup = boolean()?,
            "is_running_state" => s.is_running_state = Some(boolean()?),
            "onlyifrunning" => {
                if boolean()? {
                    s.is_running_state = Some(true)
                }
            }
            "delay" => {
                s.delay = v.as_f64().filter(|d| *d >= 0.0).ok_or_else(|| {
                    cfg.error(
                        v,
                        format!(
                            "services.{name}.delay must be a number of seconds, found {}",
                            v.kind()
                        ),
                    )
                })?
            }
            "uncleanshutdown" => match v.as_str() {
                Some(p) if !p.is_empty() => s.uncleanshutdown = Some(PathBuf::from(p)),
                _ => {
                    return Err(cfg.error(
                        v,
                        format!(
                            "services.{name}.uncleanshutdown must be the path of the service's pid file, found {}",
                            v.kind()
                        ),
                    ))
                }
            },
            // Salt sets it and never reads it.
            "oncleanshutdown" => {}
            other => {
                return Err(cfg.error(
                    v,
                    format!(
                        "services.{name}.{other} is not a service option; use onchangeonly, delay, emitatstartup, uncleanshutdown or is_running_state"
                    ),
                ))
            }
        }
    }
    Ok(s)
}

fn unreachable_regex() -> Regex {
    // `[^\s\S]` never matches; it always compiles.
    Regex::new(r"[^\s\S]").expect("constant regex")
}

fn io_err(what: &str, e: std::io::Error) -> BeaconError {
    BeaconError::Message(format!("{what}: {e}"))
}

fn is_running(active: Option<&str>) -> bool {
    matches!(active, Some("active" | "reloading" | "refreshing"))
}

fn property_rule(path: &str) -> String {
    format!(
        "type='signal',sender='{SYSTEMD}',path='{path}',interface='{PROPERTIES}',member='PropertiesChanged'"
    )
}

impl Service {
    /// Connect to the bus, subscribe to systemd, load the units and read their state.
    fn connect(&mut self) -> Result<(), BeaconError> {
        self.bus = None;
        let what = format!("D-Bus {}", self.dbus_address);
        let mut conn = Conn::connect(&self.dbus_address, Duration::from_secs(5))
            .map_err(|e| io_err(&what, e))?;
        let mut pending = Vec::new();
        let rules = [
            format!("type='signal',sender='{BUS}',interface='{BUS}',member='NameOwnerChanged',arg0='{SYSTEMD}'"),
            format!("type='signal',sender='{SYSTEMD}',interface='{MANAGER}',member='UnitNew'"),
            format!("type='signal',sender='{SYSTEMD}',interface='{MANAGER}',member='Reloading'"),
        ];
        for rule in &rules {
            conn.call_wait(
                BUS,
                "/org/freedesktop/DBus",
                BUS,
                "AddMatch",
                &[rule],
                &mut pending,
            )
            .map_err(|e| io_err(&what, e))?;
        }
        // After the NameOwnerChanged rule: no change of owner can fall in between.
        let systemd = NameOwner::query(&mut conn, SYSTEMD, &mut pending)
            .map_err(|e| io_err(&format!("{what}: who owns {SYSTEMD}"), e))?;
        conn.call_wait(
            SYSTEMD,
            MANAGER_PATH,
            MANAGER,
            "Subscribe",
            &[],
            &mut pending,
        )
        .map_err(|e| io_err(&what, e))?;
        for s in &mut self.services {
            let reply = conn
                .call_wait(
                    SYSTEMD,
                    MANAGER_PATH,
                    MANAGER,
                    "LoadUnit",
                    &[&s.unit],
                    &mut pending,
                )
                .map_err(|e| io_err(&what, e))?;
            let path = reply
                .body
                .first()
                .and_then(Val::as_str)
                .ok_or_else(|| {
                    BeaconError::Message(format!("{what}: LoadUnit({}) returned no path", s.unit))
                })?
                .to_owned();
            conn.call_wait(
                BUS,
                "/org/freedesktop/DBus",
                BUS,
                "AddMatch",
                &[&property_rule(&path)],
                &mut pending,
            )
            .map_err(|e| io_err(&what, e))?;
            let state = conn
                .call_wait(
                    SYSTEMD,
                    &path,
                    PROPERTIES,
                    "Get",
                    &[UNIT, "ActiveState"],
                    &mut pending,
                )
                .map_err(|e| io_err(&what, e))?;
            s.active = state.body.first().and_then(Val::as_str).map(str::to_owned);
            s.path = Some(path);
        }
        conn.stream
            .set_nonblocking(true)
            .map_err(|e| io_err(&what, e))?;
        tracing::info!(bus = %self.dbus_address, services = self.services.len(), "service: watching systemd over D-Bus");
        self.bus = Some(Bus {
            afd: None,
            conn,
            pending,
            gets: HashMap::new(),
            systemd,
        });
        Ok(())
    }

    /// Handle the messages received from the bus.
    fn handle(&mut self, m: Message) -> Result<(), BeaconError> {
        let Some(bus) = self.bus.as_mut() else {
            return Ok(());
        };
        let member = m.member.as_deref().unwrap_or_default();
        if let Some(new_owner) = bus.systemd.observe(&m) {
            // Replies still due from a previous owner are dropped by the sender check.
            bus.gets.clear();
            if new_owner.is_some() {
                // systemd re-executed or came back: subscribe again and re-read.
                bus.conn
                    .call(SYSTEMD, MANAGER_PATH, MANAGER, "Subscribe", &[])
                    .map_err(|e| io_err("D-Bus", e))?;
                for i in 0..self.services.len() {
                    self.get_state(i)?;
                }
            }
            return Ok(());
        }
        if !bus.systemd.sent(&m) {
            // Not from systemd (a forged signal, a stray reply): ignored.
            if m.kind == dbus::SIGNAL {
                tracing::debug!(sender = ?m.sender, member, "service: ignoring a D-Bus signal not sent by systemd");
            }
            return Ok(());
        }
        match m.kind {
            dbus::METHOD_RETURN | dbus::ERROR => {
                let Some(i) = m.reply_serial.and_then(|r| bus.gets.remove(&r)) else {
                    return Ok(());
                };
                if m.kind == dbus::ERROR {
                    tracing::warn!(unit = %self.services[i].unit, error = ?m.error_name, "reading ActiveState failed");
                } else if let Some(v) = m.body.first().and_then(Val::as_str) {
                    self.services[i].active = Some(v.to_owned());
                }
            }
            dbus::SIGNAL if member == "PropertiesChanged" => {
                let Some(i) = self
                    .services
                    .iter()
                    .position(|s| s.path.is_some() && s.path == m.path)
                else {
                    return Ok(());
                };
                if m.body.first().and_then(Val::as_str) != Some(UNIT) {
                    return Ok(());
                }
                if let Some(Val::Array(changed)) = m.body.get(1) {
                    for e in changed {
                        if let Val::Entry(k, v) = e {
                            if k.as_str() == Some("ActiveState") {
                                self.services[i].active = v.as_str().map(str::to_owned);
                            }
                        }
                    }
                }
                if let Some(Val::Array(invalidated)) = m.body.get(2) {
                    if invalidated
                        .iter()
                        .any(|v| v.as_str() == Some("ActiveState"))
                    {
                        self.get_state(i)?;
                    }
                }
            }
            dbus::SIGNAL if member == "UnitNew" => {
                let (Some(id), Some(path)) = (
                    m.body.first().and_then(Val::as_str),
                    m.body.get(1).and_then(Val::as_str),
                ) else {
                    return Ok(());
                };
                let hits: Vec<usize> = (0..self.services.len())
                    .filter(|&i| {
                        self.services[i].unit == id
                            && self.services[i].path.as_deref() != Some(path)
                    })
                    .collect();
                for i in hits {
                    self.services[i].path = Some(path.to_owned());
                    if let Some(bus) = self.bus.as_mut() {
                        bus.conn
                            .call(
                                BUS,
                                "/org/freedesktop/DBus",
                                BUS,
                                "AddMatch",
                                &[&property_rule(path)],
                            )
                            .map_err(|e| io_err("D-Bus", e))?;
                    }
                    self.get_state(i)?;
                }
            }
            dbus::SIGNAL if member == "Reloading" && m.body.first() == Some(&Val::Bool(false)) => {
                for i in 0..self.services.len() {
                    self.get_state(i)?;
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn get_state(&mut self, i: usize) -> Result<(), BeaconError> {
        let (Some(bus), Some(path)) = (self.bus.as_mut(), self.services[i].path.clone()) else {
            return Ok(());
        };
        let serial = bus
            .conn
            .call(SYSTEMD, &path, PROPERTIES, "Get", &[UNIT, "ActiveState"])
            .map_err(|e| io_err("D-Bus", e))?;
        bus.gets.insert(serial, i);
        Ok(())
    }

    /// Read and handle everything the bus has sent.
    fn drain_bus(&mut self) -> Result<(), BeaconError> {
        loop {
            let Some(bus) = self.bus.as_mut() else {
                return Ok(());
            };
            let msg = if !bus.pending.is_empty() {
                Some(bus.pending.remove(0))
            } else {
                match bus.conn.next_buffered() {
                    Ok(Some(m)) => Some(m),
                    Ok(None) => match bus.conn.fill() {
                        Ok(_) => continue,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
                        Err(e) => {
                            self.bus = None;
                            return Err(io_err(&format!("D-Bus {}", self.dbus_address), e));
                        }
                    },
                    Err(e) => {
                        self.bus = None;
                        return Err(io_err(&format!("D-Bus {}", self.dbus_address), e));
                    }
                }
            };
            match msg {
                Some(m) => self.handle(m)?,
                None => return Ok(()),
            }
        }
    }

    fn poll_systemctl(&mut self) -> Result<(), BeaconError> {
        let out = std::process::Command::new(&self.systemctl)
            .args(["show", "--property=ActiveState", "--"])
            .args(self.services.iter().map(|s| s.unit.as_str()))
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| io_err(&self.systemctl, e))?;
        let text = String::from_utf8_lossy(&out.stdout);
        let states: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("ActiveState="))
            .collect();
        if states.len() != self.services.len() {
            return Err(BeaconError::Message(format!(
                "{} show: expected {} ActiveState lines, got {} ({})",
                self.systemctl,
                self.services.len(),
                states.len(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        for (s, st) in self.services.iter_mut().zip(states) {
            s.active = Some(st.to_owned());
        }
        Ok(())
    }

    fn poll_proc(&mut self) -> Result<(), BeaconError> {
        let me = std::process::id();
        let mut lines = Vec::new();
        for pid in procfs::pids(&self.procfs).map_err(|e| BeaconError::io(&self.procfs, e))? {
            if pid == me {
                continue;
            }
            let Some(name) = procfs::process_name(&self.procfs, pid) else {
                continue;
            };
            let cmd = std::fs::read(self.procfs.join(pid.to_string()).join("cmdline"))
                .unwrap_or_default();
            let cmd: Vec<String> = cmd
                .split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            lines.push(format!("{name} {}", cmd.join(" ")));
        }
        for s in &mut self.services {
            let up = lines
                .iter()
                .any(|l| s.proc_regex.is_match(l).unwrap_or(false));
            s.active = Some(if up { "active" } else { "inactive" }.to_owned());
        }
        Ok(())
    }

    /// Salt's beacon logic over the current states. `tick`: an interval has passed (services
    /// without onchangeonly fire only then).
    fn events(&mut self, tick: bool) -> Vec<Data> {
        let now = Instant::now();
        let mut out = Vec::new();
        for s in &mut self.services {
            let running = is_running(s.active.as_deref());
            let mut status = Map::new();
            status.insert("running".into(), Value::Bool(running));
            if let (Some(pidfile), false) = (&s.uncleanshutdown, running) {
                status.insert("uncleanshutdown".into(), Value::Bool(pidfile.exists()));
            }
            let mut data = Data::new();
            data.insert(s.name.clone(), Value::Object(status));
            data.insert("service_name".into(), Value::from(s.name.clone()));
            data.insert("tag".into(), Value::from(s.name.clone()));
            if s.is_running_state.is_some_and(|want| want != running) {
                continue;
            }
            if !s.onchangeonly {
                if tick {
                    out.push(data);
                }
                continue;
            }
            let mut fire = false;
            if s.last.is_none() {
                s.last = Some(Last {
                    running,
                    since: None,
                });
                if !s.emitatstartup {
                    continue;
                }
                if s.delay > 0.0 {
                    if let Some(l) = s.last.as_mut() {
                        l.since = Some(now);
                    }
                } else {
                    fire = true;
                }
            }
            if let Some(last) = s.last.as_mut() {
                if last.running != running {
                    *last = Last {
                        running,
                        since: (s.delay > 0.0).then_some(now),
                    };
                    fire |= s.delay <= 0.0;
                }
                if let Some(since) = last.since {
                    // Salt: int(round(elapsed)) > delay.
                    if now >= since + delay_wait(s.delay) {
                        last.since = None;
                        fire = true;
                    }
                }
            }
            if fire {
                out.push(data);
            }
        }
        out
    }

    /// When the D-Bus backend must wake without a signal: a delay ending, or the next interval
    /// for services that fire every interval.
    fn deadline(&self) -> Option<Instant> {
        let delays = self.services.iter().filter_map(|s| {
            let since = s.last.as_ref()?.since?;
            Some(since + delay_wait(s.delay))
        });
        let tick = self
            .services
            .iter()
            .any(|s| !s.onchangeonly)
            .then_some(self.next_tick)
            .flatten();
        delays.chain(tick).min()
    }
}

/// The wait after which `int(round(elapsed)) > delay` holds.
fn delay_wait(delay: f64) -> Duration {
    Duration::from_secs_f64(delay.floor() + 0.5)
}

impl Beacon for Service {
    fn start(&mut self) -> Result<(), BeaconError> {
        let chosen = match self.backend {
            Backend::Auto => match self.connect() {
                Ok(()) => Backend::Dbus,
                Err(e) => {
                    let fallback = if self.systemd_run_dir.exists() {
                        Backend::Systemctl
                    } else {
                        Backend::Proc
                    };
                    tracing::info!("service: no systemd on the bus ({e}); polling with {fallback:?} on the interval");
                    fallback
                }
            },
            Backend::Dbus => {
                self.connect()?;
                Backend::Dbus
            }
            other => other,
        };
        self.live = Some(chosen);
        Ok(())
    }

    fn drive(&mut self) -> Drive<'_> {
        // systemctl and /proc are polled; only D-Bus signals wake the beacon.
        if !matches!(self.live, Some(Backend::Dbus)) {
            return Drive::Interval;
        }
        Drive::Source(Box::pin(async move {
            if self.bus.is_none() {
                // The connection was lost: `evaluate` connects again (it may block; the
                // scheduler runs it off the runtime) after an interval.
                tokio::time::sleep(self.tick.max(Duration::from_secs(1))).await;
                return Ok(());
            }
            let deadline = self.deadline();
            let Some(bus) = self.bus.as_mut() else {
                return Ok(());
            };
            if bus.afd.is_none() {
                let clone = bus
                    .conn
                    .stream
                    .try_clone()
                    .map_err(|e| io_err("D-Bus", e))?;
                // SAFETY: `clone` is an owned duplicate descriptor held by the AsyncFd itself, so
                // it stays open and unchanged for the AsyncFd's whole life.
                let afd = unsafe {
                    AsyncFd::register_with_interest(clone, tokio::io::Interest::READABLE)
                }
                .map_err(|e| BeaconError::Message(format!("D-Bus: {e}")))?;
                bus.afd = Some(afd);
            }
            if !bus.pending.is_empty() {
                return Ok(());
            }
            let Bus { afd, conn, .. } = bus;
            let Some(afd) = afd.as_ref() else {
                return Ok(());
            };
            loop {
                tokio::select! {
                    guard = afd.readable() => {
                        let mut guard = guard.map_err(|e| io_err("D-Bus", e))?;
                        match guard.try_io(|_| conn.fill()) {
                            Ok(Ok(_)) => return Ok(()),
                            // EOF and errors: evaluate reports them and drops the connection.
                            Ok(Err(_)) => return Ok(()),
                            Err(_would_block) => continue,
                        }
                    }
                    _ = async { if let Some(d) = deadline { tokio::time::sleep_until(d).await } }, if deadline.is_some() => return Ok(()),
                }
            }
        }))
    }

    fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
        let now = Instant::now();
        let tick = match self.live {
            Some(Backend::Dbus) => {
                if self.bus.is_none() {
                    self.connect()?;
                }
                self.drain_bus()?;
                let due = self.next_tick.is_none_or(|t| now >= t);
                if due {
                    self.next_tick = Some(now + self.tick);
                }
                due
            }
            Some(Backend::Systemctl) => {
                self.poll_systemctl()?;
                true
            }
            _ => {
                self.poll_proc()?;
                true
            }
        };
        Ok(self.events(tick))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(conf: impl FnOnce(&mut Svc)) -> Service {
        let mut s = Svc {
            name: "nginx".into(),
            unit: "nginx.service".into(),
            onchangeonly: true,
            delay: 0.0,
            emitatstartup: true,
            uncleanshutdown: None,
            is_running_state: None,
            proc_regex: unreachable_regex(),
            path: None,
            active: Some("active".into()),
            last: None,
        };
        conf(&mut s);
        Service {
            services: vec![s],
            backend: Backend::Proc,
            live: Some(Backend::Proc),
            bus: None,
            dbus_address: String::new(),
            systemctl: String::new(),
            systemd_run_dir: PathBuf::new(),
            procfs: PathBuf::new(),
            tick: Duration::from_secs(1),
            next_tick: None,
        }
    }

    fn set(s: &mut Service, state: &str) {
        s.services[0].active = Some(state.into());
    }

    #[test]
    fn onchangeonly_fires_at_startup_then_on_changes_only() {
        let mut s = service(|_| {});
        assert_eq!(s.events(true).len(), 1);
        assert_eq!(s.events(true).len(), 0);
        set(&mut s, "reloading");
        assert_eq!(s.events(true).len(), 0, "reloading is still running");
        set(&mut s, "failed");
        let ev = s.events(true);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0]["nginx"]["running"], false);
        assert_eq!(s.events(true).len(), 0);
    }

    #[test]
    fn emitatstartup_false_stays_quiet_until_a_change() {
        let mut s = service(|c| c.emitatstartup = false);
        assert!(s.events(true).is_empty());
        set(&mut s, "inactive");
        assert_eq!(s.events(true).len(), 1);
    }

    #[test]
    fn delay_holds_the_event() {
        let mut s = service(|c| c.delay = 30.0);
        assert!(
            s.events(true).is_empty(),
            "startup event waits for the delay"
        );
        assert!(s.deadline().is_some());
    }

    #[test]
    fn is_running_state_skips_without_recording_as_salt_3008() {
        let mut s = service(|c| c.is_running_state = Some(true));
        assert_eq!(s.events(true).len(), 1);
        set(&mut s, "failed");
        // Skipped, and Salt does not record the stop...
        assert!(s.events(true).is_empty());
        set(&mut s, "active");
        // ...so coming back is no change either.
        assert!(s.events(true).is_empty());
    }

    #[test]
    fn without_onchangeonly_fires_on_ticks_only() {
        let mut s = service(|c| c.onchangeonly = false);
        assert_eq!(s.events(true).len(), 1);
        assert_eq!(s.events(false).len(), 0);
        assert_eq!(s.events(true).len(), 1);
    }
}
