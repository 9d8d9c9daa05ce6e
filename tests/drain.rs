//! The drain sequence as the README tells it: SIGTERM or a preStop hook fails readiness at once
//! while the app keeps serving, the app gets its stop signal only after the shutdown delay,
//! and anything still running at the drain timeout is killed. A SIGTERM during the delay is
//! read by what started the drain: after a broken hook it leaves the delay alone, with the hook
//! still held it sends the stop signal at once, in a drain a signal started it skips the delay.

use std::time::{Duration, Instant};

use std::io::Write;
use std::net::TcpStream;

use lameduck_test_support::binaries::{fixture, lameduck};
use lameduck_test_support::both_modes;
use lameduck_test_support::http::{get, http};
use lameduck_test_support::process::{Lameduck, Mode, prestop_exec, process_state, wait_until};
use nix::sys::signal::Signal;

const SECOND: Duration = Duration::from_secs(1);

fn start_signals_app(mode: Mode, flags: &[&str], app_flags: &[&str]) -> Lameduck {
    let fixture = fixture();
    let mut args: Vec<&str> = flags.to_vec();
    args.extend(["--", &fixture, "signals"]);
    args.extend(app_flags);
    let mut run = Lameduck::start(mode, &args);
    run.expect_ready();
    run
}

fn sigterm_fails_readiness_at_once_and_stops_the_app_after_the_delay(mode: Mode) {
    let mut run = start_signals_app(
        mode,
        &["--stop-signal", "QUIT", "--shutdown-delay", "1500ms"],
        &["--exit-code", "7"],
    );
    let addr = run.addr();
    assert!(
        wait_until(5 * SECOND, || get(addr, "/readyz").0 == 200),
        "ready before the drain"
    );

    let sent = Instant::now();
    run.signal(Signal::SIGTERM);
    assert!(
        wait_until(SECOND, || get(addr, "/readyz").0 == 503),
        "readiness fails after SIGTERM"
    );
    let (status, body) = get(addr, "/readyz");
    assert_eq!((status, body.as_str()), (503, "draining\n"));
    assert_eq!(
        get(addr, "/livez").0,
        200,
        "liveness passes during the drain"
    );
    assert!(
        !run.stdout.contains("QUIT") && !run.stdout.contains("TERM"),
        "the app is untouched during the delay"
    );

    run.expect_exact("QUIT");
    assert!(
        sent.elapsed() >= Duration::from_millis(1500),
        "stop signal came after {:?}",
        sent.elapsed()
    );
    assert_eq!(
        run.wait_exit(10 * SECOND),
        7,
        "lameduck exits with the app's status"
    );
    assert!(
        !run.stdout.contains("TERM"),
        "the app never saw SIGTERM: {:#?}",
        run.stdout.all()
    );
}

fn prestop_holds_for_the_delay_then_sigterm_needs_no_second_delay(mode: Mode) {
    let mut run = start_signals_app(
        mode,
        &["--stop-signal", "QUIT", "--shutdown-delay", "1s"],
        &[],
    );
    run.ready_addr();

    let called = Instant::now();
    let (output, held) = prestop_exec(&run.hook_socket());
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "lameduck prestop: lameduck answered: stopping\n"
    );
    assert!(
        held >= SECOND,
        "lameduck prestop answered after {held:?}, before the delay"
    );
    // As the kubelet does: SIGTERM right after the hook returns.
    run.signal_unless_gone(Signal::SIGTERM);
    run.expect_exact("QUIT");
    assert_eq!(run.wait_exit(5 * SECOND), 0);
    assert!(
        called.elapsed() < held + SECOND,
        "the delay was served once, not twice"
    );
    assert_eq!(run.stdout.count("QUIT"), 1, "stop signal sent exactly once");
}

fn repeated_prestop_calls_start_one_drain(mode: Mode) {
    let mut run = start_signals_app(
        mode,
        &[
            "--stop-signal",
            "QUIT",
            "--shutdown-delay",
            "1s",
            "--prestop-insecure",
        ],
        &[],
    );
    let addr = run.ready_addr();
    let socket = run.hook_socket();
    let first = std::thread::spawn(move || http(addr, "POST", "/prestop").0);
    let second = std::thread::spawn(move || get(addr, "/prestop").0);
    let third = std::thread::spawn(move || prestop_exec(&socket).0.status.code());
    assert_eq!(first.join().expect("first hook"), 200);
    assert_eq!(second.join().expect("second hook"), 200);
    assert_eq!(third.join().expect("third hook"), Some(0));
    assert_eq!(run.wait_exit(5 * SECOND), 0);
    assert_eq!(run.stdout.count("QUIT"), 1, "{:#?}", run.stdout.all());
}

fn a_second_sigterm_skips_the_rest_of_the_delay(mode: Mode) {
    let mut run = start_signals_app(mode, &["--shutdown-delay", "1m"], &[]);
    let addr = run.ready_addr();
    run.signal(Signal::SIGTERM);
    assert!(wait_until(SECOND, || get(addr, "/readyz").0 == 503));
    let second = Instant::now();
    run.signal(Signal::SIGTERM);
    run.expect_exact("TERM");
    assert!(second.elapsed() < 5 * SECOND);
    assert_eq!(run.wait_exit(5 * SECOND), 0);
    assert!(
        run.stderr
            .contains("a second shutdown signal in a drain a signal started"),
        "{:#?}",
        run.stderr.all()
    );
}

/// Starts a drain with an HTTP `/prestop` call whose connection stays open, as the kubelet's
/// hook client holds it; returns the connection once readiness fails.
fn hold_a_hook(run: &Lameduck) -> TcpStream {
    let addr = run.ready_addr();
    let mut hook = TcpStream::connect(addr).expect("connect");
    hook.write_all(
        b"GET /prestop HTTP/1.1\r\nHost: pod\r\nUser-Agent: kube-lifecycle/1.32\r\n\r\n",
    )
    .expect("send the hook");
    assert!(
        wait_until(5 * SECOND, || get(addr, "/readyz").0 == 503),
        "the hook started no drain: {:#?}",
        run.stderr.all()
    );
    hook
}

fn a_sigterm_after_a_broken_hook_leaves_the_delay_to_run_out(mode: Mode) {
    let mut run = start_signals_app(mode, &["--shutdown-delay", "2s", "--prestop-insecure"], &[]);
    let began = Instant::now();
    let hook = hold_a_hook(&run);
    drop(hook);
    // As the kubelet does after a failed hook: SIGTERM at once.
    run.signal(Signal::SIGTERM);
    run.expect_exact("TERM");
    let stopped = began.elapsed();
    assert!(
        stopped >= 2 * SECOND,
        "the stop signal came {stopped:?} after the hook, before the delay: {:#?}",
        run.stderr.all()
    );
    assert_eq!(run.wait_exit(5 * SECOND), 0);
    assert!(
        run.stderr
            .contains("after the preStop hook that started the drain broke"),
        "{:#?}",
        run.stderr.all()
    );
}

fn a_sigterm_while_the_hook_is_held_sends_the_stop_signal_at_once(mode: Mode) {
    let mut run = start_signals_app(mode, &["--shutdown-delay", "1m", "--prestop-insecure"], &[]);
    let _hook = hold_a_hook(&run);
    let sent = Instant::now();
    run.signal(Signal::SIGTERM);
    run.expect_exact("TERM");
    assert!(sent.elapsed() < 5 * SECOND, "{:?}", sent.elapsed());
    assert_eq!(run.wait_exit(5 * SECOND), 0);
    assert!(
        run.stderr.contains("the kubelet gave up on it"),
        "{:#?}",
        run.stderr.all()
    );
}

fn an_app_that_ignores_its_stop_signal_is_killed_at_the_drain_timeout(mode: Mode) {
    let mut run = start_signals_app(
        mode,
        &["--shutdown-delay", "0", "--drain-timeout", "1s"],
        &["--exit-on", "none"],
    );
    let app = run.app_pid;
    let stopped = Instant::now();
    run.signal(Signal::SIGTERM);
    run.expect_exact("TERM");
    assert_eq!(run.wait_exit(10 * SECOND), 137);
    assert!(
        stopped.elapsed() >= SECOND,
        "killed only after the drain timeout"
    );
    assert!(
        run.stderr.contains("drain timeout ran out; sent SIGKILL"),
        "{:#?}",
        run.stderr.all()
    );
    if let Some(app) = app {
        assert_eq!(process_state(app), None, "no process of the app is left");
    }
}

fn ready_check_keeps_readiness_failing_until_the_app_listens(mode: Mode) {
    let port = free_port();
    let target = format!("127.0.0.1:{port}");
    let check = format!("http://{target}/");
    let fixture = fixture();
    let mut run = Lameduck::start(
        mode,
        &[
            "--ready-check",
            &check,
            "--ready-interval",
            "100ms",
            "--",
            &fixture,
            "serve-after",
            "1000ms",
            &target,
        ],
    );
    run.expect_ready();
    let addr = run.addr();
    assert_eq!(
        get(addr, "/readyz"),
        (503, "starting\n".into()),
        "not ready before the app listens"
    );
    run.expect_exact("listening");
    assert!(
        wait_until(5 * SECOND, || get(addr, "/readyz").0 == 200),
        "ready once the app answers"
    );
    run.signal(Signal::SIGINT);
    assert!(wait_until(SECOND, || get(addr, "/readyz").0 == 503));
}

fn a_crash_during_the_delay_exits_at_once_with_the_crash_status(mode: Mode) {
    let mut run = start_signals_app(
        mode,
        &["--shutdown-delay", "1m"],
        &["--exit-on", "USR1", "--exit-code", "3"],
    );
    let addr = run.ready_addr();
    run.signal(Signal::SIGTERM);
    assert!(wait_until(SECOND, || get(addr, "/readyz").0 == 503));
    let crashed = Instant::now();
    run.signal(Signal::SIGUSR1);
    assert_eq!(run.wait_exit(10 * SECOND), 3);
    assert!(
        crashed.elapsed() < 5 * SECOND,
        "no waiting out the delay once the app is gone"
    );
}

fn readiness_can_keep_passing_during_the_delay(mode: Mode) {
    let mut run = start_signals_app(
        mode,
        &["--readiness-during-delay", "pass", "--shutdown-delay", "1s"],
        &[],
    );
    let addr = run.ready_addr();
    run.signal(Signal::SIGTERM);
    assert!(wait_until(SECOND, || get(addr, "/status")
        .1
        .contains("\"phase\":\"draining\"")));
    assert_eq!(
        get(addr, "/readyz").0,
        200,
        "still passing during the delay"
    );
    run.expect_exact("TERM");
    assert_eq!(run.wait_exit(5 * SECOND), 0);
}

both_modes!(
    sigterm_fails_readiness_at_once_and_stops_the_app_after_the_delay,
    prestop_holds_for_the_delay_then_sigterm_needs_no_second_delay,
    repeated_prestop_calls_start_one_drain,
    a_sigterm_after_a_broken_hook_leaves_the_delay_to_run_out,
    a_sigterm_while_the_hook_is_held_sends_the_stop_signal_at_once,
    a_second_sigterm_skips_the_rest_of_the_delay,
    an_app_that_ignores_its_stop_signal_is_killed_at_the_drain_timeout,
    ready_check_keeps_readiness_failing_until_the_app_listens,
    a_crash_during_the_delay_exits_at_once_with_the_crash_status,
    readiness_can_keep_passing_during_the_delay,
);

#[test]
fn status_reports_phase_pid_and_settings() {
    let run = start_signals_app(
        Mode::Subreaper,
        &["--stop-signal", "QUIT", "--shutdown-delay", "1m30s"],
        &[],
    );
    let addr = run.ready_addr();
    let (status, body) = get(addr, "/status");
    assert_eq!(status, 200);
    let json: serde_json::Value = serde_json::from_str(&body).expect("status is JSON");
    assert_eq!(json["phase"], "ready");
    assert_eq!(
        json["app_pid"].as_i64(),
        run.app_pid.map(|p| i64::from(p.as_raw()))
    );
    assert_eq!(json["shutdown_delay"], "1m30s");
    assert_eq!(json["stop_signal"], "QUIT");
    let phases: Vec<&str> = json["transitions"]
        .as_array()
        .expect("transitions")
        .iter()
        .filter_map(|t| t["phase"].as_str())
        .collect();
    assert_eq!(phases, ["starting", "ready"]);
}

#[test]
fn unknown_paths_are_404_and_wrong_methods_405() {
    let run = start_signals_app(Mode::Subreaper, &[], &[]);
    let addr = run.addr();
    assert_eq!(get(addr, "/nope").0, 404);
    assert_eq!(http(addr, "POST", "/readyz").0, 405);
    assert_eq!(http(addr, "DELETE", "/prestop").0, 405);
    assert_eq!(get(addr, "/livez"), (200, "ok\n".into()));
}

#[test]
fn a_grace_period_too_short_for_the_delay_is_a_usage_error() {
    let output = std::process::Command::new(lameduck())
        .args([
            "--shutdown-delay",
            "10s",
            "--grace-period",
            "10s",
            "--",
            "true",
        ])
        .output()
        .expect("run lameduck");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr.contains("does not fit in --grace-period 10s"),
        "{stderr}"
    );
}

#[test]
fn a_grace_period_cuts_the_drain_short_so_lameduck_kills_first() {
    let mut run = start_signals_app(
        Mode::Subreaper,
        &[
            "--shutdown-delay",
            "0",
            "--drain-timeout",
            "1m",
            "--grace-period",
            "3s",
        ],
        &["--exit-on", "none"],
    );
    assert!(
        run.stderr.contains("the drain is cut short there"),
        "{:#?}",
        run.stderr.all()
    );
    let started = Instant::now();
    run.signal(Signal::SIGTERM);
    assert_eq!(run.wait_exit(10 * SECOND), 137);
    assert!(
        started.elapsed() >= SECOND && started.elapsed() < 5 * SECOND,
        "killed after ~1s: {:?}",
        started.elapsed()
    );
}

#[test]
fn with_a_grace_period_the_final_kill_counts_from_the_start_of_the_drain() {
    // The delay is skipped by a second SIGTERM, so the stop signal comes early; the kill still
    // comes at the grace period less 2s after the drain began, not a drain timeout after it.
    let mut run = start_signals_app(
        Mode::Pid1,
        &[
            "--shutdown-delay",
            "2s",
            "--drain-timeout",
            "1m",
            "--grace-period",
            "5s",
        ],
        &["--exit-on", "none"],
    );
    let addr = run.ready_addr();
    let started = Instant::now();
    run.signal(Signal::SIGTERM);
    assert!(wait_until(SECOND, || get(addr, "/readyz").0 == 503));
    run.signal(Signal::SIGTERM);
    run.expect_exact("TERM");
    assert!(
        started.elapsed() < 2 * SECOND,
        "the second SIGTERM skipped the delay"
    );
    assert_eq!(run.wait_exit(10 * SECOND), 137);
    let killed = started.elapsed();
    assert!(
        killed >= Duration::from_millis(2900) && killed < 6 * SECOND,
        "killed {killed:?} after the drain began"
    );
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}
