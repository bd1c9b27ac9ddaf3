//! The outer offline package and the run's outputs as one unit: every file
//! of a pack (bundles, chart archives, the package or its volumes) is
//! written under a temp name ([`Staged`]) and renamed only when all are
//! written, so a run that fails — a package that does not fit, an
//! interrupt — leaves the previous run's files as they were, never a new
//! bundle beside an old package (issue 20.14).
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::PackContext;
use crate::package::write::{self as package_write, Member, PackageInfo};

/// The temp files of a run and their final names; dropped without
/// [`Staged::commit`], it removes them.
#[derive(Default)]
pub(super) struct Staged {
    pairs: Vec<(PathBuf, PathBuf)>,
    committed: bool,
}

impl Staged {
    pub(super) fn add(&mut self, temp: PathBuf, final_path: PathBuf) {
        self.pairs.push((temp, final_path));
    }

    /// Write `bytes` to a temp file for `path`.
    pub(super) fn write_file(&mut self, path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
        let tmp = crate::atomic_file::temp_path_for(path);
        let mut f = crate::atomic_file::create_tracked(&tmp)?;
        self.add(tmp.clone(), path.to_path_buf());
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        Ok(())
    }

    /// The members of the package: every staged file, by final name.
    fn members(&self) -> Vec<Member> {
        self.pairs
            .iter()
            .map(|(tmp, fin)| Member {
                name: fin
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                path: tmp.clone(),
            })
            .collect()
    }

    fn commit(mut self, package: &Path) -> anyhow::Result<()> {
        let pairs = std::mem::take(&mut self.pairs);
        self.committed = true;
        if let Err(e) = package_write::commit(&pairs, package) {
            package_write::discard(&pairs);
            return Err(e);
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            package_write::discard(&self.pairs);
        }
    }
}

/// Path of `<name>_<version>_<arch>.tar`.
pub(super) fn package_path(ctx: &PackContext<'_>) -> PathBuf {
    let (args, manifest) = (ctx.args, ctx.manifest);
    args.output.join(format!(
        "{}_{}_{}.tar",
        manifest.name, manifest.version, args.arch
    ))
}

/// Write the package (or its volumes) from the staged members, then
/// rename the whole run into place. Returns the package path (the first
/// volume when split).
pub(super) fn write_offline_package(
    ctx: &PackContext<'_>,
    staged: Staged,
) -> anyhow::Result<PathBuf> {
    let package = package_path(ctx);
    crate::interrupt::doing(format!("writing {}", package.display()));
    let members = staged.members();
    let split = ctx.split();
    let info = PackageInfo {
        product: &ctx.manifest.name,
        version: &ctx.manifest.version,
        arch: &ctx.args.arch,
    };
    let toc = package_write::build_toc(&info, &members, split)?;
    let written = package_write::write_package(
        &package,
        &toc,
        &members,
        ctx.sign_key.as_ref(),
        split,
        &ctx.progress,
    )?;
    let shown = written
        .first()
        .map(|(_, f)| f.clone())
        .unwrap_or_else(|| package.clone());
    let mut staged = staged;
    for (tmp, fin) in written {
        staged.add(tmp, fin);
    }
    staged.commit(&package)?;
    crate::interrupt::outputs_complete();
    Ok(shown)
}

/// Refuse up front when the run's files do not fit in the output
/// directory: every bundle, chart archive and the package (or volumes and
/// parity) exist as temp files before the old ones are replaced.
pub(super) fn check_free_space(
    ctx: &PackContext<'_>,
    plans: &[super::BundlePlan],
) -> anyhow::Result<()> {
    let mut sizes: Vec<(String, u64)> = Vec::new();
    for p in plans {
        let name = |p: &Path| {
            p.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        sizes.push((
            name(&p.path),
            crate::bundle::writer::planned_size(&p.spec)
                .with_context(|| format!("laying out {}", p.path.display()))?,
        ));
        if let Some((n, tgz)) = &p.chart_archive {
            sizes.push((n.clone(), tgz.len() as u64));
        }
    }
    let members: u64 = sizes.iter().map(|(_, s)| s).sum();
    let package = package_write::planned_size(&sizes, ctx.split());
    crate::package::space::require(&ctx.args.output, members + package, "pack --output")
}

/// `--split SIZE`: `4G`, `700M`, `512K`, `1000000` (bytes); binary units.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (t, 1u64),
        Some((i, _)) => {
            let unit = t[i..].trim().to_ascii_uppercase();
            let m = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => return Err(format!("{s:?}: unknown unit (use K, M, G or T)")),
            };
            (&t[..i], m)
        }
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: not a size (e.g. 4G, 700M)"))?;
    let v = n
        .checked_mul(mult)
        .ok_or_else(|| format!("{s:?}: too large"))?;
    if v < 64 << 10 {
        return Err(format!("{s:?}: volumes of less than 64 KiB are not useful"));
    }
    Ok(v)
}
