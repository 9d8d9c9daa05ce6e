//! `kubectl lameduck lint`, run as a user runs it: every rule provoked by its own broken manifest
//! (`tests/manifests/broken/RULE.yaml`, which provokes that rule and nothing else), a clean
//! manifest, standard input, unreadable and invalid input, the JSON output, and the shipped
//! examples.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use lameduck_test_support::process::{Ran, run};
use serde_json::Value;

const PLUGIN: &str = env!("CARGO_BIN_EXE_kubectl-lameduck");
/// The repository root, where the example and test manifests live.
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// A wrapper, a native sidecar and an init-install Deployment, each with its
/// PodDisruptionBudget, with nothing to report.
const CLEAN: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: app
          image: app:1
          command: [/lameduck, --, app]
          readinessProbe: {httpGet: {path: /readyz, port: 8099}, periodSeconds: 1, failureThreshold: 2}
          livenessProbe: {httpGet: {path: /livez, port: 8099}}
          lifecycle:
            preStop: {exec: {command: [/lameduck, prestop]}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: web
spec:
  minAvailable: 1
  selector:
    matchLabels: {app: web}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: side
spec:
  replicas: 2
  selector:
    matchLabels: {app: side}
  template:
    metadata:
      labels: {app: side}
    spec:
      shareProcessNamespace: true
      volumes: [{name: bin, emptyDir: {}}]
      initContainers:
        - name: install
          image: lameduck:0.1.0
          command: [/lameduck, install, /shared]
          volumeMounts: [{name: bin, mountPath: /shared}]
        - name: lameduck
          image: lameduck:0.1.0
          restartPolicy: Always
          command: [/lameduck, sidecar, --process-name=app]
          livenessProbe: {httpGet: {path: /livez, port: 8099}}
      containers:
        - name: app
          image: app:1
          readinessProbe: {httpGet: {path: /readyz, port: 8099}, periodSeconds: 1, failureThreshold: 2}
          volumeMounts: [{name: bin, mountPath: /shared}]
          lifecycle:
            preStop: {exec: {command: [/shared/lameduck, prestop]}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: side
spec:
  minAvailable: 1
  selector:
    matchLabels: {app: side}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: installed
spec:
  replicas: 2
  selector:
    matchLabels: {app: installed}
  template:
    metadata:
      labels: {app: installed}
    spec:
      volumes: [{name: bin, emptyDir: {}}]
      initContainers:
        - name: install
          image: lameduck:0.1.0
          command: [/lameduck, install, /shared]
          volumeMounts: [{name: bin, mountPath: /shared}]
      containers:
        - name: app
          image: nginx:1.27
          command: [/shared/lameduck, --stop-signal, QUIT, --, nginx, -g, 'daemon off;']
          volumeMounts: [{name: bin, mountPath: /shared/}]
          readinessProbe: {httpGet: {path: /readyz, port: 8099}, periodSeconds: 1, failureThreshold: 2}
          livenessProbe: {httpGet: {path: /livez, port: 8099}}
          lifecycle:
            preStop: {exec: {command: [/shared/lameduck, prestop]}}
---
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: installed
spec:
  minAvailable: 1
  selector:
    matchLabels: {app: installed}
"#;

/// Runs `kubectl-lameduck lint ARGS` in the repository root, with `stdin` on its standard input.
/// Lint found nothing at all: exit 0, no error and no warning.
fn assert_clean(ran: &Ran) {
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    assert!(
        ran.stdout.starts_with("lint: 0 errors, 0 warnings"),
        "{}",
        ran.stdout
    );
}

fn lint(args: &[&str], stdin: impl AsRef<[u8]>) -> Ran {
    let mut command = Command::new(PLUGIN);
    command.arg("lint").args(args).current_dir(ROOT);
    run(&mut command, stdin.as_ref(), Duration::from_secs(60))
}

/// The findings of a `--format json` run, which must parse as a JSON array.
fn findings(ran: &Ran) -> Vec<Value> {
    match serde_json::from_str(&ran.stdout) {
        Ok(Value::Array(list)) => list,
        other => panic!(
            "not a JSON array ({other:?}):\n{}\n{}",
            ran.stdout, ran.stderr
        ),
    }
}

fn broken(rule: &str) -> String {
    format!("tests/manifests/broken/{rule}.yaml")
}

/// Lints `broken/RULE.yaml`: the rule must be found with `severity`, no other rule may be,
/// and the exit code must follow the severity (1 for an error, 0 for warnings only).
fn provokes(rule: &str, severity: &str) {
    let file = broken(rule);
    let ran = lint(&["--format", "json", &file], "");
    let list = findings(&ran);
    let rules: BTreeSet<&str> = list.iter().filter_map(|f| f["rule"].as_str()).collect();
    assert_eq!(rules, BTreeSet::from([rule]), "{}", ran.stdout);
    for finding in &list {
        assert_eq!(finding["severity"], severity, "{finding}");
        assert_eq!(finding["file"], file.as_str(), "{finding}");
    }
    let expected = if severity == "error" { 1 } else { 0 };
    assert_eq!(ran.code, Some(expected), "{}{}", ran.stdout, ran.stderr);
    // The text output names the rule too, with the same exit code.
    let text = lint(&[&file], "");
    assert!(
        text.stdout.contains(&format!("[{rule}]")),
        "{}",
        text.stdout
    );
    assert!(text.stdout.starts_with(severity), "{}", text.stdout);
    assert_eq!(text.code, Some(expected));
}

/// Every rule with its severity; each has a manifest in `tests/manifests/broken/` and a test.
const RULES: &[(&str, &str)] = &[
    ("flag-invalid", "error"),
    ("listen-unreachable", "error"),
    ("prestop-missing", "error"),
    ("prestop-advised", "warning"),
    ("prestop-not-lameduck", "error"),
    ("prestop-named-port", "error"),
    ("prestop-no-token", "error"),
    ("prestop-http-refused", "error"),
    ("prestop-exec-unseen", "warning"),
    ("prestop-socket-mismatch", "error"),
    ("prestop-sleep", "warning"),
    ("grace-too-short", "error"),
    ("grace-period-mismatch", "error"),
    ("readiness-slow", "error"),
    ("readiness-missing", "warning"),
    ("readiness-not-lameduck", "warning"),
    ("liveness-on-drain", "error"),
    ("liveness-missing", "warning"),
    ("probe-calls-prestop", "error"),
    ("stop-signal", "error"),
    ("server-bound-unseen", "warning"),
    ("sidecar-not-restartable", "error"),
    ("sidecar-no-shared-pid", "error"),
    ("sidecar-pid-file-not-shared", "error"),
    ("sidecar-delay-only", "warning"),
    ("install-not-shared", "error"),
    ("replicas-low", "warning"),
    ("rollout-all-down", "error"),
    ("pdb-missing", "warning"),
    ("pdb-allows-all-down", "error"),
    ("service-publishes-not-ready", "error"),
    ("service-bypasses-proxy", "error"),
];

/// One test per rule, named after it.
macro_rules! rule_tests {
    ($($test:ident),* $(,)?) => {
        $(
            #[test]
            fn $test() {
                let rule = stringify!($test).replace('_', "-");
                let (_, severity) = RULES
                    .iter()
                    .find(|(id, _)| *id == rule)
                    .unwrap_or_else(|| panic!("{rule} is not in RULES"));
                provokes(&rule, severity);
            }
        )*
    };
}

rule_tests!(
    flag_invalid,
    listen_unreachable,
    prestop_missing,
    prestop_advised,
    prestop_not_lameduck,
    prestop_named_port,
    prestop_no_token,
    prestop_http_refused,
    prestop_exec_unseen,
    prestop_socket_mismatch,
    prestop_sleep,
    grace_too_short,
    grace_period_mismatch,
    readiness_slow,
    readiness_missing,
    readiness_not_lameduck,
    liveness_on_drain,
    liveness_missing,
    probe_calls_prestop,
    stop_signal,
    server_bound_unseen,
    sidecar_not_restartable,
    sidecar_no_shared_pid,
    sidecar_pid_file_not_shared,
    sidecar_delay_only,
    install_not_shared,
    replicas_low,
    rollout_all_down,
    pdb_missing,
    pdb_allows_all_down,
    service_publishes_not_ready,
    service_bypasses_proxy,
);

#[test]
fn every_broken_manifest_belongs_to_a_rule() {
    let dir = Path::new(ROOT).join("tests/manifests/broken");
    let files: BTreeSet<String> = std::fs::read_dir(&dir)
        .expect("tests/manifests/broken exists")
        .map(|entry| {
            entry
                .expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let expected: BTreeSet<String> = RULES.iter().map(|(id, _)| format!("{id}.yaml")).collect();
    assert_eq!(files, expected);
}

#[test]
fn a_clean_manifest_exits_0_with_a_summary() {
    let ran = lint(&["-"], CLEAN);
    assert_eq!(ran.code, Some(0), "{}{}", ran.stdout, ran.stderr);
    assert_eq!(
        ran.stdout,
        "lint: 0 errors, 0 warnings in 3 pod specs running lameduck\n"
    );
    assert_eq!(ran.stderr, "");
}

#[test]
fn text_lines_name_severity_file_object_container_path_rule_and_fix() {
    let ran = lint(&[&broken("prestop-missing")], "");
    let first = ran.stdout.lines().next().unwrap_or_default();
    assert_eq!(
        first,
        "error  tests/manifests/broken/prestop-missing.yaml: Deployment/web container \"app\" \
         spec.template.spec.containers[0].lifecycle.preStop [prestop-missing]: no preStop hook: \
         nothing calls the sidecar, so the kubelet stops the app while endpoints still route to \
         it; add lifecycle.preStop.exec with command [PATH/lameduck, prestop] (or httpGet with \
         path /prestop and port 8099, which needs --prestop-token)"
    );
    assert!(
        ran.stdout
            .ends_with("lint: 1 error, 0 warnings in 1 pod spec running lameduck\n"),
        "{}",
        ran.stdout
    );
}

#[test]
fn a_dash_reads_standard_input() {
    let text = std::fs::read_to_string(Path::new(ROOT).join(broken("prestop-missing")))
        .expect("the broken manifest is readable");
    let ran = lint(&["--format", "json", "-"], &text);
    assert_eq!(ran.code, Some(1));
    let list = findings(&ran);
    assert_eq!(list.len(), 1, "{}", ran.stdout);
    assert_eq!(list[0]["file"], "<stdin>");
    assert_eq!(list[0]["rule"], "prestop-missing");
}

#[test]
fn objects_in_one_input_satisfy_another() {
    // The PodDisruptionBudget arrives on standard input, the Deployment from a file.
    let pdb = "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web}\n\
               spec: {minAvailable: 1, selector: {matchLabels: {app: web}}}\n";
    let ran = lint(&[&broken("pdb-missing"), "-"], pdb);
    assert_eq!(ran.code, Some(0), "{}", ran.stdout);
    assert!(!ran.stdout.contains("pdb-missing"), "{}", ran.stdout);
}

#[test]
fn json_findings_carry_every_field() {
    let file = broken("pdb-allows-all-down");
    let ran = lint(&["--format", "json", &file], "");
    assert_eq!(ran.code, Some(1));
    let list = findings(&ran);
    assert_eq!(list.len(), 1, "{}", ran.stdout);
    let finding = &list[0];
    assert_eq!(finding["file"], file.as_str());
    // The PodDisruptionBudget's document starts at its `---`, line 22.
    assert_eq!(finding["line"], 22);
    assert_eq!(finding["kind"], "PodDisruptionBudget");
    assert_eq!(finding["name"], "web");
    assert_eq!(finding["container"], Value::Null);
    assert_eq!(finding["path"], "spec.maxUnavailable");
    assert_eq!(finding["rule"], "pdb-allows-all-down");
    assert_eq!(finding["severity"], "error");
    assert!(
        finding["message"]
            .as_str()
            .is_some_and(|m| m.contains("2 replicas"))
    );
    assert!(
        finding["fix"]
            .as_str()
            .is_some_and(|f| f.contains("minAvailable: 1"))
    );

    let ran = lint(&["--format", "json", &broken("prestop-missing")], "");
    let list = findings(&ran);
    assert_eq!(list[0]["container"], "app");
    assert_eq!(
        list[0]["line"], 2,
        "the first document starts after the comment"
    );
}

#[test]
fn a_clean_run_in_json_is_an_empty_array() {
    let ran = lint(&["--format", "json", "-"], CLEAN);
    assert_eq!(ran.code, Some(0));
    assert!(findings(&ran).is_empty());
}

#[test]
fn an_unreadable_file_exits_2_naming_it() {
    let ran = lint(&["tests/manifests/broken/no-such-file.yaml"], "");
    assert_eq!(ran.code, Some(2));
    assert_eq!(ran.stdout, "");
    let lines: Vec<&str> = ran.stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{}", ran.stderr);
    assert!(
        lines[0].starts_with("kubectl-lameduck: lint: tests/manifests/broken/no-such-file.yaml: "),
        "{}",
        ran.stderr
    );
    // A directory is unreadable too, and one bad input stops the whole run.
    let ran = lint(&["tests/manifests", &broken("prestop-missing")], "");
    assert_eq!(ran.code, Some(2));
    assert_eq!(ran.stdout, "");
    assert!(
        ran.stderr
            .starts_with("kubectl-lameduck: lint: tests/manifests: "),
        "{}",
        ran.stderr
    );
}

#[test]
fn invalid_yaml_exits_2_with_file_and_line() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let file = dir.join("lint-invalid.yaml");
    std::fs::write(
        &file,
        "kind: Deployment\nmetadata:\n  name: web\nspec: [unclosed\nreplicas: 2\n",
    )
    .expect("the temporary directory is writable");
    let name = file.to_string_lossy().into_owned();
    let ran = lint(&[&name], "");
    assert_eq!(ran.code, Some(2));
    assert_eq!(ran.stdout, "");
    assert_eq!(
        ran.stderr,
        format!(
            "kubectl-lameduck: lint: {name}:5: invalid YAML: illegal placement of ':' indicator\n"
        )
    );
    let ran = lint(&["-"], "a: 1\nb:\n  c: 2\n d: 3\n");
    assert_eq!(ran.code, Some(2));
    assert!(
        ran.stderr
            .starts_with("kubectl-lameduck: lint: <stdin>:4: invalid YAML: "),
        "{}",
        ran.stderr
    );
    let ran = lint(&["-"], "a: \u{0}\n");
    assert_eq!(ran.code, Some(2), "{}", ran.stderr);
}

#[test]
fn text_that_is_not_utf8_exits_2_with_its_line() {
    let ran = lint(&["-"], b"a: 1\nb: \xff\n");
    assert_eq!(ran.code, Some(2));
    assert_eq!(
        ran.stderr,
        "kubectl-lameduck: lint: <stdin>:2: not UTF-8 text\n"
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(lint(&[], "").code, Some(2));
    assert_eq!(lint(&["--format", "xml", "-"], CLEAN).code, Some(2));
}

#[test]
fn examples_lint_clean() {
    let dir = Path::new(ROOT).join("examples");
    if !dir.is_dir() {
        eprintln!("no examples/ directory: nothing to lint");
        return;
    }
    let mut examples: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("examples/ is readable")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    examples.sort();
    assert!(!examples.is_empty(), "examples/ holds no *.yaml");
    // The admission webhook's Deployment (its cert-manager.yaml holds no pod).
    examples.push(dir.join("webhook/webhook.yaml"));
    for example in examples {
        let name = example.to_string_lossy().into_owned();
        let ran = lint(&[&name], "");
        assert_eq!(ran.code, Some(0), "{name}:\n{}{}", ran.stdout, ran.stderr);
        assert!(
            !ran.stdout.contains(" 0 pod specs running lameduck"),
            "{name} runs no lameduck that lint recognises:\n{}",
            ran.stdout
        );
    }
}

#[test]
fn kubectl_runs_the_plugin_found_on_path() {
    let dir = Path::new(PLUGIN).parent().expect("the plugin's directory");
    let path = std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .expect("PATH");
    let output = Command::new("kubectl")
        .args(["lameduck", "lint", "examples/wrapper.yaml"])
        .current_dir(ROOT)
        .env("PATH", path)
        .output()
        .expect("kubectl runs (scripts/test.sh installs kubernetes-client)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("0 errors"), "{stdout}");
}

/// A wrapped pod for `image` running `command` (a YAML flow list after lameduck's flags).
fn wrapped(image: &str, flags: &str, command: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: web}}\nspec:\n  replicas: 2\n  \
         selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    \
         spec:\n      containers:\n        - name: app\n          image: {image}\n          \
         command: [/lameduck, {flags} --, {command}]\n          \
         readinessProbe: {{httpGet: {{path: /readyz, port: 8099}}, periodSeconds: 1, failureThreshold: 2}}\n          \
         livenessProbe: {{httpGet: {{path: /livez, port: 8099}}}}\n          \
         lifecycle: {{preStop: {{exec: {{command: [/lameduck, prestop]}}}}}}\n---\n\
         apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {{name: web}}\n\
         spec: {{minAvailable: 1, selector: {{matchLabels: {{app: web}}}}}}\n"
    )
}

/// The rules a wrapped pod provokes.
fn rules_of(image: &str, flags: &str, command: &str) -> BTreeSet<String> {
    let ran = lint(&["--format", "json", "-"], wrapped(image, flags, command));
    findings(&ran)
        .iter()
        .filter_map(|f| f["rule"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn each_known_server_wants_its_own_graceful_signal() {
    // (image, app command, the graceful signal, a fast stop), as measured with each server.
    let servers = [
        ("nginx:1.27", "nginx", "QUIT", "TERM"),
        ("httpd:2.4", "httpd-foreground", "WINCH", "TERM"),
        ("haproxy:2.9", "haproxy, -f, /h.cfg", "USR1", "TERM"),
        ("caddy:2", "caddy, run", "TERM", "QUIT"),
        ("debian:12", "lighttpd, -D, -f, /l.conf", "INT", "TERM"),
        ("python:3.12", "gunicorn, 'app:app'", "TERM", "QUIT"),
    ];
    for (image, command, graceful, fast) in servers {
        let flags = format!("--stop-signal, {graceful},");
        assert_eq!(
            rules_of(image, &flags, command),
            BTreeSet::new(),
            "{image} with {graceful}"
        );
        let flags = format!("--stop-signal, {fast},");
        let ran = lint(&["--format", "json", "-"], wrapped(image, &flags, command));
        let list = findings(&ran);
        assert_eq!(list.len(), 1, "{image} with {fast}: {}", ran.stdout);
        assert_eq!(list[0]["rule"], "stop-signal");
        let message = list[0]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(&format!("stops at once on SIG{fast}"))
                && message.contains(&format!("only SIG{graceful}")),
            "{message}"
        );
    }
}

#[test]
fn lifecycle_stop_signal_reaches_the_wrapper_not_the_server() {
    let pod = wrapped("nginx:1.27", "", "nginx")
        .replace("lifecycle: {", "lifecycle: {stopSignal: SIGQUIT, ");
    let ran = lint(&["--format", "json", "-"], &pod);
    let list = findings(&ran);
    assert_eq!(list.len(), 1, "{}", ran.stdout);
    assert_eq!(list[0]["rule"], "stop-signal");
    let fix = list[0]["fix"].as_str().unwrap_or_default();
    assert!(fix.contains("reaches lameduck, not the app"), "{fix}");
}

#[test]
fn a_signal_that_stops_nothing_is_named_so() {
    let ran = lint(
        &["--format", "json", "-"],
        wrapped("nginx:1.27", "--stop-signal, USR1,", "nginx"),
    );
    let message = findings(&ran)[0]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("does not stop on SIGUSR1"), "{message}");
}

#[test]
fn a_bound_set_on_the_command_line_or_in_env_satisfies_lint() {
    let bare = rules_of(
        "python:3.12",
        "--drain-timeout, 15s,",
        "gunicorn, 'app:app'",
    );
    assert_eq!(bare, BTreeSet::from(["server-bound-unseen".to_owned()]));
    let set = rules_of(
        "python:3.12",
        "--drain-timeout, 15s,",
        "gunicorn, --graceful-timeout, '10', 'app:app'",
    );
    assert_eq!(set, BTreeSet::new());
    // Without a drain timeout of its own choosing, the bound is not asked for...
    assert_eq!(
        rules_of("python:3.12", "", "gunicorn, 'app:app'"),
        BTreeSet::new()
    );
    // ...except where the graceful stop needs it: php-fpm's QUIT cuts like TERM without it.
    assert_eq!(
        rules_of("php:8.3-fpm", "--stop-signal, QUIT,", "php-fpm, -F"),
        BTreeSet::from(["server-bound-unseen".to_owned()])
    );
}

/// A Deployment whose app a native lameduck sidecar drains, the sidecar's endpoints on `port`:
/// `sidecar` is one more field of the sidecar's container (flow YAML), and `hook` what follows
/// `prestop` in the app's exec preStop hook.
fn beside(sidecar: &str, port: u16, hook: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: side}}\nspec:\n  replicas: 2\n  \
         selector: {{matchLabels: {{app: side}}}}\n  template:\n    metadata: {{labels: {{app: side}}}}\n    \
         spec:\n      shareProcessNamespace: true\n      volumes: [{{name: bin, emptyDir: {{}}}}]\n      \
         initContainers:\n        - name: install\n          image: lameduck:0.1.0\n          \
         command: [/lameduck, install, /shared]\n          volumeMounts: [{{name: bin, mountPath: /shared}}]\n        \
         - name: lameduck\n          image: lameduck:0.1.0\n          restartPolicy: Always\n          \
         command: [/lameduck, sidecar, --process-name=app]\n          {sidecar}\n          \
         livenessProbe: {{httpGet: {{path: /livez, port: {port}}}}}\n      containers:\n        \
         - name: app\n          image: app:1\n          \
         readinessProbe: {{httpGet: {{path: /readyz, port: {port}}}, periodSeconds: 1, failureThreshold: 2}}\n          \
         volumeMounts: [{{name: bin, mountPath: /shared}}]\n          \
         lifecycle: {{preStop: {{exec: {{command: [/shared/lameduck, prestop{hook}]}}}}}}\n---\n\
         apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {{name: side}}\n\
         spec: {{minAvailable: 1, selector: {{matchLabels: {{app: side}}}}}}\n"
    )
}

#[test]
fn a_hook_calling_another_socket_than_the_sidecar_s_is_an_error() {
    let pod = beside("args: [--prestop-socket=web-hook]", 8099, "");
    let ran = lint(&["--format", "json", "-"], &pod);
    let list = findings(&ran);
    assert_eq!(list.len(), 1, "{}", ran.stdout);
    let finding = &list[0];
    assert_eq!(finding["rule"], "prestop-socket-mismatch", "{finding}");
    assert_eq!(finding["severity"], "error", "{finding}");
    assert_eq!(finding["container"], "app", "{finding}");
    assert_eq!(
        finding["path"],
        "spec.template.spec.containers[0].lifecycle.preStop.exec.command"
    );
    let message = finding["message"].as_str().unwrap_or_default();
    for part in [
        "calls @lameduck-prestop-8099 (the default --listen port 8099)",
        "lameduck in container \"lameduck\" listens on @web-hook (--prestop-socket)",
    ] {
        assert!(message.contains(part), "{message}");
    }
    let fix = finding["fix"].as_str().unwrap_or_default();
    assert!(fix.contains("--prestop-socket=web-hook"), "{fix}");
    assert_eq!(ran.code, Some(1), "{}{}", ran.stdout, ran.stderr);
}

#[test]
fn a_hook_naming_the_sidecar_s_socket_passes() {
    let pod = beside(
        "args: [--prestop-socket=web-hook]",
        8099,
        ", --prestop-socket=@web-hook",
    );
    assert_clean(&lint(&["-"], &pod));
}

#[test]
fn a_hook_deriving_the_wrapper_s_socket_from_the_container_s_listen_variable_passes() {
    // The hook's process has the container's environment: both read LAMEDUCK_LISTEN's port.
    let pod = wrapped("app:1", "", "app")
        .replace("port: 8099", "port: 9000")
        .replace(
            "          lifecycle:",
            "          env: [{name: LAMEDUCK_LISTEN, value: '0.0.0.0:9000'}]\n          lifecycle:",
        );
    assert_clean(&lint(&["-"], &pod));
}

#[test]
fn the_sidecar_s_listen_variable_does_not_reach_the_app_s_hook() {
    let pod = beside(
        "env: [{name: LAMEDUCK_LISTEN, value: '0.0.0.0:9000'}]",
        9000,
        "",
    );
    let ran = lint(&["--format", "json", "-"], &pod);
    let list = findings(&ran);
    assert_eq!(list.len(), 1, "{}", ran.stdout);
    assert_eq!(list[0]["rule"], "prestop-socket-mismatch", "{}", ran.stdout);
    let message = list[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("listens on @lameduck-prestop-9000 (LAMEDUCK_LISTEN port 9000)"),
        "{message}"
    );
    let fix = list[0]["fix"].as_str().unwrap_or_default();
    assert!(fix.contains("--listen=0.0.0.0:9000"), "{fix}");
    assert_eq!(ran.code, Some(1));
}

#[test]
fn a_hook_flag_lameduck_prestop_refuses_is_flag_invalid() {
    let ran = lint(&["--format", "json", "-"], beside("", 8099, ", --bogus"));
    let list = findings(&ran);
    assert_eq!(list.len(), 1, "{}", ran.stdout);
    assert_eq!(list[0]["rule"], "flag-invalid", "{}", ran.stdout);
    assert_eq!(
        list[0]["path"],
        "spec.template.spec.containers[0].lifecycle.preStop.exec.command[2]"
    );
    let message = list[0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("--bogus") && message.contains("`lameduck prestop` refuses it"),
        "{message}"
    );
    assert_eq!(ran.code, Some(1));
}
