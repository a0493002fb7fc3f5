//! Shared helpers for integration tests.
#![allow(dead_code)]
pub mod beacond;
pub mod bounded;
pub mod faults;
pub mod fleet_keys;
pub mod netns;
pub mod receivers;
pub mod salt;
pub mod salt_job;
pub mod sink;
