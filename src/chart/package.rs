//! Packaging a chart as `<name>-<version>.tgz` (deterministic) and writing
//! repository `index.yaml` files as `helm repo index` does.
use super::Chart;

pub fn package_tgz(chart: &Chart) -> anyhow::Result<Vec<u8>> {
    let _ = chart;
    anyhow::bail!("not implemented")
}
