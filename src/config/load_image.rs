//! `load-image.yaml` (SPEC §4), the charts-syncer fork's schema.
use std::path::{Path, PathBuf};

use crate::oci::auth::Credentials;
use crate::oci::reference::RewriteRules;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepoKind {
    Helm,
    Oci,
    Harbor,
    Chartmuseum,
    Local,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoSpec {
    pub kind: RepoKind,
    /// URL (`http(s)://...`, `oci://host/path`); empty for LOCAL.
    pub url: String,
    /// LOCAL: the directory (relative paths resolved against the cwd, as
    /// charts-syncer does).
    pub path: Option<PathBuf>,
    pub auth: Option<Credentials>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `source.intermediateBundlesPath`: a dir of bundles or an outer package.
    Bundles(PathBuf),
    /// `source.repo`.
    Repo {
        repo: RepoSpec,
        containers_auth: Option<Credentials>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChartFilter {
    pub name: String,
    /// Empty: every version.
    pub versions: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncConfig {
    pub file: PathBuf,
    pub source: Source,
    pub rewrite: RewriteRules,
    pub containers_auth: Option<Credentials>,
    pub target_repo: RepoSpec,
    pub charts: Vec<ChartFilter>,
    pub skip_charts: Vec<ChartFilter>,
}

impl SyncConfig {
    /// Load, validate and apply environment overrides.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        anyhow::bail!("config loading not implemented yet: {}", path.display())
    }
}
