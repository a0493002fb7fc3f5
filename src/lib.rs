//! beacond: Salt's beacons as one small agent.
pub mod agent;
pub mod beacons;
pub mod calendar;
pub mod cli;
pub mod config;
pub mod event;
pub mod output;
pub mod scheduler;
pub mod sources;
pub mod spool;
pub mod state_run;
pub mod systemd;
pub mod transport;
