//! The drain's deadlines: when the drain started, when the shutdown delay ends, and when
//! whatever is left gets SIGKILL. Shared by the wrapper's supervisor and the sidecar.

use std::time::Duration;

use tokio::time::Instant;

use crate::settings::DrainConfig;

/// The deadlines armed so far; `None` while not running.
#[derive(Default)]
pub struct Timers {
    /// When the drain began (SIGTERM, SIGINT or /prestop).
    pub drain_started: Option<Instant>,
    /// When the shutdown delay ends.
    pub delay_ends: Option<Instant>,
    /// When the drain timeout runs out.
    pub kill_at: Option<Instant>,
}

impl Timers {
    /// Starts the shutdown delay now.
    pub fn start_delay(&mut self, config: &DrainConfig) {
        let now = Instant::now();
        self.drain_started = Some(now);
        self.delay_ends = Some(now + config.shutdown_delay);
    }

    /// Stops the delay and starts the drain timeout; with a grace period the kill also comes
    /// no later than its budget after the start of the drain. Returns the time the app has.
    pub fn start_drain_timeout(&mut self, config: &DrainConfig) -> Duration {
        let now = Instant::now();
        self.delay_ends = None;
        let mut kill_at = now + config.drain_timeout;
        if let (Some(budget), Some(started)) = (config.kill_budget, self.drain_started) {
            kill_at = kill_at.min(started + budget);
        }
        self.kill_at = Some(kill_at);
        kill_at.saturating_duration_since(now)
    }
}

/// Completes at `deadline`, or never when there is none.
pub async fn at(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
