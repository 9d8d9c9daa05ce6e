//! lameduck: a container init that runs the app as its child, forwards signals, reaps
//! zombies, and turns SIGTERM or a preStop call into a zero-downtime drain.
//!
//! # Layout (each module imports only those above it in this list; tests/modules.rs checks it)
//! - `exit` (exit codes, the typed `Fatal` error), `duration` and `signals` (value parsers),
//!   and `settings` (validated settings: `DrainConfig`, `ReadyCheck`, ...) are leaves.
//! - `cli` holds the clap definition of every flag and validates flags into `settings`. The
//!   `kubectl-lameduck` plugin reads a container's lameduck flags through this same
//!   definition (`cli::parse_from`).
//! - `phase` is the shutdown state machine (`step`, pure); `engine` is the one drain engine
//!   that runs it and carries out its actions on a `Target`; `supervisor` (the wrapper, whose
//!   target is its child) and `sidecar` (whose target is another container's process) feed it
//!   events, as do `timers`, `traffic` and `readiness`.
//! - `child`, `reaper` and `target` own the app's process: spawning, `waitpid`, signalling.
//! - `http`, `status` and `metrics` publish the phase on `/readyz`, `/livez`, `/status`,
//!   `/metrics` and take `/prestop`; `prestop` is the in-pod hook (its socket and the
//!   `lameduck prestop` client); `hooks` holds every hook call until its answer.
//! - `net` opens every listener; `proxy` forwards the pod's traffic to the app and closes its
//!   connections gracefully during the drain (`--proxy`).
//! - `install` copies the binary into an init container's volume; `logging` sets up tracing.

#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod child;
pub mod cli;
pub mod duration;
pub mod engine;
pub mod exit;
pub mod hooks;
pub mod http;
pub mod install;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod phase;
pub mod prestop;
pub mod proxy;
pub mod readiness;
pub mod reaper;
pub mod settings;
pub mod sidecar;
pub mod signals;
pub mod status;
pub mod supervisor;
pub mod target;
pub mod timers;
pub mod traffic;

use crate::exit::Fatal;

/// The single-threaded runtime every mode runs on.
pub fn runtime() -> Result<tokio::runtime::Runtime, Fatal> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| Fatal::failed(format!("cannot start the runtime: {err}")))
}
