//! Refusing to replace a release of another product.
//!
//! Releases are found by name (in every namespace when none is given), and
//! a release called `web` may run another chart altogether (`critical-dns`
//! in another namespace). Upgrading it would replace that workload with
//! the product's chart. So the chart the release runs must have the name
//! of the chart the upgrade brings, unless `--force`.
use std::path::Path;

use super::helm::ListedRelease;
use super::{ChartTarget, UpgradeArgs};
use crate::error::input_error;
use crate::state::SyncedChart;

/// Refuse (unless `--force`) when `current` runs a chart whose name is not
/// the one `chart` brings.
pub fn check(
    args: &UpgradeArgs,
    release: &str,
    current: Option<&ListedRelease>,
    synced: Option<&SyncedChart>,
    chart: &ChartTarget,
) -> anyhow::Result<()> {
    let Some(cur) = current else {
        return Ok(());
    };
    let (Some(running), Some(bringing)) = (cur.chart_name(), chart_name(synced, chart)) else {
        return Ok(());
    };
    if running == bringing {
        return Ok(());
    }
    if args.force {
        tracing::warn!(
            "release {release} in {} runs chart {running}; replacing it with {bringing} (--force)",
            cur.namespace
        );
        return Ok(());
    }
    Err(input_error(format!(
        "release {release} in namespace {} runs chart {running} ({}), not {bringing}: upgrading \
         would replace another workload with {bringing}. Nothing was changed. Check the release \
         name and namespace (-n), or pass --force to replace it anyway",
        cur.namespace, cur.chart
    )))
}

/// The name of the chart the upgrade brings: the synced chart's, else read
/// from a local archive or directory, else the last part of the reference
/// (`oci://host/charts/web`, `repo/web`).
fn chart_name(synced: Option<&SyncedChart>, chart: &ChartTarget) -> Option<String> {
    if let Some(s) = synced {
        let c = &chart.chart;
        if s.chart_ref == *c
            || s.name == *c
            || c.ends_with(&format!("{}-{}.tgz", s.name, s.version))
            || chart.repo_url.is_some()
        {
            return Some(s.name.clone());
        }
    }
    let p = Path::new(&chart.chart);
    if chart.chart.ends_with(".tgz") && p.is_file() {
        let bytes = std::fs::read(p).ok()?;
        return crate::chart::Chart::from_tgz(&bytes).ok().map(|c| c.name);
    }
    if p.join("Chart.yaml").is_file() {
        let bytes = std::fs::read(p.join("Chart.yaml")).ok()?;
        return crate::chart::load::ChartMeta::parse(&bytes)
            .ok()
            .map(|m| m.name);
    }
    let last = chart.chart.trim_end_matches('/').rsplit('/').next()?;
    let last = last.split(['@', ':']).next()?;
    (!last.is_empty()).then(|| last.to_string())
}
