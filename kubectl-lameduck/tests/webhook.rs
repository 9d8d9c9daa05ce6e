//! `kubectl lameduck webhook`, for real: the built binary serving HTTPS on loopback with a
//! certificate made here, reviews sent by a client that verifies it, bodies taken from the
//! Kubernetes documentation's AdmissionReview and from pods as the API server hands them over.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use lameduck_test_support::binaries::plugin;
use lameduck_test_support::kubernetes::{self, NEWEST, OLDEST_WITH_NATIVE_SIDECARS};
use lameduck_test_support::process::{Ran, run};
use lameduck_test_support::temp::TempDir;
use lameduck_test_support::webhook::{Ca, Client, SecretVolume, Webhook};
use serde_json::{Value, json};

const ADMISSION: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/admission");

fn fixture(name: &str) -> Value {
    let path = Path::new(ADMISSION).join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// The docs' pod-create review with `edit` applied to its pod.
fn pod_review(namespace: &str, edit: impl FnOnce(&mut Value)) -> Value {
    let mut review = fixture("nginx-pod-create.json");
    review["request"]["namespace"] = json!(namespace);
    review["request"]["object"]["metadata"]["namespace"] = json!(namespace);
    edit(&mut review["request"]["object"]);
    review
}

fn annotate(pod: &mut Value, key: &str, value: &str) {
    pod["metadata"]["annotations"][key] = json!(value);
}

/// A CA, a serving pair in a kubelet-style Secret volume, and the webhook serving it.
struct Setup {
    ca: Ca,
    volume: SecretVolume,
    webhook: Webhook,
}

fn setup(name: &str) -> Setup {
    setup_with(name, &[])
}

/// A webhook started with more flags.
fn setup_with(name: &str, flags: &[&str]) -> Setup {
    let ca = Ca::generate();
    let volume = SecretVolume::new(name, &ca.serving());
    let webhook = Webhook::start(&plugin(), &volume.cert(), &volume.key(), flags);
    Setup {
        ca,
        volume,
        webhook,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

impl Setup {
    fn client(&self, rt: &tokio::runtime::Runtime) -> Client {
        rt.block_on(Client::connect(self.webhook.addr, &self.ca.cert))
            .unwrap()
    }

    /// The webhook logged that it refused `review`.
    fn assert_logged_refusal(&self, review: &Value) {
        let logged = self
            .webhook
            .logged(|line| line["outcome"] == "refused" && line["uid"] == review["request"]["uid"]);
        assert!(
            logged,
            "no log line for the refusal: {:?}",
            self.webhook.log()
        );
    }

    /// POSTs one review on a fresh connection; the AdmissionReview answer, checked for its uid.
    fn review(&self, path: &str, review: &Value) -> Value {
        let rt = runtime();
        let mut client = self.client(&rt);
        let reply = rt
            .block_on(client.post(path, serde_json::to_vec(review).unwrap()))
            .unwrap();
        assert_eq!(reply.status, 200, "{}", reply.text());
        let answer = reply.json();
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(answer["kind"], "AdmissionReview");
        assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
        answer["response"].clone()
    }
}

/// The patch of an answer, decoded; None when there is none.
fn patch_of(response: &Value) -> Option<json_patch::Patch> {
    let encoded = response["patch"].as_str()?;
    assert_eq!(response["patchType"], "JSONPatch");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap();
    Some(serde_json::from_slice(&bytes).unwrap())
}

fn assert_unchanged(response: &Value) {
    assert!(patch_of(response).is_none(), "a patch: {response}");
}

/// Skipped on purpose: no patch, and nothing to warn the user about.
fn assert_left_alone(response: &Value) {
    assert_unchanged(response);
    assert!(response["warnings"].is_null(), "warnings: {response}");
}

// =============================================================================================
// Which pods are injected
// =============================================================================================

#[test]
fn the_kubernetes_docs_example_review_is_allowed_unchanged_with_its_uid() {
    let setup = setup("webhook-docs-example");
    assert_left_alone(&setup.review("/mutate", &fixture("scale-update.json")));
}

#[test]
fn a_pod_annotated_disabled_is_left_alone_in_an_opted_in_namespace() {
    let setup = setup("webhook-opt-out");
    let review = pod_review("shop", |pod| {
        annotate(pod, "lameduck.io/inject", "disabled")
    });
    assert_left_alone(&setup.review("/mutate", &review));
}

#[test]
fn an_unannotated_pod_outside_an_opted_in_namespace_is_left_alone() {
    let setup = setup("webhook-not-opted-in");
    assert_left_alone(&setup.review("/mutate/annotated", &pod_review("shop", |_| {})));
}

#[test]
fn a_pod_in_kube_system_is_never_injected_even_when_annotated() {
    let setup = setup("webhook-kube-system");
    let review = pod_review("kube-system", |pod| {
        annotate(pod, "lameduck.io/inject", "enabled");
    });
    assert_left_alone(&setup.review("/mutate", &review));
}

#[test]
fn the_webhooks_own_pods_are_never_injected() {
    let setup = setup("webhook-self");
    let review = pod_review("lameduck", |pod| {
        pod["metadata"]["labels"]["lameduck.io/role"] = json!("webhook");
    });
    assert_left_alone(&setup.review("/mutate", &review));
}

#[test]
fn an_unknown_annotation_value_admits_the_pod_unchanged_with_a_warning() {
    let setup = setup("webhook-bad-annotation");
    let review = pod_review("shop", |pod| annotate(pod, "lameduck.io/inject", "yes"));
    let response = setup.review("/mutate", &review);
    assert_unchanged(&response);
    let warning = response["warnings"][0].as_str().unwrap_or_default();
    assert!(warning.contains("lameduck.io/inject"), "{response}");
    setup.assert_logged_refusal(&review);
}

// =============================================================================================
// Bad input
// =============================================================================================

/// Sends `body` on a fresh connection; asserts a 400 whose body is one line containing `says`.
fn assert_400(setup: &Setup, body: Vec<u8>, says: &str) {
    let rt = runtime();
    let mut client = setup.client(&rt);
    let reply = rt.block_on(client.post("/mutate", body)).unwrap();
    let text = reply.text();
    assert_eq!(reply.status, 400, "{text}");
    assert_eq!(text.lines().count(), 1, "not one line: {text:?}");
    assert!(text.contains(says), "{text:?} does not say {says:?}");
}

#[test]
fn each_bad_body_gets_a_400_with_one_line_and_the_server_keeps_serving() {
    let setup = setup("webhook-bad-input");
    let good = fixture("scale-update.json");
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut review = good.clone();
        edit(&mut review);
        serde_json::to_vec(&review).unwrap()
    };
    let oversized = {
        let mut review = good.clone();
        review["request"]["object"]["padding"] = json!("x".repeat(1024 * 1024));
        serde_json::to_vec(&review).unwrap()
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("malformed", b"{\"apiVersion\": ".to_vec(), "not JSON"),
        ("not an object", b"[1, 2]".to_vec(), "not a JSON object"),
        ("oversized", oversized, "larger than 1 MiB"),
        (
            "v1beta1",
            with(&|r| r["apiVersion"] = json!("admission.k8s.io/v1beta1")),
            "apiVersion",
        ),
        (
            "wrong kind",
            with(&|r| r["kind"] = json!("ConversionReview")),
            "kind",
        ),
        (
            "no request",
            with(&|r| r["request"] = Value::Null),
            "no request",
        ),
        (
            "no uid",
            with(&|r| {
                r["request"].as_object_mut().unwrap().remove("uid");
            }),
            "no uid",
        ),
    ];
    for (what, body, says) in cases {
        assert_400(&setup, body, says);
        // Still serving: a good review right after each bad one.
        assert_left_alone(&setup.review("/mutate", &good));
        eprintln!("{what}: 400, then served");
    }
}

// =============================================================================================
// Operations
// =============================================================================================

#[test]
fn healthz_readyz_and_metrics_count_reviews_by_result() {
    let setup = setup("webhook-operations");
    setup.review("/mutate", &fixture("scale-update.json"));
    assert_400(&setup, b"nope".to_vec(), "not JSON");
    let rt = runtime();
    let mut client = setup.client(&rt);
    for path in ["/healthz", "/readyz"] {
        let reply = rt.block_on(client.get(path)).unwrap();
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    }
    let metrics = rt.block_on(client.get("/metrics")).unwrap().text();
    for line in [
        "lameduck_webhook_reviews_total{result=\"skipped\"} 1",
        "lameduck_webhook_reviews_total{result=\"bad_request\"} 1",
        "lameduck_webhook_review_duration_seconds_count 2",
    ] {
        assert!(metrics.contains(line), "no {line:?} in\n{metrics}");
    }
}

#[test]
fn sigterm_stops_the_webhook_with_exit_0() {
    let mut setup = setup("webhook-sigterm");
    setup.review("/mutate", &fixture("scale-update.json"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(setup.webhook.pid()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(setup.webhook.wait(Duration::from_secs(15)), Some(0));
}

#[test]
fn a_key_that_does_not_match_the_certificate_exits_2_with_one_line() {
    let ca = Ca::generate();
    let (one, other) = (ca.serving(), ca.serving());
    let dir = TempDir::new("webhook-mismatch");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &one.cert_pem).unwrap();
    std::fs::write(&key, &other.key_pem).unwrap();
    let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
    let ran = run_plugin(&[
        "webhook",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
        "--listen",
        "127.0.0.1:0",
    ]);
    let stderr = ran.stderr;
    assert_eq!(ran.code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("kubectl-lameduck: webhook: "),
        "{stderr}"
    );
    assert!(stderr.contains("do not make a serving pair"), "{stderr}");
}

// =============================================================================================
// Certificate rotation
// =============================================================================================

#[test]
fn a_rotated_certificate_is_served_to_new_connections_and_no_review_fails() {
    let mut setup = setup("webhook-rotation");
    let old = setup.volume.dir().join("..1/tls.crt");
    assert!(old.exists());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let body = serde_json::to_vec(&fixture("scale-update.json")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    // One client on a kept connection, one that opens a new connection for every review.
    let senders: Vec<_> = [false, true]
        .into_iter()
        .map(|fresh_each_time| {
            let (stop, sent, failed, body) =
                (stop.clone(), sent.clone(), failed.clone(), body.clone());
            let (addr, ca) = (setup.webhook.addr, setup.ca.cert.clone());
            rt.spawn(async move {
                let mut kept = Client::connect(addr, &ca).await.unwrap();
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(30) {
                    let reply = if fresh_each_time {
                        match Client::connect(addr, &ca).await {
                            Ok(mut client) => client.post("/mutate", body.clone()).await,
                            Err(err) => Err(err),
                        }
                    } else {
                        kept.post("/mutate", body.clone()).await
                    };
                    sent.fetch_add(1, Ordering::Relaxed);
                    if !reply.is_ok_and(|r| r.status == 200) {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let new = setup.ca.serving();
    setup.volume.update(&new);
    // The poller reads the files every second; a new connection gets the new leaf soon after.
    let started = Instant::now();
    let served_new = loop {
        let client = rt.block_on(Client::connect(setup.webhook.addr, &setup.ca.cert));
        if client.is_ok_and(|c| c.served == new.leaf) {
            break true;
        }
        if started.elapsed() > Duration::from_secs(5) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    for sender in senders {
        rt.block_on(sender).unwrap();
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(
        served_new,
        "new connections still get the old certificate after 5s"
    );
    assert!(sent > 50, "only {sent} reviews sent");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} reviews failed across the rotation"
    );
    let reloaded = setup
        .webhook
        .logged(|line| line["message"] == "serving certificate reloaded");
    assert!(reloaded, "no reload logged");
}

#[test]
fn a_new_certificate_with_the_old_key_is_not_served() {
    let mut setup = setup("webhook-half-rotation");
    let rt = runtime();
    let first = setup.client(&rt).served;
    let key = std::fs::read_to_string(setup.volume.key()).unwrap();
    let mut half = setup.ca.serving();
    half.key_pem = key;
    setup.volume.update(&half);
    std::thread::sleep(Duration::from_millis(2500));
    let client = setup.client(&rt);
    assert_eq!(client.served, first, "a mismatched pair was swapped in");
    let warned = setup.webhook.logged(|line| {
        line["message"]
            .as_str()
            .is_some_and(|m| m.contains("not reloaded"))
    });
    assert!(warned, "no warning logged: {:?}", setup.webhook.log());
}

// =============================================================================================
// The patch is inject's
// =============================================================================================

/// Runs the built plugin with `args` to its end.
fn run_plugin(args: &[&str]) -> Ran {
    run(
        Command::new(plugin()).args(args),
        b"",
        Duration::from_secs(60),
    )
}

/// Applies the answer's patch to the review's pod.
fn patched(review: &Value, response: &Value) -> Value {
    let patch = patch_of(response).unwrap_or_else(|| panic!("no patch: {response}"));
    let mut pod = review["request"]["object"].clone();
    json_patch::patch(&mut pod, &patch).unwrap();
    pod
}

/// Sends `review` to `path` of a webhook started with the setting flags `settings`, and
/// returns the pod its patch makes, once asserted to be what `kubectl lameduck inject
/// SETTINGS` makes of the same pod, to pass Kubernetes' schemas (1.29 and 1.37, strict) and to
/// lint with nothing wrong.
fn injected_by_webhook(name: &str, settings: &[&str], path: &str, review: &Value) -> Value {
    let setup = setup_with(name, settings);
    let response = setup.review(path, review);
    let pod = patched(review, &response);
    assert_is_injects_own(name, review, &pod, settings);
    pod
}

/// The patched `pod` is inject's own (see `injected_by_webhook`).
fn assert_is_injects_own(name: &str, review: &Value, pod: &Value, settings: &[&str]) {
    let dir = TempDir::new(&format!("{name}-pod"));
    let original = dir.path().join("pod.json");
    std::fs::write(&original, review["request"]["object"].to_string()).unwrap();
    let mut args = vec!["inject", original.to_str().unwrap()];
    args.extend_from_slice(settings);
    let ran = run_plugin(&args);
    assert!(ran.ok(), "inject failed: {}", ran.describe());
    let injected: Value = serde_json::from_str(&ran.stdout).unwrap();
    assert_eq!(pod, &injected, "the webhook's pod differs from inject's");

    // The API server names a generateName pod after admission; the schema wants the name.
    let mut stored = pod.clone();
    let generated = format!(
        "{}x7k2p",
        pod["metadata"]["generateName"].as_str().unwrap_or("pod-")
    );
    stored["metadata"]["name"] = json!(generated);
    let result = dir.path().join("patched.json");
    std::fs::write(&result, stored.to_string()).unwrap();
    for version in [OLDEST_WITH_NATIVE_SIDECARS, NEWEST] {
        let ran = kubernetes::validate(&[&result], version);
        assert!(
            ran.ok(),
            "Kubernetes {version} rejects the patched pod:\n{}",
            ran.describe()
        );
    }
    let ran = run_plugin(&["lint", result.to_str().unwrap()]);
    assert!(
        ran.ok(),
        "lint is not clean on the patched pod:\n{}",
        ran.describe()
    );
}

#[test]
fn a_pod_in_an_opted_in_namespace_gets_the_patch_that_makes_it_injects_pod() {
    let review = pod_review("shop", |_| {});
    injected_by_webhook("webhook-namespace-opt-in", &[], "/mutate", &review);
}

#[test]
fn a_pod_annotated_enabled_is_injected_outside_an_opted_in_namespace() {
    let review = pod_review("shop", |pod| annotate(pod, "lameduck.io/inject", "enabled"));
    injected_by_webhook(
        "webhook-annotation-opt-in",
        &[],
        "/mutate/annotated",
        &review,
    );
}

#[test]
fn annotations_choose_the_shape_and_the_patch_follows() {
    let review = pod_review("shop", |pod| annotate(pod, "lameduck.io/shape", "sidecar"));
    let pod = injected_by_webhook("webhook-annotated-shape", &[], "/mutate", &review);
    assert_eq!(pod["spec"]["shareProcessNamespace"], true, "{pod}");
}

#[test]
fn the_webhooks_setting_flags_mean_what_injects_same_flags_mean() {
    let settings = [
        "--shape=sidecar",
        "--shutdown-delay=7s",
        "--drain-timeout=15s",
        "--image=registry.example/lameduck:9",
        "--port=9100",
    ];
    let review = pod_review("shop", |_| {});
    let pod = injected_by_webhook("webhook-setting-flags", &settings, "/mutate", &review);
    let text = pod.to_string();
    for wanted in ["registry.example/lameduck:9", "--shutdown-delay=7s", "9100"] {
        assert!(text.contains(wanted), "{wanted} is not in {text}");
    }
}

#[test]
fn a_pod_inject_refuses_is_admitted_unchanged_with_a_warning_and_a_log_line() {
    let setup = setup("webhook-refused");
    let review = pod_review("shop", |pod| {
        annotate(pod, "lameduck.io/shape", "install");
        pod["spec"]["containers"][0]
            .as_object_mut()
            .unwrap()
            .remove("command");
    });
    let response = setup.review("/mutate", &review);
    assert_unchanged(&response);
    let warning = response["warnings"][0].as_str().unwrap_or_default();
    assert!(
        warning.contains("nginx"),
        "the warning names no container: {response}"
    );
    setup.assert_logged_refusal(&review);
}

/// Pod-create reviews for the pods the Deployments in `examples/` create: they run lameduck.
fn example_pod_reviews() -> Vec<(String, Value)> {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut reviews = Vec::new();
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in text.split("\n---\n") {
            let doc: Value = serde_yaml_ng::from_str(doc).unwrap();
            if doc["kind"] != "Deployment" {
                continue;
            }
            let template = &doc["spec"]["template"];
            let review = pod_review("shop", |pod| {
                pod["metadata"]["labels"] = template["metadata"]["labels"].clone();
                pod["spec"] = template["spec"].clone();
            });
            reviews.push((path.display().to_string(), review));
        }
    }
    assert!(
        reviews.len() >= 3,
        "found only {} example Deployments",
        reviews.len()
    );
    reviews
}

#[test]
fn pods_of_the_example_deployments_already_run_lameduck_and_are_left_alone() {
    let setup = setup("webhook-already-injected");
    for (name, review) in example_pod_reviews() {
        let response = setup.review("/mutate", &review);
        assert!(patch_of(&response).is_none(), "{name}: patched: {response}");
    }
}

#[test]
fn an_injected_pod_is_left_alone_when_it_comes_back() {
    let setup = setup("webhook-reinjected");
    let review = pod_review("shop", |_| {});
    let pod = patched(&review, &setup.review("/mutate", &review));
    let again = pod_review("shop", |object| *object = pod);
    assert_left_alone(&setup.review("/mutate", &again));
}
