//! The command line: a public contract (`-c`, `--once`, `--pretty`, `--stdout`, `--check`,
//! `--describe`).

use clap::Parser;
use std::path::PathBuf;

/// Salt beacons as one small agent: reads the `beacons:` of a salt-minion config and sends
/// `salt/beacon/<id>/<name>/...` events to the salt-master.
#[derive(Debug, Parser)]
#[command(name = "beacond", version, about)]
pub struct Cli {
    /// Salt config directory: reads DIR/minion and DIR/minion.d/*.conf.
    #[arg(short = 'c', long = "config-dir", value_name = "DIR")]
    pub config_dir: Option<PathBuf>,

    /// Evaluate every beacon once, print each event as a JSON line, send nothing, exit.
    #[arg(long, conflicts_with_all = ["stdout", "check"])]
    pub once: bool,

    /// Run continuously, printing events as JSON lines instead of sending them to a master.
    #[arg(long, conflicts_with = "check")]
    pub stdout: bool,

    /// Print events as indented JSON (like `salt-run state.event pretty=True`).
    #[arg(long)]
    pub pretty: bool,

    /// Validate the configuration and exit: 0 when valid, 2 with every problem otherwise.
    #[arg(long)]
    pub check: bool,

    /// Print a beacon kind's options (type, default, what each does) and exit; with no
    /// BEACON, list the beacon kinds.
    #[arg(long, value_name = "BEACON", num_args = 0..=1, default_missing_value = "",
          conflicts_with_all = ["once", "stdout", "check"])]
    pub describe: Option<String>,

    /// More log output on stderr (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Where the config lives when `-c` is not given.
pub const DEFAULT_CONFIG_DIR: &str = "/etc/salt";
