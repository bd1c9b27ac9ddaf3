//! Image resolution: a reference becomes its manifest(s) and the registry
//! blobs behind them; an image archive (`docker save`, OCI layout) becomes
//! the same, with blobs located in the file. Both check the platform
//! filter and digest pins here, so a wrong image fails while planning.
use std::path::Path;

use anyhow::{bail, Context};

use super::{BlobOrigin, ResolvedImage};
use crate::bundle::reader::ManifestDoc;
use crate::bundle::writer::ImageSpec;
use crate::oci::archive;
use crate::oci::media::{self, Descriptor, Parsed, Platform};
use crate::oci::registry::RegistryClient;
use crate::oci::{Digest, Reference};

/// The archive image serving `r` (same name and tag), taken out of
/// `local`. A digest-pinned `r` must name the digest the archive holds.
pub(super) fn take_local(
    local: &mut Vec<ResolvedImage>,
    r: &Reference,
) -> anyhow::Result<Option<ResolvedImage>> {
    let same_name = |c: &Reference| c.registry == r.registry && c.repository == r.repository;
    let pos = local.iter().position(|img| {
        let c = &img.spec.reference;
        same_name(c)
            && match (&r.tag, &r.digest) {
                (Some(_), _) | (None, None) => c.tag_or_latest() == r.tag_or_latest(),
                (None, Some(d)) => archive_digests(img).contains(d),
            }
    });
    let Some(pos) = pos else { return Ok(None) };
    if let Some(want) = &r.digest {
        let have = archive_digests(&local[pos]);
        if !have.contains(want) {
            let img = &local[pos];
            let mut is = img.spec.root.digest.to_string();
            if let Some(i) = &img.spec.source_index {
                is.push_str(&format!(" (picked from index {i})"));
            }
            bail!(
                "{r}: the reference pins {want}, but the archive image {} is {is}; \
                 update the pin or the archive so that they name the same image",
                img.spec.reference
            );
        }
    }
    Ok(Some(local.remove(pos)))
}

/// The digests an archive image answers to: its root, and the index it was
/// picked from when one platform was kept.
fn archive_digests(img: &ResolvedImage) -> Vec<Digest> {
    let mut v = vec![img.spec.root.digest.clone()];
    v.extend(img.spec.source_index.clone());
    v
}

/// Fetch an image's manifest (and, for an index, the child manifests that
/// are kept) from its registry.
pub(super) async fn resolve_registry_image(
    client: &RegistryClient,
    r: &Reference,
    platforms: Option<&[Platform]>,
) -> anyhow::Result<ResolvedImage> {
    let fetched = client
        .get_manifest(&r.registry, &r.repository, &r.manifest_reference())
        .await
        .with_context(|| format!("fetching the manifest of {r}"))?;
    let root = ManifestDoc {
        digest: fetched.digest.clone(),
        media_type: fetched.media_type.clone(),
        bytes: fetched.bytes.clone(),
    };
    let parsed = media::parse(&root.bytes, Some(&root.media_type))
        .with_context(|| format!("manifest of {r}"))?;
    let origin = |d: &Descriptor| BlobOrigin::Registry {
        registry: r.registry.clone(),
        repository: r.repository.clone(),
        desc: d.clone(),
    };
    match parsed {
        Parsed::Manifest { config, layers, .. } => {
            let docker = Some((
                config.digest.clone(),
                layers.iter().map(|l| l.digest.clone()).collect(),
            ));
            let blobs = std::iter::once(&config)
                .chain(layers.iter())
                .map(|d| (d.clone(), origin(d)))
                .collect();
            // The platform is what the config says, never the filter's.
            let platform = match platforms {
                Some(_) => config_platform(client, r, &config).await?,
                None => None,
            };
            let spec = ImageSpec {
                reference: r.clone(),
                root,
                children: Vec::new(),
                platform,
                source_index: None,
                docker,
            };
            check_single_platform(&spec, platforms, &format!("registry {}", r.registry))?;
            Ok(ResolvedImage { spec, blobs })
        }
        Parsed::Index { manifests, .. } => {
            resolve_registry_index(client, r, root, &manifests, platforms, origin).await
        }
    }
}

/// An index: the one child manifest kept under a single `--platform`, or
/// the whole index (every child) otherwise.
async fn resolve_registry_index(
    client: &RegistryClient,
    r: &Reference,
    root: ManifestDoc,
    manifests: &[Descriptor],
    platforms: Option<&[Platform]>,
    origin: impl Fn(&Descriptor) -> BlobOrigin,
) -> anyhow::Result<ResolvedImage> {
    let chosen: Vec<&Descriptor> = match platforms {
        Some(ps) if ps.len() == 1 => {
            let want = &ps[0];
            let m = media::find_platform(manifests, want, &r.to_string())
                .context("choose another platform with --platform or spec.platforms")?;
            vec![m]
        }
        // Several platforms, or all: keep the whole index so that
        // its digest survives (a filtered index would be a new one).
        _ => manifests.iter().collect(),
    };
    let mut children = Vec::new();
    let mut blobs = Vec::new();
    let mut docker = None;
    for m in &chosen {
        let child = client
            .get_manifest(&r.registry, &r.repository, &m.digest.to_string())
            .await
            .with_context(|| {
                format!(
                    "fetching {} manifest {} of {r}",
                    m.platform
                        .as_ref()
                        .map(|p| p.to_string())
                        .unwrap_or_default(),
                    m.digest
                )
            })?;
        let parsed = media::parse(&child.bytes, Some(&child.media_type))?;
        let Parsed::Manifest { config, layers, .. } = parsed else {
            bail!("{r}: nested index {} is not supported", m.digest);
        };
        let preferred = platforms
            .and_then(|p| p.first())
            .cloned()
            .unwrap_or(Platform {
                os: "linux".into(),
                architecture: "amd64".into(),
                variant: None,
            });
        if docker.is_none() || m.platform.as_ref().is_some_and(|p| preferred.matches(p)) {
            docker = Some((
                config.digest.clone(),
                layers.iter().map(|l| l.digest.clone()).collect(),
            ));
        }
        for d in std::iter::once(&config).chain(layers.iter()) {
            blobs.push((d.clone(), origin(d)));
        }
        children.push(ManifestDoc {
            digest: child.digest,
            media_type: child.media_type,
            bytes: child.bytes,
        });
    }
    if chosen.len() == 1 && platforms.is_some_and(|p| p.len() == 1) {
        let only = children.pop().unwrap();
        let platform = chosen[0].platform.clone();
        Ok(ResolvedImage {
            spec: ImageSpec {
                reference: r.clone(),
                root: only,
                children: Vec::new(),
                platform,
                source_index: Some(root.digest.clone()),
                docker,
            },
            blobs,
        })
    } else {
        Ok(ResolvedImage {
            spec: ImageSpec {
                reference: r.clone(),
                root,
                children,
                platform: None,
                source_index: None,
                docker,
            },
            blobs,
        })
    }
}

/// os/arch of a single-platform image, from its (small) config blob.
async fn config_platform(
    client: &RegistryClient,
    r: &Reference,
    config: &Descriptor,
) -> anyhow::Result<Option<Platform>> {
    #[derive(serde::Deserialize)]
    struct C {
        os: Option<String>,
        architecture: Option<String>,
        variant: Option<String>,
    }
    if config.size > 4 << 20 {
        return Ok(None);
    }
    let bytes = client
        .pull_blob_bytes(&r.registry, &r.repository, config)
        .await
        .with_context(|| format!("fetching the config {} of {r}", config.digest))?;
    let Ok(c) = serde_json::from_slice::<C>(&bytes) else {
        return Ok(None);
    };
    Ok(match (c.os, c.architecture) {
        (Some(os), Some(architecture)) if !os.is_empty() && !architecture.is_empty() => {
            Some(Platform {
                os,
                architecture,
                variant: c.variant.filter(|v| !v.is_empty()),
            })
        }
        _ => None,
    })
}

/// Images of a `docker save` archive or an OCI layout (dir or tar).
pub(super) fn resolve_archive_images(
    path: &Path,
    platforms: Option<&[Platform]>,
) -> anyhow::Result<Vec<ResolvedImage>> {
    crate::file_kind::check_path(path, "image archive", true)?;
    let images = archive::open_archive(path)
        .with_context(|| format!("reading image archive {}", path.display()))?;
    let mut out = Vec::new();
    for img in images {
        let reference = img.reference.clone().with_context(|| format!("an image in {} has no name (no RepoTags / ref.name annotation); name it before packing", path.display()))?;
        let origin_of = |loc: &archive::BlobLocation| match loc {
            archive::BlobLocation::File { path, offset, len } => BlobOrigin::File {
                path: path.clone(),
                offset: *offset,
                len: *len,
            },
        };
        let mut blobs: Vec<(Descriptor, BlobOrigin)> = img
            .blobs
            .iter()
            .map(|(d, l)| (d.clone(), origin_of(l)))
            .collect();
        let want = platforms.and_then(|p| (p.len() == 1).then(|| p[0].clone()));
        let spec = match (img.root.parse()?, want) {
            // One platform of an index: that platform's manifest alone,
            // with only its blobs; the index digest goes to the digest map.
            (Parsed::Index { manifests, .. }, Some(w)) => {
                let desc = media::find_platform(&manifests, &w, &reference.to_string())
                    .with_context(|| format!("in image archive {}", path.display()))?;
                let child = img
                    .children
                    .iter()
                    .find(|c| c.digest == desc.digest)
                    .with_context(|| {
                        format!(
                            "{reference}: the {w} manifest {} is not in {}",
                            desc.digest,
                            path.display()
                        )
                    })?
                    .clone();
                let Parsed::Manifest { config, layers, .. } = child.parse()? else {
                    bail!("nested index in {}", path.display())
                };
                let keep: std::collections::HashSet<Digest> =
                    std::iter::once(config.digest.clone())
                        .chain(layers.iter().map(|l| l.digest.clone()))
                        .collect();
                blobs.retain(|(d, _)| keep.contains(&d.digest));
                ImageSpec {
                    reference,
                    platform: desc.platform.clone(),
                    root: child,
                    children: Vec::new(),
                    source_index: Some(img.root.digest.clone()),
                    docker: Some((
                        config.digest,
                        layers.into_iter().map(|l| l.digest).collect(),
                    )),
                }
            }
            // Everything else is kept as the archive has it.
            _ => {
                let spec = img.image_spec(reference)?;
                check_single_platform(&spec, platforms, &path.display().to_string())?;
                spec
            }
        };
        if let Some(pin) = &spec.reference.digest {
            let ok = *pin == spec.root.digest || spec.source_index.as_ref() == Some(pin);
            if !ok {
                bail!(
                    "image archive {}: {} pins {pin}, but the archive holds {} under that name; \
                     fix the name in the archive or the pin",
                    path.display(),
                    spec.reference,
                    spec.source_index.as_ref().unwrap_or(&spec.root.digest)
                );
            }
        }
        out.push(ResolvedImage { spec, blobs });
    }
    Ok(out)
}

/// A single-platform image under a platform filter: its config's os/arch
/// is the truth, and must be one of the platforms asked for (a label that
/// disagrees with the config makes containerd drop the image at the site).
fn check_single_platform(
    spec: &ImageSpec,
    platforms: Option<&[Platform]>,
    from: &str,
) -> anyhow::Result<()> {
    let (Some(want), Some(have)) = (platforms, &spec.platform) else {
        return Ok(());
    };
    if !spec.children.is_empty() || want.iter().any(|w| w.matches(have)) {
        return Ok(());
    }
    let asked: Vec<String> = want.iter().map(|p| p.to_string()).collect();
    Err(crate::error::input_error(format!(
        "{} (from {from}) is a single-platform image for {have} (its config says so), \
         but only {} was asked for; it has no other platform. Pack it with --platform {have}, \
         or use a multi-platform image",
        spec.reference,
        asked.join(", ")
    )))
}
