//! The run modes, wired together: load and validate the config, then `--check`, `--once`,
//! `--stdout`, or the normal mode that sends to the master.

use crate::beacons::BuildContext;
use crate::cli::{Cli, DEFAULT_CONFIG_DIR};
use crate::config::{self, ConfigError};
use crate::scheduler::Scheduler;
use crate::{output, scheduler};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
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
        eprintln!("beacond: config directory {} does not exist", dir.display());
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
        if errors.is_empty() {
            let n = loaded.beacons.len();
            println!(
                "configuration OK: {n} beacon(s), minion id '{}'",
                ctx.minion.id
            );
            return ExitCode::SUCCESS;
        }
        eprintln!("{} problem(s) found", errors.len());
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

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("beacond: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let ctx = Arc::new(ctx);
    runtime.block_on(async move {
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
            run_beacons(&source, planned, ctx, tx).await;
            let _ = sink.await;
            return ExitCode::SUCCESS;
        }
        send_to_master(&source, planned, ctx, tx, rx).await
    })
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

/// Run the beacons until SIGTERM/SIGINT; SIGHUP reloads the configuration.
async fn run_beacons(
    source: &Source,
    planned: Vec<scheduler::Planned>,
    ctx: Arc<BuildContext>,
    tx: mpsc::Sender<crate::event::Event>,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut sched = Scheduler::new(ctx.clone(), tx);
    sched.apply(ctx, planned);
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            alive = sched.supervise(), if sched.has_tasks() => {
                if !alive && sched.is_empty() {
                    tracing::debug!("no beacon left running");
                }
            }
            _ = hup.recv() => reload(source, &mut sched),
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
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

/// The normal mode: beacons → bounded queue → the Salt transport.
async fn send_to_master(
    source: &Source,
    planned: Vec<scheduler::Planned>,
    ctx: Arc<BuildContext>,
    tx: mpsc::Sender<crate::event::Event>,
    rx: mpsc::Receiver<crate::event::Event>,
) -> ExitCode {
    use crate::transport::salt::{forward_with, Masters, MemQueue};
    // Keys and master settings are checked before any beacon starts: a minion that cannot
    // talk to its master must say so at once, not run blind.
    let masters = match Masters::new(&ctx.minion) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("beacond: cannot start the Salt transport: {e}");
            return ExitCode::FAILURE;
        }
    };
    let sender = tokio::spawn(forward_with(
        masters,
        rx,
        MemQueue::new(crate::transport::salt::forward::MEM_QUEUE_MAX),
    ));
    run_beacons(source, planned, ctx, tx).await;
    // The beacons are stopped and the queue closed: give the sender a short while to flush.
    match tokio::time::timeout(SHUTDOWN_FLUSH, sender).await {
        Ok(Ok(left)) if !crate::transport::salt::Backlog::is_empty(&left) => {
            tracing::warn!(
                undelivered = crate::transport::salt::Backlog::len(&left),
                "stopped with undelivered events"
            );
        }
        Ok(_) => {}
        Err(_) => tracing::warn!("stopped before every event was delivered"),
    }
    ExitCode::SUCCESS
}

/// How long SIGTERM waits for queued events to reach the master.
const SHUTDOWN_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

fn init_logging(verbose: u8) {
    use std::io::IsTerminal;
    let level = match verbose {
        0 => tracing::Level::INFO,
        1 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_max_level(level)
        .with_target(false)
        .init();
}
