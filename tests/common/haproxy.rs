//! Real HAProxy in front of the test backends, standing for a load balancer that learns about a
//! draining pod only from its health checks: a generated config in a temp dir (HTTP mode, round
//! robin, `retries 0`, no redispatch, an HTTP check every 200 ms unless a scenario asks for
//! slower ones), run in the foreground and killed by pid on drop. Its stats socket tells which
//! servers it sees UP. In TCP mode (`start_tcp`) it stands for kube-proxy instead: connections
//! pinned to the backend they were opened to, and a server taken out by the runtime API
//! (`take_out`) or, when asked for, by health checks, either way leaving its established
//! connections alone. Also hands out the loopback addresses the scenarios listen on. Like
//! nginx.rs it needs only std and the parent module's `wait_until`, so the benchmark
//! (benches/zero_downtime/driver.rs) includes it too.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
    dir: PathBuf,
    process: Child,
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
        let dir = std::env::temp_dir().join(format!(
            "lameduck-haproxy-{label}-{}-{}",
            std::process::id(),
            listen.port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("haproxy dir");
        let d = dir.display();
        let mut config = format!(
            "global
    nbthread 1
    maxconn 2000
    stats socket {d}/admin.sock mode 600 level admin
    log stderr format raw local0 info
defaults
    mode http
    log global
    option httplog
    retries 0
    timeout connect 1s
    timeout client 10s
    timeout server 10s
    timeout http-request 5s
    timeout http-keep-alive 10s
    timeout check 1s
frontend front
    bind {listen}
    default_backend {BACKEND}
backend {BACKEND}
    balance roundrobin
    http-reuse safe
    option httpchk GET {check_path}
    http-check expect status 200
    http-response set-header X-Served-By %s
    default-server inter {inter}ms fall {fall} rise {rise}
",
            inter = checks.inter.as_millis(),
            fall = checks.fall,
            rise = checks.rise,
        );
        for server in servers {
            config.push_str(&format!(
                "    server {} {} check addr {} port {}\n",
                server.name,
                server.addr,
                server.check.ip(),
                server.check.port()
            ));
        }
        Haproxy::run(dir, listen, config)
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
        let dir = std::env::temp_dir().join(format!(
            "lameduck-haproxy-tcp-{label}-{}-{}",
            std::process::id(),
            listen.port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("haproxy dir");
        let d = dir.display();
        let mut config = format!(
            "global
    nbthread 1
    maxconn 2000
    stats socket {d}/admin.sock mode 600 level admin
    log stderr format raw local0 info
defaults
    mode tcp
    log global
    option tcplog
    retries 0
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    timeout check 1s
frontend front
    bind {listen}
    default_backend {BACKEND}
backend {BACKEND}
    balance roundrobin
"
        );
        if let Some(path) = check_path {
            let checks = Checks::default();
            config.push_str(&format!(
                "    option httpchk GET {path}\n    http-check expect status 200\n    default-server inter {}ms fall {} rise {}\n",
                checks.inter.as_millis(),
                checks.fall,
                checks.rise
            ));
        }
        for server in servers {
            let check = match check_path {
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
        Haproxy::run(dir, listen, config)
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
        let mut socket = UnixStream::connect(self.dir.join("admin.sock")).ok()?;
        socket.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        socket.write_all(format!("{command}\n").as_bytes()).ok()?;
        let mut answer = String::new();
        socket.read_to_string(&mut answer).ok()?;
        Some(answer)
    }

    /// Runs HAProxy on the config written into `dir`, until its stats socket answers.
    fn run(dir: PathBuf, listen: SocketAddr, config: String) -> Self {
        let config_path = dir.join("haproxy.cfg");
        std::fs::write(&config_path, config).expect("haproxy.cfg");
        let log = File::create(dir.join("haproxy.log")).expect("haproxy.log");
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
            dir,
            process,
        };
        assert!(
            super::wait_until(Duration::from_secs(10), || haproxy.states().is_some()),
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
        super::wait_until(timeout, || {
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

    /// Everything HAProxy logged: its warnings, every request, every server state change.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("haproxy.log")).unwrap_or_default()
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
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `count` distinct free ports on `ip`, a loopback address other than 127.0.0.1, held together
/// while they are picked so none is handed out twice.
///
/// Not 127.0.0.1: every outgoing loopback connection (load, proxying, health checks) takes an
/// ephemeral port on 127.0.0.1, and a server started later on such a port fails to bind. A
/// scenario gives its servers their own address (one per test) so no connection can hold their
/// ports, and so tests running in parallel never pick the same one.
pub fn free_addrs(ip: Ipv4Addr, count: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind((IpAddr::V4(ip), 0)).expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr"))
        .collect()
}
