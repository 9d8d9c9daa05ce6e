//! The kubelet's part in a pod's life, played against real containers (tests/common/docker.rs):
//! its HTTP prober and its termination sequence, as the Kubernetes pod lifecycle docs and
//! `killContainer` in the kubelet's pkg/kubelet/kuberuntime/kuberuntime_container.go have it.
//! Every running container is stopped at once, each in its own thread: its `preStop.httpGet`
//! hook first (status ignored, the grace period counting from the start of the hook), then the
//! image's stop signal, then SIGKILL when what is left of the grace period (at least 2s) has run
//! out. Native sidecars run their hooks at once too, but get their stop signal only after every
//! main container (and every sidecar declared after them) has exited. Each container's exit
//! code, log and exit time are recorded for the test's assertions.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::docker::{Container, Kind, Pod};

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

/// How a preStop hook went.
#[derive(Debug)]
pub struct Hook {
    /// When the kubelet called it.
    pub started: Instant,
    /// How long it held the termination up.
    pub took: Duration,
    /// The status it answered (which the kubelet ignores), or the error that made it a
    /// `FailedPreStopHook` event.
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

/// Deletes `pod` with `terminationGracePeriodSeconds` = `grace`, as the kubelet does, and
/// returns once every container has exited.
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
    // The kubelet skips the hook with a zero grace period, and abandons it when the period is out.
    let hook = container
        .pre_stop
        .as_ref()
        .filter(|_| !grace.is_zero())
        .map(|(addr, path)| {
            let started = Instant::now();
            let outcome = http_get(*addr, path, left).map_err(|e| e.to_string());
            let took = started.elapsed();
            left = left.saturating_sub(took);
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
