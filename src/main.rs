//! lameduck: a container init that runs the app as its child, forwards signals, reaps
//! zombies, and turns SIGTERM or a preStop call into a zero-downtime drain.
//!
//! `main` reads as the sequence: parse the flags, set up logging, catch signals (before the
//! app exists, so none is lost), bind the endpoints, spawn the app, supervise it, exit with
//! its status.

mod child;
mod cli;
mod duration;
mod http;
mod install;
mod logging;
mod phase;
mod readiness;
mod reaper;
mod sidecar;
mod signals;
mod status;
mod supervisor;
mod target;
mod timers;

use signal_hook::iterator::exfiltrator::origin::WithOrigin;
use signal_hook_tokio::SignalsInfo;
use tokio::sync::{mpsc, watch};

use crate::cli::{Mode, WrapArgs};
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
    let pid1 = std::process::id() == 1;
    if !pid1 {
        // Orphans of the app are reparented to lameduck, so it can reap them as PID 1 would.
        if let Err(err) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(%err, "cannot become a subreaper; orphans of the app will not be reaped");
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fatal(1, &format!("cannot start the runtime: {err}")),
    };
    runtime.block_on(async move {
        let mut caught: Vec<i32> = signals::FORWARDED.iter().map(|&s| s as i32).collect();
        caught.push(nix::sys::signal::Signal::SIGCHLD as i32);
        let signals = match SignalsInfo::<WithOrigin>::new(&caught) {
            Ok(signals) => signals,
            Err(err) => return fatal(1, &format!("cannot install signal handlers: {err}")),
        };
        let listener = match tokio::net::TcpListener::bind(config.listen).await {
            Ok(listener) => listener,
            Err(err) => {
                return fatal(
                    EXIT_USAGE,
                    &format!("cannot listen on {}: {err}", config.listen),
                );
            }
        };
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "endpoints listening");
        }
        let app = match child::spawn(&args.command, args.group) {
            Ok(app) => app,
            Err(err) => return fatal(err.exit_code, &err.message),
        };
        tracing::info!(pid = app.pid.as_raw(), pid1, "started the app");

        let (events_tx, events_rx) = mpsc::channel(64);
        let (status_tx, status_rx) =
            watch::channel(Snapshot::starting("wrapper", app.pid.as_raw()));
        tokio::spawn(http::serve(
            listener,
            http::Endpoints {
                status: status_rx,
                events: events_tx.clone(),
                config: config.clone(),
                prestop_until: Phase::Stopping,
                prestop_hold: config.shutdown_delay + std::time::Duration::from_secs(1),
            },
        ));
        match args.ready_check {
            Some(check) => {
                tracing::info!(%check, "waiting for the app's ready check");
                tokio::spawn(readiness::poll(check, args.ready_interval, events_tx));
            }
            None => {
                let _ = events_tx.send(phase::Event::AppReady(true)).await;
            }
        }
        let supervisor = Supervisor {
            app,
            config,
            rewrites,
            pid1,
            status: status_tx,
        };
        supervisor.run(signals, events_rx).await
    })
}

/// Logs one line and returns the exit code to leave with.
pub(crate) fn fatal(code: i32, message: &str) -> i32 {
    tracing::error!("{message}");
    code
}
