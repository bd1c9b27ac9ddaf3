//! Where bundles are: a `*.bundle.tar` file, the bundles inside an offline
//! package (`<name>_<version>_<arch>.tar`, read in place), or a directory of
//! either. `sync`, `inspect` and `verify` all take the same three forms,
//! so a site can point any of them at what it was handed.
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::format::IMAGES_TAR;
use super::reader::{index_tar, BundleReader, Extent, TarKind};
use crate::package::read::{OpenedPackage, PackageCheck};
use crate::package::source::{PackageFile, SharedVolumes};

/// One bundle: its own file, or an entry of an outer offline package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BundleLocation {
    File(PathBuf),
    InPackage {
        package: PathBuf,
        name: String,
        extent: Extent,
        /// A split package: its volumes, read as one stream (`package`
        /// is then the first volume).
        volumes: Option<SharedVolumes>,
    },
}

impl BundleLocation {
    /// Index the bundle (tar headers and small files only).
    pub fn open(&self) -> anyhow::Result<BundleReader> {
        match self {
            BundleLocation::File(p) => BundleReader::open(p),
            BundleLocation::InPackage {
                package,
                name,
                extent,
                volumes: None,
            } => BundleReader::open_at(package, name, *extent),
            BundleLocation::InPackage {
                package,
                name,
                extent,
                volumes: Some(v),
            } => BundleReader::open_in(package, PackageFile::Volumes(v.0.clone()), name, *extent),
        }
    }

    /// How to name the bundle in messages.
    pub fn label(&self) -> String {
        match self {
            BundleLocation::File(p) => p.display().to_string(),
            BundleLocation::InPackage { package, name, .. } => {
                format!("{name} in {}", package.display())
            }
        }
    }
}

fn is_bundle_name(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".bundle.tar"))
}

/// The bundles at `path`:
/// - a directory: its `*.bundle.tar` files; when it has none, the bundles
///   of the offline packages (`*.tar`) in it;
/// - a `*.bundle.tar` file: that bundle;
/// - any other file: by content, a bundle (it has `images.tar`) or an
///   offline package (it holds `*.bundle.tar` entries).
///
/// The result is sorted by name.
pub fn list_bundles(path: &Path) -> anyhow::Result<Vec<BundleLocation>> {
    list_bundles_checked(path, &PackageCheck::default())
}

/// [`list_bundles`], with an offline package checked as `check` asks
/// (every member hashed, a signature required): what verify, sync and
/// serve use. A split package is named by its first volume
/// (`NAME.tar.001`), any of its volumes, or the directory.
pub fn list_bundles_checked(
    path: &Path,
    check: &PackageCheck,
) -> anyhow::Result<Vec<BundleLocation>> {
    if path.is_file() && crate::package::volumes::is_volume_name(path) {
        let base = volume_base(path);
        return Ok(package_locations(crate::package::read::open_volumes(
            &base, check,
        )?));
    }
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    // A FIFO or device would block the open (or the read) forever.
    crate::file_kind::require_file(path, &meta, "bundle source", true)?;
    if meta.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("listing {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let bundles: Vec<BundleLocation> = files
            .iter()
            .filter(|p| is_bundle_name(p))
            .cloned()
            .map(BundleLocation::File)
            .collect();
        if !bundles.is_empty() {
            return Ok(bundles);
        }
        let mut out = Vec::new();
        for p in files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "tar"))
        {
            // A `*.tar` that is not a package (a docker save, say) is not
            // what was asked for: skip it rather than fail the directory.
            match classify_file(p, check) {
                Ok(found) => out.extend(
                    found
                        .into_iter()
                        .filter(|l| matches!(l, BundleLocation::InPackage { .. })),
                ),
                // A package that fails its checks is an error, not "no package".
                Err(e) if looks_like_package(p) => return Err(e),
                Err(_) => {}
            }
        }
        if out.is_empty() {
            for base in crate::package::volumes::sets_in_dir(path) {
                out.extend(package_locations(crate::package::read::open_volumes(
                    &base, check,
                )?));
            }
        }
        return Ok(out);
    }
    if is_bundle_name(path) {
        return Ok(vec![BundleLocation::File(path.to_path_buf())]);
    }
    classify_file(path, check)
}

/// `DIR/NAME.tar` of a volume path.
fn volume_base(volume: &Path) -> PathBuf {
    let name = volume.file_name().and_then(|n| n.to_str()).unwrap_or("");
    let base = name
        .strip_suffix(crate::package::volumes::TABLE_SUFFIX)
        .or_else(|| name.rsplit_once('.').map(|(b, _)| b))
        .unwrap_or(name);
    volume.with_file_name(base)
}

/// The bundles of a checked package.
fn package_locations(p: OpenedPackage) -> Vec<BundleLocation> {
    let volumes = match &p.file {
        PackageFile::Volumes(v) => Some(SharedVolumes(v.clone())),
        PackageFile::Plain(_) => None,
    };
    let mut inner: Vec<BundleLocation> = p
        .members
        .into_iter()
        .filter(|e| e.name.ends_with(".bundle.tar"))
        .map(|e| BundleLocation::InPackage {
            package: p.path.clone(),
            name: e.name,
            extent: e.extent,
            volumes: volumes.clone(),
        })
        .collect();
    inner.sort_by_key(BundleLocation::label);
    inner
}

/// Whether `p` is an offline package by its first entry or its members
/// (headers only), whatever else is wrong with it.
fn looks_like_package(p: &Path) -> bool {
    let Ok(f) = File::open(p) else { return false };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut head = [0u8; 512];
    if std::os::unix::fs::FileExt::read_exact_at(&f, &mut head, 0).is_ok()
        && head.starts_with(crate::package::toc::PACKAGE_JSON.as_bytes())
        && head[crate::package::toc::PACKAGE_JSON.len()] == 0
    {
        return true;
    }
    index_tar(&f, 0, len, "").is_ok_and(|es| es.iter().any(|e| e.name.ends_with(".bundle.tar")))
}

/// A file that is not named `*.bundle.tar`: a bundle or an offline package,
/// told apart by its top-level entries (headers only; nothing is read).
fn classify_file(path: &Path, check: &PackageCheck) -> anyhow::Result<Vec<BundleLocation>> {
    let what = path.display().to_string();
    let file = File::open(path).with_context(|| format!("opening {what}"))?;
    let len = file
        .metadata()
        .with_context(|| format!("reading {what}"))?
        .len();
    let entries = index_tar(&file, 0, len, &what)?;
    if entries.iter().any(|e| e.name == IMAGES_TAR) {
        return Ok(vec![BundleLocation::File(path.to_path_buf())]);
    }
    let has_bundles = entries.iter().any(|e| {
        (e.kind == TarKind::File && e.name.ends_with(".bundle.tar"))
            || e.name == crate::package::toc::PACKAGE_JSON
    });
    if !has_bundles {
        bail!(
            "{what}: neither a bundle (no {IMAGES_TAR} in it) nor an offline package (no *.bundle.tar in it); \
             give a file written by `bundler pack`, or the file is truncated"
        );
    }
    let opened = crate::package::read::check_package(path, file.into(), entries, check)?;
    Ok(package_locations(opened))
}
