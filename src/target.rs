//! The sidecar's target: finding the app's process from a pid file or by name in /proc, and
//! holding it by a pidfd so a signal can never reach a recycled pid.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use tokio::io::unix::AsyncFd;

/// How the sidecar finds the process it drains.
#[derive(Clone, Debug)]
pub enum Selector {
    /// The pid written in this file (nginx's `pid` directive, on a shared volume).
    PidFile(PathBuf),
    /// The oldest process whose name (`/proc/PID/comm`) is this.
    ProcessName(String),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::PidFile(path) => write!(f, "pid file {}", path.display()),
            Selector::ProcessName(name) => write!(f, "process name '{name}'"),
        }
    }
}

/// A process found by a selector and pinned by a pidfd.
pub struct Target {
    /// Its pid in lameduck's PID namespace.
    pub pid: i32,
    pidfd: AsyncFd<OwnedFd>,
}

impl Selector {
    /// Finds the target now; explains why not when it cannot.
    pub fn find(&self) -> Result<Target, String> {
        let (pid, start) = match self {
            Selector::PidFile(path) => from_pid_file(path)?,
            Selector::ProcessName(name) => oldest_named(name)?,
        };
        let pidfd = pidfd_open(pid).map_err(|err| format!("cannot open process {pid}: {err}"))?;
        // The pidfd pins one process; if the start time changed, the pid was recycled between
        // reading it and opening it, and the pidfd points at a stranger.
        if start_time(pid) != Some(start) {
            return Err(format!("process {pid} exited while it was being found"));
        }
        // SAFETY: the AsyncFd owns the pidfd, so it stays open for as long as it is registered.
        let pidfd = unsafe { AsyncFd::register(pidfd) }
            .map_err(|err| format!("cannot watch process {pid}: {err}"))?;
        Ok(Target { pid, pidfd })
    }
}

impl Target {
    /// Sends `signal` through the pidfd: it reaches this process or nothing.
    pub fn signal(&self, signal: Signal) -> io::Result<()> {
        // SAFETY: pidfd_send_signal with a valid pidfd, a valid signal number and no siginfo.
        let result = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.get_ref().as_raw_fd(),
                signal as libc::c_int,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if result == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Completes when the process has exited (a pidfd turns readable then).
    pub async fn exited(&self) {
        if let Ok(mut guard) = self.pidfd.readable().await {
            guard.retain_ready();
        }
    }

    /// The process group to SIGKILL with the target at the drain timeout: its own group when
    /// it leads one (nginx's workers share the master's), otherwise none.
    pub fn led_group(&self) -> Option<i32> {
        let pgid = nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(self.pid))).ok()?;
        (pgid.as_raw() == self.pid).then_some(self.pid)
    }
}

impl crate::engine::Target for Target {
    fn signal(&self, signal: Signal) -> io::Result<()> {
        Target::signal(self, signal)
    }

    /// The target with its process group when it leads one (nginx's workers share the
    /// master's), else the target alone.
    fn kill_what_is_left(&self) -> io::Result<Vec<i32>> {
        match self.led_group() {
            Some(pgid) => {
                nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), Signal::SIGKILL)?;
            }
            None => Target::signal(self, Signal::SIGKILL)?,
        }
        Ok(vec![self.pid])
    }

    /// The target alone: a server's listening sockets are open in its master process.
    fn processes(&self) -> Vec<i32> {
        vec![self.pid]
    }
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new file descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn from_pid_file(path: &Path) -> Result<(i32, u64), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("cannot read {}: {err}", path.display()))?;
    let pid: i32 = text
        .trim()
        .parse()
        .map_err(|_| format!("{} does not hold a pid", path.display()))?;
    if pid <= 0 {
        return Err(format!("{} holds pid {pid}", path.display()));
    }
    let start = start_time(pid).ok_or_else(|| {
        format!(
            "process {pid} from {} is not visible (is shareProcessNamespace: true set on the pod?)",
            path.display()
        )
    })?;
    Ok((pid, start))
}

fn oldest_named(name: &str) -> Result<(i32, u64), String> {
    let me = std::process::id();
    let entries = std::fs::read_dir("/proc").map_err(|err| format!("cannot read /proc: {err}"))?;
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| u32::try_from(pid).is_ok_and(|p| p != me))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
        })
        .filter_map(|pid| Some((pid, start_time(pid)?)))
        .min_by_key(|&(pid, start)| (start, pid))
        .ok_or_else(|| format!("no process named '{name}' is visible"))
}

/// The process's start time in clock ticks since boot (field 22 of /proc/PID/stat).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields after its last ')' do not.
    let fields = stat.rsplit_once(')')?.1;
    fields.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_itself_by_pid_file_with_its_start_time() {
        let path = std::env::temp_dir().join(format!("lameduck-target-{}.pid", std::process::id()));
        std::fs::write(&path, format!("{}\n", std::process::id())).unwrap();
        let (pid, start) = from_pid_file(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(pid as u32, std::process::id());
        assert_eq!(start_time(pid), Some(start));
    }

    #[test]
    fn a_pid_file_without_a_live_pid_is_an_error() {
        let path =
            std::env::temp_dir().join(format!("lameduck-target-bad-{}.pid", std::process::id()));
        for content in ["", "abc", "-5", "0", "4194304999"] {
            std::fs::write(&path, content).unwrap();
            assert!(from_pid_file(&path).is_err(), "{content:?}");
        }
        std::fs::remove_file(&path).unwrap();
        assert!(from_pid_file(&path).is_err());
    }
}
