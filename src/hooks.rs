//! The preStop hooks, whatever carries them (HTTP `/prestop` or the `lameduck prestop`
//! socket): a call reports `Event::PreStop`, is held until the phase the mode answers at,
//! and is counted while held, so that the connection cap leaves it alone and the executor can
//! tell what a shutdown signal means (see `phase::Hook`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::phase::{Event, Hook, Phase};
use crate::status::Snapshot;

/// Where hook calls start the drain and wait for their answer.
#[derive(Clone)]
pub struct Hooks {
    /// The supervisor's latest snapshot.
    pub status: watch::Receiver<Snapshot>,
    /// Where a call reports the start of a drain.
    pub events: mpsc::Sender<Event>,
    /// A call is answered once the phase has reached this one.
    pub until: Phase,
    /// The longest a call holds its answer.
    pub hold: Duration,
    /// How many calls are waiting for their answer.
    pub held: HeldCount,
}

impl Hooks {
    /// One hook call: starts the drain (a repeated call is harmless) and returns the phase
    /// once it has reached `until`, or after `hold` at the latest. Dropped before it returns
    /// (its connection broke), it stops counting as held and says so in the log.
    pub async fn call(&self, via: &'static str) -> Phase {
        let held = Held::new(self.held.clone(), via);
        let _ = self.events.send(Event::PreStop).await;
        let mut status = self.status.clone();
        let reached = status.wait_for(|snapshot| snapshot.phase >= self.until);
        let _ = tokio::time::timeout(self.hold, reached).await;
        held.answered();
        status.borrow().phase
    }
}

/// The number of hook calls waiting for their answer, and whether any call came, shared with
/// the executor.
#[derive(Clone, Default)]
pub struct HeldCount(Arc<Counts>);

#[derive(Default)]
struct Counts {
    held: AtomicUsize,
    called: AtomicBool,
}

impl HeldCount {
    /// What a shutdown signal finds: `started_by_hook` says whether a hook call started the drain.
    /// A hook whose connection has just broken may not have been seen to drop yet: its
    /// connection task gets a millisecond (the runtime polls for I/O meanwhile) to do so.
    pub async fn at_signal(&self, started_by_hook: bool) -> Hook {
        if !started_by_hook {
            return Hook::NotCalled;
        }
        if self.0.held.load(Ordering::SeqCst) > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if self.0.held.load(Ordering::SeqCst) > 0 {
            Hook::Held
        } else {
            Hook::Ended
        }
    }
}

/// The longest lameduck waits at exit for held calls to get their answers.
const SETTLE: Duration = Duration::from_secs(1);
/// Room at exit for the answers just given to be written.
const ANSWER_WRITE: Duration = Duration::from_millis(20);

impl HeldCount {
    /// Before lameduck exits: gives held calls a moment to take their answer and their
    /// connection tasks time to write it, so that the kubelet sees the hook return
    /// rather than break when the app exits right after its stop signal. Without any hook
    /// call there is nothing to write, and the exit is not delayed.
    pub async fn settle(&self) {
        if !self.0.called.load(Ordering::SeqCst) {
            return;
        }
        let deadline = tokio::time::Instant::now() + SETTLE;
        while self.0.held.load(Ordering::SeqCst) > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // A short sleep, not yields: the answered calls' connection tasks write meanwhile.
        tokio::time::sleep(ANSWER_WRITE).await;
    }
}

/// One held call; decrements the count however it ends.
struct Held {
    count: HeldCount,
    via: &'static str,
    answered: bool,
}

impl Held {
    fn new(count: HeldCount, via: &'static str) -> Self {
        count.0.called.store(true, Ordering::SeqCst);
        count.0.held.fetch_add(1, Ordering::SeqCst);
        Held {
            count,
            via,
            answered: false,
        }
    }

    fn answered(mut self) {
        self.answered = true;
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.count.0.held.fetch_sub(1, Ordering::SeqCst);
        if !self.answered {
            tracing::warn!(
                via = self.via,
                "a preStop hook's connection closed before its answer; the kubelet counts that as a failed hook and sends its stop signal at once"
            );
        }
    }
}
