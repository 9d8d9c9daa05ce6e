//! Zero dropped requests for each known server, not just nginx: Apache httpd, HAProxy as the
//! app, Caddy, lighttpd and gunicorn (and nginx again, through the same harness), each under
//! lameduck as PID 1 with the stop signal the table of known servers
//! (kubectl-lameduck/src/servers.rs) gives it. Behind the front HAProxy in three
//! ways: a new connection per request and keep-alive clients through an L7 balancer that
//! health-checks `/readyz`; and per-request connections through an L4 balancer that, as
//! kube-proxy, takes the pod out a fixed time after its drain starts, whatever readiness says.
//! And keep-alive clients pinned to the pod by the L4 balancer, with lameduck's drain proxy in
//! front of the server, which moves them off during the delay. Then the signal itself: responses in flight when lameduck sends the table's graceful signal
//! all complete, and a fast-stop signal from the same table cuts them.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use lameduck_test_support::apps::{App, Kind};
use lameduck_test_support::haproxy::{Haproxy, Server};
use lameduck_test_support::load::{Connections, Outcome};
use lameduck_test_support::network::addrs;
use lameduck_test_support::nginx::Nginx;
use lameduck_test_support::process::{Lameduck, Mode, wait_until};
use lameduck_test_support::scenario::{
    SLOW, assert_none_failed, assert_served_across, load_context, slow_load, under_load,
};
use nix::sys::signal::Signal;

/// The shutdown delay: over the L7 balancer's detection time (two checks 200 ms apart) and
/// the L4 balancer's `TAKE_OUT_AFTER`.
const DELAY: Duration = Duration::from_secs(2);
const DELAY_FLAG: &str = "2s";
/// When the L4 balancer takes the draining pod out, after its drain began: as an endpoint
/// update reaches kube-proxy, late but within the delay.
const TAKE_OUT_AFTER: Duration = Duration::from_secs(1);
/// The drain proxy's `--min-delay`: past `TAKE_OUT_AFTER`, so no new connection reaches a pod
/// through the L4 balancer once its app has stopped.
const PROXY_MIN_DELAY: Duration = Duration::from_millis(1500);
const PROXY_MIN_DELAY_FLAG: &str = "1500ms";
/// Room for a busy machine in the upper bounds on exit times.
const SLACK: Duration = Duration::from_secs(3);
/// Requests in flight at any moment.
const WORKERS: usize = 8;

/// The balancer in front of the pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Front {
    /// HTTP mode, checking lameduck's `/readyz` every 200 ms.
    L7,
    /// TCP mode, no checks; the pod is taken out `TAKE_OUT_AFTER` its drain began.
    L4,
}

fn signal_name(signal: Signal) -> &'static str {
    signal.as_str().trim_start_matches("SIG")
}

/// One pod: the server under lameduck, PID 1 of its own PID namespace.
struct Pod {
    name: &'static str,
    run: Lameduck,
    /// lameduck's endpoints, where the L7 balancer checks `/readyz`.
    endpoints: SocketAddr,
    /// Dropped after `run`, so the server is gone before its folder is removed.
    app: App,
    /// lameduck's drain proxy in front of the server, when it runs one.
    proxy: Option<SocketAddr>,
}

impl Pod {
    /// Starts the pod with `stop_signal` and `drain` flags, and waits until lameduck reports it
    /// ready, which with `--ready-check` means the server answers.
    fn start(
        kind: Kind,
        test: &str,
        name: &'static str,
        [addr, endpoints]: [SocketAddr; 2],
        upstream: Option<SocketAddr>,
        stop_signal: Signal,
        drain: &[&str],
    ) -> Self {
        let app = App::new(kind, test, name, addr, upstream);
        let args = app.under_lameduck(endpoints, signal_name(stop_signal), drain);
        let env = app.env();
        let run = Lameduck::start_with(Mode::Pid1, &args, |command| {
            command.envs(env);
        });
        let proxy = args
            .iter()
            .position(|arg| arg == "--proxy")
            .and_then(|at| args.get(at + 1))
            .and_then(|spec| spec.split('=').next())
            .and_then(|listen| listen.parse().ok());
        let pod = Pod {
            name,
            run,
            endpoints,
            app,
            proxy,
        };
        assert_eq!(pod.run.ready_within(Duration::from_secs(15)), endpoints);
        assert!(
            wait_until(Duration::from_secs(15), || pod
                .app
                .started(&pod.run.stderr.all())),
            "{} {name} never started all of itself: {:#?}",
            kind.id(),
            pod.run.stderr.all()
        );
        pod
    }

    /// How a balancer reaches it.
    fn server(&self) -> Server {
        Server::new(
            self.name,
            self.proxy.unwrap_or(self.app.addr),
            self.endpoints,
        )
    }
}

/// The slow upstream a proxy (HAProxy, Caddy) sends `/slow` to, outside the pods.
fn upstream(kind: Kind, test: &str, addr: SocketAddr) -> Option<Nginx> {
    kind.needs_upstream()
        .then(|| Nginx::start(&format!("upstream-{test}"), addr))
}

/// Two pods of `kind` behind `front`; b1 is drained by SIGTERM under load from clients using
/// `connections`. No request may fail, b1 must have served before and had requests in flight
/// at SIGTERM, exit 0 after its delay and soon after, and b2 must serve on alone.
fn drain_one_of_two(kind: Kind, ip: Ipv4Addr, front: Front, connections: Connections) {
    drain_one_of_two_with(kind, ip, front, connections, false);
}

/// `drain_one_of_two`; with `proxy`, each pod's lameduck runs its drain proxy in front of the
/// server (`--proxy`, `--min-delay PROXY_MIN_DELAY`) and the balancer sends to the proxy.
fn drain_one_of_two_with(
    kind: Kind,
    ip: Ipv4Addr,
    front: Front,
    connections: Connections,
    proxy: bool,
) {
    let test = format!(
        "{}-{front:?}-{connections:?}-{}",
        kind.id().to_ascii_lowercase(),
        if proxy { "proxy" } else { "direct" }
    );
    let graceful = kind.entry().graceful_stop;
    let [b1_app, b1_ep, b1_proxy, b2_app, b2_ep, b2_proxy, listen, up] = addrs(ip);
    let upstream = upstream(kind, &test, up);
    let up = upstream.as_ref().map(|u| u.config.addr);
    let flags = |proxy_addr: SocketAddr, app: SocketAddr| -> Vec<String> {
        let mut flags = vec!["--shutdown-delay".to_owned(), DELAY_FLAG.to_owned()];
        if proxy {
            flags.extend([
                "--proxy".to_owned(),
                format!("{proxy_addr}={app}"),
                "--min-delay".to_owned(),
                PROXY_MIN_DELAY_FLAG.to_owned(),
            ]);
        }
        flags
    };
    let (b1_flags, b2_flags) = (flags(b1_proxy, b1_app), flags(b2_proxy, b2_app));
    let b1_flags: Vec<&str> = b1_flags.iter().map(String::as_str).collect();
    let b2_flags: Vec<&str> = b2_flags.iter().map(String::as_str).collect();
    let mut b1 = Pod::start(kind, &test, "b1", [b1_app, b1_ep], up, graceful, &b1_flags);
    let b2 = Pod::start(kind, &test, "b2", [b2_app, b2_ep], up, graceful, &b2_flags);
    let haproxy = match front {
        Front::L7 => {
            let haproxy = Haproxy::start(&test, listen, "/readyz", &[b1.server(), b2.server()]);
            haproxy.expect_all_up(Duration::from_secs(10));
            haproxy
        }
        Front::L4 => Haproxy::start_tcp(&test, listen, None, &[b1.server(), b2.server()]),
    };

    let exit_within = DELAY + SLOW + b1.app.exit_lag() + SLACK;
    let (report, (began, exit_code, took)) = under_load(listen, WORKERS, connections, || {
        let began = Instant::now();
        b1.run.signal(Signal::SIGTERM);
        if front == Front::L4 {
            std::thread::sleep(TAKE_OUT_AFTER);
            haproxy.take_out("b1");
        }
        let exit_code = b1.run.wait_exit(exit_within);
        (began, exit_code, began.elapsed())
    });

    let log = b1.run.stderr.all();
    let context = || {
        let load = load_context(&report, began, "SIGTERM", &haproxy);
        format!(
            "{} {front:?} {connections:?}; {load}\nb1 log: {log:#?}",
            kind.id()
        )
    };
    assert_none_failed(&report, &context);
    assert!(
        b1.app.exited_cleanly(exit_code),
        "b1 exit code {exit_code}: {}",
        context()
    );
    // The proxy ends the delay once its connections are gone, never before the minimum.
    let least = if proxy { PROXY_MIN_DELAY } else { DELAY };
    assert!(
        took >= least,
        "b1 exited {took:?} after SIGTERM, before the delay: {}",
        context()
    );
    assert!(
        took <= exit_within,
        "b1 took {took:?} to exit: {}",
        context()
    );
    assert_served_across(&report, "b1", began, &context);
    assert!(
        report.served_after("b2", began + took),
        "b2 served nothing after b1 left: {}",
        context()
    );
    if front == Front::L7 && connections == Connections::KeepAlive {
        // The L7 balancer picks a server per request: the clients' connections outlive the drain.
        assert_eq!(
            report.connections(),
            WORKERS,
            "keep-alive clients had to reconnect: {}",
            context()
        );
    }
}

/// One pod of `kind` under lameduck with no delay and `stop_signal`; clients send `/slow`
/// straight to the server, and lameduck gets SIGTERM while responses are in flight. Returns
/// those responses' outcomes, lameduck's exit code and whether it is a clean one for the server.
fn stop_with_responses_in_flight(
    kind: Kind,
    ip: Ipv4Addr,
    stop_signal: Signal,
) -> (Vec<Outcome>, (i32, bool), String) {
    let test = format!("{}-signal-{}", kind.id(), signal_name(stop_signal));
    let [app, ep, up] = addrs(ip);
    let upstream = upstream(kind, &test, up);
    let up = upstream.as_ref().map(|u| u.config.addr);
    let mut pod = Pod::start(
        kind,
        &test,
        "b1",
        [app, ep],
        up,
        stop_signal,
        &["--shutdown-delay", "0s", "--drain-timeout", "5s"],
    );
    let load = slow_load(app, 4, Connections::PerRequest);
    // Past the first responses, so some are well under way.
    std::thread::sleep(SLOW + SLOW / 2);
    let signalled = Instant::now();
    pod.run.signal(Signal::SIGTERM);
    let exit_code = pod
        .run
        .wait_exit(Duration::from_secs(5) + pod.app.exit_lag() + SLACK);
    let report = load.stop();
    let in_flight: Vec<Outcome> = report
        .in_flight_at(signalled)
        .iter()
        .map(|r| r.outcome.clone())
        .collect();
    let context = format!(
        "{} with SIG{}; times in ms from SIGTERM\n{}\nlog: {:#?}",
        kind.id(),
        signal_name(stop_signal),
        report.summary(signalled),
        pod.run.stderr.all()
    );
    assert!(
        in_flight.len() >= 2,
        "too few responses in flight: {context}"
    );
    let clean = pod.app.exited_cleanly(exit_code);
    (in_flight, (exit_code, clean), context)
}

/// The table's graceful signal lets every response in flight complete, and the server exit 0.
fn graceful_signal_completes_responses(kind: Kind, ip: Ipv4Addr) {
    let (in_flight, exit_code, context) =
        stop_with_responses_in_flight(kind, ip, kind.entry().graceful_stop);
    assert!(
        in_flight.iter().all(|o| *o == Outcome::Ok),
        "a response in flight was cut: {context}"
    );
    assert!(exit_code.1, "exit code {}: {context}", exit_code.0);
}

/// The table's first fast-stop signal cuts the responses in flight.
fn fast_signal_cuts_responses(kind: Kind, ip: Ipv4Addr) {
    let fast = kind.entry().fast_stop[0];
    let (in_flight, _, context) = stop_with_responses_in_flight(kind, ip, fast);
    assert!(
        in_flight.iter().any(|o| *o != Outcome::Ok),
        "SIG{} cut no response in flight, so it is no fast stop: {context}",
        signal_name(fast)
    );
}

/// One module per server, each test on its own loopback address `127.0.63.(8 × n + case)`.
macro_rules! server_tests {
    ($($module:ident => $kind:expr, $n:expr;)*) => {
        $(
            mod $module {
                use super::*;

                fn ip(case: u8) -> Ipv4Addr {
                    Ipv4Addr::new(127, 0, 63, 8 * $n + case)
                }

                #[test]
                fn per_request_clients_through_l7_see_no_failure() {
                    drain_one_of_two($kind, ip(1), Front::L7, Connections::PerRequest);
                }

                #[test]
                fn keep_alive_clients_through_l7_see_no_failure() {
                    drain_one_of_two($kind, ip(2), Front::L7, Connections::KeepAlive);
                }

                #[test]
                fn per_request_clients_through_l4_see_no_failure() {
                    drain_one_of_two($kind, ip(3), Front::L4, Connections::PerRequest);
                }

                #[test]
                fn keep_alive_clients_through_l4_see_no_failure_with_the_drain_proxy() {
                    drain_one_of_two_with($kind, ip(6), Front::L4, Connections::KeepAlive, true);
                }

                #[test]
                fn graceful_stop_signal_completes_responses_in_flight() {
                    graceful_signal_completes_responses($kind, ip(4));
                }

                #[test]
                fn fast_stop_signal_cuts_responses_in_flight() {
                    fast_signal_cuts_responses($kind, ip(5));
                }
            }
        )*
    };
}

server_tests! {
    nginx => Kind::Nginx, 1;
    apache => Kind::Apache, 2;
    haproxy => Kind::Haproxy, 3;
    caddy => Kind::Caddy, 4;
    lighttpd => Kind::Lighttpd, 5;
    gunicorn => Kind::Gunicorn, 6;
}
