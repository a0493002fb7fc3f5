//! The run modes, wired together: load and validate the config, then `--check`, `--once`,
//! `--stdout`, or the normal mode that sends to the master.

use crate::beacons::BuildContext;
use crate::cli::{Cli, DEFAULT_CONFIG_DIR};
use crate::config::{self, ConfigError};
use crate::scheduler::Scheduler;
use crate::{output, scheduler, systemd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Bound of the queue between the beacons and the sink (memory stays bounded under floods).
const EVENT_QUEUE: usize = 4096;

/// Exit code of `--check` with an invalid configuration (and of a config that cannot run).
pub const EXIT_INVALID: u8 = 2;

pub fn main(cli: Cli) -> ExitCode {
    init_logging(cli.verbose);
    let explicit = cli.config_dir.is_some();
    let dir = cli
        .config_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_DIR));
    if explicit && !dir.is_dir() {
        let why = if dir.exists() {
            "is not a directory"
        } else {
            "does not exist"
        };
        eprintln!("beacond: config directory {} {why}", dir.display());
        return ExitCode::from(EXIT_INVALID);
    }
    // The built-in default set only stands in when no config was asked for and none exists.
    let loaded = config::load_dir(&dir, !explicit);
    if loaded.builtin {
        tracing::info!(
            "no config in {}: running the built-in default beacons (load, memusage, swapusage, diskusage)",
            dir.display()
        );
    } else {
        for f in &loaded.files {
            tracing::debug!("read {}", f.display());
        }
    }
    let ctx = BuildContext::new(loaded.minion.clone());
    let (planned, build_errors) = scheduler::plan(&loaded.beacons, &ctx);
    let errors = sorted_errors(&loaded.errors, &build_errors);

    if cli.check {
        for e in &errors {
            eprintln!("{e}");
        }
        // Warnings: the config is valid, but something it relies on is missing.
        let wants_results = loaded
            .beacons
            .iter()
            .any(|b| b.module == "state_results" && b.enabled);
        if wants_results {
            if let Some(w) = crate::beacons::state_results::minion_warning(&ctx.minion) {
                eprintln!("warning: {w}");
            }
        }
        // The spool / flood-control / status options of the normal mode.
        let spool_problem = crate::spool::Options::from_minion(&ctx.minion).err();
        if let Some(e) = &spool_problem {
            eprintln!("{e}");
        }
        // Sinks whose settings parsed: what needs the file system (CA files) is checked here.
        let sink_problems = crate::transport::sinks::check(&ctx.minion, &loaded.sinks);
        for e in &sink_problems {
            eprintln!("{e}");
        }
        if errors.is_empty() && spool_problem.is_none() && sink_problems.is_empty() {
            let n = loaded.beacons.len();
            println!(
                "configuration OK: {n} beacon(s), {} sink(s), minion id '{}'",
                loaded.sinks.len(),
                ctx.minion.id
            );
            return ExitCode::SUCCESS;
        }
        eprintln!(
            "{} problem(s) found",
            errors.len() + usize::from(spool_problem.is_some()) + sink_problems.len()
        );
        return ExitCode::from(EXIT_INVALID);
    }
    for e in &errors {
        if e.beacon.is_some() {
            tracing::error!("{e} (this beacon is skipped; the others run)");
        } else {
            tracing::error!("{e} (this file is skipped; the others are read)");
        }
    }
    if !loaded.all_enabled {
        tracing::warn!("beacons: enabled: False, every beacon is off");
    }
    let planned = if loaded.all_enabled {
        planned
    } else {
        Vec::new()
    };

    // One runtime thread for the sources, timers and the transport; beacons' evaluations run
    // on its blocking pool (threads made on demand, gone after 10 s idle).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("beacond-eval")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("beacond: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ctx = Arc::new(ctx);
    let code = runtime.block_on(async move {
        if cli.once {
            for event in scheduler::evaluate_once(planned, &ctx) {
                if !output::print(&event, cli.pretty) {
                    break;
                }
            }
            return ExitCode::SUCCESS;
        }
        if planned.is_empty() {
            tracing::warn!("no beacon to run");
        }
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        let source = Source {
            dir,
            allow_builtin: !explicit,
        };
        if cli.stdout {
            let sink = tokio::spawn(output::print_all(rx, cli.pretty));
            run_beacons(&source, planned, ctx, tx, &|| true).await;
            let _ = sink.await;
            return ExitCode::SUCCESS;
        }
        send_to_master(&source, planned, ctx, &loaded.sinks, tx, rx).await
    });
    // An evaluation still blocked (a D-Bus call waiting for its timeout) must not hold up the
    // exit: its beacon is dropped with the process.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

/// Every problem, in file and line order.
fn sorted_errors<'a>(a: &'a [ConfigError], b: &'a [ConfigError]) -> Vec<&'a ConfigError> {
    let mut all: Vec<&ConfigError> = a.iter().chain(b).collect();
    all.sort_by(|x, y| {
        let key = |e: &ConfigError| e.pos.as_ref().map(|p| (p.file.clone(), p.line, p.col));
        key(x).cmp(&key(y))
    });
    all
}

/// Where the configuration comes from, to read it again on SIGHUP.
struct Source {
    dir: PathBuf,
    allow_builtin: bool,
}

/// Run the beacons until SIGTERM/SIGINT; SIGHUP reloads the configuration. Tells systemd
/// when it is ready, and pings its watchdog from this loop while `healthy()` (the sink is
/// alive): a wedged loop or a dead sink stops the pings and systemd restarts the agent.
async fn run_beacons(
    source: &Source,
    planned: Vec<scheduler::Planned>,
    ctx: Arc<BuildContext>,
    tx: mpsc::Sender<crate::event::Event>,
    healthy: &dyn Fn() -> bool,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    let mut sched = Scheduler::new(ctx.clone(), tx);
    sched.apply(ctx, planned);
    let n = sched.len();
    if let Err(e) = systemd::ready(&format!("{n} beacon(s) running")) {
        tracing::warn!("cannot notify systemd: {e}");
    }
    let watchdog = systemd::watchdog_interval();
    let mut ping = tokio::time::interval(
        watchdog
            .map(|w| (w / 2).max(Duration::from_millis(10)))
            .unwrap_or(Duration::from_secs(3600)),
    );
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            alive = sched.supervise(), if sched.has_tasks() => {
                if !alive && sched.is_empty() {
                    tracing::debug!("no beacon left running");
                }
            }
            _ = ping.tick(), if watchdog.is_some() => {
                if healthy() {
                    if let Err(e) = systemd::notify("WATCHDOG=1") {
                        tracing::warn!("cannot ping the systemd watchdog: {e}");
                    }
                } else {
                    tracing::error!("the event sink stopped; not pinging the watchdog");
                }
            }
            _ = hup.recv() => reload(source, &mut sched),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    let _ = systemd::stopping();
    tracing::info!("shutting down");
}

/// Read the configuration again; a configuration with any problem is rejected as a whole and
/// the running one stays.
fn reload(source: &Source, sched: &mut Scheduler) {
    let loaded = config::load_dir(&source.dir, source.allow_builtin);
    let ctx = BuildContext::new(loaded.minion.clone());
    let (planned, build_errors) = scheduler::plan(&loaded.beacons, &ctx);
    let errors = sorted_errors(&loaded.errors, &build_errors);
    if !errors.is_empty() {
        for e in &errors {
            tracing::error!("{e}");
        }
        tracing::error!(
            "reload rejected: {} problem(s) in the new configuration; the running configuration stays",
            errors.len()
        );
        return;
    }
    let planned = if loaded.all_enabled {
        planned
    } else {
        Vec::new()
    };
    let s = sched.apply(Arc::new(ctx), planned);
    tracing::info!(
        "reloaded configuration: {} kept, {} restarted, {} added, {} removed",
        s.kept,
        s.restarted,
        s.added,
        s.removed
    );
}

/// The normal mode: beacons → bounded queue → flood control → durable spool → the Salt
/// transport (see [`crate::spool`]).
async fn send_to_master(
    source: &Source,
    planned: Vec<scheduler::Planned>,
    ctx: Arc<BuildContext>,
    sink_configs: &[crate::config::sinks::SinkConfig],
    tx: mpsc::Sender<crate::event::Event>,
    rx: mpsc::Receiver<crate::event::Event>,
) -> ExitCode {
    use crate::spool::{pipeline, stats::Stats, store::Spool, Options};
    use crate::transport::salt::Masters;
    use crate::transport::sinks;
    // Options, keys and master settings are checked before any beacon starts: a minion that
    // cannot talk to its master or keep its events must say so at once, not run blind.
    let opts = match Options::from_minion(&ctx.minion) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("beacond: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let masters = match Masters::new(&ctx.minion) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("beacond: cannot start the Salt transport: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dir = crate::spool::spool_dir(&ctx.minion);
    let spool = match Spool::open(&dir, opts.max_bytes) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("beacond: cannot open the spool: {e}");
            return ExitCode::FAILURE;
        }
    };
    let stats = Arc::new(Stats::default());
    let flush = opts.flush_timeout;
    // With sinks, a fan-out hands each event to the master's pipeline and to every sink's
    // (each with its own spool); without, the beacons feed the master's pipeline directly.
    let (master_rx, running) = if sink_configs.is_empty() {
        (rx, Vec::new())
    } else {
        let (mtx, mrx) = mpsc::channel(EVENT_QUEUE);
        let running = match sinks::start(&ctx.minion, &opts, sink_configs, &mtx) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("beacond: cannot start the sinks: {e}");
                return ExitCode::FAILURE;
            }
        };
        let feeds = running.iter().map(sinks::Running::feed).collect();
        tokio::spawn(sinks::fan_out(rx, mtx, feeds));
        (mrx, running)
    };
    let sender = tokio::spawn(pipeline::run(
        ctx.minion.id.clone(),
        opts,
        spool,
        masters,
        master_rx,
        stats.clone(),
    ));
    let healthy = || !sender.is_finished();
    run_beacons(source, planned, ctx, tx, &healthy).await;
    // The beacons are stopped and the queues close: each sink flushes for up to
    // `beacond_flush_timeout` and leaves the rest in its spool.
    // Their queues close only once every sender is gone: the fan-out's and these.
    let tasks: Vec<_> = running.into_iter().map(sinks::Running::into_task).collect();
    for (name, task) in tasks {
        match tokio::time::timeout(flush + Duration::from_secs(2), task).await {
            Ok(Ok(left)) if !left.is_empty() => tracing::warn!(
                sink = %name,
                undelivered = left.pending(),
                "sink stopped with undelivered events; they stay in its spool for the next start"
            ),
            Ok(_) => tracing::info!(sink = %name, "every event delivered to the sink"),
            Err(_) => tracing::warn!(sink = %name, "sink stopped before every event was delivered"),
        }
    }
    // Then the master's pipeline (its queue closes once the sinks let go of it), for up to
    // `beacond_flush_timeout` as well.
    match tokio::time::timeout(flush + Duration::from_secs(2), sender).await {
        Ok(Ok(left)) if !left.is_empty() => tracing::warn!(
            undelivered = left.pending(),
            "stopped with undelivered events; they stay in the spool for the next start"
        ),
        Ok(_) => tracing::info!("every event delivered"),
        Err(_) => {
            tracing::warn!("stopped before every event was delivered; the rest stays in the spool")
        }
    }
    ExitCode::SUCCESS
}

/// Logs to stderr: INFO by default, DEBUG with `-v`, TRACE with `-vv`; `RUST_LOG` adds
/// per-module levels (`beacond::scheduler=debug`, `beacond::transport=warn`), as in
/// tracing-subscriber's `EnvFilter`; `-v`/`-vv` raise the level of everything else.
fn init_logging(verbose: u8) {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::{EnvFilter, LevelFilter};
    let directives = std::env::var("RUST_LOG").unwrap_or_default();
    let builder = EnvFilter::builder().with_default_directive(LevelFilter::INFO.into());
    let (mut filter, bad) = match builder.parse(&directives) {
        Ok(f) => (f, None),
        Err(e) => (EnvFilter::new("info"), Some(e)),
    };
    if verbose > 0 {
        let level = if verbose == 1 {
            LevelFilter::DEBUG
        } else {
            LevelFilter::TRACE
        };
        filter = filter.add_directive(level.into());
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter)
        .with_target(false)
        .init();
    if let Some(e) = bad {
        tracing::warn!("RUST_LOG={directives:?} ignored: {e}");
    }
}
