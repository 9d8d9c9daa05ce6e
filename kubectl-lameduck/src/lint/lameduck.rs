//! lameduck as a manifest shows it: which containers run it and in which role (wrapper,
//! sidecar, installer), and the settings its flags and `LAMEDUCK_*` variables give it,
//! resolved as clap would (a flag beats its variable, which beats the default).

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use clap::ValueEnum;
use nix::sys::signal::Signal;

use super::manifest::{Container, Path};
use super::yaml::Node;
use ::lameduck::cli::{LogFormat, LogLevel, ReadinessDuringDelay, Token};
use ::lameduck::duration;
use ::lameduck::readiness::ReadyCheck;
use ::lameduck::signals::{Rewrite, Rewrites, SignalArg};

/// How a container runs lameduck.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// `lameduck [FLAGS] -- app`: lameduck is the container's init and drains its app.
    Wrapper,
    /// `lameduck sidecar [FLAGS]`: drains the pod's other containers through their preStop hooks.
    Sidecar,
    /// `lameduck install DIR`: copies itself into a shared volume for the app containers.
    Install {
        /// Where it installs itself.
        dir: String,
    },
}

/// One setting as the manifest gives it.
#[derive(Clone, Debug)]
pub struct Setting<T> {
    /// The value, or `None` when the manifest leaves it to run time (`valueFrom`, `$(VAR)`) or
    /// it does not parse (reported as a problem).
    pub value: Option<T>,
    /// Where it is set, or where a flag would go when it is the default.
    pub path: Path,
}

/// lameduck's settings in one container.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `--listen`.
    pub listen: Setting<SocketAddr>,
    /// `--shutdown-delay`.
    pub shutdown_delay: Setting<Duration>,
    /// `--drain-timeout`.
    pub drain_timeout: Setting<Duration>,
    /// `--stop-signal`, or TERM after `--rewrite` when not given.
    pub stop_signal: Setting<Signal>,
    /// `--readiness-during-delay`.
    pub readiness_during_delay: Setting<ReadinessDuringDelay>,
    /// `--grace-period`, when given.
    pub grace_period: Option<Setting<Duration>>,
    /// Whether `--prestop-token` is set (its value usually comes from a Secret).
    pub prestop_token: bool,
    /// `--pid-file`, when given.
    pub pid_file: Option<Setting<String>>,
    /// Whether `--process-name` is given.
    pub process_name: bool,
}

impl Settings {
    /// The port of the endpoints, when known.
    pub fn port(&self) -> Option<i64> {
        self.listen.value.map(|addr| i64::from(addr.port()))
    }
}

/// lameduck in one container.
#[derive(Clone, Debug)]
pub struct Lameduck {
    /// How it runs.
    pub role: Role,
    /// The executable as the argv names it (`/shared/lameduck`).
    pub program: String,
    /// Where its argv is written (`command`, or `args` when the image runs lameduck).
    pub argv_path: Path,
    /// Its settings (the defaults for `install`).
    pub settings: Settings,
    /// What in its flags or variables lameduck would refuse at start: `(where, why)`.
    pub problems: Vec<(Path, String)>,
}

/// What a flag's value must look like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expects {
    Duration,
    Signal,
    Address,
    ReadinessMode,
    Rewrite,
    ReadyCheck,
    Port,
    LogFormat,
    LogLevel,
    Token,
    Text,
    /// A flag without a value.
    Switch,
}

/// Which of lameduck's command lines take a flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Modes {
    Both,
    WrapperOnly,
    SidecarOnly,
}

/// One lameduck flag; its variable is `LAMEDUCK_` and the name in upper snake case.
struct Flag {
    name: &'static str,
    expects: Expects,
    modes: Modes,
}

const fn flag(name: &'static str, expects: Expects, modes: Modes) -> Flag {
    Flag {
        name,
        expects,
        modes,
    }
}

/// Every flag lameduck takes (a unit test checks this against the clap definitions).
const FLAGS: &[Flag] = &[
    flag("listen", Expects::Address, Modes::Both),
    flag("shutdown-delay", Expects::Duration, Modes::Both),
    flag("drain-timeout", Expects::Duration, Modes::Both),
    flag("stop-signal", Expects::Signal, Modes::Both),
    flag(
        "readiness-during-delay",
        Expects::ReadinessMode,
        Modes::Both,
    ),
    flag("grace-period", Expects::Duration, Modes::Both),
    flag("prestop-token", Expects::Token, Modes::Both),
    flag("log-format", Expects::LogFormat, Modes::Both),
    flag("log-level", Expects::LogLevel, Modes::Both),
    flag("group", Expects::Switch, Modes::WrapperOnly),
    flag("rewrite", Expects::Rewrite, Modes::WrapperOnly),
    flag("ready-check", Expects::ReadyCheck, Modes::WrapperOnly),
    flag("ready-interval", Expects::Duration, Modes::WrapperOnly),
    flag("quiet-period", Expects::Duration, Modes::WrapperOnly),
    flag("min-delay", Expects::Duration, Modes::WrapperOnly),
    flag("app-port", Expects::Port, Modes::WrapperOnly),
    flag("pid-file", Expects::Text, Modes::SidecarOnly),
    flag("process-name", Expects::Text, Modes::SidecarOnly),
];

/// Flags that exclude each other.
const CONFLICTS: &[(&str, &str)] = &[("pid-file", "process-name")];

impl Flag {
    /// Whether `role`'s command line takes this flag.
    fn taken_by(&self, role: &Role) -> bool {
        match self.modes {
            Modes::Both => true,
            Modes::WrapperOnly => *role == Role::Wrapper,
            Modes::SidecarOnly => *role == Role::Sidecar,
        }
    }

    /// Whether one value holds a comma-separated list, on the command line and in the variable.
    fn delimited(&self) -> bool {
        matches!(self.expects, Expects::Rewrite | Expects::Port)
    }

    fn env(&self) -> String {
        format!(
            "LAMEDUCK_{}",
            self.name.to_ascii_uppercase().replace('-', "_")
        )
    }

    /// Checks one value the way lameduck's own parsers will.
    fn check(&self, text: &str) -> Result<(), String> {
        match self.expects {
            Expects::Duration => duration::parse(text).map(drop),
            Expects::Signal => SignalArg::from_str(text).map(drop),
            Expects::Address => SocketAddr::from_str(text)
                .map(drop)
                .map_err(|_| format!("'{text}' is not an address like 0.0.0.0:8099")),
            Expects::ReadinessMode => ReadinessDuringDelay::from_str(text, false).map(drop),
            Expects::Rewrite => Rewrite::from_str(text).map(drop),
            Expects::ReadyCheck => ReadyCheck::from_str(text).map(drop),
            Expects::Port => text
                .parse::<u16>()
                .map(drop)
                .map_err(|_| format!("'{text}' is not a port number")),
            Expects::Token => Token::from_str(text).map(drop),
            Expects::LogFormat => LogFormat::from_str(text, false).map(drop),
            Expects::LogLevel => LogLevel::from_str(text, false).map(drop),
            Expects::Text | Expects::Switch => Ok(()),
        }
    }
}

/// One word of a container's argv and where it is written.
struct Arg<'a> {
    text: &'a str,
    path: Path,
}

/// A flag's value as written: known text, or decided at run time.
#[derive(Clone, Debug)]
enum Raw<'a> {
    Text(&'a str),
    RunTime,
}

/// Reads lameduck from a container, when the container runs it.
pub fn read(container: &Container<'_>) -> Option<Lameduck> {
    let argv = argv(container)?;
    let program = argv.first().map_or("", |arg| arg.text).to_owned();
    let (role, flags_from) = match argv.get(1).map(|arg| arg.text) {
        Some("sidecar") => (Role::Sidecar, 2),
        Some("install") => (
            Role::Install {
                dir: argv.get(2).map_or("", |arg| arg.text).to_owned(),
            },
            argv.len(),
        ),
        // `lameduck lint` in a container checks manifests; it drains nothing.
        Some("lint") => return None,
        _ => (Role::Wrapper, 1),
    };
    // Where a flag that is not given would be added.
    let field = if container.node.get("command").is_some() {
        "command"
    } else {
        "args"
    };
    let command_path = container.path.key(field);
    let mut problems = Vec::new();
    if let Role::Install { dir } = &role
        && dir.is_empty()
    {
        problems.push((command_path.clone(), "install needs a DIR".to_owned()));
    }
    let flags = read_flags(
        argv.get(flags_from..).unwrap_or_default(),
        &role,
        &mut problems,
        &command_path,
    );
    let env = read_env(container);
    let mut resolver = Resolver {
        role: role.clone(),
        flags,
        env,
        default_path: command_path,
        problems,
    };
    let settings = resolver.settings();
    Some(Lameduck {
        role,
        program,
        argv_path: resolver.default_path,
        settings,
        problems: resolver.problems,
    })
}

/// The container's argv (`command` then `args`) when its program is lameduck: an executable
/// named `lameduck`, or an image named `lameduck` run with `args` only.
fn argv<'a>(container: &Container<'a>) -> Option<Vec<Arg<'a>>> {
    let words = |field: &str| -> Vec<Arg<'a>> {
        let items = container
            .node
            .get(field)
            .map(Node::items)
            .unwrap_or_default();
        items
            .iter()
            .enumerate()
            .filter_map(|(index, item)| {
                Some(Arg {
                    text: item.text()?,
                    path: container.path.key(field).index(index),
                })
            })
            .collect()
    };
    let mut argv = words("command");
    let has_command = !argv.is_empty();
    argv.extend(words("args"));
    if !has_command && !argv.is_empty() && container.image_name() == "lameduck" {
        // The image's entrypoint is lameduck; `args` holds its arguments (without them the
        // image's own CMD applies, which the manifest does not show).
        argv.insert(
            0,
            Arg {
                text: "lameduck",
                path: container.path.key("image"),
            },
        );
    }
    let program = argv.first()?.text;
    (program.rsplit('/').next() == Some("lameduck")).then_some(argv)
}

/// The flags on the command line, in order, each with where its value is.
fn read_flags<'a>(
    args: &[Arg<'a>],
    role: &Role,
    problems: &mut Vec<(Path, String)>,
    command_path: &Path,
) -> Vec<(&'static Flag, Raw<'a>, Path)> {
    let mut flags = Vec::new();
    let mut words = args.iter();
    let mut app_command = false;
    while let Some(arg) = words.next() {
        if arg.text == "--" {
            app_command = words.next().is_some();
            break;
        }
        let Some(spec) = arg.text.strip_prefix("--") else {
            if *role == Role::Wrapper && !(arg.text.starts_with('-') && arg.text.len() > 1) {
                // The first word that is not a flag starts the app's command.
                app_command = true;
                break;
            }
            problems.push((
                arg.path.clone(),
                format!("unexpected argument '{}'", arg.text),
            ));
            continue;
        };
        let (name, inline) = match spec.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (spec, None),
        };
        let Some(flag) = FLAGS.iter().find(|f| f.name == name && f.taken_by(role)) else {
            let known = FLAGS.iter().find(|f| f.name == name);
            let reason = match known.map(|f| f.modes) {
                Some(Modes::SidecarOnly) => {
                    format!("--{name} is a flag of `lameduck sidecar` only")
                }
                Some(_) => format!("--{name} is not a flag of `lameduck sidecar`"),
                None => format!("unknown flag --{name}"),
            };
            problems.push((arg.path.clone(), reason));
            continue;
        };
        if flag.expects == Expects::Switch {
            if inline.is_some() {
                problems.push((arg.path.clone(), format!("--{name} takes no value")));
            }
            flags.push((flag, Raw::Text(""), arg.path.clone()));
            continue;
        }
        let (value, path) = match inline {
            Some(value) => (Some(value), arg.path.clone()),
            None => match words.next() {
                Some(next) => (Some(next.text), next.path.clone()),
                None => (None, arg.path.clone()),
            },
        };
        match value {
            Some(value) => flags.push((flag, raw(value), path)),
            None => problems.push((path, format!("--{name} needs a value"))),
        }
    }
    for (a, b) in CONFLICTS {
        let given = |name: &str| flags.iter().any(|(f, _, _)| f.name == name);
        if given(a) && given(b) {
            problems.push((
                command_path.clone(),
                format!("--{a} and --{b} exclude each other"),
            ));
        }
    }
    if *role == Role::Wrapper && !app_command {
        problems.push((
            command_path.clone(),
            "no app command: write it after `--`".to_owned(),
        ));
    }
    flags
}

/// A value Kubernetes substitutes at run time (`$(VAR)`) is not known here.
fn raw(text: &str) -> Raw<'_> {
    if text.contains("$(") {
        Raw::RunTime
    } else {
        Raw::Text(text)
    }
}

/// The `LAMEDUCK_*` variables in the container's `env`, with where each is set.
fn read_env<'a>(container: &Container<'a>) -> Vec<(&'a str, Raw<'a>, Path)> {
    let env = container
        .node
        .get("env")
        .map(Node::items)
        .unwrap_or_default();
    env.iter()
        .enumerate()
        .filter_map(|(index, var)| {
            let name = var.get("name")?.text()?;
            if !name.starts_with("LAMEDUCK_") {
                return None;
            }
            let path = container.path.key("env").index(index);
            let value = match var.get("value") {
                Some(value) => raw(value.text().unwrap_or_default()),
                None if var.get("valueFrom").is_some() => Raw::RunTime,
                // An env entry with neither is the empty string.
                None => Raw::Text(""),
            };
            Some((name, value, path.key("value")))
        })
        .collect()
}

/// Resolves each setting from the flags, then the variables, then the default.
struct Resolver<'a> {
    role: Role,
    flags: Vec<(&'static Flag, Raw<'a>, Path)>,
    env: Vec<(&'a str, Raw<'a>, Path)>,
    default_path: Path,
    problems: Vec<(Path, String)>,
}

impl<'a> Resolver<'a> {
    fn settings(&mut self) -> Settings {
        // Every value is checked, also of flags no rule reads, so a typo is caught.
        for flag in FLAGS {
            if flag.taken_by(&self.role) {
                let _ = self.values(flag);
            }
        }
        let rewrites = self.rewrites();
        let stop_signal = match self.given("stop-signal") {
            Some((Raw::Text(text), path)) => Setting {
                value: SignalArg::from_str(text).ok().map(|s| s.0),
                path,
            },
            Some((Raw::RunTime, path)) => Setting { value: None, path },
            None => Setting {
                value: rewrites.map(|r| r.apply(Signal::SIGTERM)),
                path: self.default_path.clone(),
            },
        };
        Settings {
            listen: self.setting("listen", "0.0.0.0:8099", |t| SocketAddr::from_str(t).ok()),
            shutdown_delay: self.setting("shutdown-delay", "5s", |t| duration::parse(t).ok()),
            drain_timeout: self.setting("drain-timeout", "20s", |t| duration::parse(t).ok()),
            stop_signal,
            readiness_during_delay: self.setting("readiness-during-delay", "fail", |t| {
                ReadinessDuringDelay::from_str(t, false).ok()
            }),
            grace_period: self.given("grace-period").map(|(raw, path)| Setting {
                value: match raw {
                    Raw::Text(text) => duration::parse(text).ok(),
                    Raw::RunTime => None,
                },
                path,
            }),
            prestop_token: self.given("prestop-token").is_some(),
            pid_file: self.given("pid-file").map(|(raw, path)| Setting {
                value: match raw {
                    Raw::Text(text) => Some(text.to_owned()),
                    Raw::RunTime => None,
                },
                path,
            }),
            process_name: self.given("process-name").is_some(),
        }
    }

    /// The values of a flag in effect: every occurrence on the command line, else its
    /// variable (split at commas for `--rewrite`), each checked and reported when wrong.
    fn values(&mut self, flag: &Flag) -> Vec<(Raw<'a>, Path)> {
        let on_line: Vec<_> = self
            .flags
            .iter()
            .filter(|(f, ..)| f.name == flag.name)
            .map(|(_, raw, path)| (raw.clone(), path.clone()))
            .collect();
        let env = flag.env();
        let label = if on_line.is_empty() {
            env.clone()
        } else {
            format!("--{}", flag.name)
        };
        let values = if on_line.is_empty() {
            self.env
                .iter()
                .rev()
                .find(|(name, ..)| *name == env)
                .map(|(_, raw, path)| vec![(raw.clone(), path.clone())])
                .unwrap_or_default()
        } else {
            on_line
        };
        let values: Vec<_> = values
            .into_iter()
            .flat_map(|(raw, path)| match raw {
                Raw::Text(text) if flag.delimited() => text
                    .split(',')
                    .map(|part| (Raw::Text(part), path.clone()))
                    .collect(),
                _ => vec![(raw, path)],
            })
            .collect();
        for (raw, path) in &values {
            if let Raw::Text(text) = raw
                && let Err(reason) = flag.check(text)
            {
                let problem = (path.clone(), format!("{label}: {reason}"));
                if !self.problems.contains(&problem) {
                    self.problems.push(problem);
                }
            }
        }
        values
    }

    /// The value in effect for a single-valued flag (the last one given wins), when given.
    fn given(&mut self, name: &str) -> Option<(Raw<'a>, Path)> {
        let flag = FLAGS
            .iter()
            .find(|f| f.name == name && f.taken_by(&self.role))?;
        self.values(flag).pop()
    }

    /// A setting with a default, parsed by `parse`.
    fn setting<T>(
        &mut self,
        name: &str,
        default: &str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Setting<T> {
        match self.given(name) {
            Some((Raw::Text(text), path)) => Setting {
                value: parse(text),
                path,
            },
            Some((Raw::RunTime, path)) => Setting { value: None, path },
            None => Setting {
                value: parse(default),
                path: self.default_path.clone(),
            },
        }
    }

    /// The rewrite table, or `None` when part of it is only known at run time or wrong.
    fn rewrites(&mut self) -> Option<Rewrites> {
        let Some(flag) = FLAGS
            .iter()
            .find(|f| f.name == "rewrite" && f.taken_by(&self.role))
        else {
            return Some(Rewrites::default());
        };
        let rules = self
            .values(flag)
            .into_iter()
            .map(|(raw, _)| match raw {
                Raw::Text(text) => Rewrite::from_str(text).ok(),
                Raw::RunTime => None,
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Rewrites::new(&rules))
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::lint::manifest::{Kind, Object};
    use crate::lint::yaml;

    fn lameduck(container: &str) -> Option<Lameduck> {
        let text = format!("{{kind: Pod, spec: {{containers: [{container}]}}}}");
        let docs = yaml::parse(&text).unwrap();
        let objects = Object::all_in("t", &docs[0]);
        assert_eq!(objects[0].kind, Kind::Pod);
        let pod = objects[0].pod().unwrap();
        read(&pod.containers[0])
    }

    #[test]
    fn detects_the_three_roles() {
        let wrapper = lameduck("{command: [/shared/lameduck, --, nginx]}").unwrap();
        assert_eq!(wrapper.role, Role::Wrapper);
        let sidecar = lameduck("{image: ghcr.io/x/lameduck:1, args: [sidecar]}").unwrap();
        assert_eq!(sidecar.role, Role::Sidecar);
        let install = lameduck("{command: [lameduck, install, /shared]}").unwrap();
        assert_eq!(
            install.role,
            Role::Install {
                dir: "/shared".into()
            }
        );
        assert!(lameduck("{command: [nginx, -g, 'daemon off;']}").is_none());
        assert!(lameduck("{command: [/bin/notlameduck, --, x]}").is_none());
    }

    #[test]
    fn flags_beat_variables_which_beat_defaults() {
        let ld = lameduck(
            "{command: [/lameduck, --shutdown-delay=7s, --drain-timeout, 1m, --, app],
              env: [{name: LAMEDUCK_SHUTDOWN_DELAY, value: 9s}, {name: LAMEDUCK_STOP_SIGNAL, value: QUIT},
                    {name: LAMEDUCK_PRESTOP_TOKEN, valueFrom: {secretKeyRef: {name: s, key: k}}}]}",
        )
        .unwrap();
        let s = &ld.settings;
        assert!(ld.problems.is_empty(), "{:?}", ld.problems);
        assert_eq!(s.shutdown_delay.value, Some(Duration::from_secs(7)));
        assert_eq!(
            s.shutdown_delay.path.to_string(),
            "spec.containers[0].command[1]"
        );
        assert_eq!(s.drain_timeout.value, Some(Duration::from_secs(60)));
        assert_eq!(
            s.drain_timeout.path.to_string(),
            "spec.containers[0].command[3]"
        );
        assert_eq!(s.stop_signal.value, Some(Signal::SIGQUIT));
        assert_eq!(
            s.stop_signal.path.to_string(),
            "spec.containers[0].env[1].value"
        );
        assert_eq!(s.port(), Some(8099));
        assert!(s.prestop_token);
    }

    #[test]
    fn a_rewrite_of_term_changes_the_default_stop_signal() {
        let ld = lameduck("{command: [lameduck, --rewrite, 'TERM:QUIT', --, nginx]}").unwrap();
        assert_eq!(ld.settings.stop_signal.value, Some(Signal::SIGQUIT));
    }

    #[test]
    fn bad_values_and_unknown_flags_are_problems_with_their_path() {
        let ld = lameduck(
            "{command: [lameduck], args: [--shutdown-delay, 5, --bogus, --pid-file=/x, --, app],
              env: [{name: LAMEDUCK_STOP_SIGNAL, value: NOPE}]}",
        )
        .unwrap();
        let paths: Vec<String> = ld.problems.iter().map(|(p, _)| p.to_string()).collect();
        assert!(
            paths.contains(&"spec.containers[0].args[1]".to_owned()),
            "{paths:?}"
        );
        assert!(
            paths.contains(&"spec.containers[0].args[2]".to_owned()),
            "{paths:?}"
        );
        assert!(
            paths.contains(&"spec.containers[0].args[3]".to_owned()),
            "{paths:?}"
        );
        assert!(
            paths.contains(&"spec.containers[0].env[0].value".to_owned()),
            "{paths:?}"
        );
        assert_eq!(ld.settings.shutdown_delay.value, None);
        assert_eq!(ld.settings.stop_signal.value, None);
    }

    #[test]
    fn run_time_values_are_unknown_not_wrong() {
        let ld = lameduck("{command: [lameduck, '--shutdown-delay=$(DELAY)', --, app]}").unwrap();
        assert!(ld.problems.is_empty());
        assert_eq!(ld.settings.shutdown_delay.value, None);
    }

    /// The flag table must say what clap says: every flag of each command line, its
    /// variable, whether it takes a value, and which flags exclude each other. Otherwise lint
    /// would call a valid manifest wrong, or miss a flag lameduck refuses.
    #[test]
    fn the_flag_table_matches_the_command_line() {
        let cli = ::lameduck::cli::Cli::command();
        let sidecar = cli
            .find_subcommand("sidecar")
            .expect("a sidecar mode")
            .clone();
        for (role, command) in [(Role::Wrapper, &cli), (Role::Sidecar, &sidecar)] {
            let longs: Vec<&str> = command
                .get_arguments()
                .filter_map(|a| a.get_long())
                .collect();
            for arg in command.get_arguments() {
                let Some(long) = arg.get_long() else {
                    continue;
                };
                if matches!(long, "help" | "version") {
                    continue;
                }
                let flag = FLAGS
                    .iter()
                    .find(|f| f.name == long && f.taken_by(&role))
                    .unwrap_or_else(|| panic!("--{long} of {role:?} is missing from FLAGS"));
                let env = arg.get_env().and_then(|e| e.to_str());
                assert_eq!(env, Some(flag.env().as_str()), "--{long}");
                let delimiter = arg.get_value_delimiter();
                assert_eq!(delimiter == Some(','), flag.delimited(), "--{long}");
                let takes_value = arg.get_action().takes_values();
                assert_eq!(takes_value, flag.expects != Expects::Switch, "--{long}");
                for other in command.get_arg_conflicts_with(arg) {
                    let other = other.get_long().unwrap_or_default();
                    assert!(
                        CONFLICTS.contains(&(long, other)) || CONFLICTS.contains(&(other, long)),
                        "--{long} and --{other} conflict in clap but not in CONFLICTS"
                    );
                }
            }
            for flag in FLAGS.iter().filter(|f| f.taken_by(&role)) {
                assert!(
                    longs.contains(&flag.name),
                    "--{} is in FLAGS for {role:?} but not on its command line",
                    flag.name
                );
            }
        }
    }
}
