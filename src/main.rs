use clap::Parser;
use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = beacond::cli::Cli::parse();
    if let Some(kind) = &cli.describe {
        return match beacond::config::describe::describe(kind) {
            Ok(text) => match std::io::stdout().write_all(text.as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            },
            Err(e) => {
                eprintln!("beacond: {e}");
                ExitCode::from(2)
            }
        };
    }
    beacond::agent::main(cli)
}
