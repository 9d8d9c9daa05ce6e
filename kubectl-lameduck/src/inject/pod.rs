//! The decisions of inject for one pod template (`{metadata, spec}`, or a whole Pod): which
//! container gets lameduck, in which shape, with which flags, probes, hook, grace period and
//! stop signal; and their undoing. The command `inject` and the admission webhook both call
//! this, so every decision is made in one place. See the parent module for the API.

use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{Map, Value, json};

use super::journal::{self, Journal, escape};
use super::refusal::Refusal;
use crate::servers;
use ::lameduck::duration;
use ::lameduck::settings::{GRACE_MARGIN, ReadyCheck, Route};
use ::lameduck::signals::{SignalArg, short_name};

/// Every annotation inject reads or writes starts with this.
pub const PREFIX: &str = "lameduck.io/";
/// The annotation holding the record of what inject changed; present means injected.
pub const INJECTED: &str = "lameduck.io/injected";
/// The volume the installer copies lameduck into.
pub const VOLUME: &str = "lameduck";
/// Where that volume is mounted in every container.
pub const INSTALL_DIR: &str = "/opt/lameduck";
/// The installer init container.
pub const INSTALLER: &str = "lameduck-install";
/// The sidecar container (a native sidecar).
pub const SIDECAR: &str = "lameduck";
/// The name of lameduck's port in the container running it.
pub const PORT_NAME: &str = "lameduck";
/// The name of the drain proxy's port, where the Services send the pod's traffic.
pub const PROXY_PORT_NAME: &str = "lameduck-proxy";
/// Where lameduck is in an image that already contains it (the wrapper shape).
pub const WRAPPER_BINARY: &str = "/lameduck";
/// The uid the installer runs as: it needs no privilege to copy a file.
const INSTALLER_UID: u64 = 65532;

/// How lameduck is put into the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Shape {
    /// Wrapper for a `--wrapper-image`, install when the command is known, else sidecar.
    Auto,
    /// An init container copies lameduck into an emptyDir; the app's command is wrapped.
    Install,
    /// The image already contains /lameduck; the app's command is wrapped.
    Wrapper,
    /// A native sidecar finds the app by process name in a shared PID namespace.
    Sidecar,
}

impl Shape {
    /// The name as flags and annotations write it.
    pub fn name(self) -> &'static str {
        match self {
            Shape::Auto => "auto",
            Shape::Install => "install",
            Shape::Wrapper => "wrapper",
            Shape::Sidecar => "sidecar",
        }
    }

    fn from_name(name: &str) -> Option<Shape> {
        [Shape::Auto, Shape::Install, Shape::Wrapper, Shape::Sidecar]
            .into_iter()
            .find(|shape| shape.name() == name)
    }
}

/// The settings that flags give (the webhook: its namespace defaults). Annotations on the
/// workload, then on the pod, override them.
#[derive(Clone, Debug)]
pub struct Options {
    /// The shape; annotation `lameduck.io/shape`.
    pub shape: Shape,
    /// `--shutdown-delay`; annotation `lameduck.io/shutdown-delay`.
    pub shutdown_delay: Duration,
    /// `--drain-timeout`; annotation `lameduck.io/drain-timeout`.
    pub drain_timeout: Duration,
    /// The app's graceful stop signal, when not the known servers' one; `lameduck.io/stop-signal`.
    pub stop_signal: Option<Signal>,
    /// The app's command when the spec has none (the image's ENTRYPOINT, and its CMD when the
    /// spec has no `args`); annotation `lameduck.io/command`.
    pub command: Option<Vec<String>>,
    /// The app's container, when not the pod's default; annotation `lameduck.io/container`.
    pub container: Option<String>,
    /// The app's process name for the sidecar shape; annotation `lameduck.io/process-name`.
    pub process_name: Option<String>,
    /// The lameduck image for the installer and the sidecar; annotation `lameduck.io/image`.
    pub image: String,
    /// Images that already contain /lameduck: auto picks the wrapper shape for them.
    pub wrapper_images: Vec<String>,
    /// lameduck's port; annotation `lameduck.io/port`.
    pub port: u16,
    /// Whether lameduck proxies the app's port; annotation `lameduck.io/proxy` (true, false).
    pub proxy: bool,
    /// The drain proxy's port; annotation `lameduck.io/proxy-port`.
    pub proxy_port: u16,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            shape: Shape::Auto,
            shutdown_delay: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(20),
            stop_signal: None,
            command: None,
            container: None,
            process_name: None,
            image: format!("lameduck:{}", env!("CARGO_PKG_VERSION")),
            wrapper_images: Vec::new(),
            port: 8099,
            proxy: false,
            proxy_port: 8098,
        }
    }
}

/// What the pod template alone does not say.
#[derive(Clone, Copy, Debug, Default)]
pub struct Context<'a> {
    /// The workload's own `metadata.annotations` (none for a Pod: its annotations are the
    /// template's).
    pub workload_annotations: Option<&'a Map<String, Value>>,
}

/// Something the user should know about an injection that succeeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// The container concerned, when one is.
    pub container: Option<String>,
    /// What happened, in one sentence.
    pub message: String,
}

impl std::fmt::Display for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.container {
            Some(name) => write!(f, "container \"{name}\": {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

fn refuse<T>(container: Option<&str>, reason: impl std::fmt::Display) -> Result<T, Refusal> {
    Err(Refusal(match container {
        Some(name) => format!("container \"{name}\": {reason}"),
        None => reason.to_string(),
    }))
}

/// Whether the pod already runs lameduck, in any shape: injected by inject, or any container
/// whose program is lameduck (as `kubectl lameduck lint` reads it).
pub fn is_injected(template: &Value) -> bool {
    record(template).is_some() || runs_lameduck(template)
}

/// Injects lameduck into the pod template, in place: the template becomes what [`injected`]
/// makes of it. On a refusal the template is unchanged.
pub fn inject_pod(
    template: &mut Value,
    options: &Options,
    context: &Context<'_>,
) -> Result<Vec<Note>, Refusal> {
    let (pod, notes) = injected(template, options, context)?;
    if let Some(pod) = pod {
        *template = pod;
    }
    Ok(notes)
}

/// The pod template with lameduck injected, and the notes. A pod inject injected before is
/// first given back its original, so injecting again applies the current options and changes
/// nothing else. A pod that already runs lameduck by other means, or says
/// `lameduck.io/inject: disabled`, is left as it is (`None`, with a note).
pub fn injected(
    template: &Value,
    options: &Options,
    context: &Context<'_>,
) -> Result<(Option<Value>, Vec<Note>), Refusal> {
    let mut pod = template.clone();
    let written = pod.pointer(&format!("/metadata/annotations/{}", escape(INJECTED)));
    if written.is_some_and(|value| !value.is_string()) {
        return refuse(
            None,
            format!("annotation {INJECTED} is not a record inject wrote"),
        );
    }
    if record(&pod).is_some() {
        remove_pod(&mut pod)?;
    } else if runs_lameduck(&pod) {
        let note = Note {
            container: None,
            message: "already runs lameduck; left as it is".into(),
        };
        return Ok((None, vec![note]));
    }
    let mut notes = Vec::new();
    let settings = Settings::resolve(options, context, &pod, &mut notes)?;
    if settings.disabled {
        notes.push(Note {
            container: None,
            message: "lameduck.io/inject is disabled; left as it is".into(),
        });
        return Ok((None, notes));
    }
    let mut injection = Injection {
        pod,
        journal: Journal::default(),
        settings,
        notes,
    };
    let shape = injection.run()?;
    let Injection {
        mut pod,
        journal,
        notes,
        ..
    } = injection;
    // The record is written last, into a mapping the journal made sure exists.
    let record = json!({ "shape": shape.name(), "undo": journal.to_value() });
    if let Some(annotations) = pod
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.insert(INJECTED.into(), Value::String(record.to_string()));
    }
    super::check::pod(&pod)?;
    Ok((Some(pod), notes))
}

/// Gives a pod template injected by inject back its original; returns whether it changed
/// anything. A pod without the record is left as it is.
pub fn remove_pod(template: &mut Value) -> Result<bool, Refusal> {
    let Some(text) = record(template) else {
        return Ok(false);
    };
    let record: Value = serde_json::from_str(&text)
        .map_err(|err| Refusal(format!("the {INJECTED} annotation is not JSON: {err}")))?;
    let mut pod = template.clone();
    if let Some(annotations) = pod
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.shift_remove(INJECTED);
    }
    let undo = record.get("undo").unwrap_or(&Value::Null);
    journal::undo(&mut pod, undo).map_err(|mismatch| {
        Refusal(format!(
            "the pod no longer matches its {INJECTED} annotation: {}",
            mismatch.0
        ))
    })?;
    *template = pod;
    Ok(true)
}

/// The record inject left, when it did.
fn record(template: &Value) -> Option<String> {
    template
        .pointer(&format!("/metadata/annotations/{}", escape(INJECTED)))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// Whether any container's program is lameduck: an executable named `lameduck`, or an image
/// named `lameduck` run with `args` only.
fn runs_lameduck(template: &Value) -> bool {
    ["initContainers", "containers"].iter().any(|field| {
        items(template.pointer(&format!("/spec/{field}")))
            .iter()
            .any(|c| {
                let program = match strings(c.get("command")) {
                    Some(command) if !command.is_empty() => command.first().cloned(),
                    _ if image_name(c) == "lameduck" => Some("lameduck".to_owned()),
                    _ => None,
                };
                program.is_some_and(|p| p.rsplit('/').next() == Some("lameduck"))
            })
    })
}

/// The items of a list, or nothing.
fn items(value: Option<&Value>) -> &[Value] {
    value.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// A list of strings, when the value is one.
fn strings(value: Option<&Value>) -> Option<Vec<String>> {
    value?
        .as_array()?
        .iter()
        .map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// The image name without registry, repository or tag.
fn image_name(container: &Value) -> &str {
    let image = container.get("image").and_then(Value::as_str).unwrap_or("");
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last)
}

/// The image without its tag or digest, registry and repository kept.
fn image_repository(container: &Value) -> &str {
    let image = container.get("image").and_then(Value::as_str).unwrap_or("");
    let without_digest = image.split('@').next().unwrap_or(image);
    match without_digest.rfind(':') {
        Some(colon) if !without_digest[colon..].contains('/') => &without_digest[..colon],
        _ => without_digest,
    }
}

/// Options with the annotations applied.
#[derive(Debug)]
struct Settings {
    shape: Shape,
    shutdown_delay: Duration,
    drain_timeout: Duration,
    stop_signal: Option<Signal>,
    command: Option<Vec<String>>,
    container: Option<String>,
    process_name: Option<String>,
    image: String,
    wrapper_images: Vec<String>,
    port: u16,
    proxy: bool,
    proxy_port: u16,
    disabled: bool,
}

impl Settings {
    fn resolve(
        options: &Options,
        context: &Context<'_>,
        pod: &Value,
        notes: &mut Vec<Note>,
    ) -> Result<Settings, Refusal> {
        let mut settings = Settings {
            shape: options.shape,
            shutdown_delay: options.shutdown_delay,
            drain_timeout: options.drain_timeout,
            stop_signal: options.stop_signal,
            command: options.command.clone(),
            container: options.container.clone(),
            process_name: options.process_name.clone(),
            image: options.image.clone(),
            wrapper_images: options.wrapper_images.clone(),
            port: options.port,
            proxy: options.proxy,
            proxy_port: options.proxy_port,
            disabled: false,
        };
        let pod_annotations = pod
            .pointer("/metadata/annotations")
            .and_then(Value::as_object);
        for annotations in [context.workload_annotations, pod_annotations]
            .into_iter()
            .flatten()
        {
            for (key, value) in annotations {
                let Some(name) = key.strip_prefix(PREFIX) else {
                    continue;
                };
                let text = value.as_str().unwrap_or_default().trim();
                settings.apply(key, name, text, notes)?;
            }
        }
        Ok(settings)
    }

    /// Applies one `lameduck.io/NAME: TEXT` annotation.
    fn apply(
        &mut self,
        key: &str,
        name: &str,
        text: &str,
        notes: &mut Vec<Note>,
    ) -> Result<(), Refusal> {
        let bad = |why: String| refuse(None, format!("annotation {key}: {why}"));
        match name {
            "shape" => match Shape::from_name(text) {
                Some(shape) => self.shape = shape,
                None => return bad(format!("'{text}' is not auto, install, wrapper or sidecar")),
            },
            "shutdown-delay" => match duration::parse(text) {
                Ok(delay) => self.shutdown_delay = delay,
                Err(why) => return bad(why),
            },
            "drain-timeout" => match duration::parse(text) {
                Ok(timeout) => self.drain_timeout = timeout,
                Err(why) => return bad(why),
            },
            "stop-signal" => match SignalArg::from_str(text) {
                Ok(signal) => self.stop_signal = Some(signal.0),
                Err(why) => return bad(why),
            },
            "command" => match parse_command(text) {
                Ok(command) => self.command = Some(command),
                Err(why) => return bad(why),
            },
            "container" => self.container = Some(text.to_owned()),
            "process-name" => self.process_name = Some(text.to_owned()),
            "image" if !text.is_empty() => self.image = text.to_owned(),
            "port" => match text.parse::<u16>() {
                Ok(port) if port != 0 => self.port = port,
                _ => return bad(format!("'{text}' is not a port number")),
            },
            "proxy" => match text {
                "true" => self.proxy = true,
                "false" => self.proxy = false,
                _ => return bad(format!("'{text}' is not true or false")),
            },
            "proxy-port" => match text.parse::<u16>() {
                Ok(port) if port != 0 => self.proxy_port = port,
                _ => return bad(format!("'{text}' is not a port number")),
            },
            "inject" => self.disabled = text == "disabled",
            "injected" => {}
            _ => notes.push(Note {
                container: None,
                message: format!("annotation {key} is not one inject reads; ignored"),
            }),
        }
        Ok(())
    }
}

/// A command as an annotation or flag writes it: a JSON list of strings, or words separated by
/// spaces.
pub fn parse_command(text: &str) -> Result<Vec<String>, String> {
    let text = text.trim();
    let command: Vec<String> = if text.starts_with('[') {
        serde_json::from_str(text)
            .map_err(|err| format!("'{text}' is not a JSON list of strings: {err}"))?
    } else {
        text.split_whitespace().map(str::to_owned).collect()
    };
    if command.is_empty() || command[0].is_empty() {
        return Err("the command is empty".into());
    }
    Ok(command)
}

/// One injection in progress.
struct Injection {
    pod: Value,
    journal: Journal,
    settings: Settings,
    notes: Vec<Note>,
}

/// The chosen shape and what it needs.
enum Plan {
    /// Wrap the app's command with lameduck at `program`; `install` adds the init container.
    Wrap {
        program: String,
        install: bool,
        command: Vec<String>,
    },
    /// A native sidecar that finds the app by this process name.
    Sidecar { process_name: String },
}

impl Injection {
    /// Injects; returns the shape it chose.
    fn run(&mut self) -> Result<Shape, Refusal> {
        if !self.pod.is_object() {
            return refuse(None, "the pod template is not a mapping");
        }
        let containers = items(self.pod.pointer("/spec/containers")).to_vec();
        if containers.is_empty() {
            return refuse(None, "the pod has no containers");
        }
        let index = self.target(&containers)?;
        let container = containers[index].clone();
        let name = container
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        self.check_names(&name)?;
        let plan = self.plan(&container, &name)?;
        let stop_signal = self.stop_signal(&container, &plan);
        let grace = self.grace()?;
        let delay = self.settings.shutdown_delay;
        let timing = readiness_timing(delay)
            .ok_or_else(|| Refusal(format!("the shutdown delay {} is shorter than readiness can notice a drain (2s at 1s probes): raise it", duration::format(delay))))?;
        let mut flags = vec![
            format!("--shutdown-delay={}", duration::format(delay)),
            format!(
                "--drain-timeout={}",
                duration::format(self.settings.drain_timeout)
            ),
            format!("--grace-period={grace}s"),
            format!("--stop-signal={}", short_name(stop_signal)),
        ];
        if self.settings.port != 8099 {
            flags.push(format!("--listen=0.0.0.0:{}", self.settings.port));
        }
        let proxy = match self.settings.proxy {
            true => Some(self.proxy_route(&container, &name)?),
            false => None,
        };
        if let Some(route) = proxy {
            flags.push(format!("--proxy={}={}", route.listen, route.app));
        }
        let at = format!("/spec/containers/{index}");
        let shape = match &plan {
            Plan::Wrap { install: true, .. } => Shape::Install,
            Plan::Wrap { .. } => Shape::Wrapper,
            Plan::Sidecar { .. } => Shape::Sidecar,
        };
        match plan {
            Plan::Wrap {
                program,
                install,
                command,
            } => {
                if install {
                    self.installer()?;
                    self.mount(&at)?;
                }
                if let Some(check) = self.ready_check(&container, &name)? {
                    flags.push(format!("--ready-check={check}"));
                }
                let mut argv = vec![program.clone()];
                argv.extend(flags);
                argv.push("--".into());
                argv.extend(command);
                self.set(&format!("{at}/command"), json!(argv))?;
                self.serve(&at, &container, timing)?;
                if let Some(route) = proxy {
                    self.journal.append(
                        &mut self.pod,
                        &format!("{at}/ports"),
                        proxy_port(route),
                    )?;
                }
                self.hook(&at, &name, &program)?;
            }
            Plan::Sidecar { process_name } => {
                self.installer()?;
                self.set("/spec/shareProcessNamespace", json!(true))?;
                let mut argv = vec![
                    WRAPPER_BINARY.to_owned(),
                    "sidecar".to_owned(),
                    format!("--process-name={process_name}"),
                ];
                argv.extend(flags);
                let port = self.settings.port;
                let mut ports = vec![json!({ "name": PORT_NAME, "containerPort": port })];
                ports.extend(proxy.map(proxy_port));
                let sidecar = json!({
                    "name": SIDECAR,
                    "image": self.settings.image,
                    "restartPolicy": "Always",
                    "command": argv,
                    "ports": ports,
                    "readinessProbe": readiness_probe(port, timing),
                    "livenessProbe": liveness_probe(port),
                });
                self.journal
                    .append(&mut self.pod, "/spec/initContainers", sidecar)?;
                let program = format!("{INSTALL_DIR}/lameduck");
                // The sidecar drains every container beside it, so each needs the hook.
                for (index, other) in containers.iter().enumerate() {
                    let other_name = other.get("name").and_then(Value::as_str).unwrap_or("?");
                    let at = format!("/spec/containers/{index}");
                    self.mount(&at)?;
                    self.hook(&at, other_name, &program)?;
                }
                self.note(
                    &name,
                    format!("the sidecar finds the app as the oldest process named '{process_name}' and sends it {}", short_name(stop_signal)),
                );
            }
        }
        self.ensure_annotations()?;
        Ok(shape)
    }

    /// The app's container: the one named by the settings, else the pod's default container,
    /// else the first.
    fn target(&self, containers: &[Value]) -> Result<usize, Refusal> {
        let named = |name: &str| {
            containers
                .iter()
                .position(|c| c.get("name").and_then(Value::as_str) == Some(name))
        };
        if let Some(name) = &self.settings.container {
            return named(name).ok_or_else(|| {
                Refusal(format!(
                    "the pod has no container named \"{name}\" (lameduck.io/container)"
                ))
            });
        }
        let default = self
            .pod
            .pointer("/metadata/annotations/kubectl.kubernetes.io~1default-container")
            .and_then(Value::as_str);
        Ok(default.and_then(named).unwrap_or(0))
    }

    /// Refuses when a name or port inject adds is already taken in the pod.
    fn check_names(&self, target: &str) -> Result<(), Refusal> {
        let volumes = items(self.pod.pointer("/spec/volumes"));
        if volumes
            .iter()
            .any(|v| v.get("name").and_then(Value::as_str) == Some(VOLUME))
        {
            return refuse(
                None,
                format!("the pod already has a volume named \"{VOLUME}\""),
            );
        }
        let port = i64::from(self.settings.port);
        for field in ["initContainers", "containers"] {
            for c in items(self.pod.pointer(&format!("/spec/{field}"))) {
                let name = c.get("name").and_then(Value::as_str).unwrap_or("?");
                if field == "initContainers" && (name == INSTALLER || name == SIDECAR) {
                    return refuse(
                        Some(name),
                        "an init container already has the name inject gives its own",
                    );
                }
                for p in items(c.get("ports")) {
                    if p.get("containerPort").and_then(Value::as_i64) == Some(port) {
                        return refuse(
                            Some(name),
                            format!(
                                "port {port} is taken; choose lameduck's with lameduck.io/port"
                            ),
                        );
                    }
                    if name == target && p.get("name").and_then(Value::as_str) == Some(PORT_NAME) {
                        return refuse(
                            Some(name),
                            format!("a port is already named \"{PORT_NAME}\""),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// The drain proxy in front of the app's serving port (its first TCP port), on the proxy
    /// port, which no container may already use.
    fn proxy_route(&self, container: &Value, name: &str) -> Result<Route, Refusal> {
        let serving = items(container.get("ports")).iter().find(|p| {
            p.get("protocol")
                .and_then(Value::as_str)
                .is_none_or(|p| p == "TCP")
        });
        let Some(app) = serving
            .and_then(|p| p.get("containerPort"))
            .and_then(Value::as_u64)
            .and_then(|n| u16::try_from(n).ok())
        else {
            return refuse(
                Some(name),
                "the proxy needs the app's port: the container declares no TCP port",
            );
        };
        let listen = self.settings.proxy_port;
        if listen == self.settings.port {
            return refuse(
                Some(name),
                format!(
                    "the proxy's port {listen} is lameduck's own: choose another with lameduck.io/proxy-port"
                ),
            );
        }
        for field in ["initContainers", "containers"] {
            for c in items(self.pod.pointer(&format!("/spec/{field}"))) {
                let other = c.get("name").and_then(Value::as_str).unwrap_or("?");
                for p in items(c.get("ports")) {
                    if p.get("containerPort").and_then(Value::as_i64) == Some(i64::from(listen)) {
                        return refuse(
                            Some(other),
                            format!(
                                "port {listen} is taken; choose the proxy's with lameduck.io/proxy-port"
                            ),
                        );
                    }
                    if p.get("name").and_then(Value::as_str) == Some(PROXY_PORT_NAME) {
                        return refuse(
                            Some(other),
                            format!("a port is already named \"{PROXY_PORT_NAME}\""),
                        );
                    }
                }
            }
        }
        Ok(Route {
            listen: std::net::SocketAddr::from(([0, 0, 0, 0], listen)),
            app: std::net::SocketAddr::from(([127, 0, 0, 1], app)),
        })
    }

    /// Chooses the shape. The app's command is never guessed: it is the spec's, or given.
    fn plan(&mut self, container: &Value, name: &str) -> Result<Plan, Refusal> {
        let spec_command = match container.get("command") {
            None | Some(Value::Null) => None,
            Some(value) => match strings(Some(value)) {
                Some(command) if !command.is_empty() => Some(command),
                Some(_) => None,
                None => return refuse(Some(name), "command is not a list of strings"),
            },
        };
        let command = spec_command
            .clone()
            .or_else(|| self.settings.command.clone());
        let repository = image_repository(container);
        let listed = self
            .settings
            .wrapper_images
            .iter()
            .any(|image| image == repository || image == image_name(container));
        let server = known_server(container, command.as_deref());
        let process_name = self.settings.process_name.clone().or_else(|| {
            server
                .and_then(|s| s.commands.first())
                .map(|c| (*c).to_owned())
        });
        let shape = match self.settings.shape {
            Shape::Auto if listed => Shape::Wrapper,
            Shape::Auto if command.is_some() => Shape::Install,
            Shape::Auto if process_name.is_some() => Shape::Sidecar,
            Shape::Auto => {
                return refuse(
                    Some(name),
                    "the spec shows no command and no process name is known: set lameduck.io/command (the image's ENTRYPOINT) for the install shape, or lameduck.io/process-name for the sidecar shape",
                );
            }
            shape => shape,
        };
        let no_command = || {
            refuse(
                Some(name),
                "the spec shows no command, and this shape wraps it: set lameduck.io/command (the image's ENTRYPOINT, and CMD when the spec has no args), or use the sidecar shape",
            )
        };
        if spec_command.is_none() && command.is_some() && shape != Shape::Sidecar {
            self.note(
                name,
                "the app's command comes from lameduck.io/command or --command, not from the spec"
                    .into(),
            );
        }
        Ok(match shape {
            Shape::Wrapper => Plan::Wrap {
                program: WRAPPER_BINARY.into(),
                install: false,
                command: command.map_or_else(no_command, Ok)?,
            },
            Shape::Install | Shape::Auto => Plan::Wrap {
                program: format!("{INSTALL_DIR}/lameduck"),
                install: true,
                command: command.map_or_else(no_command, Ok)?,
            },
            Shape::Sidecar => Plan::Sidecar {
                process_name: process_name.map_or_else(
                    || {
                        refuse(
                            Some(name),
                            "the sidecar shape needs the app's process name: set lameduck.io/process-name",
                        )
                    },
                    Ok,
                )?,
            },
        })
    }

    /// The app's graceful stop signal: given, else the known server's, else TERM.
    fn stop_signal(&self, container: &Value, plan: &Plan) -> Signal {
        let command = match plan {
            Plan::Wrap { command, .. } => Some(command.as_slice()),
            Plan::Sidecar { .. } => None,
        };
        self.settings
            .stop_signal
            .or_else(|| known_server(container, command).map(|s| s.graceful_stop))
            .unwrap_or(Signal::SIGTERM)
    }

    /// Raises `terminationGracePeriodSeconds` to fit the drain (never lowers it); returns it.
    fn grace(&mut self) -> Result<u64, Refusal> {
        let written = self.pod.pointer("/spec/terminationGracePeriodSeconds");
        let current = match written {
            None | Some(Value::Null) => 30,
            Some(value) => value.as_u64().ok_or_else(|| {
                Refusal("terminationGracePeriodSeconds is not a number of seconds".into())
            })?,
        };
        let needed = self
            .settings
            .shutdown_delay
            .saturating_add(self.settings.drain_timeout)
            .saturating_add(GRACE_MARGIN);
        let mut needed_secs = needed.as_secs() + u64::from(needed.subsec_nanos() > 0);
        // lameduck needs the delay plus its margin strictly inside the grace period.
        let floor = self
            .settings
            .shutdown_delay
            .saturating_add(GRACE_MARGIN)
            .as_secs()
            + 1;
        needed_secs = needed_secs.max(floor);
        if current >= needed_secs {
            return Ok(current);
        }
        self.set("/spec/terminationGracePeriodSeconds", json!(needed_secs))?;
        self.notes.push(Note {
            container: None,
            message: format!("terminationGracePeriodSeconds raised from {current} to {needed_secs}: the shutdown delay, drain timeout and lameduck's 2s margin must fit"),
        });
        Ok(needed_secs)
    }

    /// The app's readiness probe as lameduck's `--ready-check`, when it can be one.
    fn ready_check(&mut self, container: &Value, name: &str) -> Result<Option<String>, Refusal> {
        let port_of = |port: Option<&Value>| -> Result<i64, Refusal> {
            resolve_port(container, port).ok_or_else(|| {
                Refusal(format!(
                    "container \"{name}\": the readinessProbe's port {} is not one of the container's ports",
                    port.map_or("(none)".to_owned(), Value::to_string)
                ))
            })
        };
        let Some(probe) = container.get("readinessProbe").filter(|p| p.is_object()) else {
            let first = items(container.get("ports")).iter().find(|p| {
                p.get("protocol")
                    .and_then(Value::as_str)
                    .is_none_or(|p| p == "TCP")
            });
            let Some(port) = first
                .and_then(|p| p.get("containerPort"))
                .and_then(Value::as_i64)
            else {
                self.note(name, "no readinessProbe and no port: lameduck reports ready as soon as the app starts".into());
                return Ok(None);
            };
            self.note(name, format!("no readinessProbe: lameduck reports ready once the app accepts connections on its port {port}"));
            return Ok(Some(format!("tcp://127.0.0.1:{port}")));
        };
        let check = if let Some(get) = probe.get("httpGet") {
            let port = port_of(get.get("port"))?;
            let scheme = get.get("scheme").and_then(Value::as_str).unwrap_or("HTTP");
            if !scheme.eq_ignore_ascii_case("HTTP") {
                self.note(name, format!("the readinessProbe uses {scheme}, which lameduck's ready check does not speak: it checks that port {port} accepts connections"));
                format!("tcp://127.0.0.1:{port}")
            } else {
                if get.get("httpHeaders").is_some() || get.get("host").is_some() {
                    self.note(name, "the readinessProbe's host and headers are not carried into lameduck's ready check".into());
                }
                let path = get.get("path").and_then(Value::as_str).unwrap_or("/");
                let path = if path.starts_with('/') {
                    path.to_owned()
                } else {
                    format!("/{path}")
                };
                format!("http://127.0.0.1:{port}{path}")
            }
        } else if let Some(tcp) = probe.get("tcpSocket") {
            format!("tcp://127.0.0.1:{}", port_of(tcp.get("port"))?)
        } else if let Some(grpc) = probe.get("grpc") {
            let port = grpc.get("port").and_then(Value::as_i64).unwrap_or(0);
            self.note(name, format!("the readinessProbe is gRPC, which lameduck's ready check does not speak: it checks that port {port} accepts connections"));
            format!("tcp://127.0.0.1:{port}")
        } else {
            self.note(name, "the readinessProbe runs a command, which lameduck cannot run as its ready check: it is kept, so readiness follows the app but not the drain".into());
            return Ok(None);
        };
        match ReadyCheck::from_str(&check) {
            Ok(_) => Ok(Some(check)),
            Err(why) => refuse(
                Some(name),
                format!("the readinessProbe cannot become lameduck's ready check: {why}"),
            ),
        }
    }

    /// lameduck's port, readiness and liveness on the container running it.
    fn serve(&mut self, at: &str, container: &Value, timing: (u64, u64)) -> Result<(), Refusal> {
        let port = self.settings.port;
        self.journal.append(
            &mut self.pod,
            &format!("{at}/ports"),
            json!({ "name": PORT_NAME, "containerPort": port }),
        )?;
        let exec_readiness = container
            .get("readinessProbe")
            .is_some_and(|p| p.get("exec").is_some());
        if !exec_readiness {
            self.set(
                &format!("{at}/readinessProbe"),
                readiness_probe(port, timing),
            )?;
        }
        if container.get("livenessProbe").is_none() {
            self.set(&format!("{at}/livenessProbe"), liveness_probe(port))?;
        }
        Ok(())
    }

    /// The in-pod preStop hook, replacing a hook that only sleeps.
    fn hook(&mut self, at: &str, name: &str, program: &str) -> Result<(), Refusal> {
        if let Some(hook) = self.pod.pointer(&format!("{at}/lifecycle/preStop")) {
            if !is_sleep(hook) {
                return refuse(
                    Some(name),
                    "it has a preStop hook of its own, which lameduck's would replace: remove it, or run it from the app's own stop signal handling",
                );
            }
            self.note(name, "its preStop sleep is replaced: lameduck's shutdown delay does that wait, with readiness failing".into());
        }
        self.set(
            &format!("{at}/lifecycle/preStop"),
            prestop_hook(program, self.settings.port),
        )
    }

    /// The installer init container and its emptyDir.
    fn installer(&mut self) -> Result<(), Refusal> {
        let volume = json!({ "name": VOLUME, "emptyDir": {} });
        self.journal
            .append(&mut self.pod, "/spec/volumes", volume)?;
        let installer = json!({
            "name": INSTALLER,
            "image": self.settings.image,
            "command": [WRAPPER_BINARY, "install", INSTALL_DIR],
            "volumeMounts": [{ "name": VOLUME, "mountPath": INSTALL_DIR }],
            "securityContext": {
                "runAsUser": INSTALLER_UID,
                "runAsNonRoot": true,
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "capabilities": { "drop": ["ALL"] },
                "seccompProfile": { "type": "RuntimeDefault" },
            },
        });
        self.journal
            .append(&mut self.pod, "/spec/initContainers", installer)?;
        Ok(())
    }

    /// Mounts the installed lameduck in a container.
    fn mount(&mut self, at: &str) -> Result<(), Refusal> {
        let taken = items(self.pod.pointer(&format!("{at}/volumeMounts")))
            .iter()
            .any(|m| {
                m.get("mountPath")
                    .and_then(Value::as_str)
                    .map(|p| p.trim_end_matches('/'))
                    == Some(INSTALL_DIR)
            });
        if taken {
            let name = self
                .pod
                .pointer(&format!("{at}/name"))
                .and_then(Value::as_str)
                .unwrap_or("?");
            return refuse(
                Some(name),
                format!("something is already mounted at {INSTALL_DIR}"),
            );
        }
        let mount = json!({ "name": VOLUME, "mountPath": INSTALL_DIR, "readOnly": true });
        self.journal
            .append(&mut self.pod, &format!("{at}/volumeMounts"), mount)?;
        Ok(())
    }

    /// Makes sure `metadata.annotations` exists for the record, noting when inject made it.
    fn ensure_annotations(&mut self) -> Result<(), Refusal> {
        if !self
            .pod
            .pointer("/metadata/annotations")
            .is_some_and(Value::is_object)
        {
            self.set("/metadata/annotations", json!({}))?;
        }
        Ok(())
    }

    fn set(&mut self, pointer: &str, value: Value) -> Result<(), Refusal> {
        Ok(self.journal.set(&mut self.pod, pointer, value)?)
    }

    fn note(&mut self, container: &str, message: String) {
        self.notes.push(Note {
            container: Some(container.to_owned()),
            message,
        });
    }
}

/// `(periodSeconds, failureThreshold)` so that a drain is noticed (period × failures + the 1s
/// timeout) within the shutdown delay, at most 2 failures so one slow answer is not a drain.
fn readiness_timing(delay: Duration) -> Option<(u64, u64)> {
    match delay.as_secs() {
        0 | 1 => None,
        2 => Some((1, 1)),
        _ => Some((1, 2)),
    }
}

/// The drain proxy's port on the container running lameduck.
fn proxy_port(route: Route) -> Value {
    json!({ "name": PROXY_PORT_NAME, "containerPort": route.listen.port() })
}

/// The drain proxy's routes in a pod inject injected (none in a pod it did not).
pub fn proxy_routes(template: &Value) -> Vec<Route> {
    if record(template).is_none() {
        return Vec::new();
    }
    ["initContainers", "containers"]
        .iter()
        .flat_map(|field| items(template.pointer(&format!("/spec/{field}"))))
        .filter_map(|c| strings(c.get("command")))
        .flatten()
        .filter_map(|word| word.strip_prefix("--proxy=")?.parse::<Route>().ok())
        .collect()
}

/// A Service port's target as the endpoints resolve it in this pod: a number, or a name among
/// the ports of its containers and native sidecars.
pub fn target_port(template: &Value, target: &Value) -> Option<u16> {
    if let Some(number) = target.as_u64() {
        return u16::try_from(number).ok();
    }
    let name = target.as_str()?;
    let sidecars = items(template.pointer("/spec/initContainers"))
        .iter()
        .filter(|c| c.get("restartPolicy").and_then(Value::as_str) == Some("Always"));
    items(template.pointer("/spec/containers"))
        .iter()
        .chain(sidecars)
        .flat_map(|c| items(c.get("ports")))
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|p| p.get("containerPort"))
        .and_then(Value::as_u64)
        .and_then(|n| u16::try_from(n).ok())
}

fn readiness_probe(port: u16, (period, failures): (u64, u64)) -> Value {
    json!({
        "httpGet": { "path": "/readyz", "port": port },
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 1,
    })
}

fn liveness_probe(port: u16) -> Value {
    json!({
        "httpGet": { "path": "/livez", "port": port },
        "periodSeconds": 10,
        "failureThreshold": 3,
        "timeoutSeconds": 1,
    })
}

/// The preStop hook that starts the drain from inside the pod: `lameduck prestop` at
/// `program`, over the hook socket named after lameduck's port.
fn prestop_hook(program: &str, port: u16) -> Value {
    let mut command = vec![program.to_owned(), "prestop".to_owned()];
    if port != 8099 {
        command.push(format!("--listen=0.0.0.0:{port}"));
    }
    json!({ "exec": { "command": command } })
}

/// Whether a hook only waits: `sleep`, or `exec` of `sleep N` (also through `sh -c`).
fn is_sleep(hook: &Value) -> bool {
    if hook.get("sleep").is_some() {
        return true;
    }
    let Some(argv) = strings(hook.pointer("/exec/command")) else {
        return false;
    };
    let words: Vec<&str> = match argv.as_slice() {
        [shell, c, script] if shell.ends_with("sh") && c == "-c" => {
            script.split_whitespace().collect()
        }
        _ => argv.iter().map(String::as_str).collect(),
    };
    matches!(words.as_slice(), [program, _] if program.rsplit('/').next() == Some("sleep"))
}

/// A probe port as the kubelet resolves it: a number, or a name among the container's ports.
fn resolve_port(container: &Value, port: Option<&Value>) -> Option<i64> {
    let port = port?;
    if let Some(number) = port.as_i64() {
        return Some(number);
    }
    let name = port.as_str()?;
    if let Ok(number) = name.parse() {
        return Some(number);
    }
    items(container.get("ports"))
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))
        .and_then(|p| p.get("containerPort"))
        .and_then(Value::as_i64)
}

/// The known server a container runs, by its image and the app's command (with its args).
fn known_server(container: &Value, command: Option<&[String]>) -> Option<&'static servers::Server> {
    let image = container.get("image").and_then(Value::as_str).unwrap_or("");
    let mut argv: Vec<String> = command.map(<[String]>::to_vec).unwrap_or_default();
    argv.extend(strings(container.get("args")).unwrap_or_default());
    servers::known(image, &argv)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Values a pod spec's fields take: right, wrong and absurd.
    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            proptest::sample::select(
                &[
                    "nginx:1.27",
                    "httpd:2.4",
                    "app:1",
                    "lameduck",
                    "/lameduck",
                    "http",
                    "web",
                    "8099",
                    "80",
                    "/",
                    "/healthz",
                    "HTTPS",
                    "sleep",
                    "5",
                    "sh",
                    "-c",
                    "sleep 5",
                    "Always",
                    "",
                    "lameduck.io/injected",
                    "[\"/x\"]",
                    "{}",
                    "QUIT",
                    "5s",
                    "disabled",
                    "sidecar",
                    "wrapper",
                    "install",
                    "bogus",
                ][..]
            )
            .prop_map(|w| json!(w)),
            any::<i64>().prop_map(|n| json!(n)),
            (0i64..70000).prop_map(|n| json!(n)),
            Just(Value::Null),
            Just(json!(true)),
        ]
    }

    /// A tree keyed by the fields inject reads, nested.
    fn tree() -> impl Strategy<Value = Value> {
        scalar().prop_recursive(4, 48, 5, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::vec(
                    (
                        proptest::sample::select(
                            &[
                                "name",
                                "port",
                                "path",
                                "scheme",
                                "httpGet",
                                "tcpSocket",
                                "grpc",
                                "exec",
                                "command",
                                "sleep",
                                "seconds",
                                "containerPort",
                                "protocol",
                                "preStop",
                                "mountPath",
                                "host",
                                "httpHeaders",
                            ][..]
                        ),
                        inner,
                    ),
                    0..5,
                )
                .prop_map(|entries| Value::Object(
                    entries
                        .into_iter()
                        .map(|(k, v)| (k.to_owned(), v))
                        .collect()
                )),
            ]
        })
    }

    fn maybe(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
        proptest::collection::vec(
            proptest::option::of(prop_oneof![2 => scalar(), 1 => tree()]),
            keys.len(),
        )
        .prop_map(move |values| {
            Value::Object(
                keys.iter()
                    .zip(values)
                    .filter_map(|(k, v)| Some(((*k).to_owned(), v?)))
                    .collect(),
            )
        })
    }

    fn container() -> impl Strategy<Value = Value> {
        (
            maybe(&[
                "name",
                "image",
                "command",
                "args",
                "ports",
                "readinessProbe",
                "livenessProbe",
                "lifecycle",
                "volumeMounts",
            ]),
            proptest::option::of(proptest::collection::vec(scalar(), 0..4)),
            proptest::option::of(tree()),
        )
            .prop_map(|(mut c, command, probe)| {
                if let Some(command) = command {
                    c["command"] = Value::Array(command);
                }
                if let Some(probe) = probe {
                    c["readinessProbe"] = probe;
                }
                c
            })
    }

    fn pod() -> impl Strategy<Value = Value> {
        (
            proptest::collection::vec(container(), 0..3),
            proptest::option::of(proptest::collection::vec(container(), 0..2)),
            maybe(&[
                "terminationGracePeriodSeconds",
                "shareProcessNamespace",
                "volumes",
                "initContainers",
            ]),
            maybe(&[
                "lameduck.io/shape",
                "lameduck.io/command",
                "lameduck.io/container",
                "lameduck.io/port",
                "lameduck.io/injected",
                "kubectl.kubernetes.io/default-container",
            ]),
        )
            .prop_map(|(containers, init, mut spec, annotations)| {
                spec["containers"] = Value::Array(containers);
                if let Some(init) = init {
                    spec["initContainers"] = Value::Array(init);
                }
                json!({ "metadata": { "annotations": annotations }, "spec": spec })
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Any pod spec: inject never panics, refuses without touching it, and what it
        /// injects comes back whole with remove.
        #[test]
        fn arbitrary_pod_specs_never_panic_and_remove_undoes_inject(original in pod(), tree in tree()) {
            for mut input in [original, tree] {
                let before = input.clone();
                match inject_pod(&mut input, &Options::default(), &Context::default()) {
                    Err(_) => prop_assert_eq!(&input, &before),
                    Ok(_) if record(&before).is_none() && input != before => {
                        prop_assert!(remove_pod(&mut input).is_ok());
                        prop_assert_eq!(&input, &before);
                    }
                    Ok(_) => {}
                }
                let _ = is_injected(&input);
                let _ = remove_pod(&mut input);
            }
        }
    }

    fn template(container: Value) -> Value {
        json!({
            "metadata": { "labels": { "app": "web" } },
            "spec": { "containers": [container] },
        })
    }

    fn inject(pod: &mut Value) -> Result<Vec<Note>, Refusal> {
        inject_pod(pod, &Options::default(), &Context::default())
    }

    fn app() -> Value {
        json!({ "name": "app", "image": "registry.example/team/app:1.2", "command": ["/app", "serve"],
                "ports": [{ "name": "web", "containerPort": 8080 }],
                "readinessProbe": { "tcpSocket": { "port": "web" } } })
    }

    #[test]
    fn inject_then_remove_gives_back_the_template() {
        let original = template(app());
        let mut pod = original.clone();
        inject(&mut pod).unwrap();
        assert_ne!(pod, original);
        assert!(is_injected(&pod));
        assert!(remove_pod(&mut pod).unwrap());
        assert_eq!(pod, original);
        assert!(!is_injected(&pod));
    }

    #[test]
    fn injecting_twice_is_injecting_once() {
        let mut once = template(app());
        inject(&mut once).unwrap();
        let mut twice = once.clone();
        inject(&mut twice).unwrap();
        assert_eq!(twice, once);
    }

    #[test]
    fn a_named_tcp_probe_becomes_the_ready_check_on_its_number() {
        let mut pod = template(app());
        inject(&mut pod).unwrap();
        let command = strings(pod.pointer("/spec/containers/0/command")).unwrap();
        assert!(
            command.contains(&"--ready-check=tcp://127.0.0.1:8080".to_owned()),
            "{command:?}"
        );
        assert_eq!(
            command.first().map(String::as_str),
            Some("/opt/lameduck/lameduck")
        );
        assert_eq!(&command[command.len() - 3..], ["--", "/app", "serve"]);
        assert_eq!(
            pod.pointer("/spec/containers/0/readinessProbe/httpGet/path"),
            Some(&json!("/readyz"))
        );
    }

    #[test]
    fn without_a_command_or_process_name_the_refusal_names_the_container() {
        let mut pod = template(json!({ "name": "app", "image": "app:1" }));
        let before = pod.clone();
        let refusal = inject(&mut pod).unwrap_err();
        assert!(refusal.0.starts_with("container \"app\": "), "{refusal}");
        assert!(refusal.0.contains("lameduck.io/command"), "{refusal}");
        assert_eq!(pod, before, "a refusal changes nothing");
    }

    #[test]
    fn nginx_without_a_command_gets_the_sidecar_shape() {
        let mut pod = template(json!({ "name": "nginx", "image": "nginx:1.27" }));
        inject(&mut pod).unwrap();
        assert_eq!(
            pod.pointer("/spec/shareProcessNamespace"),
            Some(&json!(true))
        );
        let sidecar = &pod["spec"]["initContainers"][1];
        assert_eq!(sidecar["restartPolicy"], json!("Always"));
        let command = strings(sidecar.get("command")).unwrap();
        assert!(
            command.contains(&"--process-name=nginx".to_owned()),
            "{command:?}"
        );
        assert!(
            command.contains(&"--stop-signal=QUIT".to_owned()),
            "{command:?}"
        );
        assert!(pod.pointer("/spec/containers/0/command").is_none());
    }

    #[test]
    fn an_annotation_gives_the_command_and_overrides_the_flags() {
        let mut pod =
            template(json!({ "name": "app", "image": "app:1", "args": ["--port", "80"] }));
        let annotations = json!({ "lameduck.io/command": "[\"/entrypoint\"]", "lameduck.io/shutdown-delay": "9s" });
        let context = Context {
            workload_annotations: annotations.as_object(),
        };
        inject_pod(&mut pod, &Options::default(), &context).unwrap();
        let command = strings(pod.pointer("/spec/containers/0/command")).unwrap();
        assert!(
            command.contains(&"--shutdown-delay=9s".to_owned()),
            "{command:?}"
        );
        assert_eq!(command.last().map(String::as_str), Some("/entrypoint"));
        assert_eq!(
            pod.pointer("/spec/containers/0/args"),
            Some(&json!(["--port", "80"]))
        );
    }

    #[test]
    fn an_exec_readiness_probe_is_kept_and_said() {
        let mut container = app();
        container["readinessProbe"] = json!({ "exec": { "command": ["/ready"] } });
        let mut pod = template(container);
        let notes = inject(&mut pod).unwrap();
        assert_eq!(
            pod.pointer("/spec/containers/0/readinessProbe/exec/command/0"),
            Some(&json!("/ready"))
        );
        assert!(
            notes.iter().any(|n| n.message.contains("runs a command")),
            "{notes:?}"
        );
    }

    #[test]
    fn the_grace_period_is_raised_when_short_and_never_lowered() {
        let mut pod = template(app());
        pod["spec"]["terminationGracePeriodSeconds"] = json!(10);
        inject(&mut pod).unwrap();
        assert_eq!(
            pod.pointer("/spec/terminationGracePeriodSeconds"),
            Some(&json!(27))
        );
        let mut long = template(app());
        long["spec"]["terminationGracePeriodSeconds"] = json!(120);
        inject(&mut long).unwrap();
        assert_eq!(
            long.pointer("/spec/terminationGracePeriodSeconds"),
            Some(&json!(120))
        );
        let command = strings(long.pointer("/spec/containers/0/command")).unwrap();
        assert!(
            command.contains(&"--grace-period=120s".to_owned()),
            "{command:?}"
        );
    }

    #[test]
    fn the_stop_signal_comes_from_the_known_servers() {
        let mut pod = template(
            json!({ "name": "web", "image": "httpd:2.4", "command": ["httpd-foreground"] }),
        );
        inject(&mut pod).unwrap();
        let command = strings(pod.pointer("/spec/containers/0/command")).unwrap();
        assert!(
            command.contains(&"--stop-signal=WINCH".to_owned()),
            "{command:?}"
        );
        let mut unknown = template(app());
        inject(&mut unknown).unwrap();
        let command = strings(unknown.pointer("/spec/containers/0/command")).unwrap();
        assert!(
            command.contains(&"--stop-signal=TERM".to_owned()),
            "{command:?}"
        );
    }

    #[test]
    fn a_pod_running_lameduck_by_hand_is_left_alone() {
        let mut pod = template(
            json!({ "name": "app", "image": "app:1", "command": ["/lameduck", "--", "app"] }),
        );
        let before = pod.clone();
        let notes = inject(&mut pod).unwrap();
        assert_eq!(pod, before);
        assert!(is_injected(&pod));
        assert_eq!(notes.len(), 1);
    }
}
