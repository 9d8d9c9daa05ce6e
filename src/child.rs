//! The app: spawning it in its own process group (and session), and every signal lameduck
//! sends to it or to what it left behind. Nothing else in lameduck calls `kill`.

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::errno::Errno;
use nix::sys::resource::{self, Resource};
use nix::sys::signal::{self, SigSet, SigmaskHow, Signal};
use nix::unistd::{self, Pid};

use crate::signals::Ignored;

/// Why the app could not be started; each maps to the exit code tini and shells use.
#[derive(Debug)]
pub struct SpawnError {
    /// 127 when the command was not found, 126 when it could not be executed.
    pub exit_code: i32,
    /// One line naming the command and the reason.
    pub message: String,
}

/// The running app: its pid, which is also its process group id.
#[derive(Clone, Copy, Debug)]
pub struct App {
    /// The app's pid and process group.
    pub pid: Pid,
    /// Whether forwarded signals go to the whole process group.
    pub group: bool,
}

/// Starts `command` as the app. With a terminal on stdin the app becomes the terminal's
/// foreground process group, so Ctrl-C in `docker run -it` reaches it; otherwise it gets a
/// session of its own.
///
/// `open_files` is the open-file limit lameduck found at start, restored for the app so that
/// raising lameduck's own limit changes nothing for it; likewise `ignored`, the signals that
/// were ignored when lameduck started, are ignored by the app again.
pub fn spawn(
    command: &[OsString],
    group: bool,
    open_files: Option<(u64, u64)>,
    ignored: Ignored,
) -> Result<App, SpawnError> {
    let Some((program, args)) = command.split_first() else {
        return Err(SpawnError {
            exit_code: 2,
            message: "no command given".into(),
        });
    };
    let interactive = unistd::isatty(io::stdin()).unwrap_or(false);
    let mut cmd = Command::new(program);
    cmd.args(args);
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls
    // (setrlimit, sigaction, sigprocmask, setsid, setpgid, tcsetpgrp) on stack data.
    unsafe {
        cmd.pre_exec(move || {
            if let Some((soft, hard)) = open_files {
                resource::setrlimit(Resource::RLIMIT_NOFILE, soft, hard)?;
            }
            ignored.restore()?;
            isolate(interactive)
        });
    }
    match cmd.spawn() {
        // The Child handle is dropped without waiting: the reaper is the only caller of waitpid.
        Ok(child) => Ok(App {
            pid: Pid::from_raw(child.id() as i32),
            group,
        }),
        Err(err) => {
            let name = program.to_string_lossy();
            let (exit_code, why) = match err.kind() {
                io::ErrorKind::NotFound => (127, "command not found".to_owned()),
                io::ErrorKind::PermissionDenied => {
                    (126, "permission denied (is it executable?)".to_owned())
                }
                _ => (126, err.to_string()),
            };
            Err(SpawnError {
                exit_code,
                message: format!("cannot run '{name}': {why}"),
            })
        }
    }
}

/// Raises lameduck's soft open-file limit to the hard limit (many containers start with a soft
/// limit of 1024), so a flood of idle connections to the endpoints cannot starve the probes of
/// file descriptors. Returns the limit as found, for the app.
pub fn raise_open_files() -> Option<(u64, u64)> {
    let (soft, hard) = resource::getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard {
        resource::setrlimit(Resource::RLIMIT_NOFILE, hard, hard).ok()?;
    }
    Some((soft, hard))
}

/// Runs in the forked child before exec: a process group of its own, the terminal's
/// foreground when there is one, and the empty signal mask the app expects.
fn isolate(interactive: bool) -> io::Result<()> {
    if interactive {
        unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0))?;
        // tcsetpgrp from a background group raises SIGTTOU unless it is blocked.
        let mut ttou = SigSet::empty();
        ttou.add(Signal::SIGTTOU);
        signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&ttou), None)?;
        match unistd::tcsetpgrp(io::stdin(), unistd::getpid()) {
            Ok(()) | Err(Errno::ENOTTY) | Err(Errno::ENXIO) => {}
            Err(err) => return Err(err.into()),
        }
    } else {
        unistd::setsid()?;
    }
    signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
    Ok(())
}

impl App {
    /// Sends `signal` to the app, or to its process group with `--group`.
    pub fn signal(&self, signal: Signal) -> nix::Result<()> {
        if self.group {
            signal::killpg(self.pid, signal)
        } else {
            signal::kill(self.pid, signal)
        }
    }

    /// Sends real-time signal `number` (which nix has no `Signal` for) like `signal`.
    pub fn signal_realtime(&self, number: i32) -> nix::Result<()> {
        let target = if self.group {
            -self.pid.as_raw()
        } else {
            self.pid.as_raw()
        };
        // SAFETY: kill(2) with a plain pid and signal number.
        Errno::result(unsafe { libc::kill(target, number) }).map(drop)
    }

    /// Sends `signal` to everything the app may have left: the whole PID namespace when
    /// lameduck is its init, the app's process group otherwise. Nothing being left (ESRCH) is
    /// the good case, so the result is not reported.
    pub fn signal_everything(&self, signal: Signal, pid1: bool) {
        let target = if pid1 {
            Pid::from_raw(-1)
        } else {
            Pid::from_raw(-self.pid.as_raw())
        };
        let _ = signal::kill(target, signal);
    }

    /// The pids `signal_everything` would reach, read from /proc, for the log line that says
    /// what was killed.
    pub fn leftovers(&self, pid1: bool) -> Vec<i32> {
        let me = unistd::getpid();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        let mut pids: Vec<i32> = entries
            .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .map(Pid::from_raw)
            .filter(|&pid| pid != me && (pid1 || unistd::getpgid(Some(pid)) == Ok(self.pid)))
            .map(Pid::as_raw)
            .collect();
        pids.sort_unstable();
        pids
    }
}

impl From<SpawnError> for crate::exit::Fatal {
    fn from(err: SpawnError) -> Self {
        crate::exit::Fatal {
            code: err.exit_code,
            message: err.message,
        }
    }
}
