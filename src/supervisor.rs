//! The event loop: turns signals, reaped children, HTTP calls and timers into `Event`s, runs
//! `phase::step`, and carries out the actions. It alone writes the phase, owns the timers and
//! decides when lameduck exits.

use std::sync::Arc;
use std::time::Duration;

use futures_core::Stream;
use nix::sys::signal::Signal;
use signal_hook::iterator::exfiltrator::origin::WithOrigin;
use signal_hook::low_level::siginfo::{Cause, Origin, Sent};
use signal_hook_tokio::SignalsInfo;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::child::App;
use crate::hooks::HeldCount;
use crate::metrics::Metrics;
use crate::phase::{self, Action, Event, Hook, Phase};
use crate::proxy::{self, Proxy};
use crate::reaper;
use crate::settings::{DrainConfig, QuietConfig};
use crate::signals::{self, Rewrites, short_name};
use crate::status::{self, Snapshot, log_stop_signal_sent};
use crate::timers::{Timers, at};
use crate::traffic::{self, TrafficWatch};

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

impl Supervisor {
    /// Runs until the app has exited and nothing it left is alive; returns lameduck's exit code.
    pub async fn run(
        self,
        mut signals: SignalsInfo<WithOrigin>,
        mut events: mpsc::Receiver<Event>,
    ) -> i32 {
        let started = Instant::now();
        let mut phase = Phase::Starting;
        if self.ready_at_start {
            // Before the first event: a SIGTERM right after start must find the app Ready.
            let event = Event::AppReady(true);
            phase = phase::step(phase, event).0;
            self.status
                .send_modify(|snapshot| snapshot.app_ready = true);
            status::enter(&self.status, &self.config, phase);
            status::log_change(&self.status, event, phase, started);
        }
        let mut timers = Timers::default();
        let mut sweep_timer = tokio::time::interval(SWEEP_INTERVAL);
        sweep_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut quiet: Option<TrafficWatch> = None;
        // An event the last step made due at once (a zero shutdown delay), taken before waiting.
        let mut due: Option<Event> = None;
        // Phase changes whose log lines wait until no action is due.
        let mut unlogged: Vec<(Event, Phase)> = Vec::new();
        // Whether a preStop hook started the drain, which decides what a shutdown signal means.
        let mut started_by_hook = false;
        let code = loop {
            let event = match due.take() {
                Some(event) => event,
                None => tokio::select! {
                    origin = next_signal(&mut signals) => match self.signal_event(origin) {
                        Some(Event::Shutdown(signal, _)) => {
                            Event::Shutdown(signal, self.held_hooks.at_signal(started_by_hook).await)
                        }
                        Some(event) => event,
                        None => continue,
                    },
                    Some(event) = events.recv() => event,
                    () = at(timers.delay_ends) => {
                        timers.delay_ends = None;
                        status::log_proxy_left(self.proxy.as_ref());
                        Event::DelayElapsed
                    }
                    tally = proxy::drained(self.proxy.as_ref(), timers.drain_started, self.config.min_delay), if phase == Phase::Draining => {
                        status::log_proxy_drained(&tally, &self.config);
                        Event::ProxyDrained
                    }
                    () = at(timers.kill_at) => {
                        timers.kill_at = None;
                        Event::DrainTimeout
                    }
                    _ = sweep_timer.tick() => match reaper::sweep(self.app.pid).app_status {
                        Some(status) => Event::AppExited(status),
                        None => continue,
                    },
                    // The watch says when it next needs a tick, or a look that may end the wait.
                    () = at(quiet.as_ref().map(|w| Instant::from_std(w.next_poll()))), if phase == Phase::Draining => {
                        match self.watch_traffic(quiet.as_mut(), timers.drain_started) {
                            Some(event) => event,
                            None => continue,
                        }
                    }
                },
            };
            if let Event::AppReady(ready) = event {
                self.status
                    .send_modify(|snapshot| snapshot.app_ready = ready);
            }
            let (next, action) = phase::step(phase, event);
            if action == Some(Action::StartDelay) {
                started_by_hook = event == Event::PreStop;
            }
            let changed = next != phase;
            if changed {
                status::enter(&self.status, &self.config, next);
                phase = next;
            }
            // Act, then log: a signal to the app must never wait behind a write to a slow log pipe.
            let exit = match action {
                Some(Action::Exit(status)) => Some(status),
                Some(action) => {
                    quiet = self.act(action, &mut timers, &mut due).or(quiet);
                    None
                }
                None => None,
            };
            if changed {
                unlogged.push((event, next));
            }
            // With an event already due (a zero delay), its action comes before any log write.
            if due.is_none() {
                let since = timers.drain_started.unwrap_or(started);
                for (event, next) in unlogged.drain(..) {
                    status::log_change(&self.status, event, next, since);
                }
            }
            if let Some(status) = exit {
                break status;
            }
        };
        self.clear_leftovers(&mut signals).await;
        self.held_hooks.settle().await;
        code
    }

    /// Carries out one action; returns the traffic watch when the action started the delay.
    fn act(
        &self,
        action: Action,
        timers: &mut Timers,
        due: &mut Option<Event>,
    ) -> Option<TrafficWatch> {
        match action {
            Action::StartDelay if self.config.shutdown_delay.is_zero() => {
                // No timer round trip: a zero delay sends the stop signal at once.
                timers.drain_started = Some(Instant::now());
                self.begin_drain();
                *due = Some(Event::DelayElapsed);
                None
            }
            Action::StartDelay => {
                self.perform(Action::StartDelay, timers);
                self.start_watching_traffic()
            }
            action => {
                self.perform(action, timers);
                None
            }
        }
    }

    /// Turns one delivered signal into an event: SIGCHLD becomes a reap, a SIGPIPE that
    /// lameduck's own write raised is dropped, a real-time signal is forwarded at once (it
    /// never starts a drain, so no phase changes what happens to it), everything else is
    /// reported as received.
    fn signal_event(&self, origin: Option<Origin>) -> Option<Event> {
        let origin = origin?;
        let Ok(signal) = Signal::try_from(origin.signal) else {
            self.forward_realtime(origin.signal);
            return None;
        };
        if signal == Signal::SIGCHLD {
            return reaper::sweep(self.app.pid).app_status.map(Event::AppExited);
        }
        if signal == Signal::SIGPIPE && raised_by_self(&origin) {
            return None;
        }
        tracing::debug!(signal = %short_name(signal), from = ?origin.process.map(|p| p.pid), "received signal");
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

    /// With `--quiet-period`, starts watching the traffic to the app's ports.
    fn start_watching_traffic(&self) -> Option<TrafficWatch> {
        let config = self.quiet.as_ref()?;
        let ports = if config.app_ports.is_empty() {
            traffic::listening_ports(&self.app.leftovers(self.pid1), self.listen_port)
        } else {
            config.app_ports.clone()
        };
        if ports.is_empty() {
            tracing::warn!(
                "no listening port of the app found (name them with --app-port); waiting the full shutdown delay"
            );
            return None;
        }
        tracing::info!(
            ?ports,
            quiet_period_ms = config.period.as_millis() as u64,
            "watching the traffic to the app"
        );
        Some(TrafficWatch::new(
            ports,
            self.listen_port,
            config.period,
            config.min_delay,
        ))
    }

    /// One look at the app's traffic: `TrafficQuiet` once no connection and no byte arrived
    /// for the quiet period and the minimum delay has passed.
    fn watch_traffic(
        &self,
        watch: Option<&mut TrafficWatch>,
        drain_started: Option<Instant>,
    ) -> Option<Event> {
        let (watch, config, drain_started) = (watch?, self.quiet.as_ref()?, drain_started?);
        let activity = watch.poll();
        let now = Instant::now();
        self.metrics
            .drain_new_connections
            .inc_by(activity.new_connections as u64);
        self.status
            .send_modify(|snapshot| snapshot.open_connections = Some(activity.open));
        let quiet_for = activity.quiet_for?;
        if quiet_for < config.period || now - drain_started < config.min_delay {
            return None;
        }
        tracing::info!(
            quiet_ms = quiet_for.as_millis() as u64,
            waited_ms = (now - drain_started).as_millis() as u64,
            saved_ms = self.config.shutdown_delay.saturating_sub(now - drain_started).as_millis() as u64,
            ports = ?watch.ports(),
            "no traffic reached the app for the quiet period; stopping the app before the full shutdown delay"
        );
        Some(Event::TrafficQuiet)
    }

    fn perform(&self, action: Action, timers: &mut Timers) {
        match action {
            Action::Forward(received) => {
                let sent = self.rewrites.apply(received);
                self.metrics
                    .signals_forwarded
                    .get_or_create(&vec![("signal", short_name(sent))])
                    .inc();
                match self.app.signal(sent) {
                    Ok(()) => tracing::debug!(
                        received = %short_name(received),
                        sent = %short_name(sent),
                        "forwarded signal"
                    ),
                    Err(err) => {
                        tracing::warn!(signal = %short_name(sent), %err, "could not forward signal")
                    }
                }
            }
            Action::StartDelay => {
                timers.start_delay(&self.config);
                self.begin_drain();
                status::delay_started(&self.status, &self.config);
            }
            Action::CutDelay(cut) => {
                tracing::info!("{}", cut.describe());
                self.perform(Action::SendStopSignal, timers);
            }
            Action::KeepDelay => {
                let left = timers
                    .delay_ends
                    .map(|ends| ends.saturating_duration_since(Instant::now()));
                tracing::info!(
                    delay_left_ms = left.unwrap_or_default().as_millis() as u64,
                    "shutdown signal after the preStop hook that started the drain broke: the shutdown delay runs to its end"
                );
            }
            Action::SendStopSignal => {
                let left = timers.start_drain_timeout(&self.config);
                let signal = self.config.stop_signal;
                match self.app.signal(signal) {
                    Ok(()) => log_stop_signal_sent(signal, left),
                    Err(err) => {
                        tracing::warn!(signal = %short_name(signal), %err, "could not send the stop signal")
                    }
                }
            }
            Action::KillAll => {
                let pids = self.app.leftovers(self.pid1);
                self.app.signal_everything(Signal::SIGKILL, self.pid1);
                self.metrics.forced_kills.inc();
                tracing::warn!(killed = ?describe(&pids), "drain timeout ran out; sent SIGKILL to every process left");
            }
            Action::Absorbed => {
                tracing::info!("shutdown already under way; the stop signal is sent only once")
            }
            Action::Exit(_) => {}
        }
    }

    /// What the start of the drain tells the app and the proxy: the drain signal, if any, and
    /// the proxy's switch to closing connections.
    fn begin_drain(&self) {
        if let Some(signal) = self.config.drain_signal {
            match self.app.signal(signal) {
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

    /// After the app has exited: SIGTERM whatever it left behind, SIGKILL it after a short
    /// grace, and reap it all, so no process of the app outlives lameduck.
    async fn clear_leftovers(&self, signals: &mut SignalsInfo<WithOrigin>) {
        if reaper::sweep(self.app.pid).no_children {
            return;
        }
        for (signal, grace) in [
            (Signal::SIGTERM, LEFTOVER_GRACE),
            (Signal::SIGKILL, LEFTOVER_GRACE),
        ] {
            let pids = self.app.leftovers(self.pid1);
            self.app.signal_everything(signal, self.pid1);
            tracing::info!(signal = %short_name(signal), processes = ?describe(&pids), "the app has exited; stopping what it left behind");
            let deadline = Instant::now() + grace;
            loop {
                if reaper::sweep(self.app.pid).no_children {
                    return;
                }
                tokio::select! {
                    _ = next_signal(signals) => {}
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
        tracing::warn!("processes left behind by the app did not exit after SIGKILL");
    }
}

async fn next_signal(signals: &mut SignalsInfo<WithOrigin>) -> Option<Origin> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *signals).poll_next(cx)).await
}

/// A SIGPIPE the kernel raised for lameduck's own write to a closed pipe carries lameduck's pid.
fn raised_by_self(origin: &Origin) -> bool {
    origin.cause == Cause::Sent(Sent::User)
        && origin
            .process
            .is_some_and(|p| p.pid as u32 == std::process::id())
}

/// `pid/comm` for each pid, as the kill log line shows them.
fn describe(pids: &[i32]) -> Vec<String> {
    pids.iter()
        .map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            format!("{pid}/{}", comm.trim_end())
        })
        .collect()
}
