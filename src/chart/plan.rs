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
use super::learn_controls::Learned;
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
    plan_chart_images_learned(entry, chart, base_dir, rendered, None, manifest_file)
}

/// [`plan_chart_images`] where rendering taught which values control the
/// rendered images ([`super::learn_controls`]): for a chart with no hints,
/// the learned templates replace the guessed ones for every image the chart
/// renders; guesses stay for images it does not render at default values
/// (off by default) unless they read a value a learned template reads.
pub fn plan_chart_images_learned(
    entry: &ChartEntry,
    chart: &Chart,
    base_dir: &Path,
    rendered: Option<&[Reference]>,
    learned: Option<&Learned>,
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
        match learned {
            Some(l) => {
                let (hints, notes, extra) = combine_learned(chart, d, l, rendered)?;
                (hints, HintsSource::Discovered, None, notes, extra)
            }
            None => (
                d.hints,
                HintsSource::Discovered,
                None,
                d.notes,
                d.extra_images,
            ),
        }
    };
    let learned_templates = learned.map(Learned::templates).unwrap_or_default();
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
            (HintsSource::Discovered, _) if learned_templates.contains(&resolved.template) => {
                ImageOrigin::Learned {
                    hint: resolved.template.clone(),
                }
            }
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

/// Learned templates for rendered images, guessed ones for the rest; the
/// notes say what no value controls; the extra images are the rendered
/// ones no hint explains.
fn combine_learned(
    chart: &Chart,
    d: discover::Discovered,
    learned: &Learned,
    rendered: Option<&[Reference]>,
) -> anyhow::Result<(Hints, Vec<String>, Vec<Reference>)> {
    let merged = MergedValues::of(chart)?;
    let learned_templates = learned.templates();
    let mut learned_paths = std::collections::BTreeSet::new();
    let mut learned_images = Vec::new();
    for t in &learned_templates {
        let r = super::hints::resolve_one(t, &merged.values)?;
        learned_paths.extend(r.parts.iter().map(|p| p.path.clone()));
        learned_images.push(r.reference);
    }
    // Rendered images learning said something about: their guesses go.
    let rendered_images: Vec<Reference> = learned
        .sites
        .iter()
        .filter(|s| !s.inconclusive)
        .filter_map(|s| Reference::parse(&s.site.image).ok())
        .collect();
    let mut templates = learned_templates.clone();
    for t in d.hints.templates {
        let Ok(r) = super::hints::resolve_one(&t, &merged.values) else {
            continue;
        };
        let shadowed = r.parts.iter().any(|p| learned_paths.contains(&p.path))
            || rendered_images
                .iter()
                .any(|i| discover::same_image(i, &r.reference));
        if !shadowed && !templates.contains(&t) {
            templates.push(t);
        }
    }
    let hints = Hints { templates };
    let mut explained = Vec::new();
    for h in hints.resolve(chart)? {
        explained.extend(discover::images_of_hint(&merged, &h, rendered));
    }
    let mut notes = d.notes;
    for s in learned.uncontrolled() {
        if s.image.parse::<Reference>().is_ok_and(|r| {
            explained.iter().any(|e| discover::same_image(e, &r))
                && !learned_images.iter().any(|l| discover::same_image(l, &r))
        }) && learned
            .sites
            .iter()
            .any(|c| c.site.key == s.key && c.inconclusive)
        {
            // A guessed hint serves it; the relocation check proves it.
            continue;
        }
        notes.push(format!(
            "{} ({}, {} in {}): no value controls its registry (a literal in the template){}",
            s.image,
            s.location,
            s.kind,
            s.source,
            if s.test_hook {
                "; a helm.sh/hook: test resource, so only a warning"
            } else {
                ""
            }
        ));
    }
    for s in &learned.sites {
        if let Some((version, image)) = &s.other_kube_version {
            notes.push(format!(
                "{} ({}, {}): its tag follows the cluster version (.Capabilities.KubeVersion), not a value; for Kubernetes {version} the chart renders {image}: pack with --kube-version set to the site's version",
                s.site.image, s.site.location, s.site.source
            ));
        }
    }
    let mut extra = Vec::new();
    for i in rendered.unwrap_or(&[]) {
        if !explained.iter().any(|e| discover::same_image(e, i)) && !extra.contains(i) {
            extra.push(i.clone());
        }
    }
    Ok((hints, notes, extra))
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
