//! The drain proxy's own behaviour, with the built lameduck as PID 1 in front of a real app:
//! HTTP/2 clients get GOAWAY in the drain and lose no request; a WebSocket passes through and
//! stays open until the app, told by `--drain-signal`, closes it cleanly; a large upload and a
//! large download pass byte for byte; an app that is down gives a 502 and one log line; in
//! the sidecar shape the proxy closes kept-alive connections on `/prestop` and ends the delay;
//! idle clients share the proxy's connections to the app instead of each pinning one; in the
//! drain the proxy keeps no idle connection to the app for the app's stop to close; and a low
//! open-file limit caps the clients at two descriptors each, the next one waiting its turn.

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use lameduck_test_support::binaries::fixture;
use lameduck_test_support::http::get;
use lameduck_test_support::network::{established_at, established_peers, free_addrs};
use lameduck_test_support::nginx::{Nginx, NginxConfig};
use lameduck_test_support::process::{Lameduck, Mode, wait_until};
use lameduck_test_support::scenario::SLOW_BYTES;
use nix::sys::signal::Signal;

/// The upper bound on the delay; the proxy ends it as soon as its clients have left.
const DELAY_FLAG: &str = "5s";
const DELAY: Duration = Duration::from_secs(5);
const DRAINED_LINE: &str = "the proxy moved every client off";

/// nginx under lameduck with `--proxy`; returns the run, the proxy's address and nginx's config.
fn nginx_behind_proxy(test: &str, ip: Ipv4Addr) -> (Lameduck, SocketAddr, NginxConfig) {
    let [nginx, proxy, endpoints] = free_addrs(ip, 3).try_into().expect("3 addresses");
    let config = NginxConfig::new(&format!("proxy-{test}"), nginx);
    let route = format!("{proxy}={nginx}");
    let args = config.under_lameduck(
        endpoints,
        &["--shutdown-delay", DELAY_FLAG, "--proxy", &route],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let run = Lameduck::start(Mode::Pid1, &args);
    run.ready_addr();
    (run, proxy, config)
}

/// `moved_off=N` from the line that says the proxy drained.
fn moved_off(run: &Lameduck) -> u64 {
    let log = run.stderr.all();
    let line = log
        .iter()
        .find(|l| l.contains(DRAINED_LINE))
        .unwrap_or_else(|| panic!("no line says the proxy drained: {log:#?}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("moved_off=")?.parse().ok())
        .unwrap_or_else(|| panic!("no moved_off in {line}"))
}

#[test]
fn http2_clients_get_goaway_in_the_drain_and_every_request_on_it_completes() {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;

    let (mut run, proxy, _config) = nginx_behind_proxy("h2", Ipv4Addr::new(127, 0, 63, 1));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (responses, connection_ended, sigterm) = runtime.block_on(async {
        let stream = tokio::net::TcpStream::connect(proxy)
            .await
            .expect("connect");
        let (sender, connection) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .expect("h2c handshake");
        let connection = tokio::spawn(async move {
            let ended = connection.await;
            (ended.map_err(|e| e.to_string()), Instant::now())
        });
        // Four /slow streams (~400 ms each) in flight on the one connection at SIGTERM.
        let requests: Vec<_> = (0..4)
            .map(|_| {
                let mut sender = sender.clone();
                tokio::spawn(async move {
                    let request = hyper::Request::get(format!("http://{proxy}/slow"))
                        .body(Empty::<Bytes>::new())
                        .expect("request");
                    let response = sender
                        .send_request(request)
                        .await
                        .map_err(|e| e.to_string())?;
                    let status = response.status().as_u16();
                    let body = response
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>((status, body.to_bytes().len()))
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let sigterm = Instant::now();
        run.signal(Signal::SIGTERM);
        let mut responses = Vec::new();
        for request in requests {
            responses.push(request.await.expect("request task"));
        }
        let ended = tokio::time::timeout(Duration::from_secs(3), connection)
            .await
            .expect("the server never closed the HTTP/2 connection")
            .expect("connection task");
        (responses, ended, sigterm)
    });
    let log = run.stderr.all();
    for response in &responses {
        assert_eq!(response, &Ok((200, SLOW_BYTES)), "{responses:?}\n{log:#?}");
    }
    let (ended, at) = connection_ended;
    assert_eq!(
        ended,
        Ok(()),
        "the connection did not end gracefully: {log:#?}"
    );
    assert!(
        at - sigterm < Duration::from_secs(1),
        "the connection ended {:?} after SIGTERM",
        at - sigterm
    );
    let code = run.wait_exit(DELAY);
    assert_eq!(code, 0, "{log:#?}");
    assert_eq!(moved_off(&run), 1, "{:#?}", run.stderr.all());
}

#[test]
fn a_websocket_stays_open_through_the_proxy_until_the_app_closes_it_on_the_drain_signal() {
    use tungstenite::Message;
    use tungstenite::protocol::frame::coding::CloseCode;

    let [app, proxy] = free_addrs(Ipv4Addr::new(127, 0, 63, 2), 2)
        .try_into()
        .expect("2 addresses");
    let route = format!("{proxy}={app}");
    let fixture = fixture();
    let app_flag = app.to_string();
    let mut run = Lameduck::start(
        Mode::Pid1,
        &[
            "--shutdown-delay",
            DELAY_FLAG,
            "--proxy",
            &route,
            "--drain-signal",
            "USR1",
            "--",
            &fixture,
            "websocket",
            &app_flag,
        ],
    );
    run.expect_exact("websocket ready");
    let stream = TcpStream::connect(proxy).expect("connect to the proxy");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let (mut socket, response) =
        tungstenite::client(format!("ws://{proxy}/"), stream).expect("WebSocket handshake");
    assert_eq!(response.status(), 101);
    let mut echo = |text: &str| {
        socket.send(Message::text(text)).expect("send");
        socket.read().expect("read")
    };
    assert_eq!(echo("first"), Message::text("first"));
    // Longer than the proxy's idle grace: an upgraded stream is not an idle HTTP connection.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(echo("second"), Message::text("second"));

    let sigterm = Instant::now();
    run.signal(Signal::SIGTERM);
    let closed = match socket.read() {
        Ok(Message::Close(frame)) => frame,
        Ok(other) => panic!("unexpected message {other:?}"),
        Err(err) => panic!("the WebSocket broke instead of closing: {err}"),
    };
    let frame = closed.expect("a close frame with a code");
    assert_eq!(frame.code, CloseCode::Away);
    assert_eq!(frame.reason.as_str(), "draining");
    // The close handshake completes and the stream ends cleanly.
    let end = socket.read();
    assert!(
        matches!(end, Err(tungstenite::Error::ConnectionClosed)),
        "{end:?}"
    );
    assert!(sigterm.elapsed() < Duration::from_secs(1));
    // As a client does once the close handshake is over.
    drop(socket);
    let code = run.wait_exit(DELAY);
    assert_eq!(code, 0, "{:#?}", run.stderr.all());
    assert_eq!(
        run.stdout.all(),
        ["websocket ready", "USR1", "TERM"],
        "the drain signal must come first, then the stop signal"
    );
    assert_eq!(moved_off(&run), 1, "{:#?}", run.stderr.all());
}

/// 16 MiB that no compression or pattern could fake.
fn payload() -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..16 << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// One HTTP/1.1 exchange on a fresh connection: status and body, bytes as they came.
fn exchange(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    stream.write_all(head.as_bytes()).expect("head");
    stream.write_all(body).expect("body");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("answer");
    let end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head")
        + 4;
    let head = String::from_utf8_lossy(&answer[..end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("status");
    (status, answer[end..].to_vec())
}

#[test]
fn a_large_upload_and_download_pass_through_the_proxy_byte_for_byte() {
    let (_run, proxy, config) = nginx_behind_proxy("bytes", Ipv4Addr::new(127, 0, 63, 3));
    let payload = payload();
    let put = format!(
        "PUT /put/big HTTP/1.1\r\nHost: {proxy}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        payload.len()
    );
    let (status, _) = exchange(proxy, &put, &payload);
    assert_eq!(status, 201, "upload");
    let stored = std::fs::read(config.dir.path().join("html/put/big")).expect("stored upload");
    assert!(stored == payload, "the upload reached nginx changed");
    let get = format!("GET /put/big HTTP/1.1\r\nHost: {proxy}\r\nConnection: close\r\n\r\n");
    let (status, body) = exchange(proxy, &get, &[]);
    assert_eq!(status, 200, "download");
    assert_eq!(body.len(), payload.len());
    assert!(body == payload, "the download changed on its way");
}

#[test]
fn an_app_that_is_down_gives_a_502_and_one_log_line() {
    let [app, proxy] = free_addrs(Ipv4Addr::new(127, 0, 63, 4), 2)
        .try_into()
        .expect("2 addresses");
    let route = format!("{proxy}={app}");
    let run = Lameduck::start(Mode::Pid1, &["--proxy", &route, "--", "sleep", "30"]);
    run.ready_addr();
    let began = Instant::now();
    let get = format!("GET / HTTP/1.1\r\nHost: {proxy}\r\nConnection: close\r\n\r\n");
    let (status, body) = exchange(proxy, &get, &[]);
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    assert!(wait_until(Duration::from_secs(2), || run
        .stderr
        .contains("502")));
    let lines: Vec<String> = run
        .stderr
        .all()
        .into_iter()
        .filter(|l| l.contains("502"))
        .collect();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(lines[0].contains(&format!("app={app}")), "{}", lines[0]);
}

/// One request on a kept-alive connection: the response head (lower-cased) and body.
fn ask(stream: &mut TcpStream, path: &str) -> (String, Vec<u8>) {
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").expect("request");
    ask_answered(stream)
}

/// The answer to the request just sent on `stream`: its head (lower-cased) and body.
fn ask_answered(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).expect("read head"), 1, "closed");
        data.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&data).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("content-length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("body");
    (head, body)
}

#[test]
fn the_sidecar_proxy_closes_kept_alive_connections_in_the_drain_and_ends_it_early() {
    let [nginx_addr, proxy] = free_addrs(Ipv4Addr::new(127, 0, 63, 5), 2)
        .try_into()
        .expect("2 addresses");
    let _nginx = Nginx::start("proxy-sidecar", nginx_addr);
    let route = format!("{proxy}={nginx_addr}");
    let mut run = Lameduck::start(
        Mode::Pid1,
        &[
            "sidecar",
            "--shutdown-delay",
            DELAY_FLAG,
            "--proxy",
            &route,
            // The hook below is a plain HTTP /prestop call, refused by default.
            "--prestop-insecure",
        ],
    );
    let endpoints = run.ready_addr();
    let mut client = served_client(proxy);

    let began = Instant::now();
    let hook = std::thread::spawn(move || get(endpoints, "/prestop"));
    assert!(wait_until(Duration::from_secs(2), || run
        .stderr
        .contains("readiness fails")));
    let (head, body) = ask(&mut client, "/fast");
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, b"ok\n");
    let mut rest = Vec::new();
    assert_eq!(client.read_to_end(&mut rest).expect("the close"), 0);
    let (status, phase) = hook.join().expect("hook");
    let held = began.elapsed();
    assert_eq!((status, phase.trim()), (200, "stopping"));
    assert!(
        held < DELAY - Duration::from_secs(2),
        "/prestop held {held:?}, near the full delay: {:#?}",
        run.stderr.all()
    );
    assert_eq!(moved_off(&run), 1, "{:#?}", run.stderr.all());
    run.signal(Signal::SIGTERM);
    assert_eq!(run.wait_exit(DELAY), 0);
}

/// lameduck (its app a `sleep`) with `--proxy` and the `more` flags, in front of an nginx the
/// test starts itself, so that every connection nginx holds is the proxy's (no ready check);
/// `prepare` shapes lameduck's command. Returns the run, the proxy's address and the nginx.
fn proxy_to_nginx(
    test: &str,
    ip: Ipv4Addr,
    more: &[&str],
    prepare: impl FnOnce(&mut Command),
) -> (Lameduck, SocketAddr, Nginx) {
    let [nginx_addr, proxy] = free_addrs(ip, 2).try_into().expect("2 addresses");
    let nginx = Nginx::start(&format!("proxy-{test}"), nginx_addr);
    let route = format!("{proxy}={nginx_addr}");
    let mut args = vec!["--shutdown-delay", DELAY_FLAG, "--proxy", &route];
    args.extend_from_slice(more);
    args.extend_from_slice(&["--", "sleep", "60"]);
    let run = Lameduck::start_with(Mode::Pid1, &args, prepare);
    run.ready_addr();
    (run, proxy, nginx)
}

/// The connections nginx holds, each one the proxy's.
fn app_connections(nginx: &Nginx) -> usize {
    match nginx.config.addr {
        SocketAddr::V4(addr) => established_at(addr),
        SocketAddr::V6(_) => unreachable!("the tests' nginx listens on IPv4 loopback"),
    }
}

/// A kept-alive client that has had one answer through `proxy`, and was left its connection.
fn served_client(proxy: SocketAddr) -> TcpStream {
    let mut client = TcpStream::connect(proxy).expect("connect");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let (head, body) = ask(&mut client, "/fast");
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    assert_eq!(body, b"ok\n");
    client
}

#[test]
fn idle_kept_alive_clients_share_the_proxys_connections_to_the_app() {
    let (_run, proxy, nginx) = proxy_to_nginx("shared", Ipv4Addr::new(127, 0, 63, 6), &[], |_| {});
    // One after another, each left idle and open: each takes the connection the last one gave
    // back, which stays open for the next.
    let clients: Vec<TcpStream> = (0..3).map(|_| served_client(proxy)).collect();
    assert_eq!(app_connections(&nginx), 1, "{} idle clients", clients.len());
}

#[test]
fn a_connection_to_the_app_idle_for_over_a_second_is_not_reused() {
    let (_run, proxy, nginx) = proxy_to_nginx("expiry", Ipv4Addr::new(127, 0, 63, 9), &[], |_| {});
    let SocketAddr::V4(app) = nginx.config.addr else {
        unreachable!("the tests' nginx listens on IPv4 loopback")
    };
    drop(served_client(proxy));
    let first = established_peers(app);
    assert_eq!(first.len(), 1, "the proxy kept no connection to the app");
    // Past the proxy's idle limit, well within nginx's own keep-alive timeout of 75 s: only the
    // proxy can have closed it.
    std::thread::sleep(Duration::from_millis(1500));
    drop(served_client(proxy));
    assert!(
        wait_until(Duration::from_secs(2), || {
            let now = established_peers(app);
            now.len() == 1 && now != first
        }),
        "the connection idle for 1.5 s was reused or kept: {first:?} then {:?}",
        established_peers(app)
    );
}

#[test]
fn in_the_drain_the_proxy_keeps_no_idle_connection_to_the_app() {
    // The app's stop comes no sooner than 3s after the drain began: room to look before it.
    let (mut run, proxy, nginx) = proxy_to_nginx(
        "pool-drain",
        Ipv4Addr::new(127, 0, 63, 7),
        &["--min-delay", "3s"],
        |_| {},
    );
    drop(served_client(proxy));
    assert_eq!(app_connections(&nginx), 1, "the proxy kept no connection");
    run.signal(Signal::SIGTERM);
    assert!(wait_until(Duration::from_secs(2), || run
        .stderr
        .contains("readiness fails")));
    assert!(
        wait_until(Duration::from_secs(2), || app_connections(&nginx) == 0),
        "the idle connection to the app outlived the drain's start: {:#?}",
        run.stderr.all()
    );
    // A client that still arrives gets its answer on a connection of its own, closed after it.
    let mut late = TcpStream::connect(proxy).expect("connect");
    late.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let (head, body) = ask(&mut late, "/fast");
    assert!(head.contains("connection: close"), "{head}");
    assert_eq!(body, b"ok\n");
    assert!(
        wait_until(Duration::from_secs(2), || app_connections(&nginx) == 0),
        "the late client's connection to the app stayed open: {}",
        app_connections(&nginx)
    );
    assert!(
        !run.stderr.contains(DRAINED_LINE),
        "the app was stopped before the checks: {:#?}",
        run.stderr.all()
    );
    run.wait_exit(DELAY);
}

#[test]
fn a_low_open_file_limit_caps_the_proxys_clients_and_the_next_one_waits_its_turn() {
    const LIMIT: u64 = 400;
    // Two descriptors a client, beside 128 for the idle pool and 64 for the rest of lameduck.
    const CAP: usize = (LIMIT as usize - 128 - 64) / 2;
    let (run, proxy, _nginx) =
        proxy_to_nginx("cap", Ipv4Addr::new(127, 0, 63, 8), &[], |command| {
            // SAFETY: between fork and exec only setrlimit is called.
            unsafe {
                command.pre_exec(|| {
                    nix::sys::resource::setrlimit(
                        nix::sys::resource::Resource::RLIMIT_NOFILE,
                        LIMIT,
                        LIMIT,
                    )?;
                    Ok(())
                });
            }
        });
    let cap_word = format!("max_connections={CAP}");
    assert!(
        run.stderr
            .all()
            .iter()
            .any(|line| line.split_whitespace().any(|word| word == cap_word)),
        "no line gives the cap {CAP}: {:#?}",
        run.stderr.all()
    );
    let mut served: Vec<TcpStream> = (0..CAP).map(|_| served_client(proxy)).collect();
    let mut next = TcpStream::connect(proxy).expect("connect: the listen queue takes it");
    write!(next, "GET /fast HTTP/1.1\r\nHost: test\r\n\r\n").expect("request");
    next.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut byte = [0u8; 1];
    let early = next.peek(&mut byte);
    assert!(
        matches!(&early, Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)),
        "client {} was answered past the cap of {CAP}: {early:?}",
        CAP + 1
    );
    drop(served.pop());
    next.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let (head, body) = ask_answered(&mut next);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert_eq!(body, b"ok\n");
}
