//! beacond: Salt's beacons as one small agent.
pub mod config;
pub mod event;
pub mod transport;
