//! What the webhook does with one admission request: whether the pod is opted in, and if so the
//! JSONPatch that turns it into what `inject` makes of it. The decision is `inject`'s own; this
//! module only diffs the pod before and after, so the webhook and the command cannot disagree.
//!
//! # Opting in
//! The webhook reads no API, so it cannot see a namespace's labels. The
//! MutatingWebhookConfiguration does that part, with two entries whose namespace selectors do
//! not overlap, each calling its own path:
//! - `/mutate`: namespaces labelled `lameduck.io/inject: enabled`. Every pod is injected unless
//!   it is annotated `lameduck.io/inject: disabled`.
//! - `/mutate/annotated`: the other namespaces (not kube-system, not labelled `disabled`). Only
//!   pods annotated `lameduck.io/inject: enabled` are injected.
//!
//! Whatever the path, pods in kube-system, pods of the webhook itself (label
//! `lameduck.io/role: webhook`) and pods that already run lameduck are left alone.

use serde_json::Value;

use super::metrics::Outcome;
use crate::inject;

/// The annotation that opts a pod in or out.
pub const INJECT_ANNOTATION: &str = "lameduck.io/inject";
/// The label the webhook's own pods carry, so that it never injects itself.
pub const ROLE_LABEL: &str = "lameduck.io/role";
pub const ROLE_WEBHOOK: &str = "webhook";

/// Which pods a path injects when the annotation says nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// `/mutate`: the namespace is opted in, so every pod is.
    Namespace,
    /// `/mutate/annotated`: the namespace is not; only annotated pods are.
    Annotated,
}

/// The answer to one request, and why.
#[derive(Debug)]
pub struct Decision {
    pub outcome: Outcome,
    /// The JSONPatch, serialized, for [`Outcome::Injected`].
    pub patch: Option<Vec<u8>>,
    /// Shown to the user by kubectl.
    pub warnings: Vec<String>,
    /// Why, in a few words, for the log line.
    pub reason: String,
}

impl Decision {
    fn skip(reason: impl Into<String>) -> Decision {
        Decision {
            outcome: Outcome::Skipped,
            patch: None,
            warnings: Vec::new(),
            reason: reason.into(),
        }
    }

    /// Allowed unchanged, with a warning that says so.
    fn unchanged(outcome: Outcome, reason: String) -> Decision {
        Decision {
            outcome,
            patch: None,
            warnings: vec![format!("lameduck was not injected: {reason}")],
            reason,
        }
    }
}

/// Decides one admission `request` (the `request` object of an AdmissionReview).
pub fn admit(request: &Value, scope: Scope, options: &inject::Options) -> Decision {
    let kind = &request["kind"];
    let is_pod = kind["group"].as_str() == Some("")
        && kind["version"].as_str() == Some("v1")
        && kind["kind"].as_str() == Some("Pod");
    if !is_pod
        || request["subResource"]
            .as_str()
            .is_some_and(|s| !s.is_empty())
    {
        return Decision::skip("not a pod");
    }
    if request["operation"].as_str() != Some("CREATE") {
        return Decision::skip("not a create");
    }
    let pod = &request["object"];
    if !pod.is_object() {
        return Decision::unchanged(Outcome::Error, "the request has no pod object".into());
    }
    if request["namespace"].as_str() == Some("kube-system") {
        return Decision::skip("kube-system is never injected");
    }
    if pod["metadata"]["labels"][ROLE_LABEL].as_str() == Some(ROLE_WEBHOOK) {
        return Decision::skip("the webhook's own pod");
    }
    match pod["metadata"]["annotations"][INJECT_ANNOTATION].as_str() {
        Some("disabled") => return Decision::skip("opted out by annotation"),
        Some("enabled") => {}
        None if scope == Scope::Namespace => {}
        None => return Decision::skip("not opted in"),
        Some(other) => {
            return Decision::unchanged(
                Outcome::Refused,
                format!("{INJECT_ANNOTATION} is {other:?}; expected \"enabled\" or \"disabled\""),
            );
        }
    }
    if inject::is_injected(pod) {
        return Decision::skip("already runs lameduck");
    }
    // A pod carries no workload annotations of its own: its template's are its annotations.
    let (injected, notes) = match inject::injected(pod, options, &inject::Context::default()) {
        Ok(injected) => injected,
        Err(refusal) => return Decision::unchanged(Outcome::Refused, refusal.to_string()),
    };
    let patch = injected
        .map(|injected| json_patch::diff(pod, &injected))
        .filter(|patch| !patch.0.is_empty());
    let Some(patch) = patch else {
        let reason = notes.iter().map(ToString::to_string).collect::<Vec<_>>();
        return Decision::skip(reason.join("; "));
    };
    match serde_json::to_vec(&patch) {
        Ok(patch) => Decision {
            outcome: Outcome::Injected,
            patch: Some(patch),
            warnings: notes.iter().map(ToString::to_string).collect(),
            reason: "injected".into(),
        },
        Err(err) => Decision::unchanged(Outcome::Error, format!("cannot write the patch: {err}")),
    }
}
