//! lameduck: a container init that runs the app as its child, forwards signals, reaps
//! zombies, and turns SIGTERM or a preStop call into a zero-downtime drain.
//!
//! # Layout
//! - `cli` holds the clap definition of every flag; `duration`, `signals` and `readiness`
//!   hold the value parsers it uses. The `kubectl-lameduck` plugin reads a container's
//!   lameduck flags through this same definition.
//! - `phase` is the shutdown state machine (`step`, pure); `supervisor` runs it for the
//!   wrapper, `sidecar` for the sidecar; `timers`, `traffic` and `readiness` feed it events.
//! - `child`, `reaper` and `target` own the app's process: spawning, `waitpid`, signalling.
//! - `http`, `status` and `metrics` publish the phase on `/readyz`, `/livez`, `/status`,
//!   `/metrics` and take `/prestop`.
//! - `install` copies the binary into an init container's volume; `logging` sets up tracing.

#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod child;
pub mod cli;
pub mod duration;
pub mod http;
pub mod install;
pub mod logging;
pub mod metrics;
pub mod phase;
pub mod readiness;
pub mod reaper;
pub mod sidecar;
pub mod signals;
pub mod status;
pub mod supervisor;
pub mod target;
pub mod timers;
pub mod traffic;

use tokio::net::{TcpListener, TcpSocket};

use crate::cli::DrainConfig;

/// Exit code for a usage or configuration error of lameduck itself.
pub const EXIT_USAGE: i32 = 2;

/// The single-threaded runtime every mode runs on.
pub fn runtime() -> Result<tokio::runtime::Runtime, i32> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| fatal(1, &format!("cannot start the runtime: {err}")))
}

/// How many connections may wait to be accepted: a probe burst must not overflow the queue
/// (the default of 128 costs an overflowing client a 1s SYN retry).
const LISTEN_BACKLOG: u32 = 1024;

/// Binds the endpoints' listener; a taken port is a configuration error.
pub fn bind(config: &DrainConfig) -> Result<TcpListener, i32> {
    let addr = config.listen;
    let listen = || {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    listen().map_err(|err| fatal(EXIT_USAGE, &format!("cannot listen on {addr}: {err}")))
}

/// Logs where the endpoints listen, and who can start a drain; returns the port.
pub fn announce(listener: &TcpListener, config: &DrainConfig) -> u16 {
    let Ok(addr) = listener.local_addr() else {
        return config.listen.port();
    };
    tracing::info!(%addr, "endpoints listening");
    if config.prestop_token.is_none() {
        tracing::warn!(%addr, "/prestop has no --prestop-token: anyone who can reach this address can start a drain");
    }
    addr.port()
}

/// Writes one line to stdout or stderr. Unlike println!, it never panics when the stream is closed.
pub fn say(mut stream: impl std::io::Write, line: std::fmt::Arguments<'_>) {
    let _ = writeln!(stream, "{line}");
}

/// Logs one line and returns the exit code to leave with.
pub fn fatal(code: i32, message: &str) -> i32 {
    tracing::error!("{message}");
    code
}
