//! Free space, checked before a run writes: a pack or a LOCAL sync that
//! cannot fit is refused up front with both figures, rather than failing
//! half-way with ENOSPC.
use std::path::Path;

use anyhow::Context;

/// Bytes available to an unprivileged writer in the file system of `dir`.
pub fn available(dir: &Path) -> anyhow::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .with_context(|| format!("{}: a path with a NUL byte", dir.display()))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a valid out-pointer.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("reading the free space of {}", dir.display()));
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Refuse when `needed` bytes do not fit in `dir` (what: "pack", "sync").
pub fn require(dir: &Path, needed: u64, what: &str) -> anyhow::Result<()> {
    let free = available(dir)?;
    if needed > free {
        return Err(anyhow::anyhow!(
            "{what}: {} needs {} ({needed} bytes) but only {} ({free} bytes) are free there: \
             nothing was written; free some space or choose another directory",
            dir.display(),
            crate::progress::human_bytes(needed),
            crate::progress::human_bytes(free),
        ));
    }
    Ok(())
}
