//! Discovering image hints for charts that ship none.
use std::path::Path;

use super::hints::Hints;
use super::Chart;

/// Hints from values (registry/repository/tag maps, `image: name:tag`
/// strings, subcharts, `global`) and, when `helm` is given, images in
/// `helm template` output that values did not explain.
pub fn discover(chart: &Chart, helm: Option<&Path>) -> anyhow::Result<Hints> {
    let _ = (chart, helm);
    anyhow::bail!("not implemented")
}
