//! The `inotify` beacon releases its inotify instance when dropped: 1,000 build/start/drop
//! cycles (what a config reload or a toggled beacon does to it) leave the open fd count flat.
//! Own test binary, one test: `/proc/self/fd` is process-wide, nothing else runs beside it.
//! (A leak would also hit `fs.inotify.max_user_instances`, 128 by default, long before 1,000.)
mod common;
use beacond::beacons::{self, BuildContext};
use beacond::config;
use common::beacond::*;

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

#[test]
fn build_start_drop_1000_times_leaks_no_fd() {
    let tree = TempDir::new("fds-tree");
    std::fs::create_dir_all(tree.join("w/a/b")).unwrap();
    std::fs::write(tree.join("f"), b"x").unwrap();
    let cfg = ConfigDir::new(
        "fds",
        &format!(
            "beacons:\n  inotify:\n    - files:\n        {0}/w:\n          mask: [create, modify]\n          recurse: True\n          auto_add: True\n        {0}/f:\n          mask: [modify]\n          diff: True\n",
            tree.path().display()
        ),
    );
    let loaded = config::load_dir(cfg.path(), false);
    assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
    let ctx = BuildContext::new(loaded.minion.clone());
    let bcfg = &loaded.beacons[0];
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Warm up (lazily opened runtime resources), then measure.
        let mut b = beacons::build(bcfg, &ctx).unwrap();
        b.start().unwrap();
        drop(b);
        let before = open_fds();
        for i in 0..1000 {
            let mut b = beacons::build(bcfg, &ctx).unwrap();
            b.start()
                .unwrap_or_else(|e| panic!("start #{i} failed (leaked instances?): {e}"));
            std::fs::write(tree.join("f"), format!("{i}")).unwrap();
            let _ = b.evaluate().unwrap();
            // A restart of a started beacon (the scheduler retries `start`) must not leak either.
            if i % 10 == 0 {
                b.start().unwrap();
            }
            drop(b);
        }
        let after = open_fds();
        assert_eq!(before, after, "open fds went from {before} to {after}");
    });
}
