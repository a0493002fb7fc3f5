//! Build-time tool: writes the man page `beacond.8` (the CLI from `src/cli.rs`, every beacon's
//! options from its typed config) and the bash, zsh and fish completions into a directory.
//!
//!     cargo run --example gen-docs -- OUTDIR
//!     cargo run --example gen-docs -- --readme README.md   # rewrite its beacon options block
//!
//! An example rather than a hidden subcommand or `build.rs`: `clap_mangen` and `clap_complete`
//! are dev-dependencies, so the shipped binary neither links them nor grows, and a normal
//! `cargo build` never runs them. `packaging/build.sh` calls this before building the packages.

use beacond::cli::Cli;
use clap::CommandFactory;
use clap_complete::{generate_to, Shell};
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    if let [flag, readme] = args.as_slice() {
        if flag.as_os_str() == "--readme" {
            return match update_readme(readme) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("gen-docs: {}: {e}", readme.display());
                    ExitCode::FAILURE
                }
            };
        }
    }
    let [out] = args.as_slice() else {
        eprintln!("usage: gen-docs OUTDIR | gen-docs --readme README.md");
        return ExitCode::from(2);
    };
    match generate(out) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("gen-docs: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Replaces what lies between the README's option-block markers with `describe::markdown()`.
fn update_readme(path: &std::path::Path) -> std::io::Result<()> {
    use beacond::config::describe::{markdown, README_BEGIN, README_END};
    let text = std::fs::read_to_string(path)?;
    let (Some(b), Some(e)) = (text.find(README_BEGIN), text.find(README_END)) else {
        return Err(std::io::Error::other(format!(
            "no '{README_BEGIN}' ... '{README_END}' block"
        )));
    };
    let head = &text[..b + README_BEGIN.len()];
    let tail = &text[e..];
    std::fs::write(path, format!("{head}\n{}{tail}", markdown()))
}

fn generate(out: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    let mut cmd = Cli::command();
    let mut files = Vec::new();

    let man = clap_mangen::Man::new(cmd.clone())
        .section("8")
        .manual("System Administration")
        .source(format!("beacond {}", env!("CARGO_PKG_VERSION")));
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    page.extend_from_slice(beacond::config::describe::roff().as_bytes());
    page.extend_from_slice(EXTRA_SECTIONS.as_bytes());
    man.render_version_section(&mut page)?;
    let path = out.join("beacond.8");
    std::fs::write(&path, page)?;
    files.push(path);

    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        files.push(generate_to(shell, &mut cmd, "beacond", out)?);
    }
    Ok(files)
}

/// Sections clap has no data for: files, signals, exit status, systemd, see also (roff).
const EXTRA_SECTIONS: &str = r#".SH FILES
.TP
\fI/etc/salt/minion\fR, \fI/etc/salt/minion.d/*.conf\fR
The salt\-minion configuration; beacond reads its \fBbeacons:\fR, \fBid\fR, \fBcachedir\fR,
\fBpki_dir\fR, \fBmaster\fR and \fBmaster_port\fR, merged the way salt\-minion merges them.
.TP
\fI/etc/salt/minion.d/beacond.conf\fR
Switches a host over to beacond (\fBbeacond_owns_beacons: True\fR and \fBbeacons: enabled: False\fR):
salt\-minion stops running beacons, beacond runs them. The systemd unit only starts when this
file exists. Example: \fI/etc/salt/minion.d/beacond.conf.example\fR.
.TP
\fI/usr/share/beacond/examples/\fR
Example beacon drop\-ins.
.TP
\fI/var/cache/salt/minion/beacond/\fR
beacond's state (positions, cursors); removed on purge.
.SH SIGNALS
.TP
\fBSIGHUP\fR
Reload the configuration: unchanged beacons keep running, changed ones are rebuilt.
.TP
\fBSIGTERM\fR, \fBSIGINT\fR
Stop.
.SH EXIT STATUS
0 on success; 2 when \fB\-\-check\fR finds problems or the configuration cannot run; 1 on other errors.
.SH SYSTEMD
The packaged unit \fIbeacond.service\fR is \fBType=notify\fR with a watchdog, and runs with a
reduced capability bounding set (CAP_NET_ADMIN, CAP_DAC_READ_SEARCH, CAP_SYS_PTRACE, and
CAP_BPF with CAP_PERFMON for the eBPF exec source) and a read\-only file system except the cache
and pki directories. \fBattribute: True\fR (who changed a file) also needs CAP_SYS_ADMIN for
fanotify: add it with \fBsystemctl edit beacond\fR (CapabilityBoundingSet=CAP_SYS_ADMIN);
without it the beacons run unattributed and say so once in the log.
.SH SEE ALSO
\fBsalt\-minion\fR(1), \fBsystemd.service\fR(5)
"#;
