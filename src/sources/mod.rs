//! The OS's event sources and readers, shared by the beacons: each OS interface once. Beacons
//! import from here, never from each other.

pub mod attribution;
pub mod dbus;
pub mod ebpf;
pub mod fswatch;
pub mod journal;
pub mod netlink;
pub mod proc_connector;
pub mod procfs;
pub mod reader_thread;
pub mod utmp;
