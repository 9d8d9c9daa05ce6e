//! lameduck: a container init that runs the app as its child, forwards signals, reaps
//! zombies, and turns SIGTERM or a preStop call into a zero-downtime drain.
//!
//! `main` reads as the sequence: parse the flags, set up logging, catch signals (before the
//! app exists, so none is lost), bind the endpoints, spawn the app, supervise it, exit with
//! its status.

#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod child;
mod cli;
mod duration;
mod http;
mod install;
mod lint;
mod logging;
mod metrics;
mod phase;
mod readiness;
mod reaper;
mod sidecar;
mod signals;
mod status;
mod supervisor;
mod target;
mod timers;
mod traffic;

use std::sync::Arc;
use std::time::Duration;

use signal_hook::iterator::exfiltrator::origin::WithOrigin;
use signal_hook_tokio::SignalsInfo;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{mpsc, watch};

use crate::cli::{DrainConfig, Mode, WrapArgs};
use crate::metrics::Metrics;
use crate::phase::Phase;
use crate::signals::Rewrites;
use crate::status::Snapshot;
use crate::supervisor::Supervisor;

/// Exit code for a usage or configuration error of lameduck itself.
pub const EXIT_USAGE: i32 = 2;

fn main() {
    let cli = cli::parse();
    let code = match cli.mode {
        Some(Mode::Install { dir }) => install::run(&dir),
        Some(Mode::Lint(args)) => lint::run(&args),
        Some(Mode::Sidecar(args)) => sidecar::run(args),
        None => wrap(cli.wrap),
    };
    std::process::exit(code);
}

/// The default mode: run the app and supervise it to its end.
fn wrap(args: WrapArgs) -> i32 {
    logging::init(&args.log);
    let rewrites = Rewrites::new(&args.rewrites);
    let config = match args.drain.validate(&rewrites) {
        Ok(config) => config,
        Err(message) => return fatal(EXIT_USAGE, &message),
    };
    let quiet = match args.quiet(&config) {
        Ok(quiet) => quiet,
        Err(message) => return fatal(EXIT_USAGE, &message),
    };
    let pid1 = std::process::id() == 1;
    if !pid1 {
        // Orphans of the app are reparented to lameduck, so it can reap them as PID 1 would.
        if let Err(err) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(%err, "cannot become a subreaper; orphans of the app will not be reaped");
        }
    }
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    runtime.block_on(async move {
        let mut caught: Vec<i32> = signals::FORWARDED.iter().map(|&s| s as i32).collect();
        caught.push(nix::sys::signal::Signal::SIGCHLD as i32);
        let signals = match SignalsInfo::<WithOrigin>::new(&caught) {
            Ok(signals) => signals,
            Err(err) => return fatal(1, &format!("cannot install signal handlers: {err}")),
        };
        let listener = match bind(&config) {
            Ok(listener) => listener,
            Err(code) => return code,
        };
        let listen_port = announce(&listener, &config);
        let open_files = child::raise_open_files();
        let app = match child::spawn(&args.command, args.group, open_files) {
            Ok(app) => app,
            Err(err) => return fatal(err.exit_code, &err.message),
        };
        tracing::info!(pid = app.pid.as_raw(), pid1, "started the app");

        let (events_tx, events_rx) = mpsc::channel(64);
        let (status_tx, status_rx) =
            watch::channel(Snapshot::starting("wrapper", app.pid.as_raw()));
        let metrics = Arc::new(Metrics::default());
        tokio::spawn(http::serve(
            listener,
            http::Endpoints {
                status: status_rx,
                events: events_tx.clone(),
                config: config.clone(),
                prestop_until: Phase::Stopping,
                prestop_hold: config.shutdown_delay + Duration::from_secs(1),
                metrics: Arc::clone(&metrics),
            },
        ));
        let ready_at_start = args.ready_check.is_none();
        if let Some(check) = args.ready_check {
            tracing::info!(%check, "waiting for the app's ready check");
            let status = status_tx.subscribe();
            tokio::spawn(readiness::poll(
                check,
                args.ready_interval,
                events_tx,
                status,
            ));
        }
        let supervisor = Supervisor {
            app,
            config,
            rewrites,
            pid1,
            status: status_tx,
            metrics,
            quiet,
            listen_port,
            ready_at_start,
        };
        supervisor.run(signals, events_rx).await
    })
}

/// The single-threaded runtime every mode runs on.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, i32> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|err| fatal(1, &format!("cannot start the runtime: {err}")))
}

/// How many connections may wait to be accepted: a probe burst must not overflow the queue
/// (the default of 128 costs an overflowing client a 1s SYN retry).
const LISTEN_BACKLOG: u32 = 1024;

/// Binds the endpoints' listener; a taken port is a configuration error.
pub(crate) fn bind(config: &DrainConfig) -> Result<TcpListener, i32> {
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
pub(crate) fn announce(listener: &TcpListener, config: &DrainConfig) -> u16 {
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
pub(crate) fn say(mut stream: impl std::io::Write, line: std::fmt::Arguments<'_>) {
    let _ = writeln!(stream, "{line}");
}

/// Logs one line and returns the exit code to leave with.
pub(crate) fn fatal(code: i32, message: &str) -> i32 {
    tracing::error!("{message}");
    code
}
