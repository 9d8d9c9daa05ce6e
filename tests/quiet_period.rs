//! The adaptive delay among many connections: real nginx under lameduck as PID 1, holding 5,000
//! idle kept-alive connections. Requests on one connection among them keep the drain open; with
//! none, the drain ends once the quiet period has passed. Requests each on a connection of its
//! own, which the client closes first so that nothing of it stays in the server's socket table,
//! keep the drain open too. Each test has a network namespace of its own.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use lameduck_test_support::network::{addrs, own_network};
use lameduck_test_support::nginx::NginxConfig;
use lameduck_test_support::process::{Lameduck, Mode, log_field, wait_until};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::Signal;

/// Idle connections nginx holds while it drains.
const IDLE: usize = 5_000;
const QUIET_PERIOD: Duration = Duration::from_secs(1);
/// The upper bound, far above what either scenario may wait.
const SHUTDOWN_DELAY_FLAG: &str = "20s";
/// How long the busy connection keeps sending requests after SIGTERM.
const BUSY_FOR: Duration = Duration::from_secs(3);
/// One request this often on the busy connection: well inside the quiet period.
const REQUEST_EVERY: Duration = Duration::from_millis(200);
/// Room for a busy machine in the upper bounds.
const SLACK: Duration = Duration::from_secs(2);
const QUIET_LINE: &str = "no traffic reached the app for the quiet period";

/// nginx under lameduck, with `IDLE` open connections and one more to send requests on.
struct Pod {
    run: Lameduck,
    /// nginx's address.
    addr: SocketAddr,
    busy: TcpStream,
    _idle: Vec<TcpStream>,
    /// Dropped after `run`, so nginx is gone before its folder is removed.
    _config: NginxConfig,
}

impl Pod {
    /// Starts nginx under lameduck in a network namespace of the test's own, with `idle`
    /// connections open to it.
    fn start(test: &str, ip: Ipv4Addr, idle: usize) -> Pod {
        own_network();
        // The test holds every client end: room for them, and nginx inherits it for the others.
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raise the open-file limit");
        assert!(hard as usize > idle + 100, "open-file limit {hard} too low");

        let [addr, endpoints] = addrs(ip);
        let config = NginxConfig::with_connections(&format!("quiet-{test}"), addr, idle + 100);
        let args = config.under_lameduck(
            endpoints,
            &[
                "--shutdown-delay",
                SHUTDOWN_DELAY_FLAG,
                "--quiet-period",
                "1s",
            ],
        );
        let run = Lameduck::start(Mode::Pid1, &args);
        assert_eq!(run.ready_addr(), endpoints);
        let idle: Vec<TcpStream> = (0..idle)
            .map(|_| TcpStream::connect(addr).expect("an idle connection"))
            .collect();
        let busy = connect(addr);
        let mut pod = Pod {
            run,
            addr,
            busy,
            _idle: idle,
            _config: config,
        };
        pod.request();
        // Everything opened so far is older than the quiet period when the drain begins.
        std::thread::sleep(QUIET_PERIOD);
        pod
    }

    /// One keep-alive request on the busy connection, read to the end of its response.
    fn request(&mut self) {
        request(&mut self.busy);
    }

    /// SIGTERM, then `send` a request every `REQUEST_EVERY` for `BUSY_FOR`: the drain must not
    /// end meanwhile.
    fn drain_with_requests(&mut self, mut send: impl FnMut(&mut Pod)) {
        let began = Instant::now();
        self.run.signal(Signal::SIGTERM);
        while began.elapsed() < BUSY_FOR {
            send(self);
            std::thread::sleep(REQUEST_EVERY);
            assert!(
                !self.run.stderr.contains(QUIET_LINE),
                "the drain ended {:?} after SIGTERM while requests still came: {:#?}",
                began.elapsed(),
                self.run.stderr.all()
            );
        }
    }

    /// Waits for the line that says why the wait ended; returns it and when it was seen.
    fn quiet_line(&self, within: Duration) -> (String, Instant) {
        let mut seen = None;
        wait_until(within, || {
            seen = self
                .run
                .stderr
                .all()
                .into_iter()
                .find(|line| line.contains(QUIET_LINE));
            seen.is_some()
        });
        let line = seen.unwrap_or_else(|| {
            panic!(
                "the wait did not end on quiet traffic: {:#?}",
                self.run.stderr.all()
            )
        });
        (line, Instant::now())
    }
}

/// A connection to nginx that gives up on a reply after `SLACK`.
fn connect(addr: SocketAddr) -> TcpStream {
    let conn = TcpStream::connect(addr).expect("a connection to nginx");
    conn.set_read_timeout(Some(SLACK)).expect("read timeout");
    conn
}

/// One keep-alive request on `conn`, read to the end of its response.
fn request(conn: &mut TcpStream) {
    conn.write_all(b"GET /fast HTTP/1.1\r\nHost: pod\r\n\r\n")
        .expect("send a request");
    let mut response = Vec::new();
    let mut chunk = [0u8; 512];
    while !response.ends_with(b"ok\n") {
        let got = conn.read(&mut chunk).expect("read the response");
        assert!(got > 0, "nginx closed the connection");
        response.extend_from_slice(&chunk[..got]);
    }
}

#[test]
fn requests_on_one_connection_among_5000_idle_ones_hold_the_drain_open() {
    let mut pod = Pod::start("busy", Ipv4Addr::new(127, 0, 62, 1), IDLE);
    pod.drain_with_requests(Pod::request);
    let (line, _) = pod.quiet_line(QUIET_PERIOD + SLACK);
    let last_traffic_ms = log_field(&line, "waited_ms") - log_field(&line, "quiet_ms");
    assert!(
        last_traffic_ms + REQUEST_EVERY.as_millis() as u64 >= BUSY_FOR.as_millis() as u64,
        "the last request ({last_traffic_ms} ms after SIGTERM) was not seen: {line}"
    );
    assert!(
        log_field(&line, "quiet_ms") >= QUIET_PERIOD.as_millis() as u64,
        "{line}"
    );
}

#[test]
fn with_5000_idle_connections_and_no_traffic_the_drain_ends_after_the_quiet_period() {
    let pod = Pod::start("idle", Ipv4Addr::new(127, 0, 62, 2), IDLE);
    let began = Instant::now();
    pod.run.signal(Signal::SIGTERM);
    let (line, seen) = pod.quiet_line(QUIET_PERIOD + SLACK);
    assert!(
        seen - began >= QUIET_PERIOD,
        "ended {:?} after SIGTERM: {line}",
        seen - began
    );
    assert!(
        log_field(&line, "waited_ms") >= QUIET_PERIOD.as_millis() as u64,
        "{line}"
    );
    assert!(
        log_field(&line, "waited_ms") < (QUIET_PERIOD + SLACK).as_millis() as u64,
        "{line}"
    );
}

#[test]
fn requests_on_connections_the_client_opens_and_closes_first_hold_the_drain_open() {
    let mut pod = Pod::start("per-request", Ipv4Addr::new(127, 0, 62, 3), 0);
    pod.drain_with_requests(|pod| {
        // Kept alive by nginx, closed by the client once answered: the server's side of it
        // leaves the socket table at once, between two looks.
        let mut conn = connect(pod.addr);
        request(&mut conn);
    });
    // A connection that came and went unseen may have carried bytes until the look that
    // noticed it: the wait may last one quiet period past that look.
    let (line, _) = pod.quiet_line(QUIET_PERIOD * 2 + SLACK);
    assert!(
        log_field(&line, "waited_ms") >= BUSY_FOR.as_millis() as u64,
        "{line}"
    );
}
