//! Files written whole or not at all, safe when several bundler processes
//! write into the same directory at once.
//!
//! - Temp names are unique per process *and* per call
//!   (`.NAME.partial-PID-SEQ`): two runs never write the same temp file,
//!   and a later `pack` can tell a stale partial file (its PID no longer
//!   runs) from one another run is still writing (see
//!   [`crate::interrupt::remove_stale_partials`]).
//! - Files are created with mode 0666 filtered by the umask, like any file
//!   the user writes (0644 under umask 022), so that a web server can serve
//!   a LOCAL chart repo; temp-file crates default to 0600.
//! - Temp files are registered with [`crate::interrupt`] so that SIGINT or
//!   SIGTERM removes them.
//! - [`DirLock`] is an exclusive `flock` on a directory, held around a
//!   read-modify-write of a file in it (the LOCAL repo's `index.yaml`,
//!   `.bundler/synced.json`): the directory, because the file itself is
//!   replaced by rename and a lock on the old inode would not exclude.
//!
//! Every error names the path it is about.
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;

static SEQ: AtomicU64 = AtomicU64::new(0);

/// Marker between a file name and the PID in temp names.
pub const PARTIAL_MARK: &str = ".partial-";

/// A temp path beside `final_path`, unique to this process and call:
/// `DIR/.NAME.partial-PID-SEQ`.
pub fn temp_path_for(final_path: &Path) -> PathBuf {
    let dir = parent_dir(final_path);
    let name = final_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{name}{PARTIAL_MARK}{}-{seq}", std::process::id()))
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Create `path` (which must not exist) for reading and writing, mode 0666
/// under the umask, registered for removal on interrupt.
pub fn create_tracked(path: &Path) -> anyhow::Result<File> {
    crate::interrupt::create_tracked(path, || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o666)
            .open(path)
    })
    .with_context(|| format!("creating {}", path.display()))
}

/// Write `bytes` to `path` atomically: a unique temp file beside it,
/// fsync, rename. On failure nothing is left behind.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = temp_path_for(path);
    let result = (|| -> anyhow::Result<()> {
        let mut f = create_tracked(&tmp)?;
        f.write_all(bytes)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    crate::interrupt::untrack(&tmp);
    result
}

/// An exclusive `flock` on a directory, released when dropped (or when the
/// process dies, so a killed run never leaves it held).
pub struct DirLock {
    _dir: File,
}

impl DirLock {
    /// Wait for the exclusive lock on `dir` (created if missing).
    pub fn acquire(dir: &Path) -> anyhow::Result<DirLock> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let f = File::open(dir).with_context(|| format!("opening {} to lock it", dir.display()))?;
        loop {
            // SAFETY: flock on a file descriptor we own.
            let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(DirLock { _dir: f });
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e).with_context(|| format!("locking {}", dir.display()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn temp_names_are_unique_and_carry_the_pid() {
        let a = temp_path_for(Path::new("/x/index.yaml"));
        let b = temp_path_for(Path::new("/x/index.yaml"));
        assert_ne!(a, b);
        let n = a.file_name().unwrap().to_str().unwrap();
        assert!(
            n.starts_with(&format!(".index.yaml.partial-{}-", std::process::id())),
            "{n}"
        );
    }

    #[test]
    fn written_files_follow_the_umask() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(&p, b"x").unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        // SAFETY: reading the umask by setting and restoring it.
        let umask = unsafe {
            let m = libc::umask(0o022);
            libc::umask(m);
            m
        };
        assert_eq!(mode, 0o666 & !(umask as u32));
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn errors_name_the_path() {
        let e = write_atomic(Path::new("/nonexistent-dir/f"), b"x").unwrap_err();
        assert!(format!("{e:#}").contains("/nonexistent-dir/"), "{e:#}");
    }
}
