//! `lameduck install DIR`, the init-container mode: an atomic copy of the running binary into
//! a shared volume, and the static build that copy must be to run in any image.

use lameduck_test_support::binaries::{lameduck, static_build};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn temp_dir(label: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lameduck-install-{label}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn install(binary: &Path, dir: &Path) -> Output {
    Command::new(binary)
        .arg("install")
        .arg(dir)
        .output()
        .expect("run install")
}

fn one_line(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    stderr
}

#[test]
fn installs_an_executable_copy_of_itself() {
    let dir = temp_dir("copy");
    let output = install(&lameduck(), &dir);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let installed = dir.join("lameduck");
    let mode = std::fs::metadata(&installed)
        .expect("installed")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(
        std::fs::read(&installed).expect("copy"),
        std::fs::read(lameduck()).expect("original")
    );
    let version = Command::new(&installed)
        .arg("--version")
        .output()
        .expect("run the copy");
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("lameduck "));
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers, ["lameduck"], "no temporary file is left behind");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn installing_twice_is_harmless() {
    let dir = temp_dir("twice");
    assert_eq!(install(&lameduck(), &dir).status.code(), Some(0));
    assert_eq!(install(&lameduck(), &dir).status.code(), Some(0));
    let output = Command::new(dir.join("lameduck"))
        .arg("--version")
        .output()
        .expect("run the copy");
    assert!(output.status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_missing_dir_is_a_one_line_error() {
    let dir = std::env::temp_dir().join(format!("lameduck-install-missing-{}", std::process::id()));
    let output = install(&lameduck(), &dir);
    assert_eq!(output.status.code(), Some(1));
    let stderr = one_line(&output);
    assert!(
        stderr.contains(&format!("cannot install into {}", dir.display()))
            && stderr.contains("No such file"),
        "{stderr}"
    );
}

#[test]
fn a_read_only_dir_is_a_one_line_error() {
    let dir = temp_dir("read-only");
    // A read-only tmpfs in a private mount namespace: root ignores permission bits, not ro mounts.
    let script = format!(
        "mount -t tmpfs -o ro tmpfs '{0}' && exec '{1}' install '{0}'",
        dir.display(),
        lameduck().display()
    );
    let output = Command::new("unshare")
        .args(["--mount", "sh", "-c", &script])
        .output()
        .expect("unshare");
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let stderr = one_line(&output);
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_static_binary_runs_in_an_empty_root() {
    let (lameduck, fixture) = static_build();
    let root = temp_dir("empty-root");
    // The init container's job: the static binary installs itself into the shared volume.
    assert_eq!(install(&lameduck, &root).status.code(), Some(0));
    std::fs::copy(&fixture, root.join("app")).expect("copy the static app");
    let entries = std::fs::read_dir(&root).expect("root").count();
    assert_eq!(entries, 2, "nothing but lameduck and the app");

    let output = Command::new("unshare")
        .args(["--pid", "--fork", "chroot"])
        .arg(&root)
        .args([
            "/lameduck",
            "--listen",
            "127.0.0.1:0",
            "--",
            "/app",
            "exit",
            "7",
        ])
        .output()
        .expect("run in the empty root");
    assert_eq!(
        output.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("pid1=true"), "ran as PID 1: {stderr}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn installs_as_an_unprivileged_user_without_capabilities() {
    let dir = temp_dir("nobody");
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).expect("chown");
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"])
        .arg(lameduck())
        .arg("install")
        .arg(&dir)
        .output()
        .expect("setpriv (util-linux)");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let installed = std::fs::metadata(dir.join("lameduck")).expect("installed");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(installed.uid(), 65534, "written by the unprivileged user");
    let _ = std::fs::remove_dir_all(&dir);
}
