//! The zero-downtime benchmark that benches/zero_downtime.sh runs: the scenario of
//! tests/zero_downtime.rs and tests/servers.rs (two pods of one server behind HAProxy, steady
//! load of slow requests, SIGTERM to one pod's PID 1 midway) for the server alone as PID 1,
//! under tini, under dumb-init, under dumb-init rewriting SIGTERM to the server's graceful
//! signal, and under lameduck: with the short delay these health checks need, with a long fixed
//! delay, and with the same long delay made adaptive by `--quiet-period`, which shows the time
//! the adaptive delay saves, and with its drain proxy in front of the server (`--proxy`),
//! which moves keep-alive clients off during the delay. Any server of the test support crate's
//! `apps` (`--server`, nginx by default), its signals from the table of known servers. Through
//! HAProxy in HTTP mode checking readiness, or (`--l4`) in TCP mode, taking the pod out a fixed
//! time after the SIGTERM as kube-proxy does. One Markdown table row per run. The servers,
//! HAProxy, the load generator and the process harness are the tests' own, from the test
//! support crate.
//!
//! Usage: zero_downtime_bench [--server NAME] [--runs N] [--keep-alive] [--l4] [--short]
//! [--only-lameduck] [--lameduck PATH]; `--short` leaves out the two rows with a 15 s delay,
//! `--only-lameduck` keeps just lameduck with and without its proxy.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use lameduck_test_support::apps::{App, Kind};
use lameduck_test_support::haproxy::{Haproxy, Server};
use lameduck_test_support::http::status;
use lameduck_test_support::load::{Connections, Outcome, Report};
use lameduck_test_support::network::addrs;
use lameduck_test_support::nginx::Nginx;
use lameduck_test_support::process::{pid1_command, pid1_of, wait_until};
use lameduck_test_support::scenario::{SLOW_BYTES, slow_load};
use lameduck_test_support::servers;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// lameduck's shutdown delay, as in the tests.
const DELAY: Duration = Duration::from_secs(2);
/// A shutdown delay long enough for any load balancer, which a fixed delay always waits out.
const LONG_DELAY: Duration = Duration::from_secs(15);
/// `--quiet-period` of the adaptive row.
const QUIET_PERIOD: Duration = Duration::from_secs(1);
/// Load before the SIGTERM.
const LEAD: Duration = Duration::from_millis(1500);
/// Load after the SIGTERM, the same for every init so the counts compare: the delay, then as
/// long again as the lead. A pod that takes longer to exit (the long fixed delay) has load
/// until it has exited, so its counts are larger.
const TAIL: Duration = Duration::from_millis(3500);
const WORKERS: usize = 8;
/// When the pod gets SIGKILL if it has not exited: the kubelet's grace period, shortened.
const GRACE: Duration = Duration::from_secs(10);
/// The drain proxy's `--min-delay`: past `TAKE_OUT_AFTER`, so that with `--l4` no new
/// connection reaches the pod once its app has stopped.
const PROXY_MIN_DELAY: Duration = Duration::from_millis(1500);
/// With `--l4`, when the balancer takes the pod out after its SIGTERM, as an endpoint update
/// reaches kube-proxy (the tests' value).
const TAKE_OUT_AFTER: Duration = Duration::from_secs(1);
/// The servers' own loopback address (see `network::free_addrs`).
const IP: Ipv4Addr = Ipv4Addr::new(127, 0, 62, 1);

/// The server under test and its entry in the table of known servers.
struct Subject {
    kind: Kind,
    entry: &'static servers::Server,
}

impl Subject {
    fn graceful(&self) -> &'static str {
        self.entry.graceful_stop.as_str().trim_start_matches("SIG")
    }
}

/// What runs as PID 1 of each pod.
#[derive(Clone, Copy, Debug)]
enum Pid1 {
    Alone,
    Tini,
    DumbInit,
    DumbInitQuit,
    Lameduck,
    /// `--shutdown-delay LONG_DELAY`.
    LameduckLong,
    /// `--shutdown-delay LONG_DELAY --quiet-period QUIET_PERIOD`.
    LameduckAdaptive,
    /// The drain proxy in front of the server: `--proxy PROXY=APP`, the balancer sending to
    /// PROXY, with `--min-delay PROXY_MIN_DELAY`.
    LameduckProxy,
}

impl Pid1 {
    const ALL: [Pid1; 8] = [
        Pid1::Alone,
        Pid1::Tini,
        Pid1::DumbInit,
        Pid1::DumbInitQuit,
        Pid1::Lameduck,
        Pid1::LameduckLong,
        Pid1::LameduckAdaptive,
        Pid1::LameduckProxy,
    ];

    fn label(self, subject: &Subject) -> String {
        match self {
            Pid1::Alone => format!("{} alone", subject.kind.id()),
            Pid1::Tini => "tini".into(),
            Pid1::DumbInit => "dumb-init".into(),
            Pid1::DumbInitQuit => format!(
                "dumb-init --rewrite 15:{}",
                subject.entry.graceful_stop as i32
            ),
            Pid1::Lameduck => "lameduck".into(),
            Pid1::LameduckLong => "lameduck --shutdown-delay 15s".into(),
            Pid1::LameduckAdaptive => "lameduck --shutdown-delay 15s --quiet-period 1s".into(),
            Pid1::LameduckProxy => format!(
                "lameduck --proxy (--min-delay {}ms)",
                PROXY_MIN_DELAY.as_millis()
            ),
        }
    }

    /// The pod's command line: the init, then the server.
    fn argv(self, pod: &PodAddrs, app: &App, subject: &Subject, lameduck: &str) -> Vec<String> {
        let mut argv: Vec<String> = match self {
            Pid1::Alone => vec![],
            Pid1::Tini => vec!["tini".into(), "--".into()],
            Pid1::DumbInit => vec!["dumb-init".into(), "--".into()],
            // The graceful signal for SIGTERM, unless SIGTERM is the graceful one already.
            Pid1::DumbInitQuit => vec![
                "dumb-init".into(),
                "--rewrite".into(),
                format!("15:{}", subject.entry.graceful_stop as i32),
                "--".into(),
            ],
            Pid1::Lameduck | Pid1::LameduckLong | Pid1::LameduckAdaptive | Pid1::LameduckProxy => {
                let delay = if matches!(self, Pid1::Lameduck | Pid1::LameduckProxy) {
                    DELAY
                } else {
                    LONG_DELAY
                };
                let delay = format!("{}ms", delay.as_millis());
                let quiet = format!("{}ms", QUIET_PERIOD.as_millis());
                let min_delay = format!("{}ms", PROXY_MIN_DELAY.as_millis());
                let proxy = format!("{}={}", pod.proxy, pod.app);
                let mut drain = vec!["--shutdown-delay", delay.as_str()];
                if matches!(self, Pid1::LameduckAdaptive) {
                    drain.extend(["--quiet-period", quiet.as_str()]);
                }
                if matches!(self, Pid1::LameduckProxy) {
                    drain.extend(["--proxy", proxy.as_str(), "--min-delay", min_delay.as_str()]);
                }
                let mut argv = vec![lameduck.to_owned()];
                argv.extend(app.under_lameduck(pod.endpoints, subject.graceful(), &drain));
                return argv;
            }
        };
        argv.extend(app.command());
        argv
    }

    /// What the balancer checks: lameduck's `/readyz`, or else the server itself, as a
    /// readiness probe on the app's port would.
    fn check(self, pod: &PodAddrs) -> (&'static str, SocketAddr) {
        match self {
            Pid1::Lameduck | Pid1::LameduckLong | Pid1::LameduckAdaptive | Pid1::LameduckProxy => {
                ("/readyz", pod.endpoints)
            }
            _ => ("/fast", pod.app),
        }
    }

    /// Where the balancer sends requests: the proxy's port, or the server's.
    fn target(self, pod: &PodAddrs) -> SocketAddr {
        match self {
            Pid1::LameduckProxy => pod.proxy,
            _ => pod.app,
        }
    }
}

struct PodAddrs {
    app: SocketAddr,
    /// lameduck's drain proxy (used by `Pid1::LameduckProxy` only).
    proxy: SocketAddr,
    /// lameduck's endpoints (unused by the other inits).
    endpoints: SocketAddr,
}

/// One pod: `unshare --pid --fork --mount-proc --kill-child INIT SERVER`, killed on drop.
struct Pod {
    process: Child,
    /// The pod's PID 1 as the host sees it.
    pid1: Pid,
    /// Dropped after `process`, so the server is gone before its folder is removed.
    _app: App,
}

impl Pod {
    fn start(
        init: Pid1,
        subject: &Subject,
        (name, label): (&str, &str),
        addrs: &PodAddrs,
        upstream: Option<SocketAddr>,
        lameduck: &str,
    ) -> Self {
        let app = App::new(
            subject.kind,
            &format!("bench-{label}"),
            name,
            addrs.app,
            upstream,
        );
        let argv = init.argv(addrs, &app, subject, lameduck);
        let mut process = pid1_command(&argv[0])
            .args(&argv[1..])
            .envs(app.env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start unshare");
        let pid1 =
            pid1_of(&mut process).unwrap_or_else(|| panic!("{name}: no PID 1 under unshare"));
        let (path, addr) = init.check(addrs);
        assert!(
            wait_until(Duration::from_secs(15), || status(addr, path) == Some(200)),
            "{name} ({}) never answered {path} on {addr}",
            init.label(subject)
        );
        // Its log goes nowhere here: give a server that starts in parts (gunicorn's workers)
        // the time it takes on a quiet machine.
        if !app.started(&[]) {
            std::thread::sleep(Duration::from_secs(2));
        }
        Pod {
            process,
            pid1,
            _app: app,
        }
    }

    /// Sends SIGTERM to the pod's PID 1 as the kubelet does, and SIGKILL after `GRACE`;
    /// returns how long the pod took to exit and its exit code (None when killed).
    fn terminate(&mut self) -> (Duration, Option<i32>) {
        let sent = Instant::now();
        kill(self.pid1, Signal::SIGTERM).expect("SIGTERM the pod");
        let mut code = None;
        let mut exited = || {
            wait_until(GRACE, || match self.process.try_wait().expect("try_wait") {
                Some(status) => {
                    code = status.code();
                    true
                }
                None => false,
            })
        };
        if !exited() {
            // A PID 1 without a SIGTERM handler ignores it (HAProxy alone): the kubelet's SIGKILL.
            let _ = kill(self.pid1, Signal::SIGKILL);
            assert!(exited(), "the pod did not exit on SIGKILL");
            code = None;
        }
        (sent.elapsed(), code)
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        // With --kill-child, unshare's death kills the pod's PID 1 and so the whole namespace.
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

/// One run's outcome.
struct Row {
    sent: usize,
    failed: usize,
    status_5xx: usize,
    broken: usize,
    short_body: usize,
    in_flight_failed: usize,
    exit_after: Duration,
    exit_code: Option<i32>,
}

/// How the clients reach the pods.
#[derive(Clone, Copy)]
struct Front {
    connections: Connections,
    /// TCP mode, the pod taken out `TAKE_OUT_AFTER` its SIGTERM; else HTTP mode with checks.
    l4: bool,
}

fn run_once(init: Pid1, subject: &Subject, round: usize, front: Front, lameduck: &str) -> Row {
    let [
        b1_app,
        b1_endpoints,
        b1_proxy,
        b2_app,
        b2_endpoints,
        b2_proxy,
        listen,
        up,
    ] = addrs(IP);
    let upstream = subject
        .kind
        .needs_upstream()
        .then(|| Nginx::start(&format!("bench-upstream-{round}"), up));
    let up = upstream.as_ref().map(|u| u.config.addr);
    let b1_addrs = PodAddrs {
        app: b1_app,
        proxy: b1_proxy,
        endpoints: b1_endpoints,
    };
    let b2_addrs = PodAddrs {
        app: b2_app,
        proxy: b2_proxy,
        endpoints: b2_endpoints,
    };
    let b1_label = format!("{round}-b1");
    let mut b1 = Pod::start(init, subject, ("b1", &b1_label), &b1_addrs, up, lameduck);
    let b2_label = format!("{round}-b2");
    let _b2 = Pod::start(init, subject, ("b2", &b2_label), &b2_addrs, up, lameduck);
    let (path, _) = init.check(&b1_addrs);
    let servers = [("b1", &b1_addrs), ("b2", &b2_addrs)]
        .map(|(name, addrs)| Server::new(name, init.target(addrs), init.check(addrs).1));
    let label = format!("bench-{round}");
    let haproxy = if front.l4 {
        Haproxy::start_tcp(&label, listen, None, &servers)
    } else {
        let haproxy = Haproxy::start(&label, listen, path, &servers);
        haproxy.expect_all_up(Duration::from_secs(10));
        haproxy
    };
    let connections = front.connections;

    let load = slow_load(listen, WORKERS, connections);
    std::thread::sleep(LEAD);
    let term = Instant::now();
    let (exit_after, exit_code) = std::thread::scope(|scope| {
        if front.l4 {
            scope.spawn(|| {
                std::thread::sleep(TAKE_OUT_AFTER);
                haproxy.take_out("b1");
            });
        }
        b1.terminate()
    });
    std::thread::sleep(TAIL.saturating_sub(term.elapsed()));
    let report = load.stop();
    row(&report, term, exit_after, exit_code)
}

fn row(report: &Report, term: Instant, exit_after: Duration, exit_code: Option<i32>) -> Row {
    let failures = report.failures();
    let count = |f: fn(&Outcome) -> bool| failures.iter().filter(|r| f(&r.outcome)).count();
    Row {
        sent: report.records.len(),
        failed: failures.len(),
        status_5xx: count(|o| matches!(o, Outcome::Status(s) if *s >= 500)),
        broken: count(|o| matches!(o, Outcome::ConnectFailed(_) | Outcome::Broken(_))),
        short_body: count(|o| matches!(o, Outcome::ShortBody(_))),
        in_flight_failed: report
            .in_flight_at(term)
            .iter()
            .filter(|r| r.outcome != Outcome::Ok)
            .count(),
        exit_after,
        exit_code,
    }
}

fn main() {
    let mut runs = 3;
    let mut front = Front {
        connections: Connections::PerRequest,
        l4: false,
    };
    let mut kind = Kind::Nginx;
    let mut short = false;
    let mut only_lameduck = false;
    let mut lameduck = default_lameduck();
    let mut args = std::env::args().skip(1);
    let usage = "usage: [--server NAME] [--runs N] [--keep-alive] [--l4] [--short] \
                 [--only-lameduck] [--lameduck PATH]";
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => runs = args.next().and_then(|n| n.parse().ok()).expect("--runs N"),
            "--keep-alive" => front.connections = Connections::KeepAlive,
            "--l4" => front.l4 = true,
            "--short" => short = true,
            "--only-lameduck" => only_lameduck = true,
            "--server" => {
                let name = args.next().unwrap_or_default();
                kind = Kind::from_id(&name).unwrap_or_else(|| {
                    let names: Vec<&str> = Kind::ALL.iter().map(|k| k.id()).collect();
                    panic!("unknown server {name:?}; one of {}", names.join(", "))
                });
            }
            "--lameduck" => lameduck = args.next().expect("--lameduck PATH").into(),
            other => panic!("unknown argument {other:?}; {usage}"),
        }
    }
    let subject = Subject {
        kind,
        entry: kind.entry(),
    };
    let lameduck = lameduck.display().to_string();
    println!(
        "{} pods; {WORKERS} clients, GET /slow ({} KiB, ~400 ms), {} to HAProxy in {}; SIGTERM to backend 1 after {} ms of load{}, load for {} ms after it or until backend 1 exited; lameduck --stop-signal {} --shutdown-delay {} ms unless said otherwise\n",
        kind.id(),
        SLOW_BYTES / 1024,
        match front.connections {
            Connections::PerRequest => "a new connection per request",
            Connections::KeepAlive => "keep-alive connections",
            Connections::KeepAliveUnchecked => "keep-alive connections reused unchecked",
        },
        if front.l4 {
            "TCP mode (L4)"
        } else {
            "HTTP mode (L7, checking readiness)"
        },
        LEAD.as_millis(),
        if front.l4 {
            format!(
                ", taken out of HAProxy {} ms after it",
                TAKE_OUT_AFTER.as_millis()
            )
        } else {
            String::new()
        },
        TAIL.as_millis(),
        subject.graceful(),
        DELAY.as_millis()
    );
    println!(
        "| PID 1 | run | sent | failed | 5xx | conn. errors | short bodies | in flight at SIGTERM, failed | SIGTERM to exit | exit code |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut totals = Vec::new();
    let rows = Pid1::ALL.into_iter().filter(|init| match init {
        // Rewriting SIGTERM to itself measures dumb-init again.
        Pid1::DumbInitQuit => subject.entry.graceful_stop != Signal::SIGTERM && !only_lameduck,
        Pid1::LameduckLong | Pid1::LameduckAdaptive => !short && !only_lameduck,
        Pid1::Lameduck | Pid1::LameduckProxy => true,
        _ => !only_lameduck,
    });
    for init in rows {
        let (mut sent, mut failed, mut exit_after) = (0, 0, Duration::ZERO);
        for round in 1..=runs {
            let r = run_once(init, &subject, round, front, &lameduck);
            sent += r.sent;
            failed += r.failed;
            exit_after += r.exit_after;
            println!(
                "| {} | {round} | {} | {} | {} | {} | {} | {} | {:.2} s | {} |",
                init.label(&subject),
                r.sent,
                r.failed,
                r.status_5xx,
                r.broken,
                r.short_body,
                r.in_flight_failed,
                r.exit_after.as_secs_f64(),
                r.exit_code.map_or("signal".into(), |c| c.to_string())
            );
            std::io::stdout().flush().expect("stdout");
        }
        totals.push((init, sent, failed, exit_after / runs.max(1) as u32));
    }
    println!("\n| PID 1 | runs | sent | failed | failed % | mean SIGTERM to exit |");
    println!("|---|---|---|---|---|---|");
    for (init, sent, failed, mean_exit) in totals {
        println!(
            "| {} | {runs} | {sent} | {failed} | {:.1} % | {:.2} s |",
            init.label(&subject),
            100.0 * failed as f64 / sent.max(1) as f64,
            mean_exit.as_secs_f64()
        );
    }
}

/// target/<profile>/lameduck, beside the folder this example runs from.
fn default_lameduck() -> PathBuf {
    let exe = std::env::current_exe().expect("own path");
    let profile = exe.parent().and_then(|examples| examples.parent());
    profile.expect("target/<profile>").join("lameduck")
}
