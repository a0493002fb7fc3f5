//! Micro-benchmarks of the audit beacons' hot paths (issue 9): utmp/wtmp/btmp record parsing
//! into Salt's event data, the proc connector's datagram parsing, and the `sh` beacon turning
//! new processes into exec events (read from a /proc-shaped fixture tree, so the numbers do
//! not depend on the host's processes).
//! Run: `cargo bench --bench audit_paths`.
use beacond::beacons::{self, utmp, BuildContext};
use beacond::config;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use std::path::{Path, PathBuf};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("beacond-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("bench scratch dir");
    dir
}

fn put(field: &mut [libc::c_char], s: &str) {
    for (d, b) in field.iter_mut().zip(s.bytes()) {
        *d = b as libc::c_char;
    }
}

/// One USER_PROCESS record as glibc writes it (an ssh login from 192.0.2.7).
fn login_record(i: usize) -> Vec<u8> {
    // SAFETY: utmpx is a plain C struct of integers and byte arrays: all-zero is valid.
    let mut u: libc::utmpx = unsafe { std::mem::zeroed() };
    u.ut_type = libc::USER_PROCESS;
    u.ut_pid = 4000 + i as i32;
    put(&mut u.ut_line, "pts/3");
    put(&mut u.ut_id, "ts/3");
    put(&mut u.ut_user, "alice");
    put(&mut u.ut_host, "192.0.2.7");
    u.ut_tv.tv_sec = 1_700_000_000 + i as i32;
    u.ut_addr_v6[0] = u32::from_ne_bytes([192, 0, 2, 7]) as i32;
    // SAFETY: reading the struct's own bytes (size_of::<utmpx>() of them) from a live value;
    // the copy ends before `u` goes out of scope.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&u as *const libc::utmpx).cast::<u8>(),
            std::mem::size_of::<libc::utmpx>(),
        )
    };
    bytes.to_vec()
}

fn utmp_records(c: &mut Criterion) {
    let rec = login_record(0);
    c.bench_function("utmp: parse one record", |b| {
        b.iter(|| utmp::Record::parse(black_box(&rec)))
    });
    let parsed = utmp::Record::parse(&rec).expect("fixture record parses");
    c.bench_function("utmp: record -> Salt event data", |b| {
        b.iter(|| black_box(&parsed).salt_data())
    });
    let dir = scratch("wtmp");
    let file = dir.join("wtmp");
    let n = 1000;
    let all: Vec<u8> = (0..n).flat_map(login_record).collect();
    std::fs::write(&file, &all).expect("write wtmp fixture");
    let mut g = c.benchmark_group("utmp");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function("read + parse + event data, 1000-record wtmp", |b| {
        b.iter(|| {
            let recs = utmp::read_all(black_box(&file)).expect("read wtmp fixture");
            recs.iter().map(|r| r.salt_data().len()).sum::<usize>()
        })
    });
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

/// One netlink datagram carrying one PROC_EVENT_EXEC, as the kernel sends it.
fn exec_datagram(pid: u32) -> Vec<u8> {
    let mut ev = Vec::new();
    ev.extend_from_slice(&2u32.to_ne_bytes()); // what = PROC_EVENT_EXEC
    ev.extend_from_slice(&0u32.to_ne_bytes()); // cpu
    ev.extend_from_slice(&0u64.to_ne_bytes()); // timestamp_ns
    ev.extend_from_slice(&pid.to_ne_bytes()); // process_pid
    ev.extend_from_slice(&pid.to_ne_bytes()); // process_tgid
    let mut cn = Vec::new();
    for v in [1u32, 1, 0, 0] {
        cn.extend_from_slice(&v.to_ne_bytes()); // idx, val, seq, ack
    }
    cn.extend_from_slice(&(ev.len() as u16).to_ne_bytes());
    cn.extend_from_slice(&0u16.to_ne_bytes());
    cn.extend(ev);
    let mut m = Vec::new();
    m.extend_from_slice(&((16 + cn.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&3u16.to_ne_bytes()); // NLMSG_DONE
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend(cn);
    m
}

fn proc_connector(c: &mut Criterion) {
    let dgram = exec_datagram(4242);
    let mut out = Vec::with_capacity(4);
    // Fresh sequence bookkeeping per datagram: the bench measures parsing, not gap counting.
    c.bench_function("proc connector: parse one exec datagram", |b| {
        b.iter(|| {
            out.clear();
            let mut seqs = beacond::sources::proc_connector::Sequences::default();
            beacond::sources::proc_connector::parse(black_box(&dgram), &mut out, &mut seqs);
            out.len()
        })
    });
}

/// A /proc-shaped tree of `n` processes (pids 1000..), each `/bin/true bcmark <i>` run by root
/// under the shell pid 999.
fn fake_procfs(root: &Path, n: usize) {
    let shell = root.join("999");
    std::fs::create_dir_all(&shell).expect("fixture");
    std::fs::write(shell.join("cmdline"), b"bash\0").expect("fixture");
    let stat = |pid: usize, comm: &str, ppid: usize| {
        format!("{pid} ({comm}) R {ppid} {pid} {pid} 34819 {pid} 4194560 100 0 0 0 0 0 0 0 20 0 1 0 {} 2314240 200 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n", 5000 + pid)
    };
    let status = "Name:\ttrue\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n";
    std::fs::write(shell.join("stat"), stat(999, "bash", 1)).expect("fixture");
    std::fs::write(shell.join("status"), status).expect("fixture");
    std::os::unix::fs::symlink("/bin/bash", shell.join("exe")).expect("fixture");
    for i in 0..n {
        let pid = 1000 + i;
        let d = root.join(pid.to_string());
        std::fs::create_dir_all(&d).expect("fixture");
        std::fs::write(d.join("cmdline"), format!("/bin/true\0bcmark\0{i}\0")).expect("fixture");
        std::fs::write(d.join("stat"), stat(pid, "true", 999)).expect("fixture");
        std::fs::write(d.join("status"), status).expect("fixture");
        std::os::unix::fs::symlink("/bin/true", d.join("exe")).expect("fixture");
        std::os::unix::fs::symlink("/root", d.join("cwd")).expect("fixture");
    }
}

fn sh_exec_events(c: &mut Criterion) {
    let n = 100;
    let dir = scratch("sh");
    let empty = dir.join("empty");
    let full = dir.join("full");
    std::fs::create_dir_all(&empty).expect("fixture");
    fake_procfs(&full, n);
    std::fs::write(dir.join("shells"), "/bin/sh\n/bin/bash\n/usr/bin/bash\n").expect("fixture");
    let procfs = dir.join("proc");
    let cfg_dir = dir.join("etc");
    std::fs::create_dir_all(&cfg_dir).expect("fixture");
    std::fs::write(
        cfg_dir.join("minion"),
        format!(
            "id: bench\ncachedir: {}\nbeacons:\n  sh:\n    - source: proc_scan\n    - procfs: {}\n    - shells_file: {}\n",
            dir.join("cache").display(),
            procfs.display(),
            dir.join("shells").display()
        ),
    )
    .expect("fixture");
    let loaded = config::load_dir(&cfg_dir, false);
    let ctx = BuildContext::new(loaded.minion.clone());
    let cfg = loaded.beacons.first().expect("sh configured").clone();
    let point = |to: &Path| {
        let _ = std::fs::remove_file(&procfs);
        std::os::unix::fs::symlink(to, &procfs).expect("procfs symlink");
    };
    let mut g = c.benchmark_group("sh");
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(
        "100 new processes -> exec events (proc_scan over a fixture /proc)",
        |b| {
            b.iter_batched(
                || {
                    // The beacon learns an empty /proc, then 100 processes appear.
                    point(&empty);
                    let mut beacon = beacons::build(&cfg, &ctx).expect("sh builds");
                    beacon.start().expect("sh starts");
                    point(&full);
                    beacon
                },
                |mut beacon| {
                    let events = beacon.evaluate().expect("sh evaluates");
                    assert_eq!(events.len(), n, "one event per new process");
                    events
                },
                BatchSize::PerIteration,
            )
        },
    );
    g.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, utmp_records, proc_connector, sh_exec_events);
criterion_main!(benches);
