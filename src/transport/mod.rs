//! Where events go: a real salt-master.
pub mod salt;
