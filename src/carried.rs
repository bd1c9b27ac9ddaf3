//! What a bundle carries for one chart version, as `sync` delivered it:
//! every image at its target reference with the manifest digest pushed, and
//! which values paths of the relocated chart hold which image (the bundle's
//! hints resolved against the published chart).
//!
//! `sync` writes one file per chart version to
//! `.bundler/carried/<chart>-<version>.json` beside the config; `upgrade`
//! reads it to tell a stale pinned image value from the package's (the seed
//! installs with `--set ui.image.tag=...`, and replaying those values would
//! keep the old images) and to prove, after helm returns, that the release
//! runs exactly these images with these digests. `upgrade` copies the
//! images into the cluster record, so `status` needs no local file.
//! A separate file (not a field of `synced.json`) so that records written by
//! older versions stay readable and nothing else in the sync record moves.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::bundle::format::ProductInfo;
use crate::bundle::reader::BundleReader;
use crate::chart::hints::{self, Hints, MergedValues, PartRole};
use crate::config::load_image::SyncConfig;
use crate::oci::{Digest, Reference};

pub const CARRIED_DIR: &str = "carried";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CarriedChart {
    pub name: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<ProductInfo>,
    /// sha256 of the bundle's `bundle.json` (which lists the digest of every
    /// file and image of the bundle): names the package that was synced.
    pub bundle_digest: String,
    /// The bundle file (or package entry) it came from, for messages.
    pub bundle: String,
    /// The target image registry of the sync (what `global.imageRegistry` gets).
    #[serde(default)]
    pub registry: String,
    pub images: Vec<CarriedImage>,
    /// One entry per hint, resolved against the relocated chart.
    pub image_values: Vec<ImageValues>,
}

/// One image of the bundle as pushed to the target registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CarriedImage {
    /// The original reference (as the bundle records it).
    pub source: String,
    /// Where sync pushed it (`host/repo:tag` or `host/repo@digest`).
    pub image: String,
    /// The manifest (or index) digest pushed.
    pub digest: String,
}

/// The values one hint reads, and the image they render to in the
/// relocated chart.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageValues {
    pub template: String,
    pub image: String,
    pub values: Vec<ValueAt>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ValueAt {
    /// Dotted path in the values a user gives helm (`ui.image.tag`).
    pub path: String,
    /// `registry`, `repository`, `name`, `full`, `tag`, `digest`, `other`.
    pub role: String,
    /// What the relocated chart holds there.
    pub value: String,
}

impl CarriedChart {
    /// What a bundle carries once its chart is relocated for `config`:
    /// `chart` is the relocated chart, `platform_map` the index → platform
    /// manifest digests `--platform` chose.
    pub fn of(
        reader: &BundleReader,
        chart: &crate::chart::Chart,
        config: &SyncConfig,
        platform_map: Option<&HashMap<Digest, Digest>>,
    ) -> anyhow::Result<CarriedChart> {
        let mut images = Vec::new();
        for img in &reader.images {
            let target = config.rewrite.rewrite(&img.reference)?.target;
            let digest = platform_map
                .and_then(|m| m.get(&img.root.digest))
                .unwrap_or(&img.root.digest);
            images.push(CarriedImage {
                source: img.reference.to_string(),
                image: target.to_string(),
                digest: digest.to_string(),
            });
        }
        let hints = match reader.hints()? {
            Some(text) => {
                Hints::parse(&text).with_context(|| format!("{}: hints.yaml", reader.label))?
            }
            None => Hints::default(),
        };
        let merged = MergedValues::of(chart)?;
        let mut image_values = Vec::new();
        for t in &hints.templates {
            let Ok(h) = hints::resolve_one(t, &merged.values) else {
                continue;
            };
            image_values.push(ImageValues {
                template: t.clone(),
                image: h.reference.to_string(),
                values: h
                    .parts
                    .iter()
                    .map(|p| ValueAt {
                        path: user_path(&p.path),
                        role: role_name(p.role).into(),
                        value: p.value.clone(),
                    })
                    .collect(),
            });
        }
        let bundle_json = reader
            .read_file(crate::bundle::format::BUNDLE_JSON)
            .unwrap_or_default();
        Ok(CarriedChart {
            name: chart.name.clone(),
            version: chart.version.clone(),
            product: reader.meta.as_ref().and_then(|m| m.product.clone()),
            bundle_digest: Digest::of(&bundle_json).to_string(),
            bundle: reader.label.clone(),
            registry: config.image_registry().unwrap_or_default(),
            images,
            image_values,
        })
    }

    /// The carried image `image` (a rendered reference) is, if any.
    pub fn find(&self, image: &Reference) -> Option<&CarriedImage> {
        find_image(&self.images, image)
    }

    /// The images as they are named when `global.imageRegistry` is
    /// `registry` instead of the sync target's (`upgrade --registry`, e.g.
    /// the same registry under another name).
    pub fn images_at(&self, registry: &str) -> Vec<CarriedImage> {
        let from = format!("{}/", self.registry);
        self.images
            .iter()
            .map(|c| match c.image.strip_prefix(&from) {
                Some(rest) if !self.registry.is_empty() && registry != self.registry => {
                    CarriedImage {
                        image: format!("{registry}/{rest}"),
                        ..c.clone()
                    }
                }
                _ => c.clone(),
            })
            .collect()
    }

    pub fn path_for(config: &Path, name: &str, version: &str) -> PathBuf {
        crate::state::SyncState::path_for(config)
            .with_file_name(CARRIED_DIR)
            .join(format!("{}-{}.json", safe(name), safe(version)))
    }

    /// Write next to the sync record (atomically).
    pub fn record(&self, config: &Path) -> anyhow::Result<()> {
        let path = Self::path_for(config, &self.name, &self.version);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        crate::atomic_file::write_atomic(&path, &serde_json::to_vec_pretty(self)?)
    }

    /// What sync recorded for chart `name` `version`; `None` when that sync
    /// predates these records (or the chart was never synced here).
    pub fn load(config: &Path, name: &str, version: &str) -> anyhow::Result<Option<CarriedChart>> {
        let path = Self::path_for(config, name, version);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
                anyhow::anyhow!(
                    "{}: not a valid record of what the bundle carries ({e}); run bundler sync again",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        }
    }
}

/// The carried image a reference names: same name, and the same tag and
/// digest where the reference names them (a reference with neither names
/// no particular image).
pub fn find_image<'a>(list: &'a [CarriedImage], image: &Reference) -> Option<&'a CarriedImage> {
    list.iter().find(|c| {
        let Ok(r) = Reference::parse(&c.image) else {
            return false;
        };
        (image.tag.is_some() || image.digest.is_some())
            && r.registry == image.registry
            && r.repository == image.repository
            && (image.tag.is_none() || r.tag == image.tag)
            && image
                .digest
                .as_ref()
                .is_none_or(|d| d.to_string() == c.digest)
    })
}

/// A merged-values path as a user writes it: a subchart's `global` is the
/// parent's `global` (helm copies it down).
fn user_path(path: &[String]) -> String {
    match path.iter().position(|p| p == "global") {
        Some(i) => path[i..].join("."),
        None => path.join("."),
    }
}

fn role_name(r: PartRole) -> &'static str {
    match r {
        PartRole::Registry => "registry",
        PartRole::Repository => "repository",
        PartRole::Name => "name",
        PartRole::Full => "full",
        PartRole::Tag => "tag",
        PartRole::Digest => "digest",
        PartRole::Other => "other",
    }
}

/// File-name safe (chart names and versions are already, mostly).
fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_matches_name_and_whatever_tag_or_digest_the_reference_names() {
        let d = format!("sha256:{}", "a".repeat(64));
        let c = CarriedChart {
            images: vec![CarriedImage {
                source: "docker.io/skoala/ui:v0.19.1".into(),
                image: "reg:5000/skoala/ui:v0.19.1".into(),
                digest: d.clone(),
            }],
            ..Default::default()
        };
        let r = |s: &str| Reference::parse(s).unwrap();
        assert!(c.find(&r("reg:5000/skoala/ui:v0.19.1")).is_some());
        assert!(c.find(&r(&format!("reg:5000/skoala/ui@{d}"))).is_some());
        assert!(c
            .find(&r(&format!("reg:5000/skoala/ui:v0.19.1@{d}")))
            .is_some());
        assert!(c.find(&r("reg:5000/skoala/ui:v0.19.0")).is_none());
        assert!(c
            .find(&r(&format!("reg:5000/skoala/ui@sha256:{}", "b".repeat(64))))
            .is_none());
        assert!(c.find(&r("other:5000/skoala/ui:v0.19.1")).is_none());
        assert_eq!(
            user_path(&["sub".into(), "global".into(), "imageRegistry".into()]),
            "global.imageRegistry"
        );
        // upgrade --registry: the same images under the registry's other name
        let c = CarriedChart {
            registry: "reg:5000".into(),
            ..c
        };
        assert_eq!(
            c.images_at("harbor.site")[0].image,
            "harbor.site/skoala/ui:v0.19.1"
        );
        assert_eq!(c.images_at("harbor.site")[0].digest, d);
        assert_eq!(c.images_at("reg:5000"), c.images);
    }
}
