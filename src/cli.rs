//! The command line: clap definitions (every flag also read from a `LAMEDUCK_*` variable) and
//! their validation into the settings the rest of lameduck runs on.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use nix::sys::signal::Signal;

use crate::duration;
use crate::settings::{
    DrainConfig, Forwarded, GRACE_MARGIN, HttpPrestop, QuietConfig, ReadinessDuringDelay,
    ReadyCheck, Route, Token,
};
use crate::signals::{Rewrite, Rewrites, SignalArg};

/// lameduck: a container init that turns a pod shutdown into a zero-downtime drain.
#[derive(Parser, Debug)]
#[command(
    name = "lameduck",
    version,
    about,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    override_usage = "lameduck [OPTIONS] -- COMMAND [ARGS]...\n       lameduck <MODE> [OPTIONS]"
)]
pub struct Cli {
    #[command(subcommand)]
    pub mode: Option<Mode>,

    #[command(flatten)]
    pub wrap: WrapArgs,
}

/// The modes other than wrapping a command.
#[derive(Subcommand, Debug)]
// Parsed once at start: the sidecar's flags need no box.
#[allow(clippy::large_enum_variant)]
pub enum Mode {
    /// Drain an app in another container of the pod (an unmodified nginx) from beside it.
    Sidecar(SidecarArgs),
    /// The preStop hook, run inside the pod (`exec: [lameduck, prestop]`): start the drain of
    /// the lameduck in this pod and wait for its answer.
    Prestop(PrestopArgs),
    /// Copy this executable into DIR (an init container's shared volume) as DIR/lameduck.
    Install {
        /// The directory to install into.
        dir: std::path::PathBuf,
    },
    /// Moved to the kubectl plugin: `kubectl lameduck lint` (kept to say so).
    #[command(hide = true)]
    Lint {
        /// Whatever followed `lint`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<OsString>,
    },
}

/// Flags of the default mode, `lameduck [OPTIONS] -- COMMAND [ARGS]...`.
#[derive(Args, Debug)]
pub struct WrapArgs {
    #[command(flatten)]
    pub drain: DrainArgs,

    #[command(flatten)]
    pub log: LogArgs,

    /// Forward signals to the app's whole process group instead of the app alone.
    #[arg(long, env = "LAMEDUCK_GROUP")]
    pub group: bool,

    /// Rewrite a forwarded signal, e.g. HUP:USR1 or 1:10 (repeatable; comma-separated in the env).
    #[arg(
        long = "rewrite",
        value_name = "FROM:TO",
        env = "LAMEDUCK_REWRITE",
        value_delimiter = ','
    )]
    pub rewrites: Vec<Rewrite>,

    /// Poll the app until it is ready: tcp://IP:PORT or http://IP:PORT/PATH (or localhost:PORT).
    #[arg(long, value_name = "URL", env = "LAMEDUCK_READY_CHECK")]
    pub ready_check: Option<ReadyCheck>,

    #[command(flatten)]
    pub quiet: QuietArgs,

    /// How often the ready check runs.
    #[arg(long, value_name = "DURATION", default_value = "1s", env = "LAMEDUCK_READY_INTERVAL", value_parser = duration::parse)]
    pub ready_interval: Duration,

    /// The app to run, with its arguments.
    #[arg(value_name = "COMMAND", required = true, trailing_var_arg = true)]
    pub command: Vec<OsString>,
}

/// Flags of `lameduck sidecar`.
#[derive(Args, Debug)]
pub struct SidecarArgs {
    #[command(flatten)]
    pub drain: DrainArgs,

    #[command(flatten)]
    pub quiet: QuietArgs,

    #[command(flatten)]
    pub log: LogArgs,

    /// Find the app by the pid in this file (e.g. nginx's pid file on a shared volume).
    #[arg(
        long,
        value_name = "PATH",
        env = "LAMEDUCK_PID_FILE",
        conflicts_with = "process_name"
    )]
    pub pid_file: Option<std::path::PathBuf>,

    /// Find the app as the oldest process with this name (/proc/PID/comm), e.g. nginx.
    #[arg(long, value_name = "NAME", env = "LAMEDUCK_PROCESS_NAME")]
    pub process_name: Option<String>,
}

/// Flags of `lameduck prestop`.
#[derive(Args, Debug)]
#[command(mut_arg("listen", |arg| arg.help(
    "The `--listen` of the lameduck to call: its hook socket is named after the port"
)))]
pub struct PrestopArgs {
    #[command(flatten)]
    pub listen: Listen,

    #[command(flatten)]
    pub socket: PrestopSocket,
}

/// lameduck's address, whose port names the hook socket: one definition for the lameduck that
/// listens and the `lameduck prestop` that calls it, so their default and variable agree. Each
/// end gives its own help.
#[derive(Args, Debug, Clone, Copy)]
pub struct Listen {
    #[arg(
        id = "listen",
        long = "listen",
        value_name = "ADDR",
        default_value = "0.0.0.0:8099",
        env = "LAMEDUCK_LISTEN"
    )]
    pub addr: SocketAddr,
}

/// The abstract Unix socket of the in-pod hook, the same flag on both ends.
#[derive(Args, Debug, Clone)]
pub struct PrestopSocket {
    /// Name of the abstract Unix socket of `lameduck prestop` [default: lameduck-prestop-PORT,
    /// PORT from --listen]; scoped to the pod's network namespace, so only the pod reaches it.
    #[arg(
        long = "prestop-socket",
        value_name = "NAME",
        env = "LAMEDUCK_PRESTOP_SOCKET",
        value_parser = socket_name
    )]
    pub name: Option<String>,
}

impl PrestopSocket {
    /// The socket's name, for endpoints listening on `port`.
    pub fn resolve(&self, port: u16) -> String {
        crate::settings::prestop_socket_name(self.name.as_deref(), port)
    }
}

/// An abstract socket name (a leading `@` allowed): 1 to 107 bytes, the room in `sun_path`
/// after its leading NUL.
fn socket_name(text: &str) -> Result<String, String> {
    let name = text.strip_prefix('@').unwrap_or(text);
    if name.is_empty() || name.len() > 107 || name.contains('\0') {
        return Err("the socket name must be 1 to 107 bytes without NUL".into());
    }
    Ok(name.to_owned())
}

/// Flags of the adaptive delay, the wrapper's and the sidecar's.
#[derive(Args, Debug)]
pub struct QuietArgs {
    /// Adaptive delay: stop waiting once no traffic reached the app for this long.
    #[arg(long, value_name = "DURATION", env = "LAMEDUCK_QUIET_PERIOD", value_parser = duration::parse)]
    pub quiet_period: Option<Duration>,

    /// With --quiet-period: the app's ports to watch [default: the ports the app listens on].
    #[arg(
        long = "app-port",
        value_name = "PORT",
        env = "LAMEDUCK_APP_PORT",
        value_delimiter = ','
    )]
    pub app_ports: Vec<u16>,
}

/// Flags of the drain sequence.
#[derive(Args, Debug)]
#[command(mut_arg("listen", |arg| arg.help(
    "Address of the readiness, liveness and preStop endpoints (port 0 picks a free one)"
)))]
pub struct DrainArgs {
    #[command(flatten)]
    pub listen: Listen,

    /// How long readiness fails before the app gets its stop signal (endpoint propagation).
    #[arg(long, value_name = "DURATION", default_value = "5s", env = "LAMEDUCK_SHUTDOWN_DELAY", value_parser = duration::parse)]
    pub shutdown_delay: Duration,

    /// How long the app may take to exit after its stop signal before everything is killed.
    #[arg(long, value_name = "DURATION", default_value = "20s", env = "LAMEDUCK_DRAIN_TIMEOUT", value_parser = duration::parse)]
    pub drain_timeout: Duration,

    /// The signal that asks the app to stop gracefully [default: TERM, after --rewrite]; QUIT for nginx.
    #[arg(long, value_name = "SIGNAL", env = "LAMEDUCK_STOP_SIGNAL")]
    pub stop_signal: Option<SignalArg>,

    /// What /readyz answers during the shutdown delay.
    #[arg(
        long,
        value_name = "WHEN",
        default_value = "fail",
        env = "LAMEDUCK_READINESS_DURING_DELAY"
    )]
    pub readiness_during_delay: ReadinessDuringDelay,

    /// The pod's terminationGracePeriodSeconds: the drain is fitted inside it, 2s before the kubelet's SIGKILL.
    #[arg(long, value_name = "DURATION", env = "LAMEDUCK_GRACE_PERIOD", value_parser = duration::parse)]
    pub grace_period: Option<Duration>,

    /// Take the pod's traffic on LISTEN, forward it to the app on APP, and move clients off gracefully in the drain, e.g. 0.0.0.0:80=127.0.0.1:8080 (repeatable).
    #[arg(
        long = "proxy",
        value_name = "LISTEN=APP",
        env = "LAMEDUCK_PROXY",
        value_delimiter = ','
    )]
    pub proxy: Vec<Route>,

    /// With --proxy: the header that passes the client's address on to the app.
    #[arg(
        long,
        value_name = "HEADER",
        default_value = "none",
        env = "LAMEDUCK_PROXY_FORWARDED"
    )]
    pub proxy_forwarded: Forwarded,

    /// With --quiet-period or --proxy: never send the stop signal sooner than this after the drain began.
    #[arg(long, value_name = "DURATION", default_value = "1s", env = "LAMEDUCK_MIN_DELAY", value_parser = duration::parse)]
    pub min_delay: Duration,

    /// Send the app this signal when the drain starts, before its stop signal (e.g. USR1 for an app that then stops keep-alive).
    #[arg(long, value_name = "SIGNAL", env = "LAMEDUCK_DRAIN_SIGNAL")]
    pub drain_signal: Option<SignalArg>,

    /// Require `Authorization: Bearer TOKEN` on /prestop (best from a Secret, via the env).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "LAMEDUCK_PRESTOP_TOKEN",
        hide_env_values = true
    )]
    pub prestop_token: Option<Token>,

    /// Let /prestop start a drain without a token: anyone who reaches the port can (logged at start).
    #[arg(
        long,
        env = "LAMEDUCK_PRESTOP_INSECURE",
        conflicts_with = "prestop_token"
    )]
    pub prestop_insecure: bool,

    #[command(flatten)]
    pub prestop_socket: PrestopSocket,
}

impl QuietArgs {
    /// Validates the adaptive delay flags against the shutdown delay.
    pub fn validate(&self, config: &DrainConfig) -> Result<Option<QuietConfig>, String> {
        let Some(period) = self.quiet_period else {
            return Ok(None);
        };
        check_min_delay(config.min_delay, config.shutdown_delay)?;
        if period.is_zero() {
            return Err("--quiet-period must be longer than 0".into());
        }
        Ok(Some(QuietConfig {
            period,
            min_delay: config.min_delay,
            app_ports: self.app_ports.clone(),
        }))
    }
}

/// The quiet period's end of the delay lies between these two. (The proxy's needs no check: a
/// shutdown delay shorter than the minimum simply ends first.)
fn check_min_delay(min_delay: Duration, shutdown_delay: Duration) -> Result<(), String> {
    if min_delay > shutdown_delay {
        return Err(format!(
            "--min-delay {} is longer than --shutdown-delay {}, which bounds the adaptive delay",
            duration::format(min_delay),
            duration::format(shutdown_delay)
        ));
    }
    Ok(())
}

/// Logging flags.
#[derive(Args, Debug)]
pub struct LogArgs {
    /// Log format: human-readable text or one JSON object per line.
    #[arg(
        long,
        value_name = "FORMAT",
        default_value = "text",
        env = "LAMEDUCK_LOG_FORMAT"
    )]
    pub log_format: LogFormat,

    /// The least severe log level written [default: info, or warn when stderr is a terminal].
    #[arg(long, value_name = "LEVEL", env = "LAMEDUCK_LOG_LEVEL")]
    pub log_level: Option<LogLevel>,
}

impl ValueEnum for ReadinessDuringDelay {
    fn value_variants<'a>() -> &'a [Self] {
        &[ReadinessDuringDelay::Fail, ReadinessDuringDelay::Pass]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use clap::builder::PossibleValue;
        Some(match self {
            ReadinessDuringDelay::Fail => PossibleValue::new("fail").help(
                "Fail at once: load balancers that health-check the pod stop sending traffic",
            ),
            ReadinessDuringDelay::Pass => PossibleValue::new("pass").help(
                "Keep passing until the stop signal: kube-proxy may still fall back to this endpoint",
            ),
        })
    }
}

impl ValueEnum for Forwarded {
    fn value_variants<'a>() -> &'a [Self] {
        &[
            Forwarded::None,
            Forwarded::XForwardedFor,
            Forwarded::Forwarded,
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        use clap::builder::PossibleValue;
        Some(match self {
            Forwarded::None => {
                PossibleValue::new("none").help("The app sees lameduck's loopback address")
            }
            Forwarded::XForwardedFor => {
                PossibleValue::new("x-forwarded-for").help("X-Forwarded-For: CLIENT")
            }
            Forwarded::Forwarded => {
                PossibleValue::new("forwarded").help("Forwarded: for=CLIENT (RFC 7239)")
            }
        })
    }
}

/// Log output format.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Log verbosity.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// Only errors.
    Error,
    /// Errors and warnings.
    Warn,
    /// Phase changes and what was signalled or killed.
    Info,
    /// Every signal and reaped process.
    Debug,
    /// Everything.
    Trace,
}

impl DrainArgs {
    /// Validates the drain flags. `rewrites` supplies the default stop signal (TERM rewritten).
    pub fn validate(&self, rewrites: &Rewrites) -> Result<DrainConfig, String> {
        let stop_signal = self
            .stop_signal
            .map_or_else(|| rewrites.apply(Signal::SIGTERM), |s| s.0);
        let mut kill_budget = None;
        if let Some(grace) = self.grace_period {
            let budget = grace.checked_sub(GRACE_MARGIN).unwrap_or_default();
            if self.shutdown_delay >= budget {
                return Err(format!(
                    "--shutdown-delay {} does not fit in --grace-period {} with the {} margin lameduck keeps before the kubelet's SIGKILL",
                    duration::format(self.shutdown_delay),
                    duration::format(grace),
                    duration::format(GRACE_MARGIN)
                ));
            }
            if self.shutdown_delay + self.drain_timeout > budget {
                tracing::warn!(
                    drain_timeout = %duration::format(self.drain_timeout),
                    grace_period = %duration::format(grace),
                    final_kill_after = %duration::format(budget),
                    "shutdown delay + drain timeout exceed the grace period less a 2s margin; the drain is cut short there, so lameduck, not the kubelet, makes the final kill"
                );
            }
            kill_budget = Some(budget);
        }
        Ok(DrainConfig {
            listen: self.listen.addr,
            shutdown_delay: self.shutdown_delay,
            drain_timeout: self.drain_timeout,
            stop_signal,
            readiness_during_delay: self.readiness_during_delay,
            kill_budget,
            http_prestop: match (&self.prestop_token, self.prestop_insecure) {
                (Some(token), _) => HttpPrestop::Token(token.clone()),
                (None, true) => HttpPrestop::Anyone,
                (None, false) => HttpPrestop::Refused,
            },
            prestop_socket: self.prestop_socket.name.clone(),
            proxy: self.proxy.clone(),
            proxy_forwarded: self.proxy_forwarded,
            min_delay: self.min_delay,
            drain_signal: self.drain_signal.map(|s| s.0),
        })
    }
}

/// Parses the command line; on a usage error prints one line and exits 2 (help and version
/// print in full and exit 0).
pub fn parse() -> Cli {
    match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            use clap::error::ErrorKind;
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) {
                let _ = err.print();
                std::process::exit(0);
            }
            let rendered = err.render().to_string();
            let mut lines = rendered
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty());
            let mut first = lines.next().unwrap_or("invalid arguments").to_owned();
            // "the following required arguments were not provided:" names them on the next line.
            if first.ends_with(':')
                && let Some(next) = lines.next()
            {
                first = format!("{first} {next}");
            }
            let first = first.strip_prefix("error: ").unwrap_or(&first);
            crate::exit::say(
                std::io::stderr(),
                format_args!("lameduck: {first} (see 'lameduck --help')"),
            );
            std::process::exit(crate::exit::EXIT_USAGE);
        }
    }
}

/// Parses a command line as lameduck would, with `env` as its only environment instead of the
/// process's: how the kubectl plugin and the tests read a container's flags and `LAMEDUCK_*`
/// variables through this very definition. A flag beats its variable (the last one of a name
/// counts), which beats the default; a variable of a switch is `true` or `false`.
pub fn parse_from<S: AsRef<str>>(argv: &[S], env: &[(S, S)]) -> Result<Cli, clap::Error> {
    use clap::CommandFactory;

    let argv: Vec<&str> = argv.iter().map(AsRef::as_ref).collect();
    let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (n.as_ref(), v.as_ref())).collect();
    DEFINITIONS.with_borrow_mut(|definitions| {
        let (with_env, without) = definitions.get_or_insert_with(|| {
            let with_env = Cli::command();
            let without = without_env(with_env.clone());
            (with_env, without)
        });
        parse_with(with_env, without, &argv, &env)
    })
}

thread_local! {
    /// The definition, and the same without its variables, built once per thread: the plugin
    /// parses the flags of every lameduck container it reads, and building clap's definition
    /// costs more than a parse. clap's `try_get_matches_from_mut` is made for reuse.
    static DEFINITIONS: std::cell::RefCell<Option<(clap::Command, clap::Command)>> =
        const { std::cell::RefCell::new(None) };
}

/// [`parse_from`] with the definitions at hand: one pass over the command line, and a second
/// with the flags of the variables that apply, when any do.
fn parse_with(
    with_env: &clap::Command,
    command: &mut clap::Command,
    argv: &[&str],
    env: &[(&str, &str)],
) -> Result<Cli, clap::Error> {
    use clap::FromArgMatches;
    use clap::builder::TypedValueParser;

    // Which arguments the command line gives, so that their variables are ignored.
    let line = command.try_get_matches_from_mut(argv.iter().copied())?;
    let mode = argv
        .get(1)
        .filter(|word| with_env.find_subcommand(word).is_some());
    let (definition, matches) = match mode {
        Some(word) => (
            with_env.find_subcommand(word).unwrap_or(with_env),
            line.subcommand_matches(word).unwrap_or(&line),
        ),
        None => (with_env, &line),
    };
    let mut from_env = Vec::new();
    for arg in definition.get_arguments() {
        let (Some(variable), Some(long)) = (arg.get_env(), arg.get_long()) else {
            continue;
        };
        let Some((_, value)) = env
            .iter()
            .rev()
            .find(|(name, _)| std::ffi::OsStr::new(name) == variable)
        else {
            continue;
        };
        let id = arg.get_id().as_str();
        if matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine) {
            continue;
        }
        if arg.get_action().takes_values() {
            from_env.push(format!("--{long}={value}"));
        } else if clap::builder::BoolValueParser::new().parse_ref(
            definition,
            None,
            std::ffi::OsStr::new(value),
        )? {
            from_env.push(format!("--{long}"));
        }
    }
    // With no variable to add, the command line as read is the whole answer.
    if from_env.is_empty() {
        return Cli::from_arg_matches(&line);
    }
    // The variables' flags go right after the mode word, before the app's command.
    let at = 1 + usize::from(mode.is_some());
    let mut full: Vec<&str> = argv.get(..at).unwrap_or(argv).to_vec();
    full.extend(from_env.iter().map(String::as_str));
    full.extend(argv.get(at..).unwrap_or_default());
    let matches = command.try_get_matches_from_mut(full)?;
    Cli::from_arg_matches(&matches)
}

/// The definition with no argument reading the process's environment.
fn without_env(command: clap::Command) -> clap::Command {
    let modes: Vec<String> = command
        .get_subcommands()
        .map(|mode| mode.get_name().to_owned())
        .collect();
    let mut command = command.mut_args(|arg| arg.env(None));
    for mode in modes {
        command = command.mut_subcommand(mode, |mode| mode.mut_args(|arg| arg.env(None)));
    }
    command
}
