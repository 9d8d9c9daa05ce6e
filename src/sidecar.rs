//! `lameduck sidecar`: drains an app that runs in another container of the same pod (a stock
//! nginx) from beside it. Its `/prestop`, called by the app container's preStop hook, runs the
//! whole drain inside the hook: readiness fails, the shutdown delay passes, the app gets its
//! stop signal through a pidfd, and the answer comes once the app has exited. Without a shared
//! process namespace only the delay is possible, and the sidecar says so.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use signal_hook_tokio::Signals;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::cli::SidecarArgs;
use crate::exit::Fatal;
use crate::hooks::{HeldCount, Hooks};
use crate::logging;
use crate::metrics::Metrics;
use crate::phase::{self, Action, Event, Phase};
use crate::proxy::{self, Proxy};
use crate::settings::DrainConfig;
use crate::signals::{Rewrites, short_name};
use crate::status::{self, Snapshot, log_stop_signal_sent};
use crate::target::{Selector, Target};
use crate::timers::{Timers, at};

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
    // A blocked SIGTERM would never reach the sidecar; it has no app to pass ignored signals to.
    crate::signals::take_over();
    crate::runtime()?.block_on(async move {
        let signals = Signals::new([Signal::SIGTERM as i32, Signal::SIGINT as i32])
            .map_err(|err| Fatal::failed(format!("cannot install signal handlers: {err}")))?;
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
        let code = Sidecar {
            config,
            selector,
            status: status_tx,
            target: None,
            timers: Timers::default(),
            metrics,
            proxy,
        }
        .run(signals, events_rx)
        .await;
        Ok(code)
    })
}

struct Sidecar {
    config: DrainConfig,
    selector: Option<Selector>,
    status: watch::Sender<Snapshot>,
    target: Option<Target>,
    timers: Timers,
    metrics: Arc<Metrics>,
    proxy: Option<Proxy>,
}

impl Sidecar {
    async fn run(mut self, mut signals: Signals, mut events: mpsc::Receiver<Event>) -> i32 {
        use futures_core::Stream;
        let started = Instant::now();
        let mut phase = Phase::Starting;
        let mut exit_when_done = false;
        let mut find_timer = tokio::time::interval(FIND_INTERVAL);
        let mut missing_since = None;
        if self.selector.is_none() {
            self.enter(Phase::Ready, Event::AppReady(true), started);
            phase = Phase::Ready;
        }
        loop {
            let looking =
                self.target.is_none() && self.selector.is_some() && phase < Phase::Draining;
            let event = tokio::select! {
                signal = std::future::poll_fn(|cx| std::pin::Pin::new(&mut signals).poll_next(cx)) => {
                    let name = signal.and_then(|s| Signal::try_from(s).ok()).map_or("?", short_name);
                    if self.drained(phase) || (phase < Phase::Draining && self.target.is_none()) {
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
                () = at(self.timers.delay_ends) => {
                    self.timers.delay_ends = None;
                    Event::DelayElapsed
                }
                tally = proxy::drained(self.proxy.as_ref(), self.timers.drain_started, self.config.min_delay), if phase == Phase::Draining => {
                    status::log_proxy_drained(&tally, &self.config);
                    Event::ProxyDrained
                }
                () = at(self.timers.kill_at) => {
                    self.timers.kill_at = None;
                    Event::DrainTimeout
                }
                () = exited(self.target.as_ref()) => {
                    tracing::info!(pid = self.target.as_ref().map_or(0, |t| t.pid), "the app has exited");
                    self.target = None;
                    Event::AppExited(0)
                }
                _ = find_timer.tick(), if looking => match self.find(&mut missing_since) {
                    Some(event) => event,
                    None => continue,
                },
            };
            let (next, action) = phase::step(phase, event);
            if next != phase {
                self.enter(next, event, started);
                phase = next;
            }
            match action {
                Some(Action::StartDelay) => {
                    self.timers.start_delay(&self.config);
                    self.begin_drain();
                    status::delay_started(&self.status, &self.config);
                }
                Some(Action::SendStopSignal | Action::CutDelay(_)) => self.send_stop_signal(),
                Some(Action::KillAll) => self.kill(),
                Some(Action::Absorbed) => tracing::info!("drain already under way"),
                Some(Action::Forward(_) | Action::Exit(_) | Action::KeepDelay) | None => {}
            }
            if exit_when_done && self.drained(phase) {
                tracing::info!("drain finished; exiting");
                return 0;
            }
            // An app that exits without a drain (a crash, a restart) gets a fresh cycle.
            if phase == Phase::Exited && self.timers.drain_started.is_none() {
                self.enter(Phase::Starting, Event::AppReady(false), started);
                phase = Phase::Starting;
            }
        }
    }

    /// Whether the drain is over: the app has exited, or, with no app in sight, the delay is served.
    fn drained(&self, phase: Phase) -> bool {
        phase == Phase::Exited || (self.selector.is_none() && phase >= Phase::Stopping)
    }

    /// Enters phase `next` because of `event`, publishing and logging it.
    fn enter(&mut self, next: Phase, event: Event, started: Instant) {
        // The last target's pid stays in the snapshot after it exits, for the log and /status.
        if let Some(pid) = self.target.as_ref().map(|t| t.pid) {
            self.status.send_modify(|snapshot| snapshot.app_pid = pid);
        }
        status::enter(&self.status, &self.config, next);
        status::log_change(
            &self.status,
            event,
            next,
            self.timers.drain_started.unwrap_or(started),
        );
    }

    /// Looks for the target. `missing` is when the search began and whether it was warned about.
    fn find(&mut self, missing: &mut Option<(Instant, bool)>) -> Option<Event> {
        let selector = self.selector.as_ref()?;
        match selector.find() {
            Ok(target) => {
                tracing::info!(pid = target.pid, %selector, "found the app");
                *missing = None;
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

    /// The drain signal to the app, if any, and the proxy's switch to closing connections.
    fn begin_drain(&self) {
        if let (Some(signal), Some(target)) = (self.config.drain_signal, &self.target) {
            match target.signal(signal) {
                Ok(()) => {
                    tracing::info!(signal = %short_name(signal), "sent the app its drain signal")
                }
                Err(err) => {
                    tracing::warn!(signal = %short_name(signal), %err, "could not send the drain signal")
                }
            }
        }
        if let Some(proxy) = &self.proxy {
            proxy.drain();
        }
    }

    fn send_stop_signal(&mut self) {
        let signal = self.config.stop_signal;
        match &self.target {
            Some(target) => {
                let left = self.timers.start_drain_timeout(&self.config);
                match target.signal(signal) {
                    Ok(()) => log_stop_signal_sent(signal, left),
                    Err(err) => {
                        tracing::warn!(signal = %short_name(signal), %err, "could not send the stop signal")
                    }
                }
            }
            None => {
                self.timers.delay_ends = None;
                tracing::info!("shutdown delay served; the kubelet's stop signal stops the app");
            }
        }
    }

    fn kill(&self) {
        let Some(target) = &self.target else { return };
        let group = target.led_group();
        let result = match group {
            Some(pgid) => {
                nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            }
            None => target.signal(Signal::SIGKILL),
        };
        self.metrics.forced_kills.inc();
        match result {
            Ok(()) => tracing::warn!(
                pid = target.pid,
                process_group = group.is_some(),
                "drain timeout ran out; sent SIGKILL to the app"
            ),
            Err(err) => {
                tracing::warn!(pid = target.pid, %err, "drain timeout ran out; SIGKILL failed")
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
