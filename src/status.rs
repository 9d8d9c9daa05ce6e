//! What the outside world sees of the supervisor: a `Snapshot` the supervisor publishes on a
//! watch channel after every change, read by /readyz, /status and /prestop.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;

use crate::cli::DrainConfig;
use crate::duration;
use crate::phase::Phase;
use crate::signals::short_name;

/// The supervisor's state as last published.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The current phase.
    pub phase: Phase,
    /// Whether /readyz passes (the phase, the app's ready check and `--readiness-during-delay`).
    pub ready: bool,
    /// The app's pid.
    pub app_pid: i32,
    /// Every phase entered so far, with when.
    pub transitions: Vec<(Phase, SystemTime)>,
}

impl Snapshot {
    /// The state at start, before the app is known to be ready.
    pub fn starting(app_pid: i32) -> Self {
        Snapshot {
            phase: Phase::Starting,
            ready: false,
            app_pid,
            transitions: vec![(Phase::Starting, SystemTime::now())],
        }
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
            "transitions": transitions,
            "shutdown_delay": duration::format(config.shutdown_delay),
            "drain_timeout": duration::format(config.drain_timeout),
            "stop_signal": short_name(config.stop_signal),
            "readiness_during_delay": format!("{:?}", config.readiness_during_delay).to_lowercase(),
        })
        .to_string()
    }
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis()
        .try_into()
        .unwrap_or(u64::MAX)
}
