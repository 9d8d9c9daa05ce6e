//! The Kubernetes side of a manifest: which objects lint reads, where their pod spec,
//! containers, probes and selectors live, and how Kubernetes reads ports, counts and label
//! selectors. Everything is looked up in the untyped tree, so a field of the wrong shape
//! reads as absent instead of failing.

use std::fmt;

use super::yaml::{Document, Node};

/// The kinds lint reads; every other kind is ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// apps/v1 Deployment.
    Deployment,
    /// apps/v1 StatefulSet.
    StatefulSet,
    /// apps/v1 DaemonSet.
    DaemonSet,
    /// apps/v1 ReplicaSet.
    ReplicaSet,
    /// v1 Pod.
    Pod,
    /// policy/v1 PodDisruptionBudget.
    PodDisruptionBudget,
    /// v1 Service.
    Service,
}

impl Kind {
    fn from_name(name: &str) -> Option<Kind> {
        Some(match name {
            "Deployment" => Kind::Deployment,
            "StatefulSet" => Kind::StatefulSet,
            "DaemonSet" => Kind::DaemonSet,
            "ReplicaSet" => Kind::ReplicaSet,
            "Pod" => Kind::Pod,
            "PodDisruptionBudget" => Kind::PodDisruptionBudget,
            "Service" => Kind::Service,
            _ => return None,
        })
    }

    /// The name as manifests write it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
            Kind::DaemonSet => "DaemonSet",
            Kind::ReplicaSet => "ReplicaSet",
            Kind::Pod => "Pod",
            Kind::PodDisruptionBudget => "PodDisruptionBudget",
            Kind::Service => "Service",
        }
    }
}

/// A dotted path into a manifest, as `kubectl explain` writes it:
/// `spec.template.spec.containers[0].lifecycle.preStop`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Path(String);

impl Path {
    /// The path of a mapping key below this one.
    pub fn key(&self, key: &str) -> Path {
        if self.0.is_empty() {
            Path(key.to_owned())
        } else {
            Path(format!("{}.{key}", self.0))
        }
    }

    /// The path of a chain of mapping keys below this one.
    pub fn keys(&self, keys: &[&str]) -> Path {
        keys.iter().fold(self.clone(), |path, key| path.key(key))
    }

    /// The path of a sequence item below this one.
    pub fn index(&self, index: usize) -> Path {
        Path(format!("{}[{index}]", self.0))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One object of a kind lint reads.
#[derive(Debug)]
pub struct Object<'a> {
    /// The file it came from, as named on the command line.
    pub file: &'a str,
    /// The line its document starts on.
    pub line: usize,
    /// Its kind.
    pub kind: Kind,
    /// `metadata.name`, or `?` when missing.
    pub name: &'a str,
    /// `metadata.namespace`, when set.
    pub namespace: Option<&'a str>,
    /// The object itself.
    pub node: &'a Node,
    /// Where the object sits in its document: empty, or `items[N]` inside a `List`.
    pub path: Path,
}

impl<'a> Object<'a> {
    /// The objects of a document: the document itself, or the items of a `kind: List`
    /// (what `kubectl get -o yaml` prints).
    pub fn all_in(file: &'a str, document: &'a Document) -> Vec<Object<'a>> {
        let root = &document.root;
        let mut objects = Vec::new();
        if root.get("kind").and_then(Node::text) == Some("List") {
            let items = root.get("items").map(Node::items).unwrap_or_default();
            for (index, item) in items.iter().enumerate() {
                objects.extend(Object::read(
                    file,
                    document.line,
                    item,
                    Path::default().key("items").index(index),
                ));
            }
        } else {
            objects.extend(Object::read(file, document.line, root, Path::default()));
        }
        objects
    }

    fn read(file: &'a str, line: usize, node: &'a Node, path: Path) -> Option<Object<'a>> {
        let kind = Kind::from_name(node.get("kind")?.text()?)?;
        Some(Object {
            file,
            line,
            kind,
            name: node
                .at(&["metadata", "name"])
                .and_then(Node::text)
                .unwrap_or("?"),
            namespace: node.at(&["metadata", "namespace"]).and_then(Node::text),
            node,
            path,
        })
    }

    /// Whether two objects can be in the same namespace: equal, or either left to `kubectl -n`.
    pub fn shares_namespace_with(&self, other: &Object<'_>) -> bool {
        match (self.namespace, other.namespace) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }

    /// The pod this object runs: the pod template of a workload, or a Pod itself.
    pub fn pod(&self) -> Option<Pod<'a>> {
        let (spec_keys, labels_keys): (&[&str], &[&str]) = match self.kind {
            Kind::Deployment | Kind::StatefulSet | Kind::DaemonSet | Kind::ReplicaSet => (
                &["spec", "template", "spec"],
                &["spec", "template", "metadata", "labels"],
            ),
            Kind::Pod => (&["spec"], &["metadata", "labels"]),
            Kind::PodDisruptionBudget | Kind::Service => return None,
        };
        let spec = self.node.at(spec_keys)?;
        let path = self.path.keys(spec_keys);
        let mut containers = Vec::new();
        for (field, init) in [("initContainers", true), ("containers", false)] {
            let items = spec.get(field).map(Node::items).unwrap_or_default();
            for (index, node) in items.iter().enumerate() {
                containers.push(Container {
                    node,
                    path: path.key(field).index(index),
                    name: node.get("name").and_then(Node::text).unwrap_or("?"),
                    init,
                });
            }
        }
        Some(Pod {
            spec,
            path,
            labels: self.node.at(labels_keys),
            labels_path: self.path.keys(labels_keys),
            containers,
        })
    }
}

/// A pod spec and its containers.
#[derive(Debug)]
pub struct Pod<'a> {
    /// The pod spec.
    pub spec: &'a Node,
    /// Where the pod spec is.
    pub path: Path,
    /// The pod's labels (the template's, for a workload).
    pub labels: Option<&'a Node>,
    /// Where those labels are (or would be).
    pub labels_path: Path,
    /// Init containers first, then containers, each in manifest order.
    pub containers: Vec<Container<'a>>,
}

impl Pod<'_> {
    /// `terminationGracePeriodSeconds`, 30 when absent as in Kubernetes.
    pub fn grace_seconds(&self) -> i64 {
        self.spec
            .get("terminationGracePeriodSeconds")
            .and_then(Node::int)
            .unwrap_or(30)
    }

    /// Whether the containers share one PID namespace.
    pub fn shares_process_namespace(&self) -> bool {
        self.spec
            .get("shareProcessNamespace")
            .is_some_and(Node::is_true)
    }
}

/// One container or init container of a pod.
#[derive(Debug)]
pub struct Container<'a> {
    /// The container.
    pub node: &'a Node,
    /// Where it is: `...containers[N]` or `...initContainers[N]`.
    pub path: Path,
    /// Its name, or `?`.
    pub name: &'a str,
    /// Whether it is listed under `initContainers`.
    pub init: bool,
}

impl<'a> Container<'a> {
    /// Whether it is a native sidecar: an init container with `restartPolicy: Always`, which
    /// keeps running next to the containers.
    pub fn is_native_sidecar(&self) -> bool {
        self.init && self.node.get("restartPolicy").and_then(Node::text) == Some("Always")
    }

    /// Whether it runs for the pod's whole life (a container or a native sidecar), so its
    /// probes and hooks matter.
    pub fn runs_alongside(&self) -> bool {
        !self.init || self.is_native_sidecar()
    }

    /// The image reference as written (`registry/x/nginx-unprivileged:1.27`), or empty.
    pub fn image(&self) -> &'a str {
        self.node.get("image").and_then(Node::text).unwrap_or("")
    }

    /// The argv the manifest shows: `command` then `args` (empty when the image's own
    /// entrypoint runs).
    pub fn argv(&self) -> Vec<String> {
        ["command", "args"]
            .iter()
            .flat_map(|field| self.node.get(field).map(Node::items).unwrap_or_default())
            .filter_map(|word| word.text().map(str::to_owned))
            .collect()
    }

    /// Whether `text` appears in the container's `command`, `args` or an `env` value.
    pub fn mentions(&self, text: &str) -> bool {
        let env = self.node.get("env").map(Node::items).unwrap_or_default();
        self.argv().iter().any(|word| word.contains(text))
            || env
                .iter()
                .filter_map(|var| var.get("value").and_then(Node::text))
                .any(|value| value.contains(text))
    }

    /// The image name without registry, repository or tag: `nginx-unprivileged` for
    /// `registry/x/nginx-unprivileged:1.27`.
    pub fn image_name(&self) -> &'a str {
        let image = self.image();
        let last = image.rsplit('/').next().unwrap_or(image);
        last.split([':', '@']).next().unwrap_or(last)
    }

    /// A probe (`readinessProbe`, `livenessProbe`) or lifecycle hook (`lifecycle.preStop`).
    pub fn handler(&self, keys: &[&str]) -> Option<Handler<'a>> {
        self.node.at(keys).map(Handler)
    }

    /// The number of a probe or hook port as the kubelet resolves it: a number as written,
    /// a name looked up in this container's own `ports`.
    pub fn resolve_port(&self, port: &Node) -> Option<i64> {
        if let Some(number) = port.int() {
            return Some(number);
        }
        let name = port.text()?;
        let ports = self.node.get("ports").map(Node::items).unwrap_or_default();
        ports
            .iter()
            .find(|p| p.get("name").and_then(Node::text) == Some(name))
            .and_then(|p| p.get("containerPort"))
            .and_then(Node::int)
    }

    /// The volume mounted at `dir` (trailing slashes ignored), when one is.
    pub fn volume_at(&self, dir: &str) -> Option<&'a str> {
        let dir = dir.trim_end_matches('/');
        self.mounts()
            .find(|(_, path)| path.trim_end_matches('/') == dir)
            .map(|(name, _)| name)
    }

    /// The volume holding `file`: the one mounted at the longest directory containing it.
    pub fn volume_holding(&self, file: &str) -> Option<&'a str> {
        self.mounts()
            .filter(|(_, dir)| {
                let dir = dir.trim_end_matches('/');
                file.strip_prefix(dir)
                    .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|(_, dir)| dir.len())
            .map(|(name, _)| name)
    }

    /// Whether this container mounts `volume` somewhere.
    pub fn mounts_volume(&self, volume: &str) -> bool {
        self.mounts().any(|(name, _)| name == volume)
    }

    /// `(volume name, mountPath)` of each volume mount.
    fn mounts(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        let mounts = self
            .node
            .get("volumeMounts")
            .map(Node::items)
            .unwrap_or_default();
        mounts
            .iter()
            .filter_map(|mount| Some((mount.get("name")?.text()?, mount.get("mountPath")?.text()?)))
    }
}

/// A probe or lifecycle hook: one of `httpGet`, `exec`, `sleep`, `tcpSocket` or `grpc`, plus
/// the probe timings.
#[derive(Clone, Copy, Debug)]
pub struct Handler<'a>(pub &'a Node);

impl<'a> Handler<'a> {
    /// The `httpGet` action, when that is the action.
    pub fn http_get(&self) -> Option<&'a Node> {
        self.0.get("httpGet")
    }

    /// The argv of an `exec` action.
    pub fn exec_command(&self) -> Option<Vec<&'a str>> {
        let command = self.0.at(&["exec", "command"])?;
        Some(command.items().iter().filter_map(Node::text).collect())
    }

    /// Whether the handler only waits: a `sleep` action, or `exec` of `sleep N` (also through
    /// `sh -c`).
    pub fn is_sleep(&self) -> bool {
        if self.0.get("sleep").is_some() {
            return true;
        }
        let Some(argv) = self.exec_command() else {
            return false;
        };
        let words: Vec<&str> = match argv.as_slice() {
            [shell, "-c", script] if shell.ends_with("sh") => script.split_whitespace().collect(),
            _ => argv,
        };
        matches!(words.as_slice(), [program, _] if program.rsplit('/').next() == Some("sleep"))
    }

    /// A probe timing, with Kubernetes' default when absent.
    pub fn seconds(&self, field: &str, default: i64) -> i64 {
        self.0.get(field).and_then(Node::int).unwrap_or(default)
    }
}

/// An IntOrString count of pods: `2` or `25%`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    /// A number of pods.
    Pods(i64),
    /// A percentage of the replicas.
    Percent(i64),
}

impl Count {
    /// Reads `2`, `"2"` or `"25%"`.
    pub fn read(node: &Node) -> Option<Count> {
        let text = node.text()?.trim();
        match text.strip_suffix('%') {
            Some(percent) => percent.parse().ok().map(Count::Percent),
            None => text.parse().ok().map(Count::Pods),
        }
    }

    /// The number of pods out of `replicas`, rounding a percentage up or down as the
    /// Kubernetes field in question does.
    pub fn of(self, replicas: i64, round_up: bool) -> i64 {
        match self {
            Count::Pods(pods) => pods,
            Count::Percent(percent) => {
                let scaled = i128::from(replicas) * i128::from(percent);
                let pods = if round_up {
                    (scaled + 99).div_euclid(100)
                } else {
                    scaled.div_euclid(100)
                };
                i64::try_from(pods).unwrap_or(if pods > 0 { i64::MAX } else { i64::MIN })
            }
        }
    }
}

/// Whether a label selector (`matchLabels` and `matchExpressions`) selects pods with these
/// labels. An empty selector selects every pod; a missing one selects none.
pub fn selects(selector: Option<&Node>, labels: Option<&Node>) -> bool {
    let Some(selector) = selector.filter(|s| s.is_map()) else {
        return false;
    };
    let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Node::text);
    let match_labels = selector
        .get("matchLabels")
        .map(Node::entries)
        .unwrap_or_default();
    let labels_match = match_labels
        .iter()
        .all(|(key, value)| value.text().is_some() && label(key) == value.text());
    let expressions = selector
        .get("matchExpressions")
        .map(Node::items)
        .unwrap_or_default();
    let expressions_match = expressions.iter().all(|expression| {
        let Some(key) = expression.get("key").and_then(Node::text) else {
            return false;
        };
        let values = expression
            .get("values")
            .map(Node::items)
            .unwrap_or_default();
        let listed = |value: &str| values.iter().any(|v| v.text() == Some(value));
        match expression.get("operator").and_then(Node::text) {
            Some("In") => label(key).is_some_and(listed),
            Some("NotIn") => !label(key).is_some_and(listed),
            Some("Exists") => label(key).is_some(),
            Some("DoesNotExist") => label(key).is_none(),
            _ => false,
        }
    });
    labels_match && expressions_match
}

/// Whether a Service's plain `selector` map selects pods with these labels; an empty or
/// missing one selects nothing (the Service has no automatic endpoints).
pub fn service_selects(selector: Option<&Node>, labels: Option<&Node>) -> bool {
    let entries = selector.map(Node::entries).unwrap_or_default();
    !entries.is_empty()
        && entries.iter().all(|(key, value)| {
            value.text().is_some()
                && labels.and_then(|l| l.get(key)).and_then(Node::text) == value.text()
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lint::yaml;

    fn node(text: &str) -> Node {
        yaml::parse(text).unwrap().remove(0).root
    }

    #[test]
    fn counts_round_as_kubernetes_does() {
        assert_eq!(Count::read(&node("25%")), Some(Count::Percent(25)));
        assert_eq!(Count::read(&node("1")), Some(Count::Pods(1)));
        assert_eq!(Count::Percent(25).of(3, false), 0);
        assert_eq!(Count::Percent(25).of(3, true), 1);
        assert_eq!(Count::Percent(100).of(4, false), 4);
        assert_eq!(Count::Percent(i64::MAX).of(i64::MAX, true), i64::MAX);
    }

    #[test]
    fn label_selectors_follow_their_operators() {
        let labels = node("{app: web, tier: front}");
        let yes = [
            "{}",
            "{matchLabels: {app: web}}",
            "{matchExpressions: [{key: tier, operator: In, values: [front, back]}]}",
            "{matchExpressions: [{key: zone, operator: DoesNotExist}]}",
            "{matchExpressions: [{key: app, operator: NotIn, values: [db]}]}",
        ];
        for selector in yes {
            assert!(selects(Some(&node(selector)), Some(&labels)), "{selector}");
        }
        let no = [
            "{matchLabels: {app: db}}",
            "{matchExpressions: [{key: app, operator: Exists}, {key: zone, operator: Exists}]}",
            "{matchExpressions: [{key: app, operator: Bogus}]}",
        ];
        for selector in no {
            assert!(!selects(Some(&node(selector)), Some(&labels)), "{selector}");
        }
        assert!(!selects(None, Some(&labels)));
        assert!(service_selects(Some(&node("{app: web}")), Some(&labels)));
        assert!(!service_selects(Some(&node("{}")), Some(&labels)));
    }

    #[test]
    fn sleeps_are_recognised_in_every_spelling() {
        for hook in [
            "{sleep: {seconds: 5}}",
            "{exec: {command: [sleep, '5']}}",
            "{exec: {command: [/bin/sleep, '5']}}",
            "{exec: {command: [/bin/sh, -c, sleep 5]}}",
        ] {
            assert!(Handler(&node(hook)).is_sleep(), "{hook}");
        }
        assert!(!Handler(&node("{exec: {command: [curl, x]}}")).is_sleep());
    }
}
