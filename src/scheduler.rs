//! Runs each beacon on its own task: on its `interval` or when its source is ready, honouring
//! `run_once` and `disable_during_state_run`. A beacon that fails sends Salt's error event; one
//! that panics is rebuilt from its config; neither stops the others.

use crate::beacons::{self, Beacon, BeaconError, BuildContext, Data};
use crate::config::BeaconConfig;
use crate::event::Event;
use crate::state_run::{running_state_job, StateJob};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

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

/// Run every beacon until all have finished (only `run_once` beacons finish) or the sender is
/// closed. Panicking beacons are rebuilt after their interval.
pub async fn run(planned: Vec<Planned>, ctx: Arc<BuildContext>, tx: mpsc::Sender<Event>) {
    let mut tasks = JoinSet::new();
    let mut configs = std::collections::HashMap::new();
    for Planned { config, beacon } in planned {
        let id = tasks
            .spawn(run_beacon(config.clone(), beacon, ctx.clone(), tx.clone()))
            .id();
        configs.insert(id, config);
    }
    while let Some(done) = tasks.join_next_with_id().await {
        let (id, err) = match done {
            Ok((id, ())) => {
                configs.remove(&id);
                continue;
            }
            Err(e) => (e.id(), e),
        };
        let Some(config) = configs.remove(&id) else {
            continue;
        };
        if !err.is_panic() {
            continue;
        }
        let message = panic_message(err.into_panic());
        tracing::error!(beacon = %config.name, "beacon panicked: {message}; restarting it");
        let event = Event::beacon_error(
            &ctx.minion.id,
            &config.name,
            &format!("beacon panicked: {message}"),
        );
        if tx.send(event).await.is_err() {
            return;
        }
        // Rebuild from the config: the old state may be inconsistent.
        match beacons::build(&config, &ctx) {
            Ok(beacon) => {
                let delay = interval_of(&config);
                let (cfg, ctx, tx) = (config.clone(), ctx.clone(), tx.clone());
                let id = tasks
                    .spawn(async move {
                        tokio::time::sleep(delay).await;
                        run_beacon(cfg, beacon, ctx, tx).await
                    })
                    .id();
                configs.insert(id, config);
            }
            Err(e) => tracing::error!("{e}"),
        }
    }
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
            tracing::debug!(beacon = %cfg.name, "{msg}");
            return None;
        }
        tracing::error!(beacon = %cfg.name, "{msg}");
        self.last = Some(msg.clone());
        Some(Event::beacon_error(&ctx.minion.id, &cfg.name, &msg))
    }

    fn clear(&mut self) {
        self.last = None;
    }
}

async fn run_beacon(
    cfg: BeaconConfig,
    mut beacon: Box<dyn Beacon>,
    ctx: Arc<BuildContext>,
    tx: mpsc::Sender<Event>,
) {
    let interval = interval_of(&cfg);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
        match beacon.start() {
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
    loop {
        // Wait for the next evaluation.
        if beacon.polled() || in_state_run.is_some() {
            ticker.tick().await;
        } else if let Err(e) = beacon.ready().await {
            if let Some(ev) = errors.report(&ctx, &cfg, &e) {
                if !send(vec![ev]).await {
                    return;
                }
            }
            // Do not spin on a source that keeps failing.
            ticker.tick().await;
            continue;
        }

        let mut events = Vec::new();
        if cfg.disable_during_state_run {
            match running_state_job(&ctx.minion.cachedir) {
                Some(job) => {
                    if in_state_run.is_none() {
                        tracing::info!(beacon = %cfg.name, jid = %job.jid, "paused: state run in progress");
                    }
                    if let Err(e) = beacon.during_state_run(&job) {
                        if let Some(ev) = errors.report(&ctx, &cfg, &e) {
                            events.push(ev);
                        }
                    }
                    in_state_run = Some(job);
                    if !send(events).await {
                        return;
                    }
                    continue;
                }
                None => {
                    if let Some(job) = in_state_run.take() {
                        tracing::info!(beacon = %cfg.name, jid = %job.jid, "resumed: state run over");
                        match beacon.after_state_run(&job) {
                            Ok(data) => events.extend(to_events(&ctx.minion.id, &cfg.name, data)),
                            Err(e) => events.extend(errors.report(&ctx, &cfg, &e)),
                        }
                    }
                }
            }
        }

        match beacon.evaluate() {
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
            tracing::info!(beacon = %cfg.name, "run_once: disabled after its first run");
            return;
        }
    }
}
