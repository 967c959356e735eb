//! [`Tmpfs`]: a small filesystem of its own for a test, to fill up on purpose.

use std::path::Path;
use std::process::{Command, Stdio};

/// A tmpfs of a given size mounted on a fresh temporary directory, unmounted when dropped.
///
/// Mounting needs root (CI runs as root); [`Tmpfs::mount`] returns `None` where it is not
/// allowed, so a test can say it skipped its full-disk case.
#[derive(Debug)]
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `megabytes`; `None` when this process may not mount.
    #[must_use]
    pub fn mount(megabytes: u32) -> Option<Self> {
        let dir = tempfile::tempdir().ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(Self { dir })
    }

    /// Grows (or shrinks) the filesystem to `megabytes`, keeping what it holds: the operator
    /// freeing space.
    ///
    /// # Panics
    /// When `mount -o remount` fails.
    pub fn resize(&self, megabytes: u32) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={megabytes}m")])
            .arg(self.dir.path())
            .status()
            .expect("run mount");
        assert!(status.success(), "remount of the tmpfs failed");
    }

    /// Where it is mounted.
    #[must_use]
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // A failed unmount leaves an empty tmpfs behind until reboot; nothing to do about it
        // here.
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}
