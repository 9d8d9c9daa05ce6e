//! The wrapper's event loop: turns signals, reaped children, HTTP calls, timers and the traffic
//! watch into `Event`s for the drain engine (`engine`), whose target is the child, and clears
//! what the app left behind once it has exited.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::child::App;
use crate::engine::{self, Engine, Target};
use crate::hooks::HeldCount;
use crate::metrics::Metrics;
use crate::phase::{Event, Hook};
use crate::proxy::Proxy;
use crate::reaper;
use crate::settings::{DrainConfig, QuietConfig};
use crate::signals::{self, Intake, Received, Rewrites, short_name};
use crate::status::Snapshot;

/// How long what the app left behind gets between SIGTERM and SIGKILL once the app has exited.
const LEFTOVER_GRACE: Duration = Duration::from_secs(2);
/// A periodic reap in case a SIGCHLD was coalesced or missed.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Everything the supervisor needs to run one app to its end.
pub struct Supervisor {
    /// The app being supervised.
    pub app: App,
    /// The drain settings.
    pub config: DrainConfig,
    /// How forwarded signals are rewritten.
    pub rewrites: Rewrites,
    /// Whether lameduck is PID 1 of its namespace.
    pub pid1: bool,
    /// Where the snapshot is published.
    pub status: watch::Sender<Snapshot>,
    /// The counters /metrics reports.
    pub metrics: Arc<Metrics>,
    /// The adaptive delay, when `--quiet-period` is set.
    pub quiet: Option<QuietConfig>,
    /// The port lameduck's own endpoints listen on, never counted as the app's.
    pub listen_port: u16,
    /// Whether the app counts as ready from the start (there is no ready check).
    pub ready_at_start: bool,
    /// The drain proxy, with `--proxy`.
    pub proxy: Option<Proxy>,
    /// The preStop hook calls waiting for their answer.
    pub held_hooks: HeldCount,
}

/// The wrapper's target: its child, and what it leaves in lameduck's PID namespace (as PID 1)
/// or in its process group (as a subreaper).
struct Child {
    app: App,
    pid1: bool,
}

impl Target for Child {
    fn signal(&self, signal: Signal) -> std::io::Result<()> {
        self.app.signal(signal).map_err(std::io::Error::from)
    }

    fn kill_what_is_left(&self) -> std::io::Result<Vec<i32>> {
        let pids = self.app.leftovers(self.pid1);
        self.app.signal_everything(Signal::SIGKILL, self.pid1);
        Ok(pids)
    }

    fn processes(&self) -> Vec<i32> {
        self.app.leftovers(self.pid1)
    }
}

impl Supervisor {
    /// Runs until the app has exited and nothing it left is alive; returns lameduck's exit code.
    pub async fn run(mut self, mut signals: Intake, mut events: mpsc::Receiver<Event>) -> i32 {
        let child = Child {
            app: self.app,
            pid1: self.pid1,
        };
        let mut engine = Engine::new(
            self.config.clone(),
            self.rewrites.clone(),
            self.status.clone(),
            Arc::clone(&self.metrics),
            self.quiet.clone(),
            self.listen_port,
            self.proxy.take(),
        );
        if self.ready_at_start {
            // Before the first event: a SIGTERM right after start must find the app Ready.
            engine.handle(Event::AppReady(true), Some(&child));
        }
        let mut sweep_timer = tokio::time::interval(SWEEP_INTERVAL);
        sweep_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let code = loop {
            let event = tokio::select! {
                received = signals.next() => match self.signal_event(received) {
                    // What a shutdown signal means depends on what started the drain.
                    Some(Event::Shutdown(signal, _)) => Event::Shutdown(
                        signal,
                        self.held_hooks.at_signal(engine.started_by_hook()).await,
                    ),
                    Some(event) => event,
                    None => continue,
                },
                Some(event) = events.recv() => event,
                event = engine.deadline() => event,
                _ = sweep_timer.tick() => match reaper::sweep(self.app.pid).app_status {
                    Some(status) => Event::AppExited(status),
                    None => continue,
                },
                // The watch says when it next needs a tick, or a look that may end the wait.
                () = engine.next_look(), if engine.watching() => match engine.watch_traffic() {
                    Some(event) => event,
                    None => continue,
                },
            };
            if let Some(code) = engine.handle(event, Some(&child)) {
                break code;
            }
        };
        self.clear_leftovers(&mut signals).await;
        self.held_hooks.settle().await;
        code
    }

    /// Turns one delivered signal into an event: SIGCHLD becomes a reap, a SIGPIPE that
    /// lameduck's own write raised is dropped, a real-time signal is forwarded at once (it
    /// never starts a drain, so no phase changes what happens to it), everything else is
    /// reported as received.
    fn signal_event(&self, received: std::io::Result<Received>) -> Option<Event> {
        let received = match received {
            Ok(received) => received,
            Err(err) => {
                tracing::warn!(%err, "cannot read a caught signal");
                return None;
            }
        };
        let Ok(signal) = Signal::try_from(received.number) else {
            self.forward_realtime(received.number);
            return None;
        };
        if signal == Signal::SIGCHLD {
            return reaper::sweep(self.app.pid).app_status.map(Event::AppExited);
        }
        if signal == Signal::SIGPIPE && received.raised_by_self() {
            return None;
        }
        tracing::debug!(signal = %short_name(signal), from = received.sender, "received signal");
        if signals::starts_drain(signal, self.config.stop_signal) {
            Some(Event::Shutdown(signal, Hook::NotCalled))
        } else {
            Some(Event::Signal(signal))
        }
    }

    /// Passes real-time signal `number` on to the app, unchanged (`--rewrite` takes 1..=31).
    fn forward_realtime(&self, number: i32) {
        let Some(name) = signals::realtime_name(number) else {
            return;
        };
        self.metrics
            .signals_forwarded
            .get_or_create(&vec![("signal", name)])
            .inc();
        match self.app.signal_realtime(number) {
            Ok(()) => tracing::debug!(signal = name, "forwarded signal"),
            Err(err) => tracing::warn!(signal = name, %err, "could not forward signal"),
        }
    }

    /// After the app has exited: SIGTERM whatever it left behind, SIGKILL it after a short
    /// grace, and reap it all, so no process of the app outlives lameduck.
    async fn clear_leftovers(&self, signals: &mut Intake) {
        if reaper::sweep(self.app.pid).no_children {
            return;
        }
        for (signal, grace) in [
            (Signal::SIGTERM, LEFTOVER_GRACE),
            (Signal::SIGKILL, LEFTOVER_GRACE),
        ] {
            let pids = self.app.leftovers(self.pid1);
            self.app.signal_everything(signal, self.pid1);
            tracing::info!(signal = %short_name(signal), processes = ?engine::describe(&pids), "the app has exited; stopping what it left behind");
            let deadline = Instant::now() + grace;
            loop {
                if reaper::sweep(self.app.pid).no_children {
                    return;
                }
                tokio::select! {
                    _ = signals.next() => {}
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
        tracing::warn!("processes left behind by the app did not exit after SIGKILL");
    }
}
