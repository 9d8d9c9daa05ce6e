//! Log output: human-readable lines or JSON objects on stderr, at the chosen level.

use tracing::level_filters::LevelFilter;

use crate::cli::{LogArgs, LogFormat, LogLevel};

/// Installs the global subscriber. Writes to a closed stderr are dropped, never fatal.
pub fn init(args: &LogArgs) {
    let level = match args.log_level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
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
