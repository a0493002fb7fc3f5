use clap::Parser;

fn main() -> std::process::ExitCode {
    beacond::agent::main(beacond::cli::Cli::parse())
}
