//! Image hints in relok8s syntax: a YAML list of templates such as
//! `"{{ .image.registry }}/{{ .image.repository }}:{{ .image.tag }}"`.
use crate::oci::Reference;

use super::Chart;

/// One hint resolved against a chart's values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedHint {
    pub template: String,
    /// The image it renders to.
    pub reference: Reference,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Hints {
    pub templates: Vec<String>,
}

impl Hints {
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let _ = text;
        anyhow::bail!("not implemented")
    }
    /// The YAML text as written into a bundle.
    pub fn to_yaml(&self) -> String {
        String::new()
    }
    /// Render every hint against the chart's merged values.
    pub fn resolve(&self, chart: &Chart) -> anyhow::Result<Vec<ResolvedHint>> {
        let _ = chart;
        anyhow::bail!("not implemented")
    }
}
