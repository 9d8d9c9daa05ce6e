//! Temporary folders for configs, logs and files the tests hand to what they run: named after
//! the test process, so parallel runs never share one, and removed with everything in them on
//! drop, pass or fail.

use std::path::{Path, PathBuf};

/// A fresh, empty folder under the system's temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// `lameduck-LABEL-PID`, emptied if a run before left it behind.
    pub fn new(label: &str) -> Self {
        let path = std::env::temp_dir().join(format!("lameduck-{label}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A subfolder, made on first use.
    pub fn sub(&self, name: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(&path).expect("temp subdir");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
