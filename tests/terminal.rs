//! With a terminal on stdin (`docker run -it`), the app is the terminal's foreground process
//! group, so Ctrl-C reaches the app itself, as it would without lameduck.

use lameduck_test_support::binaries::{fixture, lameduck};
use lameduck_test_support::process::wait_until;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn ctrl_c_on_a_terminal_reaches_the_app_directly() {
    // `script` gives the command a pseudo-terminal; what we write to its stdin is typed there.
    let inner = format!(
        "exec {} --listen 127.0.0.1:0 --shutdown-delay 0 -- {} signals",
        lameduck().display(),
        fixture()
    );
    let mut session = Command::new("script")
        .args(["-q", "-e", "-c", &inner, "/dev/null"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("script (util-linux) runs");
    let mut stdout = session.stdout.take().expect("stdout");
    let output = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = std::sync::Arc::clone(&output);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .expect("output")
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let seen = |text: &str| output.lock().expect("output").contains(text);
    assert!(
        wait_until(Duration::from_secs(10), || seen("ready pid=")),
        "{}",
        output.lock().expect("output")
    );
    session
        .stdin
        .as_mut()
        .expect("stdin")
        .write_all(b"\x03")
        .expect("type Ctrl-C");
    let mut status = None;
    assert!(wait_until(Duration::from_secs(10), || {
        status = session.try_wait().expect("try_wait");
        status.is_some()
    }));
    let text = output.lock().expect("output").clone();
    // The terminal sent SIGINT to the app's group; had lameduck caught it instead, the app
    // would have got its stop signal, TERM.
    assert!(text.contains("INT"), "{text}");
    assert!(!text.contains("TERM"), "{text}");
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{text}");
}

/// Runs `lameduck ARGS -- fixture exit 0` on a pseudo-terminal; returns what the terminal showed.
fn on_a_terminal(args: &str) -> String {
    let inner = format!(
        "exec {} --listen 127.0.0.1:0 {args} -- {} exit 0",
        lameduck().display(),
        fixture()
    );
    let output = Command::new("script")
        .args(["-q", "-e", "-c", &inner, "/dev/null"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("script (util-linux) runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn on_a_terminal_only_warnings_are_logged_by_default() {
    // --prestop-insecure is one setting that warns at start.
    let text = on_a_terminal("--prestop-insecure");
    assert!(text.contains("WARN"), "{text}");
    assert!(!text.contains("INFO"), "{text}");
}

#[test]
fn on_a_terminal_an_explicit_log_level_wins() {
    let text = on_a_terminal("--log-level info");
    assert!(text.contains("started the app"), "{text}");
}
