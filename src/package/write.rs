//! Writing the offline package: `package.json` (built from the members'
//! bytes), its signature, then the members, as one deterministic tar or as
//! volumes with parity. Everything goes to temporary names; the caller
//! renames the whole run at the end ([`commit`]), so a run that fails or
//! does not fit leaves the previous outputs as they were.
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::sign::SigningKey;
use super::toc::{
    PackageToc, TocMember, VolumeLayout, KIND, PACKAGE_FORMAT, PACKAGE_JSON, SIGNATURE,
};
use super::volumes::{self, SplitWriter};
use crate::bundle::format::{BundleJson, BUNDLE_JSON};
use crate::bundle::reader::{hash_range, index_tar, TarKind};
use crate::oci::Digest;

/// One member: its name in the package and where its bytes are now.
#[derive(Clone, Debug)]
pub struct Member {
    pub name: String,
    pub path: PathBuf,
}

/// How the package is cut for removable media.
#[derive(Clone, Copy, Debug)]
pub struct Split {
    pub volume_size: u64,
    pub parity: usize,
}

/// The product a package is for.
pub struct PackageInfo<'a> {
    pub product: &'a str,
    pub version: &'a str,
    pub arch: &'a str,
}

/// Hash every member and read each bundle's `bundle.json`; refuse two
/// bundles of one chart version (issue 20.15).
pub fn build_toc(
    info: &PackageInfo<'_>,
    members: &[Member],
    split: Option<Split>,
) -> anyhow::Result<PackageToc> {
    let mut sorted: Vec<&Member> = members.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out: Vec<TocMember> = Vec::new();
    let mut buf = Vec::new();
    for m in sorted {
        if m.name == PACKAGE_JSON || m.name == SIGNATURE {
            bail!("a member may not be named {}", m.name);
        }
        if out.iter().any(|t| t.name == m.name) {
            bail!(
                "pack: two outputs are named {} (one chart version listed twice in the manifest?): refused, keep one",
                m.name
            );
        }
        let f = std::fs::File::open(&m.path)
            .with_context(|| format!("opening {}", m.path.display()))?;
        let size = f.metadata()?.len();
        let sha256 = hash_range(&f, 0, size, &mut buf)
            .with_context(|| format!("reading {}", m.path.display()))?;
        let (mut bundle_json, mut chart) = (None, None);
        if m.name.ends_with(".bundle.tar") {
            let what = format!("bundle {}", m.name);
            let entries = index_tar(&f, 0, size, &what)?;
            if let Some(e) = entries
                .iter()
                .find(|e| e.name == BUNDLE_JSON && e.kind == TarKind::File)
            {
                let mut raw = vec![0u8; e.extent.size as usize];
                std::os::unix::fs::FileExt::read_exact_at(&f, &mut raw, e.extent.offset)?;
                bundle_json = Some(Digest::of(&raw));
                let meta: BundleJson =
                    serde_json::from_slice(&raw).with_context(|| format!("{what}: bundle.json"))?;
                chart = meta.chart.map(|c| format!("{}-{}", c.name, c.version));
            }
        }
        out.push(TocMember {
            name: m.name.clone(),
            size,
            sha256,
            bundle_json,
            chart,
        });
    }
    let charts = out.iter().filter_map(|t| {
        t.chart
            .as_deref()
            .map(|c| (t.name.as_str(), c, t.bundle_json.as_ref()))
    });
    super::toc::refuse_duplicate_charts("pack", charts)?;
    Ok(PackageToc {
        kind: KIND.into(),
        format_version: PACKAGE_FORMAT.into(),
        product: info.product.into(),
        version: info.version.into(),
        arch: info.arch.into(),
        bundle_format: crate::bundle::format::FORMAT_VERSION.into(),
        bundler_version: env!("CARGO_PKG_VERSION").into(),
        members: out,
        volumes: split.map(|s| VolumeLayout {
            volume_size: s.volume_size,
            parity_volumes: s.parity as u32,
        }),
    })
}

fn padded(n: u64) -> u64 {
    n.div_ceil(512) * 512
}

/// Upper bound of the bytes the package (or its volumes, parity and
/// table) will take, from the member sizes: for the free-space check
/// before anything is written.
pub fn planned_size(member_sizes: &[(String, u64)], split: Option<Split>) -> u64 {
    // package.json (~300 bytes a member, bounded generously) and signature.
    let toc = 4096 + 512 * member_sizes.len() as u64;
    let mut stream = 512 + padded(toc) + 512 + 512 + 1024;
    for (name, size) in member_sizes {
        stream += 512 + padded(*size);
        if name.len() >= 100 {
            stream += 512 + padded(name.len() as u64 + 1);
        }
    }
    match split {
        None => stream,
        Some(s) => {
            let n = stream.div_ceil(s.volume_size) as usize;
            let chunk = volumes::chunk_size(s.volume_size, n, s.parity);
            let parity_each = s.volume_size.div_ceil(chunk) * chunk + (1 << 20);
            stream + s.parity as u64 * parity_each + (1 << 20)
        }
    }
}

/// Write the package to temporaries; returns (temp, final) pairs.
pub fn write_package(
    final_path: &Path,
    toc: &PackageToc,
    members: &[Member],
    sign_key: Option<&SigningKey>,
    split: Option<Split>,
    progress: &crate::progress::Progress,
) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
    let toc_bytes = toc.to_bytes()?;
    let sig = sign_key.map(|k| k.sign(&toc_bytes));
    let mut sorted: Vec<&Member> = members.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let fill = |w: &mut dyn Write| -> anyhow::Result<()> {
        let mut b = tar::Builder::new(w);
        append(
            &mut b,
            PACKAGE_JSON,
            toc_bytes.len() as u64,
            &mut toc_bytes.as_slice(),
        )?;
        if let Some(sig) = &sig {
            append(&mut b, SIGNATURE, sig.len() as u64, &mut sig.as_slice())?;
        }
        for m in &sorted {
            let mut f = std::fs::File::open(&m.path)
                .with_context(|| format!("opening {}", m.path.display()))?;
            let size = f.metadata()?.len();
            let t = toc
                .member(&m.name)
                .context("internal: member not in the table")?;
            if t.size != size {
                bail!("{} changed while the package was written", m.path.display());
            }
            append(&mut b, &m.name, size, &mut f)
                .with_context(|| format!("adding {} to the package", m.name))?;
        }
        b.finish()?;
        Ok(())
    };
    match split {
        None => {
            let tmp = crate::atomic_file::temp_path_for(final_path);
            let result = (|| -> anyhow::Result<()> {
                let out = crate::atomic_file::create_tracked(&tmp)?;
                let mut w = std::io::BufWriter::with_capacity(1 << 20, out);
                fill(&mut w)?;
                let f = w.into_inner().map_err(|e| e.into_error())?;
                f.sync_all()?;
                Ok(())
            })();
            if let Err(e) = result {
                discard(&[(tmp, final_path.to_path_buf())]);
                return Err(e.context(format!(
                    "writing the offline package {}",
                    final_path.display()
                )));
            }
            Ok(vec![(tmp, final_path.to_path_buf())])
        }
        Some(s) => {
            let mut w = SplitWriter::new(final_path, s.volume_size, s.parity);
            let result = (|| -> anyhow::Result<()> {
                let mut bw = std::io::BufWriter::with_capacity(1 << 20, &mut w);
                fill(&mut bw)?;
                bw.flush()?;
                Ok(())
            })();
            if let Err(e) = result {
                discard(&w.temps());
                return Err(e.context(format!("writing the volumes of {}", final_path.display())));
            }
            let temps = w.temps();
            w.finish(progress)
                .inspect_err(|_| discard(&temps))
                .map(|(_, pairs)| pairs)
        }
    }
}

fn append(
    b: &mut tar::Builder<&mut dyn Write>,
    name: &str,
    size: u64,
    data: &mut dyn std::io::Read,
) -> anyhow::Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data)?;
    Ok(())
}

/// Remove temporaries of a run that will not be committed.
pub fn discard(pairs: &[(PathBuf, PathBuf)]) {
    for (tmp, _) in pairs {
        let _ = std::fs::remove_file(tmp);
        crate::interrupt::untrack(tmp);
    }
}

/// Rename every temporary of a run to its final name, then remove what an
/// earlier pack of the same package left that this one replaces (the
/// single file when this run split it, volumes when it did not, volumes
/// beyond this run's count).
pub fn commit(pairs: &[(PathBuf, PathBuf)], package: &Path) -> anyhow::Result<()> {
    // Keep the previous files (hard links, no copy) until every rename
    // succeeded; on a failure put them all back.
    let mut backups: Vec<(PathBuf, Option<PathBuf>)> = Vec::new();
    for (_, fin) in pairs {
        let bak = crate::atomic_file::temp_path_for(fin);
        let kept = std::fs::hard_link(fin, &bak).is_ok().then_some(bak);
        backups.push((fin.clone(), kept));
    }
    let mut renamed = 0;
    let mut failure = None;
    for (tmp, fin) in pairs {
        if let Err(e) = std::fs::rename(tmp, fin) {
            failure = Some(anyhow::Error::new(e).context(format!(
                "renaming {} to {}",
                tmp.display(),
                fin.display()
            )));
            break;
        }
        renamed += 1;
    }
    if let Some(e) = failure {
        for (fin, bak) in backups.iter().take(renamed) {
            match bak {
                Some(b) => {
                    let _ = std::fs::rename(b, fin);
                }
                None => {
                    let _ = std::fs::remove_file(fin);
                }
            }
        }
        for (_, bak) in backups.iter().skip(renamed) {
            if let Some(b) = bak {
                let _ = std::fs::remove_file(b);
            }
        }
        return Err(e.context("the previous outputs were put back; nothing of this run was kept"));
    }
    for (tmp, _) in pairs {
        crate::interrupt::untrack(tmp);
    }
    for (_, bak) in &backups {
        if let Some(b) = bak {
            let _ = std::fs::remove_file(b);
        }
    }
    let finals: Vec<&PathBuf> = pairs.iter().map(|(_, f)| f).collect();
    let split = !finals.iter().any(|f| *f == package);
    let name = package
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let dir = match package.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if split && package.exists() {
        let _ = std::fs::remove_file(package);
    }
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let p = e.path();
        let is_ours = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&format!("{name}.")))
            && volumes::is_volume_name(&p);
        if is_ours && !finals.contains(&&p) {
            let _ = std::fs::remove_file(&p);
        }
    }
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
