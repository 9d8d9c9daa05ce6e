//! Helpers the plugin's integration tests and benchmarks share.

pub mod webhook;
