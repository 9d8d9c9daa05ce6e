//! Zero dropped requests end to end: real nginx under lameduck as PID 1, behind real HAProxy
//! that learns about a drain only from its health checks on `/readyz`, under steady load of slow
//! requests. A backend is drained by SIGTERM, by `/prestop` then SIGTERM, and both backends are
//! rotated out in turn; not one request may fail, and the drained lameduck must exit 0 soon
//! after its shutdown delay. With `--quiet-period` behind slow health checks, the drain must end
//! as soon as HAProxy stops opening connections to the backend, long before the shutdown delay.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::haproxy::{Checks, Haproxy, Server, free_addrs};
use common::load::{Connections, Load, Outcome, Plan, Report};
use common::nginx::{NginxConfig, SLOW_BYTES, SLOW_RATE};
use common::{Lameduck, Mode, get, own_network, run_ip, thread_id, wait_until};
use nix::sys::signal::Signal;

/// The shutdown delay: well over HAProxy's detection time (two checks 200 ms apart).
const DELAY: Duration = Duration::from_secs(2);
const DELAY_FLAG: &str = "2s";
/// How long one `/slow` request takes.
const SLOW: Duration = Duration::from_millis((SLOW_BYTES * 1000 / SLOW_RATE) as u64);
/// Room for a busy machine in the upper bounds on exit times.
const SLACK: Duration = Duration::from_secs(3);
/// Requests in flight at any moment.
const WORKERS: usize = 8;
/// Load before a drain, so the drained backend serves its share first, and after the last one,
/// so the survivors are seen serving alone.
const STEADY: Duration = Duration::from_secs(1);

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
            &["--shutdown-delay", DELAY_FLAG],
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
        let args = config.under_lameduck(endpoints, drain);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = Lameduck::start(Mode::Pid1, &args);
        let pod = Pod {
            name,
            run,
            endpoints,
            config,
        };
        // The listening line comes once the endpoints accept connections.
        assert_eq!(pod.run.addr(), endpoints);
        assert!(
            wait_until(Duration::from_secs(10), || get(pod.endpoints, "/readyz").0
                == 200),
            "{name} never became ready: {:#?}",
            pod.run.stderr.all()
        );
        pod
    }

    /// How HAProxy reaches it.
    fn server(&self) -> Server {
        server(self.name, self.config.addr, self.endpoints)
    }

    /// Drains it as the kubelet does without a preStop hook: SIGTERM to PID 1.
    fn drain_by_sigterm(&mut self) -> Drain {
        let began = Instant::now();
        self.run.signal(Signal::SIGTERM);
        let exit_code = self.run.wait_exit(DELAY + SLOW + SLACK);
        self.drained(began, exit_code)
    }

    /// Drains it as the kubelet does with a `preStop.httpGet` hook: the hook first, which holds
    /// until the delay has passed, then SIGTERM.
    fn drain_by_prestop(&mut self) -> Drain {
        let began = Instant::now();
        let (status, _) = get(self.endpoints, "/prestop");
        let held = began.elapsed();
        assert_eq!(status, 200, "{} /prestop", self.name);
        assert!(
            held >= DELAY,
            "{} /prestop answered after {held:?}, before the delay",
            self.name
        );
        self.run.signal(Signal::SIGTERM);
        let exit_code = self.run.wait_exit(SLOW + SLACK);
        self.drained(began, exit_code)
    }

    fn drained(&self, began: Instant, exit_code: i32) -> Drain {
        Drain {
            pod: self.name,
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
    /// When the kubelet started it (SIGTERM, or the preStop call).
    began: Instant,
    exited: Instant,
    exit_code: i32,
    /// lameduck's log.
    log: Vec<String>,
}

/// A free address for each name, on the test's own loopback address (see `free_addrs`).
fn addrs<const N: usize>(ip: Ipv4Addr) -> [SocketAddr; N] {
    free_addrs(ip, N).try_into().expect("N addresses")
}

fn start_load(haproxy: &Haproxy, connections: Connections) -> Load {
    Load::start(Plan {
        target: haproxy.addr,
        path: "/slow".into(),
        body_len: SLOW_BYTES,
        workers: WORKERS,
        connections,
        max_duration: Duration::from_secs(60),
        max_requests: 10_000,
    })
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
    let context = || {
        format!(
            "times in ms from the first drain\n{}\nhaproxy log:\n{}",
            report.summary(zero),
            haproxy.log_tail(40)
        )
    };
    assert!(
        report.failures().is_empty(),
        "requests failed: {}",
        context()
    );
    for drain in drains {
        let pod = drain.pod;
        assert_eq!(drain.exit_code, 0, "{pod} exit code: {:#?}", drain.log);
        let took = drain.exited - drain.began;
        assert!(
            took >= DELAY,
            "{pod} exited {took:?} after its drain began, before the shutdown delay: {:#?}",
            drain.log
        );
        assert!(
            took <= DELAY + SLOW + SLACK,
            "{pod} took {took:?} to exit: {:#?}",
            drain.log
        );
        assert!(
            report
                .records
                .iter()
                .any(|r| r.served_by(pod) && r.end < drain.began),
            "{pod} served nothing before its drain, so the drain proves nothing: {}",
            context()
        );
        let in_flight = report.in_flight_at(drain.began);
        assert!(
            in_flight.iter().any(|r| r.served_by(pod)),
            "{pod} had no request in flight when its drain began: {}",
            context()
        );
        assert!(
            in_flight.iter().all(|r| r.outcome == Outcome::Ok),
            "a request in flight when {pod}'s drain began failed: {}",
            context()
        );
    }
    let last = drains.iter().map(|d| d.exited).max().expect("a drain");
    for survivor in survivors {
        assert!(
            report
                .records
                .iter()
                .any(|r| r.served_by(survivor) && r.start > last),
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
    let haproxy = Haproxy::start(test, listen, "/readyz", &[b1.server(), b2.server()]);
    assert!(
        haproxy.wait_for(&[("b1", "UP"), ("b2", "UP")], Duration::from_secs(10)),
        "{:?}\n{}",
        haproxy.states(),
        haproxy.log()
    );

    let load = start_load(&haproxy, connections);
    std::thread::sleep(STEADY);
    let drained = drain(&mut b1);
    std::thread::sleep(STEADY);
    let report = load.stop();

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
        server("b3", b3_addr, b3_ep),
        server("b4", b4_addr, b4_ep),
    ];
    let haproxy = Haproxy::start(test, listen, "/readyz", &servers);
    let healthy = |expected: &[(&str, &str)]| {
        assert!(
            haproxy.wait_for(expected, Duration::from_secs(10)),
            "waiting for {expected:?}: {:?}\n{}",
            haproxy.states(),
            haproxy.log_tail(40)
        );
    };
    healthy(&[("b1", "UP"), ("b2", "UP"), ("b3", "DOWN"), ("b4", "DOWN")]);

    let load = start_load(&haproxy, Connections::KeepAlive);
    std::thread::sleep(STEADY);
    let _b3 = Pod::start(test, "b3", b3_addr, b3_ep);
    healthy(&[("b3", "UP")]);
    let first = b1.drain_by_sigterm();
    let _b4 = Pod::start(test, "b4", b4_addr, b4_ep);
    healthy(&[("b4", "UP")]);
    let second = b2.drain_by_sigterm();
    std::thread::sleep(STEADY);
    let report = load.stop();

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
    own_network();
    let [b2_addr, b2_ep, listen] = addrs(base);
    let (b1_addr, b1_ep) = (
        SocketAddr::from((B1_IP, 8080)),
        SocketAddr::from((B1_IP, 8081)),
    );
    let outside = thread_id();
    let mut b1 = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                own_network();
                let outside = outside.to_string();
                run_ip(&[
                    "link", "add", "pod", "type", "veth", "peer", "host", "netns", &outside,
                ]);
                run_ip(&["addr", "add", &format!("{B1_IP}/30"), "dev", "pod"]);
                run_ip(&["link", "set", "pod", "up"]);
                // With --ready-check, as the other pods: its probes stop when the drain begins.
                let adaptive = [
                    "--shutdown-delay",
                    ADAPTIVE_DELAY_FLAG,
                    "--quiet-period",
                    QUIET_PERIOD_FLAG,
                ];
                Pod::start_with(test, "b1", b1_addr, b1_ep, &adaptive)
            })
            .join()
            .expect("start b1")
    });
    run_ip(&["addr", "add", &format!("{HOST_IP}/30"), "dev", "host"]);
    run_ip(&["link", "set", "host", "up"]);
    let b2 = Pod::start(test, "b2", b2_addr, b2_ep);
    let haproxy = Haproxy::start_with(
        test,
        listen,
        "/readyz",
        &[b1.server(), b2.server()],
        SLOW_CHECKS,
    );
    assert!(
        haproxy.wait_for(&[("b1", "UP"), ("b2", "UP")], Duration::from_secs(10)),
        "{:?}\n{}",
        haproxy.states(),
        haproxy.log()
    );

    let load = start_load(&haproxy, connections);
    std::thread::sleep(STEADY);
    let began = Instant::now();
    b1.run.signal(Signal::SIGTERM);
    // The moment lameduck stops waiting, HAProxy must already have taken b1 out: what it saw
    // then is taken as soon as the log line shows up.
    let quiet_line = "no traffic reached the app for the quiet period";
    let mut seen_at_stop = None;
    let mut exited = None;
    wait_until(ADAPTIVE_EXIT + SLACK, || {
        if seen_at_stop.is_none() && b1.run.stderr.contains(quiet_line) {
            seen_at_stop = haproxy.states();
        }
        if !b1.run.running() {
            exited = Some(Instant::now());
        }
        exited.is_some()
    });
    let exit_code = b1.run.wait_exit(SLACK);
    let took = exited.unwrap_or_else(Instant::now) - began;
    std::thread::sleep(STEADY);
    let report = load.stop();

    let log = b1.run.stderr.all();
    let context = || {
        format!(
            "times in ms from SIGTERM\n{}\nhaproxy log:\n{}\nb1 log: {log:#?}",
            report.summary(began),
            haproxy.log_tail(40)
        )
    };
    assert!(
        report.failures().is_empty(),
        "requests failed: {}",
        context()
    );
    let in_flight = report.in_flight_at(began);
    assert!(
        in_flight.iter().any(|r| r.served_by("b1")),
        "b1 had no request in flight at SIGTERM: {}",
        context()
    );
    assert!(
        in_flight.iter().all(|r| r.outcome == Outcome::Ok),
        "a request in flight at SIGTERM failed: {}",
        context()
    );
    assert!(
        report
            .records
            .iter()
            .any(|r| r.served_by("b2") && r.start > began + took),
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
    let field = |name: &str| -> u64 {
        stopped
            .split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {stopped:?}"))
    };
    assert!(
        field("waited_ms=") > field("quiet_ms="),
        "no traffic reached nginx after SIGTERM: {stopped:?}\n{}",
        context()
    );
    let b1_state = seen_at_stop
        .as_ref()
        .and_then(|states| states.iter().find(|(name, _)| name == "b1"));
    assert!(
        b1_state.is_some_and(|(_, state)| state == "DOWN"),
        "HAProxy still sent b1 requests when its app was stopped: {seen_at_stop:?}\n{}",
        context()
    );
}

/// How HAProxy will reach a pod that is not started yet.
fn server(name: &str, addr: SocketAddr, check: SocketAddr) -> Server {
    Server {
        name: name.into(),
        addr,
        check,
    }
}
