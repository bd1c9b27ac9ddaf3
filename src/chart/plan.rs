//! Which images a chart's bundle carries, and why each one (for `pack` and
//! `pack --print-images`).
//!
//! Hints come from the manifest's hints file, else the chart's own
//! `.relok8s-images.yaml`, else discovery; each hint becomes the image(s)
//! it stands for ([`super::discover::images_of_hint`]: an empty tag is what
//! `helm template` renders, else the owning chart's `appVersion`). Images
//! the manifest lists are added, and for discovered charts the rendered
//! images no hint explains.
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::discover::{self, ImageOrigin};
use super::hints::{Hints, MergedValues};
use super::Chart;
use crate::config::manifest::ChartEntry;
use crate::oci::Reference;

/// Where a chart's hints came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum HintsSource {
    /// The manifest's `hints:` file.
    Given,
    /// The chart's `.relok8s-images.yaml`.
    Shipped,
    /// Found in the values (and rendered templates).
    Discovered,
}

impl std::fmt::Display for HintsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            HintsSource::Given => "given (hints file)",
            HintsSource::Shipped => "shipped with the chart (.relok8s-images.yaml)",
            HintsSource::Discovered => "discovered",
        })
    }
}

/// One image to carry, with every reason it is carried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PlannedImage {
    #[serde(serialize_with = "as_string")]
    pub reference: Reference,
    pub origins: Vec<ImageOrigin>,
}

fn as_string<S: serde::Serializer>(r: &Reference, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&r.to_string())
}

/// A chart's hints and images.
#[derive(Clone, Debug)]
pub struct ChartImages {
    pub hints: Hints,
    pub source: HintsSource,
    pub images: Vec<PlannedImage>,
    /// What discovery could not express as a hint.
    pub notes: Vec<String>,
}

impl ChartImages {
    /// Add an image (merged with an earlier one of the same reference).
    pub fn add(&mut self, reference: Reference, origin: ImageOrigin) {
        match self
            .images
            .iter_mut()
            .find(|p| discover::same_image(&p.reference, &reference))
        {
            Some(p) => {
                if !p.origins.contains(&origin) {
                    p.origins.push(origin);
                }
            }
            None => self.images.push(PlannedImage {
                reference,
                origins: vec![origin],
            }),
        }
    }
}

/// The hints and images of a chart. `rendered`: the images of `helm
/// template` at default values, when helm ran.
pub fn plan_chart_images(
    entry: &ChartEntry,
    chart: &Chart,
    base_dir: &Path,
    rendered: Option<&[Reference]>,
    manifest_file: &Path,
) -> anyhow::Result<ChartImages> {
    let (hints, source, hints_file, notes, extra) = if let Some(h) = &entry.hints {
        let path = resolve(base_dir, h);
        crate::paths::require_manifest_path("hints file", &path)?;
        crate::file_kind::check_path(&path, "hints file", false)?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading hints file {}", path.display()))?;
        let hints = Hints::parse(&text)
            .with_context(|| format!("parsing hints file {}", path.display()))?;
        (
            hints,
            HintsSource::Given,
            Some(path),
            Vec::new(),
            Vec::new(),
        )
    } else if let Some(bytes) = chart.file(".relok8s-images.yaml") {
        let text = String::from_utf8_lossy(bytes);
        let hints = Hints::parse(&text)
            .with_context(|| format!("parsing .relok8s-images.yaml of chart {}", chart.name))?;
        (hints, HintsSource::Shipped, None, Vec::new(), Vec::new())
    } else {
        let d = discover::discover_with_rendered(chart, rendered)
            .with_context(|| format!("discovering images of chart {}", chart.name))?;
        (
            d.hints,
            HintsSource::Discovered,
            None,
            d.notes,
            d.extra_images,
        )
    };
    let mut out = ChartImages {
        hints: Hints::default(),
        source: source.clone(),
        images: Vec::new(),
        notes,
    };
    let merged = MergedValues::of(chart)?;
    for resolved in hints
        .resolve(chart)
        .with_context(|| format!("resolving image hints of chart {}", chart.name))?
    {
        let origin = match (&source, &hints_file) {
            (HintsSource::Given, Some(p)) => ImageOrigin::HintsFile {
                path: p.clone(),
                hint: resolved.template.clone(),
            },
            (HintsSource::Shipped, _) | (HintsSource::Given, None) => ImageOrigin::ChartHints {
                hint: resolved.template.clone(),
            },
            (HintsSource::Discovered, _) => ImageOrigin::Values {
                path: value_path_of(&resolved),
                hint: resolved.template.clone(),
            },
        };
        for r in discover::images_of_hint(&merged, &resolved, rendered) {
            out.add(r, origin.clone());
        }
    }
    for r in extra {
        out.add(r, ImageOrigin::RenderedOnly);
    }
    for s in &entry.images {
        let r = Reference::parse(s).with_context(|| {
            format!(
                "chart {} in {}: images: {s:?}",
                entry.name,
                manifest_file.display()
            )
        })?;
        out.add(r, ImageOrigin::Manifest);
    }
    // Rendered images also confirm the hint they match.
    for r in rendered.unwrap_or(&[]) {
        if let Some(p) = out
            .images
            .iter_mut()
            .find(|p| discover::same_image(&p.reference, r))
        {
            if !p.origins.contains(&ImageOrigin::Rendered) {
                p.origins.push(ImageOrigin::Rendered);
            }
        }
    }
    out.hints = hints;
    Ok(out)
}

/// The values map a hint reads (its placeholders' common prefix).
fn value_path_of(h: &super::hints::ResolvedHint) -> String {
    let paths: Vec<&Vec<String>> = h.parts.iter().map(|p| &p.path).collect();
    let Some(first) = paths
        .iter()
        .find(|p| p.first().map(String::as_str) != Some("global"))
    else {
        return paths.first().map(|p| p.join(".")).unwrap_or_default();
    };
    let mut n = first.len();
    for p in &paths {
        if p.first().map(String::as_str) == Some("global") {
            continue;
        }
        n = n.min(
            first
                .iter()
                .zip(p.iter())
                .take_while(|(a, b)| a == b)
                .count(),
        );
    }
    if n == first.len() || paths.len() == 1 {
        first.join(".")
    } else {
        first[..n].join(".")
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}
