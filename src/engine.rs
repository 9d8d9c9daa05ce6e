//! The one drain engine the wrapper and the sidecar share: it feeds every event to
//! `phase::step`, publishes the phase, and is the one executor of the actions, over a small
//! `Target` ("signal the app", "kill what is left", "which processes are the app"). It owns the
//! drain's timers, the adaptive delay's traffic watch and the drain proxy. The wrapper's target is its child,
//! the sidecar's a process of another container held by a pidfd; how each learns that its app
//! has exited (the reaper, the pidfd) stays with it and arrives here as an event.

use std::io;
use std::sync::Arc;

use nix::sys::signal::Signal;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::metrics::Metrics;
use crate::phase::{self, Action, Event, Phase};
use crate::proxy::{self, Proxy};
use crate::settings::{DrainConfig, QuietConfig};
use crate::signals::{Rewrites, short_name};
use crate::status::{self, Snapshot, log_stop_signal_sent};
use crate::timers::{Timers, at};
use crate::traffic::{self, TrafficWatch};

/// What the engine acts on.
pub trait Target {
    /// Sends `signal` to the app (its stop signal, or one passed on).
    fn signal(&self, signal: Signal) -> io::Result<()>;
    /// SIGKILLs whatever is left of the app at the drain timeout; returns the pids it reached.
    fn kill_what_is_left(&self) -> io::Result<Vec<i32>>;
    /// The app's processes, whose listening ports the adaptive delay watches by default.
    fn processes(&self) -> Vec<i32>;
}

/// The drain of one lameduck: its phase, timers and traffic watch.
pub struct Engine {
    /// The phase, which only `handle` writes.
    phase: Phase,
    config: DrainConfig,
    /// How a received signal is rewritten before it is passed on.
    rewrites: Rewrites,
    status: watch::Sender<Snapshot>,
    metrics: Arc<Metrics>,
    /// The adaptive delay, when `--quiet-period` is set.
    quiet: Option<QuietConfig>,
    /// lameduck's own endpoints' port, never counted as the app's.
    listen_port: u16,
    /// The drain proxy, with `--proxy`.
    proxy: Option<Proxy>,
    timers: Timers,
    watch: Option<TrafficWatch>,
    /// Whether a preStop hook started the drain, which decides what a shutdown signal means.
    started_by_hook: bool,
    started: Instant,
}

impl Engine {
    /// An engine in `Phase::Starting`.
    pub fn new(
        config: DrainConfig,
        rewrites: Rewrites,
        status: watch::Sender<Snapshot>,
        metrics: Arc<Metrics>,
        quiet: Option<QuietConfig>,
        listen_port: u16,
        proxy: Option<Proxy>,
    ) -> Self {
        Engine {
            phase: Phase::Starting,
            config,
            rewrites,
            status,
            metrics,
            quiet,
            listen_port,
            proxy,
            timers: Timers::default(),
            watch: None,
            started_by_hook: false,
            started: Instant::now(),
        }
    }

    /// The current phase.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether a preStop hook (rather than a signal) started the drain.
    pub fn started_by_hook(&self) -> bool {
        self.started_by_hook
    }

    /// Whether the drain has begun (a signal or a hook started it).
    pub fn drain_started(&self) -> bool {
        self.timers.drain_started.is_some()
    }

    /// Steps through `event` and any event its action makes due at once (a zero shutdown
    /// delay), acting on `target` (none: the sidecar has no app in sight). Every action is
    /// taken before any log line is written, so a signal to the app never waits behind a slow
    /// log pipe. Returns the exit status when the step says to leave.
    pub fn handle(&mut self, event: Event, target: Option<&dyn Target>) -> Option<i32> {
        let mut next_event = Some(event);
        let mut unlogged: Vec<(Event, Phase)> = Vec::new();
        let mut exit = None;
        while let Some(event) = next_event.take() {
            match event {
                Event::AppReady(ready) => self
                    .status
                    .send_modify(|snapshot| snapshot.app_ready = ready),
                Event::DelayElapsed => {
                    // Only when the delay ran on its timer: a zero delay logs nothing first.
                    let timed = self.timers.delay_ends.take().is_some();
                    if timed {
                        status::log_proxy_left(self.proxy.as_ref());
                    }
                }
                Event::DrainTimeout => self.timers.kill_at = None,
                _ => {}
            }
            let (next, action) = phase::step(self.phase, event);
            if action == Some(Action::StartDelay) {
                self.started_by_hook = event == Event::PreStop;
            }
            if next != self.phase {
                status::enter(&self.status, &self.config, next);
                self.phase = next;
                unlogged.push((event, next));
            }
            match action {
                Some(Action::Exit(code)) => exit = Some(code),
                Some(action) => next_event = self.act(action, target),
                None => {}
            }
        }
        let since = self.timers.drain_started.unwrap_or(self.started);
        for (event, next) in unlogged {
            status::log_change(&self.status, event, next, since);
        }
        exit
    }

    /// Completes with the event of the next deadline: the end of the shutdown delay, the
    /// proxy's last client gone (after the minimum delay), or the end of the drain timeout.
    /// Never without one.
    pub async fn deadline(&self) -> Event {
        let drained = proxy::drained(
            self.proxy.as_ref(),
            self.timers.drain_started,
            self.config.min_delay,
        );
        tokio::select! {
            () = at(self.timers.delay_ends) => Event::DelayElapsed,
            tally = drained, if self.phase == Phase::Draining => {
                status::log_proxy_drained(&tally, &self.config);
                Event::ProxyDrained
            }
            () = at(self.timers.kill_at) => Event::DrainTimeout,
        }
    }

    /// Completes when the traffic watch next needs a look (a tick, or the look that may end
    /// the wait); never without a watch.
    pub async fn next_look(&self) {
        at(self
            .watch
            .as_ref()
            .map(|w| Instant::from_std(w.next_poll())))
        .await
    }

    /// Whether the adaptive delay is watching the app's traffic now.
    pub fn watching(&self) -> bool {
        self.phase == Phase::Draining && self.watch.is_some()
    }

    /// One look at the app's traffic: `TrafficQuiet` once no connection and no byte arrived
    /// for the quiet period and the minimum delay has passed.
    pub fn watch_traffic(&mut self) -> Option<Event> {
        let (watch, config) = (self.watch.as_mut()?, self.quiet.as_ref()?);
        let drain_started = self.timers.drain_started?;
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

    /// Carries out one action; returns the event it makes due at once, if any.
    fn act(&mut self, action: Action, target: Option<&dyn Target>) -> Option<Event> {
        match action {
            Action::Forward(received) => {
                let sent = self.rewrites.apply(received);
                self.metrics
                    .signals_forwarded
                    .get_or_create(&vec![("signal", short_name(sent))])
                    .inc();
                match target.map(|t| t.signal(sent)) {
                    Some(Ok(())) => tracing::debug!(
                        received = %short_name(received),
                        sent = %short_name(sent),
                        "forwarded signal"
                    ),
                    Some(Err(err)) => {
                        tracing::warn!(signal = %short_name(sent), %err, "could not forward signal")
                    }
                    None => {}
                }
            }
            Action::StartDelay if self.config.shutdown_delay.is_zero() => {
                // No timer round trip: a zero delay sends the stop signal at once.
                self.timers.drain_started = Some(Instant::now());
                self.begin_drain(target);
                return Some(Event::DelayElapsed);
            }
            Action::StartDelay => {
                self.timers.start_delay(&self.config);
                self.begin_drain(target);
                status::delay_started(&self.status, &self.config);
                self.watch = self.start_watching_traffic(target);
            }
            Action::SendStopSignal => self.send_stop_signal(target),
            Action::CutDelay(cut) => {
                tracing::info!("{}", cut.describe());
                self.send_stop_signal(target);
            }
            Action::KeepDelay => {
                let left = self
                    .timers
                    .delay_ends
                    .map(|ends| ends.saturating_duration_since(Instant::now()));
                tracing::info!(
                    delay_left_ms = left.unwrap_or_default().as_millis() as u64,
                    "shutdown signal after the preStop hook that started the drain broke: the shutdown delay runs to its end"
                );
            }
            Action::KillAll => self.kill(target),
            Action::Absorbed => {
                tracing::info!("shutdown already under way; the stop signal is sent only once")
            }
            Action::Exit(_) => {}
        }
        None
    }

    /// What the start of the drain tells the app and the proxy: the drain signal, if any, and
    /// the proxy's switch to closing connections.
    fn begin_drain(&self, target: Option<&dyn Target>) {
        if let (Some(signal), Some(target)) = (self.config.drain_signal, target) {
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

    fn send_stop_signal(&mut self, target: Option<&dyn Target>) {
        let Some(target) = target else {
            self.timers.delay_ends = None;
            tracing::info!("shutdown delay served; the kubelet's stop signal stops the app");
            return;
        };
        let left = self.timers.start_drain_timeout(&self.config);
        let signal = self.config.stop_signal;
        match target.signal(signal) {
            Ok(()) => log_stop_signal_sent(signal, left),
            Err(err) => {
                tracing::warn!(signal = %short_name(signal), %err, "could not send the stop signal")
            }
        }
    }

    fn kill(&self, target: Option<&dyn Target>) {
        let Some(target) = target else { return };
        self.metrics.forced_kills.inc();
        match target.kill_what_is_left() {
            Ok(pids) => {
                tracing::warn!(killed = ?describe(&pids), "drain timeout ran out; sent SIGKILL to every process left")
            }
            Err(err) => tracing::warn!(%err, "drain timeout ran out; SIGKILL failed"),
        }
    }

    /// With `--quiet-period`, starts watching the traffic to the app's ports.
    fn start_watching_traffic(&self, target: Option<&dyn Target>) -> Option<TrafficWatch> {
        let config = self.quiet.as_ref()?;
        let ports = if config.app_ports.is_empty() {
            let processes = target.map(Target::processes).unwrap_or_default();
            traffic::listening_ports(&processes, self.listen_port)
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
}

/// `pid/comm` for each pid, as the kill log lines show them.
pub fn describe(pids: &[i32]) -> Vec<String> {
    pids.iter()
        .map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            format!("{pid}/{}", comm.trim_end())
        })
        .collect()
}
