//! What the outside world sees of the supervisor: a `Snapshot` the supervisor publishes on a
//! watch channel after every change, read by /readyz, /status and /prestop.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::duration;
use crate::phase::{self, Event, Phase};
use crate::proxy::{Proxy, Tally};
use crate::settings::{DrainConfig, ReadinessDuringDelay};
use crate::signals::short_name;

/// The supervisor's state as last published.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The current phase.
    pub phase: Phase,
    /// Whether /readyz passes (the phase, the app's ready check and `--readiness-during-delay`).
    pub ready: bool,
    /// The app's pid (0 while a sidecar has not found its target).
    pub app_pid: i32,
    /// How lameduck runs: `wrapper`, `sidecar`, or `sidecar (delay only)`.
    pub mode: &'static str,
    /// Every phase entered so far, with when.
    pub transitions: Vec<(Phase, SystemTime)>,
    /// Whether the app's own ready check passes (true without one).
    pub app_ready: bool,
    /// When the shutdown delay ends, once the drain has begun.
    pub delay_ends: Option<SystemTime>,
    /// Connections open to the app's ports, while the adaptive delay watches them.
    pub open_connections: Option<usize>,
    /// The drain proxy's connections, live, with `--proxy`.
    pub proxy: Option<watch::Receiver<Tally>>,
}

impl Snapshot {
    /// The state at start, before the app is known to be ready.
    pub fn starting(mode: &'static str, app_pid: i32) -> Self {
        Snapshot {
            phase: Phase::Starting,
            ready: false,
            app_pid,
            mode,
            transitions: vec![(Phase::Starting, SystemTime::now())],
            app_ready: false,
            delay_ends: None,
            open_connections: None,
            proxy: None,
        }
    }

    /// Time left in the shutdown delay while draining.
    pub fn delay_left(&self) -> Option<Duration> {
        if self.phase != Phase::Draining {
            return None;
        }
        let ends = self.delay_ends?;
        Some(
            ends.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO),
        )
    }

    /// The /status body.
    pub fn to_json(&self, config: &DrainConfig) -> String {
        let transitions: Vec<_> = self
            .transitions
            .iter()
            .map(|(phase, at)| json!({ "phase": phase.name(), "at_unix_ms": unix_ms(*at) }))
            .collect();
        json!({
            "phase": self.phase.name(),
            "ready": self.ready,
            "app_pid": self.app_pid,
            "mode": self.mode,
            "transitions": transitions,
            "app_ready": self.app_ready,
            "delay_left_ms": self.delay_left().map(|left| left.as_millis() as u64),
            "open_connections": self.open_connections,
            "proxy": self.proxy.as_ref().map(|tally| proxy_json(&tally.borrow())),
            "shutdown_delay": duration::format(config.shutdown_delay),
            "drain_timeout": duration::format(config.drain_timeout),
            "stop_signal": short_name(config.stop_signal),
            "readiness_during_delay": format!("{:?}", config.readiness_during_delay).to_lowercase(),
        })
        .to_string()
    }
}

/// Publishes phase `to`: a new snapshot whose readiness follows the phase (and
/// `--readiness-during-delay` while draining). Memory only, so it never waits on I/O.
pub fn enter(status: &watch::Sender<Snapshot>, config: &DrainConfig, to: Phase) {
    let keep_passing = config.readiness_during_delay == ReadinessDuringDelay::Pass;
    status.send_modify(|snapshot| {
        let was_ready = snapshot.ready && snapshot.phase == Phase::Ready;
        snapshot.phase = to;
        snapshot.ready = match to {
            Phase::Ready => true,
            Phase::Draining => keep_passing && was_ready,
            _ => false,
        };
        snapshot.transitions.push((to, SystemTime::now()));
    });
}

/// The one log line of a phase change, written after the change has taken effect.
pub fn log_change(status: &watch::Sender<Snapshot>, event: Event, to: Phase, since: Instant) {
    tracing::info!(
        phase = %to.name(),
        reason = %phase::reason(event),
        elapsed_ms = since.elapsed().as_millis() as u64,
        pid = status.borrow().app_pid,
        "phase changed"
    );
}

/// Reports the start of the shutdown delay: in the snapshot (its end) and in the log.
pub fn delay_started(status: &watch::Sender<Snapshot>, config: &DrainConfig) {
    let ends = SystemTime::now() + config.shutdown_delay;
    status.send_modify(|snapshot| snapshot.delay_ends = Some(ends));
    tracing::info!(
        shutdown_delay_ms = config.shutdown_delay.as_millis() as u64,
        "readiness fails; waiting for endpoints to drop this pod before stopping the app"
    );
}

/// The log line when the stop signal has been sent.
pub fn log_stop_signal_sent(signal: Signal, drain_timeout: Duration) {
    tracing::info!(
        signal = %short_name(signal),
        drain_timeout_ms = drain_timeout.as_millis() as u64,
        "sent the app its stop signal"
    );
}

fn proxy_json(tally: &Tally) -> serde_json::Value {
    json!({
        "open_connections": tally.open,
        "accepted": tally.accepted,
        "moved_off": tally.moved_off,
        "drained_after_ms": tally.drained_after.map(|took| took.as_millis() as u64),
    })
}

/// The log line when the proxy has moved every client off and the delay ends early.
pub fn log_proxy_drained(tally: &Tally, config: &DrainConfig) {
    let waited = tally
        .drain_started
        .map(|started| started.elapsed())
        .unwrap_or_default();
    tracing::info!(
        moved_off = tally.moved_off,
        took_ms = tally.drained_after.unwrap_or_default().as_millis() as u64,
        waited_ms = waited.as_millis() as u64,
        saved_ms = config.shutdown_delay.saturating_sub(waited).as_millis() as u64,
        "the proxy moved every client off; stopping the app before the full shutdown delay"
    );
}

/// The log line when the shutdown delay ran out with proxied connections still open.
pub fn log_proxy_left(proxy: Option<&Proxy>) {
    let Some(proxy) = proxy else { return };
    let tally = *proxy.tally().borrow();
    if tally.open > 0 {
        tracing::warn!(
            still_open = tally.open,
            moved_off = tally.moved_off,
            "the shutdown delay ran out before every proxied client left; the rest stay open until the app closes them"
        );
    }
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX)
}
