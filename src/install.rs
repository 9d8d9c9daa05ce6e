//! `lameduck install DIR`: the init-container mode. Copies the running executable into a
//! shared volume so an app image can run `/DIR/lameduck -- app` without being rebuilt.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Copies `/proc/self/exe` to `DIR/lameduck` atomically (a temporary file renamed into
/// place), mode 0755. Running it twice leaves the same result.
pub fn run(dir: &Path) -> i32 {
    match install(dir) {
        Ok(target) => {
            crate::exit::say(
                std::io::stdout(),
                format_args!("installed {}", target.display()),
            );
            0
        }
        Err(err) => {
            crate::exit::say(
                std::io::stderr(),
                format_args!("lameduck: cannot install into {}: {err}", dir.display()),
            );
            crate::exit::EXIT_FAILED
        }
    }
}

fn install(dir: &Path) -> io::Result<PathBuf> {
    let meta = fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(io::Error::other("not a directory"));
    }
    let target = dir.join("lameduck");
    let temporary = dir.join(format!(".lameduck.{}.tmp", std::process::id()));
    let result = copy_into_place(&temporary, &target);
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result.map(|()| target)
}

fn copy_into_place(temporary: &Path, target: &Path) -> io::Result<()> {
    fs::copy("/proc/self/exe", temporary)?;
    fs::set_permissions(temporary, fs::Permissions::from_mode(0o755))?;
    fs::File::open(temporary)?.sync_all()?;
    fs::rename(temporary, target)
}
