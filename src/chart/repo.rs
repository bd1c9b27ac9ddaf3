//! Fetching charts from sources (HTTP repo, OCI, local) and publishing them
//! to targets (HARBOR, CHARTMUSEUM, OCI, LOCAL), SPEC §6.
use crate::config::load_image::RepoSpec;
use crate::config::manifest::ChartEntry;
use crate::oci::registry::RegistryClient;

use super::Chart;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishOutcome {
    Published,
    /// Same version with the same content already there.
    AlreadyPresent,
}

/// Options shared by publishing calls.
#[derive(Clone, Debug, Default)]
pub struct PublishOptions {
    pub insecure: bool,
    pub ca_file: Option<std::path::PathBuf>,
    pub force: bool,
    pub auto_create_repository: bool,
}

/// Fetch a chart named by a bundle manifest entry.
pub async fn fetch(
    entry: &ChartEntry,
    base_dir: &std::path::Path,
    client: &RegistryClient,
    opts: &PublishOptions,
) -> anyhow::Result<(Chart, Vec<u8>)> {
    let _ = (entry, base_dir, client, opts);
    anyhow::bail!("not implemented")
}

/// Publish a packaged chart to a target repo.
pub async fn publish(
    target: &RepoSpec,
    chart: &Chart,
    tgz: &[u8],
    client: &RegistryClient,
    opts: &PublishOptions,
) -> anyhow::Result<PublishOutcome> {
    let _ = (target, chart, tgz, client, opts);
    anyhow::bail!("not implemented")
}
