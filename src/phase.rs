//! The shutdown state machine: `Phase`, the `Event`s that move it, the `Action`s it asks for,
//! and `step`, the one pure function that decides. Read it top to bottom:
//!
//! `Starting -> Ready -> Draining -> Stopping -> Killing -> Exited`
//!
//! - Starting: the app runs but is not (yet, or no longer) ready.
//! - Ready: /readyz passes.
//! - Draining: SIGTERM, SIGINT or /prestop arrived; /readyz fails, the app keeps serving
//!   untouched while the shutdown delay lets load balancers notice.
//! - Stopping: the app got its stop signal and has the drain timeout to exit.
//! - Killing: the drain timeout ran out; everything left got SIGKILL.
//! - Exited: the app is gone; lameduck exits with its status.

use nix::sys::signal::Signal;

/// Where the app is in its life, as /readyz, /status and the logs report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Phase {
    /// Running, not ready.
    Starting,
    /// Running and ready for traffic.
    Ready,
    /// Readiness fails; waiting out the shutdown delay before the stop signal.
    Draining,
    /// The app has its stop signal and is finishing in-flight work.
    Stopping,
    /// The drain timeout ran out and what was left got SIGKILL.
    Killing,
    /// The app has exited.
    Exited,
}

impl Phase {
    /// Lower-case name used in logs, /readyz and /status.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Ready => "ready",
            Phase::Draining => "draining",
            Phase::Stopping => "stopping",
            Phase::Killing => "killing",
            Phase::Exited => "exited",
        }
    }
}

/// Something that happened, reported to the supervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// lameduck received a signal that asks it to stop: SIGTERM, SIGINT, or the app's own
    /// stop signal (which a container runtime sends when the image's STOPSIGNAL is that).
    Shutdown(Signal),
    /// lameduck received a signal to pass on (never SIGCHLD, which the reaper consumes).
    Signal(Signal),
    /// `/prestop` was called.
    PreStop,
    /// The app's own ready check changed its answer.
    AppReady(bool),
    /// The shutdown delay has passed.
    DelayElapsed,
    /// No traffic reached the app for the quiet period (`--quiet-period`).
    TrafficQuiet,
    /// The drain proxy has no connection left open and the minimum delay has passed.
    ProxyDrained,
    /// The drain timeout has run out.
    DrainTimeout,
    /// The app exited with this status (its code, or 128+N for signal N).
    AppExited(i32),
}

/// What the supervisor must do after a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Forward this received signal to the app (after rewriting).
    Forward(Signal),
    /// Start the shutdown delay timer.
    StartDelay,
    /// Send the stop signal and start the drain timeout.
    SendStopSignal,
    /// SIGKILL every process that is left.
    KillAll,
    /// Leave the event loop: the app has exited with this status.
    Exit(i32),
    /// Note that a duplicate shutdown request was absorbed (idempotent by design).
    Absorbed,
}

/// Why a phase changed, for the log.
pub fn reason(event: Event) -> &'static str {
    match event {
        Event::Shutdown(signal) | Event::Signal(signal) => signal.as_str(),
        Event::PreStop => "prestop",
        Event::AppReady(true) => "app ready",
        Event::AppReady(false) => "app not ready",
        Event::DelayElapsed => "shutdown delay elapsed",
        Event::TrafficQuiet => "no traffic for the quiet period",
        Event::ProxyDrained => "the proxy moved every client off",
        Event::DrainTimeout => "drain timeout",
        Event::AppExited(_) => "app exited",
    }
}

/// The one transition function: given the phase and an event, the next phase and at most one action.
pub fn step(phase: Phase, event: Event) -> (Phase, Option<Action>) {
    use Action::*;
    use Phase::*;
    match (phase, event) {
        (Exited, _) => (Exited, None),
        (_, Event::AppExited(status)) => (Exited, Some(Exit(status))),

        (Starting, Event::AppReady(true)) => (Ready, None),
        (Ready, Event::AppReady(false)) => (Starting, None),
        (_, Event::AppReady(_)) => (phase, None),

        (_, Event::Signal(signal)) => (phase, Some(Forward(signal))),

        (Starting | Ready, Event::Shutdown(_) | Event::PreStop) => (Draining, Some(StartDelay)),
        // An impatient second SIGTERM skips the rest of the delay; a repeated hook does not.
        (Draining, Event::Shutdown(_)) => (Stopping, Some(SendStopSignal)),
        (Draining, Event::PreStop) => (Draining, Some(Absorbed)),
        (Draining, Event::DelayElapsed | Event::TrafficQuiet | Event::ProxyDrained) => {
            (Stopping, Some(SendStopSignal))
        }
        // The stop signal goes out exactly once: repeats could turn a graceful stop into a fast one.
        (Stopping | Killing, Event::Shutdown(_) | Event::PreStop) => (phase, Some(Absorbed)),
        (Stopping, Event::DrainTimeout) => (Killing, Some(KillAll)),

        // Timers that fire after the phase they were armed for has passed.
        (
            _,
            Event::DelayElapsed | Event::TrafficQuiet | Event::ProxyDrained | Event::DrainTimeout,
        ) => (phase, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use Phase::*;

    const PHASES: [Phase; 6] = [Starting, Ready, Draining, Stopping, Killing, Exited];

    fn events() -> Vec<Event> {
        vec![
            Event::Shutdown(Signal::SIGTERM),
            Event::Shutdown(Signal::SIGINT),
            Event::Signal(Signal::SIGHUP),
            Event::PreStop,
            Event::AppReady(true),
            Event::AppReady(false),
            Event::DelayElapsed,
            Event::TrafficQuiet,
            Event::ProxyDrained,
            Event::DrainTimeout,
            Event::AppExited(3),
        ]
    }

    fn expected(phase: Phase, event: Event) -> (Phase, Option<Action>) {
        let term = Event::Shutdown(Signal::SIGTERM);
        let int = Event::Shutdown(Signal::SIGINT);
        let hup = Event::Signal(Signal::SIGHUP);
        match phase {
            Exited => (Exited, None),
            _ if event == Event::AppExited(3) => (Exited, Some(Exit(3))),
            _ if event == hup => (phase, Some(Forward(Signal::SIGHUP))),
            Starting | Ready if event == term || event == int || event == Event::PreStop => {
                (Draining, Some(StartDelay))
            }
            Starting if event == Event::AppReady(true) => (Ready, None),
            Ready if event == Event::AppReady(false) => (Starting, None),
            Draining
                if event == term
                    || event == int
                    || event == Event::DelayElapsed
                    || event == Event::TrafficQuiet
                    || event == Event::ProxyDrained =>
            {
                (Stopping, Some(SendStopSignal))
            }
            Draining if event == Event::PreStop => (Draining, Some(Absorbed)),
            Stopping | Killing if event == term || event == int || event == Event::PreStop => {
                (phase, Some(Absorbed))
            }
            Stopping if event == Event::DrainTimeout => (Killing, Some(KillAll)),
            _ => (phase, None),
        }
    }

    #[test]
    fn every_phase_and_event_follows_the_table() {
        for phase in PHASES {
            for event in events() {
                assert_eq!(
                    step(phase, event),
                    expected(phase, event),
                    "{phase:?} + {event:?}"
                );
            }
        }
    }

    #[test]
    fn the_full_drain_reads_in_order() {
        let mut phase = Starting;
        let mut actions = vec![];
        for event in [
            Event::AppReady(true),
            Event::Shutdown(Signal::SIGTERM),
            Event::PreStop,
            Event::DelayElapsed,
            Event::Shutdown(Signal::SIGTERM),
            Event::DrainTimeout,
            Event::AppExited(137),
        ] {
            let (next, action) = step(phase, event);
            phase = next;
            actions.extend(action);
        }
        assert_eq!(phase, Exited);
        assert_eq!(
            actions,
            vec![
                StartDelay,
                Absorbed,
                SendStopSignal,
                Absorbed,
                KillAll,
                Exit(137)
            ]
        );
    }

    #[test]
    fn phases_order_as_the_drain_proceeds() {
        assert!(PHASES.windows(2).all(|w| w[0] < w[1]));
    }
}
