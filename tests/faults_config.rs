//! Fault suite, config: hostile or broken Salt config files give a clear error naming the file
//! (exit 2 from `--check`), never a hang, a crash or unbounded memory; a broken drop-in never
//! takes the beacons of the good files down.

mod common;
use common::beacond::{repo, ConfigDir};
use common::bounded::{beacond, figure, run_bounded, Run};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

fn check(cfg: &ConfigDir) -> Run {
    beacond(cfg.path(), &["--check"], LIMIT)
}

fn memusage(name: &str) -> String {
    format!(
        "beacons:\n  {name}:\n    - beacon_module: memusage\n    - percent: 1%\n    - procfs: {}\n",
        repo().join("tests/fixtures/proc-high").display()
    )
}

fn assert_refused(r: &Run, needle: &str) {
    assert_eq!(r.code, 2, "exit code; stderr:\n{}", r.stderr);
    assert!(r.stderr.contains(needle), "no '{needle}' in:\n{}", r.stderr);
}

#[test]
fn ten_megabyte_yaml_is_read_in_bounded_time_and_memory() {
    let cfg = ConfigDir::new("big-yaml", "");
    let mut text = memusage("m");
    text.push_str("padding:\n");
    let mut i = 0;
    while text.len() < 10 << 20 {
        text.push_str(&format!(
            "  key{i}: \"some value that a generator wrote {i}\"\n"
        ));
        i += 1;
    }
    let cfg = cfg.dropin("big.conf", &text);
    let r = check(&cfg);
    figure("config 10 MB YAML", r.peak_rss_kb, r.elapsed);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("1 beacon(s)"), "{}", r.stdout);
    assert!(r.peak_rss_kb < 400 << 10, "peak RSS {} KiB", r.peak_rss_kb);
    // Over the cap (16 MiB) the file is refused by name, not read.
    let mut huge = String::with_capacity(17 << 20);
    while huge.len() <= 16 << 20 {
        huge.push_str("# a comment line of a runaway generator ....................\n");
    }
    let cfg = cfg.dropin("huge.conf", &huge);
    assert_refused(&check(&cfg), "huge.conf: cannot read: larger than 16 MiB");
}

#[test]
fn ten_thousand_levels_of_nesting_are_refused() {
    for (name, doc) in [
        (
            "flow-seq",
            format!("k: {}{}\n", "[".repeat(10_000), "]".repeat(10_000)),
        ),
        (
            "flow-map",
            format!("k: {}1{}\n", "{a: ".repeat(10_000), "}".repeat(10_000)),
        ),
    ] {
        let cfg = ConfigDir::new("nesting", "").dropin("deep.conf", &doc);
        let r = check(&cfg);
        figure(
            &format!("config 10,000-level {name}"),
            r.peak_rss_kb,
            r.elapsed,
        );
        assert_refused(&r, "deep.conf:1:");
        assert!(r.stderr.contains("recursion limit"), "{name}: {}", r.stderr);
        assert!(
            r.peak_rss_kb < 64 << 10,
            "{name}: peak RSS {} KiB",
            r.peak_rss_kb
        );
    }
}

#[test]
fn an_alias_bomb_is_refused_before_it_is_built() {
    // Billion laughs: 9 levels of 9 aliases = 387 million strings if expanded.
    let mut doc = String::from("a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    let mut prev = 'a';
    for c in 'b'..='i' {
        let refs = vec![format!("*{prev}"); 9].join(", ");
        doc.push_str(&format!("{c}: &{c} [{refs}]\n"));
        prev = c;
    }
    let cfg = ConfigDir::new("alias-bomb", "").dropin("bomb.conf", &doc);
    let r = check(&cfg);
    figure("config alias bomb", r.peak_rss_kb, r.elapsed);
    assert_refused(&r, "an alias bomb");
    assert!(r.peak_rss_kb < 64 << 10, "peak RSS {} KiB", r.peak_rss_kb);
    // Aliases in reasonable use still work.
    let ok = "base: &b {interval: 5}\nother: *b\n";
    let cfg = ConfigDir::new("alias-ok", "").dropin("ok.conf", ok);
    assert_eq!(check(&cfg).code, 0);
}

#[test]
fn invalid_utf8_is_refused_by_name() {
    let cfg = ConfigDir::new("utf8", "");
    std::fs::write(
        cfg.path().join("minion.d/bad.conf"),
        b"beacons:\n  x\xff\xfe: []\n",
    )
    .expect("write");
    assert_refused(&check(&cfg), "bad.conf:1:1: file is not valid UTF-8");
}

#[test]
fn config_paths_that_are_not_files_are_refused_not_skipped() {
    // `minion` a directory, a drop-in a directory, a drop-in a FIFO (opening it would block).
    let cfg = ConfigDir::new("not-file", "");
    std::fs::remove_file(cfg.path().join("minion")).expect("rm");
    std::fs::create_dir(cfg.path().join("minion")).expect("mkdir");
    std::fs::create_dir(cfg.path().join("minion.d/dir.conf")).expect("mkdir");
    mkfifo(&cfg.path().join("minion.d/fifo.conf"));
    let r = check(&cfg);
    assert_refused(&r, "minion: not a regular file (a directory)");
    assert!(
        r.stderr
            .contains("dir.conf: not a regular file (a directory)"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("fifo.conf: not a regular file (a FIFO"),
        "{}",
        r.stderr
    );
    assert!(r.elapsed < Duration::from_secs(10), "{:?}", r.elapsed);
    // `-c` naming a file says so.
    let file = cfg.path().join("minion.d/plain");
    std::fs::write(&file, "id: x\n").expect("write");
    assert_refused(&beacond(&file, &["--check"], LIMIT), "is not a directory");
}

#[test]
fn an_unreadable_config_file_is_refused_by_name() {
    use std::os::unix::fs::PermissionsExt;
    let cfg = ConfigDir::new("unreadable", "").dropin("secret.conf", &memusage("m"));
    let file = cfg.path().join("minion.d/secret.conf");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o000)).expect("chmod");
    // root reads anything: drop the capabilities that override file permissions (run as root
    // without CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH), so the path needs no access for others.
    let mut cmd = std::process::Command::new("setpriv");
    cmd.arg("--bounding-set=-dac_override,-dac_read_search")
        .arg(env!("CARGO_BIN_EXE_beacond"))
        .arg("-c")
        .arg(cfg.path())
        .arg("--check");
    let r = run_bounded(cmd, LIMIT);
    assert_refused(&r, "secret.conf: cannot read: Permission denied");
}

#[test]
fn symlink_loops_in_minion_d_are_reported_and_the_good_files_still_run() {
    let cfg = ConfigDir::new("loops", "").dropin("good.conf", &memusage("good"));
    let d = cfg.path().join("minion.d");
    std::os::unix::fs::symlink("loop-b.conf", d.join("loop-a.conf")).expect("symlink");
    std::os::unix::fs::symlink("loop-a.conf", d.join("loop-b.conf")).expect("symlink");
    std::os::unix::fs::symlink("self.conf", d.join("self.conf")).expect("symlink");
    let r = check(&cfg);
    assert_refused(
        &r,
        "loop-a.conf: cannot read: Too many levels of symbolic links",
    );
    assert!(r.stderr.contains("self.conf: cannot read"), "{}", r.stderr);
    // The good drop-in's beacon still runs.
    let r = beacond(cfg.path(), &["--once"], LIMIT);
    assert!(
        r.stdout.contains("salt/beacon/loops/good/"),
        "good beacon did not run: {}\n{}",
        r.stdout,
        r.stderr
    );
}

#[test]
fn ten_thousand_beacons_load_and_run_in_bounded_memory() {
    let fixture = repo().join("tests/fixtures/proc-high");
    let mut text = String::from("beacons:\n");
    for i in 0..10_000 {
        text.push_str(&format!(
            "  m{i}:\n    - beacon_module: memusage\n    - percent: 1%\n    - procfs: {}\n",
            fixture.display()
        ));
    }
    let cfg = ConfigDir::new("many", "").dropin("many.conf", &text);
    let r = check(&cfg);
    figure("config 10,000 beacons --check", r.peak_rss_kb, r.elapsed);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("10000 beacon(s)"), "{}", r.stdout);
    let r = beacond(cfg.path(), &["--once"], LIMIT);
    figure("config 10,000 beacons --once", r.peak_rss_kb, r.elapsed);
    let events = r
        .stdout
        .lines()
        .filter(|l| l.contains("salt/beacon/many/m"))
        .count();
    assert_eq!(events, 10_000, "{}", r.stderr);
    assert!(r.peak_rss_kb < 512 << 10, "peak RSS {} KiB", r.peak_rss_kb);
}

fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path.
    let r = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(r, 0, "mkfifo: {}", std::io::Error::last_os_error());
}
