//! lameduck as a manifest shows it: which containers run it and in which role (wrapper,
//! sidecar, installer), and the settings its flags and `LAMEDUCK_*` variables give it. Every
//! flag, variable and value is read through the init's own clap definition
//! (`lameduck::cli`), so the plugin accepts exactly what lameduck accepts, and each command
//! line once per pod: every check reads the result ([`read_pod`]).

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use clap::CommandFactory;
use nix::sys::signal::Signal;

use super::manifest::{Container, Path, Pod};
use super::yaml::Node;
use ::lameduck::cli::{self, Cli, DrainArgs, Mode, PrestopArgs, PrestopSocket};
use ::lameduck::settings::{ReadinessDuringDelay, Route};
use ::lameduck::signals::Rewrites;

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
    /// Whether `--prestop-insecure` is set: /prestop accepts calls without a token.
    pub prestop_insecure: bool,
    /// `--pid-file`, when given.
    pub pid_file: Option<Setting<String>>,
    /// Whether `--process-name` is given.
    pub process_name: bool,
    /// `--proxy`'s routes, when every value is known here (else none).
    pub proxy: Vec<Route>,
    /// The hook socket it listens on, unknown when a value is, or the port is picked at start.
    pub prestop_socket: Setting<Socket>,
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
    /// The wrapped app's argv (the words after lameduck's flags); empty in other roles.
    pub app: Vec<String>,
}

/// What one container runs of lameduck, each of its command lines read once.
#[derive(Debug)]
pub struct Read<'p, 'a> {
    /// The container.
    pub container: &'p Container<'a>,
    /// The lameduck it runs, when it runs one.
    pub lameduck: Option<Lameduck>,
    /// Its exec preStop hook, when that runs `lameduck prestop`.
    pub hook: Option<Hook>,
}

/// Reads lameduck from every container of a pod, in the pod's order. The hooks of a pod that
/// runs no lameduck are not read: such a pod is not checked.
pub fn read_pod<'p, 'a>(pod: &'p Pod<'a>) -> Vec<Read<'p, 'a>> {
    let mut reads: Vec<Read<'p, 'a>> = pod
        .containers
        .iter()
        .map(|container| Read {
            container,
            lameduck: read(container),
            hook: None,
        })
        .collect();
    if reads.iter().any(|r| r.lameduck.is_some()) {
        for r in &mut reads {
            r.hook = read_hook(r.container);
        }
    }
    reads
}

/// One of lameduck's flags as its clap definition has it.
struct Flag {
    long: String,
    /// Its `LAMEDUCK_*` variable.
    env: Option<String>,
    /// Whether it takes a value (it is not a switch).
    takes_value: bool,
}

/// The flags of a command line of lameduck: the wrapper's, or those of a mode like `sidecar`;
/// read from its clap definition once (lint reads every lameduck container through them).
fn flags(mode: Option<&str>) -> &'static [Flag] {
    static ALL: OnceLock<Vec<(Option<String>, Vec<Flag>)>> = OnceLock::new();
    let all = ALL.get_or_init(|| {
        let command = Cli::command();
        let mut all = vec![(None, flags_of(&command))];
        all.extend(
            command
                .get_subcommands()
                .map(|mode| (Some(mode.get_name().to_owned()), flags_of(mode))),
        );
        all
    });
    all.iter()
        .find(|(name, _)| name.as_deref() == mode)
        .map_or(&[], |(_, flags)| flags.as_slice())
}

fn flags_of(command: &clap::Command) -> Vec<Flag> {
    command
        .get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long()?;
            (!matches!(long, "help" | "version")).then(|| Flag {
                long: long.to_owned(),
                env: arg
                    .get_env()
                    .and_then(|env| env.to_str())
                    .map(str::to_owned),
                takes_value: arg.get_action().takes_values(),
            })
        })
        .collect()
}

/// Which command line of lameduck a reader reads: a container's role, or the `lameduck
/// prestop` of an exec preStop hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    Wrapper,
    Sidecar,
    Install,
    Prestop,
}

impl Role {
    /// The command line this role runs.
    fn line(&self) -> Line {
        match self {
            Role::Wrapper => Line::Wrapper,
            Role::Sidecar => Line::Sidecar,
            Role::Install { .. } => Line::Install,
        }
    }
}

impl Line {
    /// The mode word of this command line.
    fn mode(self) -> Option<&'static str> {
        match self {
            Line::Wrapper => None,
            Line::Sidecar => Some("sidecar"),
            Line::Install => Some("install"),
            Line::Prestop => Some("prestop"),
        }
    }

    /// The shortest command line of this kind that lameduck accepts.
    fn argv(self) -> Vec<String> {
        let mut argv = vec!["lameduck".to_owned()];
        argv.extend(self.mode().map(str::to_owned));
        if self == Line::Install {
            argv.push("/dir".into());
        }
        argv
    }

    /// The app command that closes a wrapper's command line.
    fn app(self) -> &'static [&'static str] {
        match self {
            Line::Wrapper => &["--", "app"],
            _ => &[],
        }
    }

    /// Parses `words` (flags, each `--flag=value` or a switch) and `env` as lameduck would.
    fn parse(self, words: &[String], env: &[(String, String)]) -> Result<Cli, clap::Error> {
        let mut argv = self.argv();
        argv.extend(words.iter().cloned());
        argv.extend(self.app().iter().map(|&word| word.to_owned()));
        cli::parse_from(&argv, env)
    }

    /// What lameduck makes of this command line with no flag and no variable: parsed once,
    /// since every container that leaves a setting out needs it.
    fn defaults(self) -> Option<&'static Cli> {
        static DEFAULTS: [OnceLock<Option<Cli>>; 4] = [const { OnceLock::new() }; 4];
        let index = match self {
            Line::Wrapper => 0,
            Line::Sidecar => 1,
            Line::Install => 2,
            Line::Prestop => 3,
        };
        DEFAULTS[index]
            .get_or_init(|| self.parse(&[], &[]).ok())
            .as_ref()
    }
}

/// Why lameduck refuses a command line, in one line: the value parser's own words when a
/// value is wrong, else clap's first line.
fn reason(err: &clap::Error) -> String {
    if let Some(source) = std::error::Error::source(err) {
        return source.to_string();
    }
    let rendered = err.render().to_string();
    let first = rendered
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("invalid arguments");
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

/// One word of a container's argv and where it is written.
struct Arg<'a> {
    text: &'a str,
    path: Path,
}

/// A flag's value as written: known text, or decided at run time.
#[derive(Clone, Copy, Debug)]
enum Raw<'a> {
    Text(&'a str),
    RunTime,
}

/// Where a value comes from: the command line (as `--flag=value`) or a variable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Line,
    Env,
}

/// One value given to a flag, with where it is written and whether lameduck takes it.
struct Given<'a> {
    flag: usize,
    source: Source,
    raw: Raw<'a>,
    path: Path,
    accepted: bool,
}

/// Reads lameduck from a container, when the container runs it.
fn read(container: &Container<'_>) -> Option<Lameduck> {
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
    let mut reader = Reader {
        flags: match role {
            Role::Install { .. } => &[],
            _ => flags(role.line().mode()),
        },
        line: role.line(),
        expands: true,
        given: Vec::new(),
        default_path: command_path,
        problems: Vec::new(),
    };
    if let Role::Install { dir } = &role
        && dir.is_empty()
    {
        let path = reader.default_path.clone();
        reader.problem(path, "install needs a DIR".to_owned());
    }
    let args = argv.get(flags_from..).unwrap_or_default();
    let app_from = reader.read_line(args);
    reader.read_env(container);
    // `install` takes no flags: its settings are the defaults.
    let parsed = match role {
        Role::Install { .. } => None,
        _ => reader.parse(),
    };
    let settings = reader.settings(parsed.as_ref());
    Some(Lameduck {
        role,
        program,
        argv_path: reader.default_path,
        settings,
        problems: reader.problems,
        app: app_from
            .and_then(|from| args.get(from..))
            .unwrap_or_default()
            .iter()
            .map(|arg| arg.text.to_owned())
            .collect(),
    })
}

/// An exec preStop hook that runs `lameduck prestop`, as lameduck's parser reads it.
#[derive(Clone, Debug)]
pub struct Hook {
    /// The hook socket it calls, unknown when a value is.
    pub socket: Setting<Socket>,
    /// What `lameduck prestop` refuses in its flags or the container's variables: `(where, why)`.
    pub problems: Vec<(Path, String)>,
}

/// Reads the container's exec preStop hook when it runs `lameduck prestop`: its flags, and the
/// container's `LAMEDUCK_*` variables, which the hook's process has too.
fn read_hook(container: &Container<'_>) -> Option<Hook> {
    let command = container
        .path
        .keys(&["lifecycle", "preStop", "exec", "command"]);
    let items = container
        .node
        .at(&["lifecycle", "preStop", "exec", "command"])?
        .items();
    let argv: Vec<Arg<'_>> = items
        .iter()
        .enumerate()
        .filter_map(|(index, item)| {
            Some(Arg {
                text: item.text()?,
                path: command.index(index),
            })
        })
        .collect();
    match argv.as_slice() {
        [program, mode, ..]
            if program.text.rsplit('/').next() == Some("lameduck") && mode.text == "prestop" => {}
        _ => return None,
    }
    let mut reader = Reader {
        flags: flags(Line::Prestop.mode()),
        line: Line::Prestop,
        // The kubelet runs an exec hook's command as written: no `$(VAR)` is expanded.
        expands: false,
        given: Vec::new(),
        default_path: command,
        problems: Vec::new(),
    };
    reader.read_line(argv.get(2..).unwrap_or_default());
    reader.read_env(container);
    let parsed = reader.parse();
    let socket = reader.hook_socket(parsed.as_ref());
    Some(Hook {
        socket,
        problems: reader.problems,
    })
}

/// The abstract socket of the in-pod hook that a command line names, and what names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Socket {
    /// The name, without its leading `@`.
    pub name: String,
    /// What gives the name: `--prestop-socket` or its variable, or the port of `--listen`.
    pub from: String,
    /// The port it is named after; none when `--prestop-socket` names it.
    pub port: Option<u16>,
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

/// A value Kubernetes substitutes at run time (`$(VAR)`) is not known here.
fn raw(text: &str) -> Raw<'_> {
    if text.contains("$(") {
        Raw::RunTime
    } else {
        Raw::Text(text)
    }
}

/// Reads one container's lameduck flags and variables, value by value, so that each problem
/// has the path where it is written.
struct Reader<'a> {
    line: Line,
    /// Whether Kubernetes substitutes `$(VAR)` in the command line (not in an exec hook's).
    expands: bool,
    flags: &'static [Flag],
    given: Vec<Given<'a>>,
    default_path: Path,
    problems: Vec<(Path, String)>,
}

impl<'a> Reader<'a> {
    fn problem(&mut self, path: Path, reason: String) {
        let problem = (path, reason);
        if !self.problems.contains(&problem) {
            self.problems.push(problem);
        }
    }

    /// The flags on the command line, in order, each value checked by lameduck's parser;
    /// returns the index in `args` where the app's command starts (a wrapper's words after
    /// its flags).
    fn read_line(&mut self, args: &[Arg<'a>]) -> Option<usize> {
        let mut words = args.iter().enumerate();
        let mut app_from = None;
        while let Some((index, arg)) = words.next() {
            if arg.text == "--" {
                app_from = (index + 1 < args.len()).then_some(index + 1);
                break;
            }
            let Some(spec) = arg.text.strip_prefix("--") else {
                if self.line == Line::Wrapper && !(arg.text.starts_with('-') && arg.text.len() > 1)
                {
                    // The first word that is not a flag starts the app's command.
                    app_from = Some(index);
                    break;
                }
                self.problem(
                    arg.path.clone(),
                    format!("unexpected argument '{}'", arg.text),
                );
                continue;
            };
            let (name, inline) = match spec.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (spec, None),
            };
            let Some(flag) = self.flags.iter().position(|f| f.long == name) else {
                let reason = self.not_taken(name);
                self.problem(arg.path.clone(), reason);
                continue;
            };
            if !self.flags[flag].takes_value {
                if inline.is_some() {
                    self.problem(arg.path.clone(), format!("--{name} takes no value"));
                }
                self.give(flag, Source::Line, Raw::Text(""), arg.path.clone());
                continue;
            }
            let (value, path) = match inline {
                Some(value) => (Some(value), arg.path.clone()),
                None => match words.next() {
                    Some((_, next)) => (Some(next.text), next.path.clone()),
                    None => (None, arg.path.clone()),
                },
            };
            match value {
                Some(value) if self.expands => self.give(flag, Source::Line, raw(value), path),
                Some(value) => self.give(flag, Source::Line, Raw::Text(value), path),
                None => self.problem(path, format!("--{name} needs a value")),
            }
        }
        if self.line == Line::Wrapper && app_from.is_none() {
            let path = self.default_path.clone();
            self.problem(path, "no app command: write it after `--`".to_owned());
        }
        app_from
    }

    /// Why a flag this role does not take is wrong here.
    fn not_taken(&self, name: &str) -> String {
        let in_mode = |mode| flags(mode).iter().any(|f| f.long == name);
        match self.line {
            Line::Wrapper if in_mode(Some("sidecar")) => {
                format!("--{name} is a flag of `lameduck sidecar` only")
            }
            Line::Sidecar if in_mode(None) => {
                format!("--{name} is not a flag of `lameduck sidecar`")
            }
            _ => format!("unknown flag --{name}"),
        }
    }

    /// The `LAMEDUCK_*` variables in the container's `env` that lameduck reads: a flag's
    /// variable counts only when the command line does not give the flag.
    fn read_env(&mut self, container: &Container<'a>) {
        let env = container
            .node
            .get("env")
            .map(Node::items)
            .unwrap_or_default();
        let mut vars: Vec<(usize, Raw<'a>, Path)> = Vec::new();
        for (index, var) in env.iter().enumerate() {
            let Some(name) = var.get("name").and_then(Node::text) else {
                continue;
            };
            let Some(flag) = self
                .flags
                .iter()
                .position(|f| f.env.as_deref() == Some(name))
            else {
                continue;
            };
            let path = container.path.key("env").index(index).key("value");
            let value = match var.get("value") {
                Some(value) => raw(value.text().unwrap_or_default()),
                None if var.get("valueFrom").is_some() => Raw::RunTime,
                // An env entry with neither is the empty string.
                None => Raw::Text(""),
            };
            // The last entry of a name wins, as in the container's environment.
            vars.retain(|(other, ..)| *other != flag);
            vars.push((flag, value, path));
        }
        for (flag, value, path) in vars {
            if !self.given.iter().any(|g| g.flag == flag) {
                self.give(flag, Source::Env, value, path);
            }
        }
    }

    /// Records one value; [`Reader::settings`] checks it.
    fn give(&mut self, flag: usize, source: Source, raw: Raw<'a>, path: Path) {
        self.given.push(Given {
            flag,
            source,
            raw,
            path,
            accepted: true,
        });
    }

    /// Checks each known value alone with lameduck's own parser, so that each wrong one is
    /// reported where it is written; those it refuses are no longer accepted.
    fn check_each(&mut self) {
        for index in 0..self.given.len() {
            let Given {
                flag, source, raw, ..
            } = self.given[index];
            let Raw::Text(text) = raw else {
                continue;
            };
            let (words, env) = self.words(flag, source, text);
            if let Err(err) = self.line.parse(&words, &env) {
                self.given[index].accepted = false;
                let label = match source {
                    Source::Line => format!("--{}", self.flags[flag].long),
                    Source::Env => self.flags[flag].env.clone().unwrap_or_default(),
                };
                let path = self.given[index].path.clone();
                self.problem(path, format!("{label}: {}", reason(&err)));
            }
        }
    }

    /// Parses every accepted known value together, as lameduck reads them.
    fn parse_accepted(&self) -> Result<Cli, clap::Error> {
        let mut words = Vec::new();
        let mut env = Vec::new();
        for given in self.given.iter().filter(|g| g.accepted) {
            if let Raw::Text(text) = given.raw {
                let (w, e) = self.words(given.flag, given.source, text);
                words.extend(w);
                env.extend(e);
            }
        }
        self.line.parse(&words, &env)
    }

    /// One value as lameduck's command line or environment holds it.
    fn words(
        &self,
        flag: usize,
        source: Source,
        text: &str,
    ) -> (Vec<String>, Vec<(String, String)>) {
        let flag = &self.flags[flag];
        match source {
            Source::Line if flag.takes_value => (vec![format!("--{}={text}", flag.long)], vec![]),
            Source::Line => (vec![format!("--{}", flag.long)], vec![]),
            Source::Env => (
                vec![],
                vec![(flag.env.clone().unwrap_or_default(), text.to_owned())],
            ),
        }
    }

    /// Parses every value lameduck takes, checking them one by one when they do not parse
    /// together; each one it refuses becomes a problem and is no longer accepted. A setting
    /// whose value is only known at run time, or is wrong, is then unknown (`None`).
    fn parse(&mut self) -> Option<Cli> {
        // All values together first: each goes through its parser there, and no flag of
        // lameduck needs another, so when they parse together each parses alone, and the
        // one parse is all it takes. Only a failure needs the value-by-value look.
        match self.parse_accepted() {
            Ok(parsed) => Some(parsed),
            Err(_) => {
                self.check_each();
                match self.parse_accepted() {
                    Ok(parsed) => Some(parsed),
                    Err(err) => {
                        // Each value parses alone, so what is left is how they combine (a
                        // conflict): none of them is known to hold.
                        let path = self.default_path.clone();
                        self.problem(path, reason(&err));
                        self.given.iter_mut().for_each(|g| g.accepted = false);
                        None
                    }
                }
            }
        }
    }

    /// The settings in effect, from what [`Reader::parse`] gave.
    fn settings(&self, parsed: Option<&Cli>) -> Settings {
        // The drain settings: parsed, else the defaults (also those of `install`).
        let drain: Option<&DrainArgs> = match parsed {
            Some(Cli { mode: None, wrap }) => Some(&wrap.drain),
            Some(Cli {
                mode: Some(Mode::Sidecar(args)),
                ..
            }) => Some(&args.drain),
            _ => Line::Wrapper.defaults().map(|cli| &cli.wrap.drain),
        };
        let rewrites = match (parsed, self.known("rewrite")) {
            (Some(cli), true) if self.line == Line::Wrapper => {
                Some(Rewrites::new(&cli.wrap.rewrites))
            }
            (_, true) => Some(Rewrites::default()),
            (_, false) => None,
        };
        let stop_signal = match self.in_effect("stop-signal") {
            Some(path) => Setting {
                value: self
                    .known("stop-signal")
                    .then(|| drain?.stop_signal.map(|s| s.0))
                    .flatten(),
                path,
            },
            None => Setting {
                value: rewrites.map(|r| r.apply(Signal::SIGTERM)),
                path: self.default_path.clone(),
            },
        };
        Settings {
            listen: self.setting("listen", drain.map(|d| d.listen.addr)),
            shutdown_delay: self.setting("shutdown-delay", drain.map(|d| d.shutdown_delay)),
            drain_timeout: self.setting("drain-timeout", drain.map(|d| d.drain_timeout)),
            stop_signal,
            readiness_during_delay: self.setting(
                "readiness-during-delay",
                drain.map(|d| d.readiness_during_delay),
            ),
            grace_period: self
                .in_effect("grace-period")
                .map(|_| self.setting("grace-period", drain.and_then(|d| d.grace_period))),
            prestop_token: self.in_effect("prestop-token").is_some(),
            prestop_insecure: self.in_effect("prestop-insecure").is_some(),
            pid_file: self.in_effect("pid-file").map(|path| Setting {
                value: self
                    .known("pid-file")
                    .then(|| self.text("pid-file"))
                    .flatten(),
                path,
            }),
            process_name: self.in_effect("process-name").is_some(),
            proxy: drain
                .filter(|_| self.known("proxy"))
                .map(|d| d.proxy.clone())
                .unwrap_or_default(),
            prestop_socket: self.socket(
                drain.map(|d| &d.prestop_socket),
                drain.map(|d| d.listen.addr),
                true,
            ),
        }
    }

    /// The socket `lameduck prestop` calls, from what [`Reader::parse`] gave.
    fn hook_socket(&self, parsed: Option<&Cli>) -> Setting<Socket> {
        fn prestop(cli: &Cli) -> Option<&PrestopArgs> {
            match &cli.mode {
                Some(Mode::Prestop(args)) => Some(args),
                _ => None,
            }
        }
        // Parsed, else the defaults.
        let args = parsed
            .and_then(prestop)
            .or_else(|| Line::Prestop.defaults().and_then(prestop));
        self.socket(args.map(|a| &a.socket), args.map(|a| a.listen.addr), false)
    }

    /// The hook socket a command line names: `--prestop-socket` (or its variable), else the
    /// name lameduck's [`PrestopSocket::resolve`] gives `--listen`'s port. `bound` is for
    /// lameduck's own side, where port 0 is a port picked at start, which lint cannot know.
    fn socket(
        &self,
        socket: Option<&PrestopSocket>,
        listen: Option<SocketAddr>,
        bound: bool,
    ) -> Setting<Socket> {
        if let Some(path) = self.in_effect("prestop-socket") {
            let value = socket
                .filter(|_| self.known("prestop-socket"))
                .and_then(|s| s.name.clone())
                .map(|name| Socket {
                    name,
                    from: self.label("prestop-socket"),
                    port: None,
                });
            return Setting { value, path };
        }
        let listen = self.setting("listen", listen);
        let value = socket
            .zip(listen.value)
            .filter(|(_, addr)| !(bound && addr.port() == 0))
            .map(|(socket, addr)| Socket {
                name: socket.resolve(addr.port()),
                from: match self.in_effect("listen") {
                    Some(_) => format!("{} port {}", self.label("listen"), addr.port()),
                    None => format!("the default --listen port {}", addr.port()),
                },
                port: Some(addr.port()),
            });
        Setting {
            value,
            path: listen.path,
        }
    }

    /// How the value in effect of a flag is given: `--flag`, or its variable's name.
    fn label(&self, long: &str) -> String {
        let given = self
            .index(long)
            .and_then(|flag| self.given.iter().rev().find(|g| g.flag == flag));
        match given {
            Some(g) if g.source == Source::Env => {
                self.flags[g.flag].env.clone().unwrap_or_default()
            }
            _ => format!("--{long}"),
        }
    }

    fn index(&self, long: &str) -> Option<usize> {
        self.flags.iter().position(|f| f.long == long)
    }

    /// Where the value in effect of a flag is written (the last one given), when it is given.
    fn in_effect(&self, long: &str) -> Option<Path> {
        let flag = self.index(long)?;
        self.given
            .iter()
            .rev()
            .find(|g| g.flag == flag)
            .map(|g| g.path.clone())
    }

    /// Whether every value given to a flag is known here and taken by lameduck.
    fn known(&self, long: &str) -> bool {
        let Some(flag) = self.index(long) else {
            return true;
        };
        self.given
            .iter()
            .filter(|g| g.flag == flag)
            .all(|g| g.accepted && matches!(g.raw, Raw::Text(_)))
    }

    /// The text of the value in effect of a flag.
    fn text(&self, long: &str) -> Option<String> {
        let flag = self.index(long)?;
        match self.given.iter().rev().find(|g| g.flag == flag)?.raw {
            Raw::Text(text) => Some(text.to_owned()),
            Raw::RunTime => None,
        }
    }

    /// A setting with a default: its value as lameduck parsed it, unknown when it is not
    /// known here, and the path where it is written or a flag would go.
    fn setting<T>(&self, long: &str, parsed: Option<T>) -> Setting<T> {
        Setting {
            value: parsed.filter(|_| self.known(long)),
            path: self
                .in_effect(long)
                .unwrap_or_else(|| self.default_path.clone()),
        }
    }
}

#[cfg(test)]
mod tests {

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

    /// What lint read from one command line: a container's lameduck, or an exec hook's.
    enum Read {
        Lameduck(Box<Lameduck>),
        Hook(Hook),
    }

    impl Read {
        fn problems(&self) -> &[(Path, String)] {
            match self {
                Read::Lameduck(ld) => &ld.problems,
                Read::Hook(hook) => &hook.problems,
            }
        }
    }

    /// A container running lameduck's command line `line` with `words` after the mode and
    /// `env` (`lameduck prestop` as the container's preStop hook), as lint reads it.
    fn container(line: Line, words: &[String], env: Option<(&str, &str)>) -> Read {
        let quote = |text: &str| format!("'{}'", text.replace('\'', "''"));
        let mut argv: Vec<String> = line.argv().iter().map(|w| quote(w)).collect();
        argv.extend(words.iter().map(|w| quote(w)));
        argv.extend(line.app().iter().map(|w| quote(w)));
        let env = env.map_or_else(String::new, |(name, value)| {
            format!(", env: [{{name: {name}, value: {}}}]", quote(value))
        });
        let argv = argv.join(", ");
        if line != Line::Prestop {
            return Read::Lameduck(Box::new(
                lameduck(&format!("{{command: [{argv}]{env}}}")).unwrap(),
            ));
        }
        let text = format!(
            "{{kind: Pod, spec: {{containers: [{{command: [app], lifecycle: {{preStop: {{exec: {{command: [{argv}]}}}}}}{env}}}]}}}}"
        );
        let docs = yaml::parse(&text).unwrap();
        let objects = Object::all_in("t", &docs[0]);
        let pod = objects[0].pod().unwrap();
        Read::Hook(read_hook(&pod.containers[0]).unwrap())
    }

    /// Values of every kind lameduck's flags take, and some they refuse.
    const SAMPLES: &[&str] = &[
        "5s",
        "1m30s",
        "250ms",
        "0",
        "5",
        "5x",
        "-1s",
        "QUIT",
        "SIGTERM",
        "9",
        "NOPE",
        "HUP:USR1",
        "TERM:QUIT,INT:QUIT",
        "HUP",
        "8080",
        "8080,8443",
        "70000",
        "tcp://127.0.0.1:80",
        "http://localhost:8080/healthz",
        "ftp://x",
        "127.0.0.1:0",
        "[::1]:8099",
        "0.0.0.0:80=127.0.0.1:8080",
        "0.0.0.0:80=localhost:8080",
        "x-forwarded-for",
        "0.0.0.0",
        "text",
        "json",
        "debug",
        "pass",
        "fail",
        "s3cret",
        "two words",
        "/run/nginx.pid",
        "nginx",
        "",
        "true",
        "false",
    ];

    /// Every flag of lameduck's clap definition, on the command line and as its variable, is
    /// accepted by lint exactly when lameduck's own parser accepts it, and the settings lint
    /// reads are the values lameduck parses. A flag added to the init is thereby read by
    /// lint too, or this test names it.
    #[test]
    fn lint_reads_every_flag_as_the_init_s_clap_definition_does() {
        let definition = Cli::command();
        for (line, at_least) in [(Line::Wrapper, 9), (Line::Sidecar, 9), (Line::Prestop, 2)] {
            let command = match line.mode() {
                Some(mode) => definition.find_subcommand(mode).unwrap().clone(),
                None => definition.clone(),
            };
            let mut flags = 0;
            for arg in command.get_arguments() {
                let Some(long) = arg.get_long().filter(|l| !matches!(*l, "help" | "version"))
                else {
                    continue;
                };
                flags += 1;
                let variable = arg.get_env().and_then(|e| e.to_str()).unwrap();
                let takes_value = arg.get_action().takes_values();
                let mut accepted = 0;
                for sample in SAMPLES {
                    let word = if takes_value {
                        format!("--{long}={sample}")
                    } else if sample.is_empty() {
                        format!("--{long}")
                    } else {
                        format!("--{long}={sample}")
                    };
                    let mut argv = line.argv();
                    argv.push(word.clone());
                    argv.extend(line.app().iter().map(|w| (*w).to_owned()));
                    let clap = command_of(line).try_get_matches_from(&argv);
                    let lint = container(line, std::slice::from_ref(&word), None);
                    assert_eq!(
                        lint.problems().is_empty(),
                        clap.is_ok(),
                        "{line:?} {word}: lint says {:?}, clap says {:?}",
                        lint.problems(),
                        clap.err().map(|e| e.to_string())
                    );
                    if lint.problems().is_empty() {
                        accepted += 1;
                        assert_same_settings(line, &lint, &argv);
                    }
                    // Its variable takes what the flag takes (a switch's takes true or false).
                    let env = container(line, &[], Some((variable, sample)));
                    let expected = if takes_value {
                        lint.problems().is_empty()
                    } else {
                        matches!(*sample, "true" | "false")
                    };
                    assert_eq!(
                        env.problems().is_empty(),
                        expected,
                        "{line:?} {variable}={sample}: {:?}",
                        env.problems()
                    );
                }
                assert!(
                    accepted > 0,
                    "no sample value fits --{long}: add one to SAMPLES"
                );
            }
            assert!(flags >= at_least, "{line:?}: only {flags} flags found");
        }
    }

    /// The raw clap definition of a command line, reading no environment.
    fn command_of(line: Line) -> clap::Command {
        let command = Cli::command().mut_args(|a| a.env(None));
        match line.mode() {
            Some(mode) => command.mut_subcommand(mode, |m| m.mut_args(|a| a.env(None))),
            None => command,
        }
    }

    /// The settings lint read are those lameduck's parser gives the same command line.
    fn assert_same_settings(line: Line, lint: &Read, argv: &[String]) {
        use clap::FromArgMatches;
        let matches = command_of(line).try_get_matches_from(argv).unwrap();
        let cli = Cli::from_arg_matches(&matches).unwrap();
        let lint = match (lint, &cli.mode) {
            (Read::Hook(hook), Some(Mode::Prestop(args))) => {
                let calls = args.socket.resolve(args.listen.addr.port());
                let read = hook.socket.value.as_ref().map(|s| s.name.as_str());
                assert_eq!(read, Some(calls.as_str()), "{argv:?}");
                return;
            }
            (Read::Lameduck(lint), _) => lint,
            (Read::Hook(_), _) => panic!("{argv:?} is no lameduck prestop"),
        };
        let drain = match &cli.mode {
            Some(Mode::Sidecar(args)) => &args.drain,
            _ => &cli.wrap.drain,
        };
        let s = &lint.settings;
        let bound = (drain.listen.addr.port() != 0 || drain.prestop_socket.name.is_some())
            .then(|| drain.prestop_socket.resolve(drain.listen.addr.port()));
        let read = s.prestop_socket.value.as_ref().map(|s| s.name.clone());
        assert_eq!(read, bound, "{argv:?}");
        assert_eq!(s.listen.value, Some(drain.listen.addr), "{argv:?}");
        assert_eq!(
            s.shutdown_delay.value,
            Some(drain.shutdown_delay),
            "{argv:?}"
        );
        assert_eq!(s.drain_timeout.value, Some(drain.drain_timeout), "{argv:?}");
        assert_eq!(
            s.readiness_during_delay.value,
            Some(drain.readiness_during_delay),
            "{argv:?}"
        );
        assert_eq!(
            s.grace_period.as_ref().and_then(|g| g.value),
            drain.grace_period,
            "{argv:?}"
        );
        let stop = drain.stop_signal.map_or_else(
            || Rewrites::new(&cli.wrap.rewrites).apply(Signal::SIGTERM),
            |s| s.0,
        );
        assert_eq!(s.stop_signal.value, Some(stop), "{argv:?}");
        assert_eq!(s.prestop_token, drain.prestop_token.is_some(), "{argv:?}");
        assert_eq!(s.prestop_insecure, drain.prestop_insecure, "{argv:?}");
    }

    #[test]
    fn a_conflict_between_flags_is_a_problem() {
        let ld = lameduck("{command: [lameduck, sidecar, --pid-file=/x, --process-name=nginx]}")
            .unwrap();
        assert_eq!(ld.problems.len(), 1, "{:?}", ld.problems);
        assert!(
            ld.problems[0].1.contains("--process-name"),
            "{:?}",
            ld.problems
        );
    }
}
