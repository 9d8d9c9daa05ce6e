//! `admission.k8s.io/v1` AdmissionReview on the wire: checking a request body, and writing the
//! response. Every response names the request's `uid`, which is how the API server matches it.

use base64::Engine;
use serde_json::{Value, json};

/// The largest body read; the API server's own limit on an object is far below it for pods.
pub const MAX_BODY: usize = 1024 * 1024;

const API_VERSION: &str = "admission.k8s.io/v1";
const KIND: &str = "AdmissionReview";

/// A well-formed review: its uid and its `request` object.
#[derive(Debug)]
pub struct Review {
    pub uid: String,
    pub request: Value,
}

/// Why a body is not a review we answer; each is a 400 with this one line.
#[derive(Debug, PartialEq, Eq)]
pub struct BadReview(pub String);

/// Checks a body: JSON, `admission.k8s.io/v1` `AdmissionReview`, a `request` with a uid.
pub fn parse(body: &[u8]) -> Result<Review, BadReview> {
    let bad = |why: String| Err(BadReview(why));
    let mut review: Value = match serde_json::from_slice(body) {
        Ok(review) => review,
        Err(err) => return bad(format!("the body is not JSON: {err}")),
    };
    if !review.is_object() {
        return bad("the body is not a JSON object".into());
    }
    let field = |name: &str| review[name].as_str().unwrap_or_default().to_owned();
    let (api_version, kind) = (field("apiVersion"), field("kind"));
    if api_version != API_VERSION {
        return bad(format!(
            "apiVersion is {api_version:?}, not {API_VERSION:?} (admissionReviewVersions must be [v1])"
        ));
    }
    if kind != KIND {
        return bad(format!("kind is {kind:?}, not {KIND:?}"));
    }
    let request = review["request"].take();
    if !request.is_object() {
        return bad("the AdmissionReview has no request".into());
    }
    let uid = match request["uid"].as_str() {
        Some(uid) if !uid.is_empty() => uid.to_owned(),
        _ => return bad("the request has no uid".into()),
    };
    Ok(Review { uid, request })
}

/// The answer: always allowed; with a JSONPatch when there is one, and the warnings kubectl
/// shows the user.
pub fn response(uid: &str, patch: Option<&[u8]>, warnings: &[String]) -> Value {
    let mut response = json!({ "uid": uid, "allowed": true });
    if let Some(patch) = patch {
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(base64::engine::general_purpose::STANDARD.encode(patch));
    }
    if !warnings.is_empty() {
        response["warnings"] = json!(warnings);
    }
    json!({ "apiVersion": API_VERSION, "kind": KIND, "response": response })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(body: &str) -> String {
        parse(body.as_bytes()).unwrap_err().0
    }

    #[test]
    fn a_review_without_a_uid_is_refused() {
        let body =
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":""}}"#;
        assert_eq!(reason(body), "the request has no uid");
    }

    #[test]
    fn a_v1beta1_review_is_refused_by_name() {
        let body = r#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"a"}}"#;
        assert!(reason(body).starts_with("apiVersion is \"admission.k8s.io/v1beta1\""));
    }

    #[test]
    fn a_response_carries_the_uid_and_a_base64_patch() {
        let answer = response("abc", Some(b"[]"), &["w".into()]);
        assert_eq!(answer["response"]["uid"], "abc");
        assert_eq!(answer["response"]["patch"], "W10=");
        assert_eq!(answer["response"]["warnings"][0], "w");
    }
}
