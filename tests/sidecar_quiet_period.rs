//! `lameduck sidecar --quiet-period` beside a real, unmodified nginx, behind real HAProxy with
//! slow health checks, under steady load: the drain its `/prestop` runs ends as soon as HAProxy
//! stops sending the backend traffic, long before the shutdown delay, and not one request fails.
//! The same engine as the wrapper's adaptive delay, driven through the sidecar's pidfd target.

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use common::haproxy::{Checks, Haproxy, Server, free_addrs};
use common::load::{Connections, Load, Outcome, Plan};
use common::nginx::{Nginx, SLOW_BYTES};
use common::{Lameduck, Mode, get, own_network, run_ip, thread_id, wait_until};
use nix::sys::signal::Signal;

/// Three failed checks 500 ms apart take a server out, so a draining backend keeps getting new
/// connections for 1 to 1.5 s after its readiness fails.
const SLOW_CHECKS: Checks = Checks {
    inter: Duration::from_millis(500),
    fall: 3,
    rise: 2,
};
/// The upper bound on the delay, which a fixed delay would wait out in full.
const DELAY_FLAG: &str = "15s";
/// The hook must return within this: checks (1.5 s) + quiet period (1 s) + the last slow
/// request, with room to spare, and far below the 15 s.
const ADAPTIVE_EXIT: Duration = Duration::from_secs(5);
const WORKERS: usize = 8;
/// Load before the drain, so the drained backend serves its share first.
const STEADY: Duration = Duration::from_secs(1);
const QUIET_LINE: &str = "no traffic reached the app for the quiet period";
/// The drained pod's address in its own network namespace, and the test's end of the link.
const B1_IP: Ipv4Addr = Ipv4Addr::new(10, 254, 1, 2);
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 254, 1, 1);

fn addrs<const N: usize>(ip: Ipv4Addr) -> [SocketAddr; N] {
    free_addrs(ip, N).try_into().expect("N addresses")
}

/// nginx alone, and lameduck as its sidecar (by pid file) on `endpoints`.
fn sidecar_pod(name: &str, addr: SocketAddr, endpoints: SocketAddr) -> (Nginx, Lameduck) {
    let nginx = Nginx::start(&format!("sidecar-quiet-{name}"), addr);
    let pid_file = nginx.config.pid_file().display().to_string();
    let listen = endpoints.to_string();
    let sidecar = Lameduck::start(
        Mode::Subreaper,
        &[
            "sidecar",
            "--listen",
            &listen,
            "--pid-file",
            &pid_file,
            "--stop-signal",
            "QUIT",
            "--shutdown-delay",
            DELAY_FLAG,
            "--drain-timeout",
            "10s",
            "--quiet-period",
            "1s",
            // The test is the kubelet here, on the pod's own addresses.
            "--prestop-insecure",
        ],
    );
    // The listening line comes once the endpoints accept connections.
    assert_eq!(sidecar.addr(), endpoints);
    assert!(
        wait_until(Duration::from_secs(10), || get(endpoints, "/readyz").0
            == 200),
        "{name} never became ready: {:#?}",
        sidecar.stderr.all()
    );
    (nginx, sidecar)
}

#[test]
fn sidecar_quiet_period_ends_the_drain_once_haproxy_stops_sending_traffic_and_fails_no_request() {
    // The adaptive delay counts every connection its network namespace accepts, so b1 gets
    // one of its own, as a pod has, reached over a veth pair from the test's namespace, where
    // b2, HAProxy and the load live.
    own_network();
    let [b2_addr, b2_ep, listen] = addrs(Ipv4Addr::new(127, 0, 63, 1));
    let (b1_addr, b1_ep) = (
        SocketAddr::from((B1_IP, 8080)),
        SocketAddr::from((B1_IP, 8081)),
    );
    let outside = thread_id();
    let (mut b1_nginx, mut b1) = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                own_network();
                let outside = outside.to_string();
                run_ip(&[
                    "link", "add", "pod", "type", "veth", "peer", "host", "netns", &outside,
                ]);
                run_ip(&["addr", "add", &format!("{B1_IP}/30"), "dev", "pod"]);
                run_ip(&["link", "set", "pod", "up"]);
                sidecar_pod("b1", b1_addr, b1_ep)
            })
            .join()
            .expect("start b1")
    });
    run_ip(&["addr", "add", &format!("{HOST_IP}/30"), "dev", "host"]);
    run_ip(&["link", "set", "host", "up"]);
    let (_b2_nginx, _b2) = sidecar_pod("b2", b2_addr, b2_ep);
    let server = |name: &str, addr, check| Server {
        name: name.into(),
        addr,
        check,
    };
    let haproxy = Haproxy::start_with(
        "sidecar-quiet",
        listen,
        "/readyz",
        &[server("b1", b1_addr, b1_ep), server("b2", b2_addr, b2_ep)],
        SLOW_CHECKS,
    );
    assert!(
        haproxy.wait_for(&[("b1", "UP"), ("b2", "UP")], Duration::from_secs(10)),
        "{:?}\n{}",
        haproxy.states(),
        haproxy.log()
    );
    let load = Load::start(Plan {
        target: haproxy.addr,
        path: "/slow".into(),
        body_len: SLOW_BYTES,
        workers: WORKERS,
        connections: Connections::PerRequest,
        max_duration: Duration::from_secs(60),
        max_requests: 10_000,
    });
    std::thread::sleep(STEADY);

    // The kubelet runs the app container's preStop hook: it holds until nginx has exited.
    let began = Instant::now();
    let hook = std::thread::spawn(move || get(b1_ep, "/prestop"));
    let mut seen_at_stop = None;
    wait_until(ADAPTIVE_EXIT + Duration::from_secs(3), || {
        if seen_at_stop.is_none() && b1.stderr.contains(QUIET_LINE) {
            seen_at_stop = haproxy.states();
        }
        hook.is_finished()
    });
    let took = began.elapsed();
    let answer = hook.join().expect("the hook");
    std::thread::sleep(STEADY);
    let report = load.stop();

    let log = b1.stderr.all();
    let context = || {
        format!(
            "times in ms from the hook\n{}\nhaproxy log:\n{}\nb1 log: {log:#?}",
            report.summary(began),
            haproxy.log_tail(40)
        )
    };
    assert!(
        report.failures().is_empty(),
        "requests failed: {}",
        context()
    );
    assert_eq!(
        (answer.0, answer.1.as_str()),
        (200, "exited\n"),
        "{}",
        context()
    );
    assert!(
        took < ADAPTIVE_EXIT,
        "the hook took {took:?}, as if the full delay ran: {}",
        context()
    );
    assert_eq!(b1_nginx.exit_code(), Some(0), "nginx stopped gracefully");
    let in_flight = report.in_flight_at(began);
    assert!(
        in_flight.iter().any(|r| r.served_by("b1")),
        "b1 had no request in flight when the hook came: {}",
        context()
    );
    assert!(
        in_flight.iter().all(|r| r.outcome == Outcome::Ok),
        "a request in flight when the hook came failed: {}",
        context()
    );
    let stopped = log
        .iter()
        .find(|l| l.contains(QUIET_LINE))
        .unwrap_or_else(|| panic!("no line says why the wait ended: {}", context()));
    assert!(
        stopped.contains(&b1_addr.port().to_string()),
        "nginx's port {} is not among the watched ports: {stopped:?}",
        b1_addr.port()
    );
    let b1_state = seen_at_stop
        .as_ref()
        .and_then(|states| states.iter().find(|(name, _)| name == "b1"));
    assert!(
        b1_state.is_some_and(|(_, state)| state == "DOWN"),
        "HAProxy still sent b1 requests when nginx was stopped: {seen_at_stop:?}\n{}",
        context()
    );
    b1.signal(Signal::SIGTERM);
    assert_eq!(b1.wait_exit(Duration::from_secs(2)), 0);
}
