//! The shipped Kubernetes manifests (`examples/*.yaml`) and images (`images/*Dockerfile`),
//! checked offline: the manifests against Kubernetes' own schemas (the PyPI package
//! kubernetes-validate, `--strict`), and both against lameduck itself: every flag, value, port,
//! path and signal they hand lameduck must be one the real binary accepts, and the numbers must
//! add up to a drain that fits inside the pod's grace period.
//!
//! Needs python3 with pip. The first test that needs them installs kubernetes-validate (pinned
//! in the test support crate's `kubernetes`; it brings PyYAML, which the tests also use to read
//! the YAML) when it is missing.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lameduck::cli::{self, Cli, DrainArgs, SidecarArgs};
use lameduck::settings::GRACE_MARGIN;
use lameduck::signals::{SignalArg, starts_drain};
use lameduck_test_support::binaries::lameduck as lameduck_binary;
use lameduck_test_support::kubernetes::{self, NEWEST, OLDEST_WITH_NATIVE_SIDECARS};
use lameduck_test_support::process::{Ran, run};
use nix::sys::signal::Signal;
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const TMP: &str = env!("CARGO_TARGET_TMPDIR");

/// Runs the real lameduck with its endpoints on a free loopback port (unless `args` say
/// otherwise), so nothing binds 8099 or a public address; its environment less every
/// `LAMEDUCK_*` variable, plus `env`.
fn lameduck(args: &[String], env: &[(String, String)]) -> Ran {
    let mut command = Command::new(lameduck_binary());
    command.args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LAMEDUCK_") {
            command.env_remove(name);
        }
    }
    command
        .envs(
            env.iter()
                .filter(|(k, _)| k != "LAMEDUCK_LISTEN")
                .map(|(k, v)| (k, v)),
        )
        .env("LAMEDUCK_LISTEN", "127.0.0.1:0");
    run(&mut command, b"", Duration::from_secs(30))
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

// ---------------------------------------------------------------------------------------------
// The manifests
// ---------------------------------------------------------------------------------------------

/// One `examples/*.yaml` file: its name and its YAML documents, as JSON.
struct Manifest {
    file: String,
    docs: Vec<Value>,
}

/// `examples/*.yaml` and the admission webhook's `examples/webhook/*.yaml`.
fn example_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["examples", "examples/webhook"] {
        let dir = Path::new(ROOT).join(dir);
        let yaml: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|err| panic!("cannot read {}: {err}", dir.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .filter(|path| {
                path.extension()
                    .is_some_and(|ext| ext == "yaml" || ext == "yml")
            })
            .collect();
        assert!(!yaml.is_empty(), "no YAML files in {}", dir.display());
        files.extend(yaml);
    }
    files.sort();
    files
}

/// Asserts a kubernetes-validate run passed, and that the only kinds it had no schema for (and
/// so did not check) are cert-manager's CRDs, which no Kubernetes release ships.
fn assert_validated(ran: &Ran) {
    assert!(ran.ok(), "{}", ran.describe());
    for line in ran.stdout.lines().chain(ran.stderr.lines()) {
        if line.contains("Couldn't find schema") {
            assert!(
                line.contains("api version cert-manager.io/"),
                "a kind without a schema, so never checked: {line}"
            );
        }
    }
}

fn manifests() -> &'static [Manifest] {
    static MANIFESTS: OnceLock<Vec<Manifest>> = OnceLock::new();
    MANIFESTS.get_or_init(|| {
        example_files()
            .iter()
            .map(|path| Manifest {
                file: path.file_name().unwrap().to_string_lossy().into_owned(),
                docs: kubernetes::objects(path),
            })
            .collect()
    })
}

/// A pod template and where it comes from.
#[derive(Clone)]
struct Pod {
    file: &'static str,
    workload: &'static Value,
    name: String,
    labels: BTreeMap<String, String>,
    spec: &'static Value,
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_object()
        .map(|map| {
            map.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn pods() -> Vec<Pod> {
    let mut pods = Vec::new();
    for manifest in manifests() {
        for doc in &manifest.docs {
            let template = match doc["kind"].as_str().unwrap_or_default() {
                "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
                    &doc["spec"]["template"]
                }
                "CronJob" => &doc["spec"]["jobTemplate"]["spec"]["template"],
                "Pod" => doc,
                _ => continue,
            };
            pods.push(Pod {
                file: &manifest.file,
                workload: doc,
                name: format!(
                    "{} {}/{}",
                    manifest.file,
                    doc["kind"].as_str().unwrap_or_default(),
                    doc["metadata"]["name"].as_str().unwrap_or_default()
                ),
                labels: string_map(&template["metadata"]["labels"]),
                spec: &template["spec"],
            });
        }
    }
    assert!(!pods.is_empty(), "no pod templates in examples/");
    pods
}

fn list(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// Every container of a pod: (is an init container, its spec).
fn containers(pod: &Pod) -> Vec<(bool, &'static Value)> {
    let init = list(&pod.spec["initContainers"]).iter().map(|c| (true, c));
    let main = list(&pod.spec["containers"]).iter().map(|c| (false, c));
    init.chain(main).collect()
}

fn container_name(container: &Value) -> &str {
    container["name"].as_str().unwrap_or_default()
}

/// The container's argv as the manifest gives it: `command` then `args`.
fn argv(container: &Value) -> Vec<String> {
    list(&container["command"])
        .iter()
        .chain(list(&container["args"]))
        .map(|v| v.as_str().expect("command and args are strings").to_owned())
        .collect()
}

/// The repository part of an image reference: `ghcr.io/x/lameduck:0.1.0` gives `lameduck`.
fn image_repository(image: &str) -> &str {
    let last = image.rsplit('/').next().unwrap_or(image);
    last.split([':', '@']).next().unwrap_or(last)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mode {
    Wrap,
    Sidecar,
    Install,
}

impl Mode {
    /// The mode of a command line lameduck parsed.
    fn of(cli: &Cli) -> Mode {
        match cli.mode {
            None => Mode::Wrap,
            Some(cli::Mode::Sidecar(_)) => Mode::Sidecar,
            Some(_) => Mode::Install,
        }
    }
}

/// One container of a manifest that runs lameduck.
struct Invocation {
    pod: Pod,
    container: &'static Value,
    init: bool,
    argv: Vec<String>,
    /// `LAMEDUCK_*` variables of the container.
    env: Vec<(String, String)>,
    /// The command line and variables as lameduck's own definition parses them.
    cli: Cli,
}

impl Invocation {
    fn name(&self) -> String {
        format!(
            "{} container {}",
            self.pod.name,
            container_name(self.container)
        )
    }

    fn mode(&self) -> Mode {
        Mode::of(&self.cli)
    }

    /// The drain settings in effect: the flag, else its variable, else the default.
    fn drain(&self) -> &DrainArgs {
        match &self.cli.mode {
            None => &self.cli.wrap.drain,
            Some(cli::Mode::Sidecar(args)) => &args.drain,
            Some(_) => panic!("{}: install runs no drain", self.name()),
        }
    }

    fn sidecar(&self) -> &SidecarArgs {
        match &self.cli.mode {
            Some(cli::Mode::Sidecar(args)) => args,
            _ => panic!("{}: not a sidecar", self.name()),
        }
    }

    /// The app's command (wrapper mode).
    fn app(&self) -> &[OsString] {
        &self.cli.wrap.command
    }

    /// The stop signal the manifest asks for (`--stop-signal` or its variable).
    fn stop_signal(&self) -> Option<Signal> {
        self.drain().stop_signal.map(|s| s.0)
    }

    fn listen_port(&self) -> u64 {
        u64::from(self.drain().listen.addr.port())
    }

    /// lameduck's own words (the argv less the program and the app), `--listen` moved to a
    /// free loopback port.
    fn options_on_loopback(&self) -> Vec<String> {
        let end = self.argv.len() - self.app().len();
        let mut words: Vec<String> = self.argv[1..end].to_vec();
        if words.last().is_some_and(|w| w == "--") {
            words.pop();
        }
        let mut value_of_listen = false;
        for word in &mut words {
            if std::mem::take(&mut value_of_listen) {
                *word = "127.0.0.1:0".into();
            } else if word == "--listen" {
                value_of_listen = true;
            } else if word.starts_with("--listen=") {
                *word = "--listen=127.0.0.1:0".into();
            }
        }
        words
    }
}

/// Every container in `examples/` that runs lameduck (argv[0] named `lameduck`).
fn invocations() -> Vec<Invocation> {
    let mut found = Vec::new();
    for pod in pods() {
        for (init, container) in containers(&pod) {
            let image = container["image"].as_str().unwrap_or_default();
            let argv = argv(container);
            let runs_lameduck = argv
                .first()
                .is_some_and(|a| Path::new(a).file_name().is_some_and(|n| n == "lameduck"));
            if !runs_lameduck {
                assert!(
                    !image_repository(image).starts_with("lameduck"),
                    "{} container {}: spell out `command` for a lameduck image, so its flags \
                     can be checked here",
                    pod.name,
                    container_name(container)
                );
                continue;
            }
            let env: Vec<(String, String)> = list(&container["env"])
                .iter()
                .filter_map(|e| {
                    let name = e["name"].as_str()?;
                    name.starts_with("LAMEDUCK_").then(|| {
                        (
                            name.to_owned(),
                            e["value"].as_str().unwrap_or_default().to_owned(),
                        )
                    })
                })
                .collect();
            let cli = cli::parse_from(&argv, &env).unwrap_or_else(|err| {
                panic!(
                    "{} container {}: lameduck refuses {argv:?} with {env:?}: {}",
                    pod.name,
                    container_name(container),
                    err.render()
                )
            });
            found.push(Invocation {
                pod: pod.clone(),
                container,
                init,
                argv,
                env,
                cli,
            });
        }
    }
    found
}

fn invocations_in(mode: Mode) -> Vec<Invocation> {
    let found: Vec<Invocation> = invocations()
        .into_iter()
        .filter(|i| i.mode() == mode)
        .collect();
    assert!(
        !found.is_empty(),
        "no example runs lameduck in {mode:?} mode"
    );
    found
}

/// The long-running lameduck of a pod (wrapper or sidecar): exactly one.
fn pod_lameduck(pod: &Pod) -> Invocation {
    let mut running: Vec<Invocation> = invocations()
        .into_iter()
        .filter(|i| i.pod.name == pod.name && i.mode() != Mode::Install)
        .collect();
    assert_eq!(
        running.len(),
        1,
        "{}: expected one wrapper or sidecar lameduck, found {:?}",
        pod.name,
        running.iter().map(Invocation::name).collect::<Vec<_>>()
    );
    running.remove(0)
}

/// Whether a pod runs nginx: an nginx image or an app named nginx.
fn runs_nginx(pod: &Pod) -> bool {
    containers(pod).iter().any(|(_, c)| {
        image_repository(c["image"].as_str().unwrap_or_default()).contains("nginx")
            || argv(c).iter().any(|a| a == "nginx")
    })
}

fn seconds(value: &Value, what: &str) -> u64 {
    value
        .as_u64()
        .unwrap_or_else(|| panic!("{what} is not a whole number: {value}"))
}

/// Asserts that the lameduck binary accepts the invocation's mode and options: with `--help`
/// appended it prints help and exits 0 only when every value before it was accepted.
fn assert_parses(invocation: &Invocation) {
    let mut args = invocation.options_on_loopback();
    args.push("--help".into());
    let ran = lameduck(&args, &invocation.env);
    assert!(
        ran.ok() && ran.stdout.contains("Usage:"),
        "{}: lameduck rejects {:?}\n{}",
        invocation.name(),
        invocation.argv,
        ran.describe()
    );
}

// ---------------------------------------------------------------------------------------------
// The Dockerfiles
// ---------------------------------------------------------------------------------------------

/// One instruction of a Dockerfile: the keyword (upper case) and the rest of the line.
struct Instruction {
    keyword: String,
    args: String,
}

struct Dockerfile {
    file: String,
    instructions: Vec<Instruction>,
    comments: Vec<String>,
}

impl Dockerfile {
    fn all(&self, keyword: &str) -> impl Iterator<Item = &str> {
        self.instructions
            .iter()
            .filter(move |i| i.keyword == keyword)
            .map(|i| i.args.as_str())
    }

    /// The instructions of the final stage (after the last FROM).
    fn final_stage(&self) -> &[Instruction] {
        let start = self
            .instructions
            .iter()
            .rposition(|i| i.keyword == "FROM")
            .unwrap_or_else(|| panic!("{}: no FROM", self.file));
        &self.instructions[start..]
    }

    fn final_one(&self, keyword: &str) -> Option<&str> {
        self.final_stage()
            .iter()
            .rev()
            .find(|i| i.keyword == keyword)
            .map(|i| i.args.as_str())
    }

    /// An exec-form instruction (`["a", "b"]`) of the final stage, as a list.
    fn exec_form(&self, keyword: &str) -> Option<Vec<String>> {
        self.final_one(keyword).map(|args| {
            serde_json::from_str(args).unwrap_or_else(|err| {
                panic!(
                    "{}: {keyword} {args} is not the exec (JSON) form: {err}",
                    self.file
                )
            })
        })
    }

    /// Global ARG defaults (before the first FROM), for `${NAME}` in FROM lines.
    fn arg_defaults(&self) -> BTreeMap<String, String> {
        self.instructions
            .iter()
            .take_while(|i| i.keyword != "FROM")
            .filter(|i| i.keyword == "ARG")
            .filter_map(|i| i.args.split_once('='))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
            .collect()
    }

    /// Stage name -> base image, with ARG defaults substituted.
    fn stages(&self) -> BTreeMap<String, String> {
        let args = self.arg_defaults();
        self.all("FROM")
            .filter_map(|line| {
                let words: Vec<&str> = line.split_whitespace().collect();
                let image = words.iter().find(|w| !w.starts_with("--"))?;
                let alias = words
                    .iter()
                    .position(|w| w.eq_ignore_ascii_case("AS"))
                    .and_then(|i| words.get(i + 1))?;
                let mut image = (*image).to_owned();
                for (name, value) in &args {
                    image = image
                        .replace(&format!("${{{name}}}"), value)
                        .replace(&format!("${name}"), value);
                }
                Some(((*alias).to_owned(), image))
            })
            .collect()
    }

    /// Every COPY: its `--from` stage, if any, its sources and its destination.
    fn copies(&self) -> Vec<(Option<String>, Vec<String>, String)> {
        self.all("COPY")
            .map(|line| {
                let mut words: Vec<String> = if line.trim_start().starts_with('[') {
                    serde_json::from_str(line).expect("a JSON COPY")
                } else {
                    line.split_whitespace().map(str::to_owned).collect()
                };
                let from = words
                    .iter()
                    .find_map(|w| w.strip_prefix("--from=").map(str::to_owned));
                words.retain(|w| !w.starts_with("--"));
                let dest = words.pop().expect("COPY has a destination");
                (from, words, dest)
            })
            .collect()
    }

    /// The `-t`/`--tag` names of the documented `docker build` command.
    fn documented_tags(&self) -> Vec<String> {
        let line = self.documented("docker build");
        let words: Vec<&str> = line.split_whitespace().collect();
        words
            .windows(2)
            .filter(|w| w[0] == "-t" || w[0] == "--tag")
            .map(|w| w[1].to_owned())
            .collect()
    }

    /// The comment line documenting `command`.
    fn documented(&self, command: &str) -> &str {
        self.comments
            .iter()
            .find(|c| c.contains(command))
            .unwrap_or_else(|| panic!("{}: no comment documents `{command}`", self.file))
    }
}

fn parse_dockerfile(path: &Path) -> Dockerfile {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()));
    let mut instructions = Vec::new();
    let mut comments = Vec::new();
    let mut pending = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if let Some(comment) = trimmed.strip_prefix('#') {
            comments.push(comment.trim().to_owned());
            continue;
        }
        if trimmed.is_empty() && pending.is_empty() {
            continue;
        }
        if let Some(start) = trimmed.strip_suffix('\\') {
            pending.push_str(start);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let whole = std::mem::take(&mut pending);
        let (keyword, args) = whole
            .split_once(char::is_whitespace)
            .unwrap_or((&whole, ""));
        instructions.push(Instruction {
            keyword: keyword.to_ascii_uppercase(),
            args: args.trim().to_owned(),
        });
    }
    Dockerfile {
        file: path.file_name().unwrap().to_string_lossy().into_owned(),
        instructions,
        comments,
    }
}

fn dockerfiles() -> Vec<Dockerfile> {
    let dir = Path::new(ROOT).join("images");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == "Dockerfile" || n.ends_with(".Dockerfile"))
        })
        .collect();
    files.sort();
    files.iter().map(|path| parse_dockerfile(path)).collect()
}

/// `images/Dockerfile`: the lameduck image itself.
fn lameduck_dockerfile() -> Dockerfile {
    parse_dockerfile(&Path::new(ROOT).join("images/Dockerfile"))
}

/// The Dockerfiles whose ENTRYPOINT runs lameduck as a wrapper (something after `--`).
fn wrapper_dockerfiles() -> Vec<Dockerfile> {
    let found: Vec<Dockerfile> = dockerfiles()
        .into_iter()
        .filter(|d| {
            d.exec_form("ENTRYPOINT")
                .is_some_and(|e| e.iter().any(|w| w == "--"))
        })
        .collect();
    assert!(
        !found.is_empty(),
        "no image in images/ wraps an app in lameduck"
    );
    found
}

// =============================================================================================
// Kubernetes schemas
// =============================================================================================

#[test]
fn every_example_manifest_passes_strict_schema_validation_for_kubernetes_1_37() {
    for file in example_files() {
        assert_validated(&kubernetes::validate(&[&file], NEWEST));
    }
}

#[test]
fn every_example_manifest_is_valid_for_kubernetes_1_29_where_native_sidecars_are_on_by_default() {
    for file in example_files() {
        assert_validated(&kubernetes::validate(&[&file], OLDEST_WITH_NATIVE_SIDECARS));
    }
}

#[test]
fn the_examples_cover_the_wrapper_sidecar_and_init_install_shapes() {
    let modes: BTreeSet<Mode> = invocations().iter().map(Invocation::mode).collect();
    assert_eq!(
        modes,
        BTreeSet::from([Mode::Wrap, Mode::Sidecar, Mode::Install])
    );
    for pod in pods() {
        pod_lameduck(&pod);
    }
}

// =============================================================================================
// lameduck's command lines in the manifests
// =============================================================================================

#[test]
fn wrapper_flags_in_the_manifests_parse_by_lameduck_s_definition() {
    // `invocations` parses each with lameduck's clap definition and names the one it refuses.
    assert!(!invocations_in(Mode::Wrap).is_empty());
}

#[test]
fn wrapper_command_lines_in_the_manifests_start_the_app_and_exit_cleanly() {
    for invocation in invocations_in(Mode::Wrap) {
        assert!(
            !invocation.app().is_empty(),
            "{}: no app after `--`",
            invocation.name()
        );
        // The same flags (endpoints moved to a free loopback port), `true` for the app: exit 0
        // means every value parsed and the drain settings passed lameduck's own validation.
        let mut args = invocation.options_on_loopback();
        args.extend(strings(&["--", "true"]));
        let ran = lameduck(&args, &invocation.env);
        assert!(ran.ok(), "{}\n{}", invocation.name(), ran.describe());
    }
}

#[test]
fn sidecar_flags_in_the_manifests_parse_by_lameduck_s_definition() {
    assert!(!invocations_in(Mode::Sidecar).is_empty());
}

#[test]
fn sidecar_command_lines_in_the_manifests_parse() {
    for invocation in invocations_in(Mode::Sidecar) {
        assert_parses(&invocation);
    }
}

#[test]
fn install_command_lines_in_the_manifests_install_an_executable_lameduck() {
    static COUNT: AtomicUsize = AtomicUsize::new(0);
    for invocation in invocations_in(Mode::Install) {
        assert!(
            invocation.argv.len() == 3 && invocation.env.is_empty(),
            "{}: expected `lameduck install DIR`, got {:?}",
            invocation.name(),
            invocation.argv
        );
        // The manifest's DIR is a volume in the pod; here, a fresh folder stands in for it.
        let dir = Path::new(TMP).join(format!(
            "manifests-install-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let ran = lameduck(
            &strings(&["install", dir.to_str().unwrap()]),
            &invocation.env,
        );
        let installed = dir.join("lameduck");
        let mode = std::fs::metadata(&installed).map(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.permissions().mode()
        });
        let _ = std::fs::remove_dir_all(&dir);
        assert!(ran.ok(), "{}\n{}", invocation.name(), ran.describe());
        assert!(
            mode.as_ref().is_ok_and(|m| m & 0o111 != 0),
            "{}: no executable {} after install: {mode:?}",
            invocation.name(),
            installed.display()
        );
    }
}

#[test]
fn init_install_app_runs_lameduck_from_the_volume_the_init_container_filled() {
    for install in invocations_in(Mode::Install) {
        assert!(
            install.init,
            "{}: install must run as an init container",
            install.name()
        );
        assert!(
            install.container["restartPolicy"].is_null(),
            "{}: the installer runs once, it is not a sidecar",
            install.name()
        );
        let dir = &install.argv[2];
        let volume = list(&install.container["volumeMounts"])
            .iter()
            .find(|m| m["mountPath"].as_str() == Some(dir.as_str()))
            .and_then(|m| m["name"].as_str())
            .unwrap_or_else(|| panic!("{}: {dir} is not a mounted volume", install.name()));
        let binary = format!("{}/lameduck", dir.trim_end_matches('/'));
        // The installed copy runs as the app's PID 1 (init-install), or as the app container's
        // preStop hook beside a sidecar whose image it came from.
        let users: Vec<&Value> = containers(&install.pod)
            .into_iter()
            .map(|(_, container)| container)
            .filter(|c| {
                c["command"][0].as_str() == Some(binary.as_str())
                    || c["lifecycle"]["preStop"]["exec"]["command"][0].as_str()
                        == Some(binary.as_str())
            })
            .collect();
        assert!(
            !users.is_empty(),
            "{}: no container runs the installed {binary}",
            install.name()
        );
        for user in users {
            let mounted = list(&user["volumeMounts"]).iter().any(|m| {
                m["name"].as_str() == Some(volume) && m["mountPath"].as_str() == Some(dir.as_str())
            });
            assert!(
                mounted,
                "{} container {}: volume {volume} is not mounted at {dir}",
                install.pod.name,
                container_name(user)
            );
        }
    }
}

// =============================================================================================
// Probes, hook and timing
// =============================================================================================

/// Asserts an httpGet on lameduck: the path, and the port given by number equal to `port`.
fn assert_http_get(what: &str, handler: &Value, path: &str, port: u64) {
    let get = &handler["httpGet"];
    assert!(get.is_object(), "{what}: not an httpGet: {handler}");
    assert_eq!(get["path"].as_str(), Some(path), "{what}: path");
    assert_eq!(
        get["port"].as_u64(),
        Some(port),
        "{what}: port must be lameduck's --listen port {port}, by number (a hook or probe \
         cannot name another container's port)"
    );
}

#[test]
fn readiness_probes_ask_lameduck_readyz_on_its_listen_port() {
    for pod in pods() {
        let port = pod_lameduck(&pod).listen_port();
        for container in list(&pod.spec["containers"]) {
            let what = format!(
                "{} container {} readinessProbe",
                pod.name,
                container_name(container)
            );
            assert_http_get(&what, &container["readinessProbe"], "/readyz", port);
        }
    }
}

#[test]
fn liveness_probe_asks_livez_on_the_container_that_runs_lameduck() {
    for pod in pods() {
        let lameduck = pod_lameduck(&pod);
        let what = format!("{} livenessProbe", lameduck.name());
        assert_http_get(
            &what,
            &lameduck.container["livenessProbe"],
            "/livez",
            lameduck.listen_port(),
        );
        // Any other liveness probe must not point at lameduck: it would restart the wrong container.
        for (_, container) in containers(&pod) {
            let port = container["livenessProbe"]["httpGet"]["port"].as_u64();
            if !std::ptr::eq(container, lameduck.container) {
                assert_ne!(
                    port,
                    Some(lameduck.listen_port()),
                    "{} container {}: probes lameduck's liveness",
                    pod.name,
                    container_name(container)
                );
            }
        }
    }
}

#[test]
fn prestop_hooks_run_lameduck_prestop_inside_the_pod() {
    for pod in pods() {
        let lameduck = pod_lameduck(&pod);
        for container in list(&pod.spec["containers"]) {
            let what = format!(
                "{} container {} preStop",
                pod.name,
                container_name(container)
            );
            let command: Vec<&str> = list(&container["lifecycle"]["preStop"]["exec"]["command"])
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(command.len(), 2, "{what}: not an exec of lameduck prestop");
            assert!(command[0].ends_with("/lameduck"), "{what}: {command:?}");
            assert_eq!(command[1], "prestop", "{what}");
            // The default socket name follows --listen: the hook's container must agree on it.
            let listen = lameduck.listen_port();
            assert_eq!(
                listen, 8099,
                "{what}: the hook's default socket name assumes port 8099"
            );
        }
    }
}

#[test]
fn readiness_probe_notices_the_drain_before_the_shutdown_delay_ends() {
    for pod in pods() {
        let delay = pod_lameduck(&pod).drain().shutdown_delay;
        for container in list(&pod.spec["containers"]) {
            let probe = &container["readinessProbe"];
            // Kubernetes' defaults: every 10s, out after 3 failures.
            let period = probe["periodSeconds"].as_u64().unwrap_or(10);
            let failures = probe["failureThreshold"].as_u64().unwrap_or(3);
            let detection = Duration::from_secs(period * failures);
            assert!(
                detection < delay,
                "{} container {}: readiness notices the drain after up to {detection:?}, not \
                 before the {delay:?} shutdown delay ends",
                pod.name,
                container_name(container)
            );
        }
    }
}

#[test]
fn termination_grace_period_holds_shutdown_delay_drain_timeout_and_margin() {
    for pod in pods() {
        let lameduck = pod_lameduck(&pod);
        let grace = Duration::from_secs(seconds(
            &pod.spec["terminationGracePeriodSeconds"],
            &format!("{} terminationGracePeriodSeconds", pod.name),
        ));
        let delay = lameduck.drain().shutdown_delay;
        let drain = lameduck.drain().drain_timeout;
        assert!(
            delay + drain + GRACE_MARGIN <= grace,
            "{}: shutdown delay {delay:?} + drain timeout {drain:?} + margin {GRACE_MARGIN:?} \
             exceed terminationGracePeriodSeconds {grace:?}",
            pod.name
        );
    }
}

#[test]
fn grace_period_flag_equals_termination_grace_period_seconds() {
    for pod in pods() {
        let lameduck = pod_lameduck(&pod);
        let grace = seconds(
            &pod.spec["terminationGracePeriodSeconds"],
            &format!("{} terminationGracePeriodSeconds", pod.name),
        );
        let flag = lameduck
            .drain()
            .grace_period
            .unwrap_or_else(|| panic!("{}: no --grace-period", lameduck.name()));
        assert_eq!(
            flag,
            Duration::from_secs(grace),
            "{}: --grace-period {flag:?} vs terminationGracePeriodSeconds {grace}",
            lameduck.name()
        );
    }
}

#[test]
fn nginx_gets_quit_as_its_stop_signal() {
    for pod in pods().iter().filter(|p| runs_nginx(p)) {
        let lameduck = pod_lameduck(pod);
        let signal = lameduck.stop_signal().unwrap_or_else(|| {
            panic!(
                "{}: no --stop-signal (TERM is nginx's fast shutdown)",
                lameduck.name()
            )
        });
        assert_eq!(signal, Signal::SIGQUIT, "{}", lameduck.name());
    }
}

// =============================================================================================
// The sidecar shape
// =============================================================================================

#[test]
fn sidecar_runs_as_a_native_sidecar_in_a_shared_process_namespace() {
    for sidecar in invocations_in(Mode::Sidecar) {
        assert!(
            sidecar.init && sidecar.container["restartPolicy"].as_str() == Some("Always"),
            "{}: must be an init container with restartPolicy: Always (a native sidecar, \
             stopped only after the app)",
            sidecar.name()
        );
        assert_eq!(
            sidecar.pod.spec["shareProcessNamespace"].as_bool(),
            Some(true),
            "{}: the sidecar can signal nginx only with shareProcessNamespace: true",
            sidecar.pod.name
        );
    }
}

/// nginx's `pid` directive for a container: from `-g '...'` or from a ConfigMap mounted as
/// /etc/nginx/nginx.conf.
fn nginx_pid_directives(pod: &Pod, container: &Value) -> Vec<String> {
    let mut texts: Vec<String> = Vec::new();
    let args = argv(container);
    for pair in args.windows(2).filter(|w| w[0] == "-g") {
        texts.push(pair[1].replace(';', ";\n"));
    }
    for mount in list(&container["volumeMounts"]) {
        if mount["mountPath"].as_str() != Some("/etc/nginx/nginx.conf") {
            continue;
        }
        let volume = list(&pod.spec["volumes"])
            .iter()
            .find(|v| v["name"] == mount["name"])
            .expect("the mounted volume is declared");
        let config_map = volume["configMap"]["name"]
            .as_str()
            .expect("nginx.conf comes from a ConfigMap");
        let key = mount["subPath"]
            .as_str()
            .expect("nginx.conf is mounted by subPath");
        let doc = manifests()
            .iter()
            .filter(|m| m.file == pod.file)
            .flat_map(|m| &m.docs)
            .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["name"] == config_map)
            .unwrap_or_else(|| panic!("{}: ConfigMap {config_map} is not in the file", pod.name));
        texts.push(
            doc["data"][key]
                .as_str()
                .unwrap_or_else(|| panic!("ConfigMap {config_map} has no {key}"))
                .to_owned(),
        );
    }
    texts
        .iter()
        .flat_map(|t| t.lines())
        .filter_map(|line| line.trim().strip_prefix("pid "))
        .map(|rest| rest.trim().trim_end_matches(';').trim().to_owned())
        .collect()
}

#[test]
fn sidecar_pid_file_is_where_nginx_writes_its_pid_on_a_shared_volume() {
    for sidecar in invocations_in(Mode::Sidecar) {
        let Some(pid_file) = sidecar.sidecar().pid_file.as_ref() else {
            continue; // --process-name needs no file.
        };
        let pid_file = pid_file.to_string_lossy().into_owned();
        let (volume, dir) = list(&sidecar.container["volumeMounts"])
            .iter()
            .filter_map(|m| Some((m["name"].as_str()?, m["mountPath"].as_str()?)))
            .find(|(_, path)| pid_file.starts_with(&format!("{}/", path.trim_end_matches('/'))))
            .unwrap_or_else(|| panic!("{}: {pid_file} is on no mounted volume", sidecar.name()));
        let nginx = list(&sidecar.pod.spec["containers"])
            .iter()
            .find(|c| image_repository(c["image"].as_str().unwrap_or_default()) == "nginx")
            .unwrap_or_else(|| panic!("{}: no nginx container", sidecar.pod.name));
        let shared = list(&nginx["volumeMounts"])
            .iter()
            .any(|m| m["name"].as_str() == Some(volume) && m["mountPath"].as_str() == Some(dir));
        assert!(
            shared,
            "{}: nginx does not mount volume {volume} at {dir}",
            sidecar.pod.name
        );
        assert_eq!(
            nginx_pid_directives(&sidecar.pod, nginx),
            vec![pid_file.clone()],
            "{}: nginx must write its pid to {pid_file}, once",
            sidecar.pod.name
        );
    }
}

// =============================================================================================
// Service, disruption budget, rollout
// =============================================================================================

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn docs_of_kind(file: &str, kind: &str) -> Vec<&'static Value> {
    manifests()
        .iter()
        .filter(|m| m.file == file)
        .flat_map(|m| &m.docs)
        .filter(|d| d["kind"] == kind)
        .collect()
}

#[test]
fn a_service_selects_each_examples_pods_and_targets_the_app_port() {
    for pod in pods() {
        let lameduck_port = pod_lameduck(&pod).listen_port();
        let services: Vec<&Value> = docs_of_kind(pod.file, "Service")
            .into_iter()
            .filter(|s| selects(&string_map(&s["spec"]["selector"]), &pod.labels))
            .collect();
        assert_eq!(
            services.len(),
            1,
            "{}: one Service must select it",
            pod.name
        );
        for port in list(&services[0]["spec"]["ports"]) {
            let target = &port["targetPort"];
            let container_port = list(&pod.spec["containers"])
                .iter()
                .flat_map(|c| list(&c["ports"]))
                .find(|p| match target {
                    Value::String(name) => p["name"].as_str() == Some(name),
                    Value::Number(n) => p["containerPort"].as_u64() == n.as_u64(),
                    _ => p["containerPort"] == port["port"],
                })
                .unwrap_or_else(|| {
                    panic!("{}: targetPort {target} is no container port", pod.name)
                });
            assert_ne!(
                container_port["containerPort"].as_u64(),
                Some(lameduck_port),
                "{}: the Service must send traffic to the app, not to lameduck",
                pod.name
            );
        }
    }
}

#[test]
fn a_disruption_budget_keeps_one_pod_of_each_example_available() {
    for pod in pods() {
        let budgets: Vec<&Value> = docs_of_kind(pod.file, "PodDisruptionBudget")
            .into_iter()
            .filter(|b| {
                selects(
                    &string_map(&b["spec"]["selector"]["matchLabels"]),
                    &pod.labels,
                )
            })
            .collect();
        assert_eq!(
            budgets.len(),
            1,
            "{}: one PodDisruptionBudget must select it",
            pod.name
        );
        assert_eq!(
            budgets[0]["spec"]["minAvailable"].as_u64(),
            Some(1),
            "{}",
            pod.name
        );
    }
}

#[test]
fn rolling_updates_add_one_pod_before_removing_any() {
    for pod in pods() {
        let spec = &pod.workload["spec"];
        assert!(
            spec["replicas"].as_u64().is_some_and(|r| r >= 2),
            "{}: at least 2 replicas, so one can drain while another serves",
            pod.name
        );
        let strategy = &spec["strategy"];
        assert_eq!(
            strategy["type"].as_str(),
            Some("RollingUpdate"),
            "{}",
            pod.name
        );
        assert_eq!(
            strategy["rollingUpdate"]["maxUnavailable"].as_u64(),
            Some(0),
            "{}",
            pod.name
        );
        assert_eq!(
            strategy["rollingUpdate"]["maxSurge"].as_u64(),
            Some(1),
            "{}",
            pod.name
        );
    }
}

// =============================================================================================
// The images
// =============================================================================================

#[test]
fn every_image_entrypoint_runs_the_binary_its_copy_put_there() {
    let files = dockerfiles();
    assert!(
        files.len() >= 2,
        "expected images/Dockerfile and images/nginx.Dockerfile"
    );
    for dockerfile in files {
        let entrypoint = dockerfile
            .exec_form("ENTRYPOINT")
            .unwrap_or_else(|| panic!("{}: no ENTRYPOINT", dockerfile.file));
        let copied: Vec<String> = dockerfile
            .final_stage()
            .iter()
            .filter(|i| i.keyword == "COPY")
            .filter_map(|i| i.args.split_whitespace().last().map(str::to_owned))
            .collect();
        assert!(
            copied.contains(&entrypoint[0]),
            "{}: ENTRYPOINT runs {} but COPY puts files at {copied:?}",
            dockerfile.file,
            entrypoint[0]
        );
    }
}

#[test]
fn lameduck_image_is_built_from_the_static_binary_cargo_writes() {
    let dockerfile = lameduck_dockerfile();
    assert_eq!(dockerfile.final_one("FROM"), Some("scratch"));
    let copies = dockerfile.copies();
    assert_eq!(copies.len(), 1, "images/Dockerfile: one COPY, the binary");
    let (from, sources, _) = &copies[0];
    assert!(from.is_none());
    let binary = lameduck_binary();
    let binary = binary.file_name().unwrap().to_str().unwrap();
    assert_eq!(
        sources,
        &vec![binary.to_owned()],
        "the COPY source is cargo's binary"
    );

    // The documented commands: the static build script, and the folder it stages the binary
    // in as the build context.
    let script = dockerfile.documented("scripts/build-static.sh");
    assert_eq!(script.trim(), "scripts/build-static.sh");
    let build = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-static.sh"),
    )
    .expect("scripts/build-static.sh");
    assert!(
        build.contains("+crt-static") && build.contains("linux-gnu"),
        "FROM scratch needs a static binary"
    );
    let docker = dockerfile.documented("docker build");
    assert!(docker.contains("-f images/Dockerfile"), "{docker}");
    let context = docker.split_whitespace().last().unwrap();
    // The script stages `$binary` (lameduck by default) in `$context`.
    assert!(
        build.contains(&format!("binary={binary}\n"))
            && build.contains(&format!("context={context}\n"))
            && build.contains("\"$context/$binary\""),
        "the build context {context} must be where scripts/build-static.sh puts the binary"
    );
}

#[test]
fn nginx_image_copies_lameduck_from_where_the_lameduck_image_has_it() {
    let lameduck_image = lameduck_dockerfile();
    let binary = lameduck_image
        .exec_form("ENTRYPOINT")
        .expect("images/Dockerfile has an ENTRYPOINT")[0]
        .clone();
    let tags = lameduck_image.documented_tags();
    let mut checked = 0;
    for dockerfile in dockerfiles() {
        let stages = dockerfile.stages();
        for (from, sources, _) in dockerfile.copies() {
            let Some(stage) = from else { continue };
            let image = stages.get(&stage).cloned().unwrap_or(stage);
            if image_repository(&image) != "lameduck" {
                continue;
            }
            checked += 1;
            assert!(
                tags.contains(&image),
                "{}: copies from {image}, but images/Dockerfile documents the tags {tags:?}",
                dockerfile.file
            );
            assert_eq!(sources, vec![binary.clone()], "{}", dockerfile.file);
        }
    }
    assert!(
        checked > 0,
        "no image copies lameduck out of the lameduck image"
    );
}

#[test]
fn every_image_the_examples_use_is_built_here_or_is_an_images_base() {
    let files = dockerfiles();
    let mut known: BTreeSet<String> = BTreeSet::new();
    for dockerfile in &files {
        known.extend(dockerfile.documented_tags());
        known.extend(dockerfile.arg_defaults().into_values());
    }
    for pod in pods() {
        for (_, container) in containers(&pod) {
            let image = container["image"].as_str().unwrap_or_default();
            assert!(
                known.contains(image),
                "{} container {}: image {image} is neither built by a documented command in \
                 images/ nor one of their bases ({known:?})",
                pod.name,
                container_name(container)
            );
        }
    }
}

#[test]
fn wrapper_image_entrypoint_flags_are_accepted_by_lameduck() {
    for dockerfile in wrapper_dockerfiles() {
        let entrypoint = dockerfile.exec_form("ENTRYPOINT").unwrap();
        let split = entrypoint.iter().position(|w| w == "--").unwrap();
        let options = &entrypoint[1..split];
        entrypoint_cli(&dockerfile);
        let cmd = dockerfile.exec_form("CMD").unwrap_or_default();
        assert!(
            split + 1 < entrypoint.len() || !cmd.is_empty(),
            "{}: nothing to run after `--`",
            dockerfile.file
        );
        let mut args = options.to_vec();
        args.extend(strings(&["--", "true"]));
        let ran = lameduck(&args, &[]);
        assert!(ran.ok(), "{}\n{}", dockerfile.file, ran.describe());
    }
}

#[test]
fn wrapper_image_stop_signal_is_one_that_starts_the_drain() {
    for dockerfile in wrapper_dockerfiles() {
        // Explicit: a base image's STOPSIGNAL (nginx's is QUIT) would otherwise be inherited.
        let signal = dockerfile
            .final_one("STOPSIGNAL")
            .unwrap_or_else(|| panic!("{}: no STOPSIGNAL", dockerfile.file));
        let ran = lameduck(&strings(&["--stop-signal", signal, "--help"]), &[]);
        assert!(
            ran.ok(),
            "{}: {signal} is no signal\n{}",
            dockerfile.file,
            ran.describe()
        );
        let signal_number = signal.parse::<SignalArg>().unwrap().0;
        let stop_signal = entrypoint_cli(&dockerfile)
            .wrap
            .drain
            .stop_signal
            .map_or(Signal::SIGTERM, |s| s.0);
        assert!(
            starts_drain(signal_number, stop_signal),
            "{}: STOPSIGNAL {signal} would be forwarded to the app instead of starting the drain",
            dockerfile.file
        );
    }
}

#[test]
fn wrapper_image_exposes_lameduck_listen_port() {
    for dockerfile in wrapper_dockerfiles() {
        let port = entrypoint_cli(&dockerfile)
            .wrap
            .drain
            .listen
            .addr
            .port()
            .to_string();
        let port = port.as_str();
        let exposed: Vec<&str> = dockerfile
            .all("EXPOSE")
            .flat_map(str::split_whitespace)
            .map(|p| p.trim_end_matches("/tcp"))
            .collect();
        assert!(
            exposed.contains(&port),
            "{}: EXPOSE {exposed:?} lacks lameduck's port {port}",
            dockerfile.file
        );
    }
}

/// A wrapper image's ENTRYPOINT and CMD as lameduck's own definition parses them.
fn entrypoint_cli(dockerfile: &Dockerfile) -> Cli {
    let mut argv = dockerfile.exec_form("ENTRYPOINT").unwrap();
    argv.extend(dockerfile.exec_form("CMD").unwrap_or_default());
    cli::parse_from(&argv, &[]).unwrap_or_else(|err| {
        panic!(
            "{}: lameduck refuses {argv:?}: {}",
            dockerfile.file,
            err.render()
        )
    })
}
