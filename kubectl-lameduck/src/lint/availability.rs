//! Whether enough pods stay up while some shut down: replicas, the rollout strategy, the
//! PodDisruptionBudgets that select a workload's pods, and Services that route to pods that
//! are not ready or that bypass lameduck's drain proxy. Checked across every object lint was
//! given, so a PDB in another file counts.

use super::lameduck::Read;
use super::manifest::{Count, Kind, Object, Path, Pod, selects, service_selects};
use super::report::{Finding, Findings, Rule};
use super::yaml::Node;

/// A workload whose pods run lameduck, with what lint read of their containers.
pub struct Drained<'p, 'a> {
    /// The workload (or the pod itself).
    pub workload: &'p Object<'a>,
    /// Its pod spec.
    pub pod: &'p Pod<'a>,
    /// Each container of the pod spec, read.
    pub reads: &'p [Read<'p, 'a>],
}

/// Checks the workloads in `drained` (those running lameduck) against all `objects`.
pub fn check(objects: &[Object<'_>], drained: &[Drained<'_, '_>], list: &mut Vec<Finding>) {
    let budgets: Vec<&Object<'_>> = objects
        .iter()
        .filter(|o| o.kind == Kind::PodDisruptionBudget)
        .collect();
    // Budgets already judged against the workload they select.
    let mut judged: Vec<&Node> = Vec::new();
    for &Drained {
        workload,
        pod,
        reads,
    } in drained
    {
        let routes: Vec<(u16, u16)> = reads
            .iter()
            .filter(|r| r.container.runs_alongside())
            .filter_map(|r| r.lameduck.as_ref())
            .flat_map(|l| &l.settings.proxy)
            .map(|route| (route.listen.port(), route.app.port()))
            .collect();
        for service in objects.iter().filter(|o| o.kind == Kind::Service) {
            if !routes.is_empty()
                && service.shares_namespace_with(workload)
                && service_selects(service.node.at(&["spec", "selector"]), pod.labels)
            {
                bypasses_proxy(service, workload, pod, &routes, list);
            }
            let publishes = service.node.at(&["spec", "publishNotReadyAddresses"]);
            if publishes.is_some_and(Node::is_true)
                && service.shares_namespace_with(workload)
                && service_selects(service.node.at(&["spec", "selector"]), pod.labels)
            {
                Findings::new(service, list).add(
                    Rule::ServicePublishesNotReady,
                    None,
                    &service.path.keys(&["spec", "publishNotReadyAddresses"]),
                    format!("the Service routes to {}/{}'s pods even when they are not ready, so failing readiness during a drain takes no pod out", workload.kind.name(), workload.name),
                    "remove publishNotReadyAddresses (or set it to false)".into(),
                );
            }
        }
        if !matches!(
            workload.kind,
            Kind::Deployment | Kind::StatefulSet | Kind::ReplicaSet
        ) {
            continue;
        }
        let replicas_path = workload.path.keys(&["spec", "replicas"]);
        let replicas = workload
            .node
            .at(&["spec", "replicas"])
            .map_or(Some(1), Node::int);
        let Some(replicas) = replicas else {
            continue;
        };
        let mut findings = Findings::new(workload, list);
        if replicas < 2 {
            findings.add(
                Rule::ReplicasLow,
                None,
                &replicas_path,
                format!("{replicas} replica{}: every rollout, eviction or node drain leaves no pod to take the traffic", if replicas == 1 { "" } else { "s" }),
                "set replicas: 2 or more".into(),
            );
        }
        rollout(workload, replicas, &mut findings);
        let selecting: Vec<&Object<'_>> = budgets
            .iter()
            .copied()
            .filter(|pdb| {
                pdb.shares_namespace_with(workload)
                    && selects(pdb.node.at(&["spec", "selector"]), pod.labels)
            })
            .collect();
        if selecting.is_empty() {
            findings.add(
                Rule::PdbMissing,
                None,
                &pod.labels_path,
                "no PodDisruptionBudget selects these pods: a node drain may evict all of them at once".into(),
                "add a PodDisruptionBudget with minAvailable: 1 whose selector matches these labels".into(),
            );
        }
        for pdb in selecting {
            budget(pdb, Some((workload, replicas)), list);
            judged.push(pdb.node);
        }
    }
    // Budgets that select no workload given here can still be wrong on their own.
    for pdb in budgets {
        if !judged.iter().any(|node| std::ptr::eq(*node, pdb.node)) {
            budget(pdb, None, list);
        }
    }
}

/// A Service in front of pods whose lameduck proxies their traffic must send it to the
/// proxy's port: to the app's own port, kept-alive clients are not moved off in the drain.
fn bypasses_proxy(
    service: &Object<'_>,
    workload: &Object<'_>,
    pod: &Pod<'_>,
    routes: &[(u16, u16)],
    list: &mut Vec<Finding>,
) {
    let ports = service
        .node
        .at(&["spec", "ports"])
        .map(Node::items)
        .unwrap_or_default();
    for (index, port) in ports.iter().enumerate() {
        // Without targetPort, Kubernetes uses the Service's port number.
        let (target, key) = match port.get("targetPort") {
            Some(target) => (target, "targetPort"),
            None => match port.get("port") {
                Some(number) => (number, "port"),
                None => continue,
            },
        };
        let Some(number) = target_number(pod, target) else {
            continue;
        };
        if routes
            .iter()
            .any(|(listen, _)| i64::from(*listen) == number)
        {
            continue;
        }
        let Some((listen, app)) = routes.iter().find(|(_, app)| i64::from(*app) == number) else {
            continue;
        };
        Findings::new(service, list).add(
            Rule::ServiceBypassesProxy,
            None,
            &service.path.keys(&["spec", "ports"]).index(index).key(key),
            format!("the Service sends traffic to {}/{}'s app on its own port {app}, bypassing lameduck's drain proxy on port {listen}: kept-alive clients are not moved off in the drain", workload.kind.name(), workload.name),
            format!("set targetPort: {listen}"),
        );
    }
}

/// A Service's targetPort as the endpoints resolve it: a number, or a name among the ports of
/// the pod's containers and native sidecars.
fn target_number(pod: &Pod<'_>, target: &Node) -> Option<i64> {
    if let Some(number) = target.int() {
        return Some(number);
    }
    let name = target.text()?;
    pod.containers
        .iter()
        .filter(|c| c.runs_alongside())
        .flat_map(|c| c.node.get("ports").map(Node::items).unwrap_or_default())
        .find(|p| p.get("name").and_then(Node::text) == Some(name))
        .and_then(|p| p.get("containerPort"))
        .and_then(Node::int)
}

/// A rollout must never take every pod down at once.
fn rollout(workload: &Object<'_>, replicas: i64, findings: &mut Findings<'_, '_>) {
    // A ReplicaSet has no rollout of its own: its Deployment rolls it.
    if replicas < 1 || workload.kind == Kind::ReplicaSet {
        return;
    }
    // Deployments round a maxUnavailable percentage down, StatefulSets up.
    let (strategy, default, round_up): (&[&str], Option<Count>, bool) = match workload.kind {
        Kind::Deployment => (&["spec", "strategy"], Some(Count::Percent(25)), false),
        // Without maxUnavailable a StatefulSet updates one pod at a time.
        _ => (&["spec", "updateStrategy"], None, true),
    };
    let strategy_path = workload.path.keys(strategy);
    let strategy_node = workload.node.at(strategy);
    let kind = strategy_node
        .and_then(|s| s.get("type"))
        .and_then(Node::text);
    if workload.kind == Kind::Deployment && kind == Some("Recreate") {
        findings.add(
            Rule::RolloutAllDown,
            None,
            &strategy_path.key("type"),
            "strategy Recreate stops every pod before starting new ones".into(),
            "use type: RollingUpdate with a maxUnavailable below the replica count".into(),
        );
        return;
    }
    let written = strategy_node
        .and_then(|s| s.at(&["rollingUpdate", "maxUnavailable"]))
        .and_then(Count::read);
    let Some(max_unavailable) = written.or(default) else {
        return;
    };
    if max_unavailable.of(replicas, round_up) >= replicas {
        findings.add(
            Rule::RolloutAllDown,
            None,
            &strategy_path.keys(&["rollingUpdate", "maxUnavailable"]),
            format!(
                "maxUnavailable {} lets a rollout take all {replicas} replicas down at once",
                show(max_unavailable)
            ),
            if workload.kind == Kind::Deployment {
                "set rollingUpdate.maxUnavailable below the replica count (0 with maxSurge: 1 keeps every pod serving)"
            } else {
                "set rollingUpdate.maxUnavailable below the replica count"
            }
            .into(),
        );
    }
}

/// A PodDisruptionBudget must keep at least one pod; `selected` is the workload it selects
/// and its replicas, when that is known.
fn budget(pdb: &Object<'_>, selected: Option<(&Object<'_>, i64)>, list: &mut Vec<Finding>) {
    let spec = |key: &str| pdb.node.at(&["spec", key]).and_then(Count::read);
    let path = |key: &str| -> Path { pdb.path.keys(&["spec", key]) };
    let of = selected
        .map(|(w, r)| format!(" of {}/{} ({r} replicas)", w.kind.name(), w.name))
        .unwrap_or_default();
    let mut findings = Findings::new(pdb, list);
    let fix = "use minAvailable: 1, or a maxUnavailable below the replica count";
    if let Some(min) = spec("minAvailable")
        && matches!(min, Count::Pods(n) | Count::Percent(n) if n <= 0)
    {
        findings.add(
            Rule::PdbAllowsAllDown,
            None,
            &path("minAvailable"),
            format!(
                "minAvailable {} lets every pod{of} be evicted at once",
                show(min)
            ),
            fix.into(),
        );
    }
    if let Some(max) = spec("maxUnavailable") {
        let all_down = match (max, selected) {
            (Count::Percent(p), _) if p >= 100 => true,
            // Budgets round a percentage up.
            (_, Some((_, replicas))) => replicas > 0 && max.of(replicas, true) >= replicas,
            _ => false,
        };
        if all_down {
            findings.add(
                Rule::PdbAllowsAllDown,
                None,
                &path("maxUnavailable"),
                format!(
                    "maxUnavailable {} lets every pod{of} be evicted at once",
                    show(max)
                ),
                fix.into(),
            );
        }
    }
}

fn show(count: Count) -> String {
    match count {
        Count::Pods(n) => n.to_string(),
        Count::Percent(p) => format!("{p}%"),
    }
}
