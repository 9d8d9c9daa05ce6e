//! `/metrics` in the OpenMetrics text format (prometheus-client): the phase, time spent in each
//! phase so far, signals forwarded, forced kills, new connections seen during the drain, and
//! whether the app's ready check passes. Counters live here; the rest is read from the snapshot.

use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::phase::Phase;
use crate::status::Snapshot;

type Labels = Vec<(&'static str, &'static str)>;

/// The counters the supervisor and the sidecar add to.
#[derive(Default)]
pub struct Metrics {
    /// Signals forwarded to the app, by the signal the app received.
    pub signals_forwarded: Family<Labels, Counter>,
    /// Times lameduck had to SIGKILL what was left at the drain timeout.
    pub forced_kills: Counter,
    /// New connections to the app's ports seen while draining.
    pub drain_new_connections: Counter,
}

const PHASES: [Phase; 6] = [
    Phase::Starting,
    Phase::Ready,
    Phase::Draining,
    Phase::Stopping,
    Phase::Killing,
    Phase::Exited,
];

impl Metrics {
    /// The exposition for one scrape.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let mut registry = Registry::with_prefix("lameduck");
        let phase: Family<Labels, Gauge> = Family::default();
        let seconds: Family<Labels, Gauge<f64, AtomicU64>> = Family::default();
        let spent = time_in_phases(snapshot, SystemTime::now());
        for (p, secs) in PHASES.iter().zip(spent) {
            phase
                .get_or_create(&vec![("phase", p.name())])
                .set(i64::from(*p == snapshot.phase));
            seconds.get_or_create(&vec![("phase", p.name())]).set(secs);
        }
        let ready: Gauge = Gauge::default();
        ready.set(i64::from(snapshot.app_ready));
        registry.register(
            "phase",
            "1 for the phase lameduck is in, 0 for the others",
            phase,
        );
        registry.register("phase_seconds", "Time spent in each phase so far", seconds);
        registry.register(
            "signals_forwarded",
            "Signals forwarded to the app, by the signal it received",
            self.signals_forwarded.clone(),
        );
        registry.register(
            "forced_kills",
            "Times the drain timeout ran out and what was left got SIGKILL",
            self.forced_kills.clone(),
        );
        registry.register(
            "drain_new_connections",
            "New connections to the app's ports seen during the drain",
            self.drain_new_connections.clone(),
        );
        registry.register("app_ready", "1 when the app's ready check passes", ready);
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// Seconds spent in each phase (in `PHASES` order) up to `now`.
fn time_in_phases(snapshot: &Snapshot, now: SystemTime) -> [f64; 6] {
    let mut spent = [0.0; 6];
    let transitions = &snapshot.transitions;
    for (i, (phase, entered)) in transitions.iter().enumerate() {
        let left = transitions.get(i + 1).map_or(now, |(_, at)| *at);
        let secs = left
            .duration_since(*entered)
            .map_or(0.0, |d| d.as_secs_f64());
        if let Some(slot) = PHASES.iter().position(|p| p == phase) {
            spent[slot] += secs;
        }
    }
    spent
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn time_in_phases_adds_up_each_stay() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let mut snapshot = Snapshot::starting("wrapper", 1);
        snapshot.transitions = vec![
            (Phase::Starting, start),
            (Phase::Ready, start + Duration::from_secs(2)),
            (Phase::Starting, start + Duration::from_secs(3)),
            (Phase::Ready, start + Duration::from_secs(4)),
            (Phase::Draining, start + Duration::from_secs(10)),
        ];
        let spent = time_in_phases(&snapshot, start + Duration::from_secs(15));
        assert_eq!(spent, [3.0, 7.0, 5.0, 0.0, 0.0, 0.0]);
    }
}
