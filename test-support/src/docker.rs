//! Real containers for the container tests: the docker CLI with a time limit on every call, the
//! images built once per test run the way README and the Dockerfiles' comments tell users to
//! (the lameduck scratch image, an nginx base imported from this machine's own nginx package in
//! place of the registry's, the nginx + lameduck wrapper image, a pause image), and pods modelled
//! as the kubelet builds them: a pause container holding the network (and, with
//! `shareProcessNamespace`, the PID) namespace, emptyDir volumes, init containers run to
//! completion, native sidecars, then the main containers. Everything is named after this test
//! process (`lameduck-ct-<pid>-...`) and removed by guards: pods and containers on drop, the
//! images when the test process exits, pass or fail.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::binaries::{static_build, workspace};
use crate::network::free_addrs;
use crate::process::{run, wait_until};
use crate::scenario::{SLOW_BYTES, SLOW_RATE};
use crate::temp::TempDir;

/// Upper bound on any docker command but a build.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Upper bound on one image build or import (the layers are small; this is for a slow disk).
const BUILD_TIMEOUT: Duration = Duration::from_secs(180);
/// How long an init container may take to run to completion.
const INIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Where the Debian package puts nginx, the binary the imported base is made of.
const NGINX_BINARY: &str = "/usr/sbin/nginx";

/// The prefix of every container, volume and image tag this test process makes.
fn run_prefix() -> String {
    format!("lameduck-ct-{}", std::process::id())
}

/// `docker ARGS` within `timeout`: stdout and stderr, or an error that quotes both.
fn docker_output(timeout: Duration, args: &[&str]) -> Result<(String, String), String> {
    let ran = run(Command::new("docker").args(args), b"", timeout);
    if ran.ok() {
        Ok((ran.stdout, ran.stderr))
    } else {
        Err(ran.describe())
    }
}

/// `docker ARGS` within the usual time limit: its stdout, trimmed.
pub fn docker(args: &[&str]) -> Result<String, String> {
    docker_output(COMMAND_TIMEOUT, args).map(|(stdout, _)| stdout.trim().to_owned())
}

/// `docker ARGS`, which must succeed.
fn docker_ok(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Fails the test, with the reason, when there is no usable Docker: CI has Docker, so a missing
/// one is a broken machine, not a reason to skip.
fn require_docker() {
    if let Err(e) = docker(&["info", "--format", "{{.ServerVersion}}"]) {
        panic!(
            "the container tests need a running Docker Engine and `docker info` failed; \
             they fail rather than skip, since CI has Docker:\n{e}"
        );
    }
}

/// Image tags this test process made, removed (newest first, so children go before their
/// parents) on drop, which is how a failed build cleans up, or by `remove_images_at_exit`.
struct Tags(Mutex<Vec<String>>);

impl Tags {
    fn add(&self, tag: &str) {
        self.0.lock().expect("tags lock").push(tag.to_owned());
    }

    fn remove_all(&self) {
        let mut tags = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        if tags.is_empty() {
            return;
        }
        tags.reverse();
        let mut args = vec!["rmi"];
        args.extend(tags.iter().map(String::as_str));
        let _ = docker(&args);
    }
}

impl Drop for Tags {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// The images every container test runs, tagged `lameduck-ct-<pid>:<name>`.
pub struct Images {
    /// images/Dockerfile: nothing but the static /lameduck, FROM scratch.
    pub lameduck: String,
    /// The stand-in for the registry's nginx: this machine's nginx with its shared libraries,
    /// made with `docker import`, configured like the official image (`nginx -g 'daemon off;'`,
    /// `STOPSIGNAL SIGQUIT`, `user nginx`, logs to stdout/stderr), serving the load's /slow.
    pub nginx: String,
    /// images/nginx.Dockerfile over the two: lameduck as ENTRYPOINT, nginx as its child.
    pub wrapper: String,
    /// The pod sandbox: lameduck as PID 1 (so orphans in a shared PID namespace are reaped, as
    /// the real pause does) over the static fixture app sleeping until signalled.
    pub pause: String,
    tags: Tags,
}

static IMAGES: OnceLock<Images> = OnceLock::new();

/// The images, built on first use by whichever test comes first; the others wait for them.
pub fn images() -> &'static Images {
    IMAGES.get_or_init(|| {
        let images = Images::build();
        // A static is never dropped: remove the tags when the test process exits instead, as
        // libtest ends by `exit` whether tests passed or failed.
        // SAFETY: registers a plain function with no arguments, which libc calls once at exit.
        let registered = unsafe { libc::atexit(remove_images_at_exit) };
        assert_eq!(registered, 0, "cannot register the image cleanup");
        images
    })
}

extern "C" fn remove_images_at_exit() {
    if let Some(images) = IMAGES.get() {
        images.tags.remove_all();
    }
}

impl Images {
    fn build() -> Self {
        require_docker();
        let prefix = run_prefix();
        let tag = |name: &str| format!("{prefix}:{name}");
        let images = Images {
            lameduck: tag("lameduck"),
            nginx: tag("nginx"),
            wrapper: tag("nginx-lameduck"),
            pause: tag("pause"),
            tags: Tags(Mutex::new(Vec::new())),
        };
        let (lameduck, fixture) = static_build();
        let root = workspace();
        let staging = TempDir::new("ct-images");

        // The build context holds the binary alone: cargo's output folder, which the
        // Dockerfile's comment names, holds hundreds of MB of build artefacts to send along.
        let context = staging.sub("lameduck");
        std::fs::copy(&lameduck, context.join("lameduck")).expect("stage lameduck");
        images.build_image(
            &images.lameduck,
            &root.join("images/Dockerfile"),
            &context,
            &[],
        );

        let rootfs_tag = tag("nginx-rootfs");
        images.import_nginx_rootfs(&rootfs_tag, &staging);
        // `docker import --change` takes no STOPSIGNAL: one build step adds it.
        let context = staging.sub("nginx");
        std::fs::write(
            context.join("Dockerfile"),
            format!("FROM {rootfs_tag}\nSTOPSIGNAL SIGQUIT\n"),
        )
        .expect("nginx Dockerfile");
        images.build_image(&images.nginx, &context.join("Dockerfile"), &context, &[]);

        // As images/nginx.Dockerfile says to build it, with the local images as its bases.
        let lameduck_arg = format!("LAMEDUCK_IMAGE={}", images.lameduck);
        let nginx_arg = format!("NGINX_IMAGE={}", images.nginx);
        images.build_image(
            &images.wrapper,
            &root.join("images/nginx.Dockerfile"),
            &root.join("images"),
            &[&lameduck_arg, &nginx_arg],
        );

        let context = staging.sub("pause");
        std::fs::copy(&fixture, context.join("pause")).expect("stage the pause app");
        std::fs::write(
            context.join("Dockerfile"),
            format!(
                r#"FROM {}
COPY pause /pause
ENTRYPOINT ["/lameduck", "--listen", "127.0.0.1:0", "--", \
            "/pause", "signals", "--exit-on", "TERM,INT"]
"#,
                images.lameduck
            ),
        )
        .expect("pause Dockerfile");
        images.build_image(&images.pause, &context.join("Dockerfile"), &context, &[]);
        images
    }

    /// `docker build`, recording the tag for removal before it can exist.
    fn build_image(&self, tag: &str, dockerfile: &Path, context: &Path, build_args: &[&str]) {
        self.tags.add(tag);
        let dockerfile = dockerfile.display().to_string();
        let context = context.display().to_string();
        let mut args = vec!["build", "--force-rm", "-f", &dockerfile, "-t", tag];
        for arg in build_args {
            args.extend(["--build-arg", arg]);
        }
        args.push(&context);
        if let Err(e) = docker_output(BUILD_TIMEOUT, &args) {
            panic!("cannot build {tag}: {e}");
        }
    }

    /// Imports a root filesystem holding this machine's nginx, just what it needs to run: the
    /// binary, the shared libraries `ldd` names (at the same paths, so the dynamic loader finds
    /// them without a cache), passwd and group entries for its `nginx` worker user, its config,
    /// the folders it writes to, and the content the load asks for; with the official image's
    /// command, PATH and port.
    fn import_nginx_rootfs(&self, tag: &str, staging: &TempDir) {
        let rootfs = staging.sub("nginx-rootfs");
        let put = |path: &str, contents: &[u8]| {
            let target = rootfs.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(target.parent().expect("parent")).expect("rootfs dir");
            std::fs::write(target, contents).expect("rootfs file");
        };
        let copy = |path: &str| {
            let target = rootfs.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(target.parent().expect("parent")).expect("rootfs dir");
            // Follows symlinks: the image gets the library itself under the name ldd printed.
            std::fs::copy(path, &target)
                .unwrap_or_else(|e| panic!("copy {path} into the nginx base: {e}"));
        };
        assert!(
            Path::new(NGINX_BINARY).exists(),
            "the nginx base is made of Debian's nginx package, and {NGINX_BINARY} is missing"
        );
        copy(NGINX_BINARY);
        let ldd = Command::new("ldd")
            .arg(NGINX_BINARY)
            .output()
            .expect("run ldd");
        let ldd = String::from_utf8_lossy(&ldd.stdout);
        let libraries: Vec<&str> = ldd
            .lines()
            .filter_map(|line| line.split_whitespace().find(|w| w.starts_with('/')))
            .collect();
        assert!(
            libraries.iter().any(|l| l.contains("ld-linux")),
            "no dynamic loader in ldd's answer:\n{ldd}"
        );
        for library in libraries {
            copy(library);
        }
        copy("/etc/nginx/mime.types");
        put(
            "/etc/passwd",
            b"root:x:0:0:root:/root:/sbin/nologin\n\
              nginx:x:101:101:nginx:/nonexistent:/sbin/nologin\n",
        );
        put("/etc/group", b"root:x:0:\nnginx:x:101:\n");
        put(
            "/etc/nginx/nginx.conf",
            stock_nginx_conf("/run/nginx.pid", "").as_bytes(),
        );
        put(
            "/etc/nginx/conf.d/default.conf",
            format!(
                "server {{
    listen 80;
    root /usr/share/nginx/html;
    # As in the tests' own nginx; without sendfile, which would send the file in one go
    # and only then wait out the rate.
    location = /slow {{
        limit_rate {SLOW_RATE};
        sendfile off;
    }}
}}
"
            )
            .as_bytes(),
        );
        put("/usr/share/nginx/html/slow", &vec![b'x'; SLOW_BYTES]);
        put("/usr/share/nginx/html/fast", b"ok\n");
        // Debian's build keeps its temp files under /var/lib/nginx and writes the pid to /run.
        for dir in ["var/lib/nginx", "run", "var/log/nginx"] {
            std::fs::create_dir_all(rootfs.join(dir)).expect("rootfs dir");
        }
        // As in the official image: the logs are the container's output.
        for (log, stream) in [("access.log", "/dev/stdout"), ("error.log", "/dev/stderr")] {
            std::os::unix::fs::symlink(stream, rootfs.join("var/log/nginx").join(log))
                .expect("log symlink");
        }
        let tarball = staging.path().join("nginx-rootfs.tar");
        let tar = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tarball)
            .arg(".")
            .output()
            .expect("run tar");
        assert!(tar.status.success(), "tar: {tar:?}");
        self.tags.add(tag);
        let tarball = tarball.display().to_string();
        // The rest of the official image's configuration; every Dockerfile instruction would
        // cost a build step, and a second or so each.
        let import = [
            "import",
            "--change",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change",
            "EXPOSE 80",
            "--change",
            r#"CMD ["nginx", "-g", "daemon off;"]"#,
            &tarball,
            tag,
        ];
        if let Err(e) = docker_output(BUILD_TIMEOUT, &import) {
            panic!("cannot import the nginx base: {e}");
        }
    }
}

/// The official nginx image's nginx.conf, with one worker to spare the test machine's cores,
/// its pid file at `pid` and `main` added to its main context (a ConfigMap's changes to it).
pub fn stock_nginx_conf(pid: &str, main: &str) -> String {
    format!(
        "user nginx;
worker_processes 1;
error_log /var/log/nginx/error.log notice;
pid {pid};
{main}events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log /var/log/nginx/access.log;
    sendfile on;
    keepalive_timeout 65;
    include /etc/nginx/conf.d/*.conf;
}}
"
    )
}

/// What a container is in its pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `initContainers[]`: runs to completion before the next one starts.
    Init,
    /// `initContainers[]` with `restartPolicy: Always`: a native sidecar, started before the
    /// main containers and stopped after them.
    Sidecar,
    /// `containers[]`.
    Main,
}

/// A docker container this test made, killed and removed on drop.
pub struct Container {
    /// Its name in the pod spec (`nginx`, ...).
    pub name: String,
    /// The docker container's name.
    pub id: String,
    /// What it is in its pod (`Main` for the pause container and for a container outside any
    /// pod: neither is ever stopped by the kubelet driver).
    pub kind: Kind,
    /// Its preStop hook, if it has one.
    pub pre_stop: Option<PreStop>,
}

/// A container's `lifecycle.preStop`, as the kubelet runs it.
#[derive(Clone, Debug)]
pub enum PreStop {
    /// `httpGet`: the host address the pod publishes the hook's port on, and the path.
    HttpGet(SocketAddr, String),
    /// `exec`: a command run inside the container (`docker exec`, the container's namespaces).
    Exec(Vec<String>),
}

/// A preStop hook in a pod spec, its port not yet resolved.
#[derive(Clone, Debug)]
enum HookSpec {
    HttpGet(u16, String),
    Exec(Vec<String>),
}

impl Container {
    /// `docker run -d --name <prefix>-<name> ARGS`: a container outside any pod.
    pub fn run(name: &str, args: &[&str]) -> Self {
        let container = Container {
            name: name.to_owned(),
            id: format!("{}-{name}", run_prefix()),
            kind: Kind::Main,
            pre_stop: None,
        };
        let mut all = vec!["run", "-d", "--name", &container.id];
        all.extend(args);
        docker_ok(&all);
        container
    }

    /// Its output so far, stdout then stderr.
    pub fn logs(&self) -> String {
        match docker_output(COMMAND_TIMEOUT, &["logs", &self.id]) {
            Ok((stdout, stderr)) => format!("{stdout}{stderr}"),
            Err(e) => e,
        }
    }

    /// `docker inspect -f FORMAT`.
    fn inspect(&self, format: &str) -> String {
        docker_ok(&["inspect", "-f", format, &self.id])
    }

    /// The exit code docker recorded.
    pub fn exit_code(&self) -> i32 {
        let code = self.inspect("{{.State.ExitCode}}");
        code.parse()
            .unwrap_or_else(|_| panic!("exit code of {}: {code:?}", self.id))
    }

    /// The signal that stops it: the image's STOPSIGNAL, SIGTERM when it has none.
    pub fn stop_signal(&self) -> String {
        let signal = self.inspect("{{.Config.StopSignal}}");
        if signal.is_empty() {
            "SIGTERM".into()
        } else {
            signal
        }
    }

    /// `docker kill --signal SIGNAL`: false when it had exited already.
    pub fn kill(&self, signal: &str) -> bool {
        match docker(&["kill", "--signal", signal, &self.id]) {
            Ok(_) => true,
            Err(e) if e.contains("is not running") => false,
            Err(e) => panic!("{e}"),
        }
    }

    /// Watches for its exit from now on.
    pub fn watch_exit(&self) -> ExitWatch {
        let child = Command::new("docker")
            .args(["wait", &self.id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker wait");
        ExitWatch {
            child,
            container: self.id.clone(),
            exited: None,
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.id]);
    }
}

/// A `docker wait` on one container, started before the container is asked to stop, so its exit
/// is seen within milliseconds without polling docker.
pub struct ExitWatch {
    child: Child,
    container: String,
    exited: Option<Instant>,
}

impl ExitWatch {
    /// When the container exited, waiting up to `timeout`; None if it is still running.
    pub fn wait(&mut self, timeout: Duration) -> Option<Instant> {
        if self.exited.is_none() {
            let child = &mut self.child;
            let mut status = None;
            wait_until(timeout, || {
                status = child.try_wait().ok().flatten();
                status.is_some()
            });
            if let Some(status) = status {
                assert!(status.success(), "docker wait {}: {status}", self.container);
                self.exited = Some(Instant::now());
            }
        }
        self.exited
    }
}

impl Drop for ExitWatch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A docker volume standing for an emptyDir, removed on drop.
struct Volume(String);

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = docker(&["volume", "rm", "-f", &self.0]);
    }
}

/// What a container mounts.
enum Mount {
    /// The pod's emptyDir `volume` at `path`.
    EmptyDir {
        volume: String,
        path: String,
        read_only: bool,
    },
    /// A ConfigMap key mounted with `subPath`, read-only: one file.
    ConfigFile { path: String, contents: String },
}

/// One container of a pod spec.
pub struct ContainerSpec {
    name: String,
    image: String,
    command: Option<Vec<String>>,
    args: Option<Vec<String>>,
    mounts: Vec<Mount>,
    pre_stop: Option<HookSpec>,
}

impl ContainerSpec {
    /// A container running `image` with its own entrypoint and command.
    pub fn new(name: &str, image: &str) -> Self {
        ContainerSpec {
            name: name.to_owned(),
            image: image.to_owned(),
            command: None,
            args: None,
            mounts: Vec::new(),
            pre_stop: None,
        }
    }

    /// `command:`, which replaces the image's ENTRYPOINT (and, without `args`, its CMD).
    pub fn command(mut self, argv: &[&str]) -> Self {
        self.command = Some(argv.iter().map(|a| a.to_string()).collect());
        self
    }

    /// `args:`, which replaces the image's CMD.
    pub fn args(mut self, argv: &[&str]) -> Self {
        self.args = Some(argv.iter().map(|a| a.to_string()).collect());
        self
    }

    /// Mounts the pod's emptyDir `volume` at `path`.
    pub fn empty_dir(mut self, volume: &str, path: &str, read_only: bool) -> Self {
        self.mounts.push(Mount::EmptyDir {
            volume: volume.to_owned(),
            path: path.to_owned(),
            read_only,
        });
        self
    }

    /// Mounts a ConfigMap key holding `contents` as the file `path` (a `subPath` mount).
    pub fn config_file(mut self, path: &str, contents: &str) -> Self {
        self.mounts.push(Mount::ConfigFile {
            path: path.to_owned(),
            contents: contents.to_owned(),
        });
        self
    }

    /// `lifecycle.preStop.httpGet` on the pod's `port` (by number) and `path`.
    pub fn pre_stop_http_get(mut self, port: u16, path: &str) -> Self {
        self.pre_stop = Some(HookSpec::HttpGet(port, path.to_owned()));
        self
    }

    /// `lifecycle.preStop.exec` with this command.
    pub fn pre_stop_exec(mut self, argv: &[&str]) -> Self {
        self.pre_stop = Some(HookSpec::Exec(argv.iter().map(|a| a.to_string()).collect()));
        self
    }
}

/// A pod spec: what `Pod::start` runs.
pub struct PodSpec {
    name: String,
    ip: Ipv4Addr,
    ports: Vec<u16>,
    share_process_namespace: bool,
    init_containers: Vec<(ContainerSpec, Kind)>,
    containers: Vec<ContainerSpec>,
}

impl PodSpec {
    /// An empty pod named `name` whose ports are published on the loopback address `ip`.
    pub fn new(name: &str, ip: Ipv4Addr) -> Self {
        PodSpec {
            name: name.to_owned(),
            ip,
            ports: Vec::new(),
            share_process_namespace: false,
            init_containers: Vec::new(),
            containers: Vec::new(),
        }
    }

    /// A container port the test (standing for the load balancer and the kubelet) reaches on
    /// the pod IP: published on the pause container, on the pod's loopback address only.
    pub fn port(mut self, port: u16) -> Self {
        self.ports.push(port);
        self
    }

    /// `shareProcessNamespace: true`: every container joins the pause container's PID namespace.
    pub fn share_process_namespace(mut self) -> Self {
        self.share_process_namespace = true;
        self
    }

    /// An init container, run to completion (exit 0) before the next one starts.
    pub fn init_container(mut self, container: ContainerSpec) -> Self {
        self.init_containers.push((container, Kind::Init));
        self
    }

    /// A native sidecar: an init container with `restartPolicy: Always`.
    pub fn sidecar(mut self, container: ContainerSpec) -> Self {
        self.init_containers.push((container, Kind::Sidecar));
        self
    }

    /// A main container.
    pub fn container(mut self, container: ContainerSpec) -> Self {
        self.containers.push(container);
        self
    }

    /// Starts the pod in the kubelet's order: the sandbox, each init container in turn (a
    /// native sidecar only has to be running), then the main containers.
    pub fn start(self) -> Pod {
        let prefix = format!("{}-{}", run_prefix(), self.name);
        // Every resource goes into `pod` as soon as it is named, so a failure half-way through
        // still removes it.
        let mut pod = Pod {
            containers: Vec::new(),
            pause: None,
            volumes: Vec::new(),
            files: TempDir::new(&format!("ct-{}", self.name)),
            ports: Vec::new(),
            prefix,
        };
        pod.start_pause(self.ip, &self.ports);
        for (spec, kind) in &self.init_containers {
            let container = pod.run(spec, *kind, self.share_process_namespace);
            if *kind == Kind::Init {
                let exited = container.watch_exit().wait(INIT_TIMEOUT);
                assert!(
                    exited.is_some(),
                    "init container {} did not finish within {INIT_TIMEOUT:?}:\n{}",
                    spec.name,
                    container.logs()
                );
                assert_eq!(
                    container.exit_code(),
                    0,
                    "init container {} failed:\n{}",
                    spec.name,
                    container.logs()
                );
            }
            pod.containers.push(container);
        }
        for spec in &self.containers {
            let container = pod.run(spec, Kind::Main, self.share_process_namespace);
            pod.containers.push(container);
        }
        pod
    }
}

/// A running pod, torn down on drop: its containers (last started first), then the pause
/// container, then its volumes and config files.
pub struct Pod {
    /// The init containers, sidecars and main containers, in the order they started.
    containers: Vec<Container>,
    pause: Option<Container>,
    volumes: Vec<Volume>,
    /// The ConfigMap files the containers mount.
    files: TempDir,
    /// Each published container port and the host address it is reached on.
    ports: Vec<(u16, SocketAddr)>,
    /// `lameduck-ct-<pid>-<pod name>`, the start of each of its resources' names.
    prefix: String,
}

impl Pod {
    /// The host address of a published container port, standing for `podIP:port`.
    pub fn addr(&self, port: u16) -> SocketAddr {
        self.ports
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, addr)| *addr)
            .unwrap_or_else(|| panic!("port {port} is not published"))
    }

    /// Its containers (not the pause container), in the order they started.
    pub fn containers(&self) -> &[Container] {
        &self.containers
    }

    /// Every container's output, for a failed assertion.
    pub fn logs(&self) -> String {
        self.pause
            .iter()
            .chain(&self.containers)
            .map(|c| format!("--- {} ---\n{}", c.name, c.logs()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn start_pause(&mut self, ip: Ipv4Addr, ports: &[u16]) {
        let pause = Container {
            name: "pause".into(),
            id: format!("{}-pause", self.prefix),
            kind: Kind::Main,
            pre_stop: None,
        };
        // One address for the pod: ports are picked on it, so parallel tests never collide.
        let host = free_addrs(ip, ports.len());
        self.ports = ports.iter().copied().zip(host).collect();
        let publish: Vec<String> = self
            .ports
            .iter()
            .map(|(port, addr)| format!("{}:{}:{port}", addr.ip(), addr.port()))
            .collect();
        let id = pause.id.clone();
        self.pause = Some(pause);
        let mut args = vec!["run", "-d", "--name", &id];
        for spec in &publish {
            args.extend(["-p", spec]);
        }
        args.push(&images().pause);
        docker(&args).unwrap_or_else(|e| panic!("cannot start the pause container {id}: {e}"));
    }

    /// `docker run -d` one container into the pod's namespaces, with its mounts.
    fn run(&mut self, spec: &ContainerSpec, kind: Kind, share_pid: bool) -> Container {
        let pre_stop = spec.pre_stop.as_ref().map(|hook| match hook {
            HookSpec::HttpGet(port, path) => PreStop::HttpGet(self.addr(*port), path.clone()),
            HookSpec::Exec(argv) => PreStop::Exec(argv.clone()),
        });
        let container = Container {
            name: spec.name.clone(),
            id: format!("{}-{}", self.prefix, spec.name),
            kind,
            pre_stop,
        };
        let pause = format!("container:{}-pause", self.prefix);
        let mut args: Vec<String> = ["run", "-d", "--name", &container.id, "--network", &pause]
            .map(String::from)
            .into();
        if share_pid {
            args.extend(["--pid".into(), pause.clone()]);
        }
        for (index, mount) in spec.mounts.iter().enumerate() {
            let mount = match mount {
                Mount::EmptyDir {
                    volume,
                    path,
                    read_only,
                } => {
                    let source = self.volume(volume);
                    // volume-nocopy: an emptyDir starts empty, whatever the image has there.
                    let ro = if *read_only { ",readonly" } else { "" };
                    format!("type=volume,src={source},dst={path},volume-nocopy{ro}")
                }
                Mount::ConfigFile { path, contents } => {
                    let file = self.files.path().join(format!("{}-{index}", spec.name));
                    std::fs::write(&file, contents).expect("config file");
                    format!("type=bind,src={},dst={path},readonly", file.display())
                }
            };
            args.extend(["--mount".into(), mount]);
        }
        // Kubernetes' command replaces the ENTRYPOINT and args the CMD; docker takes the new
        // entrypoint's first word alone and the rest after the image.
        let mut after_image = Vec::new();
        if let Some(command) = &spec.command {
            let (program, rest) = command.split_first().expect("a command");
            args.extend(["--entrypoint".into(), program.clone()]);
            after_image.extend(rest.iter().cloned());
        }
        args.push(spec.image.clone());
        after_image.extend(spec.args.iter().flatten().cloned());
        args.extend(after_image);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if let Err(e) = docker(&args) {
            drop(container);
            panic!("cannot start container {}: {e}\n{}", spec.name, self.logs());
        }
        container
    }

    /// The docker volume of the emptyDir `name`, created on first use.
    fn volume(&mut self, name: &str) -> String {
        let id = format!("{}-{name}", self.prefix);
        if !self.volumes.iter().any(|v| v.0 == id) {
            self.volumes.push(Volume(id.clone()));
            docker_ok(&["volume", "create", &id]);
        }
        id
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        while let Some(container) = self.containers.pop() {
            drop(container);
        }
        self.pause.take();
        self.volumes.clear();
    }
}
