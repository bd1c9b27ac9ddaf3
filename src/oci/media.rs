//! Media types and the parts of manifests and indexes that bundler needs to
//! walk an image: its children (config, layers, platform manifests). The
//! manifest bytes themselves are always kept as served, never re-serialised,
//! so that digests survive.
use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::Digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
pub const HELM_CHART_CONTENT: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

/// The `Accept` header for manifest requests: every manifest kind we handle.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Annotation holding the full original reference in an index.json entry.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation for the same (read by `ctr image import`).
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_MANIFEST_LIST
}

pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: Some(v.to_string()),
            }),
            _ => bail!(
                "invalid platform {s:?}: expected os/arch or os/arch/variant (e.g. linux/amd64)"
            ),
        }
    }

    /// Whether a manifest for `other` satisfies a request for `self`
    /// (a request without variant accepts any variant).
    pub fn matches(&self, other: &Platform) -> bool {
        self.os == other.os
            && self.architecture == other.architecture
            && (self.variant.is_none() || self.variant == other.variant)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// The manifest of platform `want` among an index's `manifests`, or an
/// error naming `image` and the platforms the index does have.
pub fn find_platform<'a>(
    manifests: &'a [Descriptor],
    want: &Platform,
    image: &str,
) -> anyhow::Result<&'a Descriptor> {
    manifests
        .iter()
        .find(|m| m.platform.as_ref().is_some_and(|p| want.matches(p)))
        .with_context(|| {
            let have: Vec<String> = manifests
                .iter()
                .filter_map(|m| m.platform.as_ref().map(|p| p.to_string()))
                .collect();
            format!("{image} has no {want} image (it has: {})", have.join(", "))
        })
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType", default)]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
}

/// The fields of an image manifest or index that we read (unknown fields are
/// ignored: the bytes are what we keep).
#[derive(Debug, Deserialize)]
struct RawManifest {
    #[serde(rename = "schemaVersion")]
    schema_version: Option<u32>,
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// A parsed manifest or index.
#[derive(Clone, Debug)]
pub enum Parsed {
    Manifest {
        media_type: String,
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
    Index {
        media_type: String,
        manifests: Vec<Descriptor>,
    },
}

impl Parsed {
    pub fn media_type(&self) -> &str {
        match self {
            Parsed::Manifest { media_type, .. } | Parsed::Index { media_type, .. } => media_type,
        }
    }

    /// Blobs a manifest references (config first, then layers); empty for an index.
    pub fn blobs(&self) -> Vec<&Descriptor> {
        match self {
            Parsed::Manifest { config, layers, .. } => {
                std::iter::once(config).chain(layers.iter()).collect()
            }
            Parsed::Index { .. } => Vec::new(),
        }
    }
}

/// Parse a manifest or index. `hint` is the media type the registry or the
/// referring descriptor gave (used when the document has no `mediaType`).
pub fn parse(bytes: &[u8], hint: Option<&str>) -> anyhow::Result<Parsed> {
    let raw: RawManifest = serde_json::from_slice(bytes)
        .context("manifest is not valid JSON of a manifest or index")?;
    if raw.schema_version != Some(2) {
        bail!(
            "unsupported manifest schemaVersion {:?} (only schema 2 images are supported)",
            raw.schema_version
        );
    }
    let media_type = raw
        .media_type
        .clone()
        .filter(|m| !m.is_empty())
        .or_else(|| {
            hint.map(str::to_string)
                .filter(|m| !m.is_empty() && !m.starts_with("application/json"))
        })
        .unwrap_or_else(|| {
            if raw.manifests.is_some() {
                OCI_INDEX.to_string()
            } else {
                OCI_MANIFEST.to_string()
            }
        });
    if is_index(&media_type) {
        let manifests = raw.manifests.context("index has no \"manifests\"")?;
        Ok(Parsed::Index {
            media_type,
            manifests,
        })
    } else if is_manifest(&media_type) {
        let config = raw.config.context("manifest has no \"config\"")?;
        Ok(Parsed::Manifest {
            media_type,
            config,
            layers: raw.layers.unwrap_or_default(),
        })
    } else {
        bail!("unsupported manifest media type {media_type:?}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_index_and_manifest() {
        let idx = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0,"platform":{"os":"linux","architecture":"arm64","variant":"v8"}}]}"#;
        match parse(idx, None).unwrap() {
            Parsed::Index { manifests, .. } => {
                let p = manifests[0].platform.clone().unwrap();
                assert!(Platform::parse("linux/arm64").unwrap().matches(&p));
                assert!(!Platform::parse("linux/amd64").unwrap().matches(&p));
            }
            _ => panic!(),
        }
        let m = br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#;
        assert!(matches!(
            parse(m, Some(DOCKER_MANIFEST)).unwrap(),
            Parsed::Manifest { .. }
        ));
        assert!(parse(b"{\"schemaVersion\":1}", None).is_err());
    }
}
