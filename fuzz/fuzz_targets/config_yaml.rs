//! The config loader: YAML parsing with positions, then the whole `load_dir` path (minion
//! options, `beacons:` in Salt's schema, every beacon's validation) on a real directory.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("beacond-fuzz-config-{}", std::process::id()));
        let _ = std::fs::create_dir_all(d.join("minion.d"));
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = beacond::config::yaml::parse("fuzz.conf", text);
    let d = dir();
    if std::fs::write(d.join("minion.d/fuzz.conf"), text).is_ok() {
        let loaded = beacond::config::load_dir(d, false);
        let ctx = beacond::beacons::BuildContext::new(loaded.minion.clone());
        let _ = beacond::scheduler::plan(&loaded.beacons, &ctx);
        let _ = beacond::spool::Options::from_minion(&loaded.minion);
    }
});
