//! Refuse inputs that are not regular files (or directories where one is
//! allowed) before opening them: opening a FIFO blocks until a writer
//! appears, so `archive: /tmp/fifo` or `intermediateBundlesPath: /tmp/fifo`
//! would hang forever; a device or socket is no bundle either.
use std::fs::Metadata;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use crate::error::input_error;

/// What a non-regular file is, in words.
fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_fifo() {
        "a FIFO (named pipe)"
    } else if t.is_socket() {
        "a socket"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else {
        "not a regular file"
    }
}

/// `path` (already `stat`ed into `meta`, following symlinks) must be a
/// regular file, or a directory when `dir_ok`. `what` names the input
/// ("image archive", "source.intermediateBundlesPath").
pub fn require_file(path: &Path, meta: &Metadata, what: &str, dir_ok: bool) -> anyhow::Result<()> {
    if meta.is_file() || (dir_ok && meta.is_dir()) {
        return Ok(());
    }
    let want = if dir_ok {
        "a regular file or a directory"
    } else {
        "a regular file"
    };
    Err(input_error(format!(
        "{what} {}: is {}, not {want}; give the path of the file itself",
        path.display(),
        if meta.is_dir() {
            "a directory"
        } else {
            kind(meta)
        }
    )))
}

/// [`require_file`] for a path not yet `stat`ed; a missing path is left to
/// the caller's own message (`Ok`).
pub fn check_path(path: &Path, what: &str, dir_ok: bool) -> anyhow::Result<()> {
    match std::fs::metadata(path) {
        Ok(m) => require_file(path, &m, what, dir_ok),
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_opening_it() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("pipe");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = check_path(&fifo, "image archive", true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("FIFO") && e.contains("pipe"), "{e}");
        check_path(d.path(), "image archive", true).unwrap();
        assert!(check_path(d.path(), "bundle", false).is_err());
        check_path(&d.path().join("missing"), "bundle", false).unwrap();
    }
}
