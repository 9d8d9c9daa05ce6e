//! Real HAProxy in front of the test backends, standing for a load balancer that learns about a
//! draining pod only from its health checks: a generated config in a temp dir (HTTP mode, round
//! robin, `retries 0`, no redispatch, an HTTP check every 200 ms unless a scenario asks for
//! slower ones), run in the foreground and killed by pid on drop. Its stats socket tells which
//! servers it sees UP. In TCP mode (`start_tcp`) it stands for kube-proxy instead: connections
//! pinned to the backend they were opened to, and a server taken out by the runtime API
//! (`take_out`) or, when asked for, by health checks, either way leaving its established
//! connections alone.

use std::fs::File;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::process::wait_until;
use crate::temp::TempDir;

/// The name of the HAProxy backend (the "Service") holding every server.
const BACKEND: &str = "pods";

/// One server behind HAProxy.
#[derive(Clone, Debug)]
pub struct Server {
    /// The name HAProxy gives it, also sent back in each answer's `X-Served-By` header.
    pub name: String,
    /// Where requests go (nginx).
    pub addr: SocketAddr,
    /// Where the health check goes (lameduck's endpoints, or nginx itself).
    pub check: SocketAddr,
}

impl Server {
    /// `name` at `addr`, checked on `check`.
    pub fn new(name: &str, addr: SocketAddr, check: SocketAddr) -> Self {
        Server {
            name: name.into(),
            addr,
            check,
        }
    }
}

/// How HAProxy health-checks each server: every `inter`, `fall` failures in a row take a server
/// out, `rise` passes bring it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checks {
    /// Time between two checks of one server.
    pub inter: Duration,
    /// Failed checks in a row that mark a server DOWN.
    pub fall: u32,
    /// Passed checks in a row that mark a server UP.
    pub rise: u32,
}

impl Default for Checks {
    /// `inter 200ms fall 2 rise 2`: a draining server is out within about half a second; two
    /// failures, not one, so a single check slowed down on a busy machine does not take a healthy
    /// server out.
    fn default() -> Self {
        Checks {
            inter: Duration::from_millis(200),
            fall: 2,
            rise: 2,
        }
    }
}

/// A running HAProxy, killed with its temp dir on drop.
pub struct Haproxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    /// The names of the servers behind it.
    servers: Vec<String>,
    process: Child,
    /// Dropped after `process`, so HAProxy is gone before its folder is.
    dir: TempDir,
}

impl Haproxy {
    /// Starts HAProxy on `listen` over `servers`, checking each with `GET check_path` on its
    /// check address with the default `Checks`, and waits until its stats socket answers.
    pub fn start(label: &str, listen: SocketAddr, check_path: &str, servers: &[Server]) -> Self {
        Haproxy::start_with(label, listen, check_path, servers, Checks::default())
    }

    /// `start` with the given health checks.
    ///
    /// The choices that decide what a drain costs:
    /// - `retries 0` and no `option redispatch`: a request sent to a server that refuses it fails,
    ///   as it does behind a balancer that cannot retry (a non-idempotent request), instead of
    ///   being hidden by a retry elsewhere.
    /// - `checks`: how long a draining server keeps getting requests (see `Checks::default`).
    /// - HTTP keep-alive on both sides (HAProxy's default `http-keep-alive`, `http-reuse safe`):
    ///   clients keep their connection to HAProxy, and HAProxy picks a server per request and keeps
    ///   idle connections to the servers, which it never uses for a server marked DOWN. So a
    ///   backend closing its idle connections on its graceful stop never races a client request,
    ///   as it would through an L4 balancer that pins the client's connection to one backend.
    /// - `X-Served-By: <server>` on every answer, so the load generator knows who served what.
    pub fn start_with(
        label: &str,
        listen: SocketAddr,
        check_path: &str,
        servers: &[Server],
        checks: Checks,
    ) -> Self {
        let http = "    mode http
    option httplog
    timeout client 10s
    timeout server 10s
    timeout http-request 5s
    timeout http-keep-alive 10s
";
        let backend = "    http-reuse safe
    http-response set-header X-Served-By %s
";
        Haproxy::run(
            label,
            listen,
            (http, backend),
            Some((check_path, checks)),
            servers,
        )
    }

    /// Starts HAProxy in TCP mode on `listen` over `servers`, as kube-proxy balances a Service:
    /// each new connection goes to the next server (round robin), and stays with it for its
    /// whole life. Without `check_path` there is no health check, so readiness changes nothing
    /// until `take_out`; with it, servers are checked as in `start` and one marked DOWN gets
    /// no new connections, while its established ones stay (no `shutdown-sessions`).
    pub fn start_tcp(
        label: &str,
        listen: SocketAddr,
        check_path: Option<&str>,
        servers: &[Server],
    ) -> Self {
        let tcp = "    mode tcp
    option tcplog
    timeout client 30s
    timeout server 30s
";
        let checks = check_path.map(|path| (path, Checks::default()));
        Haproxy::run(&format!("tcp-{label}"), listen, (tcp, ""), checks, servers)
    }

    /// Takes `server` out of rotation through the runtime API, as an endpoint update reaches
    /// kube-proxy: new connections go elsewhere, established ones stay.
    pub fn take_out(&self, server: &str) {
        let answer = self.command(&format!("set server {BACKEND}/{server} state maint"));
        assert!(
            answer.as_deref().is_some_and(|a| a.trim().is_empty()),
            "haproxy refused to take {server} out: {answer:?}"
        );
    }

    /// Sends one runtime API command; returns the answer.
    fn command(&self, command: &str) -> Option<String> {
        let mut socket = UnixStream::connect(self.dir.path().join("admin.sock")).ok()?;
        socket.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        socket.write_all(format!("{command}\n").as_bytes()).ok()?;
        let mut answer = String::new();
        socket.read_to_string(&mut answer).ok()?;
        Some(answer)
    }

    /// Writes the config, the mode's own lines (`defaults`, `backend`) between the ones every
    /// mode shares, runs HAProxy on it and waits until its stats socket answers.
    fn run(
        label: &str,
        listen: SocketAddr,
        (defaults, backend): (&str, &str),
        checks: Option<(&str, Checks)>,
        servers: &[Server],
    ) -> Self {
        let dir = TempDir::new(&format!("haproxy-{label}-{}", listen.port()));
        let d = dir.path().display();
        let mut config = format!(
            "global
    nbthread 1
    maxconn 2000
    stats socket {d}/admin.sock mode 600 level admin
    log stderr format raw local0 info
defaults
    log global
    retries 0
    timeout connect 1s
    timeout check 1s
{defaults}frontend front
    bind {listen}
    default_backend {BACKEND}
backend {BACKEND}
    balance roundrobin
{backend}"
        );
        if let Some((path, checks)) = checks {
            config.push_str(&format!(
                "    option httpchk GET {path}
    http-check expect status 200
    default-server inter {}ms fall {} rise {}
",
                checks.inter.as_millis(),
                checks.fall,
                checks.rise
            ));
        }
        for server in servers {
            let check = match checks {
                Some(_) => format!(
                    " check addr {} port {}",
                    server.check.ip(),
                    server.check.port()
                ),
                None => String::new(),
            };
            config.push_str(&format!(
                "    server {} {}{check}\n",
                server.name, server.addr
            ));
        }
        let config_path = dir.path().join("haproxy.cfg");
        std::fs::write(&config_path, config).expect("haproxy.cfg");
        let log = File::create(dir.path().join("haproxy.log")).expect("haproxy.log");
        let process = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start haproxy (is it installed?)");
        let haproxy = Haproxy {
            addr: listen,
            servers: servers.iter().map(|s| s.name.clone()).collect(),
            process,
            dir,
        };
        assert!(
            wait_until(Duration::from_secs(10), || haproxy.states().is_some()),
            "haproxy did not start on {listen}:\n{}",
            haproxy.log()
        );
        haproxy
    }

    /// Each server's name and status as HAProxy sees it (`UP`, `DOWN`, `UP 1/2` while going
    /// down, ...), from `show stat` on the stats socket; None when the socket does not answer.
    pub fn states(&self) -> Option<Vec<(String, String)>> {
        let csv = self.command("show stat")?;
        let mut lines = csv.lines();
        let header: Vec<&str> = lines.next()?.trim_start_matches("# ").split(',').collect();
        let column = |name: &str| header.iter().position(|c| *c == name);
        let (proxy, server, status) = (column("pxname")?, column("svname")?, column("status")?);
        Some(
            lines
                .map(|line| line.split(',').collect::<Vec<_>>())
                .filter(|f| f.get(proxy) == Some(&BACKEND) && f.get(server) != Some(&"BACKEND"))
                .filter_map(|f| Some((f.get(server)?.to_string(), f.get(status)?.to_string())))
                .collect(),
        )
    }

    /// Waits until each named server has exactly the given status (`UP` or `DOWN`).
    pub fn wait_for(&self, expected: &[(&str, &str)], timeout: Duration) -> bool {
        wait_until(timeout, || {
            let Some(states) = self.states() else {
                return false;
            };
            expected.iter().all(|(name, status)| {
                states
                    .iter()
                    .any(|(n, s)| n.as_str() == *name && s.as_str() == *status)
            })
        })
    }

    /// `wait_for`, failing the test with what HAProxy sees and logged when it times out.
    pub fn expect_states(&self, expected: &[(&str, &str)], timeout: Duration) {
        assert!(
            self.wait_for(expected, timeout),
            "waiting for {expected:?}: {:?}\n{}",
            self.states(),
            self.log_tail(40)
        );
    }

    /// `expect_states` with every server UP: the balancer sees each pod ready.
    pub fn expect_all_up(&self, timeout: Duration) {
        let up: Vec<(&str, &str)> = self.servers.iter().map(|s| (s.as_str(), "UP")).collect();
        self.expect_states(&up, timeout);
    }

    /// Everything HAProxy logged: its warnings, every request, every server state change.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("haproxy.log")).unwrap_or_default()
    }

    /// The last `lines` lines of the log, for a failed assertion.
    pub fn log_tail(&self, lines: usize) -> String {
        let log = self.log();
        let all: Vec<&str> = log.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}
