//! Runs each beacon on its own task: on its `interval` or when its source is ready, honouring
//! `run_once` and `disable_during_state_run`. A beacon that fails sends Salt's error event; one
//! that panics is rebuilt from its config; neither stops the others.

use crate::beacons::{self, Beacon, BeaconError, BuildContext, Data, Drive};
use crate::config::BeaconConfig;
use crate::event::Event;
use crate::state_run::{running_state_job, StateJob};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tracing::Instrument;

/// Salt's `loop_interval`: the default interval of a beacon.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// A configured beacon that validated, ready to run.
pub struct Planned {
    pub config: BeaconConfig,
    pub beacon: Box<dyn Beacon>,
}

/// Build every enabled beacon; configuration errors are returned, the rest still run.
pub fn plan(
    configs: &[BeaconConfig],
    ctx: &BuildContext,
) -> (Vec<Planned>, Vec<crate::config::ConfigError>) {
    let mut planned = Vec::new();
    let mut errors = Vec::new();
    for cfg in configs {
        match beacons::build(cfg, ctx) {
            Ok(beacon) if cfg.enabled => planned.push(Planned {
                config: cfg.clone(),
                beacon,
            }),
            Ok(_) => tracing::debug!(beacon = %cfg.name, "disabled (enabled: False)"),
            Err(e) => errors.push(e),
        }
    }
    (planned, errors)
}

/// Turn a beacon's returned data into events, as Salt's `Beacon.process` does.
pub fn to_events(minion_id: &str, beacon: &str, data: Vec<Data>) -> Vec<Event> {
    data.into_iter()
        .map(|d| Event::from_beacon(minion_id, beacon, d))
        .collect()
}

fn interval_of(cfg: &BeaconConfig) -> Duration {
    cfg.interval
        .map(Duration::from_secs_f64)
        .unwrap_or(DEFAULT_INTERVAL)
}

/// The first tick of an `interval` beacon: the next multiple of `interval` since the
/// process-wide epoch. Beacons with the same (or a multiple) interval then fall due at the
/// same instant and share one wake-up of the timer instead of one each (three 1-second
/// beacons: 1 wake-up/s instead of 3).
fn aligned_start(interval: Duration) -> tokio::time::Instant {
    static EPOCH: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(tokio::time::Instant::now);
    let now = tokio::time::Instant::now();
    let step = interval.as_nanos().max(1);
    let k = now.saturating_duration_since(epoch).as_nanos() / step + 1;
    let offset = u64::try_from(k.saturating_mul(step)).unwrap_or(u64::MAX);
    epoch + Duration::from_nanos(offset)
}

/// CLOCK_MONOTONIC now, in ns.
fn monotonic_ns() -> u128 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `t`, which outlives the call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    u128::from(t.tv_sec.unsigned_abs()) * 1_000_000_000 + u128::from(t.tv_nsec.unsigned_abs())
}

/// [`aligned_start`] on CLOCK_MONOTONIC in ns, for the kernel timer: every beacon of one
/// interval gets the very same expiry, so the kernel fires them in one interrupt.
fn aligned_start_ns(interval: Duration) -> u128 {
    static EPOCH: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let epoch = *EPOCH.get_or_init(monotonic_ns);
    let step = interval.as_nanos().max(1);
    let k = monotonic_ns().saturating_sub(epoch) / step + 1;
    epoch + k * step
}

fn timespec(ns: u128) -> libc::timespec {
    libc::timespec {
        tv_sec: libc::time_t::try_from(ns / 1_000_000_000).unwrap_or(libc::time_t::MAX),
        // < 10^9: fits every c_long.
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

/// A periodic CLOCK_MONOTONIC timerfd on the shared grid. tokio's timer wheel wakes the
/// process twice for a 1-second sleep (once to move the entry down to its millisecond level,
/// once to fire it); measured on an idle agent, that was half of its wake-ups.
fn grid_timerfd(
    period: Duration,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    use std::os::fd::FromRawFd;
    // SAFETY: timerfd_create takes no pointers.
    let raw = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` was just created and is owned by nothing else.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
    let spec = libc::itimerspec {
        it_interval: timespec(period.as_nanos().max(1)),
        it_value: timespec(aligned_start_ns(period)),
    };
    // SAFETY: `spec` is a valid itimerspec for the call; the old value is not requested.
    let rc = unsafe {
        libc::timerfd_settime(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::TFD_TIMER_ABSTIME,
            &spec,
            std::ptr::null_mut(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the AsyncFd owns `fd`: it stays open and the same descriptor until dropped.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)
}

enum Clock {
    /// The kernel timer (one wake-up per tick).
    Kernel(tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>),
    /// tokio's timer, where no timerfd could be made.
    Wheel(tokio::time::Interval),
}

/// An interval whose ticks are aligned by [`aligned_start`] (the first evaluation after a
/// start does not wait for it). A late tick is skipped, not made up: the grid is kept.
struct Ticker {
    clock: Clock,
    period: Duration,
}

impl Ticker {
    fn new(period: Duration) -> Self {
        let clock = match grid_timerfd(period) {
            Ok(fd) => Clock::Kernel(fd),
            Err(e) => {
                tracing::debug!(error = %e, "no timerfd: beacon ticks use tokio's timer");
                Clock::Wheel(Self::wheel(period))
            }
        };
        Ticker { clock, period }
    }

    fn wheel(period: Duration) -> tokio::time::Interval {
        let mut inner = tokio::time::interval_at(aligned_start(period), period);
        inner.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        inner
    }

    async fn tick(&mut self) {
        loop {
            let fd = match &mut self.clock {
                Clock::Wheel(inner) => {
                    inner.tick().await;
                    return;
                }
                Clock::Kernel(fd) => fd,
            };
            let mut guard = match fd.readable().await {
                Ok(g) => g,
                Err(e) => {
                    tracing::warn!(error = %e, "timerfd failed: beacon ticks use tokio's timer");
                    self.clock = Clock::Wheel(Self::wheel(self.period));
                    continue;
                }
            };
            let mut expirations = [0u8; 8];
            // SAFETY: reads at most 8 bytes into `expirations`, which outlives the call.
            let n = unsafe {
                libc::read(
                    std::os::fd::AsRawFd::as_raw_fd(guard.get_inner()),
                    expirations.as_mut_ptr().cast(),
                    expirations.len(),
                )
            };
            // Drained either way: the next tick waits for the kernel (missed ticks, the count
            // read, are skipped).
            guard.clear_ready();
            if n == 8 {
                return;
            }
        }
    }
}

fn state_job(cfg: &BeaconConfig, ctx: &BuildContext) -> Option<StateJob> {
    if cfg.disable_during_state_run {
        running_state_job(&ctx.minion.cachedir)
    } else {
        None
    }
}

/// Evaluate every beacon once (`--once`): start, respect a running state job, evaluate.
pub fn evaluate_once(planned: Vec<Planned>, ctx: &BuildContext) -> Vec<Event> {
    let mut events = Vec::new();
    for Planned { config, mut beacon } in planned {
        if let Some(job) = state_job(&config, ctx) {
            tracing::info!(beacon = %config.name, jid = %job.jid, "skipped: state run in progress");
            continue;
        }
        let result = beacon.start().and_then(|()| beacon.evaluate());
        match result {
            Ok(data) => events.extend(to_events(&ctx.minion.id, &config.name, data)),
            Err(e) => {
                tracing::error!(beacon = %config.name, "{e}");
                events.push(Event::beacon_error(
                    &ctx.minion.id,
                    &config.name,
                    &e.to_string(),
                ));
            }
        }
    }
    events
}

/// The running beacons: one task each, supervised (a panicking beacon is rebuilt) and replaced
/// on reload only where its config changed.
pub struct Scheduler {
    ctx: Arc<BuildContext>,
    tx: mpsc::Sender<Event>,
    tasks: JoinSet<()>,
    /// Task id → the config it runs.
    configs: HashMap<tokio::task::Id, BeaconConfig>,
    /// Beacon name → its task's abort handle.
    running: HashMap<String, AbortHandle>,
    /// `run_once` beacons that have run: a reload with their config unchanged keeps them done.
    finished: HashMap<String, BeaconConfig>,
}

/// What a reload changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReloadSummary {
    pub kept: usize,
    pub restarted: usize,
    pub added: usize,
    pub removed: usize,
}

impl Scheduler {
    pub fn new(ctx: Arc<BuildContext>, tx: mpsc::Sender<Event>) -> Self {
        Scheduler {
            ctx,
            tx,
            tasks: JoinSet::new(),
            configs: HashMap::new(),
            running: HashMap::new(),
            finished: HashMap::new(),
        }
    }

    fn spawn(&mut self, config: BeaconConfig, beacon: Box<dyn Beacon>, delay: Duration) {
        let (cfg, ctx, tx) = (config.clone(), self.ctx.clone(), self.tx.clone());
        let abort = self.tasks.spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            run_beacon(cfg, beacon, ctx, tx).await
        });
        self.running.insert(config.name.clone(), abort.clone());
        self.configs.insert(abort.id(), config);
    }

    fn stop(&mut self, name: &str) {
        if let Some(abort) = self.running.remove(name) {
            // Aborting drops the beacon, which releases its fds and sockets.
            abort.abort();
            self.configs.remove(&abort.id());
        }
    }

    /// Start the planned beacons (the first time), or move to a new plan: beacons whose config
    /// is unchanged keep running with their state; changed ones are rebuilt; gone ones stop.
    pub fn apply(&mut self, ctx: Arc<BuildContext>, planned: Vec<Planned>) -> ReloadSummary {
        let mut summary = ReloadSummary::default();
        let minion_changed = ctx.minion != self.ctx.minion;
        self.ctx = ctx;
        let wanted: Vec<String> = planned.iter().map(|p| p.config.name.clone()).collect();
        let names: Vec<String> = self.running.keys().cloned().collect();
        for name in names {
            if !wanted.contains(&name) {
                self.stop(&name);
                summary.removed += 1;
            }
        }
        let done: Vec<String> = self.finished.keys().cloned().collect();
        for name in done {
            if !wanted.contains(&name) {
                self.finished.remove(&name);
                summary.removed += 1;
            }
        }
        for Planned { config, beacon } in planned {
            if let Some(old) = self.finished.get(&config.name) {
                if !minion_changed && same_config(old, &config) {
                    summary.kept += 1;
                    continue;
                }
                self.finished.remove(&config.name);
                self.spawn(config, beacon, Duration::ZERO);
                summary.restarted += 1;
                continue;
            }
            let current = self
                .running
                .get(&config.name)
                .and_then(|a| self.configs.get(&a.id()));
            match current {
                Some(old) if !minion_changed && same_config(old, &config) => summary.kept += 1,
                Some(_) => {
                    self.stop(&config.name);
                    self.spawn(config, beacon, Duration::ZERO);
                    summary.restarted += 1;
                }
                None => {
                    self.spawn(config, beacon, Duration::ZERO);
                    summary.added += 1;
                }
            }
        }
        summary
    }

    /// Number of running beacons.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    /// Tasks not yet reaped (running, or stopped but not yet joined).
    pub fn has_tasks(&self) -> bool {
        !self.tasks.is_empty()
    }

    /// Wait for the next beacon task to end and handle it: a `run_once` beacon is done; a
    /// panicked one sends Salt's error event and is rebuilt after its interval. Returns false
    /// when no beacon is left running (or the event sink is gone).
    pub async fn supervise(&mut self) -> bool {
        let Some(done) = self.tasks.join_next_with_id().await else {
            return false;
        };
        let (id, err) = match done {
            Ok((id, ())) => {
                if let Some(cfg) = self.configs.remove(&id) {
                    self.running.remove(&cfg.name);
                    if cfg.run_once {
                        self.finished.insert(cfg.name.clone(), cfg);
                    }
                }
                return true;
            }
            Err(e) => (e.id(), e),
        };
        // A cancelled task was stopped on purpose (reload); its entries are already gone.
        let Some(config) = self.configs.remove(&id) else {
            return true;
        };
        self.running.remove(&config.name);
        if !err.is_panic() {
            return true;
        }
        let message = panic_message(err.into_panic());
        tracing::error!(beacon = %config.name, "beacon panicked: {message}; restarting it");
        let event = Event::beacon_error(
            &self.ctx.minion.id,
            &config.name,
            &format!("beacon panicked: {message}"),
        );
        if self.tx.send(event).await.is_err() {
            return false;
        }
        // Rebuild from the config: the old state may be inconsistent.
        match beacons::build(&config, &self.ctx) {
            Ok(beacon) => {
                let delay = interval_of(&config);
                self.spawn(config, beacon, delay);
            }
            Err(e) => tracing::error!("{e}"),
        }
        true
    }
}

/// Unchanged for a reload: same kind and the same config values (positions may move).
fn same_config(a: &BeaconConfig, b: &BeaconConfig) -> bool {
    a.module == b.module && a.raw == b.raw
}

/// Run every beacon until all have finished (only `run_once` beacons finish) or the sink is gone.
pub async fn run(planned: Vec<Planned>, ctx: Arc<BuildContext>, tx: mpsc::Sender<Event>) {
    let mut scheduler = Scheduler::new(ctx.clone(), tx);
    scheduler.apply(ctx, planned);
    while scheduler.supervise().await {}
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}

/// Reports errors as Salt's error event, once per distinct error in a row (a broken source
/// polled every second must not flood the master with the same error).
struct ErrorReporter {
    last: Option<String>,
}

impl ErrorReporter {
    fn report(&mut self, ctx: &BuildContext, cfg: &BeaconConfig, e: &BeaconError) -> Option<Event> {
        let msg = e.to_string();
        if self.last.as_deref() == Some(msg.as_str()) {
            tracing::debug!("{msg}");
            return None;
        }
        tracing::error!("{msg}");
        self.last = Some(msg.clone());
        Some(Event::beacon_error(&ctx.minion.id, &cfg.name, &msg))
    }

    fn clear(&mut self) {
        self.last = None;
    }
}

/// The beacon of a running task, lent to the blocking pool for one call and given back.
/// `None` when the runtime shuts down meanwhile; a panic in the call goes on unwinding in the
/// task, so the supervisor reports and rebuilds the beacon as before.
async fn off_runtime<T: Send + 'static>(
    mut beacon: Box<dyn Beacon>,
    call: impl FnOnce(&mut dyn Beacon) -> T + Send + 'static,
) -> Option<(Box<dyn Beacon>, T)> {
    // The blocking thread logs inside the beacon's span too.
    let span = tracing::Span::current();
    let job = tokio::task::spawn_blocking(move || {
        let out = span.in_scope(|| call(beacon.as_mut()));
        (beacon, out)
    });
    match job.await {
        Ok(done) => Some(done),
        Err(e) => match e.try_into_panic() {
            Ok(payload) => std::panic::resume_unwind(payload),
            Err(_) => None,
        },
    }
}

/// One beacon's task: start it (retrying on the interval), evaluate it at once, then on each
/// tick or source wake-up. Runs inside a span naming the beacon and its kind.
async fn run_beacon(
    cfg: BeaconConfig,
    beacon: Box<dyn Beacon>,
    ctx: Arc<BuildContext>,
    tx: mpsc::Sender<Event>,
) {
    let span = tracing::info_span!("beacon", name = %cfg.name, kind = %cfg.module);
    drive_beacon(cfg, beacon, ctx, tx).instrument(span).await
}

async fn drive_beacon(
    cfg: BeaconConfig,
    mut beacon: Box<dyn Beacon>,
    ctx: Arc<BuildContext>,
    tx: mpsc::Sender<Event>,
) {
    let interval = interval_of(&cfg);
    let mut ticker = Ticker::new(interval);
    let mut errors = ErrorReporter { last: None };
    let send = |events: Vec<Event>| {
        let tx = tx.clone();
        async move {
            for e in events {
                if tx.send(e).await.is_err() {
                    return false;
                }
            }
            true
        }
    };

    // Start, retrying on the interval while the source is not there yet.
    loop {
        let Some((b, started)) = off_runtime(beacon, |b| b.start()).await else {
            return;
        };
        beacon = b;
        match started {
            Ok(()) => break,
            Err(e) => {
                if let Some(ev) = errors.report(&ctx, &cfg, &e) {
                    if !send(vec![ev]).await {
                        return;
                    }
                }
                ticker.tick().await;
            }
        }
    }
    errors.clear();

    let mut in_state_run: Option<StateJob> = None;
    let mut first = true;
    loop {
        // Wait for the next evaluation; the first one after the start is at once.
        if !std::mem::take(&mut first) {
            let drive = if in_state_run.is_some() {
                Drive::Interval
            } else {
                beacon.drive()
            };
            match drive {
                Drive::Interval => ticker.tick().await,
                Drive::Source(ready) => {
                    if let Err(e) = ready.await {
                        if let Some(ev) = errors.report(&ctx, &cfg, &e) {
                            if !send(vec![ev]).await {
                                return;
                            }
                        }
                        // Do not spin on a source that keeps failing.
                        ticker.tick().await;
                        continue;
                    }
                }
            }
        }

        let job = if cfg.disable_during_state_run {
            running_state_job(&ctx.minion.cachedir)
        } else {
            None
        };
        let mut events = Vec::new();
        if let Some(job) = job {
            if in_state_run.is_none() {
                tracing::info!(jid = %job.jid, "paused: state run in progress");
            }
            let Some((b, paused)) = off_runtime(beacon, move |b| {
                let r = b.during_state_run(&job);
                (r, job)
            })
            .await
            else {
                return;
            };
            beacon = b;
            let (result, job) = paused;
            if let Err(e) = result {
                events.extend(errors.report(&ctx, &cfg, &e));
            }
            in_state_run = Some(job);
            if !send(events).await {
                return;
            }
            continue;
        }

        let over = in_state_run.take();
        if let Some(job) = &over {
            tracing::info!(jid = %job.jid, "resumed: state run over");
        }
        let Some((b, (resumed, evaluated))) = off_runtime(beacon, move |b| {
            let resumed = over.map(|job| b.after_state_run(&job));
            (resumed, b.evaluate())
        })
        .await
        else {
            return;
        };
        beacon = b;
        match resumed {
            Some(Ok(data)) => events.extend(to_events(&ctx.minion.id, &cfg.name, data)),
            Some(Err(e)) => events.extend(errors.report(&ctx, &cfg, &e)),
            None => {}
        }
        match evaluated {
            Ok(data) => {
                errors.clear();
                events.extend(to_events(&ctx.minion.id, &cfg.name, data));
            }
            Err(e) => events.extend(errors.report(&ctx, &cfg, &e)),
        }
        if !send(events).await {
            return;
        }
        if cfg.run_once {
            tracing::info!("run_once: disabled after its first run");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::yaml;

    /// A beacon that panics on its second evaluation.
    struct Faulty(u32);

    impl Beacon for Faulty {
        fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
            self.0 += 1;
            if self.0 == 2 {
                panic!("source exploded");
            }
            Ok(vec![Data::new()])
        }
    }

    /// A beacon whose source keeps failing the same way.
    struct Broken;

    impl Beacon for Broken {
        fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
            Err(BeaconError::Message("no such file".into()))
        }
    }

    #[test]
    fn intervals_share_one_grid() {
        // Called at different moments, beacons of one interval fall due together, and a
        // longer interval lands on the shorter one's ticks.
        let a = aligned_start(Duration::from_secs(3600));
        std::thread::sleep(Duration::from_millis(5));
        let b = aligned_start(Duration::from_secs(3600));
        assert_eq!(a, b);
        let one = aligned_start(Duration::from_secs(1));
        let two = aligned_start(Duration::from_secs(2));
        let gap = if two > one { two - one } else { one - two };
        assert_eq!(gap.as_nanos() % 1_000_000_000, 0);
        // The kernel timer's grid: the same expiry for every beacon of one interval.
        let a = aligned_start_ns(Duration::from_secs(3600));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(a, aligned_start_ns(Duration::from_secs(3600)));
        let one = aligned_start_ns(Duration::from_secs(1));
        let two = aligned_start_ns(Duration::from_secs(2));
        assert_eq!(one.abs_diff(two) % 1_000_000_000, 0);
    }

    #[tokio::test]
    async fn the_kernel_ticker_ticks_on_its_period() {
        let mut t = Ticker::new(Duration::from_millis(20));
        assert!(matches!(t.clock, Clock::Kernel(_)));
        t.tick().await; // the next point of the grid, up to one period away
        let start = std::time::Instant::now();
        for _ in 0..3 {
            t.tick().await;
        }
        // Three more ticks of 20 ms on the grid: at least two full periods have passed.
        assert!(start.elapsed() >= Duration::from_millis(40));
    }

    fn config(name: &str) -> BeaconConfig {
        let text = "- interval: 0.01\n";
        let node = yaml::parse("t", text).ok().flatten().expect("yaml");
        BeaconConfig::parse(name, node.pos.clone(), &node).expect("config")
    }

    fn context() -> Arc<BuildContext> {
        let loaded = crate::config::load_dir(std::path::Path::new("/nonexistent"), false);
        let mut minion = loaded.minion;
        minion.id = "unit".into();
        Arc::new(BuildContext::new(minion))
    }

    #[tokio::test]
    async fn a_panicking_beacon_sends_an_error_event_and_the_others_go_on() {
        let ctx = context();
        let (tx, mut rx) = mpsc::channel(64);
        let mut sched = Scheduler::new(ctx.clone(), tx);
        let planned = vec![
            Planned {
                config: config("faulty"),
                beacon: Box::new(Faulty(0)),
            },
            Planned {
                config: config("broken"),
                beacon: Box::new(Broken),
            },
        ];
        sched.apply(ctx, planned);
        let supervisor = tokio::spawn(async move { while sched.supervise().await {} });
        let mut panicked = None;
        let mut broken_errors = 0;
        let mut faulty_ok = 0;
        while panicked.is_none() || faulty_ok < 1 {
            let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("events keep coming")
                .expect("channel open");
            match (ev.tag.as_str(), ev.data.get("error")) {
                ("salt/beacon/unit/faulty/", Some(e)) => panicked = Some(e.clone()),
                ("salt/beacon/unit/faulty/", None) => faulty_ok += 1,
                ("salt/beacon/unit/broken/", Some(_)) => broken_errors += 1,
                other => panic!("unexpected event {other:?}"),
            }
        }
        let message = panicked.and_then(|v| v.as_str().map(str::to_owned));
        assert_eq!(message.as_deref(), Some("beacon panicked: source exploded"));
        // The same error again and again is reported once, not once per evaluation.
        assert_eq!(broken_errors, 1);
        supervisor.abort();
    }

    /// A beacon whose evaluation blocks its thread for a long time.
    struct Stuck;

    impl Beacon for Stuck {
        fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
            std::thread::sleep(Duration::from_secs(3));
            Ok(vec![Data::new()])
        }
    }

    /// A source that never has anything: only the scheduler's first evaluation runs.
    struct Silent(Arc<std::sync::atomic::AtomicU32>);

    impl Beacon for Silent {
        fn drive(&mut self) -> Drive<'_> {
            Drive::Source(Box::pin(std::future::pending()))
        }

        fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(vec![Data::new()])
        }
    }

    #[tokio::test]
    async fn a_blocked_evaluation_holds_up_only_its_own_beacon() {
        // One runtime thread, as the agent's: evaluations run on the blocking pool.
        let ctx = context();
        let (tx, mut rx) = mpsc::channel(64);
        let mut sched = Scheduler::new(ctx.clone(), tx);
        let evaluated = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let planned = vec![
            Planned {
                config: config("stuck"),
                beacon: Box::new(Stuck),
            },
            Planned {
                config: config("silent"),
                beacon: Box::new(Silent(evaluated.clone())),
            },
            Planned {
                config: config("ticking"),
                beacon: Box::new(Faulty(10)),
            },
        ];
        sched.apply(ctx, planned);
        let supervisor = tokio::spawn(async move { while sched.supervise().await {} });
        // `ticking` (every 10 ms) goes on while `stuck` sleeps 3 s in its first evaluation.
        let mut ticks = 0;
        let mut silent = 0;
        while ticks < 20 {
            let ev = tokio::time::timeout(Duration::from_secs(2), rx.recv())
                .await
                .expect("ticking's events keep coming while stuck is blocked")
                .expect("channel open");
            match ev.tag.as_str() {
                "salt/beacon/unit/ticking/" => ticks += 1,
                "salt/beacon/unit/silent/" => silent += 1,
                other => panic!("unexpected event {other}"),
            }
        }
        // The source beacon was evaluated once after its start, without a flag of its own.
        assert_eq!(silent, 1);
        assert_eq!(evaluated.load(std::sync::atomic::Ordering::SeqCst), 1);
        supervisor.abort();
    }

    /// The cost of lending a beacon to the blocking pool, against calling it in place (run with
    /// `--ignored --nocapture`; a measurement, not a check).
    #[tokio::test]
    #[ignore]
    async fn measure_off_runtime_round_trip() {
        let n = 20_000u32;
        let mut beacon: Box<dyn Beacon> = Box::new(Faulty(10));
        let t = std::time::Instant::now();
        for _ in 0..n {
            let _ = beacon.evaluate();
        }
        let inline = t.elapsed() / n;
        let t = std::time::Instant::now();
        for _ in 0..n {
            let (b, _) = off_runtime(beacon, |b| b.evaluate())
                .await
                .expect("runtime up");
            beacon = b;
        }
        let pooled = t.elapsed() / n;
        eprintln!("evaluate in place: {inline:?}; through spawn_blocking: {pooled:?}");
    }
}
