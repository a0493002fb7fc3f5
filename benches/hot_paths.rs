//! Micro-benchmarks of the hot paths: reading and validating a Salt config, building and
//! printing events, and encoding a batch as Salt's `_minion_event` (msgpack + AES-CBC + HMAC).
//! Run: `cargo bench --bench hot_paths`.
use beacond::beacons::BuildContext;
use beacond::config;
use beacond::event::Event;
use beacond::scheduler;
use beacond::transport::salt::crypto::Crypticle;
use beacond::transport::salt::wire;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::{json, Map, Value};
use std::hint::black_box;
use std::path::PathBuf;

/// A config dir holding every shipped drop-in from `beacons/`.
fn dropins_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("beacond-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("minion.d")).expect("bench dir");
    std::fs::write(
        dir.join("minion"),
        "id: bench\ncachedir: /tmp/beacond-bench-cache\n",
    )
    .expect("minion");
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("beacons");
    for entry in std::fs::read_dir(shipped).expect("beacons/").flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().ends_with(".conf") {
            std::fs::copy(entry.path(), dir.join("minion.d").join(name)).expect("copy drop-in");
        }
    }
    dir
}

fn config_validation(c: &mut Criterion) {
    let dir = dropins_dir();
    c.bench_function("config: load + validate shipped drop-ins", |b| {
        b.iter(|| {
            let loaded = config::load_dir(black_box(&dir), false);
            let ctx = BuildContext::new(loaded.minion.clone());
            let (planned, errors) = scheduler::plan(&loaded.beacons, &ctx);
            black_box((planned.len(), errors.len()))
        })
    });
    let _ = std::fs::remove_dir_all(&dir);
}

fn sample_data() -> Map<String, Value> {
    let v = json!({
        "tag": "12345",
        "cmd": "/usr/bin/vim", "args": ["vim", "/etc/selinux/config"], "user": "alice",
        "uid": 1000, "pid": 12345, "ppid": 12000, "cwd": "/home/alice", "tty": "pts/0",
    });
    v.as_object().cloned().unwrap_or_default()
}

fn events(c: &mut Criterion) {
    let data = sample_data();
    c.bench_function("event: build (tag, id, _stamp)", |b| {
        b.iter(|| Event::from_beacon(black_box("web1"), black_box("sh"), data.clone()))
    });
    let ev = Event::from_beacon("web1", "sh", data.clone());
    c.bench_function("event: render JSON line", |b| {
        b.iter(|| beacond::output::render(black_box(&ev), false))
    });
}

fn minion_event_encoding(c: &mut Criterion) {
    let key = Crypticle::generate_key_string();
    let crypticle = Crypticle::from_key_string(key.as_bytes()).expect("session key");
    let batch: Vec<Event> = (0..100)
        .map(|_| Event::from_beacon("web1", "sh", sample_data()))
        .collect();
    let mut group = c.benchmark_group("transport");
    group.throughput(Throughput::Elements(batch.len() as u64));
    group.bench_function("_minion_event: msgpack + AES-CBC + HMAC, 100 events", |b| {
        b.iter(|| {
            let load = wire::minion_event_load(
                "web1",
                b"token",
                wire::events_value(black_box(&batch)),
                "0123456789abcdef0123456789abcdef",
                1_700_000_000,
            );
            black_box(crypticle.dumps(&load, None))
        })
    });
    group.finish();
}

criterion_group!(benches, config_validation, events, minion_event_encoding);
criterion_main!(benches);
