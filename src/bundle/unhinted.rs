//! Images of a chart bundle that no hint names (issue 22): `inspect` lists
//! them apart. They are carried (an `images:` entry, an archive's extra
//! image, an image only `helm template` shows), but sync relocates a
//! chart's images through the values its hints name, so nothing in the
//! relocated chart points at them. An old version left in an archive shows
//! up here.
use super::reader::BundleReader;
use crate::chart::hints::Hints;
use crate::chart::load::Chart;
use crate::oci::Reference;

/// The bundle's images that no hint renders to (same registry, repository
/// and tag), or nothing for an image-only bundle or one without hints.
/// Hints that cannot be rendered give nothing (inspect reports, it does
/// not judge).
pub fn images_no_hint_names(reader: &BundleReader) -> Vec<String> {
    let Ok(Some(text)) = reader.hints() else {
        return Vec::new();
    };
    let Ok(files) = reader.chart_files() else {
        return Vec::new();
    };
    if files.is_empty() {
        return Vec::new();
    }
    let (Ok(hints), Ok(chart)) = (Hints::parse(&text), Chart::from_files(files)) else {
        return Vec::new();
    };
    let Ok(resolved) = hints.resolve(&chart) else {
        return Vec::new();
    };
    let named: Vec<&Reference> = resolved.iter().map(|h| &h.reference).collect();
    reader
        .images
        .iter()
        .map(|img| &img.reference)
        .filter(|r| {
            !named.iter().any(|h| {
                h.registry == r.registry
                    && h.repository == r.repository
                    && h.tag_or_latest() == r.tag_or_latest()
            })
        })
        .map(|r| r.to_string())
        .collect()
}
