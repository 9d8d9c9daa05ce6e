//! The harness every integration test uses: start the built lameduck really as PID 1 (under
//! `unshare --pid --fork --mount-proc`) or as a subreaper, read its output line by line, send
//! it signals by pid, speak plain HTTP to its endpoints, and clean up by pid on drop.

#![allow(dead_code)]

pub mod apps;
pub mod docker;
pub mod haproxy;
pub mod kubelet;
pub mod load;
pub mod nginx;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

/// How lameduck runs in a test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// PID 1 of a fresh PID namespace, as in a container.
    Pid1,
    /// A plain child of the test, so it becomes a subreaper.
    Subreaper,
    /// PID 1 of a fresh PID namespace, as user `nobody` with no capabilities at all.
    Pid1Unprivileged,
}

/// Generates one test per mode from a function taking a `Mode`.
#[macro_export]
macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {
        mod pid1 {
            $( #[test] fn $name() { super::$name($crate::common::Mode::Pid1) } )*
        }
        mod subreaper {
            $( #[test] fn $name() { super::$name($crate::common::Mode::Subreaper) } )*
        }
    };
}

/// The lameduck binary under test.
pub fn lameduck() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lameduck"))
}

/// The fixture app (tests/fixtures/fixture.rs), built by `cargo test` as an example.
pub fn fixture() -> String {
    let bin = lameduck();
    let dir = bin.parent().expect("binary has a folder");
    dir.join("examples/fixture").to_string_lossy().into_owned()
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Lines read from one output stream, kept for later assertions.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>, Arc<std::sync::atomic::AtomicBool>);

impl Lines {
    /// Collects the lines of `stream` in the background.
    pub fn follow_stream(stream: impl Read + Send + 'static) -> Self {
        Lines::follow(stream).0
    }

    fn follow(stream: impl Read + Send + 'static) -> (Self, Receiver<String>) {
        let lines = Lines::default();
        let (tx, rx) = channel();
        let store = lines.clone();
        let closed = Arc::clone(&lines.1);
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                store.0.lock().expect("lines lock").push(line.clone());
                let _ = tx.send(line);
            }
            closed.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        (lines, rx)
    }

    /// Whether the stream has ended.
    pub fn closed(&self) -> bool {
        self.1.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Every line so far.
    pub fn all(&self) -> Vec<String> {
        self.0.lock().expect("lines lock").clone()
    }

    /// Whether some line so far contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.all().iter().any(|line| line.contains(needle))
    }

    /// How many lines equal `line` exactly.
    pub fn count(&self, line: &str) -> usize {
        self.all().iter().filter(|l| l.as_str() == line).count()
    }
}

/// A running lameduck, stopped with SIGKILL (with everything it started) when dropped.
pub struct Lameduck {
    process: Child,
    /// lameduck's own pid as the host sees it (in PID-1 mode, unshare's child).
    pub pid: Pid,
    /// The app's pid as the host sees it, once it printed `ready pid=...` (subreaper mode).
    pub app_pid: Option<Pid>,
    /// The app's stdout (lameduck passes it through).
    pub stdout: Lines,
    /// lameduck's log (and the app's stderr).
    pub stderr: Lines,
    stdout_rx: Receiver<String>,
    mode: Mode,
    exit: Option<i32>,
}

impl Lameduck {
    /// Starts `lameduck ARGS` in `mode`. Add `--listen 127.0.0.1:0` yourself when endpoints are used;
    /// `start` adds it when no `--listen` is given so tests never collide on a port.
    pub fn start(mode: Mode, args: &[&str]) -> Self {
        Lameduck::start_with(mode, args, |_| {})
    }

    /// Like `start`, with `prepare` shaping the command first: what lameduck's parent passes
    /// on (a `pre_exec` that blocks or ignores signals reaches lameduck through `unshare`).
    pub fn start_with(mode: Mode, args: &[&str], prepare: impl FnOnce(&mut Command)) -> Self {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        if !args.contains(&"--listen") {
            // After the mode's name, when there is one (`lameduck sidecar --listen ...`).
            let at = usize::from(args.first() == Some(&"sidecar"));
            all.splice(at..at, ["--listen".to_string(), "127.0.0.1:0".to_string()]);
        }
        let mut command = match mode {
            Mode::Pid1 => {
                let mut c = Command::new("unshare");
                c.args(["--pid", "--fork", "--mount-proc", "--kill-child"])
                    .arg(lameduck());
                c
            }
            Mode::Subreaper => Command::new(lameduck()),
            Mode::Pid1Unprivileged => {
                let mut c = Command::new("unshare");
                c.args(["--pid", "--fork", "--mount-proc", "--kill-child", "setpriv"])
                    .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                    .args(["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"])
                    .arg(lameduck());
                c
            }
        };
        command
            .args(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        prepare(&mut command);
        let mut process = command.spawn().expect("start lameduck");
        let (stdout, stdout_rx) = Lines::follow(process.stdout.take().expect("stdout"));
        let (stderr, _) = Lines::follow(process.stderr.take().expect("stderr"));
        let outer = Pid::from_raw(process.id() as i32);
        let pid = match mode {
            Mode::Subreaper => outer,
            Mode::Pid1 | Mode::Pid1Unprivileged => {
                // A short-lived lameduck may be gone before it is seen; then its pid is never needed.
                let mut inner = None;
                wait_until(Duration::from_secs(5), || {
                    inner = first_child(outer);
                    inner.is_some() || process.try_wait().ok().flatten().is_some()
                });
                inner.unwrap_or(outer)
            }
        };
        Lameduck {
            process,
            pid,
            app_pid: None,
            stdout,
            stderr,
            stdout_rx,
            mode,
            exit: None,
        }
    }

    /// Waits for the next stdout line that satisfies `pred`, and returns it.
    pub fn expect_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stdout_rx.recv_timeout(left) {
                Ok(line) if pred(&line) => return line,
                Ok(_) => continue,
                Err(_) => panic!(
                    "no matching line within {timeout:?}\nstdout: {:#?}\nstderr: {:#?}",
                    self.stdout.all(),
                    self.stderr.all()
                ),
            }
        }
    }

    /// Waits for the fixture's `ready pid=N` line and remembers the app's pid.
    pub fn expect_ready(&mut self) {
        let line = self.expect_line(Duration::from_secs(10), |l| l.starts_with("ready pid="));
        let pid: i32 = line.trim_start_matches("ready pid=").parse().expect("pid");
        if self.mode == Mode::Subreaper {
            self.app_pid = Some(Pid::from_raw(pid));
        }
    }

    /// Waits for the next stdout line and asserts it equals `expected`.
    pub fn expect_exact(&mut self, expected: &str) {
        self.expect_line(Duration::from_secs(10), |l| l == expected);
    }

    /// The endpoints' address, read from lameduck's `endpoints listening addr=...` log line.
    pub fn addr(&self) -> SocketAddr {
        listening_addr(&self.stderr)
    }

    /// The in-pod hook's socket name, from lameduck's `preStop hook socket listening` line.
    pub fn hook_socket(&self) -> String {
        let mut found = None;
        let ok = wait_until(Duration::from_secs(10), || {
            found = self.stderr.all().iter().find_map(|line| {
                let (_, rest) = line.split_once("preStop hook socket listening")?;
                let name = rest
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("socket=@"))?;
                Some(name.trim_matches('"').to_owned())
            });
            found.is_some()
        });
        assert!(ok, "no hook socket line in {:#?}", self.stderr.all());
        found.expect("socket name")
    }

    /// The endpoints' address, once /readyz answers 200.
    pub fn ready_addr(&self) -> SocketAddr {
        let addr = self.addr();
        assert!(
            wait_until(Duration::from_secs(5), || get(addr, "/readyz").0 == 200),
            "never ready: {:#?}",
            self.stderr.all()
        );
        addr
    }

    /// Sends `signal` to lameduck itself (not to `unshare`, which would not pass it on).
    pub fn signal(&self, signal: Signal) {
        kill(self.pid, signal).expect("signal lameduck");
    }

    /// Sends `signal` as the kubelet sends its stop signal after a hook: to a container that may
    /// have exited already (the app exited on its stop signal), which changes nothing.
    pub fn signal_unless_gone(&self, signal: Signal) {
        match kill(self.pid, signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(err) => panic!("signal lameduck: {err}"),
        }
    }

    /// Waits for lameduck to exit and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> i32 {
        if let Some(code) = self.exit {
            return code;
        }
        let mut status = None;
        let exited = wait_until(timeout, || {
            status = self.process.try_wait().expect("try_wait");
            status.is_some()
        });
        assert!(
            exited,
            "lameduck did not exit within {timeout:?}\nstdout: {:#?}\nstderr: {:#?}",
            self.stdout.all(),
            self.stderr.all()
        );
        let status = status.expect("status");
        // Let the readers take in the last lines (the app or its children may hold the pipes).
        wait_until(Duration::from_secs(2), || {
            self.stdout.closed() && self.stderr.closed()
        });
        let code = status.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            128 + status.signal().unwrap_or(0)
        });
        self.exit = Some(code);
        code
    }

    /// Whether lameduck is still running.
    pub fn running(&mut self) -> bool {
        self.exit.is_none() && self.process.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Lameduck {
    fn drop(&mut self) {
        if let Some(app) = self.app_pid {
            let _ = killpg(app, Signal::SIGKILL);
        }
        if self.exit.is_none() {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }
}

/// Runs the in-pod hook `lameduck prestop --prestop-socket SOCKET` in the test's network
/// namespace, as an exec hook runs in the pod's; returns how it ended and how long it took.
pub fn prestop_exec(socket: &str) -> (std::process::Output, Duration) {
    let started = Instant::now();
    let output = Command::new(lameduck())
        .args(["prestop", "--prestop-socket", socket])
        .stdin(Stdio::null())
        .output()
        .expect("run lameduck prestop");
    (output, started.elapsed())
}

/// The endpoints' address from a lameduck log's `endpoints listening addr=...` line.
pub fn listening_addr(stderr: &Lines) -> SocketAddr {
    let mut found = None;
    let ok = wait_until(Duration::from_secs(10), || {
        found = stderr.all().iter().find_map(|line| {
            let (_, rest) = line.split_once("endpoints listening")?;
            let addr = rest
                .split_whitespace()
                .find_map(|w| w.strip_prefix("addr="))?;
            addr.trim_matches('"').parse().ok()
        });
        found.is_some()
    });
    assert!(ok, "no listening line in {:#?}", stderr.all());
    found.expect("address")
}

/// The first child of `pid`, from /proc.
pub fn first_child(pid: Pid) -> Option<Pid> {
    children(pid).into_iter().next()
}

/// The children of `pid`, from /proc.
pub fn children(pid: Pid) -> Vec<Pid> {
    let path = format!("/proc/{pid}/task/{pid}/children");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .map(Pid::from_raw)
        .collect()
}

/// Every descendant of `pid` (children, their children, ...).
pub fn descendants(pid: Pid) -> Vec<Pid> {
    let mut found = Vec::new();
    let mut queue = children(pid);
    while let Some(next) = queue.pop() {
        found.push(next);
        queue.extend(children(next));
    }
    found
}

/// The state letter of a process (`R`, `S`, `Z`, ...), or None if it is gone.
pub fn process_state(pid: Pid) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = stat.rsplit_once(')')?.1;
    after_comm.trim_start().chars().next()
}

/// A minimal HTTP/1.1 request with `Connection: close`; returns status and body.
pub fn http(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    http_with(addr, method, path, &[], Duration::from_secs(10))
}

/// `GET path`.
pub fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(addr, "GET", path)
}

/// An HTTP request with extra headers and a read timeout.
pub fn http_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    timeout: Duration,
) -> (u16, String) {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("connect");
    stream.set_read_timeout(Some(timeout)).expect("timeout");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Builds (or finds up to date) the static lameduck and fixture with scripts/build-static.sh;
/// returns their paths.
pub fn static_build() -> (PathBuf, PathBuf) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let output = Command::new(root.join("scripts/build-static.sh"))
        .env_remove("RUSTFLAGS")
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/build-static.sh");
    assert!(
        output.status.success(),
        "static build failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let binary = root.join(String::from_utf8_lossy(&output.stdout).trim());
    let fixture = binary
        .parent()
        .expect("release folder")
        .join("examples/fixture");
    (binary, fixture)
}

/// Moves the calling test's thread into a network namespace of its own, with its loopback up;
/// what the thread starts from then on (lameduck, servers, clients) lives there too. The
/// adaptive delay counts every connection its namespace accepts, so a test of it must not
/// share one with other tests.
pub fn own_network() {
    // SAFETY: unshare with a constant flag changes only this thread's namespaces.
    assert_eq!(
        unsafe { libc::unshare(libc::CLONE_NEWNET) },
        0,
        "unshare a network namespace (root needed): {}",
        std::io::Error::last_os_error()
    );
    run_ip(&["link", "set", "lo", "up"]);
}

/// Runs `ip ARGS` in the calling thread's network namespace.
pub fn run_ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("run ip");
    assert!(status.success(), "ip {args:?}: {status}");
}

/// The calling thread's id, which names its network namespace to `ip ... netns`.
pub fn thread_id() -> i32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() }
}
