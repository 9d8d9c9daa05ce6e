//! Log output: human-readable lines or JSON objects on stderr, at the chosen level, written
//! so that a stalled or vanished log reader can never stall or kill lameduck.

use std::io::{self, Write};
use std::os::fd::AsFd;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use tracing::level_filters::LevelFilter;

use crate::cli::{LogArgs, LogFormat, LogLevel};

/// Installs the global subscriber. Lines that cannot be written at once are dropped.
///
/// Without `--log-level`, a terminal on stderr (`docker run -it`) is the app's terminal, read
/// by a person: only warnings and errors go there. Anything else is a log collector, which gets
/// the info lines that tell the drain's story.
pub fn init(args: &LogArgs) {
    let terminal = || nix::unistd::isatty(io::stderr()).unwrap_or(false);
    let level = args.log_level.unwrap_or_else(|| {
        if terminal() {
            LogLevel::Warn
        } else {
            LogLevel::Info
        }
    });
    let level = match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(|| Stderr)
        .with_max_level(level)
        .with_target(false)
        .with_ansi(false)
        // The default reports a failed write with eprintln!, which panics when stderr is a
        // closed pipe: a log collector going away must not take PID 1 with it.
        .log_internal_errors(false);
    // Only fails when a subscriber is already installed, which cannot happen: init runs once.
    let _ = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}

/// stderr that never blocks: a log line is written only when the kernel can take it now.
///
/// A blocking write to a full pipe (a log collector that stopped reading) would stall the
/// supervisor, and with it signal forwarding, reaping and the drain. For a pipe, "writable"
/// means at least PIPE_BUF (4 KiB) free, so a line of that size goes out whole or not at all.
struct Stderr;

impl Write for Stderr {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let stderr = io::stderr();
        let mut fds = [PollFd::new(stderr.as_fd(), PollFlags::POLLOUT)];
        let ready = poll(&mut fds, PollTimeout::ZERO).is_ok_and(|n| n > 0)
            && fds[0]
                .revents()
                .is_some_and(|r| r.contains(PollFlags::POLLOUT));
        if !ready {
            return Ok(line.len());
        }
        stderr.lock().write(line)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
