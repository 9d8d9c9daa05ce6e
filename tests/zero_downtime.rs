//! Zero dropped requests end to end: real nginx under lameduck as PID 1, behind real HAProxy
//! that learns about a drain only from its health checks on `/readyz`, under steady load of slow
//! requests. A backend is drained by SIGTERM, by the in-pod hook `lameduck prestop` then
//! SIGTERM, by a hook whose connection breaks and the SIGTERM that follows at once, by a held
//! hook with 10,000 hostile connections open to lameduck's port, and both backends are rotated
//! out in turn; not one request may fail, and the drained lameduck must exit 0 soon after its
//! shutdown delay. A hook still held at SIGTERM (the kubelet gave up on it) stops the app at
//! once, and an HTTP `/prestop` without credentials is refused while the backend keeps serving. With `--quiet-period` behind slow health checks, the drain must end
//! as soon as HAProxy stops opening connections to the backend, long before the shutdown delay.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use lameduck_test_support::haproxy::{Checks, Haproxy, Server};
use lameduck_test_support::http::get;
use lameduck_test_support::load::{Connections, Report};
use lameduck_test_support::network::{addrs, pod_network};
use lameduck_test_support::nginx::NginxConfig;
use lameduck_test_support::process::{Lameduck, Mode, log_field, prestop_exec, wait_until};
use lameduck_test_support::scenario::{
    SLOW, STEADY, assert_none_failed, assert_served_across, assert_was_down, load_context,
    states_at_line, under_load,
};
use nix::sys::signal::Signal;

/// The shutdown delay: well over HAProxy's detection time (two checks 200 ms apart).
const DELAY: Duration = Duration::from_secs(2);
const DELAY_FLAG: &str = "2s";
/// Connections opened to lameduck's port during a held hook.
const HOSTILE: usize = 10_000;
/// Room for a busy machine in the upper bounds on exit times.
const SLACK: Duration = Duration::from_secs(3);
/// Requests in flight at any moment.
const WORKERS: usize = 8;

/// The adaptive scenario's health checks, as in the issue: three failures 500 ms apart take a
/// server out, so a draining backend keeps getting new connections for 1 to 1.5 s after SIGTERM.
const SLOW_CHECKS: Checks = Checks {
    inter: Duration::from_millis(500),
    fall: 3,
    rise: 2,
};
/// The adaptive pod's upper bound on the delay, which a fixed delay would wait out in full.
const ADAPTIVE_DELAY_FLAG: &str = "15s";
/// How long without a new connection ends the adaptive delay.
const QUIET_PERIOD_FLAG: &str = "1s";
/// The adaptive pod must exit within this of its SIGTERM: checks (1.5 s) + quiet period (1 s)
/// + the last slow request, with room to spare, and an order of magnitude below the 15 s.
const ADAPTIVE_EXIT: Duration = Duration::from_secs(4);

/// The adaptive pod's address in its own network namespace, and the test's end of the link.
const B1_IP: Ipv4Addr = Ipv4Addr::new(10, 254, 0, 2);
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 254, 0, 1);

/// One pod: nginx under lameduck, PID 1 of its own PID namespace.
struct Pod {
    name: &'static str,
    run: Lameduck,
    /// lameduck's endpoints, where HAProxy checks `/readyz`.
    endpoints: SocketAddr,
    /// Dropped after `run`, so nginx is gone before its folder is removed.
    config: NginxConfig,
    /// Its `--shutdown-delay`.
    delay: Duration,
}

impl Pod {
    /// Starts the pod and waits until lameduck reports it ready, which with `--ready-check`
    /// means nginx answers.
    fn start(test: &str, name: &'static str, addr: SocketAddr, endpoints: SocketAddr) -> Self {
        Pod::start_with(
            test,
            name,
            addr,
            endpoints,
            &["--shutdown-delay", DELAY_FLAG, "--prestop-token", "s3cret"],
        )
    }

    /// Starts a pod with these drain flags.
    fn start_with(
        test: &str,
        name: &'static str,
        addr: SocketAddr,
        endpoints: SocketAddr,
        drain: &[&str],
    ) -> Self {
        let config = NginxConfig::new(&format!("zd-{test}-{name}"), addr);
        let run = Lameduck::start(Mode::Pid1, &config.under_lameduck(endpoints, drain));
        assert_eq!(run.ready_addr(), endpoints, "{name}'s endpoints");
        Pod {
            name,
            run,
            endpoints,
            config,
            delay: DELAY,
        }
    }

    /// How HAProxy reaches it.
    fn server(&self) -> Server {
        Server::new(self.name, self.config.addr, self.endpoints)
    }

    /// Drains it as the kubelet does without a preStop hook: SIGTERM to PID 1.
    fn drain_by_sigterm(&mut self) -> Drain {
        let began = Instant::now();
        self.run.signal(Signal::SIGTERM);
        let exit_code = self.run.wait_exit(self.delay + SLOW + SLACK);
        self.drained(began, exit_code)
    }

    /// Drains it as the kubelet does with an exec hook `lameduck prestop`, run in the pod's
    /// network namespace (here the test's): the hook first, which holds until the delay has
    /// passed, then SIGTERM.
    fn drain_by_prestop(&mut self) -> Drain {
        let began = Instant::now();
        let (output, held) = prestop_exec(&self.run.hook_socket());
        assert_eq!(
            output.status.code(),
            Some(0),
            "{} hook: {output:?}",
            self.name
        );
        assert!(
            held >= DELAY,
            "{} lameduck prestop answered after {held:?}, before the delay",
            self.name
        );
        self.run.signal_unless_gone(Signal::SIGTERM);
        let exit_code = self.run.wait_exit(SLOW + SLACK);
        self.drained(began, exit_code)
    }

    /// An HTTP `/prestop` hook held open, as the kubelet's client holds it, once it has started
    /// the drain (readiness fails).
    fn hold_http_hook(&self) -> TcpStream {
        let mut hook = TcpStream::connect(self.endpoints).expect("connect the hook");
        hook.write_all(
            b"GET /prestop HTTP/1.1\r\nHost: pod\r\nUser-Agent: kube-lifecycle/1.32\r\n\
              Authorization: Bearer s3cret\r\n\r\n",
        )
        .expect("send the hook");
        assert!(
            wait_until(Duration::from_secs(5), || get(self.endpoints, "/readyz").0
                == 503),
            "{} the hook started no drain: {:#?}",
            self.name,
            self.run.stderr.all()
        );
        hook
    }

    /// The hook's connection breaks mid-drain; the kubelet counts a failed hook and sends
    /// SIGTERM at once. The delay must still run to its end.
    fn drain_by_broken_hook(&mut self) -> Drain {
        let began = Instant::now();
        drop(self.hold_http_hook());
        self.run.signal(Signal::SIGTERM);
        let exit_code = self.run.wait_exit(self.delay + SLOW + SLACK);
        let drain = self.drained(began, exit_code);
        assert!(
            drain
                .log
                .iter()
                .any(|l| l.contains("after the preStop hook that started the drain broke")),
            "{:#?}",
            drain.log
        );
        drain
    }

    /// A held hook while 10,000 connections are opened to lameduck's port: the hook still gets
    /// its answer after the delay, then the kubelet's SIGTERM.
    fn drain_by_hook_under_a_connection_flood(&mut self) -> Drain {
        let began = Instant::now();
        let mut hook = self.hold_http_hook();
        let (endpoints, delay) = (self.endpoints, self.delay);
        // Four openers, bounded in count and time: all 10,000 within the delay.
        let flood: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || {
                    let mut streams = Vec::with_capacity(HOSTILE / 4);
                    while streams.len() < HOSTILE / 4 && began.elapsed() < delay {
                        if let Ok(mut stream) = TcpStream::connect(endpoints) {
                            let _ = stream.write_all(b"GET /readyz HTTP/1.1\r\n");
                            streams.push(stream);
                        }
                    }
                    streams
                })
            })
            .collect();
        hook.set_read_timeout(Some(delay + SLACK)).expect("timeout");
        let mut answer = [0u8; 512];
        let read = hook.read(&mut answer).unwrap_or(0);
        let answered = began.elapsed();
        let answer = String::from_utf8_lossy(&answer[..read]).into_owned();
        assert!(
            answer.starts_with("HTTP/1.1 200") && answered >= delay,
            "{} hook got {answer:?} after {answered:?}: {:#?}",
            self.name,
            self.run.stderr.all()
        );
        self.run.signal_unless_gone(Signal::SIGTERM);
        let exit_code = self.run.wait_exit(SLOW + SLACK);
        let drain = self.drained(began, exit_code);
        let opened: usize = flood
            .into_iter()
            .map(|opener| opener.join().expect("opener").len())
            .sum();
        println!(
            "{opened} hostile connections; the held hook answered after {answered:?} (delay {delay:?})"
        );
        assert_eq!(
            opened, HOSTILE,
            "the flood opened only {opened} connections"
        );
        drain
    }

    fn drained(&self, began: Instant, exit_code: i32) -> Drain {
        Drain {
            pod: self.name,
            delay: self.delay,
            began,
            exited: Instant::now(),
            exit_code,
            log: self.run.stderr.all(),
        }
    }
}

/// One drained pod, for the assertions.
struct Drain {
    pod: &'static str,
    /// The pod's shutdown delay.
    delay: Duration,
    /// When the kubelet started it (SIGTERM, or the preStop call).
    began: Instant,
    exited: Instant,
    exit_code: i32,
    /// lameduck's log.
    log: Vec<String>,
}

/// What every scenario must show: no request failed; each drained pod had served before its drain,
/// had requests in flight when it began, all of which completed, and exited 0 after its delay
/// and soon after; after the last drain the `survivors` each went on serving.
fn assert_zero_downtime(
    report: &Report,
    haproxy: &Haproxy,
    connections: Connections,
    drains: &[Drain],
    survivors: &[&str],
) {
    let zero = drains[0].began;
    let context = || load_context(report, zero, "the first drain", haproxy);
    assert_none_failed(report, &context);
    for drain in drains {
        let pod = drain.pod;
        assert_eq!(drain.exit_code, 0, "{pod} exit code: {:#?}", drain.log);
        let took = drain.exited - drain.began;
        assert!(
            took >= drain.delay,
            "{pod} exited {took:?} after its drain began, before the shutdown delay: {:#?}",
            drain.log
        );
        assert!(
            took <= drain.delay + SLOW + SLACK,
            "{pod} took {took:?} to exit: {:#?}",
            drain.log
        );
        assert_served_across(report, pod, drain.began, &context);
    }
    let last = drains.iter().map(|d| d.exited).max().expect("a drain");
    for survivor in survivors {
        assert!(
            report.served_after(survivor, last),
            "{survivor} served nothing after the last drain: {}",
            context()
        );
    }
    if connections == Connections::KeepAlive {
        // HAProxy picks a server per request: the client's connections to it outlive the drain.
        assert_eq!(
            report.connections(),
            WORKERS,
            "keep-alive clients had to reconnect: {}",
            context()
        );
    }
}

/// HAProxy on `listen` over `pods`, checking `/readyz`, once it sees them all UP.
fn behind_haproxy(test: &str, listen: SocketAddr, pods: &[&Pod]) -> Haproxy {
    let servers: Vec<Server> = pods.iter().map(|pod| pod.server()).collect();
    let haproxy = Haproxy::start(test, listen, "/readyz", &servers);
    haproxy.expect_all_up(Duration::from_secs(10));
    haproxy
}

/// Two pods behind HAProxy; pod b1 is drained by `drain` under load.
fn drain_one_of_two(
    test: &str,
    ip: Ipv4Addr,
    connections: Connections,
    drain: fn(&mut Pod) -> Drain,
) {
    let [b1_addr, b1_endpoints, b2_addr, b2_endpoints, listen] = addrs(ip);
    let mut b1 = Pod::start(test, "b1", b1_addr, b1_endpoints);
    let b2 = Pod::start(test, "b2", b2_addr, b2_endpoints);
    let haproxy = behind_haproxy(test, listen, &[&b1, &b2]);
    let (report, drained) = under_load(haproxy.addr, WORKERS, connections, || drain(&mut b1));
    assert_zero_downtime(&report, &haproxy, connections, &[drained], &["b2"]);
}

#[test]
fn sigterm_drains_a_backend_behind_haproxy_without_failing_a_request() {
    drain_one_of_two(
        "sigterm",
        Ipv4Addr::new(127, 0, 61, 1),
        Connections::PerRequest,
        Pod::drain_by_sigterm,
    );
}

#[test]
fn sigterm_drain_behind_haproxy_is_invisible_to_keep_alive_clients() {
    drain_one_of_two(
        "sigterm-keepalive",
        Ipv4Addr::new(127, 0, 61, 2),
        Connections::KeepAlive,
        Pod::drain_by_sigterm,
    );
}

#[test]
fn prestop_then_sigterm_drains_a_backend_behind_haproxy_without_failing_a_request() {
    drain_one_of_two(
        "prestop",
        Ipv4Addr::new(127, 0, 61, 3),
        Connections::PerRequest,
        Pod::drain_by_prestop,
    );
}

#[test]
fn sigterm_after_a_broken_hook_still_waits_the_delay_behind_haproxy_without_failing_a_request() {
    drain_one_of_two(
        "broken-hook",
        Ipv4Addr::new(127, 0, 61, 7),
        Connections::PerRequest,
        Pod::drain_by_broken_hook,
    );
}

#[test]
fn a_held_hook_survives_ten_thousand_connections_behind_haproxy_without_failing_a_request() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("room for the sockets in the test");
    let test = "flood";
    let [b1_addr, b1_ep, b2_addr, b2_ep, listen] = addrs(Ipv4Addr::new(127, 0, 61, 8));
    // A delay long enough for the test to open all its connections inside it.
    let flags = ["--shutdown-delay", "6s", "--prestop-token", "s3cret"];
    let mut b1 = Pod::start_with(test, "b1", b1_addr, b1_ep, &flags);
    b1.delay = Duration::from_secs(6);
    let b2 = Pod::start(test, "b2", b2_addr, b2_ep);
    let haproxy = behind_haproxy(test, listen, &[&b1, &b2]);
    let (report, drained) = under_load(haproxy.addr, WORKERS, Connections::PerRequest, || {
        b1.drain_by_hook_under_a_connection_flood()
    });
    assert_zero_downtime(
        &report,
        &haproxy,
        Connections::PerRequest,
        &[drained],
        &["b2"],
    );
}

#[test]
fn a_hook_still_held_at_sigterm_sends_the_stop_signal_at_once() {
    // The kubelet gave up on the hook: its grace period (shortened, say by `kubectl drain
    // --grace-period`) ran out, and its SIGKILL follows 2s after its SIGTERM.
    let [b1_addr, b1_ep, b2_addr, b2_ep, listen] = addrs(Ipv4Addr::new(127, 0, 61, 9));
    let long_delay = ["--shutdown-delay", "1m", "--prestop-token", "s3cret"];
    let mut b1 = Pod::start_with("held", "b1", b1_addr, b1_ep, &long_delay);
    let b2 = Pod::start("held", "b2", b2_addr, b2_ep);
    let haproxy = behind_haproxy("held", listen, &[&b1, &b2]);
    let (report, (signalled, exit_code, took)) =
        under_load(haproxy.addr, WORKERS, Connections::PerRequest, || {
            let _hook = b1.hold_http_hook();
            // HAProxy takes b1 out before the kubelet gives up, as a grace period of a few seconds
            // allows.
            haproxy.expect_states(&[("b1", "DOWN")], Duration::from_secs(5));
            let signalled = Instant::now();
            b1.run.signal(Signal::SIGTERM);
            let exit_code = b1.run.wait_exit(SLOW + SLACK);
            (signalled, exit_code, signalled.elapsed())
        });
    let log = b1.run.stderr.all();
    assert!(
        report.failures().is_empty(),
        "requests failed: {}",
        report.summary(signalled)
    );
    assert_eq!(exit_code, 0, "{log:#?}");
    assert!(
        took < SLOW + SLACK,
        "b1 took {took:?} after SIGTERM: {log:#?}"
    );
    assert!(
        log.iter().any(|l| l.contains("the kubelet gave up on it")),
        "{log:#?}"
    );
}

#[test]
fn an_http_prestop_without_credentials_is_refused_and_the_backend_keeps_serving() {
    let [b1_addr, b1_ep, b2_addr, b2_ep, listen] = addrs(Ipv4Addr::new(127, 0, 61, 10));
    let mut b1 = Pod::start_with(
        "refused",
        "b1",
        b1_addr,
        b1_ep,
        &["--shutdown-delay", DELAY_FLAG],
    );
    let b2 = Pod::start("refused", "b2", b2_addr, b2_ep);
    let haproxy = behind_haproxy("refused", listen, &[&b1, &b2]);
    let (report, called) = under_load(haproxy.addr, WORKERS, Connections::PerRequest, || {
        let called = Instant::now();
        assert_eq!(get(b1.endpoints, "/prestop").0, 403);
        called
    });
    assert_eq!(
        get(b1.endpoints, "/readyz").0,
        200,
        "a refused call starts no drain"
    );
    assert!(report.failures().is_empty(), "{}", report.summary(called));
    assert!(
        report.served_after("b1", called + STEADY / 2),
        "HAProxy kept sending b1 requests after the refused call: {}",
        report.summary(called)
    );
    assert!(b1.run.running());
}

#[test]
fn rotating_both_backends_out_one_after_the_other_fails_no_request() {
    let test = "rotation";
    let [
        b1_addr,
        b1_ep,
        b2_addr,
        b2_ep,
        b3_addr,
        b3_ep,
        b4_addr,
        b4_ep,
        listen,
    ] = addrs(Ipv4Addr::new(127, 0, 61, 4));
    let mut b1 = Pod::start(test, "b1", b1_addr, b1_ep);
    let mut b2 = Pod::start(test, "b2", b2_addr, b2_ep);
    // All four servers from the start, as a balancer keeps its target list: the replacements
    // are DOWN until they are up and pass two checks.
    let servers = [
        b1.server(),
        b2.server(),
        // Not started yet.
        Server::new("b3", b3_addr, b3_ep),
        Server::new("b4", b4_addr, b4_ep),
    ];
    let haproxy = Haproxy::start(test, listen, "/readyz", &servers);
    let healthy =
        |expected: &[(&str, &str)]| haproxy.expect_states(expected, Duration::from_secs(10));
    healthy(&[("b1", "UP"), ("b2", "UP"), ("b3", "DOWN"), ("b4", "DOWN")]);

    let (report, (first, second, _b3, _b4)) =
        under_load(haproxy.addr, WORKERS, Connections::KeepAlive, || {
            let b3 = Pod::start(test, "b3", b3_addr, b3_ep);
            healthy(&[("b3", "UP")]);
            let first = b1.drain_by_sigterm();
            let b4 = Pod::start(test, "b4", b4_addr, b4_ep);
            healthy(&[("b4", "UP")]);
            (first, b2.drain_by_sigterm(), b3, b4)
        });

    assert_zero_downtime(
        &report,
        &haproxy,
        Connections::KeepAlive,
        &[first, second],
        &["b3", "b4"],
    );
}

#[test]
fn quiet_period_ends_the_drain_once_haproxy_stops_opening_connections_to_the_backend() {
    drain_adaptively(
        "adaptive",
        Ipv4Addr::new(127, 0, 61, 5),
        Connections::PerRequest,
    );
}

#[test]
fn quiet_period_also_sees_requests_on_kept_alive_connections() {
    // HAProxy reuses its connections to nginx, so requests arrive on connections that were
    // open before the drain: only their received bytes show that traffic still comes.
    drain_adaptively(
        "adaptive-ka",
        Ipv4Addr::new(127, 0, 61, 6),
        Connections::KeepAlive,
    );
}

/// Drains b1 under `--quiet-period` behind slow health checks, with load through HAProxy.
///
/// The adaptive delay counts every connection its network namespace accepts, so b1 gets one of
/// its own, as a pod would, reached over a veth pair from the test's namespace, where b2,
/// HAProxy and the load live.
fn drain_adaptively(test: &str, base: Ipv4Addr, connections: Connections) {
    let (b1_addr, b1_ep) = (
        SocketAddr::from((B1_IP, 8080)),
        SocketAddr::from((B1_IP, 8081)),
    );
    let mut b1 = pod_network(B1_IP, HOST_IP, || {
        // With --ready-check, as the other pods: its probes stop when the drain begins.
        let adaptive = [
            "--shutdown-delay",
            ADAPTIVE_DELAY_FLAG,
            "--quiet-period",
            QUIET_PERIOD_FLAG,
        ];
        Pod::start_with(test, "b1", b1_addr, b1_ep, &adaptive)
    });
    let [b2_addr, b2_ep, listen] = addrs(base);
    let b2 = Pod::start(test, "b2", b2_addr, b2_ep);
    let haproxy = Haproxy::start_with(
        test,
        listen,
        "/readyz",
        &[b1.server(), b2.server()],
        SLOW_CHECKS,
    );
    haproxy.expect_all_up(Duration::from_secs(10));

    let quiet_line = "no traffic reached the app for the quiet period";
    let (report, (began, took, exit_code, seen_at_stop)) =
        under_load(haproxy.addr, WORKERS, connections, || {
            let began = Instant::now();
            b1.run.signal(Signal::SIGTERM);
            let mut exited = None;
            let log = b1.run.stderr.clone();
            let seen_at_stop =
                states_at_line(&haproxy, &log, quiet_line, ADAPTIVE_EXIT + SLACK, || {
                    if !b1.run.running() {
                        exited = Some(Instant::now());
                    }
                    exited.is_some()
                });
            let exit_code = b1.run.wait_exit(SLACK);
            let took = exited.unwrap_or_else(Instant::now) - began;
            (began, took, exit_code, seen_at_stop)
        });

    let log = b1.run.stderr.all();
    let context = || {
        let load = load_context(&report, began, "SIGTERM", &haproxy);
        format!("{load}\nb1 log: {log:#?}")
    };
    assert_none_failed(&report, &context);
    assert_served_across(&report, "b1", began, &context);
    assert!(
        report.served_after("b2", began + took),
        "b2 served nothing after b1 left: {}",
        context()
    );
    assert_eq!(exit_code, 0, "b1 exit code: {}", context());
    assert!(
        took < ADAPTIVE_EXIT,
        "b1 took {took:?} to exit after SIGTERM: {}",
        context()
    );
    let stopped = log.iter().find(|l| l.contains(quiet_line));
    let stopped =
        stopped.unwrap_or_else(|| panic!("no line says why the wait ended: {}", context()));
    assert!(stopped.contains("saved_ms="), "{stopped:?}");
    assert!(
        stopped.contains(&b1_addr.port().to_string()),
        "nginx's port {} not among the watched ports: {stopped:?}",
        b1_addr.port()
    );
    // waited_ms - quiet_ms is when traffic last came: after the SIGTERM, or the quiet period
    // was quiet from the start and proves nothing about HAProxy's traffic.
    assert!(
        log_field(stopped, "waited_ms") > log_field(stopped, "quiet_ms"),
        "no traffic reached nginx after SIGTERM: {stopped:?}\n{}",
        context()
    );
    assert_was_down(&seen_at_stop, "b1", &context);
}
