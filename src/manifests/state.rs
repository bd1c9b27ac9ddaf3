//! What sync published for each manifests entry, for `bundler apply`:
//! `.bundler/manifests.json` beside the sync config (its own file next to
//! the charts' `synced.json`, so that a bundler that predates manifests
//! reads its own state unchanged).
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::TreeKind;
use crate::chart::package::compare_versions;
use crate::state::STATE_DIR;

pub const MANIFESTS_STATE_FILE: &str = "manifests.json";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestsState {
    pub manifests: Vec<SyncedManifests>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncedManifests {
    pub name: String,
    pub version: String,
    pub kind: TreeKind,
    /// `kubectl apply -f`/`-k` path relative to the tree's root.
    pub apply: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// LOCAL or OCI.
    pub target_kind: String,
    /// LOCAL: the directory; OCI: `oci://host/repo:tag`.
    pub location: String,
    /// The image registry the images went to.
    pub registry: String,
    /// Every image the relocated copy names.
    pub images: Vec<String>,
    pub synced_at: String,
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub fn path_for(config: &Path) -> PathBuf {
    config
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .join(STATE_DIR)
        .join(MANIFESTS_STATE_FILE)
}

pub fn load(config: &Path) -> anyhow::Result<ManifestsState> {
    let path = path_for(config);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| {
            anyhow::anyhow!(
                "{}: not a valid manifests state ({e}); delete it and run sync again",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(ManifestsState::default()),
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
}

/// Record entries (replacing the same name and version), under the
/// `.bundler/` lock, written atomically.
pub fn record(config: &Path, synced: Vec<SyncedManifests>) -> anyhow::Result<()> {
    let path = path_for(config);
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let _lock = crate::atomic_file::DirLock::acquire(dir)?;
    let mut state = load(config)?;
    for s in synced {
        state
            .manifests
            .retain(|x| !(x.name == s.name && x.version == s.version));
        state.manifests.push(s);
    }
    crate::atomic_file::write_atomic(&path, &serde_json::to_vec_pretty(&state)?)?;
    Ok(())
}

impl ManifestsState {
    /// `name` at `version`, or its newest synced version.
    pub fn find(&self, name: &str, version: Option<&str>) -> Option<&SyncedManifests> {
        self.manifests
            .iter()
            .filter(|m| m.name == name && version.is_none_or(|v| v == m.version))
            .max_by(|a, b| compare_versions(&a.version, &b.version))
    }
}
