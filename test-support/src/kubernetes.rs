//! Kubernetes' own view of manifests, for the tests of the shipped and the injected ones:
//! kubernetes-validate (the PyPI package, pinned, installed once per test run when it is
//! missing) checks them against a release's real schemas, and PyYAML reads them as the API
//! server would, a parser independent of the plugin's.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::process::{Ran, run};

/// Pinned, so the schemas the manifests are checked against do not move under them.
pub const KUBERNETES_VALIDATE: &str = "kubernetes-validate==1.37.0";
const KUBERNETES_VALIDATE_VERSION: [u64; 3] = [1, 37, 0];
/// The newest Kubernetes release kubernetes-validate 1.37.0 has schemas for.
pub const NEWEST: &str = "1.37.0";
/// The oldest release with native sidecars (`restartPolicy: Always` init containers) on by
/// default.
pub const OLDEST_WITH_NATIVE_SIDECARS: &str = "1.29.0";

fn python(args: &[&str], timeout: Duration) -> Ran {
    run(Command::new("python3").args(args), b"", timeout)
}

/// The installed kubernetes-validate's version, when it and PyYAML import.
fn installed_version() -> Option<[u64; 3]> {
    let ran = python(
        &[
            "-c",
            "import yaml, kubernetes_validate.version as v; print(v.__version__)",
        ],
        Duration::from_secs(60),
    );
    if !ran.ok() {
        return None;
    }
    let mut parts = ran.stdout.trim().split('.').map(|p| p.parse::<u64>().ok());
    Some([
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ])
}

/// Installs kubernetes-validate (which brings PyYAML) once per test run when it is missing or
/// older than the pin.
fn python_tools() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        if installed_version().is_some_and(|v| v >= KUBERNETES_VALIDATE_VERSION) {
            return;
        }
        let ran = python(
            &[
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                KUBERNETES_VALIDATE,
            ],
            Duration::from_secs(600),
        );
        assert!(
            ran.ok(),
            "installing {KUBERNETES_VALIDATE} failed; install it by hand \
             (python3 -m pip install {KUBERNETES_VALIDATE})\n{}",
            ran.describe()
        );
        let version = installed_version();
        assert!(
            version.is_some_and(|v| v >= KUBERNETES_VALIDATE_VERSION),
            "python3 still cannot import kubernetes_validate >= {KUBERNETES_VALIDATE_VERSION:?} \
             and yaml after installing {KUBERNETES_VALIDATE} (found {version:?})"
        );
    });
}

/// `kubernetes-validate --strict` for the Kubernetes release `kubernetes` on `files`.
pub fn validate(files: &[&Path], kubernetes: &str) -> Ran {
    python_tools();
    let mut command = Command::new("python3");
    command
        .args(["-m", "kubernetes_validate", "--strict"])
        .args(["--kubernetes-version", kubernetes])
        .args(files);
    run(&mut command, b"", Duration::from_secs(120))
}

/// The objects of a YAML file (or a stream of JSON documents) as PyYAML reads them, Lists
/// expanded, as JSON values. Timestamps stay strings, as Kubernetes reads them.
pub fn objects(file: &Path) -> Vec<Value> {
    const SCRIPT: &str = r#"
import json, sys, yaml
text = open(sys.argv[1]).read()
if text.lstrip().startswith(('{', '[')):
    decoder, docs, at = json.JSONDecoder(), [], 0
    while text[at:].strip():
        at += len(text[at:]) - len(text[at:].lstrip())
        doc, at = decoder.raw_decode(text, at)
        docs.append(doc)
else:
    class Loader(yaml.SafeLoader):
        pass
    Loader.yaml_implicit_resolvers = {
        k: [(tag, rx) for tag, rx in v if tag != 'tag:yaml.org,2002:timestamp']
        for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    docs = [d for d in yaml.load_all(text, Loader=Loader) if d is not None]
out = []
for d in docs:
    out.extend(d.get('items') or [] if d.get('kind') == 'List' else [d])
print(json.dumps(out))
"#;
    python_tools();
    let file = file.to_str().expect("a UTF-8 path");
    let ran = python(&["-c", SCRIPT, file], Duration::from_secs(60));
    assert!(ran.ok(), "PyYAML cannot read {file}\n{}", ran.describe());
    serde_json::from_str(&ran.stdout)
        .unwrap_or_else(|err| panic!("PyYAML's JSON for {file} does not parse: {err}"))
}
