//! Every catchable signal reaches the app; `--rewrite` changes what it receives; `--group`
//! reaches the app's whole process group.

mod common;

use std::time::Duration;

use common::{Lameduck, Mode, fixture};
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
    common::wait_until(Duration::from_secs(5), || run.stdout.count(line) > 0)
}

both_modes!(
    every_forwarded_signal_arrives,
    rewrites_apply_to_forwarded_signals,
    group_forwarding_reaches_a_grandchild,
    without_group_only_the_app_gets_signals,
);
