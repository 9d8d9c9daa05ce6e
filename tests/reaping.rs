//! lameduck reaps every zombie, as PID 1 and as a subreaper, and leaves no process of the app
//! behind when the app exits first.

use std::time::Duration;

use lameduck_test_support::binaries::fixture;
use lameduck_test_support::both_modes;
use lameduck_test_support::process::{Lameduck, Mode, descendants, process_state, wait_until};
use nix::sys::signal::Signal;

fn zombies_under(run: &Lameduck) -> usize {
    descendants(run.pid)
        .into_iter()
        .filter(|&pid| process_state(pid) == Some('Z'))
        .count()
}

fn five_thousand_orphans_leave_no_zombie(mode: Mode) {
    let fixture = fixture();
    let mut run = Lameduck::start(mode, &["--", &fixture, "orphans", "5000"]);
    run.expect_line(Duration::from_secs(60), |l| l == "orphaned 5000");
    run.expect_ready();
    let clean = wait_until(Duration::from_secs(5), || {
        zombies_under(&run) == 0 && descendants(run.pid).len() == 1
    });
    assert!(clean, "zombies left: {}", zombies_under(&run));
    run.signal(Signal::SIGTERM);
}

fn leftover_children_are_terminated_when_the_app_exits(mode: Mode) {
    let fixture = fixture();
    let mut run = Lameduck::start(mode, &["--", &fixture, "leave-child"]);
    let line = run.expect_line(Duration::from_secs(10), |l| {
        l.starts_with("child ready pid=")
    });
    assert_eq!(
        run.wait_exit(Duration::from_secs(10)),
        0,
        "the app's own status"
    );
    assert!(
        run.stdout.contains("child TERM"),
        "the leftover child gets SIGTERM: {:#?}",
        run.stdout.all()
    );
    let child: i32 = line
        .trim_start_matches("child ready pid=")
        .parse()
        .expect("pid");
    if mode == Mode::Subreaper {
        assert_eq!(
            process_state(nix::unistd::Pid::from_raw(child)),
            None,
            "leftover child is gone"
        );
    }
    assert!(
        run.stderr.contains("stopping what it left behind"),
        "{:#?}",
        run.stderr.all()
    );
}

both_modes!(
    five_thousand_orphans_leave_no_zombie,
    leftover_children_are_terminated_when_the_app_exits
);
