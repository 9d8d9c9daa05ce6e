//! How lameduck ends on its own account: the exit codes, the typed fatal error that carries
//! one of them with its message up to `main`, and one line of output that never panics.

/// Exit code for a usage or configuration error of lameduck itself.
pub const EXIT_USAGE: i32 = 2;
/// Exit code when lameduck cannot do its own work (no runtime, no signal intake, no copy).
pub const EXIT_FAILED: i32 = 1;

/// An error lameduck cannot go on after: the code to exit with and one line saying why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fatal {
    /// The process's exit code.
    pub code: i32,
    /// What went wrong, in one line.
    pub message: String,
}

impl Fatal {
    /// A usage or configuration error (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Fatal {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }

    /// lameduck's own work failed (exit 1).
    pub fn failed(message: impl Into<String>) -> Self {
        Fatal {
            code: EXIT_FAILED,
            message: message.into(),
        }
    }

    /// Logs the message and returns the code to exit with.
    pub fn report(self) -> i32 {
        tracing::error!("{}", self.message);
        self.code
    }
}

/// Writes one line to stdout or stderr. Unlike println!, it never panics when the stream is closed.
pub fn say(mut stream: impl std::io::Write, line: std::fmt::Arguments<'_>) {
    let _ = writeln!(stream, "{line}");
}
