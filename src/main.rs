//! The `lameduck` binary: parses the flags and runs the chosen mode (see the library's docs
//! for the layout). `wrap` reads as the sequence: set up logging, validate, catch signals
//! (before the app exists, so none is lost), bind the endpoints, spawn the app, supervise it,
//! exit with its status. A step that cannot go on returns a `Fatal` (exit code and message),
//! which `main` logs before it exits with that code.

#![deny(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use lameduck::cli::{self, Mode, WrapArgs};
use lameduck::exit::{EXIT_USAGE, Fatal, say};
use lameduck::hooks::{HeldCount, Hooks};
use lameduck::metrics::Metrics;
use lameduck::phase::Phase;
use lameduck::proxy::Proxy;
use lameduck::signals::{self, Rewrites};
use lameduck::status::Snapshot;
use lameduck::supervisor::Supervisor;

fn main() {
    let cli = cli::parse();
    let ended = match cli.mode {
        Some(Mode::Install { dir }) => Ok(lameduck::install::run(&dir)),
        Some(Mode::Prestop(args)) => Ok(lameduck::prestop::run(args)),
        Some(Mode::Lint { .. }) => Ok(lint_moved()),
        Some(Mode::Sidecar(args)) => lameduck::sidecar::run(args),
        None => wrap(cli.wrap),
    };
    std::process::exit(ended.unwrap_or_else(Fatal::report));
}

/// The default mode: run the app and supervise it to its end.
fn wrap(args: WrapArgs) -> Result<i32, Fatal> {
    lameduck::logging::init(&args.log);
    let rewrites = Rewrites::new(&args.rewrites);
    let config = args.drain.validate(&rewrites).map_err(Fatal::usage)?;
    let quiet = args.quiet.validate(&config).map_err(Fatal::usage)?;
    let caught = signals::Caught::wrapper();
    let ignored = signals::take_over(&caught);
    if ignored.contains(config.stop_signal) {
        tracing::warn!(signal = %signals::short_name(config.stop_signal), "the stop signal was ignored when lameduck started, so the app ignores it too and will be killed at the drain timeout");
    }
    let pid1 = std::process::id() == 1;
    if !pid1 {
        // Orphans of the app are reparented to lameduck, so it can reap them as PID 1 would.
        if let Err(err) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(%err, "cannot become a subreaper; orphans of the app will not be reaped");
        }
    }
    lameduck::runtime()?.block_on(async move {
        let signals = signals::catch(&caught)
            .map_err(|err| Fatal::failed(format!("cannot catch signals: {err}")))?;
        // Before the proxy starts: its connection cap follows the raised limit.
        let open_files = lameduck::child::raise_open_files();
        let listener = lameduck::http::bind(&config)?;
        let listen_port = lameduck::http::announce(&listener, &config);
        let proxy = Proxy::start(&config.proxy, config.proxy_forwarded).map_err(Fatal::usage)?;
        let hook_socket = lameduck::http::bind_prestop(&config, listen_port)?;
        let app = lameduck::child::spawn(&args.command, args.group, open_files, ignored)?;
        tracing::info!(pid = app.pid.as_raw(), pid1, "started the app");

        let (events_tx, events_rx) = mpsc::channel(64);
        let mut snapshot = Snapshot::starting("wrapper", app.pid.as_raw());
        snapshot.proxy = proxy.as_ref().map(Proxy::tally);
        let (status_tx, status_rx) = watch::channel(snapshot);
        let metrics = Arc::new(Metrics::default());
        let hooks = Hooks {
            status: status_rx.clone(),
            events: events_tx.clone(),
            until: Phase::Stopping,
            hold: config.shutdown_delay + Duration::from_secs(1),
            held: HeldCount::default(),
        };
        let held_hooks = hooks.held.clone();
        tokio::spawn(lameduck::prestop::serve(hook_socket, hooks.clone()));
        tokio::spawn(lameduck::http::serve(
            listener,
            lameduck::http::Endpoints {
                status: status_rx,
                config: config.clone(),
                hooks,
                metrics: Arc::clone(&metrics),
            },
        ));
        let ready_at_start = args.ready_check.is_none();
        if let Some(check) = args.ready_check {
            tracing::info!(%check, "waiting for the app's ready check");
            let status = status_tx.subscribe();
            tokio::spawn(lameduck::readiness::poll(
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
            proxy,
            held_hooks,
        };
        Ok(supervisor.run(signals, events_rx).await)
    })
}

/// `lameduck lint` moved to the cluster-side tool; say where, and exit as on a usage error.
fn lint_moved() -> i32 {
    say(
        std::io::stderr(),
        format_args!(
            "lameduck: lint moved to the kubectl plugin: run 'kubectl lameduck lint FILE...'"
        ),
    );
    EXIT_USAGE
}
