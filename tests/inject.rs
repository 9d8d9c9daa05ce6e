//! `kubectl lameduck inject` over a corpus of real-world-shaped manifests
//! (`tests/manifests/inject/`: charts as Helm renders them, `kubectl get` Lists, JSON, named
//! ports, several containers, each probe kind, init containers, existing budgets), run as the
//! built plugin. Each result must validate against Kubernetes' own schemas (kubernetes-validate
//! `--strict`, 1.29 and 1.37), lint with no error, be a fixed point of inject, come back to the
//! input with `--remove`, and keep every field inject does not own. The manifests are read back
//! with PyYAML, a parser independent of the plugin's.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use lameduck_test_support::binaries::plugin;
use lameduck_test_support::kubernetes::{self, NEWEST, OLDEST_WITH_NATIVE_SIDECARS, objects};
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const TMP: &str = env!("CARGO_TARGET_TMPDIR");

fn plugin_run(args: &[&str]) -> Output {
    Command::new(plugin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run kubectl-lameduck")
}

fn corpus() -> Vec<PathBuf> {
    let dir = Path::new(ROOT).join("tests/manifests/inject");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("the corpus directory")
        .map(|entry| entry.expect("an entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

fn name(file: &Path) -> String {
    file.file_name().unwrap().to_string_lossy().into_owned()
}

/// Every corpus file injected once (with `--pdb`), written under the target directory.
fn injected() -> &'static [(PathBuf, PathBuf)] {
    static INJECTED: OnceLock<Vec<(PathBuf, PathBuf)>> = OnceLock::new();
    INJECTED.get_or_init(|| {
        let dir = Path::new(TMP).join("inject");
        std::fs::create_dir_all(&dir).unwrap();
        corpus()
            .into_iter()
            .map(|file| {
                let out = plugin_run(&["inject", "--pdb", file.to_str().unwrap()]);
                assert!(
                    out.status.success(),
                    "inject {} failed: {}",
                    name(&file),
                    String::from_utf8_lossy(&out.stderr)
                );
                let result = dir.join(name(&file));
                std::fs::write(&result, &out.stdout).unwrap();
                (file, result)
            })
            .collect()
    })
}

fn is_workload(object: &Value) -> bool {
    matches!(
        object["kind"].as_str(),
        Some("Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Pod")
    )
}

fn template(object: &mut Value) -> &mut Value {
    if object["kind"] == "Pod" {
        object
    } else {
        &mut object["spec"]["template"]
    }
}

fn added_budget(object: &Value) -> bool {
    object["kind"] == "PodDisruptionBudget"
        && object["metadata"]["annotations"]["lameduck.io/injected"]
            .as_str()
            .is_some_and(|mark| mark.starts_with("pdb"))
}

/// Takes out an object's `lameduck.io/injected` record, and its annotations when empty.
fn without_record(object: &mut Value) {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut)
        && let Some(annotations) = metadata
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
    {
        annotations.remove("lameduck.io/injected");
        if annotations.is_empty() {
            metadata.remove("annotations");
        }
    }
}

/// Takes out every field inject owns, so what is left must be the same before and after.
fn without_owned(mut objects: Vec<Value>) -> Vec<Value> {
    objects.retain(|o| !added_budget(o));
    // A Service in front of proxied pods has its targetPorts moved to the proxy's port.
    for service in objects.iter_mut().filter(|o| o["kind"] == "Service") {
        without_record(service);
        if let Some(ports) = service["spec"]["ports"].as_array_mut() {
            for port in ports.iter_mut().filter_map(Value::as_object_mut) {
                port.remove("targetPort");
            }
        }
    }
    for object in objects.iter_mut().filter(|o| is_workload(o)) {
        let pod = template(object);
        without_record(pod);
        let spec = pod["spec"].as_object_mut().unwrap();
        for field in ["terminationGracePeriodSeconds", "shareProcessNamespace"] {
            spec.remove(field);
        }
        for (list, ours) in [
            ("volumes", &["lameduck"][..]),
            ("initContainers", &["lameduck", "lameduck-install"]),
        ] {
            if let Some(items) = spec.get_mut(list).and_then(Value::as_array_mut) {
                items.retain(|i| !ours.contains(&i["name"].as_str().unwrap_or("")));
                if items.is_empty() {
                    spec.remove(list);
                }
            }
        }
        for container in spec["containers"].as_array_mut().unwrap() {
            let container = container.as_object_mut().unwrap();
            for field in ["command", "readinessProbe", "livenessProbe"] {
                container.remove(field);
            }
            if let Some(lifecycle) = container
                .get_mut("lifecycle")
                .and_then(Value::as_object_mut)
            {
                lifecycle.remove("preStop");
                if lifecycle.is_empty() {
                    container.remove("lifecycle");
                }
            }
            for list in ["ports", "volumeMounts"] {
                if let Some(items) = container.get_mut(list).and_then(Value::as_array_mut) {
                    items.retain(|i| i["name"] != "lameduck" && i["name"] != "lameduck-proxy");
                    if items.is_empty() {
                        container.remove(list);
                    }
                }
            }
        }
    }
    objects
}

#[test]
fn the_corpus_holds_at_least_30_manifests_of_every_kind_and_format() {
    let files = corpus();
    assert!(files.len() >= 30, "{} manifests", files.len());
    let all: Vec<Value> = files.iter().flat_map(|f| objects(f)).collect();
    for kind in [
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "Pod",
        "PodDisruptionBudget",
        "Service",
    ] {
        assert!(
            all.iter().any(|o| o["kind"] == kind),
            "no {kind} in the corpus"
        );
    }
    assert!(
        files
            .iter()
            .any(|f| f.extension().is_some_and(|e| e == "json"))
    );
    assert!(
        files
            .iter()
            .any(|f| std::fs::read_to_string(f).unwrap().contains("kind: List"))
    );
}

fn assert_valid_for(kubernetes: &str) {
    let dir = Path::new(TMP).join(format!("inject-validate-{kubernetes}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for (source, result) in injected() {
        // kubernetes-validate has no schema for List: each object is checked on its own.
        let docs: Vec<String> = objects(result).iter().map(Value::to_string).collect();
        let file = dir.join(format!("{}.yaml", name(source)));
        std::fs::write(&file, docs.join("\n---\n")).unwrap();
        files.push(file);
    }
    let files: Vec<&Path> = files.iter().map(PathBuf::as_path).collect();
    let ran = kubernetes::validate(&files, kubernetes);
    assert!(ran.ok(), "{}", ran.describe());
    assert!(!ran.stdout.contains("ERROR"), "{}", ran.describe());
    assert!(!ran.stderr.contains("ERROR"), "{}", ran.describe());
}

#[test]
fn every_injected_manifest_passes_strict_schema_validation_for_kubernetes_1_37() {
    assert_valid_for(NEWEST);
}

#[test]
fn every_injected_manifest_is_valid_for_kubernetes_1_29() {
    assert_valid_for(OLDEST_WITH_NATIVE_SIDECARS);
}

#[test]
fn every_injected_manifest_lints_with_no_error() {
    for (source, result) in injected() {
        let out = plugin_run(&["lint", result.to_str().unwrap()]);
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{}:\n{report}", name(source));
        assert!(
            report.contains("lint: 0 errors"),
            "{}:\n{report}",
            name(source)
        );
        let objects = objects(result);
        assert!(
            objects.iter().filter(|o| is_workload(o)).count() == 0
                || !report.contains("in 0 pod specs"),
            "{}: nothing runs lameduck:\n{report}",
            name(source)
        );
    }
}

#[test]
fn injecting_an_injected_manifest_changes_nothing() {
    for (source, result) in injected() {
        let again = plugin_run(&["inject", "--pdb", result.to_str().unwrap()]);
        assert!(again.status.success(), "{}", name(source));
        assert_eq!(
            String::from_utf8_lossy(&again.stdout),
            std::fs::read_to_string(result).unwrap(),
            "{}",
            name(source)
        );
    }
}

#[test]
fn remove_after_inject_gives_back_the_input() {
    for (source, result) in injected() {
        let removed = plugin_run(&["inject", "--remove", result.to_str().unwrap()]);
        assert!(removed.status.success(), "{}", name(source));
        let file = Path::new(TMP).join(format!("removed-{}", name(source)));
        std::fs::write(&file, &removed.stdout).unwrap();
        assert_same_objects(&objects(&file), &objects(source), &name(source));
    }
}

/// Asserts that `got` holds the objects of `want`, naming the first one that differs.
fn assert_same_objects(got: &[Value], want: &[Value], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: the number of objects");
    for (got, want) in got.iter().zip(want) {
        assert!(
            got == want,
            "{what}: {}/{} is not as it was\n got: {got:#}\nwant: {want:#}",
            want["kind"].as_str().unwrap_or("?"),
            want["metadata"]["name"].as_str().unwrap_or("?"),
        );
    }
}

#[test]
fn inject_changes_no_field_it_does_not_own() {
    for (source, result) in injected() {
        let before = objects(source);
        let after = objects(result);
        assert_eq!(
            without_owned(after.clone()),
            without_owned(before.clone()),
            "{}",
            name(source)
        );
        // The app's own command still runs, after lameduck's `--`.
        for (b, a) in before.iter().zip(after.iter().filter(|o| !added_budget(o))) {
            if !is_workload(b) {
                continue;
            }
            let (mut b, mut a) = (b.clone(), a.clone());
            let (b, a) = (template(&mut b), template(&mut a));
            for (cb, ca) in b["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .zip(a["spec"]["containers"].as_array().unwrap())
            {
                let Some(original) = cb["command"].as_array().filter(|c| !c.is_empty()) else {
                    continue;
                };
                let wrapped = ca["command"].as_array().unwrap();
                if wrapped != original {
                    assert!(wrapped.ends_with(original), "{}: {wrapped:?}", name(source));
                    assert_eq!(
                        wrapped[wrapped.len() - original.len() - 1],
                        "--",
                        "{}",
                        name(source)
                    );
                }
            }
        }
    }
}

#[test]
fn manifests_that_already_run_lameduck_come_out_byte_for_byte() {
    for example in ["wrapper.yaml", "nginx-sidecar.yaml", "init-install.yaml"] {
        let file = Path::new(ROOT).join("examples").join(example);
        let out = plugin_run(&["inject", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{example}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            std::fs::read_to_string(&file).unwrap(),
            "{example}"
        );
    }
}

/// Writes `text` to a file of its own and injects it.
fn inject_text(file: &str, text: &str, args: &[&str]) -> Output {
    let path = Path::new(TMP).join(file);
    std::fs::write(&path, text).unwrap();
    let mut all = vec!["inject"];
    all.extend(args);
    all.push(path.to_str().unwrap());
    plugin_run(&all)
}

const NO_COMMAND: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: app}}\n  template:\n    metadata: {labels: {app: app}}\n    spec:\n      containers: [{name: app, image: 'ghcr.io/acme/app:1'}]\n";

#[test]
fn a_container_without_a_known_command_is_refused_in_one_line_naming_it() {
    let out = inject_text("no-command.yaml", NO_COMMAND, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing is printed");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("kubectl-lameduck: inject: ")
            && stderr
                .contains("no-command.yaml:1: Deployment/app: cannot inject: container \"app\""),
        "{stderr}"
    );
}

#[test]
fn the_command_from_a_flag_makes_the_install_shape_possible() {
    let out = inject_text(
        "no-command-flag.yaml",
        NO_COMMAND,
        &["--command", "/entrypoint serve"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("- /entrypoint\n") && text.contains("lameduck-install"),
        "{text}"
    );
}

#[test]
fn output_that_would_not_lint_clean_is_refused() {
    // strategy Recreate takes every pod down at once: lint's rollout-all-down.
    let text = NO_COMMAND.replace(
        "  replicas: 2\n",
        "  replicas: 2\n  strategy: {type: Recreate}\n",
    );
    let out = inject_text("recreate.yaml", &text, &["--command", "/app"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("rollout-all-down") && stderr.contains("would not lint clean"),
        "{stderr}"
    );
}

#[test]
fn unreadable_input_exits_2_with_file_and_line() {
    let out = inject_text(
        "broken.yaml",
        "kind: Deployment\n---\nmetadata:\n  name: x\n bad: y\n",
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("kubectl-lameduck: inject: "), "{stderr}");
    assert!(stderr.contains("broken.yaml:5: invalid YAML"), "{stderr}");
}

/// The Service objects named `name` in `namespace` (none: the default) of an injected file.
fn service<'a>(objects: &'a [Value], name: &str, namespace: Option<&str>) -> &'a Value {
    objects
        .iter()
        .find(|o| {
            o["kind"] == "Service"
                && o["metadata"]["name"] == name
                && o["metadata"]["namespace"].as_str() == namespace
        })
        .unwrap_or_else(|| panic!("no Service {name}"))
}

fn injected_file(file: &str) -> Vec<Value> {
    let (_, result) = injected()
        .iter()
        .find(|(source, _)| name(source) == file)
        .unwrap_or_else(|| panic!("{file} is not in the corpus"));
    objects(result)
}

#[test]
fn the_proxy_annotation_moves_the_services_that_select_the_pods_to_the_proxy_port() {
    let objects = injected_file("proxy-annotated-wrapper.yaml");
    let api = &objects[0]["spec"]["template"]["spec"]["containers"][0];
    let command: Vec<&str> = api["command"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        command.contains(&"--proxy=0.0.0.0:8098=127.0.0.1:8080"),
        "lameduck runs no drain proxy in front of the app's port 8080: {command:?}"
    );
    assert!(
        api["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "lameduck-proxy" && p["containerPort"] == 8098),
        "the container does not declare the proxy's port 8098 as lameduck-proxy: {api}"
    );
    let shop = service(&objects, "api", Some("shop"));
    assert_eq!(
        shop["spec"]["ports"][0]["targetPort"], 8098,
        "the Service that selects the pods does not target the proxy's port: {shop}"
    );
    assert_eq!(
        shop["spec"]["ports"][1]["targetPort"], "metrics",
        "a port the proxy does not front moved: {shop}"
    );
    let staging = service(&objects, "api", Some("staging"));
    assert_eq!(
        staging["spec"]["ports"][0]["targetPort"], 8080,
        "a Service in another namespace moved: {staging}"
    );
    // The port of a Service without targetPort, the sidecar's proxy on its annotated port.
    let list = injected_file("proxy-nginx-sidecar-list.yaml");
    assert_eq!(
        service(&list, "web", None)["spec"]["ports"][0]["targetPort"],
        8081
    );
    // Only the proxied workload's Service moves.
    let two = injected_file("proxy-numeric-target.yaml");
    assert_eq!(
        service(&two, "front", None)["spec"]["ports"][0]["targetPort"],
        8098
    );
    assert_eq!(
        service(&two, "back", None)["spec"]["ports"][0]["targetPort"],
        80
    );
}

#[test]
fn proxied_pods_without_their_service_in_the_input_are_warned_of() {
    let deployment =
        std::fs::read_to_string(Path::new(ROOT).join("tests/manifests/inject/nginx-plain.yaml"))
            .unwrap()
            .split("\n---\n")
            .next()
            .unwrap()
            .to_owned();
    let out = inject_text("proxy-no-service.yaml", &deployment, &["--proxy"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Deployment/web: warning: no Service in the input selects these pods")
            && stderr.contains("8098 (the app's 80)"),
        "no warning that no Service in the input selects the proxied pods: {stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("--proxy=0.0.0.0:8098=127.0.0.1:80"));
}

#[test]
fn the_proxy_flag_is_undone_by_remove_and_is_a_fixed_point() {
    let file = Path::new(ROOT).join("tests/manifests/inject/nginx-plain.yaml");
    let once = plugin_run(&["inject", "--proxy", file.to_str().unwrap()]);
    assert!(
        once.status.success(),
        "{}",
        String::from_utf8_lossy(&once.stderr)
    );
    let injected = String::from_utf8_lossy(&once.stdout).into_owned();
    assert!(
        injected.contains("targetPort: 8098"),
        "the Service does not target the proxy's port 8098: {injected}"
    );
    let again = inject_text("proxy-once.yaml", &injected, &["--proxy"]);
    assert!(
        again.status.success(),
        "inject --proxy refuses its own output: {}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&again.stdout),
        injected,
        "inject --proxy changed its own output"
    );
    let removed = inject_text("proxy-removed.yaml", &injected, &["--remove"]);
    assert!(
        removed.status.success(),
        "{}",
        String::from_utf8_lossy(&removed.stderr)
    );
    let text = String::from_utf8_lossy(&removed.stdout);
    for (left, what) in [
        ("--proxy=", "the proxy flag"),
        ("lameduck-proxy", "the proxy's container port"),
        ("targetPort: 8098", "the Service on the proxy's port"),
    ] {
        assert!(!text.contains(left), "--remove left {what} behind: {text}");
    }
    let back = Path::new(TMP).join("proxy-back.yaml");
    std::fs::write(&back, &removed.stdout).unwrap();
    assert_same_objects(&objects(&back), &objects(&file), "--remove after --proxy");
}
