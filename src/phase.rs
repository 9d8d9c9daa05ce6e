//! The shutdown state machine: `Phase`, the `Event`s that move it, the `Action`s it asks for,
//! and `step`, the one pure function that decides. Read it top to bottom:
//!
//! `Starting -> Ready -> Draining -> Stopping -> Killing -> Exited`
//!
//! - Starting: the app runs but is not (yet, or no longer) ready.
//! - Ready: /readyz passes.
//! - Draining: SIGTERM, SIGINT or a preStop hook arrived; /readyz fails, the app keeps serving
//!   untouched while the shutdown delay lets load balancers notice. A shutdown signal here is
//!   read by what started the drain and where the hook stands (`Hook`): it skips the delay
//!   when a human sends a second one, or when the kubelet gave up on a held hook, and leaves
//!   the delay alone when the hook broke (the kubelet's SIGTERM then follows at once).
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
    /// stop signal (which a container runtime sends when the image's STOPSIGNAL is that); with
    /// where the preStop hook stands at that moment.
    Shutdown(Signal, Hook),
    /// lameduck received a signal to pass on (never SIGCHLD, which the reaper consumes).
    Signal(Signal),
    /// A preStop hook was called (HTTP `/prestop` or `lameduck prestop`).
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
    /// The sidecar's app, which is no child of lameduck's (so its status is not lameduck's to
    /// know), has exited.
    AppGone,
}

/// Where the preStop hook stands when a shutdown signal arrives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// No hook started the drain: it began with a signal, or has not begun.
    NotCalled,
    /// The hook that started the drain still waits for its answer: under a kubelet, a signal
    /// now means the grace period ran out and the kubelet stopped waiting.
    Held,
    /// The hook that started the drain ended before its answer (its connection broke): the
    /// kubelet counts a failed hook and sends its stop signal at once, with grace left.
    Ended,
}

/// Why a shutdown signal cuts the delay short.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// A second signal in a drain a signal started: a human in a hurry.
    SecondSignal,
    /// The signal came while the hook was held: the kubelet gave up waiting for it.
    HookAbandoned,
}

impl Cut {
    /// The log line naming the case.
    pub fn describe(self) -> &'static str {
        match self {
            Cut::SecondSignal => {
                "a second shutdown signal in a drain a signal started: skipping the rest of the shutdown delay"
            }
            Cut::HookAbandoned => {
                "shutdown signal while the preStop hook is still held: the kubelet gave up on it (its grace period ran out), so the stop signal goes out now"
            }
        }
    }
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
    /// Send the stop signal before the delay is over, for this reason.
    CutDelay(Cut),
    /// A shutdown signal came after the hook that started the drain broke: the delay runs on.
    KeepDelay,
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
        Event::Shutdown(signal, _) | Event::Signal(signal) => signal.as_str(),
        Event::PreStop => "prestop",
        Event::AppReady(true) => "app ready",
        Event::AppReady(false) => "app not ready",
        Event::DelayElapsed => "shutdown delay elapsed",
        Event::TrafficQuiet => "no traffic for the quiet period",
        Event::ProxyDrained => "the proxy moved every client off",
        Event::DrainTimeout => "drain timeout",
        Event::AppExited(_) | Event::AppGone => "app exited",
    }
}

/// The one transition function: given the phase and an event, the next phase and at most one action.
pub fn step(phase: Phase, event: Event) -> (Phase, Option<Action>) {
    use Action::*;
    use Phase::*;
    match (phase, event) {
        (Exited, _) => (Exited, None),
        (_, Event::AppExited(status)) => (Exited, Some(Exit(status))),
        // Gone before any drain: a crash or a restart, so the sidecar looks for the new one.
        (Starting | Ready, Event::AppGone) => (Starting, None),
        // Gone during the drain: the drain is done.
        (_, Event::AppGone) => (Exited, None),

        (Starting, Event::AppReady(true)) => (Ready, None),
        (Ready, Event::AppReady(false)) => (Starting, None),
        (_, Event::AppReady(_)) => (phase, None),

        (_, Event::Signal(signal)) => (phase, Some(Forward(signal))),

        (Starting | Ready, Event::Shutdown(..) | Event::PreStop) => (Draining, Some(StartDelay)),
        // An impatient second SIGTERM skips the rest of the delay; a repeated hook does not.
        (Draining, Event::Shutdown(_, Hook::NotCalled)) => {
            (Stopping, Some(CutDelay(Cut::SecondSignal)))
        }
        // The kubelet stopped waiting for the hook: it kills 2s after this signal at the least.
        (Draining, Event::Shutdown(_, Hook::Held)) => {
            (Stopping, Some(CutDelay(Cut::HookAbandoned)))
        }
        // The kubelet's SIGTERM after a failed hook says nothing about endpoint propagation.
        (Draining, Event::Shutdown(_, Hook::Ended)) => (Draining, Some(KeepDelay)),
        (Draining, Event::PreStop) => (Draining, Some(Absorbed)),
        (Draining, Event::DelayElapsed | Event::TrafficQuiet | Event::ProxyDrained) => {
            (Stopping, Some(SendStopSignal))
        }
        // The stop signal goes out exactly once: repeats could turn a graceful stop into a fast one.
        (Stopping | Killing, Event::Shutdown(..) | Event::PreStop) => (phase, Some(Absorbed)),
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

    const TERM: Event = Event::Shutdown(Signal::SIGTERM, Hook::NotCalled);
    const INT: Event = Event::Shutdown(Signal::SIGINT, Hook::NotCalled);
    const TERM_HOOK_HELD: Event = Event::Shutdown(Signal::SIGTERM, Hook::Held);
    const TERM_HOOK_ENDED: Event = Event::Shutdown(Signal::SIGTERM, Hook::Ended);

    fn events() -> Vec<Event> {
        vec![
            TERM,
            INT,
            TERM_HOOK_HELD,
            TERM_HOOK_ENDED,
            Event::Signal(Signal::SIGHUP),
            Event::PreStop,
            Event::AppReady(true),
            Event::AppReady(false),
            Event::DelayElapsed,
            Event::TrafficQuiet,
            Event::ProxyDrained,
            Event::DrainTimeout,
            Event::AppExited(3),
            Event::AppGone,
        ]
    }

    fn expected(phase: Phase, event: Event) -> (Phase, Option<Action>) {
        let hup = Event::Signal(Signal::SIGHUP);
        let shutdown = [TERM, INT, TERM_HOOK_HELD, TERM_HOOK_ENDED].contains(&event);
        match phase {
            Exited => (Exited, None),
            _ if event == Event::AppExited(3) => (Exited, Some(Exit(3))),
            _ if event == hup => (phase, Some(Forward(Signal::SIGHUP))),
            Starting | Ready if event == Event::AppGone => (Starting, None),
            _ if event == Event::AppGone => (Exited, None),
            Starting | Ready if shutdown || event == Event::PreStop => (Draining, Some(StartDelay)),
            Starting if event == Event::AppReady(true) => (Ready, None),
            Ready if event == Event::AppReady(false) => (Starting, None),
            Draining if event == TERM || event == INT => {
                (Stopping, Some(CutDelay(Cut::SecondSignal)))
            }
            Draining if event == TERM_HOOK_HELD => (Stopping, Some(CutDelay(Cut::HookAbandoned))),
            Draining if event == TERM_HOOK_ENDED => (Draining, Some(KeepDelay)),
            Draining
                if event == Event::DelayElapsed
                    || event == Event::TrafficQuiet
                    || event == Event::ProxyDrained =>
            {
                (Stopping, Some(SendStopSignal))
            }
            Draining if event == Event::PreStop => (Draining, Some(Absorbed)),
            Stopping | Killing if shutdown || event == Event::PreStop => (phase, Some(Absorbed)),
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
            TERM,
            Event::PreStop,
            Event::DelayElapsed,
            TERM,
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

    /// The kubelet's order: the hook starts the drain, then its stop signal comes.
    fn hook_then(signal: Event) -> Vec<Action> {
        let mut phase = Ready;
        let mut actions = vec![];
        for event in [Event::PreStop, signal, Event::DelayElapsed] {
            let (next, action) = step(phase, event);
            phase = next;
            actions.extend(action);
        }
        actions
    }

    #[test]
    fn a_signal_after_a_broken_hook_leaves_the_delay_to_run_out() {
        assert_eq!(
            hook_then(TERM_HOOK_ENDED),
            vec![StartDelay, KeepDelay, SendStopSignal]
        );
    }

    #[test]
    fn a_signal_while_the_hook_is_held_sends_the_stop_signal_at_once() {
        assert_eq!(
            hook_then(TERM_HOOK_HELD),
            vec![StartDelay, CutDelay(Cut::HookAbandoned)]
        );
    }

    #[test]
    fn a_second_signal_in_a_drain_a_signal_started_skips_the_delay() {
        let (phase, _) = step(Ready, TERM);
        assert_eq!(
            step(phase, TERM),
            (Stopping, Some(CutDelay(Cut::SecondSignal)))
        );
    }

    #[test]
    fn the_sidecar_s_app_restarts_before_a_drain_and_ends_one_by_exiting() {
        let mut phase = Starting;
        let mut actions = vec![];
        for event in [
            Event::AppReady(true),
            Event::AppGone,
            Event::AppReady(true),
            Event::PreStop,
            Event::DelayElapsed,
            Event::AppGone,
        ] {
            let (next, action) = step(phase, event);
            phase = next;
            actions.extend(action);
        }
        assert_eq!(phase, Exited);
        assert_eq!(actions, vec![StartDelay, SendStopSignal]);
    }

    #[test]
    fn phases_order_as_the_drain_proceeds() {
        assert!(PHASES.windows(2).all(|w| w[0] < w[1]));
    }
}
