//! The real servers the zero-downtime scenarios run as the pod's app, one config each in a temp
//! dir: nginx, Apache httpd, HAProxy, Caddy, lighttpd and gunicorn, all from Debian's packages.
//! Each answers `/fast` at once and `/slow` with `SLOW_BYTES` in about 400 ms (its own way:
//! a rate limit, a sleeping CGI script or WSGI app, or, for the proxies HAProxy and Caddy, a
//! slow upstream nginx), always with a `Content-Length` so clients can keep connections alive,
//! and names itself in an `X-Served-By` header, so even a TCP balancer's clients know who
//! answered. Each holds its own bound on its graceful stop (`OWN_BOUND_SECS`), as a pod should,
//! and has its entry in the plugin's table of known servers, which says how to stop it.

use std::net::SocketAddr;
use std::time::Duration;

use crate::nginx::temp_paths;
use crate::scenario::{SLOW_BYTES, under_lameduck};
use crate::servers::{SERVERS, Server};
use crate::temp::TempDir;

/// What each server is given as its own bound on a graceful stop, well within the scenarios'
/// drain timeout and well beyond a slow response.
pub const OWN_BOUND_SECS: u64 = 10;

/// gunicorn's sync workers per pod: more than the clients, so none waits in the backlog (which
/// gunicorn resets when it closes its listener on TERM).
pub const GUNICORN_WORKERS: usize = 10;

/// gunicorn's `--timeout`. With sync workers its master exits seconds after TERM even when idle,
/// the longer the larger the timeout (3 to 5 s at 3, 6 to 7 s at the default 30, measured).
pub const GUNICORN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long after its last response gunicorn's master may take to exit at that timeout.
pub const GUNICORN_EXIT_LAG: Duration = Duration::from_secs(5);

/// A server the scenarios can run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Nginx,
    Apache,
    Haproxy,
    Caddy,
    Lighttpd,
    Gunicorn,
}

impl Kind {
    /// Every server.
    pub const ALL: [Kind; 6] = [
        Kind::Nginx,
        Kind::Apache,
        Kind::Haproxy,
        Kind::Caddy,
        Kind::Lighttpd,
        Kind::Gunicorn,
    ];

    /// The name on the command line of the benchmark (`--server NAME`).
    pub fn id(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Apache => "apache",
            Kind::Haproxy => "haproxy",
            Kind::Caddy => "caddy",
            Kind::Lighttpd => "lighttpd",
            Kind::Gunicorn => "gunicorn",
        }
    }

    /// The kind named `id`.
    pub fn from_id(id: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.id() == id)
    }

    /// Its entry in the table of known servers (kubectl-lameduck/src/servers.rs): its graceful
    /// and fast stop signals.
    pub fn entry(self) -> &'static Server {
        let name = match self {
            Kind::Nginx => "nginx",
            Kind::Apache => "Apache httpd",
            Kind::Haproxy => "HAProxy",
            Kind::Caddy => "Caddy",
            Kind::Lighttpd => "lighttpd",
            Kind::Gunicorn => "gunicorn",
        };
        SERVERS
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} is not in the table of known servers"))
    }

    /// Whether it serves `/slow` from an upstream (it is a proxy).
    pub fn needs_upstream(self) -> bool {
        matches!(self, Kind::Haproxy | Kind::Caddy)
    }
}

/// One server's config in a fresh temp dir.
pub struct App {
    pub kind: Kind,
    /// Its config, content and logs.
    pub dir: TempDir,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl App {
    /// Writes `kind`'s config for a server named `name` (its `X-Served-By`) on `addr`; the
    /// proxies send `/slow` to `upstream`.
    pub fn new(
        kind: Kind,
        label: &str,
        name: &str,
        addr: SocketAddr,
        upstream: Option<SocketAddr>,
    ) -> Self {
        let dir = TempDir::new(&format!("app-{}-{label}-{}", kind.id(), addr.port()));
        let html = dir.sub("html");
        std::fs::write(html.join("slow"), vec![b'x'; SLOW_BYTES]).expect("slow file");
        std::fs::write(html.join("fast"), b"ok\n").expect("fast file");
        let app = App { kind, dir, addr };
        let upstream = || upstream.expect("a proxy needs an upstream");
        match kind {
            Kind::Nginx => app.nginx(name),
            Kind::Apache => app.apache(name),
            Kind::Haproxy => app.haproxy(name, upstream()),
            Kind::Caddy => app.caddy(name, upstream()),
            Kind::Lighttpd => app.lighttpd(name),
            Kind::Gunicorn => app.gunicorn(name),
        }
        app
    }

    fn write(&self, file: &str, text: String) {
        std::fs::write(self.dir.path().join(file), text).expect("app config");
    }

    fn nginx(&self, name: &str) {
        let (d, addr) = (self.dir.path().display(), self.addr);
        let temp_paths = temp_paths(self.dir.path());
        self.write(
            "nginx.conf",
            format!(
                "worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
worker_shutdown_timeout {OWN_BOUND_SECS}s;
events {{ worker_connections 1024; }}
http {{
    access_log off;
{temp_paths}    keepalive_timeout 30s;
    keepalive_requests 100000;
    add_header X-Served-By {name} always;
    server {{
        listen {addr};
        root {d}/html;
        location = /slow {{ limit_rate 100k; }}
    }}
}}
"
            ),
        );
    }

    fn apache(&self, name: &str) {
        let (d, addr) = (self.dir.path().display(), self.addr);
        let m = "/usr/lib/apache2/modules";
        self.write(
            "httpd.conf",
            format!(
                "ServerRoot {d}
DefaultRuntimeDir {d}
LoadModule mpm_event_module {m}/mod_mpm_event.so
LoadModule authz_core_module {m}/mod_authz_core.so
LoadModule ratelimit_module {m}/mod_ratelimit.so
LoadModule env_module {m}/mod_env.so
LoadModule headers_module {m}/mod_headers.so
ServerName localhost
Listen {addr}
PidFile {d}/httpd.pid
ErrorLog {d}/error.log
DocumentRoot {d}/html
KeepAlive On
KeepAliveTimeout 30
MaxKeepAliveRequests 0
GracefulShutdownTimeout {OWN_BOUND_SECS}
Header always set X-Served-By {name}
<Location /slow>
    SetOutputFilter RATE_LIMIT
    SetEnv rate-limit 100
</Location>
"
            ),
        );
    }

    fn haproxy(&self, name: &str, upstream: SocketAddr) {
        let addr = self.addr;
        self.write(
            "haproxy.cfg",
            format!(
                "global
    nbthread 1
    hard-stop-after {OWN_BOUND_SECS}s
defaults
    mode http
    retries 0
    timeout connect 1s
    timeout client 30s
    timeout server 10s
    timeout http-keep-alive 30s
frontend app
    bind {addr}
    http-request return status 200 content-type text/plain string ok if {{ path /fast }}
    http-response set-header X-Served-By {name}
    default_backend upstream
backend upstream
    server upstream {upstream}
"
            ),
        );
    }

    fn caddy(&self, name: &str, upstream: SocketAddr) {
        let addr = self.addr;
        self.write(
            "Caddyfile",
            format!(
                "{{
    admin off
    auto_https off
    grace_period {OWN_BOUND_SECS}s
}}
http://:{port} {{
    bind {ip}
    header X-Served-By {name}
    respond /fast \"ok\" 200
    reverse_proxy {upstream}
}}
",
                port = addr.port(),
                ip = addr.ip()
            ),
        );
    }

    fn lighttpd(&self, name: &str) {
        let (d, addr) = (self.dir.path().display(), self.addr);
        let script = self.dir.sub("cgi").join("slow");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n/bin/sleep 0.4\nprintf 'Content-Type: text/plain\\r\\nContent-Length: {SLOW_BYTES}\\r\\n\\r\\n'\n/usr/bin/head -c {SLOW_BYTES} /dev/zero\n"
            ),
        )
        .expect("cgi script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
            .expect("cgi script mode");
        self.write(
            "lighttpd.conf",
            format!(
                "server.document-root = \"{d}/html\"
server.bind = \"{ip}\"
server.port = {port}
server.errorlog = \"{d}/error.log\"
server.modules += (\"mod_cgi\", \"mod_setenv\")
server.max-keep-alive-idle = 30
server.max-keep-alive-requests = 100000
server.graceful-shutdown-timeout = {OWN_BOUND_SECS}
setenv.add-response-header = (\"X-Served-By\" => \"{name}\")
$HTTP[\"url\"] == \"/slow\" {{
    server.document-root = \"{d}/cgi\"
    cgi.assign = (\"\" => \"\")
}}
",
                ip = addr.ip(),
                port = addr.port()
            ),
        );
    }

    fn gunicorn(&self, name: &str) {
        self.write(
            "app.py",
            format!(
                "import time

def app(environ, start_response):
    if environ['PATH_INFO'] == '/slow':
        time.sleep(0.4)
        body = b'x' * {SLOW_BYTES}
    else:
        body = b'ok\\n'
    start_response('200 OK', [('Content-Length', str(len(body))), ('X-Served-By', '{name}')])
    return [body]
"
            ),
        );
    }

    /// The argv that runs this server in the foreground.
    pub fn command(&self) -> Vec<String> {
        let path = |file: &str| self.dir.path().join(file).display().to_string();
        let words: Vec<String> = match self.kind {
            Kind::Nginx => vec![
                "nginx".into(),
                "-c".into(),
                path("nginx.conf"),
                "-g".into(),
                "daemon off;".into(),
            ],
            Kind::Apache => vec![
                "apache2".into(),
                "-f".into(),
                path("httpd.conf"),
                "-DFOREGROUND".into(),
            ],
            // Without -W: HAProxy 2.6's master process exits 139 after a soft stop.
            Kind::Haproxy => vec![
                "haproxy".into(),
                "-db".into(),
                "-f".into(),
                path("haproxy.cfg"),
            ],
            Kind::Caddy => vec![
                "caddy".into(),
                "run".into(),
                "--config".into(),
                path("Caddyfile"),
                "--adapter".into(),
                "caddyfile".into(),
            ],
            Kind::Lighttpd => vec![
                "lighttpd".into(),
                "-D".into(),
                "-f".into(),
                path("lighttpd.conf"),
            ],
            // The default sync workers, as most deployments run: one request at a time each,
            // each on its own connection (never kept alive), more of them than clients.
            Kind::Gunicorn => vec![
                "gunicorn".into(),
                "--bind".into(),
                self.addr.to_string(),
                "--chdir".into(),
                self.dir.path().display().to_string(),
                "--workers".into(),
                GUNICORN_WORKERS.to_string(),
                "--timeout".into(),
                GUNICORN_TIMEOUT.as_secs().to_string(),
                "--graceful-timeout".into(),
                OWN_BOUND_SECS.to_string(),
                "app:app".into(),
            ],
        };
        words
    }

    /// Whether the server, by its log, has started all of itself: gunicorn answers with its
    /// first worker while the others still boot.
    pub fn started(&self, log: &[String]) -> bool {
        match self.kind {
            Kind::Gunicorn => {
                log.iter().filter(|l| l.contains("Booting worker")).count() >= GUNICORN_WORKERS
            }
            _ => true,
        }
    }

    /// How much longer than its last response the server may take to exit after its graceful
    /// signal.
    pub fn exit_lag(&self) -> Duration {
        match self.kind {
            Kind::Gunicorn => GUNICORN_EXIT_LAG,
            _ => Duration::ZERO,
        }
    }

    /// Whether `code` is a clean exit after the graceful stop: Debian's HAProxy 2.6.12 now and
    /// then dies of SIGSEGV (139) at the very end of a soft stop, after its last response.
    pub fn exited_cleanly(&self, code: i32) -> bool {
        code == 0 || (self.kind == Kind::Haproxy && code == 139)
    }

    /// The environment the server needs: Caddy keeps its state under XDG dirs and HOME.
    pub fn env(&self) -> Vec<(String, String)> {
        match self.kind {
            Kind::Caddy => ["XDG_DATA_HOME", "XDG_CONFIG_HOME", "HOME"]
                .iter()
                .map(|var| (var.to_string(), self.dir.path().display().to_string()))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// lameduck's flags for wrapping this server as a pod does: endpoints on `endpoints`,
    /// `stop_signal`, ready once the server answers `/fast`, the `drain` flags, then `--` and
    /// the server's own command.
    pub fn under_lameduck(
        &self,
        endpoints: SocketAddr,
        stop_signal: &str,
        drain: &[&str],
    ) -> Vec<String> {
        under_lameduck(endpoints, stop_signal, self.addr, drain, self.command())
    }
}
