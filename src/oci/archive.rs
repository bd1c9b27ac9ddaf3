//! Image sources on disk for `pack`: `docker save` archives (legacy layout
//! `<id>/layer.tar` + `<hex>.json`, and Docker ≥ 25's OCI-style archives
//! with `index.json`) and OCI image layouts (directory or tar).
//!
//! Archives are never unpacked: a tar is indexed by its headers with the
//! same validation as bundles ([`crate::bundle::reader::index_tar`]), and
//! blobs are located as byte ranges of files ([`BlobLocation`]).
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use bytes::Bytes;

use super::media::{self, Descriptor, Parsed};
use super::{Digest, Reference};
use crate::bundle::reader::{
    digest_from_name, hash_range, index_tar_with_links, reference_from_annotations,
    synthesize_docker_manifest, DockerArchiveEntry, ManifestDoc, TarKind, MAX_SMALL_FILE,
};

/// Where a blob's bytes are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlobLocation {
    /// `len` bytes at `offset` of the file `path`.
    File {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
}

impl BlobLocation {
    /// Read the whole blob (for small blobs only).
    pub fn read_small(&self) -> anyhow::Result<Vec<u8>> {
        match self {
            BlobLocation::File { path, offset, len } => {
                if *len > MAX_SMALL_FILE {
                    bail!(
                        "{}: blob of {len} bytes is too big to read in memory",
                        path.display()
                    );
                }
                let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
                let mut buf = vec![0u8; *len as usize];
                f.read_exact_at(&mut buf, *offset)
                    .with_context(|| format!("reading {}", path.display()))?;
                Ok(buf)
            }
        }
    }
}

/// One image of an archive.
#[derive(Clone, Debug)]
pub struct ArchiveImage {
    /// The reference the archive names it by (None when untagged).
    pub reference: Option<Reference>,
    /// The manifest or index (byte for byte as stored, or synthesized for a
    /// legacy docker archive).
    pub root: ManifestDoc,
    /// Child manifests of an index root that are present in the archive.
    pub children: Vec<ManifestDoc>,
    /// Children of an index root that the archive does not hold (e.g. other
    /// platforms in a `docker save` of a multi-platform image).
    pub missing_children: Vec<Descriptor>,
    /// Every config/layer blob of the image (deduplicated) and where it is.
    pub blobs: Vec<(Descriptor, BlobLocation)>,
    /// True when the manifest was synthesized (legacy docker archive).
    pub synthesized: bool,
    /// An OCI layout entry named only by a bare word (`ref.name: 1.2.0`,
    /// no `io.containerd.image.name`): `reference` reads it the Docker way
    /// (`docker.io/library/1.2.0`), but it is most likely a tag (what
    /// `skopeo copy ... oci:DIR:1.2.0` writes). Pack matches it against the
    /// chart's image names by tag (issue 22).
    pub plain_tag: Option<String>,
}

/// Files of an archive: name → location.
struct Files {
    what: String,
    map: BTreeMap<String, BlobLocation>,
}

impl Files {
    fn get(&self, name: &str) -> anyhow::Result<&BlobLocation> {
        let key = name.trim_start_matches("./");
        self.map
            .get(key)
            .with_context(|| format!("{}: {name:?} is not in the archive", self.what))
    }

    fn read(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        self.get(name)?
            .read_small()
            .with_context(|| format!("{}: reading {name}", self.what))
    }
}

fn from_dir(dir: &Path) -> anyhow::Result<Files> {
    let what = format!("image layout {}", dir.display());
    let mut map = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    let mut count = 0usize;
    while let Some(rel) = stack.pop() {
        let abs = dir.join(&rel);
        for e in
            std::fs::read_dir(&abs).with_context(|| format!("{what}: listing {}", abs.display()))?
        {
            let e = e?;
            let ft = e.file_type()?;
            let name = rel.join(e.file_name());
            let name_s = name
                .to_str()
                .with_context(|| format!("{what}: non-UTF-8 file name {}", name.display()))?
                .to_string();
            count += 1;
            if count > crate::bundle::reader::MAX_ENTRIES {
                bail!("{what}: too many files");
            }
            if ft.is_dir() {
                stack.push(name);
            } else if ft.is_file() {
                let len = e.metadata()?.len();
                map.insert(
                    name_s,
                    BlobLocation::File {
                        path: dir.join(&name),
                        offset: 0,
                        len,
                    },
                );
            } else {
                bail!("{what}: {name_s} is not a regular file or directory: refused");
            }
        }
    }
    Ok(Files { what, map })
}

fn from_tar(path: &Path) -> anyhow::Result<Files> {
    let what = format!("image archive {}", path.display());
    let f = File::open(path).with_context(|| format!("opening {what}"))?;
    let len = f.metadata()?.len();
    let mut map = BTreeMap::new();
    for e in index_tar_with_links(&f, 0, len, &what)? {
        if e.kind == TarKind::File {
            map.insert(
                e.name,
                BlobLocation::File {
                    path: path.to_path_buf(),
                    offset: e.extent.offset,
                    len: e.extent.size,
                },
            );
        }
    }
    Ok(Files { what, map })
}

/// Open a `docker save` archive or an OCI image layout (dir or tar) and
/// list its images. Reads only headers and small JSON files, except for
/// legacy docker archives, whose layer files must be hashed once to learn
/// their digests.
pub fn open_archive(path: &Path) -> anyhow::Result<Vec<ArchiveImage>> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("image archive {}: not found", path.display()))?;
    let files = if meta.is_dir() {
        from_dir(path)?
    } else {
        from_tar(path)?
    };
    if files.map.contains_key("index.json") {
        open_oci(&files)
    } else if files.map.contains_key("manifest.json") {
        open_legacy_docker(&files)
    } else {
        bail!(
            "{}: neither index.json (OCI layout / docker save ≥ 25) nor manifest.json (docker save): not an image archive",
            files.what
        )
    }
}

fn blob_location<'a>(files: &'a Files, d: &Digest) -> Option<&'a BlobLocation> {
    files.map.get(&d.layout_path())
}

fn load_doc(files: &Files, desc: &Descriptor, from: &str) -> anyhow::Result<ManifestDoc> {
    let loc = blob_location(files, &desc.digest).with_context(|| {
        format!(
            "{}: {from} points at {}, which is not in the archive",
            files.what, desc.digest
        )
    })?;
    let bytes = loc.read_small()?;
    let got = Digest::of(&bytes);
    if got != desc.digest {
        bail!(
            "{}: manifest {} is corrupted (content digest {got})",
            files.what,
            desc.digest
        );
    }
    let parsed = media::parse(&bytes, Some(&desc.media_type))
        .with_context(|| format!("{}: manifest {}", files.what, desc.digest))?;
    Ok(ManifestDoc {
        digest: desc.digest.clone(),
        media_type: parsed.media_type().to_string(),
        bytes: Bytes::from(bytes),
    })
}

fn add_blobs(
    files: &Files,
    out: &mut Vec<(Descriptor, BlobLocation)>,
    seen: &mut BTreeSet<Digest>,
    parsed: &Parsed,
    manifest: &Digest,
) -> anyhow::Result<()> {
    for b in parsed.blobs() {
        let loc = blob_location(files, &b.digest).with_context(|| {
            format!(
                "{}: blob {} of manifest {manifest} is not in the archive",
                files.what, b.digest
            )
        })?;
        let BlobLocation::File { len, .. } = loc;
        if *len != b.size {
            bail!(
                "{}: blob {} is {len} bytes but manifest {manifest} says {}",
                files.what,
                b.digest,
                b.size
            );
        }
        if seen.insert(b.digest.clone()) {
            out.push((b.clone(), loc.clone()));
        }
    }
    Ok(())
}

/// `ref.name` when it is a bare tag (what `skopeo copy ... oci:DIR:1.2.0`
/// and `umoci` write) and nothing else names the image.
fn plain_tag_name(ann: Option<&std::collections::BTreeMap<String, String>>) -> Option<String> {
    let ann = ann?;
    if ann.contains_key(media::ANNOTATION_CONTAINERD_NAME) {
        return None;
    }
    let t = ann.get(media::ANNOTATION_REF_NAME)?;
    let is_tag = !t.is_empty()
        && t.len() <= 128
        && !t.contains(['/', ':', '@'])
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !t.starts_with(['.', '-']);
    is_tag.then(|| t.clone())
}

fn open_oci(files: &Files) -> anyhow::Result<Vec<ArchiveImage>> {
    let raw = files.read("index.json")?;
    let manifests = match media::parse(&raw, Some(media::OCI_INDEX))
        .with_context(|| format!("{}: index.json is malformed", files.what))?
    {
        Parsed::Index { manifests, .. } => manifests,
        Parsed::Manifest { .. } => bail!("{}: index.json is not an index", files.what),
    };
    let mut out = Vec::new();
    for desc in manifests {
        let plain_tag = plain_tag_name(desc.annotations.as_ref());
        let reference = reference_from_annotations(desc.annotations.as_ref())
            .with_context(|| format!("{}: index.json entry {}", files.what, desc.digest))?;
        let root = load_doc(files, &desc, "index.json")?;
        let parsed = root.parse()?;
        let mut blobs = Vec::new();
        let mut seen = BTreeSet::new();
        let mut children = Vec::new();
        let mut missing_children = Vec::new();
        match &parsed {
            Parsed::Manifest { .. } => {
                add_blobs(files, &mut blobs, &mut seen, &parsed, &root.digest)?
            }
            Parsed::Index { manifests, .. } => {
                for child in manifests {
                    if blob_location(files, &child.digest).is_none() {
                        missing_children.push(child.clone());
                        continue;
                    }
                    let doc = load_doc(files, child, &format!("index {}", root.digest))?;
                    let p = doc.parse()?;
                    if let Parsed::Index { .. } = p {
                        bail!(
                            "{}: nested index {} is not supported",
                            files.what,
                            doc.digest
                        );
                    }
                    // A present manifest whose blobs are absent (docker save
                    // of one platform keeps e.g. attestation manifests
                    // without their blobs) counts as missing.
                    let all_present = p
                        .blobs()
                        .iter()
                        .all(|b| blob_location(files, &b.digest).is_some());
                    if !all_present {
                        missing_children.push(child.clone());
                        continue;
                    }
                    add_blobs(files, &mut blobs, &mut seen, &p, &doc.digest)?;
                    children.push(doc);
                }
            }
        }
        out.push(ArchiveImage {
            reference,
            root,
            children,
            missing_children,
            blobs,
            synthesized: false,
            plain_tag,
        });
    }
    Ok(out)
}

fn open_legacy_docker(files: &Files) -> anyhow::Result<Vec<ArchiveImage>> {
    let raw = files.read("manifest.json")?;
    let entries: Vec<DockerArchiveEntry> = serde_json::from_slice(&raw)
        .with_context(|| format!("{}: manifest.json is malformed", files.what))?;
    let mut out = Vec::new();
    let mut buf = Vec::new();
    let mut cache: BTreeMap<String, Digest> = BTreeMap::new();
    let mut describe =
        |name: &str, media_type: Option<&str>| -> anyhow::Result<(Descriptor, BlobLocation)> {
            let loc = files.get(name)?.clone();
            let BlobLocation::File { path, offset, len } = &loc;
            let key = name.trim_start_matches("./").to_string();
            let digest = match cache.get(&key) {
                Some(d) => d.clone(),
                None => {
                    let f = File::open(path)?;
                    let d = hash_range(&f, *offset, *len, &mut buf)
                        .with_context(|| format!("{}: hashing {name}", files.what))?;
                    if let Some(claimed) = digest_from_name(&key) {
                        if claimed != d && !key.ends_with("layer.tar") {
                            bail!(
                            "{}: {name} is corrupted: content digest {d} does not match its name",
                            files.what
                        );
                        }
                    }
                    cache.insert(key, d.clone());
                    d
                }
            };
            let media_type = match media_type {
                Some(m) => m.to_string(),
                None => {
                    let f = File::open(path)?;
                    let mut magic = [0u8; 2];
                    if *len >= 2
                        && f.read_exact_at(&mut magic, *offset).is_ok()
                        && magic == [0x1f, 0x8b]
                    {
                        media::DOCKER_LAYER_GZIP.to_string()
                    } else {
                        media::DOCKER_LAYER_TAR.to_string()
                    }
                }
            };
            Ok((
                Descriptor {
                    media_type,
                    digest,
                    size: *len,
                    platform: None,
                    annotations: None,
                },
                loc,
            ))
        };
    for (i, e) in entries.iter().enumerate() {
        let (config, cloc) = describe(&e.config, Some(media::DOCKER_CONFIG))?;
        let mut layers = Vec::new();
        for l in &e.layers {
            layers.push(describe(l, None)?);
        }
        let root = synthesize_docker_manifest(
            &config,
            &layers.iter().map(|(d, _)| d.clone()).collect::<Vec<_>>(),
        );
        let mut blobs = vec![(config, cloc)];
        let mut seen: BTreeSet<Digest> = blobs.iter().map(|(d, _)| d.digest.clone()).collect();
        for (d, l) in layers {
            if seen.insert(d.digest.clone()) {
                blobs.push((d, l));
            }
        }
        let tags = e.repo_tags.clone().unwrap_or_default();
        let refs: Vec<Option<Reference>> = if tags.is_empty() {
            vec![None]
        } else {
            tags.iter()
                .map(|t| {
                    Reference::parse(t).map(Some).with_context(|| {
                        format!("{}: manifest.json entry {i} RepoTags", files.what)
                    })
                })
                .collect::<anyhow::Result<_>>()?
        };
        for reference in refs {
            out.push(ArchiveImage {
                reference,
                root: root.clone(),
                children: Vec::new(),
                missing_children: Vec::new(),
                blobs: blobs.clone(),
                synthesized: true,
                plain_tag: None,
            });
        }
    }
    Ok(out)
}

impl ArchiveImage {
    /// An [`crate::bundle::writer::ImageSpec`] that keeps this image as it
    /// is in the archive (an index root keeps every child present; missing
    /// ones are recorded as omitted by the writer), under `reference`. The
    /// docker `manifest.json` view uses the manifest root, or the
    /// linux/amd64 child (else the first child) of an index.
    pub fn image_spec(
        &self,
        reference: Reference,
    ) -> anyhow::Result<crate::bundle::writer::ImageSpec> {
        let parsed = self.root.parse()?;
        let (docker_manifest, platform) = match &parsed {
            Parsed::Manifest { .. } => (Some(parsed.clone()), self.config_platform(&parsed)),
            Parsed::Index { manifests, .. } => {
                let amd64 = media::Platform::parse("linux/amd64")?;
                let pick = manifests
                    .iter()
                    .filter(|d| self.children.iter().any(|c| c.digest == d.digest))
                    .find(|d| d.platform.as_ref().is_some_and(|p| amd64.matches(p)))
                    .or_else(|| {
                        manifests
                            .iter()
                            .find(|d| self.children.iter().any(|c| c.digest == d.digest))
                    });
                let doc = pick.and_then(|d| self.children.iter().find(|c| c.digest == d.digest));
                (doc.map(|d| d.parse()).transpose()?, None)
            }
        };
        let docker = docker_manifest.and_then(|m| match m {
            Parsed::Manifest { config, layers, .. } => Some((
                config.digest,
                layers.into_iter().map(|l| l.digest).collect(),
            )),
            Parsed::Index { .. } => None,
        });
        Ok(crate::bundle::writer::ImageSpec {
            reference,
            root: self.root.clone(),
            children: self.children.clone(),
            platform,
            source_index: None,
            docker,
        })
    }

    /// os/arch from the (small) config of a manifest root.
    fn config_platform(&self, parsed: &Parsed) -> Option<media::Platform> {
        #[derive(serde::Deserialize)]
        struct C {
            os: Option<String>,
            architecture: Option<String>,
            variant: Option<String>,
        }
        let Parsed::Manifest { config, .. } = parsed else {
            return None;
        };
        let (_, loc) = self.blobs.iter().find(|(d, _)| d.digest == config.digest)?;
        let BlobLocation::File { len, .. } = loc;
        if *len > 1 << 20 {
            return None;
        }
        let c: C = serde_json::from_slice(&loc.read_small().ok()?).ok()?;
        Some(media::Platform {
            os: c.os?,
            architecture: c.architecture?,
            variant: c.variant.filter(|v| !v.is_empty()),
        })
    }
}
