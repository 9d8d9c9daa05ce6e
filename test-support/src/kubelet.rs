//! The kubelet's part in a pod's life, played against real containers (the `docker` module):
//! its HTTP prober and its termination sequence, as the Kubernetes pod lifecycle docs and
//! `killContainer` in the kubelet's pkg/kubelet/kuberuntime/kuberuntime_container.go have it.
//! Every running container is stopped at once, each in its own thread: its preStop hook first,
//! then the image's stop signal, then SIGKILL when what is left of the grace period has run out.
//! The hook is run as `pkg/kubelet/lifecycle/handlers.go` runs it: an `httpGet` client with no
//! timeout of its own and a kept-alive connection (`User-Agent: kube-lifecycle/1.32`), whose
//! status is ignored, whose connection error (refused, reset, EOF) fails the hook and sends the
//! stop signal at once, and which the kubelet stops waiting for, without closing it, when the
//! grace period runs out; an `exec` hook runs inside the container (`docker exec`). The hook's
//! time is taken off the grace period in whole seconds, with at least 2s left for the stop
//! signal. The grace period is the deletion's own, as `kubectl drain --grace-period` overrides
//! the pod's. Native sidecars run their hooks at once too, but get their stop signal only after every
//! main container (and every sidecar declared after them) has exited. Each container's exit
//! code, log and exit time are recorded for the test's assertions.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::docker::{Container, ExitWatch, Kind, Pod, PreStop};

/// The kubelet's `minimumGracePeriodInSeconds`: however long the hook took, the stop signal
/// gets at least this long before the SIGKILL.
pub const MINIMUM_GRACE: Duration = Duration::from_secs(2);
/// How long a container may take to be gone after its SIGKILL.
const AFTER_SIGKILL: Duration = Duration::from_secs(10);

/// A GET as the kubelet's prober and hook runner send it, over a new connection; the status,
/// or why there is none (a connection error is all the kubelet counts as a failed hook).
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<u16> {
    let timeout = timeout.max(Duration::from_millis(1));
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.34\r\n\
         Connection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    String::from_utf8_lossy(&response)
        .split_whitespace()
        .nth(1)
        .and_then(|status| status.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no status line"))
}

/// Probes each `(address, path)` every 100 ms, as a readiness probe with a 1s timeout does,
/// until all pass (200-399) at once; false if that has not happened within `timeout`.
pub fn wait_ready(probes: &[(SocketAddr, &str)], timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let ready = probes.iter().all(|(addr, path)| {
            matches!(http_get(*addr, path, Duration::from_secs(1)), Ok(200..=399))
        });
        if ready {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The kubelet's hook client as `httpGet` runs it: no timeout of its own (the kubelet waits at
/// most `wait`), keep-alive, the status only read, never judged. Returns the status or the
/// connection error, and the connection, which the kubelet leaves open when it stops waiting.
fn hook_get(
    addr: SocketAddr,
    path: &str,
    wait: Duration,
) -> (Result<u16, String>, Option<TcpStream>) {
    let mut stream = match TcpStream::connect_timeout(&addr, wait.max(Duration::from_millis(1))) {
        Ok(stream) => stream,
        Err(err) => return (Err(err.to_string()), None),
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-lifecycle/1.32\r\n\
         Accept: */*\r\n\r\n"
    );
    if let Err(err) = stream.write_all(request.as_bytes()) {
        return (Err(err.to_string()), None);
    }
    let deadline = Instant::now() + wait;
    let mut response = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(status) = complete_response(&response) {
            return (Ok(status), Some(stream));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return (
                Err("the grace period ran out; the kubelet stopped waiting".into()),
                Some(stream),
            );
        }
        let _ = stream.set_read_timeout(Some(left));
        match stream.read(&mut chunk) {
            Ok(0) => return (Err("EOF".into()), None),
            Ok(read) => response.extend_from_slice(&chunk[..read]),
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(err) => return (Err(err.to_string()), None),
        }
    }
}

/// The status of a whole response (head and `Content-Length` body), once it has all come.
fn complete_response(bytes: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().ok())
        })
        .flatten()
        .unwrap_or(0);
    (body.len() >= length).then(|| head.split_whitespace().nth(1)?.parse().ok())?
}

/// The kubelet's `exec` hook: the command inside the container, waited for at most `wait`;
/// a command still running then is left running, as the kubelet leaves it. The container's
/// exit ends it too, as the runtime ends a container's execs with the container (docker's
/// client alone would wait on).
fn hook_exec(
    container: &Container,
    exit: &mut ExitWatch,
    argv: &[String],
    wait: Duration,
) -> (Result<u16, String>, Option<Child>) {
    let mut child = match Command::new("docker")
        .arg("exec")
        .arg(&container.id)
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(err) => return (Err(err.to_string()), None),
    };
    let deadline = Instant::now() + wait;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return (Ok(0), None),
            Ok(Some(status)) => {
                let mut stderr = String::new();
                if let Some(mut pipe) = child.stderr.take() {
                    let _ = pipe.read_to_string(&mut stderr);
                }
                return (
                    Err(format!("exec hook exited {status}: {}", stderr.trim())),
                    None,
                );
            }
            Ok(None) if exit.wait(Duration::ZERO).is_some() => {
                return (Ok(0), Some(child));
            }
            Ok(None) if Instant::now() >= deadline => {
                return (
                    Err("the grace period ran out; the kubelet stopped waiting".into()),
                    Some(child),
                );
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(err) => return (Err(err.to_string()), None),
        }
    }
}

/// What a hook the kubelet stopped waiting for leaves behind until the pod is gone.
enum Abandoned {
    /// Held open, never read again: closed when it is dropped.
    Connection {
        _open: TcpStream,
    },
    Exec(Child),
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if let Abandoned::Exec(child) = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How a preStop hook went.
#[derive(Debug)]
pub struct Hook {
    /// When the kubelet called it.
    pub started: Instant,
    /// How long it held the termination up.
    pub took: Duration,
    /// The status it answered (which the kubelet ignores; 0 for an exec hook that exited 0),
    /// or the error that made it a `FailedPreStopHook` event.
    pub outcome: Result<u16, String>,
}

/// How one container stopped.
#[derive(Debug)]
pub struct Stopped {
    /// Its name in the pod spec.
    pub name: String,
    /// Its preStop hook, if it has one.
    pub hook: Option<Hook>,
    /// The stop signal the kubelet sent (the image's STOPSIGNAL, or SIGTERM).
    pub stop_signal: String,
    /// When the stop signal went out; None when the container had exited before it.
    pub signalled: Option<Instant>,
    /// Whether the grace period ran out, so it got SIGKILL.
    pub killed: bool,
    /// When it was seen to exit.
    pub exited: Instant,
    /// The exit code docker recorded.
    pub exit_code: i32,
    /// Its output, stdout then stderr.
    pub log: String,
}

/// A pod's termination: when it began and how each container stopped.
pub struct Termination {
    /// When the kubelet began (the hooks' start: endpoint removal begins at the same moment).
    pub began: Instant,
    /// Every container that was running, in the pod's order.
    pub containers: Vec<Stopped>,
}

impl Termination {
    /// The container named `name`.
    pub fn container(&self, name: &str) -> &Stopped {
        self.containers
            .iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no container {name} in {}", self.summary()))
    }

    /// One line per container, times in ms from `began`, then every log: for a failed assertion.
    pub fn summary(&self) -> String {
        let ms = |at: Instant| at.saturating_duration_since(self.began).as_millis();
        let mut text = String::new();
        for c in &self.containers {
            let hook = c.hook.as_ref().map(|h| {
                format!(
                    "hook {:?} at {} ms for {} ms, ",
                    h.outcome,
                    ms(h.started),
                    h.took.as_millis()
                )
            });
            text.push_str(&format!(
                "{}: {}{} at {:?} ms, killed {}, exit {} at {} ms\n",
                c.name,
                hook.unwrap_or_default(),
                c.stop_signal,
                c.signalled.map(ms),
                c.killed,
                c.exit_code,
                ms(c.exited)
            ));
        }
        for c in &self.containers {
            text.push_str(&format!("--- {} ---\n{}\n", c.name, c.log));
        }
        text
    }
}

/// Deletes `pod` with the grace period `grace`, as the kubelet does, and returns once every
/// container has exited. `grace` is the deletion's: the pod's `terminationGracePeriodSeconds`,
/// or a shorter one, as `kubectl drain --grace-period` sends it, which lameduck cannot see.
pub fn terminate(pod: &Pod, grace: Duration) -> Termination {
    // Init containers have run to completion; every other container is running.
    let running: Vec<&Container> = pod
        .containers()
        .iter()
        .filter(|c| c.kind != Kind::Init)
        .collect();
    let order = Order::new(&running);
    let began = Instant::now();
    let containers = std::thread::scope(|scope| {
        let threads: Vec<_> = running
            .iter()
            .enumerate()
            .map(|(index, container)| {
                let order = &order;
                scope.spawn(move || {
                    let stopped = stop(container, grace, |left| order.wait_for_turn(index, left));
                    order.terminated(index);
                    stopped
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|thread| thread.join().expect("a container's termination panicked"))
            .collect()
    });
    Termination { began, containers }
}

/// Stops one container: hook, stop signal once it is its turn, SIGKILL when the grace is gone.
fn stop(
    container: &Container,
    grace: Duration,
    wait_for_turn: impl FnOnce(Duration) -> Duration,
) -> Stopped {
    let mut exit = container.watch_exit();
    // Looked up first, so the signal follows the hook as closely as the runtime sends it.
    let stop_signal = container.stop_signal();
    let mut left = grace;
    let mut abandoned = None;
    // The kubelet skips the hook with a zero grace period, and abandons it when the period is out.
    let hook = container
        .pre_stop
        .as_ref()
        .filter(|_| !grace.is_zero())
        .map(|hook| {
            let started = Instant::now();
            let outcome = match hook {
                PreStop::HttpGet(addr, path) => {
                    let (outcome, connection) = hook_get(*addr, path, left);
                    // Kept alive after an answer, or left open by a kubelet that gave up.
                    abandoned = connection.map(|open| Abandoned::Connection { _open: open });
                    outcome
                }
                PreStop::Exec(argv) => {
                    let (outcome, child) = hook_exec(container, &mut exit, argv, left);
                    abandoned = child.map(Abandoned::Exec);
                    outcome
                }
            };
            let took = started.elapsed();
            // Whole seconds, truncated, as the kubelet subtracts them.
            left = left.saturating_sub(Duration::from_secs(took.as_secs()));
            Hook {
                started,
                took,
                outcome,
            }
        });
    if !left.is_zero() {
        left = left.saturating_sub(wait_for_turn(left));
    }
    let left = left.max(MINIMUM_GRACE);
    let at = Instant::now();
    let signalled = container.kill(&stop_signal).then_some(at);
    let mut killed = false;
    let exited = exit.wait(left).unwrap_or_else(|| {
        killed = true;
        container.kill("SIGKILL");
        exit.wait(AFTER_SIGKILL)
            .unwrap_or_else(|| panic!("{} outlived its SIGKILL", container.name))
    });
    drop(abandoned);
    Stopped {
        name: container.name.clone(),
        hook,
        stop_signal,
        signalled,
        killed,
        exited,
        exit_code: container.exit_code(),
        log: container.logs(),
    }
}

/// Who must have exited before whom: a native sidecar waits for every main container and for
/// every sidecar declared after it (sidecars stop in reverse order); a main container waits for
/// no one.
struct Order {
    waits_for: Vec<Vec<usize>>,
    exited: Mutex<Vec<bool>>,
    changed: Condvar,
}

impl Order {
    fn new(containers: &[&Container]) -> Self {
        let waits_for = containers
            .iter()
            .enumerate()
            .map(|(index, container)| match container.kind {
                Kind::Sidecar => (0..containers.len())
                    .filter(|&other| containers[other].kind == Kind::Main || other > index)
                    .collect(),
                Kind::Main | Kind::Init => Vec::new(),
            })
            .collect();
        Order {
            waits_for,
            exited: Mutex::new(vec![false; containers.len()]),
            changed: Condvar::new(),
        }
    }

    /// Waits, at most `limit`, until it is container `index`'s turn; returns how long it waited.
    fn wait_for_turn(&self, index: usize, limit: Duration) -> Duration {
        let start = Instant::now();
        let mut exited = self.exited.lock().expect("order lock");
        while !self.waits_for[index].iter().all(|&other| exited[other]) {
            let left = limit.saturating_sub(start.elapsed());
            if left.is_zero() {
                break;
            }
            exited = self
                .changed
                .wait_timeout(exited, left)
                .expect("order lock")
                .0;
        }
        start.elapsed()
    }

    fn terminated(&self, index: usize) {
        self.exited.lock().expect("order lock")[index] = true;
        self.changed.notify_all();
    }
}
