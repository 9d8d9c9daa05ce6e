//! Real nginx for the tests: a generated config in a temp dir (daemon off, master process on,
//! one worker, logs and pid file in the dir), the scenarios' slow file so requests are always in
//! flight, a folder that takes uploads, and a guard that kills the nginx it started, by pid, on
//! drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::process::{exit_code, wait_until};
use crate::scenario::{SLOW_BYTES, SLOW_RATE, under_lameduck};
use crate::temp::TempDir;

/// A temp dir with an nginx config listening on `addr`.
pub struct NginxConfig {
    /// The folder holding config, pid file, logs and content.
    pub dir: TempDir,
    /// Where nginx listens.
    pub addr: SocketAddr,
}

impl NginxConfig {
    /// Writes the config for a server on `addr` into a fresh temp dir named after `label`.
    pub fn new(label: &str, addr: SocketAddr) -> Self {
        NginxConfig::write(label, addr, 1024, None)
    }

    /// The same, for a worker that holds up to `connections` connections.
    pub fn with_connections(label: &str, addr: SocketAddr, connections: usize) -> Self {
        NginxConfig::write(label, addr, connections, None)
    }

    /// `new` for a pod behind an L4 balancer (TCP mode), which cannot add headers and pins
    /// each connection to one pod: every answer names its server in `X-Served-By: name`
    /// itself, and a kept-alive connection is never recycled (`keepalive_requests`), so a
    /// client stays on the pod it was pinned to, as through kube-proxy.
    pub fn behind_l4(label: &str, addr: SocketAddr, name: &str) -> Self {
        NginxConfig::write(label, addr, 1024, Some(name))
    }

    fn write(label: &str, addr: SocketAddr, connections: usize, l4_name: Option<&str>) -> Self {
        let dir = TempDir::new(&format!("nginx-{label}-{}", addr.port()));
        let html = dir.sub("html");
        std::fs::write(html.join("slow"), vec![b'x'; SLOW_BYTES]).expect("slow file");
        std::fs::write(html.join("fast"), b"ok\n").expect("fast file");
        // nginx's worker runs as nobody when the tests run as root.
        std::fs::set_permissions(
            dir.sub("html/put"),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .expect("put dir mode");
        let d = dir.path().display();
        let files = connections + 64;
        let l4 = l4_name.map_or(String::new(), |name| {
            format!("add_header X-Served-By {name} always;\n        keepalive_requests 1000000;")
        });
        let temp_paths = temp_paths(dir.path());
        let config = format!(
            "worker_processes 1;
worker_rlimit_nofile {files};
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections {connections}; }}
http {{
    access_log {d}/access.log;
{temp_paths}    keepalive_timeout 30s;
    server {{
        listen {addr} reuseport;
        root {d}/html;
        {l4}
        location = /slow {{ limit_rate {SLOW_RATE}; }}
        # PUT stores a body of any size, which GET then serves back (uploads through a proxy).
        location /put/ {{ dav_methods PUT; client_max_body_size 0; }}
    }}
}}
"
        );
        std::fs::write(dir.path().join("nginx.conf"), config).expect("nginx.conf");
        NginxConfig { dir, addr }
    }

    /// The argv that runs this nginx in the foreground.
    pub fn command(&self) -> Vec<String> {
        vec![
            "nginx".into(),
            "-c".into(),
            self.dir.path().join("nginx.conf").display().to_string(),
            "-g".into(),
            "daemon off;".into(),
        ]
    }

    /// lameduck's flags for wrapping this nginx as a pod does: endpoints on `endpoints`, QUIT as
    /// the stop signal, ready once nginx answers `/fast`, the `drain` flags, then `--` and
    /// nginx's own command.
    pub fn under_lameduck(&self, endpoints: SocketAddr, drain: &[&str]) -> Vec<String> {
        under_lameduck(endpoints, "QUIT", self.addr, drain, self.command())
    }

    /// The pid file nginx writes.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.path().join("nginx.pid")
    }

    /// The master's pid, once the pid file exists.
    pub fn master_pid(&self) -> Option<Pid> {
        let text = std::fs::read_to_string(self.pid_file()).ok()?;
        text.trim().parse().ok().map(Pid::from_raw)
    }
}

/// The `http` lines that keep nginx's temp files in `dir`, where an unprivileged or parallel
/// nginx can write them, in place of Debian's /var/lib/nginx.
pub fn temp_paths(dir: &Path) -> String {
    let dir = dir.display();
    ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
        .map(|kind| format!("    {kind}_temp_path {dir}/{kind};\n"))
        .concat()
}

/// An nginx started directly by the test, killed (master and its process group) on drop.
pub struct Nginx {
    /// The config it runs.
    pub config: NginxConfig,
    /// The master process.
    pub process: Child,
}

impl Nginx {
    /// Starts nginx in its own process group and waits until it accepts connections.
    pub fn start(label: &str, addr: SocketAddr) -> Self {
        use std::os::unix::process::CommandExt;
        let config = NginxConfig::new(label, addr);
        let argv = config.command();
        let process = Command::new(&argv[0])
            .args(&argv[1..])
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx (is it installed?)");
        let nginx = Nginx { config, process };
        assert!(
            wait_until(Duration::from_secs(10), || std::net::TcpStream::connect(
                addr
            )
            .is_ok()
                && nginx.config.master_pid().is_some()),
            "nginx did not start on {addr}"
        );
        nginx
    }

    /// The master's exit code once it has exited, without blocking.
    pub fn exit_code(&mut self) -> Option<i32> {
        self.process.try_wait().ok()?.map(exit_code)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.process.id() as i32);
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = kill(pid, Signal::SIGKILL);
        let _ = self.process.wait();
    }
}
