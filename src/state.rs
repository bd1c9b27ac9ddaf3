//! What `sync` did, recorded for `upgrade`: which chart versions went to
//! which target, with the release defaults the bundle carried. Kept in
//! `.bundler/synced.json` beside the sync config, so that `bundler upgrade
//! skoala` run in the same directory finds the chart, version, namespace and
//! registry without flags.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::bundle::format::ReleaseInfo;
use crate::chart::package::compare_versions;

pub const STATE_DIR: &str = ".bundler";
pub const STATE_FILE: &str = "synced.json";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncState {
    pub charts: Vec<SyncedChart>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncedChart {
    pub name: String,
    pub version: String,
    /// Target kind: OCI, LOCAL, HARBOR, CHARTMUSEUM.
    pub kind: String,
    /// What `helm upgrade` takes as CHART: `oci://host/path/name`, the
    /// LOCAL `.tgz` path, or the repo URL (used with `--repo`).
    pub chart_ref: String,
    /// For HARBOR/CHARTMUSEUM: the repository URL to pass as `--repo`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo_url: Option<String>,
    /// Image registry the chart's images were pushed to.
    pub registry: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<ReleaseInfo>,
    /// RFC 3339 UTC.
    pub synced_at: String,
}

impl SyncState {
    /// Every release name the record knows (a chart's release entry, else
    /// the chart's name), once each, in the package's order.
    pub fn release_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        for c in &self.charts {
            let r = c
                .release
                .as_ref()
                .map(|r| r.name.clone())
                .unwrap_or_else(|| c.name.clone());
            if !names.contains(&r) {
                names.push(r);
            }
        }
        names
    }

    pub fn path_for(config: &Path) -> PathBuf {
        config
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .join(STATE_DIR)
            .join(STATE_FILE)
    }

    /// Load the state next to `config`; empty when none was written yet.
    pub fn load(config: &Path) -> anyhow::Result<Self> {
        let path = Self::path_for(config);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                anyhow::anyhow!(
                    "{}: not a valid sync state ({e}); delete it and run sync again",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SyncState::default()),
            Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        }
    }

    /// Record charts (replacing entries with the same name and version) and
    /// write atomically (temp file, rename).
    /// Concurrent syncs beside the same config each keep their entries:
    /// the read-modify-write holds an exclusive lock on `.bundler/`.
    pub fn record(config: &Path, charts: Vec<SyncedChart>) -> anyhow::Result<()> {
        let path = Self::path_for(config);
        let _lock = crate::atomic_file::DirLock::acquire(path.parent().unwrap())?;
        // Temp files of killed runs (their PID no longer runs) go, as in pack.
        for p in crate::interrupt::remove_stale_partials(path.parent().unwrap()) {
            tracing::info!(
                "removed {} (left by a run that no longer runs)",
                p.display()
            );
        }
        let mut state = Self::load(config)?;
        for c in charts {
            state
                .charts
                .retain(|x| !(x.name == c.name && x.version == c.version));
            state.charts.push(c);
        }
        crate::atomic_file::write_atomic(&path, &serde_json::to_vec_pretty(&state)?)?;
        Ok(())
    }

    /// The newest synced version of `name` (semver-aware ordering of
    /// dotted numbers, falling back to string order).
    pub fn newest(&self, name: &str) -> Option<&SyncedChart> {
        self.charts
            .iter()
            .filter(|c| c.name == name)
            .max_by(|a, b| compare_versions(&a.version, &b.version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_order() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_versions("0.10.0", "0.9.1"), Greater);
        assert_eq!(compare_versions("v1.0.0", "1.0.0-rc1"), Greater);
        assert_eq!(compare_versions("0.28.1", "0.28.1"), Equal);
    }
}
