//! A running Salt job as salt-minion leaves it: a live process whose command line says salt, and
//! its job file in `<cachedir>/proc/<jid>`.
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A process whose command line starts with `salt-minion-job`; killed on drop.
pub struct FakeSaltJob(Child);

impl FakeSaltJob {
    pub fn start() -> Self {
        let child = Command::new("bash")
            .args(["-c", "exec -a salt-minion-job sleep 120"])
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn fake salt job");
        // Until exec is done, /proc shows bash (whose `-c` text also says salt) and, during the
        // exec, nothing: wait for the new argv[0].
        let pid = child.id();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if cmdline.starts_with(b"salt-minion-job\0") {
                break;
            }
            assert!(Instant::now() < deadline, "exec -a did not happen");
            std::thread::yield_now();
        }
        FakeSaltJob(child)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for FakeSaltJob {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Write a job file as salt-minion does (`salt.payload.dumps` of the job data: msgpack).
pub fn write_job_file(cachedir: &Path, jid: &str, fun: &str, pid: u32) -> PathBuf {
    let proc_dir = cachedir.join("proc");
    std::fs::create_dir_all(&proc_dir).expect("proc dir");
    use rmpv::Value as M;
    let strs = |v: &[&str]| M::Array(v.iter().map(|s| M::from(*s)).collect());
    let job = M::Map(vec![
        (M::from("fun"), M::from(fun)),
        (M::from("arg"), strs(&["webserver"])),
        (M::from("tgt"), M::from("*")),
        (M::from("jid"), M::from(jid)),
        (M::from("ret"), M::from("")),
        (M::from("tgt_type"), M::from("glob")),
        (M::from("user"), M::from("root")),
        (M::from("pid"), M::from(pid)),
        (M::from("fun_args"), strs(&["webserver"])),
    ]);
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &job).expect("msgpack");
    let path = proc_dir.join(jid);
    std::fs::write(&path, bytes).expect("write job file");
    path
}
