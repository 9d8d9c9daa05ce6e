//! `kubectl lameduck lint FILE...`: checks Kubernetes manifests for the pod-spec half of a
//! zero-downtime shutdown (preStop hook, probes, grace period, replicas, disruption budgets,
//! a known server's stop signal, a sidecar's reach) against the lameduck flags they run with.
//!
//! This module owns the command: reading the files, running the checks over all of them
//! together, printing the findings and choosing the exit code. `yaml` turns text into
//! trees, `manifest` reads Kubernetes objects from them, `lameduck` reads lameduck's role and
//! settings, `drain` and `availability` hold the rules, and `report` the findings.

mod availability;
mod drain;
mod lameduck;
mod manifest;
pub mod report;
mod yaml;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use clap::ValueEnum;

use self::manifest::Object;
use self::report::{Finding, Findings, Severity};
use crate::EXIT_USAGE;

/// Exit code when an error-level finding exists.
const EXIT_FINDINGS: i32 = 1;

/// Flags of `kubectl lameduck lint`.
#[derive(clap::Args, Debug)]
pub struct LintArgs {
    /// Manifest files (multi-document YAML); `-` reads standard input.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,

    /// Output: one line per finding, or a JSON array for CI.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    pub format: OutputFormat,
}

/// How findings are printed.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// One line per finding and a summary.
    Text,
    /// A JSON array of finding objects.
    Json,
}

/// A file lint could not read: `FILE:LINE: reason`.
#[derive(Debug)]
pub struct InputError {
    file: String,
    line: Option<usize>,
    reason: String,
}

impl InputError {
    /// A problem at a line of a file.
    pub fn at(file: String, line: usize, reason: String) -> Self {
        InputError {
            file,
            line: Some(line),
            reason,
        }
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.reason),
            None => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

/// One input, parsed.
pub struct Source {
    name: String,
    documents: Vec<yaml::Document>,
}

/// What lint found in all its inputs.
pub struct Outcome {
    /// Every finding, in input order.
    pub findings: Vec<Finding>,
    /// Pod specs running lameduck, which were checked.
    pub checked: usize,
    /// Pod specs without lameduck, which were not.
    pub skipped: usize,
}

/// Runs `kubectl lameduck lint`; returns 0 (no error-level finding), 1 (some) or 2 (unreadable input).
pub fn run(args: &LintArgs) -> i32 {
    let mut sources = Vec::new();
    let mut unreadable = false;
    for file in &args.files {
        match read(file) {
            Ok(source) => sources.push(source),
            Err(err) => {
                crate::say(format_args!("kubectl-lameduck: lint: {err}"));
                unreadable = true;
            }
        }
    }
    if unreadable {
        return EXIT_USAGE;
    }
    let outcome = lint(&sources);
    let out = match args.format {
        OutputFormat::Text => report::text(&outcome.findings, outcome.checked, outcome.skipped),
        OutputFormat::Json => report::json(&outcome.findings),
    };
    // A closed stdout (lint piped into `head`) must not panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
    if report::count(&outcome.findings, Severity::Error) > 0 {
        EXIT_FINDINGS
    } else {
        0
    }
}

/// Reads and parses one file, or standard input for `-`.
fn read(file: &Path) -> Result<Source, InputError> {
    let (name, text) = read_text(file)?;
    parse(name, &text)
}

/// Reads one file, or standard input for `-`, as UTF-8 text; returns the name messages use.
pub fn read_text(file: &Path) -> Result<(String, String), InputError> {
    let stdin = file.as_os_str() == "-";
    let name = if stdin {
        "<stdin>".to_owned()
    } else {
        file.display().to_string()
    };
    let mut bytes = Vec::new();
    let result = if stdin {
        std::io::stdin().read_to_end(&mut bytes).map(drop)
    } else {
        std::fs::read(file).map(|read| bytes = read)
    };
    result.map_err(|err| InputError {
        file: name.clone(),
        line: None,
        reason: err.to_string(),
    })?;
    let text = String::from_utf8(bytes).map_err(|err| {
        let valid = err.as_bytes().get(..err.utf8_error().valid_up_to());
        InputError {
            file: name.clone(),
            line: Some(1 + valid.map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())),
            reason: "not UTF-8 text".into(),
        }
    })?;
    Ok((name, text))
}

/// Parses one input's text.
pub fn parse(name: String, text: &str) -> Result<Source, InputError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match yaml::parse(text) {
        Ok(documents) => Ok(Source { name, documents }),
        Err(err) => Err(InputError {
            file: name,
            line: Some(err.line),
            reason: format!("invalid YAML: {}", err.reason),
        }),
    }
}

/// One JSON object as a source, given by its entries: the same as [`parse`] of the object's
/// JSON text, without the text or the object.
pub fn from_json_entries(
    name: String,
    entries: &[(&str, &serde_json::Value)],
) -> Result<Source, InputError> {
    match yaml::from_json_entries(entries) {
        Ok(document) => Ok(Source {
            name,
            documents: vec![document],
        }),
        Err(err) => Err(InputError {
            file: name,
            line: Some(err.line),
            reason: format!("invalid YAML: {}", err.reason),
        }),
    }
}

/// Checks every object of every source; objects in one source may satisfy another's
/// (a PodDisruptionBudget in its own file).
pub fn lint(sources: &[Source]) -> Outcome {
    let objects: Vec<Object<'_>> = sources
        .iter()
        .flat_map(|source| {
            source
                .documents
                .iter()
                .flat_map(|document| Object::all_in(&source.name, document))
        })
        .collect();
    let pods: Vec<(&Object<'_>, manifest::Pod<'_>)> = objects
        .iter()
        .filter_map(|object| Some((object, object.pod()?)))
        .collect();
    // Each container's lameduck and hook, read once for every check.
    let reads: Vec<Vec<lameduck::Read<'_, '_>>> = pods
        .iter()
        .map(|(_, pod)| lameduck::read_pod(pod))
        .collect();
    let mut findings = Vec::new();
    let mut drained = Vec::new();
    let mut skipped = 0;
    for ((workload, pod), reads) in pods.iter().zip(&reads) {
        if drain::check(pod, reads, &mut Findings::new(workload, &mut findings)) {
            drained.push(availability::Drained {
                workload,
                pod,
                reads,
            });
        } else {
            skipped += 1;
        }
    }
    availability::check(&objects, &drained, &mut findings);
    // Each object's findings together, objects in input order.
    let source_of = |f: &Finding| sources.iter().position(|s| s.name == f.file);
    findings.sort_by_key(|f| (source_of(f), f.line));
    Outcome {
        findings,
        checked: drained.len(),
        skipped,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    /// Words that steer generated documents into the rules: kinds, fields lint reads, and
    /// values that are right, wrong and absurd.
    const WORDS: &[&str] = &[
        "kind",
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "Pod",
        "PodDisruptionBudget",
        "Service",
        "List",
        "items",
        "metadata",
        "name",
        "namespace",
        "labels",
        "app",
        "spec",
        "template",
        "replicas",
        "strategy",
        "type",
        "Recreate",
        "rollingUpdate",
        "maxUnavailable",
        "updateStrategy",
        "selector",
        "matchLabels",
        "matchExpressions",
        "key",
        "operator",
        "In",
        "Exists",
        "values",
        "minAvailable",
        "publishNotReadyAddresses",
        "containers",
        "initContainers",
        "restartPolicy",
        "Always",
        "image",
        "nginx:1.27",
        "command",
        "args",
        "lameduck",
        "/shared/lameduck",
        "sidecar",
        "install",
        "/shared",
        "--",
        "--listen",
        "--shutdown-delay",
        "--drain-timeout=1m",
        "--stop-signal",
        "QUIT",
        "--rewrite",
        "TERM:QUIT",
        "--pid-file",
        "/run/app.pid",
        "--process-name",
        "--prestop-token",
        "--prestop-insecure",
        "--prestop-socket",
        "prestop",
        "LAMEDUCK_LISTEN",
        "LAMEDUCK_PRESTOP_SOCKET",
        "--grace-period=10s",
        "--bogus",
        "5s",
        "0",
        "1.5s",
        "99999h",
        "-5s",
        "0.0.0.0:8099",
        "127.0.0.1:0",
        "env",
        "LAMEDUCK_SHUTDOWN_DELAY",
        "value",
        "valueFrom",
        "$(X)",
        "lifecycle",
        "preStop",
        "stopSignal",
        "SIGQUIT",
        "httpGet",
        "path",
        "/prestop",
        "/readyz",
        "/livez",
        "port",
        "8099",
        "http",
        "host",
        "scheme",
        "HTTPS",
        "httpHeaders",
        "exec",
        "sleep",
        "seconds",
        "readinessProbe",
        "livenessProbe",
        "startupProbe",
        "periodSeconds",
        "failureThreshold",
        "timeoutSeconds",
        "terminationGracePeriodSeconds",
        "shareProcessNamespace",
        "true",
        "volumeMounts",
        "mountPath",
        "ports",
        "containerPort",
        "25%",
        "100%",
        "-1",
        "9223372036854775807",
        "-9223372036854775808",
        "1e400",
        "",
    ];

    fn word() -> impl Strategy<Value = Value> {
        prop_oneof![
            proptest::sample::select(WORDS).prop_map(|w| json!(w)),
            any::<i64>().prop_map(|n| json!(n)),
            Just(Value::Null),
            Just(json!(true)),
        ]
    }

    /// Kubernetes-shaped JSON (which is YAML): maps keyed by lint's vocabulary, nested.
    fn document() -> impl Strategy<Value = Value> {
        word().prop_recursive(6, 96, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::vec((proptest::sample::select(WORDS), inner), 0..6).prop_map(
                    |entries| {
                        Value::Object(
                            entries
                                .into_iter()
                                .map(|(k, v)| (k.to_owned(), v))
                                .collect(),
                        )
                    }
                ),
            ]
        })
    }

    /// A value for a field lint reads: mostly from the vocabulary, sometimes anything.
    fn field() -> impl Strategy<Value = Value> {
        prop_oneof![4 => word(), 1 => document()]
    }

    /// A mapping of the given keys, each present or not, with generated values.
    fn fields(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
        proptest::collection::vec(proptest::option::of(field()), keys.len()).prop_map(|values| {
            Value::Object(
                keys.iter()
                    .zip(values)
                    .filter_map(|(key, value)| Some(((*key).to_owned(), value?)))
                    .collect(),
            )
        })
    }

    /// A probe or hook: an httpGet, exec or sleep with generated details.
    fn handler() -> impl Strategy<Value = Value> {
        (
            fields(&["path", "port", "host", "scheme"]),
            fields(&["periodSeconds", "failureThreshold", "timeoutSeconds"]),
            proptest::collection::vec(proptest::sample::select(WORDS), 0..4),
        )
            .prop_map(|(get, mut timing, exec)| {
                if let Value::Object(map) = &mut timing {
                    map.insert("httpGet".into(), get);
                    map.insert("exec".into(), json!({ "command": exec }));
                }
                timing
            })
    }

    /// A container that usually runs lameduck, with generated flags, env, probes and hooks.
    fn container() -> impl Strategy<Value = Value> {
        (
            proptest::sample::select(&["lameduck", "/shared/lameduck", "nginx"][..]),
            proptest::collection::vec(proptest::sample::select(WORDS), 0..10),
            proptest::collection::vec(fields(&["name", "value", "valueFrom"]), 0..3),
            (handler(), handler(), handler()),
            fields(&["name", "image", "restartPolicy", "stopSignal"]),
            proptest::collection::vec(fields(&["name", "mountPath", "containerPort"]), 0..3),
        )
            .prop_map(|(program, args, env, (ready, live, hook), mut c, mounts)| {
                if let Value::Object(map) = &mut c {
                    map.insert("command".into(), json!([program]));
                    map.insert("args".into(), json!(args));
                    map.insert("env".into(), json!(env));
                    map.insert("readinessProbe".into(), ready);
                    map.insert("livenessProbe".into(), live);
                    map.insert("lifecycle".into(), json!({ "preStop": hook }));
                    map.insert("volumeMounts".into(), json!(mounts));
                    map.insert("ports".into(), json!(mounts));
                }
                c
            })
    }

    /// A workload, PDB or Service whose fields are generated around the shape lint reads.
    fn manifest() -> impl Strategy<Value = Value> {
        (
            proptest::sample::select(&["Deployment", "StatefulSet", "DaemonSet", "Pod", "PodDisruptionBudget", "Service"][..]),
            proptest::collection::vec(container(), 0..3),
            proptest::collection::vec(container(), 0..2),
            fields(&["terminationGracePeriodSeconds", "shareProcessNamespace"]),
            fields(&["replicas", "minAvailable", "maxUnavailable", "publishNotReadyAddresses"]),
            fields(&["maxUnavailable", "type"]),
            fields(&["app", "tier"]),
        )
            .prop_map(|(kind, containers, init, mut pod, mut spec, rolling, labels)| {
                if let Value::Object(map) = &mut pod {
                    map.insert("containers".into(), json!(containers));
                    map.insert("initContainers".into(), json!(init));
                }
                if let Value::Object(map) = &mut spec {
                    map.insert("strategy".into(), json!({ "type": rolling["type"], "rollingUpdate": rolling }));
                    map.insert("selector".into(), json!({ "matchLabels": labels.clone() }));
                    map.insert("template".into(), json!({ "metadata": { "labels": labels.clone() }, "spec": pod.clone() }));
                }
                let spec = if kind == "Pod" { pod } else { spec };
                json!({ "kind": kind, "metadata": { "name": "x", "labels": labels }, "spec": spec })
            })
    }

    fn lint_text(text: &str) -> Result<Outcome, InputError> {
        Ok(lint(&[parse("t".into(), text)?]))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
            let _ = lint_text(&text);
        }

        #[test]
        fn yaml_like_text_never_panics(text in "([-:{}\\[\\],&*!|>'\"#% \n]|[a-z]{1,4}|  |\\d){0,120}") {
            let _ = lint_text(&text);
        }

        #[test]
        fn kubernetes_shaped_documents_never_panic(
            docs in proptest::collection::vec(document(), 1..4)
        ) {
            let text = docs.iter().map(Value::to_string).collect::<Vec<_>>().join("\n---\n");
            let outcome = lint_text(&text);
            prop_assert!(outcome.is_ok(), "JSON is YAML: {text}");
        }

        #[test]
        fn generated_manifests_never_panic(
            docs in proptest::collection::vec(manifest(), 1..4)
        ) {
            let text = docs.iter().map(Value::to_string).collect::<Vec<_>>().join("\n---\n");
            let outcome = lint_text(&text);
            prop_assert!(outcome.is_ok(), "JSON is YAML: {text}");
        }
    }

    #[test]
    fn findings_name_the_file_object_container_and_path() {
        let text = "
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: app
          image: app:1
          command: [/lameduck, --, app]
";
        let outcome = lint_text(text).unwrap();
        let missing = outcome
            .findings
            .iter()
            .find(|f| f.rule == report::Rule::PrestopAdvised)
            .expect("a missing preStop is found");
        assert_eq!(missing.file, "t");
        assert_eq!(missing.kind, "Deployment");
        assert_eq!(missing.name, "web");
        assert_eq!(missing.container.as_deref(), Some("app"));
        assert_eq!(
            missing.path,
            "spec.template.spec.containers[0].lifecycle.preStop"
        );
        assert_eq!(outcome.checked, 1);
    }

    /// A pod whose lameduck runs with `listen` and `--prestop-socket=web`, and whose exec
    /// preStop hook calls `lameduck prestop --prestop-socket=api`.
    fn socket_named_on_both_ends(listen: &str) -> String {
        format!(
            "kind: Pod\nmetadata: {{name: p}}\nspec:\n  containers:\n    - name: app\n      \
             command: [/lameduck, '--listen={listen}', --prestop-socket=web, --, app]\n      \
             lifecycle: {{preStop: {{exec: {{command: [/lameduck, prestop, --prestop-socket=api]}}}}}}\n"
        )
    }

    /// The prestop-socket-mismatch findings of a pod.
    fn socket_mismatches(text: &str) -> Vec<Finding> {
        lint_text(text)
            .unwrap()
            .findings
            .into_iter()
            .filter(|f| f.rule == report::Rule::PrestopSocketMismatch)
            .collect()
    }

    #[test]
    fn named_sockets_are_compared_when_the_listen_port_is_known_only_at_run_time() {
        let found = socket_mismatches(&socket_named_on_both_ends("$(ADDR)"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].path,
            "spec.containers[0].lifecycle.preStop.exec.command[2]"
        );
        assert!(
            found[0].message.contains("calls @api"),
            "{}",
            found[0].message
        );
        assert!(
            found[0].message.contains("listens on @web"),
            "{}",
            found[0].message
        );
    }

    #[test]
    fn named_sockets_are_compared_when_lameduck_listens_on_port_0() {
        let found = socket_mismatches(&socket_named_on_both_ends("0.0.0.0:0"));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].fix.contains("--prestop-socket=web"),
            "{}",
            found[0].fix
        );
    }

    #[test]
    fn an_in_pod_hook_lint_does_not_see_is_found_when_the_listen_port_is_known_only_at_run_time() {
        let text = "kind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n    - name: app\n      \
                    command: [/lameduck, '--listen=$(ADDR)', --, app]\n      \
                    lifecycle: {preStop: {exec: {command: [/shared/lameduck, prestop]}}}\n";
        let outcome = lint_text(text).unwrap();
        let unseen: Vec<&Finding> = outcome
            .findings
            .iter()
            .filter(|f| f.rule == report::Rule::PrestopExecUnseen)
            .collect();
        assert_eq!(unseen.len(), 1, "{:?}", outcome.findings);
        assert_eq!(
            unseen[0].path,
            "spec.containers[0].lifecycle.preStop.exec.command[0]"
        );
    }

    #[test]
    fn objects_in_a_list_carry_their_item_path() {
        let text = "kind: List\nitems:\n- kind: Pod\n  metadata: {name: p}\n  spec: {containers: [{name: a, command: [lameduck, --, a]}]}\n";
        let outcome = lint_text(text).unwrap();
        assert!(
            outcome
                .findings
                .iter()
                .any(|f| f.path == "items[0].spec.containers[0].lifecycle.preStop")
        );
    }
}
