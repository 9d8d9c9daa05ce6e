//! `lameduck sidecar --quiet-period` beside a real, unmodified nginx, behind real HAProxy with
//! slow health checks, under steady load: the drain its `/prestop` runs ends as soon as HAProxy
//! stops sending the backend traffic, long before the shutdown delay, and not one request fails.
//! The same engine as the wrapper's adaptive delay, driven through the sidecar's pidfd target.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use lameduck_test_support::haproxy::{Checks, Haproxy, Server};
use lameduck_test_support::http::get;
use lameduck_test_support::load::Connections;
use lameduck_test_support::network::{addrs, pod_network};
use lameduck_test_support::nginx::Nginx;
use lameduck_test_support::process::{Lameduck, Mode};
use lameduck_test_support::scenario::{
    assert_none_failed, assert_served_across, assert_was_down, load_context, states_at_line,
    under_load,
};
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
const QUIET_LINE: &str = "no traffic reached the app for the quiet period";
/// The drained pod's address in its own network namespace, and the test's end of the link.
const B1_IP: Ipv4Addr = Ipv4Addr::new(10, 254, 1, 2);
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 254, 1, 1);

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
    assert_eq!(sidecar.ready_addr(), endpoints, "{name}'s endpoints");
    (nginx, sidecar)
}

#[test]
fn sidecar_quiet_period_ends_the_drain_once_haproxy_stops_sending_traffic_and_fails_no_request() {
    // The adaptive delay counts every connection its network namespace accepts, so b1 gets
    // one of its own, as a pod has, reached over a veth pair from the test's namespace, where
    // b2, HAProxy and the load live.
    let (b1_addr, b1_ep) = (
        SocketAddr::from((B1_IP, 8080)),
        SocketAddr::from((B1_IP, 8081)),
    );
    let (mut b1_nginx, mut b1) = pod_network(B1_IP, HOST_IP, || sidecar_pod("b1", b1_addr, b1_ep));
    let [b2_addr, b2_ep, listen] = addrs(Ipv4Addr::new(127, 0, 63, 1));
    let (_b2_nginx, _b2) = sidecar_pod("b2", b2_addr, b2_ep);
    let haproxy = Haproxy::start_with(
        "sidecar-quiet",
        listen,
        "/readyz",
        &[
            Server::new("b1", b1_addr, b1_ep),
            Server::new("b2", b2_addr, b2_ep),
        ],
        SLOW_CHECKS,
    );
    haproxy.expect_all_up(Duration::from_secs(10));

    // The kubelet runs the app container's preStop hook: it holds until nginx has exited.
    let (report, (began, took, answer, seen_at_stop)) =
        under_load(haproxy.addr, WORKERS, Connections::PerRequest, || {
            let began = Instant::now();
            let hook = std::thread::spawn(move || get(b1_ep, "/prestop"));
            let seen_at_stop = states_at_line(
                &haproxy,
                &b1.stderr,
                QUIET_LINE,
                ADAPTIVE_EXIT + Duration::from_secs(3),
                || hook.is_finished(),
            );
            let took = began.elapsed();
            (began, took, hook.join().expect("the hook"), seen_at_stop)
        });

    let log = b1.stderr.all();
    let context = || {
        let load = load_context(&report, began, "the hook", &haproxy);
        format!("{load}\nb1 log: {log:#?}")
    };
    assert_none_failed(&report, &context);
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
    assert_served_across(&report, "b1", began, &context);
    let stopped = log
        .iter()
        .find(|l| l.contains(QUIET_LINE))
        .unwrap_or_else(|| panic!("no line says why the wait ended: {}", context()));
    assert!(
        stopped.contains(&b1_addr.port().to_string()),
        "nginx's port {} is not among the watched ports: {stopped:?}",
        b1_addr.port()
    );
    assert_was_down(&seen_at_stop, "b1", &context);
    b1.signal(Signal::SIGTERM);
    assert_eq!(b1.wait_exit(Duration::from_secs(2)), 0);
}
