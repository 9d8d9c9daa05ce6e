//! lameduck as the most boring process in the pod: /prestop guarded by a token, an HTTP server
//! that slow or abusive clients cannot stall, no privileges needed, survival of a closed log
//! pipe and of signal storms, and impossible settings refused before the app starts.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use lameduck_test_support::binaries::{fixture, lameduck};
use lameduck_test_support::http::{get, http_with};
use lameduck_test_support::process::{Lameduck, Lines, Mode, pid1_of, prestop_exec, wait_until};
use nix::sys::signal::{Signal, kill};

const SECOND: Duration = Duration::from_secs(1);

fn signals_app(mode: Mode, flags: &[&str]) -> Lameduck {
    let fixture = fixture();
    let mut args: Vec<&str> = flags.to_vec();
    args.extend(["--", &fixture, "signals"]);
    let mut run = Lameduck::start(mode, &args);
    run.expect_ready();
    run
}

#[test]
fn prestop_without_the_token_is_refused_and_starts_nothing() {
    let mut run = signals_app(
        Mode::Subreaper,
        &["--prestop-token", "s3cret", "--shutdown-delay", "300ms"],
    );
    let addr = run.ready_addr();
    for headers in [
        vec![],
        vec![("Authorization", "Bearer wrong")],
        vec![("Authorization", "s3cret")],
        vec![("Authorization", "Bearer s3cret2")],
    ] {
        let (status, _) = http_with(addr, "GET", "/prestop", &headers, 5 * SECOND);
        assert_eq!(status, 401, "{headers:?}");
    }
    assert_eq!(
        get(addr, "/readyz").0,
        200,
        "a refused call starts no drain"
    );
    assert_eq!(get(addr, "/livez").0, 200, "probes need no token");
    let (status, _) = http_with(
        addr,
        "POST",
        "/prestop",
        &[("Authorization", "Bearer s3cret")],
        5 * SECOND,
    );
    assert_eq!(status, 200);
    assert_eq!(run.wait_exit(5 * SECOND), 0);
    assert!(
        !run.stderr.contains("s3cret"),
        "the token never reaches the log"
    );
}

#[test]
fn with_default_flags_http_prestop_is_refused_and_starts_nothing() {
    let mut run = signals_app(Mode::Subreaper, &["--shutdown-delay", "300ms"]);
    let addr = run.ready_addr();
    for method in ["GET", "POST"] {
        let (status, body) = http_with(addr, method, "/prestop", &[], 5 * SECOND);
        assert_eq!(status, 403, "{method}");
        assert!(body.contains("lameduck prestop"), "{body:?}");
    }
    let (status, _) = http_with(
        addr,
        "GET",
        "/prestop",
        &[("Authorization", "Bearer anything")],
        5 * SECOND,
    );
    assert_eq!(status, 403, "no token configured means no token accepted");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        get(addr, "/readyz").0,
        200,
        "a refused call starts no drain"
    );
    assert!(run.running(), "{:#?}", run.stderr.all());
    assert!(!run.stdout.contains("TERM"), "the app was never signalled");
}

#[test]
fn prestop_insecure_lets_anyone_start_a_drain_and_says_so_at_start() {
    let mut run = signals_app(
        Mode::Subreaper,
        &["--prestop-insecure", "--shutdown-delay", "300ms"],
    );
    let addr = run.ready_addr();
    assert!(wait_until(5 * SECOND, || run.stderr.contains(
        "anyone who can reach this address can start a drain"
    )));
    assert_eq!(get(addr, "/prestop").0, 200);
    assert_eq!(run.wait_exit(5 * SECOND), 0);
}

/// A process killed when dropped; with `unshare --kill-child`, everything it started too.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_hook_socket_answers_only_inside_its_network_namespace() {
    let socket = format!("lameduck-test-netns-{}", std::process::id());
    let fixture = fixture();
    // The pod: lameduck in a network namespace of its own (0.0.0.0 there is its own, down lo).
    let mut pod = Command::new("unshare")
        .args(["--net", "--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(lameduck())
        .args(["--listen", "0.0.0.0:0", "--prestop-socket", &socket])
        .args(["--shutdown-delay", "300ms", "--", &fixture, "signals"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start unshare");
    let log = Lines::follow_stream(pod.stderr.take().expect("stderr"));
    let mut pod = Killed(pod);
    let pid = pid1_of(&mut pod.0).expect("lameduck's pid");
    let listed = format!("@{socket}");
    assert!(
        wait_until(10 * SECOND, || {
            std::fs::read_to_string(format!("/proc/{pid}/net/unix"))
                .is_ok_and(|table| table.contains(&listed))
        }),
        "the hook socket never listened: {:#?}",
        log.all()
    );
    let host_table = std::fs::read_to_string("/proc/self/net/unix").expect("/proc/self/net/unix");
    assert!(!host_table.contains(&listed), "the socket is seen outside");

    let (outside, _) = prestop_exec(&socket);
    let said = String::from_utf8_lossy(&outside.stderr);
    assert_eq!(outside.status.code(), Some(1), "{said}");
    assert!(said.contains("no answer from lameduck"), "{said}");
    std::thread::sleep(SECOND);
    assert!(
        pod.0.try_wait().expect("try_wait").is_none()
            && !log.contains("sent the app its drain signal"),
        "a call from outside started a drain: {:#?}",
        log.all()
    );

    let inside = Command::new("nsenter")
        .arg(format!("--net=/proc/{pid}/ns/net"))
        .arg(lameduck())
        .args(["prestop", "--prestop-socket", &socket])
        .stdin(Stdio::null())
        .output()
        .expect("run nsenter");
    let answer = String::from_utf8_lossy(&inside.stdout);
    assert_eq!(
        inside.status.code(),
        Some(0),
        "{answer}{}",
        String::from_utf8_lossy(&inside.stderr)
    );
    assert!(answer.contains("lameduck answered"), "{answer}");
    assert!(
        wait_until(5 * SECOND, || pod.0.try_wait().ok().flatten().is_some()),
        "the drain started inside did not end: {:#?}",
        log.all()
    );
}

#[test]
fn a_slow_client_is_cut_off_and_never_delays_the_probes() {
    let run = signals_app(Mode::Subreaper, &[]);
    let addr = run.addr();
    let mut slow = TcpStream::connect(addr).expect("connect");
    slow.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")
        .expect("half a head");
    let started = Instant::now();
    assert_eq!(
        get(addr, "/readyz").0,
        200,
        "probes answer while a slow client holds a connection"
    );
    assert!(started.elapsed() < SECOND);
    slow.set_read_timeout(Some(10 * SECOND)).expect("timeout");
    let mut rest = Vec::new();
    let _ = slow.read_to_end(&mut rest);
    let held = started.elapsed();
    assert!(
        held < 6 * SECOND,
        "the slow client was cut off after {held:?}"
    );
}

#[test]
fn an_oversized_request_head_is_refused() {
    let run = signals_app(Mode::Subreaper, &[]);
    let addr = run.addr();
    let big = "x".repeat(64 * 1024);
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(5 * SECOND)).expect("timeout");
    let _ = stream
        .write_all(format!("GET /readyz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes());
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    assert!(
        !response.starts_with("HTTP/1.1 200"),
        "{}",
        &response[..response.len().min(80)]
    );
    assert_eq!(get(addr, "/readyz").0, 200);
}

#[test]
fn a_thousand_idle_connections_do_not_block_the_probes() {
    let run = signals_app(Mode::Pid1, &[]);
    let addr = run.addr();
    let idle: Vec<TcpStream> = (0..1000)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    assert_eq!(idle.len(), 1000);
    let started = Instant::now();
    for _ in 0..20 {
        assert_eq!(get(addr, "/readyz").0, 200);
    }
    assert!(
        started.elapsed() < 5 * SECOND,
        "20 probes took {:?}",
        started.elapsed()
    );
}

#[test]
fn at_the_connection_cap_the_oldest_connection_makes_room_for_a_probe() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("room for 1,100 sockets in the test");
    let run = signals_app(Mode::Subreaper, &[]);
    let addr = run.addr();
    let mut idle: Vec<TcpStream> = (0..1100)
        .filter_map(|_| TcpStream::connect(addr).ok())
        .collect();
    assert_eq!(idle.len(), 1100);
    for _ in 0..20 {
        assert_eq!(
            get(addr, "/readyz").0,
            200,
            "a probe gets in past 1,100 idle connections"
        );
    }
    // The oldest idle connection was closed to make room, well before the 3s head timeout.
    let oldest = &mut idle[0];
    oldest.set_read_timeout(Some(SECOND)).expect("timeout");
    let mut byte = [0u8; 1];
    match oldest.read(&mut byte) {
        Ok(0) => {}
        Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the oldest idle connection is still open: {other:?}"),
    }
}

/// The latency at quantile `q` of `sorted`.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

#[test]
fn ten_thousand_connections_during_a_held_hook_neither_break_it_nor_keep_probes_out() {
    use lameduck_test_support::kubelet::http_get;
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    const HOSTILE: usize = 10_000;
    const DELAY: Duration = Duration::from_secs(6);
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    assert!(
        hard > HOSTILE as u64 + 1000,
        "RLIMIT_NOFILE hard limit {hard} is too low"
    );
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("room for the sockets in the test");
    let mut run = signals_app(
        Mode::Pid1,
        &["--shutdown-delay", "6s", "--prestop-token", "s3cret"],
    );
    let addr = run.ready_addr();
    let socket = run.hook_socket();

    let began = Instant::now();
    let mut hook = TcpStream::connect(addr).expect("connect the hook");
    hook.write_all(
        b"GET /prestop HTTP/1.1\r\nHost: pod\r\nUser-Agent: kube-lifecycle/1.32\r\n\
          Authorization: Bearer s3cret\r\n\r\n",
    )
    .expect("send the hook");
    let http_hook = std::thread::spawn(move || {
        hook.set_read_timeout(Some(10 * SECOND)).expect("timeout");
        let mut answer = [0u8; 512];
        let read = hook.read(&mut answer).unwrap_or(0);
        (
            began.elapsed(),
            String::from_utf8_lossy(&answer[..read]).into_owned(),
        )
    });
    let exec_hook = std::thread::spawn(move || prestop_exec(&socket));
    assert!(wait_until(5 * SECOND, || get(addr, "/readyz").0 == 503));

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probing = std::sync::Arc::clone(&done);
    let probes = std::thread::spawn(move || {
        let mut answers = Vec::new();
        while !probing.load(std::sync::atomic::Ordering::SeqCst) && answers.len() < 2000 {
            let sent = Instant::now();
            // A probe with the kubelet's default 1s timeout.
            answers.push((http_get(addr, "/readyz", SECOND), sent.elapsed()));
            std::thread::sleep(Duration::from_millis(10));
        }
        answers
    });
    // Four openers, each bounded in count and in time: all within the delay.
    let openers: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let mut streams = Vec::with_capacity(HOSTILE / 4);
                while streams.len() < HOSTILE / 4 && began.elapsed() < DELAY {
                    if let Ok(mut stream) = TcpStream::connect(addr) {
                        let _ = stream.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n");
                        streams.push(stream);
                    }
                }
                streams
            })
        })
        .collect();
    let hostile: Vec<TcpStream> = openers
        .into_iter()
        .flat_map(|opener| opener.join().expect("opener"))
        .collect();
    let opened = hostile.len();
    let (http_took, http_answer) = http_hook.join().expect("http hook");
    let (exec_output, exec_took) = exec_hook.join().expect("exec hook");
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let answers = probes.join().expect("probes");
    drop(hostile);

    assert_eq!(opened, HOSTILE, "the test opened only {opened} connections");
    assert!(
        http_answer.starts_with("HTTP/1.1 200")
            && (http_answer.ends_with("stopping\n") || http_answer.ends_with("exited\n")),
        "the held HTTP hook got {http_answer:?} after {http_took:?}"
    );
    assert!(
        http_took >= DELAY,
        "the HTTP hook answered after {http_took:?}"
    );
    assert_eq!(exec_output.status.code(), Some(0), "{exec_output:?}");
    assert!(exec_took >= DELAY - SECOND, "{exec_took:?}");
    let failed: Vec<_> = answers.iter().filter(|(a, _)| a.is_err()).collect();
    // Readiness flips only after failureThreshold failures in a row (2 in the examples): on a
    // busy machine one probe may miss its 1s, two in a row must not.
    let in_a_row = answers
        .windows(2)
        .any(|pair| pair[0].0.is_err() && pair[1].0.is_err());
    assert!(
        !in_a_row,
        "{} of {} probes got no answer within 1s, two in a row: {failed:?}",
        failed.len(),
        answers.len()
    );
    let mut latencies: Vec<Duration> = answers.iter().map(|(_, took)| *took).collect();
    latencies.sort();
    println!(
        "{opened} hostile connections: {} probes ({} over 1s), p50 {:?}, p99 {:?}, max {:?}; HTTP hook answered after {http_took:?}, exec hook after {exec_took:?} (delay {DELAY:?})",
        latencies.len(),
        failed.len(),
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );
    // The hooks were answered at the stop signal, which the app exits on.
    assert_eq!(run.wait_exit(10 * SECOND), 0);
}

#[test]
fn runs_as_pid_1_without_root_or_capabilities() {
    let mut run = signals_app(
        Mode::Pid1Unprivileged,
        &["--shutdown-delay", "200ms", "--stop-signal", "QUIT"],
    );
    run.ready_addr();
    let status = std::fs::read_to_string(format!("/proc/{}/status", run.pid)).expect("status");
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:") && l.contains("65534")),
        "{status}"
    );
    assert!(
        status.lines().any(|l| l == "CapEff:\t0000000000000000"),
        "{status}"
    );
    run.signal(Signal::SIGTERM);
    run.expect_exact("QUIT");
    assert_eq!(run.wait_exit(5 * SECOND), 0);
}

#[test]
fn a_closed_log_pipe_does_not_kill_lameduck() {
    let mut child = debug_logging_app();
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).expect("ready line");
    assert!(line.starts_with("ready"));
    // The log collector goes away: every later log line hits a closed pipe.
    drop(child.stderr.take());
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    for _ in 0..5 {
        kill(pid, Signal::SIGUSR1).expect("signal");
        std::thread::sleep(Duration::from_millis(20));
    }
    kill(pid, Signal::SIGTERM).expect("signal");
    let mut status = None;
    assert!(wait_until(5 * SECOND, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    }));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "lameduck lived to pass on the app's status"
    );
    let mut rest = String::new();
    let _ = stdout.read_to_string(&mut rest);
    assert!(rest.contains("USR1") && rest.contains("TERM"), "{rest}");
    assert!(
        !rest.contains("PIPE"),
        "lameduck's own SIGPIPE is not forwarded: {rest}"
    );
}

#[test]
fn a_log_reader_that_stops_reading_does_not_stall_the_drain() {
    let mut child = debug_logging_app();
    // stderr is never read: after 64 KiB of debug lines the pipe is full.
    let _stalled_log = child.stderr.take();
    let guard = KillOnDrop(vec![nix::unistd::Pid::from_raw(child.id() as i32)]);
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)).map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = |what: &str| {
        lines
            .recv_timeout(5 * SECOND)
            .unwrap_or_else(|_| panic!("lameduck stalled on its full log pipe before {what}"))
    };
    let ready = next("the app started");
    let app: i32 = ready
        .trim_start_matches("ready pid=")
        .parse()
        .expect("app pid");
    let mut guard = guard;
    guard.0.push(nix::unistd::Pid::from_raw(app));
    // Each forwarded signal logs two debug lines; 2,000 of them are far more than 64 KiB.
    for _ in 0..2000 {
        kill(guard.0[0], Signal::SIGUSR1).expect("signal");
        assert_eq!(next("forwarding USR1"), "USR1");
    }
    kill(guard.0[0], Signal::SIGTERM).expect("signal");
    assert_eq!(next("the stop signal"), "TERM");
    let mut status = None;
    assert!(wait_until(5 * SECOND, || {
        status = child.try_wait().expect("try_wait");
        status.is_some()
    }));
    assert_eq!(status.and_then(|s| s.code()), Some(0));
}

/// lameduck as a plain child with both pipes for the test to hold, logging every signal
/// (debug), the app echoing its signals, and the stop signal sent at once.
fn debug_logging_app() -> std::process::Child {
    let fixture = fixture();
    Command::new(lameduck())
        .args([
            "--listen",
            "127.0.0.1:0",
            "--log-level",
            "debug",
            "--shutdown-delay",
            "0",
        ])
        .args(["--", &fixture, "signals"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start")
}

/// Kills these pids when the test ends, however it ends.
struct KillOnDrop(Vec<nix::unistd::Pid>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            let _ = kill(*pid, Signal::SIGKILL);
        }
    }
}

#[test]
fn a_signal_storm_still_drains_exactly_once() {
    let mut run = signals_app(Mode::Pid1, &["--shutdown-delay", "300ms"]);
    for _ in 0..10_000 {
        kill(run.pid, Signal::SIGUSR1).expect("signal");
    }
    for _ in 0..3 {
        kill(run.pid, Signal::SIGTERM).expect("signal");
    }
    assert_eq!(run.wait_exit(10 * SECOND), 0);
    assert_eq!(
        run.stdout.count("TERM"),
        1,
        "the stop signal went out exactly once"
    );
    assert!(
        run.stdout.count("USR1") >= 1,
        "forwarded signals still arrive"
    );
    let drains = run
        .stderr
        .all()
        .iter()
        .filter(|l| l.contains("phase=draining"))
        .count();
    assert_eq!(drains, 1, "{:#?}", run.stderr.all());
}

#[test]
fn a_min_delay_above_the_shutdown_delay_is_refused_before_the_app_starts() {
    let output = Command::new(lameduck())
        .args([
            "--quiet-period",
            "1s",
            "--min-delay",
            "10s",
            "--shutdown-delay",
            "5s",
            "--",
            "true",
        ])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("--min-delay 10s is longer than --shutdown-delay 5s"),
        "{stderr}"
    );
}

#[test]
fn the_images_stop_signal_starts_the_drain_too() {
    // The nginx image says STOPSIGNAL SIGQUIT: the runtime then sends lameduck QUIT, not TERM.
    let mut run = signals_app(
        Mode::Pid1,
        &["--stop-signal", "QUIT", "--shutdown-delay", "500ms"],
    );
    let addr = run.ready_addr();
    let sent = Instant::now();
    run.signal(Signal::SIGQUIT);
    assert!(wait_until(SECOND, || get(addr, "/readyz").0 == 503));
    run.expect_exact("QUIT");
    assert!(
        sent.elapsed() >= Duration::from_millis(500),
        "QUIT was held for the delay, not forwarded at once"
    );
    assert_eq!(run.wait_exit(5 * SECOND), 0);
}
