//! Every catchable signal reaches the app, the real-time ones and those that look like faults
//! too; `--rewrite` changes what it receives; `--group` reaches the app's whole process group.

use std::os::unix::process::CommandExt;
use std::time::Duration;

use lameduck_test_support::binaries::fixture;
use lameduck_test_support::both_modes;
use lameduck_test_support::process::{Lameduck, Mode, wait_until};
use nix::libc;
use nix::sys::resource::{Resource, setrlimit};
use nix::sys::signal::Signal;

/// Every signal lameduck forwards unchanged (TERM and INT start the drain instead).
const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGPIPE,
    Signal::SIGALRM,
    Signal::SIGSTKFLT,
    Signal::SIGCONT,
    Signal::SIGTSTP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
    Signal::SIGURG,
    Signal::SIGXCPU,
    Signal::SIGXFSZ,
    Signal::SIGVTALRM,
    Signal::SIGPROF,
    Signal::SIGWINCH,
    Signal::SIGIO,
    Signal::SIGPWR,
];

fn name(signal: Signal) -> &'static str {
    signal.as_str().trim_start_matches("SIG")
}

fn every_forwarded_signal_arrives(mode: Mode) {
    let fixture = fixture();
    let mut run = Lameduck::start(mode, &["--", &fixture, "signals", "--exit-on", "none"]);
    run.expect_ready();
    for &signal in FORWARDED {
        run.signal(signal);
        run.expect_exact(name(signal));
    }
    assert!(
        run.running(),
        "lameduck must survive every forwarded signal"
    );
}

fn fault_like_signals_sent_with_kill_reach_the_app(mode: Mode) {
    let fixture = fixture();
    let mut run = Lameduck::start(mode, &["--", &fixture, "signals", "--exit-on", "none"]);
    run.expect_ready();
    for signal in [
        Signal::SIGABRT,
        Signal::SIGBUS,
        Signal::SIGTRAP,
        Signal::SIGSYS,
    ] {
        run.signal(signal);
        run.expect_exact(name(signal));
    }
    assert!(
        run.running(),
        "a signal sent with kill is not a fault of lameduck"
    );
}

fn an_abort_raised_inside_lameduck_still_crashes_it(mode: Mode) {
    let fixture = fixture();
    let mut run = Lameduck::start_with(
        mode,
        &["--", &fixture, "signals", "--exit-on", "none"],
        |command| {
            // SAFETY: only setrlimit between fork and exec; no core file is left behind.
            unsafe { command.pre_exec(|| Ok(setrlimit(Resource::RLIMIT_CORE, 0, 0)?)) };
        },
    );
    run.expect_ready();
    // tgkill is how abort(3) raises SIGABRT: si_code SI_TKILL, not SI_USER.
    let pid = run.pid.as_raw();
    // SAFETY: a plain syscall with numbers.
    let sent = unsafe { libc::syscall(libc::SYS_tgkill, pid, pid, libc::SIGABRT) };
    assert_eq!(sent, 0, "tgkill");
    let code = run.wait_exit(Duration::from_secs(10));
    assert!(code > 128, "lameduck must die by a signal, not exit {code}");
    assert!(!run.stdout.contains("ABRT"), "{:#?}", run.stdout.all());
}

fn realtime_signals_reach_the_app(mode: Mode) {
    let fixture = fixture();
    let mut run = Lameduck::start(mode, &["--", &fixture, "signals", "--exit-on", "none"]);
    run.expect_ready();
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    for (number, expected) in [
        (min, "RTMIN".to_owned()),
        (min + 5, "RTMIN+5".to_owned()),
        (max, format!("RTMIN+{}", max - min)),
    ] {
        // SAFETY: kill(2) with a pid and a signal number (nix has no Signal for these).
        assert_eq!(unsafe { libc::kill(run.pid.as_raw(), number) }, 0);
        run.expect_exact(&expected);
    }
    assert!(run.running(), "lameduck must survive real-time signals");
}

fn rewrites_apply_to_forwarded_signals(mode: Mode) {
    let fixture = fixture();
    let mut run = Lameduck::start(
        mode,
        &[
            "--rewrite",
            "USR1:USR2",
            "--rewrite",
            "1:28",
            "--",
            &fixture,
            "signals",
            "--exit-on",
            "none",
        ],
    );
    run.expect_ready();
    run.signal(Signal::SIGUSR1);
    run.expect_exact("USR2");
    run.signal(Signal::SIGHUP);
    run.expect_exact("WINCH");
    run.signal(Signal::SIGUSR2);
    run.expect_exact("USR2");
}

fn group_forwarding_reaches_a_grandchild(mode: Mode) {
    let fixture = fixture();
    let mut run = Lameduck::start(mode, &["--group", "--", &fixture, "grandchild"]);
    run.expect_line(Duration::from_secs(10), |l| {
        l.starts_with("grandchild ready")
    });
    run.expect_ready();
    run.signal(Signal::SIGUSR1);
    run.expect_line(Duration::from_secs(10), |l| l == "grandchild USR1");
    assert!(wait_for_line(&run, "USR1"), "the app itself gets it too");
}

fn without_group_only_the_app_gets_signals(mode: Mode) {
    let fixture = fixture();
    let mut run = Lameduck::start(mode, &["--", &fixture, "grandchild"]);
    run.expect_line(Duration::from_secs(10), |l| {
        l.starts_with("grandchild ready")
    });
    run.expect_ready();
    run.signal(Signal::SIGUSR1);
    run.expect_exact("USR1");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !run.stdout.contains("grandchild USR1"),
        "{:#?}",
        run.stdout.all()
    );
}

fn wait_for_line(run: &Lameduck, line: &str) -> bool {
    wait_until(Duration::from_secs(5), || run.stdout.count(line) > 0)
}

both_modes!(
    every_forwarded_signal_arrives,
    fault_like_signals_sent_with_kill_reach_the_app,
    an_abort_raised_inside_lameduck_still_crashes_it,
    realtime_signals_reach_the_app,
    rewrites_apply_to_forwarded_signals,
    group_forwarding_reaches_a_grandchild,
    without_group_only_the_app_gets_signals,
);
