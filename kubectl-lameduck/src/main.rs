//! `kubectl-lameduck`: the cluster-side half of lameduck, a kubectl plugin (an executable named
//! `kubectl-lameduck` on PATH runs as `kubectl lameduck ...`). It checks pod specs with `lint`;
//! it reads a container's lameduck flags through the init's own clap definition.
//!
//! # Layout
//! - `lint` owns the command `lint`: reading manifests, the rules, and the report.
//! - `inject` owns the command `inject` and the pod decisions the webhook shares.
//! - `servers` owns the table of known servers (stop signals, own bounds), read by `lint`.
//! - `webhook` owns the command `webhook`: the admission webhook that runs `inject` in the cluster.

#![deny(clippy::unwrap_used, clippy::expect_used)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod inject;
mod lint;
pub mod servers;
mod webhook;

use clap::{Parser, Subcommand};

/// Exit code for a usage error or unreadable input.
pub const EXIT_USAGE: i32 = 2;

/// kubectl lameduck: checks Kubernetes manifests for a zero-downtime shutdown with lameduck.
#[derive(Parser, Debug)]
#[command(
    name = "kubectl-lameduck",
    bin_name = "kubectl lameduck",
    version,
    about
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// What the plugin can do.
#[derive(Subcommand, Debug)]
enum Command {
    /// Check Kubernetes manifests for settings that still drop requests.
    Lint(lint::LintArgs),
    /// Print the same manifests with lameduck added (or, with --remove, taken out).
    Inject(inject::InjectArgs),
    /// Serve a mutating admission webhook that injects lameduck into opted-in pods.
    Webhook(webhook::WebhookArgs),
}

fn main() {
    let cli = parse();
    let code = match cli.command {
        Command::Lint(args) => lint::run(&args),
        Command::Inject(args) => inject::run(&args),
        Command::Webhook(args) => webhook::run(args),
    };
    std::process::exit(code);
}

/// Parses the command line; on a usage error prints one line and exits 2 (help and version
/// print in full and exit 0).
fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            use clap::error::ErrorKind;
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = err.print();
                std::process::exit(
                    if err.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                        EXIT_USAGE
                    } else {
                        0
                    },
                );
            }
            let rendered = err.render().to_string();
            let first = rendered
                .lines()
                .map(str::trim)
                .find(|line| !line.is_empty())
                .unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            say(format_args!(
                "kubectl-lameduck: {first} (see 'kubectl lameduck --help')"
            ));
            std::process::exit(EXIT_USAGE);
        }
    }
}

/// Writes one line to stderr; never panics when the stream is closed.
pub fn say(line: std::fmt::Arguments<'_>) {
    lameduck::exit::say(std::io::stderr(), line);
}
