//! The plugin's image (images/kubectl-lameduck.Dockerfile), built the way its comment says,
//! from scratch, runs `lint` on the shipped examples in a container with no network, as a
//! non-root user. Needs Docker: without it this test fails, it does not skip.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_owned()
}

fn run(program: &str, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .current_dir(root())
        .env_remove("RUSTFLAGS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin).unwrap();
    drop(input);
    child.wait_with_output().unwrap()
}

fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The image's tag, removed when the test ends however it ends.
struct Image(String);

impl Drop for Image {
    fn drop(&mut self) {
        let _ = run("docker", &["rmi", "-f", &self.0], b"");
    }
}

#[test]
fn the_scratch_image_lints_the_examples_without_network_or_root() {
    let built = run("scripts/build-static.sh", &["kubectl-lameduck"], b"");
    assert!(built.status.success(), "{}", describe(&built));
    let image = Image(format!("kubectl-lameduck-it-{}:test", std::process::id()));
    let docker_built = run(
        "docker",
        &[
            "build",
            "--force-rm",
            "-q",
            "-f",
            "images/kubectl-lameduck.Dockerfile",
            "-t",
            &image.0,
            "target/image-kubectl-lameduck",
        ],
        b"",
    );
    assert!(docker_built.status.success(), "{}", describe(&docker_built));

    let examples = root().join("examples");
    let mount = format!("{}:/examples:ro", examples.display());
    let mut args = vec![
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        &mount,
        &image.0,
        "lint",
    ];
    let files: Vec<String> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".yaml"))
        .map(|name| format!("/examples/{name}"))
        .collect();
    assert!(!files.is_empty(), "no manifests in {}", examples.display());
    args.extend(files.iter().map(String::as_str));
    let linted = run("docker", &args, b"");
    assert!(linted.status.success(), "{}", describe(&linted));

    // A shutdown delay longer than the default grace period of 30s: lint says error.
    let bad = b"{kind: Pod, metadata: {name: p}, spec: {containers: [{name: a, image: nginx, \
        command: [lameduck, --shutdown-delay=40s, --, nginx]}]}}";
    let args = [
        "run",
        "--rm",
        "-i",
        "--network",
        "none",
        &image.0,
        "lint",
        "-",
    ];
    let refused = run("docker", &args, bad);
    assert_eq!(refused.status.code(), Some(1), "{}", describe(&refused));

    let user = run(
        "docker",
        &["image", "inspect", "--format", "{{.Config.User}}", &image.0],
        b"",
    );
    assert_eq!(String::from_utf8_lossy(&user.stdout).trim(), "65532:65532");
}
