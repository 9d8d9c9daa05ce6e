//! What lint finds and how it is written: the rule catalogue (stable ids and severities), one
//! `Finding` per problem, and the text and JSON renderings.

use std::fmt::Write as _;

use serde_json::json;

use super::manifest::{Container, Object, Path};

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Works, but not as well as it could.
    Warning,
    /// Drops requests or keeps lameduck from starting: lint exits 1.
    Error,
}

impl Severity {
    /// The name used in the output.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

macro_rules! rules {
    ($($variant:ident = $id:literal, $severity:ident;)*) => {
        /// Every check lint makes. Ids are stable: CI configurations and tests name them.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Rule {
            $(
                #[doc = concat!("`", $id, "`")]
                $variant,
            )*
        }

        impl Rule {
            /// The stable id.
            pub fn id(self) -> &'static str {
                match self {
                    $(Rule::$variant => $id,)*
                }
            }

            /// How bad a breach is; fixed per rule.
            pub fn severity(self) -> Severity {
                match self {
                    $(Rule::$variant => Severity::$severity,)*
                }
            }
        }
    };
}

rules! {
    FlagInvalid = "flag-invalid", Error;
    ListenUnreachable = "listen-unreachable", Error;
    PrestopMissing = "prestop-missing", Error;
    PrestopAdvised = "prestop-advised", Warning;
    PrestopNotLameduck = "prestop-not-lameduck", Error;
    PrestopNamedPort = "prestop-named-port", Error;
    PrestopNoToken = "prestop-no-token", Error;
    PrestopHttpRefused = "prestop-http-refused", Error;
    PrestopExecUnseen = "prestop-exec-unseen", Warning;
    PrestopSocketMismatch = "prestop-socket-mismatch", Error;
    PrestopSleep = "prestop-sleep", Warning;
    GraceTooShort = "grace-too-short", Error;
    GracePeriodMismatch = "grace-period-mismatch", Error;
    ReadinessSlow = "readiness-slow", Error;
    ReadinessMissing = "readiness-missing", Warning;
    ReadinessNotLameduck = "readiness-not-lameduck", Warning;
    LivenessOnDrain = "liveness-on-drain", Error;
    LivenessMissing = "liveness-missing", Warning;
    ProbeCallsPrestop = "probe-calls-prestop", Error;
    StopSignal = "stop-signal", Error;
    ServerBoundUnseen = "server-bound-unseen", Warning;
    SidecarNotRestartable = "sidecar-not-restartable", Error;
    SidecarNoSharedPid = "sidecar-no-shared-pid", Error;
    SidecarPidFileNotShared = "sidecar-pid-file-not-shared", Error;
    SidecarDelayOnly = "sidecar-delay-only", Warning;
    InstallNotShared = "install-not-shared", Error;
    ReplicasLow = "replicas-low", Warning;
    RolloutAllDown = "rollout-all-down", Error;
    PdbMissing = "pdb-missing", Warning;
    PdbAllowsAllDown = "pdb-allows-all-down", Error;
    ServicePublishesNotReady = "service-publishes-not-ready", Error;
    ServiceBypassesProxy = "service-bypasses-proxy", Error;
}

/// One problem in one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The file, as named on the command line.
    pub file: String,
    /// The line its document starts on.
    pub line: usize,
    /// The object's kind.
    pub kind: &'static str,
    /// The object's name.
    pub name: String,
    /// The container concerned, if one is.
    pub container: Option<String>,
    /// Where in the object the problem is (or the fix goes).
    pub path: String,
    /// Which check failed.
    pub rule: Rule,
    /// What is wrong and why it matters.
    pub message: String,
    /// What to change, in one sentence.
    pub fix: String,
}

/// Collects the findings of one object.
pub struct Findings<'o, 'a> {
    object: &'o Object<'a>,
    list: &'o mut Vec<Finding>,
}

impl<'o, 'a> Findings<'o, 'a> {
    /// Findings about `object`, appended to `list`.
    pub fn new(object: &'o Object<'a>, list: &'o mut Vec<Finding>) -> Self {
        Findings { object, list }
    }

    /// Records one finding (once: rules that look at a pod from several containers may meet
    /// the same problem twice).
    pub fn add(
        &mut self,
        rule: Rule,
        container: Option<&Container<'_>>,
        path: &Path,
        message: String,
        fix: String,
    ) {
        let finding = Finding {
            file: self.object.file.to_owned(),
            line: self.object.line,
            kind: self.object.kind.name(),
            name: self.object.name.to_owned(),
            container: container.map(|c| c.name.to_owned()),
            path: path.to_string(),
            rule,
            message,
            fix,
        };
        if !self.list.contains(&finding) {
            self.list.push(finding);
        }
    }
}

/// One line per finding, then a summary line.
pub fn text(findings: &[Finding], checked: usize, skipped: usize) -> String {
    let mut out = String::new();
    for f in findings {
        let container = f
            .container
            .as_ref()
            .map(|name| format!(" container \"{name}\""))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<6} {}: {}/{}{container} {} [{}]: {}; {}",
            f.rule.severity().name(),
            f.file,
            f.kind,
            f.name,
            f.path,
            f.rule.id(),
            f.message,
            f.fix
        );
    }
    let errors = count(findings, Severity::Error);
    let warnings = count(findings, Severity::Warning);
    let _ = write!(
        out,
        "lint: {}, {} in {} running lameduck",
        plural(errors, "error"),
        plural(warnings, "warning"),
        plural(checked, "pod spec"),
    );
    if skipped > 0 {
        let _ = write!(
            out,
            " ({} without lameduck not checked)",
            plural(skipped, "pod spec")
        );
    }
    out.push('\n');
    out
}

/// A JSON array of finding objects, for CI.
pub fn json(findings: &[Finding]) -> String {
    let list: Vec<_> = findings
        .iter()
        .map(|f| {
            json!({
                "file": f.file,
                "line": f.line,
                "kind": f.kind,
                "name": f.name,
                "container": f.container,
                "path": f.path,
                "rule": f.rule.id(),
                "severity": f.rule.severity().name(),
                "message": f.message,
                "fix": f.fix,
            })
        })
        .collect();
    let mut out = serde_json::to_string_pretty(&list).unwrap_or_else(|_| "[]".into());
    out.push('\n');
    out
}

/// How many findings have this severity.
pub fn count(findings: &[Finding], severity: Severity) -> usize {
    findings
        .iter()
        .filter(|f| f.rule.severity() == severity)
        .count()
}

fn plural(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
