//! Shared helpers for integration tests.
#![allow(dead_code)]
pub mod beacond;
pub mod bounded;
pub mod faults;
pub mod netns;
pub mod salt;
pub mod sink;
