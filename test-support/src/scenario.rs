//! What the zero-downtime scenarios share, tests and benchmarks alike: the slow response every
//! server under test serves (so requests are always in flight when a drain begins), the load
//! that asks for it, lameduck's command line around a server as a pod wraps it, and what a drain
//! under load must show.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::haproxy::Haproxy;
use crate::load::{Connections, Load, Outcome, Plan, Report};
use crate::process::{Lines, wait_until};

/// Size of `/slow`; with `SLOW_RATE` it takes about 400 ms to send.
pub const SLOW_BYTES: usize = 40 * 1024;
/// The rate `/slow` is sent at, in bytes per second.
pub const SLOW_RATE: usize = 100 * 1024;
/// How long one `/slow` request takes.
pub const SLOW: Duration = Duration::from_millis((SLOW_BYTES * 1000 / SLOW_RATE) as u64);

/// Load before a drain, so the drained pod serves its share first, and after it, so the
/// survivors are seen serving alone.
pub const STEADY: Duration = Duration::from_secs(1);

/// Starts `workers` clients sending `GET /slow` to `target` back to back, each for at most a
/// minute and 10,000 requests.
pub fn slow_load(target: SocketAddr, workers: usize, connections: Connections) -> Load {
    Load::start(Plan {
        target,
        path: "/slow".into(),
        body_len: SLOW_BYTES,
        workers,
        connections,
        max_duration: Duration::from_secs(60),
        max_requests: 10_000,
    })
}

/// Runs `drain` under `slow_load` from `workers` clients to `target`, with `STEADY` of load
/// before it and after it; returns every request and what `drain` returned.
pub fn under_load<T>(
    target: SocketAddr,
    workers: usize,
    connections: Connections,
    drain: impl FnOnce() -> T,
) -> (Report, T) {
    let load = slow_load(target, workers, connections);
    std::thread::sleep(STEADY);
    let drained = drain();
    std::thread::sleep(STEADY);
    (load.stop(), drained)
}

/// lameduck's flags for wrapping a server as a pod does: endpoints on `endpoints`,
/// `stop_signal`, ready once the server at `app` answers `/fast`, the `drain` flags, then `--`
/// and the server's own `command`.
pub fn under_lameduck(
    endpoints: SocketAddr,
    stop_signal: &str,
    app: SocketAddr,
    drain: &[&str],
    command: Vec<String>,
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--listen".into(),
        endpoints.to_string(),
        "--stop-signal".into(),
        stop_signal.into(),
        "--ready-check".into(),
        format!("http://{app}/fast"),
        "--ready-interval".into(),
        "100ms".into(),
    ];
    args.extend(drain.iter().map(|flag| flag.to_string()));
    args.push("--".into());
    args.extend(command);
    args
}

/// What a failed scenario assertion shows: every request, times in ms from `zero` (`what`:
/// the SIGTERM, the hook, ...), and the end of HAProxy's log.
pub fn load_context(report: &Report, zero: Instant, what: &str, haproxy: &Haproxy) -> String {
    format!(
        "times in ms from {what}\n{}\nhaproxy log:\n{}",
        report.summary(zero),
        haproxy.log_tail(40)
    )
}

/// Not one request failed.
pub fn assert_none_failed(report: &Report, context: &dyn Fn() -> String) {
    assert!(
        report.failures().is_empty(),
        "requests failed: {}",
        context()
    );
}

/// What a pod drained under load must show: `pod` served before the drain began at `began`
/// (else the drain proves nothing), had requests in flight then, and each of them completed.
/// `context` says what happened, for the failure.
pub fn assert_served_across(
    report: &Report,
    pod: &str,
    began: Instant,
    context: &dyn Fn() -> String,
) {
    assert!(
        report.served_before(pod, began),
        "{pod} served nothing before its drain, so the drain proves nothing: {}",
        context()
    );
    let in_flight = report.in_flight_at(began);
    assert!(
        in_flight.iter().any(|r| r.served_by(pod)),
        "{pod} had no request in flight when its drain began: {}",
        context()
    );
    assert!(
        in_flight.iter().all(|r| r.outcome == Outcome::Ok),
        "a request in flight when {pod}'s drain began failed: {}",
        context()
    );
}

/// Waits, at most `timeout`, until `done`, and returns what `haproxy` saw the moment lameduck's
/// `log` first had `line` (None when it never came): the adaptive delay's line that it stopped
/// waiting, when the balancer must already have taken the pod out.
pub fn states_at_line(
    haproxy: &Haproxy,
    log: &Lines,
    line: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
) -> Option<Vec<(String, String)>> {
    let mut seen = None;
    wait_until(timeout, || {
        if seen.is_none() && log.contains(line) {
            seen = haproxy.states();
        }
        done()
    });
    seen
}

/// `pod` was DOWN in `states` (from `states_at_line`): the balancer sent it nothing more when
/// its app was stopped.
pub fn assert_was_down(
    states: &Option<Vec<(String, String)>>,
    pod: &str,
    context: &dyn Fn() -> String,
) {
    let state = states
        .as_ref()
        .and_then(|states| states.iter().find(|(name, _)| name == pod));
    assert!(
        state.is_some_and(|(_, state)| state == "DOWN"),
        "HAProxy still sent {pod} requests when its app was stopped: {states:?}\n{}",
        context()
    );
}
