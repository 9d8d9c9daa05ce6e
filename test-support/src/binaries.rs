//! Where the programs under test are: the lameduck binary and the kubectl plugin that cargo built
//! for this test run, the fixture app beside them, the workspace they come from, and the static
//! build the images ship.
//!
//! cargo names each binary a package's integration tests may run in `CARGO_BIN_EXE_<name>`,
//! which this crate reads at run time (cargo sets it there from 1.94 on): a library cannot be
//! built with the variable as the tests themselves are, and the path cargo gives holds for every
//! profile, target and build directory, where a path guessed from the test's own location would
//! not.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The binary cargo built for this test run as `name`, from `CARGO_BIN_EXE_<name>`.
fn cargo_bin(name: &str) -> Option<PathBuf> {
    std::env::var_os(format!("CARGO_BIN_EXE_{name}")).map(PathBuf::from)
}

/// The lameduck binary under test.
pub fn lameduck() -> PathBuf {
    cargo_bin("lameduck").expect(
        "CARGO_BIN_EXE_lameduck is not set: run the lameduck package's tests with `cargo test` (1.94 or newer)",
    )
}

/// The kubectl plugin under test: its own tests' binary, or the one built beside lameduck by
/// `cargo test --workspace`.
pub fn plugin() -> PathBuf {
    if let Some(path) = cargo_bin("kubectl-lameduck") {
        return path;
    }
    let path = lameduck().with_file_name("kubectl-lameduck");
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`",
        path.display()
    );
    path
}

/// The fixture app (tests/fixtures/fixture.rs), which `cargo test` builds as an example beside
/// lameduck.
pub fn fixture() -> String {
    let bin = lameduck();
    let dir = bin.parent().expect("binary has a folder");
    dir.join("examples/fixture").to_string_lossy().into_owned()
}

/// The workspace's root folder, where README.md, examples/, images/ and scripts/ are.
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support/ is in the workspace")
}

/// Builds (or finds up to date) the static lameduck and fixture with scripts/build-static.sh;
/// returns their paths.
pub fn static_build() -> (PathBuf, PathBuf) {
    let root = workspace();
    let output = Command::new(root.join("scripts/build-static.sh"))
        .current_dir(root)
        .env_remove("RUSTFLAGS")
        .stdin(Stdio::null())
        .output()
        .expect("run scripts/build-static.sh");
    assert!(
        output.status.success(),
        "static build failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let binary = root.join(String::from_utf8_lossy(&output.stdout).trim());
    let fixture = binary
        .parent()
        .expect("release folder")
        .join("examples/fixture");
    (binary, fixture)
}
