//! The one `waitpid(-1)` loop in lameduck: it reaps every zombie (the app, its orphans, and
//! anything reparented to lameduck as PID 1 or subreaper) and turns the app's wait status
//! into an exit code. Nothing else may wait for a child, or the app's status could be lost.

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

/// What one sweep found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// The app's exit status, if the app was among the reaped.
    pub app_status: Option<i32>,
    /// How many other processes were reaped.
    pub others: usize,
    /// Whether lameduck has no children left at all.
    pub no_children: bool,
}

/// Reaps every child that has exited, without blocking.
pub fn sweep(app: Pid) -> Sweep {
    let mut found = Sweep::default();
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return found,
            Ok(status) => {
                let Some(pid) = status.pid() else { continue };
                let code = exit_code(status);
                if pid == app {
                    found.app_status = code;
                } else {
                    tracing::debug!(pid = pid.as_raw(), status = ?code, "reaped a process the app left behind");
                    found.others += 1;
                }
            }
            Err(Errno::EINTR) => {}
            Err(Errno::ECHILD) => {
                found.no_children = true;
                return found;
            }
            Err(err) => {
                tracing::warn!(%err, "waitpid failed");
                return found;
            }
        }
    }
}

/// The exit code a shell would report: the code itself, or 128+N for death by signal N.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, signal, _) => Some(128 + signal as i32),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::Signal;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        let pid = Pid::from_raw(7);
        assert_eq!(exit_code(WaitStatus::Exited(pid, 0)), Some(0));
        assert_eq!(exit_code(WaitStatus::Exited(pid, 255)), Some(255));
        assert_eq!(
            exit_code(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some(137)
        );
        assert_eq!(
            exit_code(WaitStatus::Signaled(pid, Signal::SIGSEGV, true)),
            Some(139)
        );
        assert_eq!(exit_code(WaitStatus::Stopped(pid, Signal::SIGSTOP)), None);
    }
}
