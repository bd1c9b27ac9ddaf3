//! Where bundles are: a `*.bundle.tar` file, the bundles inside an offline
//! package (`<name>_<version>_<arch>.tar`, read in place), or a directory of
//! either. `sync`, `inspect` and `verify` all take the same three forms,
//! so a site can point any of them at what it was handed.
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::format::IMAGES_TAR;
use super::reader::{index_tar, BundleReader, Extent, TarKind};

/// One bundle: its own file, or an entry of an outer offline package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BundleLocation {
    File(PathBuf),
    InPackage {
        package: PathBuf,
        name: String,
        extent: Extent,
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
            } => BundleReader::open_at(package, name, *extent),
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
            if let Ok(found) = classify_file(p) {
                out.extend(
                    found
                        .into_iter()
                        .filter(|l| matches!(l, BundleLocation::InPackage { .. })),
                );
            }
        }
        return Ok(out);
    }
    if is_bundle_name(path) {
        return Ok(vec![BundleLocation::File(path.to_path_buf())]);
    }
    classify_file(path)
}

/// A file that is not named `*.bundle.tar`: a bundle or an offline package,
/// told apart by its top-level entries (headers only; nothing is read).
fn classify_file(path: &Path) -> anyhow::Result<Vec<BundleLocation>> {
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
    let mut inner: Vec<BundleLocation> = entries
        .into_iter()
        .filter(|e| e.kind == TarKind::File && e.name.ends_with(".bundle.tar"))
        .map(|e| BundleLocation::InPackage {
            package: path.to_path_buf(),
            name: e.name,
            extent: e.extent,
        })
        .collect();
    if inner.is_empty() {
        bail!(
            "{what}: neither a bundle (no {IMAGES_TAR} in it) nor an offline package (no *.bundle.tar in it); \
             give a file written by `bundler pack`, or the file is truncated"
        );
    }
    inner.sort_by_key(BundleLocation::label);
    Ok(inner)
}
