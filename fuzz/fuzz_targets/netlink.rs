//! Netlink datagrams as beacond's sources and beacons parse them: message framing and route
//! attributes (`sources::netlink`), the rtnetlink link/address/neighbour model of
//! `network_settings`, `sock_diag` answers (`listening_ports::diag_socket`) and proc connector
//! events (`sources::proc_connector::parse`). Never a panic. The seed corpus holds real dumps
//! received from this kernel (see fuzz/README.md).
#![no_main]
use beacond::beacons::{listening_ports, network_settings};
use beacond::sources::{netlink, proc_connector};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for (ty, payload) in netlink::messages(data) {
        for (_, d) in netlink::attributes(payload, 16) {
            let _ = (netlink::as_string(d), netlink::as_ip(d), netlink::as_mac(d));
            let _ = (netlink::as_u32(d), netlink::as_u8(d));
        }
        if ty == 20 {
            for proto in ["tcp", "tcp6", "udp", "udp6"] {
                let _ = listening_ports::diag_socket(proto, payload);
            }
        }
    }
    let _ = network_settings::interfaces_from_netlink(data, true);
    let mut events = Vec::new();
    let mut seqs = proc_connector::Sequences::default();
    proc_connector::parse(data, &mut events, &mut seqs);
    proc_connector::parse(data, &mut events, &mut seqs);
});
