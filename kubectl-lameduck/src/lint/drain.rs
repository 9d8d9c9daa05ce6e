//! The checks of one pod spec against the lameduck it runs: does the shutdown reach lameduck
//! (preStop hook, probes, listen address), does it fit (grace period, readiness timing),
//! and can lameduck stop the app gracefully (a known server's signal and its own bound, a
//! sidecar's reach, an installed copy's volume).

use std::net::SocketAddr;
use std::time::Duration;

use super::lameduck::{Hook, Lameduck, Read, Role, Settings};
use super::manifest::{Container, Handler, Path, Pod};
use super::report::{Findings, Rule};
use super::yaml::Node;
use crate::servers::{self, Server};
use ::lameduck::duration;
use ::lameduck::settings::{GRACE_MARGIN, ReadinessDuringDelay};
use ::lameduck::signals::short_name;

/// Kubernetes' probe defaults: `periodSeconds`, `failureThreshold`, `timeoutSeconds`.
const PROBE_DEFAULTS: (i64, i64, i64) = (10, 3, 1);

/// One lameduck in the pod and the containers whose shutdown it drains.
struct Drain<'p, 'a> {
    pod: &'p Pod<'a>,
    /// The container running lameduck.
    runner: &'p Container<'a>,
    lameduck: &'p Lameduck,
    /// The containers serving traffic: the wrapper's own, or the pod's other containers.
    hooked: Vec<&'p Container<'a>>,
    /// What every container of the pod runs of lameduck.
    reads: &'p [Read<'p, 'a>],
}

/// Checks the pod, whose containers `reads` has read; returns whether it runs lameduck at all
/// (pods without are not checked).
pub fn check<'p, 'a>(
    pod: &'p Pod<'a>,
    reads: &'p [Read<'p, 'a>],
    findings: &mut Findings<'_, '_>,
) -> bool {
    let ducks: Vec<(&Container<'_>, &Lameduck)> = reads
        .iter()
        .filter_map(|r| Some((r.container, r.lameduck.as_ref()?)))
        .collect();
    for &(runner, lameduck) in &ducks {
        for (path, reason) in &lameduck.problems {
            findings.add(
                Rule::FlagInvalid,
                Some(runner),
                path,
                format!("{reason}: lameduck refuses to start"),
                "correct the flag or variable".into(),
            );
        }
        let hooked = match &lameduck.role {
            Role::Install { dir } => {
                install(runner, dir, &ducks, findings);
                continue;
            }
            Role::Wrapper if runner.runs_alongside() => vec![runner],
            Role::Wrapper => continue,
            Role::Sidecar => pod
                .containers
                .iter()
                .filter(|c| !c.init && !ducks.iter().any(|(d, _)| d.path == c.path))
                .collect::<Vec<&Container<'_>>>(),
        };
        let drain = Drain {
            pod,
            runner,
            lameduck,
            hooked,
            reads,
        };
        if lameduck.role == Role::Sidecar {
            drain.sidecar(findings);
        }
        drain.listen(findings);
        drain.grace(findings);
        // A sidecar with no container beside it has nothing to hook or probe.
        if drain.hooked.is_empty() {
            continue;
        }
        for container in &drain.hooked {
            drain.prestop(container, findings);
        }
        drain.probes(findings);
        drain.servers(findings);
    }
    !ducks.is_empty()
}

impl Drain<'_, '_> {
    fn settings(&self) -> &Settings {
        &self.lameduck.settings
    }

    /// The container's exec preStop hook, when it runs `lameduck prestop`.
    fn hook(&self, container: &Container<'_>) -> Option<&Hook> {
        self.reads
            .iter()
            .find(|r| r.container.path == container.path)
            .and_then(|r| r.hook.as_ref())
    }

    /// The port the kubelet's httpGet must reach, when known and reachable.
    fn port(&self) -> Option<i64> {
        self.settings().port().filter(|&port| port != 0)
    }

    /// The kubelet connects to the pod IP: a loopback address or port 0 cannot be reached.
    fn listen(&self, findings: &mut Findings<'_, '_>) {
        let listen = &self.settings().listen;
        let Some(addr) = listen.value else {
            return;
        };
        let message = if addr.ip().is_loopback() {
            format!(
                "lameduck listens on {addr}, but the kubelet sends probes and preStop calls to the pod IP"
            )
        } else if addr.port() == 0 {
            format!("lameduck listens on {addr}, a random port no probe or hook can name")
        } else {
            return;
        };
        let fix = format!(
            "listen on {}",
            SocketAddr::new([0, 0, 0, 0].into(), nonzero(addr.port()))
        );
        findings.add(
            Rule::ListenUnreachable,
            Some(self.runner),
            &listen.path,
            message,
            fix,
        );
    }

    /// The hooked container's preStop hook must call lameduck's `/prestop`.
    fn prestop(&self, container: &Container<'_>, findings: &mut Findings<'_, '_>) {
        let path = container.path.keys(&["lifecycle", "preStop"]);
        let handler = container.handler(&["lifecycle", "preStop"]);
        // The in-pod hook reaches lameduck over the pod's own hook socket, which a name can
        // give without the port.
        if let Some(program) = handler.and_then(in_pod_program) {
            if !self.has_lameduck(container, program) {
                findings.add(
                    Rule::PrestopExecUnseen,
                    Some(container),
                    &path.keys(&["exec", "command"]).index(0),
                    format!("the preStop hook runs {program}, which lint does not see in container \"{}\": the container does not run it, and no install init container puts it on a volume mounted there; if the image lacks it, the hook fails and the kubelet sends the stop signal at once", container.name),
                    "add an init container running `lameduck install /shared` onto an emptyDir, mount it at /shared here and run [/shared/lameduck, prestop]; ignore this if the image has the binary".into(),
                );
            }
            self.prestop_socket(container, findings);
            return;
        }
        let Some(port) = self.port() else {
            return;
        };
        let token = self.settings().prestop_token;
        let fix = format!(
            "add lifecycle.preStop.exec with command [PATH/lameduck, prestop] (or httpGet with path /prestop and port {port}{})",
            if token {
                " and an Authorization: Bearer header"
            } else {
                ", which needs --prestop-token"
            }
        );
        let Some(hook) = handler else {
            // A wrapper still drains on the runtime's stop signal; a sidecar never sees it.
            let (rule, why) = match self.lameduck.role {
                Role::Sidecar => (
                    Rule::PrestopMissing,
                    "nothing calls the sidecar, so the kubelet stops the app while endpoints still route to it",
                ),
                _ => (
                    Rule::PrestopAdvised,
                    "the drain then starts only if the runtime's stop signal reaches lameduck as SIGTERM, SIGINT or its --stop-signal; a hook starts it whatever the image's STOPSIGNAL",
                ),
            };
            findings.add(
                rule,
                Some(container),
                &path,
                format!("no preStop hook: {why}"),
                fix,
            );
            return;
        };
        if hook.is_sleep() {
            findings.add(
                Rule::PrestopSleep,
                Some(container),
                &path,
                "preStop only sleeps: a fixed wait that keeps readiness passing, which lameduck's /prestop replaces with a drain".into(),
                fix,
            );
            return;
        }
        if let Some(get) = hook.http_get() {
            self.prestop_http_get(container, get, &path.key("httpGet"), port, &fix, findings);
            return;
        }
        let exec = hook.exec_command().unwrap_or_default().join(" ");
        if exec.contains(&format!(":{port}/prestop")) {
            if !token && !self.settings().prestop_insecure {
                findings.add(
                    Rule::PrestopHttpRefused,
                    Some(container),
                    &path.keys(&["exec", "command"]),
                    "the preStop command calls /prestop over HTTP, but lameduck has neither --prestop-token nor --prestop-insecure: it refuses the call (403)".into(),
                    fix,
                );
            } else if token && !exec.contains("Authorization") {
                findings.add(
                    Rule::PrestopNoToken,
                    Some(container),
                    &path.keys(&["exec", "command"]),
                    "--prestop-token is set, but the preStop command sends no Authorization header: lameduck refuses the call".into(),
                    fix,
                );
            }
            return;
        }
        findings.add(
            Rule::PrestopNotLameduck,
            Some(container),
            &path,
            format!("the preStop hook does not call lameduck's /prestop on port {port}"),
            fix,
        );
    }

    /// An exec hook's `lameduck prestop` must take its flags and variables, and call the socket
    /// this lameduck listens on. Every container of a pod shares its network namespace, where
    /// the abstract socket lives, so the name is all that decides, whichever container hooks.
    fn prestop_socket(&self, container: &Container<'_>, findings: &mut Findings<'_, '_>) {
        let Some(hook) = self.hook(container) else {
            return;
        };
        for (path, reason) in &hook.problems {
            // A variable both read: lameduck's own refusal is reported already.
            let reported = container.path == self.runner.path
                && self.lameduck.problems.iter().any(|(p, _)| p == path);
            if !reported {
                findings.add(
                    Rule::FlagInvalid,
                    Some(container),
                    path,
                    format!("{reason}: `lameduck prestop` refuses it, so the preStop hook fails and the kubelet sends the stop signal at once"),
                    "correct the hook's flag or the container's variable".into(),
                );
            }
        }
        let (Some(calls), Some(listens)) =
            (&hook.socket.value, &self.settings().prestop_socket.value)
        else {
            return;
        };
        if calls.name == listens.name {
            return;
        }
        let runner = self.runner.name;
        findings.add(
            Rule::PrestopSocketMismatch,
            Some(container),
            &hook.socket.path,
            format!(
                "the preStop hook calls @{} ({}), but lameduck in container \"{runner}\" listens on @{} ({}): the hook finds no lameduck and fails, and the drain does not start by hook",
                calls.name, calls.from, listens.name, listens.from
            ),
            match (calls.port, listens.port) {
                (Some(_), Some(port)) => format!(
                    "pass --listen=0.0.0.0:{port}, lameduck's port, to `lameduck prestop` in the hook"
                ),
                _ => format!(
                    "pass --prestop-socket={} to `lameduck prestop` in the hook",
                    listens.name
                ),
            },
        );
    }

    /// Whether `program` is a lameduck the container has: the one it runs itself, or a copy that
    /// an install init container put on a volume the container mounts at `program`'s directory.
    fn has_lameduck(&self, container: &Container<'_>, program: &str) -> bool {
        if container.path == self.runner.path && program == self.lameduck.program {
            return true;
        }
        let Some((dir, _)) = program.rsplit_once('/') else {
            return false;
        };
        let Some(mounted) = container.volume_at(dir) else {
            return false;
        };
        self.reads
            .iter()
            .filter(|r| r.container.init)
            .filter_map(|r| match &r.lameduck.as_ref()?.role {
                Role::Install { dir } => r.container.volume_at(dir),
                _ => None,
            })
            .any(|installed| installed == mounted)
    }

    fn prestop_http_get(
        &self,
        container: &Container<'_>,
        get: &Node,
        path: &Path,
        port: i64,
        fix: &str,
        findings: &mut Findings<'_, '_>,
    ) {
        let mut wrong = |field: &str, message: String| {
            findings.add(
                Rule::PrestopNotLameduck,
                Some(container),
                &path.key(field),
                message,
                fix.to_owned(),
            );
        };
        let called = get.get("path").and_then(Node::text).unwrap_or("/");
        let calls_prestop = called.split('?').next() == Some("/prestop");
        if !calls_prestop {
            wrong(
                "path",
                format!("the preStop hook calls {called}, not /prestop"),
            );
        }
        if let Some(host) = get.get("host").and_then(Node::text) {
            wrong(
                "host",
                format!(
                    "the preStop hook calls host {host}, which the kubelet resolves on the node, not in the pod"
                ),
            );
        }
        if let Some(scheme) = get.get("scheme").and_then(Node::text)
            && !scheme.eq_ignore_ascii_case("HTTP")
        {
            wrong(
                "scheme",
                format!(
                    "the preStop hook uses {scheme}, which lameduck does not serve: the kubelet falls back to plain HTTP and strips the Authorization header, so a token never arrives"
                ),
            );
        }
        match get.get("port") {
            None => wrong("port", "the preStop hook names no port".into()),
            Some(named) => match container.resolve_port(named) {
                Some(number) if number == port => {}
                Some(number) => wrong(
                    "port",
                    format!("the preStop hook calls port {number}; lameduck listens on {port}"),
                ),
                None => findings.add(
                    Rule::PrestopNamedPort,
                    Some(container),
                    &path.key("port"),
                    format!(
                        "port '{}' is not a port of container \"{}\", and the kubelet looks names up there only",
                        named.text().unwrap_or("?"),
                        container.name
                    ),
                    format!("give lameduck's port by number: port: {port}"),
                ),
            },
        }
        let headers = get.get("httpHeaders").map(Node::items).unwrap_or_default();
        let authorized = headers.iter().any(|h| {
            h.get("name")
                .and_then(Node::text)
                .is_some_and(|n| n.eq_ignore_ascii_case("Authorization"))
        });
        let settings = self.settings();
        if calls_prestop && !settings.prestop_token && !settings.prestop_insecure {
            findings.add(
                Rule::PrestopHttpRefused,
                Some(container),
                path,
                "the preStop hook calls /prestop over HTTP, but lameduck has neither --prestop-token nor --prestop-insecure: it refuses the call (403), the kubelet ignores the status, and the drain never starts from the hook".into(),
                "use lifecycle.preStop.exec with command [PATH/lameduck, prestop] (or pass --prestop-token and send it as Authorization: Bearer)".into(),
            );
        }
        if settings.prestop_token && !authorized {
            findings.add(
                Rule::PrestopNoToken,
                Some(container),
                &path.key("httpHeaders"),
                "--prestop-token is set, but the preStop hook sends no Authorization header: lameduck refuses the call".into(),
                "add httpHeaders with name Authorization and value Bearer <token>".into(),
            );
        }
    }

    /// Readiness must ask lameduck's `/readyz` and notice a drain within the shutdown delay;
    /// no probe may call `/prestop`, and liveness must not follow the drain.
    fn probes(&self, findings: &mut Findings<'_, '_>) {
        let Some(port) = self.port() else {
            return;
        };
        let alongside: Vec<&Container<'_>> = self
            .pod
            .containers
            .iter()
            .filter(|c| c.runs_alongside())
            .collect();
        let mut asked = false;
        for container in &alongside {
            self.probes_on_drain_endpoints(container, port, findings);
            let Some(probe) = container.handler(&["readinessProbe"]) else {
                continue;
            };
            if !calls(container, probe, port, "/readyz") {
                continue;
            }
            asked = true;
            self.readiness_timing(container, probe, findings);
        }
        if asked {
            // A liveness probe restarts the container it is on: lameduck's own container.
            let runner = self.runner;
            if runner.handler(&["livenessProbe"]).is_none() {
                findings.add(
                    Rule::LivenessMissing,
                    Some(runner),
                    &runner.path.key("livenessProbe"),
                    "readiness asks lameduck, but no livenessProbe restarts lameduck's container if it hangs".into(),
                    format!("add livenessProbe.httpGet with path /livez and port {port} to this container"),
                );
            }
            return;
        }
        let mut candidates = self.hooked.clone();
        candidates.push(self.runner);
        let fix = format!("add readinessProbe.httpGet with path /readyz and port {port}");
        match candidates
            .iter()
            .find(|c| c.handler(&["readinessProbe"]).is_some())
        {
            Some(container) => findings.add(
                Rule::ReadinessNotLameduck,
                Some(container),
                &container.path.key("readinessProbe"),
                format!("the readinessProbe does not ask lameduck's /readyz on port {port}, so the pod looks ready through the drain"),
                fix,
            ),
            None => {
                let container = self.hooked.first().copied().unwrap_or(self.runner);
                findings.add(
                    Rule::ReadinessMissing,
                    Some(container),
                    &container.path.key("readinessProbe"),
                    "no readinessProbe asks lameduck's /readyz: load balancers that health-check the pod keep sending traffic through the drain".into(),
                    fix,
                );
            }
        }
    }

    fn probes_on_drain_endpoints(
        &self,
        container: &Container<'_>,
        port: i64,
        findings: &mut Findings<'_, '_>,
    ) {
        if let Some(probe) = container.handler(&["livenessProbe"]) {
            for endpoint in ["/readyz", "/prestop"] {
                if calls(container, probe, port, endpoint) {
                    findings.add(
                        Rule::LivenessOnDrain,
                        Some(container),
                        &container.path.keys(&["livenessProbe", "httpGet", "path"]),
                        format!("the livenessProbe asks {endpoint}, which fails or drains on purpose: the kubelet restarts the container mid-drain"),
                        format!("point livenessProbe.httpGet at path /livez port {port}"),
                    );
                }
            }
        }
        for field in ["readinessProbe", "startupProbe"] {
            if let Some(probe) = container.handler(&[field])
                && calls(container, probe, port, "/prestop")
            {
                findings.add(
                    Rule::ProbeCallsPrestop,
                    Some(container),
                    &container.path.keys(&[field, "httpGet", "path"]),
                    format!("the {field} calls /prestop, which starts a drain at the first probe"),
                    format!(
                        "point {field}.httpGet at path {} port {port}",
                        if field == "readinessProbe" {
                            "/readyz"
                        } else {
                            "/livez"
                        }
                    ),
                );
            }
        }
    }

    /// With `--readiness-during-delay fail`, readiness must fail before the delay ends.
    fn readiness_timing(
        &self,
        container: &Container<'_>,
        probe: Handler<'_>,
        findings: &mut Findings<'_, '_>,
    ) {
        let settings = self.settings();
        if settings.readiness_during_delay.value != Some(ReadinessDuringDelay::Fail) {
            return;
        }
        let Some(delay) = settings.shutdown_delay.value else {
            return;
        };
        let (period_default, failures_default, timeout_default) = PROBE_DEFAULTS;
        let period = probe.seconds("periodSeconds", period_default).max(0);
        let failures = probe.seconds("failureThreshold", failures_default).max(0);
        let timeout = probe.seconds("timeoutSeconds", timeout_default).max(0);
        let noticed = period.saturating_mul(failures).saturating_add(timeout);
        let noticed_after = Duration::from_secs(u64::try_from(noticed).unwrap_or(u64::MAX));
        if noticed_after <= delay {
            return;
        }
        findings.add(
            Rule::ReadinessSlow,
            Some(container),
            &container.path.key("readinessProbe"),
            format!(
                "readiness notices the drain only after up to {noticed}s (periodSeconds {period} × failureThreshold {failures} + timeoutSeconds {timeout}), but the shutdown delay is {}: the app gets its stop signal while still in rotation",
                duration::format(delay)
            ),
            format!("set periodSeconds: 1 and failureThreshold: 1, or raise --shutdown-delay to {noticed}s"),
        );
    }

    /// The drain must end before the kubelet's SIGKILL at `terminationGracePeriodSeconds`.
    fn grace(&self, findings: &mut Findings<'_, '_>) {
        let settings = self.settings();
        let (Some(delay), Some(drain)) =
            (settings.shutdown_delay.value, settings.drain_timeout.value)
        else {
            return;
        };
        let grace_seconds = self.pod.grace_seconds().max(0);
        let grace = Duration::from_secs(u64::try_from(grace_seconds).unwrap_or(0));
        match &settings.grace_period {
            Some(flag) => {
                let Some(budget) = flag.value else {
                    return;
                };
                if budget > grace {
                    findings.add(
                        Rule::GracePeriodMismatch,
                        Some(self.runner),
                        &flag.path,
                        format!("--grace-period {} is longer than terminationGracePeriodSeconds {grace_seconds}: the kubelet's SIGKILL comes before lameduck's own final kill", duration::format(budget)),
                        format!("set --grace-period to {grace_seconds}s"),
                    );
                } else if delay.saturating_add(GRACE_MARGIN) >= budget {
                    findings.add(
                        Rule::GraceTooShort,
                        Some(self.runner),
                        &settings.shutdown_delay.path,
                        format!("--shutdown-delay {} does not fit in --grace-period {} with lameduck's {} margin: lameduck refuses to start", duration::format(delay), duration::format(budget), duration::format(GRACE_MARGIN)),
                        "shorten --shutdown-delay or raise terminationGracePeriodSeconds and --grace-period together".into(),
                    );
                }
            }
            None => {
                let needed = delay.saturating_add(drain).saturating_add(GRACE_MARGIN);
                if needed > grace {
                    let at_least = needed.as_secs() + u64::from(needed.subsec_nanos() > 0);
                    findings.add(
                        Rule::GraceTooShort,
                        Some(self.runner),
                        &self.pod.path.key("terminationGracePeriodSeconds"),
                        format!("terminationGracePeriodSeconds {grace_seconds} is shorter than the shutdown delay {} + drain timeout {} + {} margin: the kubelet kills the app mid-drain", duration::format(delay), duration::format(drain), duration::format(GRACE_MARGIN)),
                        format!("set terminationGracePeriodSeconds to at least {at_least}, or pass --grace-period {grace_seconds}s so lameduck fits the drain in"),
                    );
                }
            }
        }
    }

    /// Each known server (see `servers`) finishes its responses on its own graceful signal
    /// only, and should bound that stop itself within lameduck's drain timeout.
    fn servers(&self, findings: &mut Findings<'_, '_>) {
        for container in &self.hooked {
            let command = match self.lameduck.role {
                Role::Wrapper => self.lameduck.app.clone(),
                _ => container.argv(),
            };
            let Some(server) = servers::known(container.image(), &command) else {
                continue;
            };
            self.stop_signal(container, server, findings);
            self.server_bound(container, server, findings);
        }
    }

    /// The signal lameduck sends must be the server's graceful stop.
    fn stop_signal(
        &self,
        container: &Container<'_>,
        server: &Server,
        findings: &mut Findings<'_, '_>,
    ) {
        let settings = self.settings();
        let signals_app = match self.lameduck.role {
            Role::Sidecar => settings.pid_file.is_some() || settings.process_name,
            _ => true,
        };
        // A sidecar that only delays leaves the signal to the kubelet (the image's STOPSIGNAL).
        if !signals_app {
            return;
        }
        let Some(signal) = settings.stop_signal.value else {
            return;
        };
        let graceful = short_name(server.graceful_stop);
        // lifecycle.stopSignal is what the runtime sends the container's PID 1: the app only
        // beside a sidecar; in the wrapper and install shapes it reaches lameduck, not the app.
        let graceful_by_kubelet = self.lameduck.role == Role::Sidecar
            && container
                .node
                .at(&["lifecycle", "stopSignal"])
                .and_then(Node::text)
                .is_some_and(|s| s.strip_prefix("SIG").unwrap_or(s) == graceful);
        if signal == server.graceful_stop || graceful_by_kubelet {
            return;
        }
        let effect = if server.fast_stop.contains(&signal) {
            "stops at once on"
        } else {
            "does not stop on"
        };
        findings.add(
            Rule::StopSignal,
            Some(self.runner),
            &settings.stop_signal.path,
            format!("container \"{}\" runs {}, which {effect} SIG{}: only SIG{graceful} lets it finish its responses", container.name, server.name, short_name(signal)),
            match self.lameduck.role {
                Role::Sidecar => format!("pass --stop-signal {graceful} to lameduck (or set lifecycle.stopSignal: SIG{graceful} on the app)"),
                _ => format!("pass --stop-signal {graceful} to lameduck (lifecycle.stopSignal reaches lameduck, not the app)"),
            },
        );
    }

    /// Lint cannot read the server's config files, so it looks for the bound's setting in the
    /// container's command, arguments and environment; it asks only when the bound matters:
    /// the drain timeout is set on purpose, or the graceful stop needs the setting at all.
    fn server_bound(
        &self,
        container: &Container<'_>,
        server: &Server,
        findings: &mut Findings<'_, '_>,
    ) {
        let Some(bound) = &server.own_bound else {
            return;
        };
        let drain = &self.settings().drain_timeout;
        let drain_given = drain.path != self.lameduck.argv_path;
        if !(drain_given || bound.required) || container.mentions(bound.setting) {
            return;
        }
        let why = if bound.required {
            format!(
                "without it {}'s graceful stop cuts responses too",
                server.name
            )
        } else {
            let timeout = drain.value.map_or("its value".into(), duration::format);
            format!(
                "unbounded, {} outlives lameduck's --drain-timeout {timeout} and is killed mid-response instead of closing its connections itself",
                server.name
            )
        };
        findings.add(
            Rule::ServerBoundUnseen,
            Some(container),
            &container.path,
            format!("container \"{}\" runs {}, and lint sees no `{}` in its command, args or env (it cannot read config files): {why}", container.name, server.name, bound.setting),
            format!("{}; ignore this if the config already sets it", bound.hint),
        );
    }

    /// A sidecar must run alongside the app, and can signal the app only when it can see it.
    fn sidecar(&self, findings: &mut Findings<'_, '_>) {
        let runner = self.runner;
        let settings = self.settings();
        if runner.init && !runner.is_native_sidecar() {
            findings.add(
                Rule::SidecarNotRestartable,
                Some(runner),
                &runner.path.key("restartPolicy"),
                "lameduck sidecar is an init container that never exits, so the app containers never start".into(),
                "set restartPolicy: Always on it (a native sidecar), or move it to containers".into(),
            );
        }
        let asked_to_signal = if settings.pid_file.is_some() {
            Some("--pid-file")
        } else {
            settings.process_name.then_some("--process-name")
        };
        let Some(flag) = asked_to_signal else {
            findings.add(
                Rule::SidecarDelayOnly,
                Some(runner),
                &self.lameduck.argv_path,
                "without --pid-file or --process-name the sidecar can only delay: the app stops on the kubelet's signal once the preStop hook returns".into(),
                "add --process-name (with shareProcessNamespace: true) or --pid-file on a shared volume, so lameduck sends the stop signal".into(),
            );
            return;
        };
        if !self.pod.shares_process_namespace() {
            findings.add(
                Rule::SidecarNoSharedPid,
                Some(runner),
                &self.pod.path.key("shareProcessNamespace"),
                format!("the sidecar is asked to signal the app ({flag}), but without a shared PID namespace it cannot see the app's processes"),
                "set shareProcessNamespace: true in the pod spec".into(),
            );
        }
        if let Some(pid_file) = &settings.pid_file
            && let Some(file) = &pid_file.value
        {
            let shared = runner
                .volume_holding(file)
                .is_some_and(|volume| self.hooked.iter().any(|c| c.mounts_volume(volume)));
            if !shared {
                findings.add(
                    Rule::SidecarPidFileNotShared,
                    Some(runner),
                    &pid_file.path,
                    format!("the pid file {file} is not on a volume the app's container also mounts, so the sidecar never sees the pid the app writes"),
                    "mount one emptyDir volume in both containers and put the pid file on it".into(),
                );
            }
        }
    }
}

/// `lameduck install DIR` must copy onto a volume that the containers running `DIR/lameduck`
/// mount at the same place.
fn install(
    installer: &Container<'_>,
    dir: &str,
    ducks: &[(&Container<'_>, &Lameduck)],
    findings: &mut Findings<'_, '_>,
) {
    if dir.is_empty() {
        return;
    }
    let Some(volume) = installer.volume_at(dir) else {
        findings.add(
            Rule::InstallNotShared,
            Some(installer),
            &installer.path.key("volumeMounts"),
            format!("lameduck installs into {dir}, which is no volume: the copy stays inside the init container"),
            format!("mount an emptyDir volume at {dir} here and in the containers that run {dir}/lameduck"),
        );
        return;
    };
    let installed = format!("{}/lameduck", dir.trim_end_matches('/'));
    let users = ducks.iter().filter(|(container, lameduck)| {
        container.path != installer.path && lameduck.program == installed
    });
    for (container, _) in users {
        if container.volume_at(dir) != Some(volume) {
            findings.add(
                Rule::InstallNotShared,
                Some(container),
                &container.path.key("volumeMounts"),
                format!("runs {installed}, but does not mount volume \"{volume}\" at {dir} where the init container installed it"),
                format!("mount volume \"{volume}\" at {dir} in this container"),
            );
        }
    }
}

/// The program of a preStop hook that is the in-pod hook, `exec` of `PATH/lameduck prestop`
/// (a hook that sleeps or has an httpGet is read as that).
fn in_pod_program(hook: Handler<'_>) -> Option<&str> {
    if hook.is_sleep() || hook.http_get().is_some() {
        return None;
    }
    match hook.exec_command()?.as_slice() {
        &[program, "prestop", ..] if program.rsplit('/').next() == Some("lameduck") => {
            Some(program)
        }
        _ => None,
    }
}

/// Whether a probe calls `endpoint` on lameduck's port with plain HTTP from the kubelet.
fn calls(container: &Container<'_>, probe: Handler<'_>, port: i64, endpoint: &str) -> bool {
    let Some(get) = probe.http_get() else {
        return false;
    };
    let path = get.get("path").and_then(Node::text).unwrap_or("/");
    path.split('?').next() == Some(endpoint)
        && get.get("host").is_none()
        && get
            .get("port")
            .and_then(|p| container.resolve_port(p))
            .is_some_and(|p| p == port)
}

/// The default port when lameduck was given port 0.
fn nonzero(port: u16) -> u16 {
    if port == 0 { 8099 } else { port }
}
