//! The bundle manifest (SPEC §2), input of `pack`.
use std::path::{Path, PathBuf};

use crate::bundle::format::ReleaseInfo;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChartSource {
    /// Classic HTTP repo (index.yaml).
    Repo(String),
    /// `oci://host/path` (the chart name is appended).
    Oci(String),
    /// Local dir or `.tgz` (resolved against the manifest's directory).
    Path(PathBuf),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChartEntry {
    pub name: String,
    pub version: Option<String>,
    pub source: ChartSource,
    pub hints: Option<PathBuf>,
    pub images: Vec<String>,
    pub release: Option<ReleaseInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSource {
    Reference(String),
    /// A `docker save` tar or an OCI layout (dir or tar), resolved against
    /// the manifest's directory.
    Archive(PathBuf),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleManifest {
    pub file: PathBuf,
    pub name: String,
    pub version: String,
    /// `None` keeps every platform ("all"); default `[linux/amd64]`.
    pub platforms: Option<Vec<crate::oci::media::Platform>>,
    pub charts: Vec<ChartEntry>,
    pub images: Vec<ImageSource>,
}

impl BundleManifest {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        anyhow::bail!("manifest loading not implemented yet: {}", path.display())
    }
}
