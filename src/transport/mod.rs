//! Where events go: a real salt-master.
pub mod salt;
pub mod sinks;
