//! lameduck exits with the app's status: its code, 128+N for a death by signal N, 127 for a
//! command that is not found, 126 for one that cannot be executed, 2 for its own usage errors.

use lameduck_test_support::binaries::{fixture, lameduck};
use lameduck_test_support::both_modes;
use lameduck_test_support::process::{Lameduck, Mode};
use std::process::Command;
use std::time::Duration;

fn exit_code_of(mode: Mode, args: &[&str]) -> (i32, Lameduck) {
    let mut run = Lameduck::start(mode, args);
    let code = run.wait_exit(Duration::from_secs(10));
    (code, run)
}

fn exit_codes_pass_through(mode: Mode) {
    let fixture = fixture();
    for code in [0, 1, 2, 42, 126, 127, 128, 200, 255] {
        let text = code.to_string();
        let (got, _) = exit_code_of(mode, &["--", &fixture, "exit", &text]);
        assert_eq!(got, code, "app exited {code}");
    }
}

fn death_by_signal_is_128_plus_n(mode: Mode) {
    let fixture = fixture();
    for (signal, code) in [("TERM", 143), ("KILL", 137), ("SEGV", 139)] {
        let (got, _) = exit_code_of(mode, &["--", &fixture, "crash", signal]);
        assert_eq!(got, code, "app killed by SIG{signal}");
    }
}

fn missing_command_exits_127_naming_it(mode: Mode) {
    let (code, run) = exit_code_of(mode, &["--", "/no/such/command"]);
    assert_eq!(code, 127);
    assert!(
        run.stderr
            .contains("cannot run '/no/such/command': command not found"),
        "{:#?}",
        run.stderr.all()
    );
}

fn non_executable_file_exits_126_naming_it(mode: Mode) {
    let file = std::env::temp_dir().join(format!(
        "lameduck-not-executable-{mode:?}-{}",
        std::process::id()
    ));
    std::fs::write(&file, "#!/bin/sh\nexit 0\n").expect("write file");
    let path = file.to_string_lossy().into_owned();
    let (code, run) = exit_code_of(mode, &["--", &path]);
    let _ = std::fs::remove_file(&file);
    assert_eq!(code, 126);
    assert!(
        run.stderr.contains(&format!("cannot run '{path}'")),
        "{:#?}",
        run.stderr.all()
    );
}

both_modes!(
    exit_codes_pass_through,
    death_by_signal_is_128_plus_n,
    missing_command_exits_127_naming_it,
    non_executable_file_exits_126_naming_it,
);

/// Runs lameduck directly with `args` and returns its exit code and stderr.
fn run_plain(args: &[&str]) -> (i32, String) {
    let output = Command::new(lameduck())
        .args(args)
        .output()
        .expect("run lameduck");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn bad_flag_exits_2_with_one_line() {
    let (code, stderr) = run_plain(&["--no-such-flag", "--", "true"]);
    assert_eq!(code, 2);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--no-such-flag"), "{stderr}");
}

#[test]
fn bad_duration_exits_2_with_one_line() {
    let (code, stderr) = run_plain(&["--shutdown-delay", "5", "--", "true"]);
    assert_eq!(code, 2);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--shutdown-delay") && stderr.contains("unit"),
        "{stderr}"
    );
}

#[test]
fn bad_signal_name_exits_2_with_one_line() {
    let (code, stderr) = run_plain(&["--stop-signal", "NOPE", "--", "true"]);
    assert_eq!(code, 2);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("unknown signal name 'NOPE'"), "{stderr}");
}

#[test]
fn missing_command_is_a_usage_error() {
    let (code, stderr) = run_plain(&[]);
    assert_eq!(code, 2);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("COMMAND"), "{stderr}");
}

#[test]
fn bad_env_value_is_a_usage_error() {
    let output = Command::new(lameduck())
        .env("LAMEDUCK_DRAIN_TIMEOUT", "forever")
        .args(["--", "true"])
        .output()
        .expect("run lameduck");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr.contains("--drain-timeout") && stderr.contains("forever"),
        "{stderr}"
    );
}

#[test]
fn taken_port_exits_2_before_the_app_starts() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let marker = std::env::temp_dir().join(format!("lameduck-port-taken-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let touch = format!("touch {}", marker.display());
    let (code, stderr) = run_plain(&["--listen", &addr, "--", "sh", "-c", &touch]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    assert!(
        !marker.exists(),
        "the app must not start when the port is taken"
    );
}

#[test]
fn prestop_with_no_lameduck_answering_exits_1_with_one_line() {
    // A name of its own: no lameduck of another test listens on it.
    let socket = format!("lameduck-test-nobody-{}", std::process::id());
    let (code, stderr) = run_plain(&["prestop", "--prestop-socket", &socket]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "lameduck prestop: no answer from lameduck on @{socket}: "
        )),
        "{stderr}"
    );
}

#[test]
fn lint_in_the_init_exits_2_pointing_to_the_kubectl_plugin() {
    let (code, stderr) = run_plain(&["lint", "examples/wrapper.yaml", "--format", "json"]);
    assert_eq!(code, 2);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("kubectl lameduck lint"), "{stderr}");
}
