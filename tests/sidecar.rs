//! `lameduck sidecar` next to a real, unmodified nginx: its preStop hook (`lameduck prestop` in
//! the app's container, or `/prestop` with a token) drains nginx inside the hook (readiness fails, the delay passes, nginx gets QUIT, the answer comes once nginx has
//! exited), it finds nginx by pid file or by name, and never signals anything but its target.

use std::time::{Duration, Instant};

use lameduck_test_support::binaries::{fixture, lameduck};
use lameduck_test_support::http::{get, http_with};
use lameduck_test_support::network::free_addr;
use lameduck_test_support::nginx::Nginx;
use lameduck_test_support::process::{
    Lameduck, Lines, Mode, listening_addr, prestop_exec, wait_until,
};
use nix::sys::signal::Signal;

const SECOND: Duration = Duration::from_secs(1);

fn sidecar_for(nginx: &Nginx, extra: &[&str]) -> Lameduck {
    let pid_file = nginx.config.pid_file().display().to_string();
    let mut args = vec!["sidecar", "--pid-file", &pid_file, "--stop-signal", "QUIT"];
    args.extend(extra);
    Lameduck::start(Mode::Subreaper, &args)
}

#[test]
fn prestop_drains_nginx_and_answers_once_it_has_exited() {
    let mut nginx = Nginx::start("sidecar-prestop", free_addr());
    let mut sidecar = sidecar_for(
        &nginx,
        &["--shutdown-delay", "1s", "--drain-timeout", "10s"],
    );
    let addr = sidecar.addr();
    assert!(
        wait_until(5 * SECOND, || get(addr, "/readyz").0 == 200),
        "{:#?}",
        sidecar.stderr.all()
    );

    let called = Instant::now();
    let socket = sidecar.hook_socket();
    let hook = std::thread::spawn(move || prestop_exec(&socket).0);
    assert!(
        wait_until(SECOND, || get(addr, "/readyz").0 == 503),
        "readiness fails during the hook"
    );
    assert_eq!(
        get(nginx.config.addr, "/fast").0,
        200,
        "nginx keeps serving during the delay"
    );
    let output = hook.join().expect("hook");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "lameduck prestop: lameduck answered: exited\n"
    );
    assert!(called.elapsed() >= SECOND, "the hook held for the delay");
    assert!(
        wait_until(2 * SECOND, || nginx.exit_code().is_some()),
        "nginx has exited when the hook returns"
    );
    assert_eq!(nginx.exit_code(), Some(0), "a graceful QUIT");

    // As a native sidecar, its own SIGTERM comes after the app has gone: exit at once.
    sidecar.signal(Signal::SIGTERM);
    assert_eq!(sidecar.wait_exit(2 * SECOND), 0);
}

#[test]
fn finds_nginx_by_name_in_a_shared_pid_namespace() {
    // A PID namespace where a shell is PID 1, as the pause container is with shareProcessNamespace.
    let nginx_conf = lameduck_test_support::nginx::NginxConfig::new("sidecar-name", free_addr());
    let nginx = nginx_conf
        .command()
        .iter()
        .map(|a| format!("'{a}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let lameduck = lameduck().display().to_string();
    let script = format!(
        "{nginx} & {lameduck} sidecar --listen 127.0.0.1:0 --prestop-token s3cret --process-name nginx --stop-signal QUIT --shutdown-delay 500ms & wait"
    );
    let mut pod = std::process::Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            "sh",
            "-c",
            &script,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start the pod");
    let stderr = Lines::follow_stream(pod.stderr.take().expect("stderr"));
    let addr = listening_addr(&stderr);
    assert!(
        wait_until(5 * SECOND, || get(addr, "/readyz").0 == 200),
        "{:#?}",
        stderr.all()
    );
    assert!(stderr.contains("found the app"), "{:#?}", stderr.all());
    let (status, _) = http_with(
        addr,
        "GET",
        "/prestop",
        &[("Authorization", "Bearer s3cret")],
        10 * SECOND,
    );
    assert_eq!(status, 200);
    assert!(
        wait_until(2 * SECOND, || std::net::TcpStream::connect(nginx_conf.addr)
            .is_err()),
        "nginx stopped"
    );
    let _ = pod.kill();
    let _ = pod.wait();
}

#[test]
fn its_own_sigterm_before_the_hook_drains_the_app_first() {
    let mut nginx = Nginx::start("sidecar-sigterm", free_addr());
    let mut sidecar = sidecar_for(&nginx, &["--shutdown-delay", "500ms"]);
    sidecar.ready_addr();
    sidecar.signal(Signal::SIGTERM);
    assert_eq!(sidecar.wait_exit(5 * SECOND), 0);
    assert_eq!(
        nginx.exit_code(),
        Some(0),
        "nginx was drained before the sidecar left"
    );
    assert!(
        sidecar
            .stderr
            .contains("finishing the drain before exiting"),
        "{:#?}",
        sidecar.stderr.all()
    );
}

#[test]
fn keeps_serving_and_retries_until_the_pid_file_appears() {
    let listen = free_addr();
    let config = lameduck_test_support::nginx::NginxConfig::new("sidecar-late", listen);
    let pid_file = config.pid_file().display().to_string();
    let sidecar = Lameduck::start(Mode::Subreaper, &["sidecar", "--pid-file", &pid_file]);
    let addr = sidecar.addr();
    assert_eq!(get(addr, "/readyz"), (503, "starting\n".into()));
    assert_eq!(get(addr, "/livez").0, 200);
    assert!(wait_until(3 * SECOND, || sidecar
        .stderr
        .contains("waiting for the app to start")));
    drop(config);
    let nginx = Nginx::start("sidecar-late", listen);
    assert!(
        wait_until(5 * SECOND, || get(addr, "/readyz").0 == 200),
        "{:#?}",
        sidecar.stderr.all()
    );
    let status: serde_json::Value = serde_json::from_str(&get(addr, "/status").1).expect("json");
    assert_eq!(
        status["app_pid"].as_i64(),
        nginx.config.master_pid().map(|p| i64::from(p.as_raw()))
    );
    assert_eq!(status["mode"], "sidecar");
}

#[test]
fn an_app_that_ignores_its_stop_signal_is_killed_at_the_drain_timeout() {
    use std::os::unix::process::CommandExt;
    let mut app = std::process::Command::new(fixture())
        .args(["signals", "--exit-on", "none"])
        .process_group(0)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start app");
    let pid_file = std::env::temp_dir().join(format!(
        "lameduck-sidecar-stubborn-{}.pid",
        std::process::id()
    ));
    std::fs::write(&pid_file, app.id().to_string()).expect("pid file");
    let pid_path = pid_file.display().to_string();
    let sidecar = Lameduck::start(
        Mode::Subreaper,
        &[
            "sidecar",
            "--pid-file",
            &pid_path,
            "--shutdown-delay",
            "0",
            "--drain-timeout",
            "1s",
        ],
    );
    sidecar.ready_addr();
    let (output, _) = prestop_exec(&sidecar.hook_socket());
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let mut code = None;
    assert!(wait_until(2 * SECOND, || {
        code = app.try_wait().expect("try_wait");
        code.is_some()
    }));
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(code.and_then(|s| s.signal()), Some(9), "killed by SIGKILL");
    assert!(
        sidecar
            .stderr
            .contains("drain timeout ran out; sent SIGKILL"),
        "{:#?}",
        sidecar.stderr.all()
    );
    let _ = std::fs::remove_file(&pid_file);
}

#[test]
fn without_a_target_it_only_waits_out_the_delay_and_says_so() {
    let mut sidecar = Lameduck::start(Mode::Subreaper, &["sidecar", "--shutdown-delay", "500ms"]);
    let addr = sidecar.ready_addr();
    assert!(
        sidecar.stderr.contains("only waits out the shutdown delay"),
        "{:#?}",
        sidecar.stderr.all()
    );
    let status: serde_json::Value = serde_json::from_str(&get(addr, "/status").1).expect("json");
    assert_eq!(status["mode"], "sidecar (delay only)");
    let (output, held) = prestop_exec(&sidecar.hook_socket());
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    assert!(held >= Duration::from_millis(500), "{held:?}");
    sidecar.signal(Signal::SIGTERM);
    assert_eq!(sidecar.wait_exit(2 * SECOND), 0);
}

#[test]
fn as_pid_1_it_knows_it_cannot_see_the_app() {
    let sidecar = Lameduck::start(Mode::Pid1, &["sidecar", "--process-name", "nginx"]);
    sidecar.ready_addr();
    assert!(
        sidecar
            .stderr
            .contains("does not share its process namespace"),
        "{:#?}",
        sidecar.stderr.all()
    );
}
