//! Salt YAML → typed beacon configs, with precise errors.
pub mod minion;
