//! The chart repository at `/charts/`: each bundle's chart packaged once at
//! start (charts are small), relocated to the served names under
//! `--config` exactly as `sync` relocates it for that target, the original
//! chart otherwise; and an `index.yaml` helm reads (`helm repo add`).
use std::collections::BTreeMap;

use anyhow::Context;

use crate::bundle::reader::BundleReader;
use crate::config::load_image::SyncConfig;

#[derive(Default)]
pub struct ChartRepo {
    /// `<name>-<version>.tgz` → archive bytes.
    pub archives: BTreeMap<String, Vec<u8>>,
    pub index_yaml: String,
    /// (name, version) of every chart, for the start line.
    pub charts: Vec<(String, String)>,
}

impl ChartRepo {
    /// Package the chart of `reader` (if it has one) and add it.
    pub fn add_bundle(
        &mut self,
        reader: &BundleReader,
        config: Option<&SyncConfig>,
        created: &str,
    ) -> anyhow::Result<()> {
        let Some((name, version)) = reader.chart_name_version()? else {
            return Ok(());
        };
        if config.is_some_and(|c| !c.wants_chart(&name, &version)) {
            return Ok(());
        }
        let files = reader.chart_files()?;
        if files.is_empty() {
            return Ok(());
        }
        let mut chart = crate::chart::Chart::from_files(files)
            .with_context(|| format!("loading the chart of bundle {}", reader.label))?;
        if let Some(config) = config {
            relocate(reader, &mut chart, config).with_context(|| {
                format!("relocating chart {name} {version} of {}", reader.label)
            })?;
        }
        let file = crate::chart::package::archive_name(&chart);
        if self.archives.contains_key(&file) {
            tracing::warn!("{file} is in more than one bundle: serving the first");
            return Ok(());
        }
        let tgz = crate::chart::package::package_tgz(&chart)?;
        // A relative URL: helm resolves it against the repository URL, so
        // the index works under any address the server is reached at.
        let entry = crate::chart::package::index_entry(&chart, &tgz, &file, created)?;
        let existing = (!self.index_yaml.is_empty()).then_some(self.index_yaml.as_str());
        self.index_yaml = crate::chart::package::merge_index(existing, entry)?;
        self.archives.insert(file, tgz);
        self.charts.push((name, version));
        Ok(())
    }

    /// The index of an empty repository still parses for helm.
    pub fn finish(&mut self, created: &str) {
        if self.index_yaml.is_empty() {
            self.index_yaml = format!("apiVersion: v1\nentries: {{}}\ngenerated: \"{created}\"\n");
        }
    }
}

/// Relocate as `sync` does for the same config (one function for both).
fn relocate(
    reader: &BundleReader,
    chart: &mut crate::chart::Chart,
    config: &SyncConfig,
) -> anyhow::Result<()> {
    crate::sync::charts::relocate_bundle_chart(reader, chart, config, None)?;
    Ok(())
}
