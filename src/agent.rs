//! The run modes, wired together: load and validate the config, then `--check`, `--once`,
//! `--stdout`, or the normal mode that sends to the master.

use crate::beacons::BuildContext;
use crate::cli::{Cli, DEFAULT_CONFIG_DIR};
use crate::config::{self, ConfigError};
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
    let errors: Vec<&ConfigError> = loaded.errors.iter().chain(&build_errors).collect();

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
        if cli.stdout {
            let sink = tokio::spawn(output::print_all(rx, cli.pretty));
            tokio::select! {
                () = scheduler::run(planned, ctx.clone(), tx) => {}
                _ = shutdown_signal() => {}
            }
            let _ = sink.await;
            return ExitCode::SUCCESS;
        }
        send_to_master(planned, ctx, tx, rx).await
    })
}

async fn send_to_master(
    planned: Vec<scheduler::Planned>,
    ctx: Arc<BuildContext>,
    tx: mpsc::Sender<crate::event::Event>,
    rx: mpsc::Receiver<crate::event::Event>,
) -> ExitCode {
    let _ = (planned, ctx, tx, rx);
    eprintln!(
        "beacond: sending to a salt-master is not available in this build; use --stdout or --once"
    );
    ExitCode::FAILURE
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

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
