//! A journal file as the `journald` beacon reads it (a corrupt or crafted file under a watched
//! directory): header, entry-array chain, entries, DATA objects and their decompression
//! through `beacons::journald::read_file`, from the start and after a sequence number. Never a
//! panic, a hang or unbounded memory. The seed corpus holds real journal files written by
//! systemd-journald (see fuzz/README.md).
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn path() -> &'static PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let shm = std::path::Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("beacond-fuzz-journal-{}", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let p = path();
    if std::fs::write(p, data).is_err() {
        return;
    }
    let budget = 1000;
    if let Ok(n) = beacond::beacons::journald::read_file(p, None, budget) {
        assert!(n <= budget);
    }
    // The catch-up path: whole arrays of seen entries skipped by their last entry.
    let _ = beacond::beacons::journald::read_file(p, Some(data.len() as u64 % 64), budget);
});
