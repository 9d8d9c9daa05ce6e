//! `kubectl lameduck inject FILE...`: prints the same manifests with lameduck added, in the
//! shape and with the numbers that `kubectl lameduck lint` proves right, or gives them back
//! with `--remove`.
//!
//! # The API (used by the command and by the admission webhook)
//! Everything decided about a pod is decided in [`pod`], on a pod template as a
//! `serde_json::Value` (`{metadata, spec}`; a whole Pod works too, its other fields are left
//! alone):
//! - [`inject_pod`]`(&mut template, &Options, &Context) -> Result<Vec<Note>, Refusal>`:
//!   [`Options`] come from flags (the webhook: its defaults); `lameduck.io/...` annotations on
//!   the workload ([`Context::workload_annotations`]), then on the pod, override them. On
//!   success the template is injected and the notes say what the user should know (one
//!   sentence each, naming the container). A [`Refusal`](refusal::Refusal) is one line naming the container, and
//!   leaves the template untouched. The result has passed lint's pod rules in-process.
//!   Injecting an injected pod again gives the same pod; a pod that already runs lameduck some
//!   other way, or is annotated `lameduck.io/inject: disabled`, is left as it is, with a note.
//! - [`is_injected`]`(&template) -> bool`: the pod already runs lameduck, in any shape.
//! - [`remove_pod`]`(&mut template) -> Result<bool, Refusal>`: gives back exactly the template
//!   inject was given, from the record inject keeps in the `lameduck.io/injected` annotation.
//!
//! A webhook computes its JSONPatch as the difference between the pod before and after
//! `inject_pod`, so the two make each decision once, here.
//!
//! # Layout
//! - `pod` decides (shape, command, flags, probes, hook, grace period, stop signal);
//!   `journal` records each change for `--remove`.
//! - `documents` reads and writes the YAML or JSON stream, keeping unchanged documents' text.
//! - `check` runs lint on the result; this module runs the command and adds budgets.

mod check;
mod documents;
mod journal;
pub mod pod;
mod refusal;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Map, Value, json};

use self::documents::Stream;
use self::journal::Journal;
pub use self::pod::{Context, Options, Shape, inject_pod, injected, is_injected, remove_pod};
use crate::EXIT_USAGE;
use crate::lint::report::Rule;
use ::lameduck::duration;
use ::lameduck::signals::SignalArg;

/// Exit code when a workload cannot be injected, or the result would not lint clean.
const EXIT_REFUSED: i32 = 1;

/// Marks a PodDisruptionBudget that inject added, so `--remove` takes it away again.
const ADDED_BUDGET: &str = "pdb";
/// Marks a budget that inject added to a single JSON object by making both a List.
const ADDED_BUDGET_IN_LIST: &str = "pdb, in a List";

/// The kinds whose pods inject changes; every other kind passes through unchanged.
const WORKLOADS: &[&str] = &[
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Pod",
];

/// The settings flags of `inject` and of `webhook` (for the webhook, the cluster's defaults):
/// one definition, so the two commands cannot drift. A pod's `lameduck.io/...` annotations,
/// and a workload's, override them.
#[derive(clap::Args, Debug)]
pub struct SettingArgs {
    /// How lameduck goes into the pod (annotation lameduck.io/shape).
    #[arg(long, value_name = "SHAPE", default_value = "auto")]
    pub shape: Shape,

    /// lameduck's --shutdown-delay (annotation lameduck.io/shutdown-delay).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = duration::parse)]
    pub shutdown_delay: Duration,

    /// lameduck's --drain-timeout (annotation lameduck.io/drain-timeout).
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = duration::parse)]
    pub drain_timeout: Duration,

    /// The lameduck image the installer and the sidecar run (annotation lameduck.io/image).
    #[arg(long, value_name = "IMAGE", default_value_t = Options::default().image)]
    pub image: String,

    /// An image that already contains /lameduck: auto gives it the wrapper shape (repeatable).
    #[arg(long = "wrapper-image", value_name = "IMAGE")]
    pub wrapper_images: Vec<String>,

    /// lameduck's port (annotation lameduck.io/port).
    #[arg(long, value_name = "PORT", default_value_t = 8099, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
}

impl SettingArgs {
    /// The options these flags give; what they do not set is [`Options::default`]'s.
    pub fn options(&self) -> Options {
        Options {
            shape: self.shape,
            shutdown_delay: self.shutdown_delay,
            drain_timeout: self.drain_timeout,
            image: self.image.clone(),
            wrapper_images: self.wrapper_images.clone(),
            port: self.port,
            ..Options::default()
        }
    }
}

/// Flags of `kubectl lameduck inject`.
#[derive(clap::Args, Debug)]
pub struct InjectArgs {
    /// Manifest files (multi-document YAML, a List, or JSON); `-` reads standard input.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,

    #[command(flatten)]
    pub settings: SettingArgs,

    // The app's own facts: they name one app, so they are not the webhook's (a pod says them
    // by annotation).
    /// The app's graceful stop signal [default: the known server's, else TERM] (annotation lameduck.io/stop-signal).
    #[arg(long, value_name = "SIGNAL")]
    pub stop_signal: Option<SignalArg>,

    /// The app's command when the spec has none: the image's ENTRYPOINT (annotation lameduck.io/command).
    #[arg(long, value_name = "COMMAND")]
    pub command: Option<String>,

    /// The app's container [default: kubectl's default container, else the first] (annotation lameduck.io/container).
    #[arg(long, value_name = "NAME")]
    pub container: Option<String>,

    /// The app's process name, for the sidecar shape (annotation lameduck.io/process-name).
    #[arg(long, value_name = "NAME")]
    pub process_name: Option<String>,

    /// Put lameduck's drain proxy in front of the app's port, and point the Services in the input that select the pods at it (annotation lameduck.io/proxy: "true").
    #[arg(long)]
    pub proxy: bool,

    /// The drain proxy's port (annotation lameduck.io/proxy-port).
    #[arg(long, value_name = "PORT", default_value_t = 8098, value_parser = clap::value_parser!(u16).range(1..))]
    pub proxy_port: u16,

    /// Add a PodDisruptionBudget (minAvailable: 1) for each workload that no budget in the input selects.
    #[arg(long)]
    pub pdb: bool,

    /// Take out what inject put in (and the budgets it added).
    #[arg(long)]
    pub remove: bool,
}

impl InjectArgs {
    fn options(&self) -> Result<Options, String> {
        let command = match &self.command {
            Some(text) => {
                Some(pod::parse_command(text).map_err(|why| format!("--command: {why}"))?)
            }
            None => None,
        };
        Ok(Options {
            stop_signal: self.stop_signal.map(|s| s.0),
            command,
            container: self.container.clone(),
            process_name: self.process_name.clone(),
            proxy: self.proxy,
            proxy_port: self.proxy_port,
            ..self.settings.options()
        })
    }
}

/// One input file, parsed.
struct Input {
    name: String,
    stream: Stream,
}

/// An object inside a document: `None` for the document itself, `Some(N)` for `items[N]`.
type Place = (usize, usize, Option<usize>);

/// Runs `kubectl lameduck inject`; returns 0, 1 (refused: nothing is printed) or 2.
pub fn run(args: &InjectArgs) -> i32 {
    let options = match args.options() {
        Ok(options) => options,
        Err(why) => {
            crate::say(format_args!("kubectl-lameduck: inject: {why}"));
            return EXIT_USAGE;
        }
    };
    let mut inputs = Vec::new();
    let mut unreadable = false;
    for file in &args.files {
        let read = crate::lint::read_text(file).and_then(|(name, text)| {
            documents::read(&text)
                .map(|stream| Input {
                    name: name.clone(),
                    stream,
                })
                .map_err(|err| crate::lint::InputError::at(name, err.line, err.reason))
        });
        match read {
            Ok(input) => inputs.push(input),
            Err(err) => {
                crate::say(format_args!("kubectl-lameduck: inject: {err}"));
                unreadable = true;
            }
        }
    }
    if unreadable {
        return EXIT_USAGE;
    }
    let mut run = Run {
        inputs,
        ours: Vec::new(),
        refused: false,
    };
    if args.remove {
        run.remove();
    } else {
        run.inject(&options);
        if !run.refused {
            run.services();
        }
        if !run.refused {
            run.budgets(args.pdb);
        }
    }
    if run.refused {
        return EXIT_REFUSED;
    }
    let mut out = String::new();
    for input in &run.inputs {
        match input.stream.write() {
            Ok(text) => out.push_str(&text),
            Err(why) => {
                crate::say(format_args!(
                    "kubectl-lameduck: inject: {}: cannot write the result: {why}",
                    input.name
                ));
                return EXIT_REFUSED;
            }
        }
    }
    // A closed stdout (inject piped into `head`) must not panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
    0
}

/// The command's state: the inputs as they change, and which objects inject changed.
struct Run {
    inputs: Vec<Input>,
    ours: Vec<Place>,
    refused: bool,
}

impl Run {
    /// Says one line about an object.
    fn say(&self, place: Place, object: &Value, message: &str) {
        let (file, doc, _) = place;
        let input = &self.inputs[file];
        crate::say(format_args!(
            "kubectl-lameduck: inject: {}:{}: {}: {message}",
            input.name,
            input.stream.documents[doc].line,
            describe(object)
        ));
    }

    /// Injects every workload's pod.
    fn inject(&mut self, options: &Options) {
        self.each_object(|run, place, object| {
            let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
            if !WORKLOADS.contains(&kind) {
                return;
            }
            let workload_annotations = (kind != "Pod")
                .then(|| {
                    object
                        .pointer("/metadata/annotations")
                        .and_then(Value::as_object)
                        .cloned()
                })
                .flatten();
            let context = Context {
                workload_annotations: workload_annotations.as_ref(),
            };
            let shown = object.clone();
            let Some(template) = template_of(object) else {
                return;
            };
            match inject_pod(template, options, &context) {
                Ok(notes) => {
                    for note in notes {
                        run.say(place, &shown, &note.to_string());
                    }
                }
                Err(refusal) => {
                    run.say(place, &shown, &format!("cannot inject: {refusal}"));
                    run.refused = true;
                }
            }
        });
    }

    /// Points the Services that select proxied pods at the proxy: each port whose target is
    /// the app's port targets the proxy's instead. A Service inject pointed before is first
    /// given back its original. Warns of proxied pods that no Service in the input selects.
    fn services(&mut self) {
        let mut proxied = Vec::new();
        for (file, input) in self.inputs.iter().enumerate() {
            for (doc, document) in input.stream.documents.iter().enumerate() {
                let Some(value) = document.current() else {
                    continue;
                };
                for (item, object) in objects(value).into_iter().enumerate() {
                    let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
                    let mut copy = object.clone();
                    let Some(template) = WORKLOADS
                        .contains(&kind)
                        .then(|| template_of(&mut copy).cloned())
                        .flatten()
                    else {
                        continue;
                    };
                    let routes = pod::proxy_routes(&template);
                    if routes.is_empty() {
                        continue;
                    }
                    let place = (file, doc, is_list(value).then_some(item));
                    proxied.push((place, object.clone(), template, routes));
                }
            }
        }
        let mut selected = vec![false; proxied.len()];
        self.each_object(|run, place, object| {
            if object.get("kind").and_then(Value::as_str) != Some("Service") {
                return;
            }
            let shown = object.clone();
            let mut service = object.clone();
            if let Err(refusal) = remove_pod(&mut service) {
                run.say(place, &shown, &format!("cannot inject: {refusal}"));
                run.refused = true;
                return;
            }
            let mut journal = Journal::default();
            for (index, (_, workload, template, routes)) in proxied.iter().enumerate() {
                if workload.pointer("/metadata/namespace") != service.pointer("/metadata/namespace")
                    || !service_selects(&service, template)
                {
                    continue;
                }
                selected[index] = true;
                let count = service
                    .pointer("/spec/ports")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len);
                for port in 0..count {
                    let entry = &service["spec"]["ports"][port];
                    let Some(target) = entry.get("targetPort").or_else(|| entry.get("port")) else {
                        continue;
                    };
                    let Some(number) = pod::target_port(template, target) else {
                        continue;
                    };
                    let Some(route) = routes.iter().find(|r| r.app.port() == number) else {
                        continue;
                    };
                    let pointer = format!("/spec/ports/{port}/targetPort");
                    if let Err(mismatch) =
                        journal.set(&mut service, &pointer, json!(route.listen.port()))
                    {
                        run.say(place, &shown, &format!("cannot inject: {}", mismatch.0));
                        run.refused = true;
                        return;
                    }
                }
            }
            if !journal.is_empty() {
                let has_annotations = service
                    .pointer("/metadata/annotations")
                    .is_some_and(Value::is_object);
                let made = has_annotations
                    || journal
                        .set(&mut service, "/metadata/annotations", json!({}))
                        .is_ok();
                let record = json!({ "undo": journal.to_value() }).to_string();
                if let Some(annotations) = service
                    .pointer_mut("/metadata/annotations")
                    .and_then(Value::as_object_mut)
                    .filter(|_| made)
                {
                    annotations.insert(pod::INJECTED.into(), Value::String(record));
                }
            }
            *object = service;
        });
        for ((place, workload, _, routes), selected) in proxied.iter().zip(selected) {
            if !selected {
                let ports: Vec<String> = routes
                    .iter()
                    .map(|r| format!("{} (the app's {})", r.listen.port(), r.app.port()))
                    .collect();
                self.say(*place, workload, &format!("warning: no Service in the input selects these pods: point the targetPort of the Services that do at the drain proxy's port {}, or their clients bypass the drain", ports.join(", ")));
            }
        }
    }

    /// Takes out what inject put in, and the budgets it added.
    fn remove(&mut self) {
        self.each_object(|run, place, object| {
            let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
            if kind == "Service" {
                let shown = object.clone();
                if let Err(refusal) = remove_pod(object) {
                    run.say(place, &shown, &format!("cannot remove: {refusal}"));
                    run.refused = true;
                }
                return;
            }
            if WORKLOADS.contains(&kind) {
                let shown = object.clone();
                let Some(template) = template_of(object) else {
                    return;
                };
                match remove_pod(template) {
                    Ok(false) if is_injected(template) => {
                        run.say(
                            place,
                            &shown,
                            "runs lameduck that inject did not put in; left as it is",
                        );
                    }
                    Ok(_) => {}
                    Err(refusal) => {
                        run.say(place, &shown, &format!("cannot remove: {refusal}"));
                        run.refused = true;
                    }
                }
            }
        });
        for input in &mut self.inputs {
            for document in &mut input.stream.documents {
                let Some(value) = document.current() else {
                    continue;
                };
                if added_budget(value) {
                    document.changed = None;
                    document.dropped = true;
                    continue;
                }
                if is_list(value) {
                    let mut list = value.clone();
                    if let Some(items) = list.get_mut("items").and_then(Value::as_array_mut) {
                        let made_by_inject = items
                            .iter()
                            .any(|item| budget_mark(item) == Some(ADDED_BUDGET_IN_LIST));
                        items.retain(|item| !added_budget(item));
                        if made_by_inject && items.len() == 1 {
                            list = items.remove(0);
                        }
                    }
                    if Some(&list) != document.value.as_ref() {
                        document.changed = Some(list);
                    } else {
                        document.changed = None;
                    }
                }
            }
        }
    }

    /// Calls `f` on every object of every document (the items of a List one by one), on a
    /// copy of what it is now; a document whose copy differs from what was read is marked
    /// changed, one that came back to it unchanged.
    fn each_object(&mut self, mut f: impl FnMut(&mut Run, Place, &mut Value)) {
        for file in 0..self.inputs.len() {
            for doc in 0..self.inputs[file].stream.documents.len() {
                let Some(original) = self.inputs[file].stream.documents[doc].current().cloned()
                else {
                    continue;
                };
                let mut value = original.clone();
                if is_list(&value) {
                    let count = value
                        .get("items")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len);
                    for item in 0..count {
                        let before = value["items"][item].clone();
                        f(self, (file, doc, Some(item)), &mut value["items"][item]);
                        if value["items"][item] != before {
                            self.ours.push((file, doc, Some(item)));
                        }
                    }
                } else {
                    f(self, (file, doc, None), &mut value);
                    if value != original {
                        self.ours.push((file, doc, None));
                    }
                }
                let document = &mut self.inputs[file].stream.documents[doc];
                if document.value.as_ref() != Some(&value) {
                    document.changed = Some(value);
                } else {
                    document.changed = None;
                }
            }
        }
    }

    /// Lints the result; adds budgets (with `--pdb`) or warns of their absence, warns of low
    /// replicas, and refuses when an object inject changed would not lint clean.
    fn budgets(&mut self, add: bool) {
        let Some(findings) = self.lint() else {
            return;
        };
        let mut budgets = Vec::new();
        for finding in &findings {
            let Some(place) = place_of(&finding.file, &finding.path) else {
                continue;
            };
            let Some(object) = self.object(place).cloned() else {
                continue;
            };
            match finding.rule {
                Rule::PdbMissing if add => {
                    let budget = self.budget_for(&object);
                    self.say(
                        place,
                        &object,
                        "added a PodDisruptionBudget with minAvailable: 1",
                    );
                    budgets.push((place, budget));
                }
                Rule::PdbMissing | Rule::ReplicasLow if self.ours.contains(&place) => {
                    self.say(
                        place,
                        &object,
                        &format!("warning: {} [{}]", finding.message, finding.rule.id()),
                    );
                }
                _ => {}
            }
        }
        let added = !budgets.is_empty();
        // Last first, so that inserting into a List never moves a place still to come.
        budgets.sort_by_key(|(place, _)| std::cmp::Reverse(*place));
        for (place, budget) in budgets {
            self.add_budget(place, budget);
        }
        let findings = if added {
            match self.lint() {
                Some(findings) => findings,
                None => return,
            }
        } else {
            findings
        };
        for finding in findings
            .iter()
            .filter(|f| f.rule.severity() == crate::lint::report::Severity::Error)
        {
            let Some(place) = place_of(&finding.file, &finding.path) else {
                continue;
            };
            let added_here = finding.file.matches(':').count() == 3;
            if !added_here && !self.ours.contains(&place) {
                continue;
            }
            let object = self.object(place).cloned().unwrap_or(Value::Null);
            self.say(
                place,
                &object,
                &format!("cannot inject: {}", check::bug(finding)),
            );
            self.refused = true;
        }
    }

    /// Puts a budget right after its workload: the next document, or the next item of a List.
    fn add_budget(&mut self, (file, doc, item): Place, mut budget: Value) {
        let format = self.inputs[file].stream.format;
        let document = &mut self.inputs[file].stream.documents[doc];
        let Some(at) = item else {
            if format == documents::Format::Yaml {
                document.added.push(budget);
                return;
            }
            // One JSON value stays one: the workload and its budget go into a List.
            budget["metadata"]["annotations"][pod::INJECTED] = json!(ADDED_BUDGET_IN_LIST);
            let workload = document.current().cloned().unwrap_or(Value::Null);
            document.changed = Some(json!({
                "apiVersion": "v1",
                "kind": "List",
                "items": [workload, budget],
            }));
            for place in &mut self.ours {
                if *place == (file, doc, None) {
                    *place = (file, doc, Some(0));
                }
            }
            self.ours.push((file, doc, Some(1)));
            return;
        };
        let mut list = document.current().cloned().unwrap_or(Value::Null);
        let Some(items) = list.get_mut("items").and_then(Value::as_array_mut) else {
            return;
        };
        items.insert(at + 1, budget);
        document.changed = Some(list);
        for (f, d, i) in &mut self.ours {
            if (*f, *d) == (file, doc)
                && let Some(i) = i
                && *i > at
            {
                *i += 1;
            }
        }
        self.ours.push((file, doc, Some(at + 1)));
    }

    /// Lints every output document together; `None` (and refused) when that fails.
    fn lint(&mut self) -> Option<Vec<crate::lint::report::Finding>> {
        let mut texts = Vec::new();
        for (file, input) in self.inputs.iter().enumerate() {
            let documents = match input.stream.texts() {
                Ok(documents) => documents,
                Err(why) => {
                    crate::say(format_args!(
                        "kubectl-lameduck: inject: {}: cannot write the result: {why}",
                        input.name
                    ));
                    self.refused = true;
                    return None;
                }
            };
            for ((doc, added), text) in documents {
                let name = match added {
                    None => format!("{file}:{doc}"),
                    Some(added) => format!("{file}:{doc}:+:{added}"),
                };
                texts.push((name, text));
            }
        }
        match check::stream(&texts) {
            Ok(findings) => Some(findings),
            Err(refusal) => {
                crate::say(format_args!("kubectl-lameduck: inject: {refusal}"));
                self.refused = true;
                None
            }
        }
    }

    /// The object at a place, as it will be written.
    fn object(&self, (file, doc, item): Place) -> Option<&Value> {
        let value = self
            .inputs
            .get(file)?
            .stream
            .documents
            .get(doc)?
            .current()?;
        match item {
            Some(item) => value.get("items")?.get(item),
            None => Some(value),
        }
    }

    /// A budget keeping one of the workload's pods, named after it unless that name is taken.
    fn budget_for(&self, workload: &Value) -> Value {
        let name = workload
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("workload");
        let namespace = workload.pointer("/metadata/namespace").cloned();
        let taken = self
            .inputs
            .iter()
            .flat_map(|i| &i.stream.documents)
            .filter_map(|d| d.current())
            .flat_map(objects)
            .any(|o| {
                o.get("kind").and_then(Value::as_str) == Some("PodDisruptionBudget")
                    && o.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
            });
        let name = if taken {
            format!("{name}-lameduck")
        } else {
            name.to_owned()
        };
        let selector = match workload.pointer("/spec/selector") {
            Some(selector) if selector.is_object() => selector.clone(),
            _ => {
                json!({ "matchLabels": workload.pointer("/spec/template/metadata/labels").cloned().unwrap_or(json!({})) })
            }
        };
        let mut metadata = Map::new();
        metadata.insert("name".into(), json!(name));
        if let Some(namespace) = namespace {
            metadata.insert("namespace".into(), namespace);
        }
        metadata.insert("annotations".into(), json!({ pod::INJECTED: ADDED_BUDGET }));
        json!({
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": metadata,
            "spec": { "minAvailable": 1, "selector": selector },
        })
    }
}

/// The objects of a document: itself, or the items of a List.
fn objects(value: &Value) -> Vec<&Value> {
    if is_list(value) {
        value
            .get("items")
            .and_then(Value::as_array)
            .map(|items| items.iter().collect())
            .unwrap_or_default()
    } else {
        vec![value]
    }
}

fn is_list(value: &Value) -> bool {
    value.get("kind").and_then(Value::as_str) == Some("List")
}

fn added_budget(value: &Value) -> bool {
    matches!(
        budget_mark(value),
        Some(ADDED_BUDGET | ADDED_BUDGET_IN_LIST)
    )
}

/// The mark inject leaves on a budget it added.
fn budget_mark(value: &Value) -> Option<&str> {
    if value.get("kind").and_then(Value::as_str) != Some("PodDisruptionBudget") {
        return None;
    }
    value
        .pointer(&format!(
            "/metadata/annotations/{}",
            journal::escape(pod::INJECTED)
        ))
        .and_then(Value::as_str)
}

/// Whether a Service's `selector` selects the pod: every key with its value among the pod's
/// labels. An empty or missing selector selects nothing (the Service has no endpoints).
fn service_selects(service: &Value, template: &Value) -> bool {
    let Some(selector) = service
        .pointer("/spec/selector")
        .and_then(Value::as_object)
        .filter(|s| !s.is_empty())
    else {
        return false;
    };
    let labels = template.pointer("/metadata/labels");
    selector
        .iter()
        .all(|(key, value)| labels.and_then(|l| l.get(key)) == Some(value))
}

/// The pod template of a workload, or a Pod itself.
fn template_of(object: &mut Value) -> Option<&mut Value> {
    if object.get("kind").and_then(Value::as_str) == Some("Pod") {
        Some(object)
    } else {
        object
            .pointer_mut("/spec/template")
            .filter(|t| t.is_object())
    }
}

/// `Kind/name`, as messages name an object.
fn describe(object: &Value) -> String {
    format!(
        "{}/{}",
        object.get("kind").and_then(Value::as_str).unwrap_or("?"),
        object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("?")
    )
}

/// The place of a finding: its source name (`FILE:DOC`, or `FILE:DOC:+:N` for an added
/// budget) and the `items[N]` its path starts with.
fn place_of(source: &str, path: &str) -> Option<Place> {
    let mut parts = source.split(':');
    let file = parts.next()?.parse().ok()?;
    let doc = parts.next()?.parse().ok()?;
    let item = path
        .strip_prefix("items[")
        .and_then(|rest| rest.split(']').next())
        .and_then(|n| n.parse().ok());
    Some((file, doc, item))
}
