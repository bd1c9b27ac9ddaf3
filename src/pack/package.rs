//! The outer offline package (one deterministic tar of the bundles and
//! chart archives) and the atomic writes of single files: a failed or
//! interrupted pack leaves no partial file under a final name.
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::PackContext;

/// Write `<name>_<version>_<arch>.tar` from `members`; returns its path.
pub(super) fn write_offline_package(
    ctx: &PackContext<'_>,
    members: &[PathBuf],
) -> anyhow::Result<PathBuf> {
    let (args, manifest) = (ctx.args, ctx.manifest);
    let package = args.output.join(format!(
        "{}_{}_{}.tar",
        manifest.name, manifest.version, args.arch
    ));
    crate::interrupt::doing(format!("writing {}", package.display()));
    write_package(&package, members)?;
    crate::interrupt::outputs_complete();
    Ok(package)
}

/// Unique temp name, removed on failure (a full disk must not leave a
/// partial file behind either) and on SIGINT/SIGTERM.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::atomic_file::write_atomic(path, bytes)
}

/// The outer offline package: an uncompressed, deterministic tar of the
/// bundles and chart archives (kernel-side copies: `std::io::copy` between
/// files uses copy_file_range on Linux).
fn write_package(path: &Path, members: &[PathBuf]) -> anyhow::Result<()> {
    let tmp = crate::atomic_file::temp_path_for(path);
    let result = (|| -> anyhow::Result<()> {
        let out = crate::atomic_file::create_tracked(&tmp)?;
        let mut builder = tar::Builder::new(std::io::BufWriter::with_capacity(1 << 20, out));
        let mut sorted: Vec<&PathBuf> = members.iter().collect();
        sorted.sort_by_key(|p| p.file_name().map(|n| n.to_os_string()));
        for m in sorted {
            let name = m
                .file_name()
                .context("member without file name")?
                .to_string_lossy()
                .into_owned();
            let mut f =
                std::fs::File::open(m).with_context(|| format!("opening {}", m.display()))?;
            let mut h = tar::Header::new_gnu();
            h.set_size(
                f.metadata()
                    .with_context(|| format!("reading {}", m.display()))?
                    .len(),
            );
            h.set_mode(0o644);
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            h.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut h, &name, &mut f)
                .with_context(|| format!("adding {name} to the package"))?;
        }
        let w = builder.into_inner()?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok(())
    })();
    let result = result.and_then(|()| {
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    });
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        crate::interrupt::untrack(&tmp);
        return Err(e.context(format!("writing the offline package {}", path.display())));
    }
    crate::interrupt::untrack(&tmp);
    Ok(())
}
