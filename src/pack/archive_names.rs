//! Archive naming traps (issue 22): how an image of an `archive:` is tied
//! to the chart image it stands for, and what pack says when it is not.
//!
//! - An OCI layout whose `ref.name` is a bare word (`1.2.0`, as `skopeo
//!   copy ... oci:DIR:1.2.0` writes) reads as `docker.io/library/1.2.0`.
//!   When no chart image has that name, the word is taken as a tag: the one
//!   chart image with that tag is the image's name. None or several: pack
//!   refuses, saying how the archive is named and how to name it, instead
//!   of fetching the chart's image from the network.
//! - An archive image that no hint, `images:` entry or rendered template
//!   names is still packed (the README promises it), with a warning: an old
//!   version left in an archive ends up in the bundle otherwise unnoticed.
//! - A chart image pinned `repo:tag@sha256:…` and the archive's `repo:tag`
//!   holding that digest are one image: the archive serves both names.
use std::collections::BTreeMap;
use std::path::Path;

use super::ResolvedImage;
use crate::chart::discover::ImageOrigin;
use crate::chart::plan::ChartImages;
use crate::oci::{archive, Digest, Reference};

/// Root digest (as the archive holds it) → bare-word `ref.name`.
fn plain_tags(path: &Path) -> anyhow::Result<BTreeMap<Digest, String>> {
    Ok(archive::open_archive(path)?
        .into_iter()
        .filter_map(|img| img.plain_tag.map(|t| (img.root.digest, t)))
        .collect())
}

fn archive_root(img: &ResolvedImage) -> &Digest {
    img.spec
        .source_index
        .as_ref()
        .unwrap_or(&img.spec.root.digest)
}

fn same_name(a: &Reference, b: &Reference) -> bool {
    a.registry == b.registry && a.repository == b.repository
}

/// `1.2.0`, `v2`, `20240101`: a word that is a version, never an image name.
fn version_like(t: &str) -> bool {
    let rest = t.strip_prefix('v').unwrap_or(t);
    rest.starts_with(|c: char| c.is_ascii_digit())
}

/// Give the images of `path` that the archive names by a bare tag the name
/// of the chart image with that tag (`chart`: the chart's name and images
/// planned so far); for `spec.images` (no chart), refuse a bare version.
pub(super) fn name_plain_tags(
    path: &Path,
    images: &mut [ResolvedImage],
    chart: Option<(&str, &ChartImages)>,
) -> anyhow::Result<()> {
    let tags = plain_tags(path)?;
    if tags.is_empty() {
        return Ok(());
    }
    for img in images.iter_mut() {
        let Some(tag) = tags.get(archive_root(img)) else {
            continue;
        };
        let how = format!(
            "image archive {}: image {} is named only `{tag}` (org.opencontainers.image.ref.name \
             in index.json holds a bare tag and no io.containerd.image.name names the repository)",
            path.display(),
            archive_root(img)
        );
        let fix = format!(
            "name it with a whole reference, e.g. `skopeo copy oci:DIR:{tag} \
             oci-archive:FILE.tar:REGISTRY/REPOSITORY:{tag}`, or add the annotation \
             io.containerd.image.name"
        );
        let Some((chart_name, planned)) = chart else {
            if version_like(tag) {
                return Err(crate::error::input_error(format!(
                    "{how}, which would be read as {}: no chart says which image it is; {fix}",
                    img.spec.reference
                )));
            }
            continue;
        };
        let named: Vec<&Reference> = planned
            .images
            .iter()
            .filter(|p| !is_archive_only(&p.origins))
            .map(|p| &p.reference)
            .collect();
        if named.iter().any(|r| same_name(r, &img.spec.reference)) {
            continue; // the Docker reading names a chart image
        }
        let with_tag: Vec<&&Reference> = named
            .iter()
            .filter(|r| r.tag.as_deref() == Some(tag.as_str()))
            .collect();
        match with_tag.as_slice() {
            [one] => {
                img.spec.reference = Reference {
                    registry: one.registry.clone(),
                    repository: one.repository.clone(),
                    tag: Some(tag.clone()),
                    digest: None,
                };
            }
            many => {
                let listed: Vec<String> = if many.is_empty() {
                    named.iter().map(|r| r.to_string()).collect()
                } else {
                    many.iter().map(|r| r.to_string()).collect()
                };
                return Err(crate::error::input_error(format!(
                    "{how}; {} of chart {chart_name} has the tag `{tag}` ({}: {}); {fix}",
                    if many.is_empty() {
                        "no image"
                    } else {
                        "more than one image"
                    },
                    if many.is_empty() {
                        "its images"
                    } else {
                        "they are"
                    },
                    if listed.is_empty() {
                        "none".to_string()
                    } else {
                        listed.join(", ")
                    }
                )));
            }
        }
    }
    Ok(())
}

fn is_archive_only(origins: &[ImageOrigin]) -> bool {
    origins
        .iter()
        .all(|o| matches!(o, ImageOrigin::Archive { .. }))
}

/// Archive images that nothing of the chart names: packed, with a warning
/// on stderr (also under `--json`).
pub(super) fn warn_unreferenced(chart_name: &str, planned: &ChartImages) {
    for p in &planned.images {
        // `repo:tag` of an archive serving a hint's `repo:tag@sha256:…`.
        let pinned_elsewhere = planned.images.iter().any(|q| {
            !is_archive_only(&q.origins)
                && same_name(&q.reference, &p.reference)
                && q.reference.tag_or_latest() == p.reference.tag_or_latest()
        });
        if pinned_elsewhere {
            continue;
        }
        if let Some(ImageOrigin::Archive { path }) =
            p.origins.first().filter(|_| is_archive_only(&p.origins))
        {
            eprintln!(
                "warning: chart {chart_name}: {} from archive {} is named by no hint, `images:` \
                 entry or rendered template: it is packed, but nothing in the chart's values \
                 points at it (an old version left in the archive?); `bundler inspect` lists it \
                 apart",
                p.reference,
                path.display()
            );
        }
    }
}

/// An archive image already taken for another name of `r`: the same
/// repository and tag, holding the digest `r` pins (if any).
pub(super) fn carried_from_archive(images: &[ResolvedImage], r: &Reference) -> bool {
    images.iter().any(|img| {
        let from_archive = !img.blobs.is_empty()
            && img
                .blobs
                .iter()
                .all(|(_, o)| matches!(o, super::BlobOrigin::File { .. }));
        let c = &img.spec.reference;
        from_archive
            && same_name(c, r)
            && c.tag_or_latest() == r.tag_or_latest()
            && r.digest.as_ref().is_none_or(|d| {
                *d == img.spec.root.digest || img.spec.source_index.as_ref() == Some(d)
            })
    })
}
