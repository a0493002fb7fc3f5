//! Network namespaces for tests that change links and open sockets without touching the host:
//! beacond runs inside with `Agent::start_in(&ns.exec_prefix(), ...)`.

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

static NS_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A network namespace with a veth pair `v0`/`v1`; deleted on drop, even when a test fails.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new() -> Netns {
        let name = format!(
            "bcd{}-{}",
            std::process::id(),
            NS_COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "add", "v0", "type", "veth", "peer", "name", "v1"]);
        ns
    }

    /// `ip -n <ns> ARGS`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        sh(&all);
    }

    /// The command prefix that runs a program inside the namespace.
    pub fn exec_prefix(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Run a command that must succeed.
pub fn sh(args: &[&str]) {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .expect("run command");
    assert!(st.success(), "{args:?} failed");
}
