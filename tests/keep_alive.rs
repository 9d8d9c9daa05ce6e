//! Keep-alive clients through an L4 balancer, the way kube-proxy serves a Service: real HAProxy
//! in TCP mode pins each client connection to one pod for its whole life, so a drain that only
//! fails readiness leaves those connections on the draining pod, and nginx's graceful stop then
//! closes each one under a client that was promised keep-alive. With lameduck's drain proxy in
//! front of nginx the clients are moved off during the delay (`Connection: close`), and not one
//! request fails; without it, the same harness fails some. Both forms of the balancer: one that
//! health-checks `/readyz`, and one that takes the pod out a fixed time after the drain began,
//! whatever readiness says, as kube-proxy does when the endpoint turns not ready.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use lameduck_test_support::haproxy::{Haproxy, Server};
use lameduck_test_support::load::{Connections, Report};
use lameduck_test_support::network::addrs;
use lameduck_test_support::nginx::NginxConfig;
use lameduck_test_support::process::{Lameduck, Mode, log_field};
use lameduck_test_support::scenario::under_load;
use nix::sys::signal::Signal;

/// The upper bound on the delay; with the proxy the drain ends long before it.
const DELAY_FLAG: &str = "4s";
const DELAY: Duration = Duration::from_secs(4);
/// When the kube-proxy-like balancer takes the pod out, after the drain began.
const TAKEN_OUT_AFTER: Duration = Duration::from_millis(500);
/// Keep-alive clients that reuse their connection at once, as `wrk -c16` (see
/// `Connections::KeepAliveUnchecked`), each sending `/slow` requests of about 400 ms back to back.
const WORKERS: usize = 16;
/// Room for a busy machine.
const SLACK: Duration = Duration::from_secs(4);

/// How the balancer learns that the pod is draining.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Balancer {
    /// Health checks on lameduck's `/readyz`.
    HealthChecked,
    /// Out of rotation `TAKEN_OUT_AFTER` after the drain began; no checks.
    KubeProxyLike,
}

/// One pod: nginx under lameduck (PID 1), with or without the drain proxy in front of it.
struct Pod {
    run: Lameduck,
    /// Where the balancer sends connections: the proxy, or nginx itself.
    server: Server,
    _config: NginxConfig,
}

impl Pod {
    fn start(test: &str, name: &str, ip: Ipv4Addr, proxied: bool) -> Self {
        let [nginx, endpoints, proxy] = addrs(ip);
        let config = NginxConfig::behind_l4(&format!("ka-{test}-{name}"), nginx, name);
        let proxy_flag = format!("{proxy}={nginx}");
        let mut drain = vec!["--shutdown-delay", DELAY_FLAG];
        if proxied {
            drain.extend(["--proxy", &proxy_flag]);
        }
        let run = Lameduck::start(Mode::Pid1, &config.under_lameduck(endpoints, &drain));
        assert_eq!(run.ready_addr(), endpoints, "{name}'s endpoints");
        let server = Server::new(name, if proxied { proxy } else { nginx }, endpoints);
        Pod {
            run,
            server,
            _config: config,
        }
    }
}

/// What one run of the scenario gave.
struct Run {
    report: Report,
    began: Instant,
    took: Duration,
    exit_code: i32,
    log: Vec<String>,
    haproxy_log: String,
}

impl Run {
    fn context(&self) -> String {
        format!(
            "times in ms from SIGTERM\n{}\nhaproxy log:\n{}\nb1 log: {:#?}",
            self.report.summary(self.began),
            self.haproxy_log,
            self.log
        )
    }
}

/// Two pods behind HAProxy in TCP mode under keep-alive load; b1 is drained by SIGTERM.
fn drain_behind_l4(test: &str, ip: Ipv4Addr, balancer: Balancer, proxied: bool) -> Run {
    let mut b1 = Pod::start(test, "b1", ip, proxied);
    let b2 = Pod::start(test, "b2", ip, proxied);
    let [listen] = addrs(ip);
    let check = (balancer == Balancer::HealthChecked).then_some("/readyz");
    let haproxy = Haproxy::start_tcp(test, listen, check, &[b1.server.clone(), b2.server.clone()]);
    if check.is_some() {
        haproxy.expect_all_up(Duration::from_secs(10));
    }
    let connections = Connections::KeepAliveUnchecked;
    let (report, (began, exit_code, took)) = under_load(haproxy.addr, WORKERS, connections, || {
        let began = Instant::now();
        b1.run.signal(Signal::SIGTERM);
        if balancer == Balancer::KubeProxyLike {
            std::thread::sleep(TAKEN_OUT_AFTER);
            haproxy.take_out("b1");
        }
        let exit_code = b1.run.wait_exit(DELAY + SLACK);
        (began, exit_code, began.elapsed())
    });
    drop(b2);
    Run {
        report,
        began,
        took,
        exit_code,
        log: b1.run.stderr.all(),
        haproxy_log: haproxy.log_tail(30),
    }
}

/// With the proxy: nothing failed, b1 had clients on it when the drain began and served them
/// before, the proxy moved them off and so ended the delay early, and b2 served them after.
fn assert_moved_off_without_a_failure(run: &Run) {
    let context = || run.context();
    assert!(
        run.report.failures().is_empty(),
        "requests failed: {}",
        context()
    );
    assert_eq!(run.exit_code, 0, "b1 exit code: {}", context());
    assert!(
        run.report
            .in_flight_at(run.began)
            .iter()
            .any(|r| r.served_by("b1")),
        "b1 had no request in flight at SIGTERM, so the drain proves nothing: {}",
        context()
    );
    assert!(
        run.report.served_after("b2", run.began + run.took),
        "b2 served nothing after b1 left: {}",
        context()
    );
    let line = run
        .log
        .iter()
        .find(|l| l.contains("the proxy moved every client off"))
        .unwrap_or_else(|| panic!("no line says the proxy drained: {}", context()));
    let moved_off = log_field(line, "moved_off");
    assert!(moved_off > 0, "no connection was moved off: {line}");
    assert!(
        run.took < DELAY,
        "b1 took {:?} to exit, the full delay: {}",
        run.took,
        context()
    );
}

/// Without the proxy: some keep-alive client lost a request to nginx's close.
fn assert_some_failed(run: &Run) {
    assert_eq!(run.exit_code, 0, "b1 exit code: {}", run.context());
    assert!(
        !run.report.failures().is_empty(),
        "no request failed without the proxy, so the harness cannot show what the proxy fixes: {}",
        run.context()
    );
}

#[test]
fn health_checked_l4_balancer_keep_alive_clients_fail_nothing_through_the_proxy() {
    let run = drain_behind_l4(
        "hc-proxy",
        Ipv4Addr::new(127, 0, 62, 1),
        Balancer::HealthChecked,
        true,
    );
    assert_moved_off_without_a_failure(&run);
}

#[test]
fn health_checked_l4_balancer_keep_alive_clients_lose_requests_without_the_proxy() {
    let run = drain_behind_l4(
        "hc-direct",
        Ipv4Addr::new(127, 0, 62, 2),
        Balancer::HealthChecked,
        false,
    );
    assert_some_failed(&run);
}

#[test]
fn kube_proxy_like_balancer_keep_alive_clients_fail_nothing_through_the_proxy() {
    let run = drain_behind_l4(
        "kp-proxy",
        Ipv4Addr::new(127, 0, 62, 3),
        Balancer::KubeProxyLike,
        true,
    );
    assert_moved_off_without_a_failure(&run);
}

#[test]
fn kube_proxy_like_balancer_keep_alive_clients_lose_requests_without_the_proxy() {
    let run = drain_behind_l4(
        "kp-direct",
        Ipv4Addr::new(127, 0, 62, 4),
        Balancer::KubeProxyLike,
        false,
    );
    assert_some_failed(&run);
}
