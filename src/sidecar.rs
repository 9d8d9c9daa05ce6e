//! `lameduck sidecar`: drains an app that runs in another container of the same pod (a stock
//! nginx) from beside it. Its `/prestop`, called by the app container's preStop hook, runs the
//! whole drain inside the hook: readiness fails, the shutdown delay passes, the app gets its
//! stop signal through a pidfd, and the answer comes once the app has exited. Without a shared
//! process namespace only the delay is possible, and the sidecar says so. The drain itself is
//! the wrapper's engine (`engine`), with the found process as its target: this module finds
//! that process, notices when it exits, and decides when the sidecar itself may leave.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::cli::SidecarArgs;
use crate::engine::{self, Engine};
use crate::exit::Fatal;
use crate::hooks::{HeldCount, Hooks};
use crate::logging;
use crate::metrics::Metrics;
use crate::phase::{Event, Phase};
use crate::proxy::Proxy;
use crate::signals::{self, Caught, Intake, Rewrites, short_name};
use crate::status::Snapshot;
use crate::target::{Selector, Target};

/// How often the sidecar looks for its target while it has none.
const FIND_INTERVAL: Duration = Duration::from_secs(1);
/// How long the target may take to appear before the sidecar warns.
const MISSING_WARNING: Duration = Duration::from_secs(30);

/// Runs the sidecar until its own SIGTERM or SIGINT (after any drain under way has finished).
pub fn run(args: SidecarArgs) -> Result<i32, Fatal> {
    logging::init(&args.log);
    let config = args
        .drain
        .validate(&Rewrites::default())
        .map_err(Fatal::usage)?;
    let quiet = args.quiet.validate(&config).map_err(Fatal::usage)?;
    let selector = match (args.pid_file, args.process_name) {
        (Some(path), _) => Some(Selector::PidFile(path)),
        (None, Some(name)) => Some(Selector::ProcessName(name)),
        (None, None) => None,
    };
    // In a pod with shareProcessNamespace the pause container is PID 1; being PID 1 means the
    // app's processes are out of sight.
    let selector = match selector {
        Some(selector) if std::process::id() == 1 => {
            tracing::warn!(%selector, "lameduck is PID 1 of its container, so the pod does not share its process namespace: /prestop can only wait out the shutdown delay; set shareProcessNamespace: true to let it stop the app");
            None
        }
        Some(selector) => Some(selector),
        None => {
            tracing::warn!(
                "no --pid-file or --process-name: /prestop only waits out the shutdown delay and the kubelet's stop signal stops the app"
            );
            None
        }
    };
    // It has no app to pass ignored signals to.
    let caught = Caught::sidecar();
    signals::take_over(&caught);
    crate::runtime()?.block_on(async move {
        let signals = signals::catch(&caught)
            .map_err(|err| Fatal::failed(format!("cannot catch signals: {err}")))?;
        crate::child::raise_open_files();
        let listener = crate::http::bind(&config)?;
        let listen_port = crate::http::announce(&listener, &config);
        let hook_socket = crate::http::bind_prestop(&config, listen_port)?;
        let proxy = Proxy::start(&config.proxy, config.proxy_forwarded).map_err(Fatal::usage)?;
        let mode = if selector.is_some() {
            "sidecar"
        } else {
            "sidecar (delay only)"
        };
        let (events_tx, events_rx) = mpsc::channel(64);
        let mut snapshot = Snapshot::starting(mode, 0);
        snapshot.proxy = proxy.as_ref().map(Proxy::tally);
        let (status_tx, status_rx) = watch::channel(snapshot);
        let metrics = Arc::new(Metrics::default());
        let hooks = Hooks {
            status: status_rx.clone(),
            events: events_tx,
            until: if selector.is_some() {
                Phase::Exited
            } else {
                Phase::Stopping
            },
            hold: config.shutdown_delay + config.drain_timeout + Duration::from_secs(1),
            held: HeldCount::default(),
        };
        tokio::spawn(crate::prestop::serve(hook_socket, hooks.clone()));
        tokio::spawn(crate::http::serve(
            listener,
            crate::http::Endpoints {
                status: status_rx,
                config: config.clone(),
                hooks,
                metrics: Arc::clone(&metrics),
            },
        ));
        let engine = Engine::new(
            config,
            Rewrites::default(),
            status_tx.clone(),
            Arc::clone(&metrics),
            quiet,
            listen_port,
            proxy,
        );
        let code = Sidecar {
            selector,
            status: status_tx,
            target: None,
            engine,
        }
        .run(signals, events_rx)
        .await;
        Ok(code)
    })
}

struct Sidecar {
    selector: Option<Selector>,
    status: watch::Sender<Snapshot>,
    target: Option<Target>,
    engine: Engine,
}

impl Sidecar {
    async fn run(mut self, mut signals: Intake, mut events: mpsc::Receiver<Event>) -> i32 {
        let mut exit_when_done = false;
        let mut find_timer = tokio::time::interval(FIND_INTERVAL);
        let mut missing_since = None;
        if self.selector.is_none() {
            // No app to find: ready for the only thing it can do, waiting out the delay.
            self.engine.handle(Event::AppReady(true), None);
        }
        loop {
            let phase = self.engine.phase();
            let looking =
                self.target.is_none() && self.selector.is_some() && phase < Phase::Draining;
            let event = tokio::select! {
                received = signals.next() => {
                    let name = received.ok().and_then(|r| Signal::try_from(r.number).ok()).map_or("?", short_name);
                    if self.drained() || (phase < Phase::Draining && self.target.is_none()) {
                        tracing::info!(signal = name, "no drain under way; exiting");
                        return 0;
                    }
                    tracing::info!(signal = name, "finishing the drain before exiting");
                    exit_when_done = true;
                    if phase >= Phase::Draining {
                        continue;
                    }
                    // A sidecar stopped before the app (an ordinary container, not a native
                    // sidecar) drains the app itself rather than leave it to be cut off.
                    Event::PreStop
                }
                Some(event) = events.recv() => event,
                event = self.engine.deadline() => event,
                () = exited(self.target.as_ref()) => {
                    tracing::info!(pid = self.target.as_ref().map_or(0, |t| t.pid), "the app has exited");
                    self.target = None;
                    Event::AppGone
                }
                _ = find_timer.tick(), if looking => match self.find(&mut missing_since) {
                    Some(event) => event,
                    None => continue,
                },
                () = self.engine.next_look(), if self.engine.watching() => match self.engine.watch_traffic() {
                    Some(event) => event,
                    None => continue,
                },
            };
            let target = self.target.as_ref().map(|t| t as &dyn engine::Target);
            self.engine.handle(event, target);
            if exit_when_done && self.drained() {
                tracing::info!("drain finished; exiting");
                return 0;
            }
        }
    }

    /// Whether the drain is over: the app has exited, or, with no app in sight, the delay is served.
    fn drained(&self) -> bool {
        let phase = self.engine.phase();
        phase == Phase::Exited || (self.selector.is_none() && phase >= Phase::Stopping)
    }

    /// Looks for the target. `missing` is when the search began and whether it was warned about.
    fn find(&mut self, missing: &mut Option<(Instant, bool)>) -> Option<Event> {
        let selector = self.selector.as_ref()?;
        match selector.find() {
            Ok(target) => {
                tracing::info!(pid = target.pid, %selector, "found the app");
                *missing = None;
                // The last target's pid stays in the snapshot after it exits, for /status.
                self.status
                    .send_modify(|snapshot| snapshot.app_pid = target.pid);
                self.target = Some(target);
                Some(Event::AppReady(true))
            }
            Err(reason) => {
                // A native sidecar starts before the app: a short wait is normal, a long one is not.
                match missing {
                    None => {
                        tracing::info!(%selector, %reason, "waiting for the app to start; looking every second");
                        *missing = Some((Instant::now(), false));
                    }
                    Some((since, warned)) if !*warned && since.elapsed() >= MISSING_WARNING => {
                        tracing::warn!(%selector, %reason, waited_s = since.elapsed().as_secs(), "still cannot find the app");
                        *warned = true;
                    }
                    Some(_) => {}
                }
                None
            }
        }
    }
}

/// Completes when the target exits, or never without one.
async fn exited(target: Option<&Target>) {
    match target {
        Some(target) => target.exited().await,
        None => std::future::pending().await,
    }
}
