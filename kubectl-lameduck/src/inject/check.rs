//! inject's proof of its own output: lint's rules, run in-process on what inject is about to
//! hand out. An error there is a bug in inject, so the output is refused instead.

use serde_json::Value;

use super::refusal::Refusal;
use crate::lint::report::{Finding, Severity};
use crate::lint::{self, InputError, Source};

/// Lints one pod template as the Pod it becomes (the pod-spec rules; replicas and budgets
/// are the workload's, checked with the whole stream).
pub fn pod(template: &Value) -> Result<(), Refusal> {
    let (version, kind) = (Value::from("v1"), Value::from("Pod"));
    let part = |key| template.get(key).unwrap_or(&Value::Null);
    // The tree lint would read from the Pod's JSON text, built from the template where it is,
    // without writing that text or copying the template into a Pod.
    let entries = [
        ("apiVersion", &version),
        ("kind", &kind),
        ("metadata", part("metadata")),
        ("spec", part("spec")),
    ];
    let source = lint::from_json_entries("pod".into(), &entries).map_err(unreadable)?;
    match first_error(&lint::lint(&[source]).findings) {
        Some(finding) => Err(bug(finding)),
        None => Ok(()),
    }
}

/// The first error-level finding.
pub fn first_error(findings: &[Finding]) -> Option<&Finding> {
    findings
        .iter()
        .find(|f| f.rule.severity() == Severity::Error)
}

/// The refusal for output that would not lint clean.
pub fn bug(finding: &Finding) -> Refusal {
    Refusal(format!(
        "refusing output that would not lint clean ({} at {}: {}); this is a bug in inject",
        finding.rule.id(),
        finding.path,
        finding.message
    ))
}

fn unreadable(err: InputError) -> Refusal {
    Refusal(format!(
        "refusing output lint cannot read ({err}); this is a bug in inject"
    ))
}

/// Lints the documents of an output together (each its own source, named by its position).
pub fn stream(texts: &[(String, String)]) -> Result<Vec<Finding>, Refusal> {
    let sources = texts
        .iter()
        .map(|(name, text)| lint::parse(name.clone(), text))
        .collect::<Result<Vec<Source>, _>>()
        .map_err(unreadable)?;
    Ok(lint::lint(&sources).findings)
}
