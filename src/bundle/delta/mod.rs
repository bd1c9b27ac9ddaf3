//! Delta packages: what a site already has, by digest.
//!
//! Products are tens of GB and most layers of an upgrade are already in the
//! site's registry. A delta bundle carries every manifest, config and chart
//! but leaves out the layers the site is known to hold; the digests decide,
//! never names or tags. What the site holds comes from one of:
//! - an [`Inventory`] (`bundler inventory`, or `.bundler/inventory.json`
//!   that `sync` leaves): names and digests read from the site registry;
//! - an earlier offline package, or bundles, that the site synced.
//!
//! Both are read into [`Holdings`] (images with their blobs), which `pack
//! --against` turns into an [`Against`] (blob digest -> where the site has
//! it) and `bundler diff` compares. [`check`] is sync's side: before pushing
//! anything, every external blob must be in the target.
pub mod check;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::format::{AgainstRecord, DeltaInfo, ExternalBlob, ProductInfo};
use super::location::{list_bundles, BundleLocation};
use super::reader::{BundleImage, BundleReader};
use super::writer::BundleSpec;
use crate::oci::media::{self, Descriptor, Parsed};
use crate::oci::{Digest, Reference};

pub const INVENTORY_KIND: &str = "BundlerInventory";
pub const INVENTORY_VERSION: &str = "1";
/// An inventory of thousands of images is a few MB; anything far larger is
/// not one (and is not read into memory).
const MAX_INVENTORY_BYTES: u64 = 64 << 20;

/// What the site registry holds for a product's images, and the charts
/// published. Names and digests only: no credentials, no URLs with users.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Inventory {
    pub kind: String,
    pub format_version: String,
    pub tool: String,
    /// RFC 3339 UTC.
    pub created: String,
    pub images: Vec<InventoryImage>,
    /// Images asked for that the registry does not have (target references).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    #[serde(default)]
    pub charts: Vec<InventoryChart>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InventoryImage {
    /// Reference in the site registry (`host/repo:tag`).
    pub target: String,
    /// The original reference the bundles named, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Digest the target reference resolves to (manifest or index).
    pub digest: Digest,
    pub media_type: String,
    /// Child manifests of an index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub manifests: Vec<Digest>,
    /// Config and layer blobs the registry holds for the image.
    pub blobs: Vec<InventoryBlob>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InventoryBlob {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct InventoryChart {
    pub name: String,
    pub version: String,
    pub kind: String,
    pub chart_ref: String,
}

impl Inventory {
    pub fn new(
        images: Vec<InventoryImage>,
        missing: Vec<String>,
        charts: Vec<InventoryChart>,
    ) -> Self {
        Inventory {
            kind: INVENTORY_KIND.to_string(),
            format_version: INVENTORY_VERSION.to_string(),
            tool: format!("bundler {}", env!("CARGO_PKG_VERSION")),
            created: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            images,
            missing,
            charts,
        }
    }

    /// Read and check an inventory file (bounded in size).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let bytes = read_bounded(path, MAX_INVENTORY_BYTES)?;
        Self::parse(&bytes).with_context(|| format!("inventory {}", path.display()))
    }

    pub fn parse(bytes: &[u8]) -> anyhow::Result<Self> {
        let inv: Inventory = serde_json::from_slice(bytes)
            .context("not a bundler inventory (write one with `bundler inventory`)")?;
        if inv.kind != INVENTORY_KIND {
            bail!("kind is {:?}, not {INVENTORY_KIND:?}", inv.kind);
        }
        if inv.format_version != INVENTORY_VERSION {
            bail!(
                "formatVersion {:?} is not supported by this bundler (supports {INVENTORY_VERSION}): upgrade bundler",
                inv.format_version
            );
        }
        Ok(inv)
    }

    /// Keep the images of `older` this inventory does not list again (a
    /// site that synced several products keeps all of them).
    pub fn merge_older(&mut self, older: Inventory) {
        let listed: BTreeSet<String> = self.images.iter().map(|i| i.target.clone()).collect();
        self.images.extend(
            older
                .images
                .into_iter()
                .filter(|i| !listed.contains(&i.target)),
        );
        self.images.sort_by(|a, b| a.target.cmp(&b.target));
        let charts: BTreeSet<(String, String)> = self
            .charts
            .iter()
            .map(|c| (c.name.clone(), c.version.clone()))
            .collect();
        self.charts.extend(
            older
                .charts
                .into_iter()
                .filter(|c| !charts.contains(&(c.name.clone(), c.version.clone()))),
        );
    }

    /// Write atomically (temp name + rename).
    pub fn write(&self, path: &Path) -> anyhow::Result<()> {
        let mut bytes = serde_json::to_vec_pretty(self)?;
        bytes.push(b'\n');
        let tmp = path.with_extension(format!("json.partial-{}", std::process::id()));
        let result = std::fs::write(&tmp, &bytes)
            .with_context(|| format!("writing {}", tmp.display()))
            .and_then(|()| {
                std::fs::rename(&tmp, path)
                    .with_context(|| format!("renaming to {}", path.display()))
            });
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

fn read_bounded(path: &Path, max: u64) -> anyhow::Result<Vec<u8>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        bail!("{}: not a regular file", path.display());
    }
    if meta.len() > max {
        bail!(
            "{}: {} bytes, more than the {max} bytes an inventory may have",
            path.display(),
            meta.len()
        );
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    f.take(max + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// One image as some side holds it (a package's bundle, or a registry).
#[derive(Clone, Debug)]
pub struct HeldImage {
    /// The original reference (an inventory's target when it has none).
    pub reference: String,
    /// `host/repo` in the site registry, when known (inventories).
    pub site_repository: Option<String>,
    pub digest: Digest,
    /// Bytes of the manifest documents (root and children), when known.
    pub manifest_bytes: u64,
    pub blobs: Vec<HeldBlob>,
}

#[derive(Clone, Debug)]
pub struct HeldBlob {
    pub digest: Digest,
    pub size: u64,
    pub media_type: String,
    pub config: bool,
}

/// Images read from inventories, packages or bundles.
#[derive(Clone, Debug, Default)]
pub struct Holdings {
    pub records: Vec<AgainstRecord>,
    pub images: Vec<HeldImage>,
}

impl Holdings {
    /// Read each path: an inventory (JSON), a `*.bundle.tar`, a directory
    /// of bundles, or an offline package.
    pub fn load(paths: &[PathBuf]) -> anyhow::Result<Self> {
        let mut h = Holdings::default();
        for p in paths {
            h.add(p).with_context(|| {
                format!("reading {} (an inventory, package or bundles)", p.display())
            })?;
        }
        Ok(h)
    }

    fn add(&mut self, path: &Path) -> anyhow::Result<()> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| path.display().to_string());
        if !path.is_dir() && looks_like_json(path)? {
            let bytes = read_bounded(path, MAX_INVENTORY_BYTES)?;
            let inv = Inventory::parse(&bytes)?;
            self.records.push(AgainstRecord {
                kind: "inventory".into(),
                name,
                sha256: Some(Digest::of(&bytes)),
                product: None,
            });
            self.images
                .extend(inv.images.iter().map(held_from_inventory));
            return Ok(());
        }
        let locations = list_bundles(path)?;
        if locations.is_empty() {
            bail!("no bundles in it");
        }
        let in_package = locations
            .iter()
            .any(|l| matches!(l, BundleLocation::InPackage { .. }));
        let mut product = None;
        for l in &locations {
            let r = l.open()?;
            product = product.or_else(|| r.meta.as_ref().and_then(|m| m.product.clone()));
            self.images.extend(r.images.iter().map(held_from_bundle));
        }
        self.records.push(AgainstRecord {
            kind: if in_package { "package" } else { "bundles" }.into(),
            name,
            sha256: None,
            product,
        });
        Ok(())
    }

    /// Every blob digest held, with its size.
    pub fn blob_sizes(&self) -> HashMap<&Digest, u64> {
        self.images
            .iter()
            .flat_map(|i| i.blobs.iter().map(|b| (&b.digest, b.size)))
            .collect()
    }
}

fn looks_like_json(path: &Path) -> anyhow::Result<bool> {
    let mut f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut head = [0u8; 64];
    let n = f.read(&mut head)?;
    Ok(head[..n]
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{'))
}

/// The bundles of a directory, a single bundle, or an offline package,
/// read in place.
pub fn open_bundles(path: &Path) -> anyhow::Result<Vec<BundleReader>> {
    list_bundles(path)?.iter().map(|l| l.open()).collect()
}

fn held_from_inventory(i: &InventoryImage) -> HeldImage {
    let repository = Reference::parse(&i.target)
        .ok()
        .map(|r| format!("{}/{}", r.registry, r.repository));
    HeldImage {
        reference: i.source.clone().unwrap_or_else(|| i.target.clone()),
        site_repository: repository,
        digest: i.digest.clone(),
        manifest_bytes: 0,
        blobs: i
            .blobs
            .iter()
            .map(|b| HeldBlob {
                digest: b.digest.clone(),
                size: b.size,
                media_type: b.media_type.clone(),
                config: is_config_type(&b.media_type),
            })
            .collect(),
    }
}

fn is_config_type(media_type: &str) -> bool {
    media_type == media::DOCKER_CONFIG || media_type.ends_with(".config.v1+json")
}

/// Every blob an image's manifests name (config first), external or not.
pub fn manifest_blobs(img: &BundleImage) -> Vec<(Descriptor, bool)> {
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for doc in std::iter::once(&img.root).chain(img.children.iter()) {
        if let Ok(Parsed::Manifest { config, layers, .. }) = doc.parse() {
            if seen.insert(config.digest.clone()) {
                out.push((config, true));
            }
            for l in layers {
                if seen.insert(l.digest.clone()) {
                    out.push((l, false));
                }
            }
        }
    }
    out
}

fn held_from_bundle(img: &BundleImage) -> HeldImage {
    HeldImage {
        reference: img.reference.to_string(),
        site_repository: None,
        digest: img.root.digest.clone(),
        manifest_bytes: std::iter::once(&img.root)
            .chain(img.children.iter())
            .map(|d| d.bytes.len() as u64)
            .sum(),
        blobs: manifest_blobs(img)
            .into_iter()
            .map(|(d, config)| HeldBlob {
                digest: d.digest,
                size: d.size,
                media_type: d.media_type,
                config,
            })
            .collect(),
    }
}

/// Where the site holds a blob, for `pack --against`.
#[derive(Clone, Debug)]
struct SiteBlob {
    size: u64,
    repository: Option<String>,
    image: Option<String>,
}

/// What `pack --against` leaves out: blob digest -> where the site has it.
#[derive(Clone, Debug, Default)]
pub struct Against {
    pub records: Vec<AgainstRecord>,
    blobs: HashMap<Digest, SiteBlob>,
}

impl Against {
    pub fn load(paths: &[PathBuf]) -> anyhow::Result<Self> {
        Ok(Self::from_holdings(Holdings::load(paths)?))
    }

    pub fn from_holdings(h: Holdings) -> Self {
        let mut blobs: HashMap<Digest, SiteBlob> = HashMap::new();
        for img in &h.images {
            for b in &img.blobs {
                let e = blobs.entry(b.digest.clone()).or_insert(SiteBlob {
                    size: b.size,
                    repository: None,
                    image: None,
                });
                // A repository of the site itself beats an original name.
                if e.repository.is_none() {
                    e.repository = img.site_repository.clone();
                }
                if e.image.is_none() && img.site_repository.is_none() {
                    e.image = Some(img.reference.clone());
                }
            }
        }
        Against {
            records: h.records,
            blobs,
        }
    }

    pub fn blob_count(&self) -> usize {
        self.blobs.len()
    }

    /// The delta record for a bundle: each layer of `spec` whose exact
    /// digest (and size) the site has. Manifests and configs are always
    /// carried. `None` when nothing can be left out (a full bundle then).
    pub fn plan(&self, spec: &BundleSpec) -> Option<DeltaInfo> {
        let mut external: BTreeMap<Digest, ExternalBlob> = BTreeMap::new();
        for img in &spec.images {
            for doc in std::iter::once(&img.root).chain(img.children.iter()) {
                let Ok(Parsed::Manifest { layers, .. }) = doc.parse() else {
                    continue;
                };
                for l in layers {
                    let Some(site) = self.blobs.get(&l.digest) else {
                        continue;
                    };
                    if site.size != l.size {
                        tracing::warn!(
                            "blob {}: {} bytes in the --against files, {} in manifest {}: carried",
                            l.digest,
                            site.size,
                            l.size,
                            doc.digest
                        );
                        continue;
                    }
                    external.entry(l.digest.clone()).or_insert(ExternalBlob {
                        digest: l.digest.clone(),
                        size: l.size,
                        media_type: l.media_type.clone(),
                        repository: site.repository.clone(),
                        image: site.image.clone(),
                    });
                }
            }
        }
        if external.is_empty() {
            return None;
        }
        Some(DeltaInfo {
            packed_against: self.records.clone(),
            external: external.into_values().collect(),
        })
    }
}

/// A delta bundle's external blobs, counted: (external, all config/layer
/// blobs, external bytes).
pub fn delta_counts(reader: &BundleReader) -> Option<(usize, usize, u64)> {
    let delta = reader.meta.as_ref()?.delta.as_ref()?;
    let mut all = BTreeSet::new();
    for img in &reader.images {
        for (d, _) in manifest_blobs(img) {
            all.insert(d.digest);
        }
    }
    let ext: Vec<&ExternalBlob> = delta
        .external
        .iter()
        .filter(|e| all.contains(&e.digest))
        .collect();
    Some((ext.len(), all.len(), ext.iter().map(|e| e.size).sum()))
}

/// "delta: 37 of 40 blobs external (9.2 GiB not carried)".
pub fn describe_delta(reader: &BundleReader) -> Option<String> {
    let (ext, all, bytes) = delta_counts(reader)?;
    Some(format!(
        "delta: {ext} of {all} blobs external ({} not carried)",
        crate::progress::human_bytes(bytes)
    ))
}

/// The product a set of records names, for messages.
pub fn describe_records(records: &[AgainstRecord]) -> String {
    records
        .iter()
        .map(|r| match &r.product {
            Some(ProductInfo { name, version }) => {
                format!("{} {} ({name} {version})", r.kind, r.name)
            }
            None => format!("{} {}", r.kind, r.name),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::reader::ManifestDoc;
    use crate::bundle::writer::ImageSpec;

    fn digest(n: u8) -> Digest {
        Digest::of(&[n])
    }

    fn manifest(config: (&Digest, u64), layers: &[(&Digest, u64)]) -> ManifestDoc {
        let layer = |(d, s): &(&Digest, u64)| serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d.to_string(), "size": s});
        let bytes = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config.0.to_string(), "size": config.1},
            "layers": layers.iter().map(layer).collect::<Vec<_>>(),
        }))
        .unwrap();
        ManifestDoc::new(media::OCI_MANIFEST, bytes)
    }

    fn held(blobs: &[(&Digest, u64, bool)]) -> Holdings {
        Holdings {
            records: vec![AgainstRecord {
                kind: "inventory".into(),
                name: "site.json".into(),
                sha256: None,
                product: None,
            }],
            images: vec![HeldImage {
                reference: "example.com/a/b:1".into(),
                site_repository: Some("site.example:5000/a/b".into()),
                digest: digest(99),
                manifest_bytes: 0,
                blobs: blobs
                    .iter()
                    .map(|(d, size, config)| HeldBlob {
                        digest: (*d).clone(),
                        size: *size,
                        media_type: String::new(),
                        config: *config,
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn plan_leaves_out_only_layers_the_site_has_by_exact_digest_and_size() {
        let (config, kept, same, resized) = (digest(1), digest(2), digest(3), digest(4));
        let root = manifest(
            (&config, 10),
            &[(&kept, 100), (&same, 200), (&resized, 300)],
        );
        let spec = BundleSpec {
            images: vec![ImageSpec {
                reference: Reference::parse("example.com/a/b:2").unwrap(),
                root,
                children: Vec::new(),
                platform: None,
                source_index: None,
                docker: None,
            }],
            ..Default::default()
        };
        // The site has the config (carried anyway), `same`, and `resized`
        // under another size (not the same blob: carried).
        let against = Against::from_holdings(held(&[
            (&config, 10, true),
            (&same, 200, false),
            (&resized, 1, false),
        ]));
        let delta = against.plan(&spec).expect("a delta");
        let ext: Vec<&Digest> = delta.external.iter().map(|e| &e.digest).collect();
        assert_eq!(ext, vec![&same]);
        assert_eq!(delta.external[0].size, 200);
        assert_eq!(
            delta.external[0].repository.as_deref(),
            Some("site.example:5000/a/b")
        );
        assert_eq!(delta.packed_against[0].name, "site.json");
        // Nothing in common: no delta at all (a normal bundle).
        assert!(Against::from_holdings(held(&[(&digest(7), 1, false)]))
            .plan(&spec)
            .is_none());
    }

    #[test]
    fn inventory_parse_refuses_other_files_and_newer_versions() {
        let inv = Inventory::new(Vec::new(), Vec::new(), Vec::new());
        let mut v = serde_json::to_value(&inv).unwrap();
        assert!(Inventory::parse(&serde_json::to_vec(&v).unwrap()).is_ok());
        v["formatVersion"] = "2".into();
        let e = Inventory::parse(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(format!("{e:#}").contains("upgrade bundler"), "{e:#}");
        v["formatVersion"] = INVENTORY_VERSION.into();
        v["kind"] = "Other".into();
        assert!(Inventory::parse(&serde_json::to_vec(&v).unwrap()).is_err());
        let e = Inventory::parse(b"{\"images\": []}").unwrap_err();
        assert!(format!("{e:#}").contains("bundler inventory"), "{e:#}");
    }

    #[test]
    fn merge_keeps_older_images_not_listed_again() {
        let image = |target: &str, n: u8| InventoryImage {
            target: target.into(),
            source: None,
            digest: digest(n),
            media_type: media::OCI_MANIFEST.into(),
            manifests: Vec::new(),
            blobs: Vec::new(),
        };
        let older = Inventory::new(
            vec![image("r/a:1", 1), image("r/b:1", 2)],
            Vec::new(),
            Vec::new(),
        );
        let mut newer = Inventory::new(vec![image("r/a:1", 3)], Vec::new(), Vec::new());
        newer.merge_older(older);
        let got: Vec<(&str, &Digest)> = newer
            .images
            .iter()
            .map(|i| (i.target.as_str(), &i.digest))
            .collect();
        assert_eq!(got, vec![("r/a:1", &digest(3)), ("r/b:1", &digest(2))]);
    }
}
