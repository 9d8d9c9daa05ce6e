//! The plugin's image (images/kubectl-lameduck.Dockerfile), built the way its comment says,
//! from scratch: it runs `lint` on the shipped examples in a container with no network, as a
//! non-root user, and serves its admission webhook over TLS from a mounted Secret-like volume,
//! reached on a loopback port docker publishes, until `docker stop`. Needs Docker: without it
//! these tests fail, they do not skip.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use base64::Engine;
use lameduck_test_support::binaries::workspace;
use lameduck_test_support::process::{Ran, run};
use lameduck_test_support::webhook::{Ca, Client, SecretVolume};
use serde_json::{Value, json};

/// Runs `program ARGS` in the workspace root with `stdin` on its standard input; a build gets
/// its own RUSTFLAGS, not the test run's.
/// `kubectl-lameduck SUBCOMMAND -` in a throwaway container of `image`, with no network,
/// reading `stdin`.
fn from_stdin(image: &Image, subcommand: &str, stdin: &[u8]) -> Ran {
    let args = [
        "run",
        "--rm",
        "-i",
        "--network",
        "none",
        &image.0,
        subcommand,
        "-",
    ];
    in_workspace("docker", &args, stdin)
}

fn in_workspace(program: &str, args: &[&str], stdin: &[u8]) -> Ran {
    let mut command = Command::new(program);
    command
        .args(args)
        .current_dir(workspace())
        .env_remove("RUSTFLAGS");
    run(&mut command, stdin, Duration::from_secs(600))
}

/// The image's tag, removed when the test ends however it ends.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = in_workspace("docker", &["rmi", "-f", &self.0], b"");
    }
}

/// The image, tagged for one test. The static release build behind it, the slow part, is made
/// once for all the tests here; `docker build` of its one layer then takes a moment.
fn image(test: &str) -> Image {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let built = in_workspace("scripts/build-static.sh", &["kubectl-lameduck"], b"");
        if built.ok() {
            Ok(())
        } else {
            Err(built.describe())
        }
    });
    if let Err(failed) = built {
        panic!("scripts/build-static.sh kubectl-lameduck: {failed}");
    }
    let image = Image(format!(
        "kubectl-lameduck-it-{test}-{}:test",
        std::process::id()
    ));
    let docker_built = in_workspace(
        "docker",
        &[
            "build",
            "--force-rm",
            "-q",
            "-f",
            "images/kubectl-lameduck.Dockerfile",
            "-t",
            &image.0,
            "target/image-kubectl-lameduck",
        ],
        b"",
    );
    assert!(docker_built.ok(), "{}", docker_built.describe());
    image
}

#[test]
fn the_scratch_image_lints_the_examples_without_network_or_root() {
    let image = image("lint");
    let examples = workspace().join("examples");
    let mount = format!("{}:/examples:ro", examples.display());
    let mut args = vec![
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &mount,
        &image.0,
        "lint",
    ];
    let files: Vec<String> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml"))
        .map(|name| format!("/examples/{name}"))
        .collect();
    assert!(!files.is_empty(), "no manifests in {}", examples.display());
    args.extend(files.iter().map(String::as_str));
    let linted = in_workspace("docker", &args, b"");
    assert!(linted.ok(), "{}", linted.describe());

    // A shutdown delay longer than the default grace period of 30s: lint says error.
    let bad = b"{kind: Pod, metadata: {name: p}, spec: {containers: [{name: a, image: nginx, \
        command: [lameduck, --shutdown-delay=40s, --, nginx]}]}}";
    let refused = from_stdin(&image, "lint", bad);
    assert_eq!(refused.code, Some(1), "{}", refused.describe());

    let user = in_workspace(
        "docker",
        &["image", "inspect", "--format", "{{.Config.User}}", &image.0],
        b"",
    );
    assert_eq!(user.stdout.trim(), "65532:65532", "{}", user.describe());
}

/// The webhook, run from the image as the example Deployment runs it (non-root, read-only
/// root, no capabilities), with `volume` mounted at /tls like its Secret and its port
/// published on a loopback port docker picks; removed when dropped.
struct Served {
    id: String,
    addr: std::net::SocketAddr,
}

impl Served {
    fn start(image: &Image, volume: &SecretVolume) -> Served {
        let mount = format!("{}:/tls:ro", volume.dir().display());
        let started = in_workspace(
            "docker",
            &[
                "run",
                "-d",
                "--read-only",
                "--cap-drop",
                "ALL",
                "--security-opt",
                "no-new-privileges",
                "-p",
                "127.0.0.1::8443",
                "-v",
                &mount,
                &image.0,
                "webhook",
                "--tls-cert=/tls/tls.crt",
                "--tls-key=/tls/tls.key",
            ],
            b"",
        );
        assert!(started.ok(), "{}", started.describe());
        let id = started.stdout.trim().to_owned();
        let mut served = Served {
            id,
            addr: ([127, 0, 0, 1], 0).into(),
        };
        // The published port answers at once (docker's proxy); the webhook's own line says
        // when it listens.
        let began = Instant::now();
        while !served.logs().contains("webhook listening") {
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "the webhook did not listen within 10s:\n{}",
                served.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let port = in_workspace("docker", &["port", &served.id, "8443/tcp"], b"");
        assert!(port.ok(), "{}", port.describe());
        let published = port.stdout;
        served.addr = published
            .lines()
            .find_map(|line| line.trim().parse().ok())
            .unwrap_or_else(|| panic!("no loopback address in {published:?}"));
        served
    }

    /// What the webhook wrote (its JSON log, on stderr).
    fn logs(&self) -> String {
        in_workspace("docker", &["logs", &self.id], b"").stderr
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = in_workspace("docker", &["rm", "-f", &self.id], b"");
    }
}

/// The image's webhook in a container with a certificate of its own, and a client that trusts
/// it, connected. Dropped in field order: the container goes before its volume.
struct Connected {
    client: Client,
    rt: tokio::runtime::Runtime,
    served: Served,
    _volume: SecretVolume,
}

fn connected(image: &Image, name: &str) -> Connected {
    let ca = Ca::generate();
    let volume = SecretVolume::new(&format!("image-{name}-tls"), &ca.serving());
    let served = Served::start(image, &volume);
    let rt = runtime();
    let client = rt
        .block_on(Client::connect(served.addr, &ca.cert))
        .unwrap_or_else(|err| panic!("{err}\n{}", served.logs()));
    Connected {
        client,
        rt,
        served,
        _volume: volume,
    }
}

/// The documentation's pod-create review, of a pod in a namespace that opted in.
fn pod_review() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/admission/nginx-pod-create.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// POSTs `review` to /mutate on `client`; the AdmissionReview's response, checked for its uid.
fn admit(rt: &tokio::runtime::Runtime, client: &mut Client, review: &Value) -> Value {
    let reply = rt
        .block_on(client.post("/mutate", serde_json::to_vec(review).unwrap()))
        .unwrap();
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer = reply.json();
    assert_eq!(answer["kind"], "AdmissionReview", "{answer}");
    assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    answer["response"].clone()
}

#[test]
fn the_image_s_webhook_answers_a_review_over_tls_with_inject_s_patch() {
    let image = image("webhook");
    let mut webhook = connected(&image, "webhook");
    let review = pod_review();
    let response = admit(&webhook.rt, &mut webhook.client, &review);
    assert_eq!(response["patchType"], "JSONPatch", "{response}");
    let patch = base64::engine::general_purpose::STANDARD
        .decode(response["patch"].as_str().expect("a patch"))
        .unwrap();
    let patch: json_patch::Patch = serde_json::from_slice(&patch).unwrap();
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap();

    // The same image's `inject` makes the same pod of it.
    let pod_text = review["request"]["object"].to_string();
    let injected = from_stdin(&image, "inject", pod_text.as_bytes());
    assert!(injected.ok(), "{}", injected.describe());
    let injected: Value = serde_json::from_str(&injected.stdout).unwrap();
    assert_eq!(pod, injected, "the webhook's pod differs from inject's");
    let wrapper = &pod["spec"]["containers"][0]["command"][0];
    assert_eq!(wrapper, &json!("/opt/lameduck/lameduck"), "{pod}");
}

#[test]
fn docker_stop_ends_the_image_s_webhook_with_exit_0_within_its_grace() {
    // A connection kept alive after its review, as the API server keeps them, stays open
    // across the stop: the graceful stop must not wait for it until docker's SIGKILL.
    let mut webhook = connected(&image("webhook-stop"), "webhook-stop");
    admit(&webhook.rt, &mut webhook.client, &pod_review());
    let served = &webhook.served;

    // SIGTERM, then SIGKILL after docker's default 10s; killed, the exit code would be 137.
    let began = Instant::now();
    let stopped = in_workspace("docker", &["stop", &served.id], b"");
    let took = began.elapsed();
    assert!(stopped.ok(), "{}", stopped.describe());
    let state = in_workspace(
        "docker",
        &[
            "inspect",
            "--format",
            "{{.State.ExitCode}} {{.State.OOMKilled}}",
            &served.id,
        ],
        b"",
    );
    let logs = served.logs();
    assert_eq!(
        state.stdout.trim(),
        "0 false",
        "docker stop took {took:?}\n{logs}"
    );
    assert!(logs.contains("webhook stopped"), "{logs}");
    eprintln!("docker stop ended the webhook in {took:?}");
}
