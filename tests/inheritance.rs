//! What lameduck's parent passes on: a blocked signal mask must not silence the drain, and the
//! signals the parent ignored stay ignored for the app, as after a plain exec.

use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

use lameduck_test_support::binaries::fixture;
use lameduck_test_support::both_modes;
use lameduck_test_support::http::get;
use lameduck_test_support::process::{Lameduck, Mode, wait_until};
use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal};

/// Makes lameduck's parent block `blocked` and ignore `ignored` before exec, as a runtime or a
/// shell's `trap '' SIG` can.
fn inherit(command: &mut Command, blocked: &'static [Signal], ignored: &'static [Signal]) {
    // SAFETY: between fork and exec only sigprocmask and sigaction are called.
    unsafe {
        command.pre_exec(move || {
            let mut set = SigSet::empty();
            for &s in blocked {
                set.add(s);
            }
            signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None)?;
            for &s in ignored {
                signal::signal(s, SigHandler::SigIgn)?;
            }
            Ok(())
        });
    }
}

fn a_blocked_sigterm_still_starts_the_drain(mode: Mode) {
    let fixture = fixture();
    let mut run = Lameduck::start_with(
        mode,
        &["--shutdown-delay", "1s", "--", &fixture, "signals"],
        |command| inherit(command, &[Signal::SIGTERM], &[]),
    );
    run.expect_ready();
    let addr = run.ready_addr();
    run.signal(Signal::SIGTERM);
    assert!(
        wait_until(Duration::from_secs(5), || get(addr, "/readyz").0 == 503),
        "no drain started: {:#?}",
        run.stderr.all()
    );
    run.expect_exact("TERM");
    assert_eq!(run.wait_exit(Duration::from_secs(10)), 0);
}

fn signals_the_parent_ignored_stay_ignored_for_the_app(mode: Mode) {
    let fixture = fixture();
    let mut run = Lameduck::start_with(mode, &["--", &fixture, "masks"], |command| {
        inherit(
            command,
            &[Signal::SIGTERM, Signal::SIGUSR2],
            &[Signal::SIGINT, Signal::SIGTTOU, Signal::SIGUSR1],
        )
    });
    let line = run.expect_line(Duration::from_secs(10), |l| l.starts_with("ignored="));
    let mask = |name: &str| {
        let hex = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {line}"));
        u64::from_str_radix(hex, 16).unwrap_or_else(|_| panic!("{line}"))
    };
    let bit = |s: Signal| 1u64 << (s as i32 - 1);
    // The fixture, a Rust program, ignores SIGPIPE itself before it looks; the rest is what
    // this test's own process ignores (and so passes on) plus what the parent added.
    let pipe = bit(Signal::SIGPIPE);
    assert_eq!(
        mask("ignored=") & !pipe,
        (ignored_here() & !pipe)
            | bit(Signal::SIGINT)
            | bit(Signal::SIGTTOU)
            | bit(Signal::SIGUSR1),
        "{line}"
    );
    assert_eq!(
        mask("blocked="),
        0,
        "the app starts with nothing blocked: {line}"
    );
}

/// The signals this test process ignores, from /proc/self/status.
fn ignored_here() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("read status");
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("SigIgn:"))
        .expect("SigIgn");
    u64::from_str_radix(hex.trim(), 16).expect("hex mask")
}

both_modes!(
    a_blocked_sigterm_still_starts_the_drain,
    signals_the_parent_ignored_stay_ignored_for_the_app,
);
