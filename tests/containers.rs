//! Real images in real containers, run the way the kubelet runs a pod: the three shapes of
//! examples/ (the wrapper image, stock nginx with the lameduck native sidecar, and the
//! init-container install), each with the in-pod hook `lameduck prestop` as an exec preStop
//! hook, each deleted under load behind real HAProxy beside a backend that stays up, with not
//! one request failing; the seed's plain nginx Deployment after `kubectl lameduck inject`, in
//! each shape, deleted the same way, and in the install shape with `--proxy`, whose kept-alive
//! client the drain proxy moves off before nginx stops; `docker stop` on the wrapper image,
//! which must end cleanly inside its default 10s; and the scratch image itself. Needs Docker:
//! without it these tests fail, they do not skip.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use lameduck_test_support::binaries::{plugin, workspace};
use lameduck_test_support::docker::{
    Container, ContainerSpec, Pod, PodSpec, docker, images, stock_nginx_conf,
};
use lameduck_test_support::haproxy::{Haproxy, Server};
use lameduck_test_support::kubelet::{self, Termination, wait_ready};
use lameduck_test_support::kubernetes;
use lameduck_test_support::load::Connections;
use lameduck_test_support::network::addrs;
use lameduck_test_support::nginx::NginxConfig;
use lameduck_test_support::process::{Lameduck, Mode, run};
use lameduck_test_support::scenario::{
    SLOW, STEADY, assert_none_failed, assert_served_across, load_context, under_load,
};

/// The shutdown delay: well over HAProxy's detection time (two checks 200 ms apart).
const DELAY: Duration = Duration::from_secs(2);
/// The pods' `terminationGracePeriodSeconds`.
const GRACE: Duration = Duration::from_secs(10);
/// lameduck's drain in every pod: 2s delay + 5s drain timeout + its 2s margin fit in GRACE.
const DRAIN_FLAGS: [&str; 4] = [
    "--shutdown-delay=2s",
    "--drain-timeout=5s",
    "--grace-period=10s",
    "--stop-signal=QUIT",
];
/// Room for a busy machine in the upper bounds on exit times.
const SLACK: Duration = Duration::from_secs(3);
/// Requests in flight at any moment.
const WORKERS: usize = 6;
/// How long a pod may take to become ready (containers starting on a busy machine).
const STARTUP: Duration = Duration::from_secs(30);
/// nginx's port and lameduck's (its `--listen` default), as the pod specs publish them.
const HTTP: u16 = 80;
const LAMEDUCK: u16 = 8099;
/// The drain proxy's port, as `kubectl lameduck inject --proxy` declares it by default.
const PROXY: u16 = 8098;

#[test]
fn wrapper_image_pod_is_deleted_under_load_without_failing_a_request() {
    let images = images();
    let ip = Ipv4Addr::new(127, 0, 63, 1);
    // As examples/wrapper.yaml: the command spelled out, so the drain's numbers are visible.
    let command = lameduck_command("/lameduck");
    let pod = PodSpec::new("wrapper", ip)
        .port(HTTP)
        .port(LAMEDUCK)
        .container(
            ContainerSpec::new("nginx", &images.wrapper)
                .command(&command)
                .args(&["nginx", "-g", "daemon off;"])
                .pre_stop_exec(&["/lameduck", "prestop"]),
        )
        .start();

    let termination = delete_under_load("wrapper", ip, &pod, GRACE);

    assert_drained_inside_the_hook(&termination, "nginx");
    // nginx.Dockerfile sets STOPSIGNAL SIGTERM again: the kubelet's signal is for lameduck.
    assert_eq!(termination.container("nginx").stop_signal, "SIGTERM");
}

#[test]
fn a_hook_still_held_when_a_shortened_grace_period_runs_out_sends_the_stop_signal_at_once() {
    let images = images();
    let ip = Ipv4Addr::new(127, 0, 63, 7);
    // A delay longer than the deletion's grace period, which lameduck cannot see
    // (`kubectl drain --grace-period 4`): the kubelet gives up on the hook at 4s, sends its
    // stop signal, and kills 2s later.
    let delay = Duration::from_secs(6);
    let grace = Duration::from_secs(4);
    let pod = PodSpec::new("held", ip)
        .port(HTTP)
        .port(LAMEDUCK)
        .container(
            ContainerSpec::new("nginx", &images.wrapper)
                .command(&[
                    "/lameduck",
                    "--shutdown-delay=6s",
                    "--drain-timeout=5s",
                    "--stop-signal=QUIT",
                    "--",
                ])
                .args(&["nginx", "-g", "daemon off;"])
                .pre_stop_exec(&["/lameduck", "prestop"]),
        )
        .start();

    let termination = delete_under_load("held", ip, &pod, grace);

    let context = termination.summary();
    let nginx = termination.container("nginx");
    let hook = nginx.hook.as_ref().expect("a preStop hook");
    assert!(
        hook.outcome.is_err(),
        "the kubelet gave up on the hook: {context}"
    );
    let signalled = nginx.signalled.expect("the kubelet's stop signal");
    assert!(
        signalled - termination.began < delay,
        "the kubelet's signal came inside the delay: {context}"
    );
    assert_clean_exit(nginx, &context);
    assert!(
        nginx.exited - termination.began < delay,
        "nginx exited {:?} after the deletion began, not before the delay's end: {context}",
        nginx.exited - termination.began
    );
    assert_eq!(
        quit_sender(&nginx.log),
        Some(1),
        "lameduck, PID 1, sent nginx QUIT: {context}"
    );
    assert!(
        nginx.log.contains("the preStop hook is still held"),
        "the log names the case: {context}"
    );
}

#[test]
fn sidecar_pod_with_stock_nginx_is_deleted_under_load_without_failing_a_request() {
    let images = images();
    let ip = Ipv4Addr::new(127, 0, 63, 2);
    // As examples/nginx-sidecar.yaml: the sidecar finds nginx's master by the pid file nginx
    // writes on the emptyDir they share, and signals it across the shared PID namespace.
    let mut sidecar = vec!["/lameduck", "sidecar", "--pid-file=/run/nginx/nginx.pid"];
    sidecar.extend(DRAIN_FLAGS);
    let pod = PodSpec::new("sidecar", ip)
        .port(HTTP)
        .port(LAMEDUCK)
        .share_process_namespace()
        // nginx's image has no lameduck: its hook runs the copy this init container installs.
        .init_container(
            ContainerSpec::new("install-lameduck", &images.lameduck)
                .command(&["/lameduck", "install", "/shared"])
                .empty_dir("lameduck", "/shared", false),
        )
        .sidecar(
            ContainerSpec::new("lameduck", &images.lameduck)
                .command(&sidecar)
                .empty_dir("nginx-run", "/run/nginx", true),
        )
        .container(
            // The stock image's own entrypoint; only its config comes from a ConfigMap.
            ContainerSpec::new("nginx", &images.nginx)
                .empty_dir("nginx-run", "/run/nginx", false)
                .config_file("/etc/nginx/nginx.conf", &sidecar_nginx_conf())
                .empty_dir("lameduck", "/shared", true)
                .pre_stop_exec(&["/shared/lameduck", "prestop"]),
        )
        .start();

    let termination = delete_under_load("sidecar", ip, &pod, GRACE);

    let context = termination.summary();
    let nginx = termination.container("nginx");
    let lameduck = termination.container("lameduck");
    let hook = nginx.hook.as_ref().expect("nginx has a preStop hook");
    assert_eq!(hook.outcome, Ok(0), "{context}");
    assert!(hook.took >= DELAY, "the hook held for the delay: {context}");
    // The sidecar answers once nginx has exited; docker notices a moment later.
    assert!(
        nginx.exited <= hook.started + hook.took + Duration::from_secs(1),
        "nginx exited inside its hook, stopped by the sidecar: {context}"
    );
    assert_clean_exit(nginx, &context);
    // Not from outside the pod (the kubelet: no sender), not from the pause container (1): from
    // the sidecar.
    let sender = quit_sender(&nginx.log);
    assert!(
        sender.is_some_and(|pid| pid > 1),
        "the sidecar sent nginx its QUIT, not {sender:?}: {context}"
    );
    // A native sidecar gets its stop signal only once the main containers have exited.
    let signalled = lameduck
        .signalled
        .expect("the sidecar was running until signalled");
    assert!(signalled >= nginx.exited, "{context}");
    assert_clean_exit(lameduck, &context);
    assert!(
        lameduck.exited - signalled < SLACK,
        "the sidecar exits at once when its app is gone: {context}"
    );
}

#[test]
fn init_install_pod_with_stock_nginx_is_deleted_under_load_without_failing_a_request() {
    let images = images();
    let ip = Ipv4Addr::new(127, 0, 63, 3);
    // As examples/init-install.yaml: the init container copies the static binary into the
    // emptyDir, and the stock image runs it in place of its entrypoint.
    let command = lameduck_command("/shared/lameduck");
    let pod = PodSpec::new("init-install", ip)
        .port(HTTP)
        .port(LAMEDUCK)
        .init_container(
            ContainerSpec::new("install-lameduck", &images.lameduck)
                .command(&["/lameduck", "install", "/shared"])
                .empty_dir("lameduck", "/shared", false),
        )
        .container(
            ContainerSpec::new("nginx", &images.nginx)
                .command(&command)
                .args(&["nginx", "-g", "daemon off;"])
                .empty_dir("lameduck", "/shared", true)
                .pre_stop_exec(&["/shared/lameduck", "prestop"]),
        )
        .start();

    let termination = delete_under_load("init-install", ip, &pod, GRACE);

    assert_drained_inside_the_hook(&termination, "nginx");
    // The stock image keeps STOPSIGNAL SIGQUIT, which the kubelet sends lameduck after the
    // hook, when nginx has had its QUIT (and has mostly exited already): it changes nothing.
    assert_eq!(termination.container("nginx").stop_signal, "SIGQUIT");
}

#[test]
fn docker_stop_with_its_default_timeout_ends_the_wrapper_image_cleanly() {
    let images = images();
    let ip = Ipv4Addr::new(127, 0, 63, 4);
    let [http, endpoints] = addrs(ip);
    let publish = |addr: SocketAddr, port: u16| format!("{}:{}:{port}", addr.ip(), addr.port());
    // The image as it is, its drain fitted to docker's 10s by the environment: lameduck ends
    // the drain 2s before docker's SIGKILL would, and the delay is what a balancer would need.
    let container = Container::run(
        "docker-stop",
        &[
            "-e",
            "LAMEDUCK_GRACE_PERIOD=10s",
            "-e",
            "LAMEDUCK_SHUTDOWN_DELAY=2s",
            "-p",
            &publish(http, HTTP),
            "-p",
            &publish(endpoints, LAMEDUCK),
            &images.wrapper,
        ],
    );
    assert!(
        wait_ready(&[(endpoints, "/readyz"), (http, "/fast")], STARTUP),
        "never ready:\n{}",
        container.logs()
    );

    let began = Instant::now();
    let stopped = docker(&["stop", &container.id]);
    let took = began.elapsed();

    let log = container.logs();
    assert!(stopped.is_ok(), "{stopped:?}\n{log}");
    assert!(
        took < Duration::from_secs(10),
        "docker stop took {took:?}, so its SIGKILL ended the container:\n{log}"
    );
    assert!(took >= DELAY, "the shutdown delay was served:\n{log}");
    assert_eq!(container.exit_code(), 0, "{log}");
    // lameduck names the grace period when it has to fit the 20s drain timeout into it.
    assert!(
        log.contains("grace_period=10s"),
        "LAMEDUCK_GRACE_PERIOD was taken:\n{log}"
    );
    assert_eq!(
        quit_sender(&log),
        Some(1),
        "lameduck sent nginx QUIT:\n{log}"
    );
}

#[test]
fn the_scratch_image_runs_lameduck_version() {
    let images = images();
    let container = Container::run("version", &[&images.lameduck, "--version"]);
    assert!(
        container.watch_exit().wait(STARTUP).is_some(),
        "lameduck --version did not exit:\n{}",
        container.logs()
    );
    assert_eq!(container.exit_code(), 0, "{}", container.logs());
    assert_eq!(
        container.logs().trim(),
        format!("lameduck {}", env!("CARGO_PKG_VERSION"))
    );
}

/// The stock nginx.conf as the sidecar shape's ConfigMap changes it (examples/nginx-sidecar.yaml):
/// the pid file on the shared emptyDir, and nginx's graceful stop bounded inside lameduck's
/// drain timeout (5s).
fn sidecar_nginx_conf() -> String {
    stock_nginx_conf("/run/nginx/nginx.pid", "worker_shutdown_timeout 4s;\n")
}

/// lameduck at `path` running nginx, as the wrapper and init-install examples spell it out.
fn lameduck_command(path: &str) -> Vec<&str> {
    let mut command = vec![path];
    command.extend(DRAIN_FLAGS);
    command.extend(["--ready-check=tcp://127.0.0.1:80", "--"]);
    command
}

/// The backend that stays up: host nginx under lameduck, as in tests/zero_downtime.rs.
struct Steady {
    /// Kept for its drop, which stops it.
    _run: Lameduck,
    endpoints: SocketAddr,
    /// Dropped after `_run`, so nginx is gone before its folder is removed.
    config: NginxConfig,
}

impl Steady {
    fn start(test: &str, addr: SocketAddr, endpoints: SocketAddr) -> Self {
        let config = NginxConfig::new(&format!("ct-{test}-steady"), addr);
        let run = Lameduck::start(Mode::Pid1, &config.under_lameduck(endpoints, &[]));
        assert_eq!(run.ready_within(STARTUP), endpoints, "the steady backend");
        Steady {
            _run: run,
            endpoints,
            config,
        }
    }
}

/// Puts `pod` behind HAProxy beside a steady backend, deletes it as the kubelet does under load,
/// and asserts what every shape must show: no request failed, the pod served before its deletion
/// and had requests in flight when it began, and the steady backend went on serving after the
/// pod was gone.
fn delete_under_load(test: &str, ip: Ipv4Addr, pod: &Pod, grace: Duration) -> Termination {
    assert!(
        wait_ready(
            &[(pod.addr(LAMEDUCK), "/readyz"), (pod.addr(HTTP), "/fast")],
            STARTUP
        ),
        "the pod never became ready:\n{}",
        pod.logs()
    );
    // Picked once the pod's published ports are bound, so none of these can be one of them.
    let [steady_addr, steady_endpoints, listen] = addrs(ip);
    let steady = Steady::start(test, steady_addr, steady_endpoints);
    let servers = [
        Server::new("pod", pod.addr(HTTP), pod.addr(LAMEDUCK)),
        Server::new("steady", steady.config.addr, steady.endpoints),
    ];
    let haproxy = Haproxy::start(&format!("ct-{test}"), listen, "/readyz", &servers);
    haproxy.expect_all_up(STARTUP);

    let (report, termination) = under_load(haproxy.addr, WORKERS, Connections::PerRequest, || {
        kubelet::terminate(pod, grace)
    });

    let context = || {
        let load = load_context(&report, termination.began, "the deletion", &haproxy);
        format!("{load}\n{}", termination.summary())
    };
    assert_none_failed(&report, &context);
    assert_served_across(&report, "pod", termination.began, &context);
    let gone = termination
        .containers
        .iter()
        .map(|c| c.exited)
        .max()
        .expect("a container");
    assert!(
        report.served_after("steady", gone),
        "the steady backend served nothing after the pod was gone: {}",
        context()
    );
    termination
}

/// The wrapper and init-install shapes: lameduck is nginx's PID 1, `lameduck prestop` run in
/// the container held the kubelet's exec hook for the shutdown delay and sent nginx QUIT, and nginx finished in-flight
/// requests and exited 0 soon after, well inside the grace period.
fn assert_drained_inside_the_hook(termination: &Termination, name: &str) {
    let context = termination.summary();
    let container = termination.container(name);
    let hook = container.hook.as_ref().expect("a preStop hook");
    assert_eq!(hook.outcome, Ok(0), "{context}");
    assert!(hook.took >= DELAY, "the hook held for the delay: {context}");
    assert_clean_exit(container, &context);
    let took = container.exited - termination.began;
    assert!(
        took >= DELAY && took <= DELAY + SLOW + SLACK,
        "{name} exited {took:?} after its deletion began: {context}"
    );
    assert_eq!(
        quit_sender(&container.log),
        Some(1),
        "lameduck, PID 1, sent nginx QUIT: {context}"
    );
}

/// Exit 0 by itself: no SIGKILL from the kubelet, and none from lameduck (which exits 137 when
/// it has to kill nginx, as nginx does when the sidecar kills it).
fn assert_clean_exit(container: &kubelet::Stopped, context: &str) {
    let name = &container.name;
    assert!(
        !container.killed,
        "{name} needed the kubelet's SIGKILL: {context}"
    );
    assert_eq!(container.exit_code, 0, "{name}: {context}");
}

/// Who sent nginx its QUIT, as its master logs it: `signal 3 (SIGQUIT) received from PID`, the
/// sender's pid in nginx's PID namespace. None when the sender is outside that namespace (then
/// nginx logs no pid: a `docker kill`, the kubelet's stop signal) or there was no QUIT.
fn quit_sender(log: &str) -> Option<u32> {
    log.lines().find_map(|line| {
        let (_, rest) = line.split_once("signal 3 (SIGQUIT) received from ")?;
        rest.split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    })
}

/// The seed's plain two-replica nginx Deployment (tests/manifests/inject/nginx-plain.yaml) as
/// JSON, read with PyYAML, changed by `edit` before inject sees it.
fn plain_nginx_deployment(edit: impl FnOnce(&mut serde_json::Value)) -> serde_json::Value {
    let file = workspace().join("tests/manifests/inject/nginx-plain.yaml");
    let mut deployment = kubernetes::objects(&file).remove(0);
    assert_eq!(deployment["kind"], "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    edit(&mut deployment);
    deployment
}

/// Runs the built `kubectl lameduck inject` on a JSON manifest (JSON in, JSON out), with the
/// drain numbers every pod of these tests uses.
fn inject(test: &str, manifest: &serde_json::Value, flags: &[&str]) -> serde_json::Value {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("containers-inject");
    std::fs::create_dir_all(&dir).expect("a directory");
    let file = dir.join(format!("{test}.json"));
    std::fs::write(&file, manifest.to_string()).expect("the manifest");
    let mut command = std::process::Command::new(plugin());
    command
        .args(["inject", "--shutdown-delay=2s", "--drain-timeout=5s"])
        .args(flags)
        .arg(&file);
    let ran = run(&mut command, b"", Duration::from_secs(60));
    assert!(ran.ok(), "{}", ran.describe());
    serde_json::from_str(&ran.stdout).expect("inject prints JSON for JSON")
}

/// The pod an injected Deployment runs, built as the kubelet builds it from the template:
/// images by name (the manifests' `lameduck`, `nginx` and `lameduck-nginx` are the test's),
/// emptyDir mounts, exec-free httpGet hooks, init containers and native sidecars in order.
fn pod_of(name: &str, ip: Ipv4Addr, deployment: &serde_json::Value) -> (Pod, Duration) {
    use serde_json::Value;
    let images = images();
    let spec = &deployment["spec"]["template"]["spec"];
    let strings = |value: &Value| -> Option<Vec<String>> {
        value.as_array().map(|items| {
            items
                .iter()
                .map(|s| s.as_str().expect("a string").to_owned())
                .collect()
        })
    };
    let container = |c: &Value| {
        let image = c["image"].as_str().expect("an image");
        let image = match image.split(':').next() {
            Some("lameduck") => &images.lameduck,
            Some("nginx") => &images.nginx,
            Some("lameduck-nginx") => &images.wrapper,
            _ => panic!("no test image stands for {image}"),
        };
        let mut built = ContainerSpec::new(c["name"].as_str().expect("a name"), image);
        if let Some(command) = strings(&c["command"]) {
            built = built.command(&command.iter().map(String::as_str).collect::<Vec<_>>());
        }
        if let Some(args) = strings(&c["args"]) {
            built = built.args(&args.iter().map(String::as_str).collect::<Vec<_>>());
        }
        for mount in c["volumeMounts"].as_array().into_iter().flatten() {
            let volume = mount["name"].as_str().expect("a volume");
            let is_empty_dir = spec["volumes"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|v| v["name"] == volume && v.get("emptyDir").is_some());
            assert!(is_empty_dir, "only emptyDir volumes are modelled: {volume}");
            built = built.empty_dir(
                volume,
                mount["mountPath"].as_str().expect("a path"),
                mount["readOnly"] == true,
            );
        }
        let hook = &c["lifecycle"]["preStop"];
        if let Some(get) = hook.get("httpGet") {
            let port = get["port"].as_u64().expect("the hook's port by number");
            built = built.pre_stop_http_get(port as u16, get["path"].as_str().expect("a path"));
        } else if let Some(command) = strings(&hook["exec"]["command"]) {
            built = built.pre_stop_exec(&command.iter().map(String::as_str).collect::<Vec<_>>());
        } else {
            assert!(
                hook.is_null(),
                "a preStop hook this model cannot run: {hook}"
            );
        }
        built
    };
    let mut pod = PodSpec::new(name, ip).port(HTTP).port(LAMEDUCK);
    // Every other port a container declares (the drain proxy's), which the pod IP serves too.
    let mut published = vec![HTTP, LAMEDUCK];
    let declared = ["initContainers", "containers"]
        .iter()
        .flat_map(|list| spec[list].as_array().into_iter().flatten())
        .flat_map(|c| c["ports"].as_array().into_iter().flatten())
        .filter_map(|p| p["containerPort"].as_u64());
    for port in declared {
        let port = u16::try_from(port).expect("a port number");
        if !published.contains(&port) {
            published.push(port);
            pod = pod.port(port);
        }
    }
    if spec["shareProcessNamespace"] == true {
        pod = pod.share_process_namespace();
    }
    for init in spec["initContainers"].as_array().into_iter().flatten() {
        pod = if init["restartPolicy"] == "Always" {
            pod.sidecar(container(init))
        } else {
            pod.init_container(container(init))
        };
    }
    for main in spec["containers"].as_array().expect("containers") {
        pod = pod.container(container(main));
    }
    let grace = spec["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
    (pod.start(), Duration::from_secs(grace))
}

#[test]
fn plain_nginx_deployment_injected_in_the_install_shape_is_deleted_under_load_without_failing_a_request()
 {
    let ip = Ipv4Addr::new(127, 0, 63, 11);
    let injected = inject(
        "install",
        &plain_nginx_deployment(|_| {}),
        &["--shape=install"],
    );
    let (pod, _grace) = pod_of("inject-install", ip, &injected);
    let termination = delete_under_load("inject-install", ip, &pod, GRACE);
    assert_drained_inside_the_hook(&termination, "nginx");
}

#[test]
fn plain_nginx_deployment_injected_in_the_wrapper_shape_is_deleted_under_load_without_failing_a_request()
 {
    let ip = Ipv4Addr::new(127, 0, 63, 12);
    // The same Deployment on the image that contains lameduck.
    let manifest = plain_nginx_deployment(|d| {
        d["spec"]["template"]["spec"]["containers"][0]["image"] = "lameduck-nginx:0.1.0".into();
    });
    let injected = inject("wrapper", &manifest, &["--wrapper-image=lameduck-nginx"]);
    let command = &injected["spec"]["template"]["spec"]["containers"][0]["command"];
    assert_eq!(
        command[0], "/lameduck",
        "auto chose the wrapper shape: {command}"
    );
    let (pod, _grace) = pod_of("inject-wrapper", ip, &injected);
    let termination = delete_under_load("inject-wrapper", ip, &pod, GRACE);
    assert_drained_inside_the_hook(&termination, "nginx");
}

#[test]
fn plain_nginx_deployment_injected_in_the_sidecar_shape_is_deleted_under_load_without_failing_a_request()
 {
    let ip = Ipv4Addr::new(127, 0, 63, 13);
    // The same Deployment relying on the image's own entrypoint: auto chooses the sidecar.
    let manifest = plain_nginx_deployment(|d| {
        d["spec"]["template"]["spec"]["containers"][0]
            .as_object_mut()
            .expect("a container")
            .remove("command");
    });
    let injected = inject("sidecar", &manifest, &[]);
    assert_eq!(
        injected["spec"]["template"]["spec"]["shareProcessNamespace"],
        true
    );
    let (pod, _grace) = pod_of("inject-sidecar", ip, &injected);
    let termination = delete_under_load("inject-sidecar", ip, &pod, GRACE);
    let context = termination.summary();
    let nginx = termination.container("nginx");
    let hook = nginx.hook.as_ref().expect("nginx has a preStop hook");
    assert_eq!(hook.outcome, Ok(0), "{context}");
    assert!(hook.took >= DELAY, "the hook held for the delay: {context}");
    assert_clean_exit(nginx, &context);
    let sender = quit_sender(&nginx.log);
    assert!(
        sender.is_some_and(|pid| pid > 1),
        "the sidecar sent nginx its QUIT, not {sender:?}: {context}"
    );
}

#[test]
fn plain_nginx_deployment_injected_with_the_proxy_in_the_install_shape_moves_a_kept_alive_client_off_before_nginx_stops()
 {
    let ip = Ipv4Addr::new(127, 0, 63, 14);
    let injected = inject(
        "install-proxy",
        &plain_nginx_deployment(|_| {}),
        &["--shape=install", "--proxy"],
    );
    let command = &injected["spec"]["template"]["spec"]["containers"][0]["command"];
    let route = format!("--proxy=0.0.0.0:{PROXY}=127.0.0.1:{HTTP}");
    assert!(
        command
            .as_array()
            .is_some_and(|words| words.iter().any(|w| *w == *route)),
        "the installed lameduck runs the proxy: {command}"
    );
    let (pod, _grace) = pod_of("inject-install-proxy", ip, &injected);
    assert!(
        wait_ready(
            &[(pod.addr(LAMEDUCK), "/readyz"), (pod.addr(PROXY), "/fast")],
            STARTUP
        ),
        "the pod never became ready through the proxy:\n{}",
        pod.logs()
    );
    // The Service's client, its connection pinned to this pod as kube-proxy pins it.
    let client = kept_alive_client(pod.addr(PROXY));
    std::thread::sleep(STEADY);
    let termination = kubelet::terminate(&pod, GRACE);
    let (requests, ended) = client.join().expect("the client thread");

    let context = format!(
        "times in ms from the deletion: {:#?}\n{}",
        requests
            .iter()
            .map(|r| (
                r.end
                    .saturating_duration_since(termination.began)
                    .as_millis(),
                &r.outcome
            ))
            .collect::<Vec<_>>(),
        termination.summary()
    );
    let last = requests.last().expect("a request");
    assert_eq!(
        last.outcome,
        Ok((200, 3, true)),
        "the client was not told Connection: close: {context}"
    );
    assert!(
        last.end > termination.began,
        "the close came before the deletion: {context}"
    );
    assert_eq!(
        ended,
        Ok(()),
        "the connection did not end cleanly after the close: {context}"
    );
    let failed: Vec<_> = requests
        .iter()
        .filter(|r| !matches!(r.outcome, Ok((200, 3, _))))
        .collect();
    assert!(failed.is_empty(), "requests failed: {context}");
    assert!(
        requests.iter().any(|r| r.end < termination.began),
        "the proxy served nothing before the deletion: {context}"
    );
    let nginx = termination.container("nginx");
    // The line that ends the delay early, when nothing is left on the proxy: the client left
    // before nginx had its QUIT.
    let drained = nginx
        .log
        .lines()
        .find(|l| l.contains("the proxy moved every client off"))
        .unwrap_or_else(|| panic!("no line says the proxy drained: {context}"));
    assert!(
        drained.split_whitespace().any(|w| w == "moved_off=1"),
        "{drained}\n{context}"
    );
    let hook = nginx.hook.as_ref().expect("a preStop hook");
    assert_eq!(hook.outcome, Ok(0), "{context}");
    assert_clean_exit(nginx, &context);
    assert_eq!(
        quit_sender(&nginx.log),
        Some(1),
        "lameduck, PID 1, sent nginx QUIT: {context}"
    );
}

/// One request of `kept_alive_client`, as it saw it.
#[derive(Debug)]
struct KeptAliveRequest {
    end: Instant,
    /// The status, the body's length and whether the answer said `Connection: close`; or why
    /// there was no whole answer.
    outcome: Result<(u16, usize, bool), String>,
}

/// A client that sends `GET /fast` every 20 ms on one kept-alive connection to `addr` (hyper's
/// HTTP/1.1 client) until an answer says `Connection: close` or a request fails, at most 1,000
/// requests and 30 s; then it leaves, as a client whose Service sends its next connection to
/// another pod. Gives its requests, and how the connection ended: Ok when the server closed it
/// cleanly within 3 s of the last answer.
fn kept_alive_client(
    addr: SocketAddr,
) -> std::thread::JoinHandle<(Vec<KeptAliveRequest>, Result<(), String>)> {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .expect("connect to the proxy");
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .expect("HTTP/1.1 handshake");
            let connection = tokio::spawn(connection);
            let deadline = Instant::now() + Duration::from_secs(30);
            let mut requests = Vec::new();
            while requests.len() < 1_000 && Instant::now() < deadline {
                let outcome = async {
                    sender.ready().await.map_err(|e| e.to_string())?;
                    let request = hyper::Request::get("/fast")
                        .header(hyper::header::HOST, addr.to_string())
                        .body(Empty::<Bytes>::new())
                        .expect("request");
                    let response =
                        tokio::time::timeout(Duration::from_secs(5), sender.send_request(request))
                            .await
                            .map_err(|_| "no answer within 5s".to_owned())?
                            .map_err(|e| e.to_string())?;
                    let status = response.status().as_u16();
                    let close = response
                        .headers()
                        .get(hyper::header::CONNECTION)
                        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                    let body = response
                        .into_body()
                        .collect()
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok((status, body.to_bytes().len(), close))
                }
                .await;
                let leaves = !matches!(outcome, Ok((_, _, false)));
                requests.push(KeptAliveRequest {
                    end: Instant::now(),
                    outcome,
                });
                if leaves {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let ended = match tokio::time::timeout(Duration::from_secs(3), connection).await {
                Ok(Ok(closed)) => closed.map_err(|e| e.to_string()),
                Ok(Err(panicked)) => Err(panicked.to_string()),
                Err(_) => Err("still open 3s after the last answer".into()),
            };
            (requests, ended)
        })
    })
}
