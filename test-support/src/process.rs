//! The process harness: start the built lameduck really as PID 1 (under `unshare --pid --fork
//! --mount-proc`) or as a subreaper, read its output line by line, send it signals by pid, and
//! clean up by pid on drop; any other program as PID 1 of a namespace of its own (the benchmarks'
//! peers), a program run to its end within a time limit, and what /proc tells of a process.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::binaries::lameduck;
use crate::http::get;

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
            $( #[test] fn $name() { super::$name($crate::process::Mode::Pid1) } )*
        }
        mod subreaper {
            $( #[test] fn $name() { super::$name($crate::process::Mode::Subreaper) } )*
        }
    };
}

/// Polls `condition` every `every` until it holds or `timeout` passes; whether it held.
pub fn poll_until(timeout: Duration, every: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes; whether it held.
pub fn wait_until(timeout: Duration, condition: impl FnMut() -> bool) -> bool {
    poll_until(timeout, Duration::from_millis(10), condition)
}

/// Lines read from one output stream, kept for later assertions.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<String>>>, Arc<AtomicBool>);

impl Lines {
    /// Collects the lines of `stream` in the background.
    pub fn follow_stream(stream: impl Read + Send + 'static) -> Self {
        Lines::follow(stream).0
    }

    /// Collects the lines of `stream` in the background, and sends each down the channel too,
    /// for a reader that waits on them one by one.
    pub fn follow(stream: impl Read + Send + 'static) -> (Self, Receiver<String>) {
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
            closed.store(true, Ordering::SeqCst);
        });
        (lines, rx)
    }

    /// Whether the stream has ended.
    pub fn closed(&self) -> bool {
        self.1.load(Ordering::SeqCst)
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

/// `unshare --pid --fork --mount-proc --kill-child PROGRAM`: PROGRAM (add its arguments) as PID 1
/// of a fresh PID namespace, which ends with everything in it when `unshare` is killed.
pub fn pid1_command(program: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new("unshare");
    command
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(program);
    command
}

/// The PID 1 that `unshare` (started by `pid1_command`) made, as the host sees it, once it
/// exists; None when `unshare` exited first or 5 s passed.
pub fn pid1_of(unshare: &mut Child) -> Option<Pid> {
    let outer = Pid::from_raw(i32::try_from(unshare.id()).expect("a pid"));
    let mut inner = None;
    wait_until(Duration::from_secs(5), || {
        inner = first_child(outer);
        inner.is_some() || unshare.try_wait().ok().flatten().is_some()
    });
    inner
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
    /// Starts `lameduck ARGS` in `mode`. `start` adds `--listen 127.0.0.1:0` when no `--listen`
    /// is given, so tests never collide on a port.
    pub fn start(mode: Mode, args: &[impl AsRef<str>]) -> Self {
        Lameduck::start_with(mode, args, |_| {})
    }

    /// Like `start`, with `prepare` shaping the command first: what lameduck's parent passes
    /// on (a `pre_exec` that blocks or ignores signals reaches lameduck through `unshare`).
    pub fn start_with(
        mode: Mode,
        args: &[impl AsRef<str>],
        prepare: impl FnOnce(&mut Command),
    ) -> Self {
        let mut all: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        if !all.contains(&"--listen") {
            // After the mode's name, when there is one (`lameduck sidecar --listen ...`).
            let at = usize::from(all.first() == Some(&"sidecar"));
            all.splice(at..at, ["--listen", "127.0.0.1:0"]);
        }
        let mut command = match mode {
            Mode::Pid1 => pid1_command(lameduck()),
            Mode::Subreaper => Command::new(lameduck()),
            Mode::Pid1Unprivileged => {
                let mut c = pid1_command("setpriv");
                c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
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
        let pid = match mode {
            Mode::Subreaper => Pid::from_raw(i32::try_from(process.id()).expect("a pid")),
            // A short-lived lameduck may be gone before it is seen; then its pid is never needed.
            Mode::Pid1 | Mode::Pid1Unprivileged => pid1_of(&mut process)
                .unwrap_or(Pid::from_raw(i32::try_from(process.id()).expect("a pid"))),
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

    /// The endpoints' address, once /readyz answers 200 (within 10 s).
    pub fn ready_addr(&self) -> SocketAddr {
        self.ready_within(Duration::from_secs(10))
    }

    /// The endpoints' address, once /readyz answers 200 (within `timeout`): with
    /// `--ready-check`, once the app answers.
    pub fn ready_within(&self, timeout: Duration) -> SocketAddr {
        let addr = self.addr();
        assert!(
            wait_until(timeout, || get(addr, "/readyz").0 == 200),
            "never ready within {timeout:?}: {:#?}",
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
        let code = exit_code(status);
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

/// An exit status as a shell reports it: the code, or 128 + the signal that ended the process.
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
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

/// A number field of a log line, `name=VALUE`.
pub fn log_field(line: &str, name: &str) -> u64 {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line:?}"))
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

/// The fields of /proc/PID/stat after the command's closing parenthesis (the state first), or
/// None if the process is gone.
fn stat_fields(pid: Pid) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = stat.rsplit_once(')')?.1;
    Some(after_comm.split_whitespace().map(str::to_owned).collect())
}

/// The state letter of a process (`R`, `S`, `Z`, ...), or None if it is gone.
pub fn process_state(pid: Pid) -> Option<char> {
    stat_fields(pid)?.first()?.chars().next()
}

/// The CPU time a process has used, user and system, in ms: /proc/PID/stat's utime and stime
/// (clock ticks), and the scheduler's nanosecond count from /proc/PID/schedstat.
pub fn cpu_time_ms(pid: Pid) -> (f64, f64) {
    let fields = stat_fields(pid).expect("/proc/PID/stat");
    // utime and stime are the 14th and 15th fields, the 12th and 13th after the command.
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let schedstat = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).expect("schedstat");
    let ns: f64 = schedstat
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("run time");
    (ticks * 1000.0 / per_second, ns / 1e6)
}

/// A `kB` field of /proc/PID/status (`VmRSS`, `VmHWM`, ...), in KiB.
pub fn status_kib(pid: Pid, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// What a finished program left: its exit code (None when it was killed or never started) and
/// its output.
pub struct Ran {
    /// The command line, for messages.
    pub what: String,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// Whether it exited 0.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// Everything it left, for a failed assertion.
    pub fn describe(&self) -> String {
        format!(
            "`{}` exited {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what, self.code, self.stdout, self.stderr
        )
    }
}

/// Runs `command` to its end with `stdin` on its standard input, killing it after `timeout`.
/// Both output pipes are read while it runs, so a chatty program never blocks on a full one.
pub fn run(command: &mut Command, stdin: &[u8], timeout: Duration) -> Ran {
    let what = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|word| word.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let spawned = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(err) => {
            return Ran {
                stderr: format!("cannot run `{what}`: {err}"),
                what,
                code: None,
                stdout: String::new(),
            };
        }
    };
    let mut input = child.stdin.take().expect("stdin is piped");
    let stdin = stdin.to_vec();
    // A program that never reads its input may close it first; that is not a failure here.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            String::from_utf8_lossy(&bytes).into_owned()
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("stdout is piped")));
    let stderr = read(Box::new(child.stderr.take().expect("stderr is piped")));
    let mut status = None;
    let finished = wait_until(timeout, || {
        status = child.try_wait().ok().flatten();
        status.is_some()
    });
    if !finished {
        let _ = child.kill();
        let _ = child.wait();
    }
    let _ = writer.join();
    let mut stderr = stderr.join().unwrap_or_default();
    if !finished {
        stderr.push_str(&format!("\n(killed after {timeout:?})"));
    }
    Ran {
        what,
        code: status.and_then(|s| s.code()),
        stdout: stdout.join().unwrap_or_default(),
        stderr,
    }
}
