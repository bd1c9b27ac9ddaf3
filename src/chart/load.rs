//! A chart in memory: its files by path relative to the chart root.
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chart {
    pub name: String,
    pub version: String,
    /// (path relative to the chart root, e.g. `values.yaml`,
    /// `charts/common-1.10.0.tgz`, `templates/x.yaml`), sorted by path.
    pub files: Vec<(String, Vec<u8>)>,
}

impl Chart {
    /// From a chart directory.
    pub fn from_dir(dir: &Path) -> anyhow::Result<Self> {
        anyhow::bail!("not implemented: {}", dir.display())
    }
    /// From a packaged `.tgz` (one top-level dir).
    pub fn from_tgz(bytes: &[u8]) -> anyhow::Result<Self> {
        let _ = bytes;
        anyhow::bail!("not implemented")
    }
    /// From files already relative to the chart root (a bundle's
    /// `original-chart/`).
    pub fn from_files(files: Vec<(String, Vec<u8>)>) -> anyhow::Result<Self> {
        let _ = files;
        anyhow::bail!("not implemented")
    }
}
