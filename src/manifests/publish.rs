//! What sync does with a manifests bundle, after its images are pushed:
//! relocate the tree, prove it (build or read the relocated copy, every
//! image must name the target registry and be there), then publish it:
//!
//! - LOCAL target: `<path>/<name>-<version>/`, the tree as carried with the
//!   relocated files, ready for `kubectl apply -f` / `-k` (written beside it
//!   first and renamed into place, so a failed run leaves nothing);
//! - OCI target: an OCI artifact `<host>/<path>/<name>:<version>` with
//!   `artifactType` [`ARTIFACT_TYPE`], an empty config and one layer, the
//!   relocated tree as an uncompressed tar ([`TREE_LAYER_MEDIA_TYPE`]), so
//!   that helm, which checks for its own media types, does not mistake it
//!   for a chart; [`pull`] brings it back.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use bytes::Bytes;
use serde::Serialize;

use super::hints::{self, ManifestHint};
use super::relocate::{self, Edit};
use super::state::SyncedManifests;
use super::{ManifestsRecord, Tree, TreeKind, ARTIFACT_TYPE, MANIFESTS_DIR, MANIFESTS_JSON};
use super::{MANIFESTS_FORMAT_VERSION, TREE_LAYER_MEDIA_TYPE};
use crate::bundle::reader::{check_entry_name, BundleReader};
use crate::config::load_image::{RepoKind, SyncConfig};
use crate::oci::media;
use crate::oci::registry::{BlobSource, RegistryClient};
use crate::oci::{Digest, Reference};
use crate::progress::Progress;

/// A manifests bundle read back: its record, tree and hints.
pub struct Carried {
    pub record: ManifestsRecord,
    /// Digest of each image the bundle holds, by reference.
    pub digests: BTreeMap<Reference, Digest>,
    pub tree: Tree,
    pub hints: Vec<ManifestHint>,
}

/// The manifests a bundle carries; `None` for chart and image bundles.
pub fn read_bundle(reader: &BundleReader) -> anyhow::Result<Option<Carried>> {
    let is_manifests = reader
        .meta
        .as_ref()
        .is_some_and(|m| m.format_version == MANIFESTS_FORMAT_VERSION);
    if !is_manifests {
        return Ok(None);
    }
    let label = &reader.label;
    let record: ManifestsRecord = serde_json::from_slice(&reader.read_file(MANIFESTS_JSON)?)
        .with_context(|| format!("bundle {label}: {MANIFESTS_JSON} is malformed"))?;
    let mut files = BTreeMap::new();
    for name in reader.entries.keys() {
        if let Some(rel) = name.strip_prefix(MANIFESTS_DIR) {
            files.insert(rel.to_string(), reader.read_file(name)?);
        }
    }
    let hints = match reader.hints()? {
        Some(t) => hints::parse(&t, &format!("bundle {label}: hints.yaml"))?,
        None => Vec::new(),
    };
    let mut digests = BTreeMap::new();
    for img in reader.meta.iter().flat_map(|m| m.images.iter()) {
        if let Ok(r) = Reference::parse(&img.reference) {
            digests.insert(r, img.digest.clone());
        }
    }
    Ok(Some(Carried {
        digests,
        tree: Tree {
            kind: record.kind,
            apply: record.apply.clone(),
            files,
        },
        record,
        hints,
    }))
}

/// One published tree, for the sync summary.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ManifestsLine {
    pub name: String,
    pub version: String,
    pub target: String,
    /// `published`, `unchanged`, `planned`.
    pub outcome: String,
    /// Images the relocated copy names (all in the target registry).
    pub images: usize,
    pub edits: Vec<Edit>,
}

pub struct SyncOptions {
    pub force: bool,
    pub allow_unrelocated: bool,
    pub dry_run: bool,
}

/// Relocate, prove and publish every manifests bundle of `readers`;
/// records what `bundler apply` needs beside the config.
pub async fn sync_all(
    readers: &[&BundleReader],
    config: &SyncConfig,
    client: &RegistryClient,
    opts: &SyncOptions,
    progress: &Progress,
) -> anyhow::Result<Vec<ManifestsLine>> {
    let mut carried = Vec::new();
    for r in readers {
        if let Some(c) = read_bundle(r)? {
            carried.push(c);
        }
    }
    if carried.is_empty() {
        return Ok(Vec::new());
    }
    let target = config.target_repo.as_ref().filter(|t| matches!(t.kind, RepoKind::Local | RepoKind::Oci)).with_context(|| format!(
        "{}: the bundles carry manifests ({}); set target.repo to kind LOCAL (path: DIR) or OCI (url: oci://host/path) for them",
        config.file.display(),
        carried.iter().map(|c| c.record.name.as_str()).collect::<Vec<_>>().join(", ")
    ))?;
    let registry = config.image_registry().with_context(|| {
        format!(
            "{}: manifests need the image rewrite rules (target.containerRegistry or containerPrefixRegistry)",
            config.file.display()
        )
    })?;
    let mut lines = Vec::new();
    let mut synced = Vec::new();
    for c in &carried {
        let (line, state) = sync_one(c, config, target, &registry, client, opts, progress)
            .await
            .with_context(|| format!("manifests {} {}", c.record.name, c.record.version))?;
        lines.push(line);
        synced.extend(state);
    }
    if !synced.is_empty() {
        super::state::record(&config.file, synced)?;
    }
    Ok(lines)
}

async fn sync_one(
    c: &Carried,
    config: &SyncConfig,
    target: &crate::config::load_image::RepoSpec,
    registry: &str,
    client: &RegistryClient,
    opts: &SyncOptions,
    progress: &Progress,
) -> anyhow::Result<(ManifestsLine, Option<SyncedManifests>)> {
    let rec = &c.record;
    // An untagged image is pushed by digest only (sync never invents a
    // `latest` tag), so its relocated reference is pinned to that digest.
    let target_of = |lit: &str| -> anyhow::Result<String> {
        let r = Reference::parse(lit)?;
        let mut t = config.rewrite.rewrite(&r)?.target;
        if t.tag.is_none() && t.digest.is_none() {
            let d = c.digests.get(&r).with_context(|| {
                format!("{lit}: the bundle carries no image under this reference")
            })?;
            t = t.with_digest(d.clone());
        }
        Ok(t.to_string())
    };
    let scratch = tempfile::tempdir()?;
    let found = relocate::find(&c.tree, &c.hints, &scratch.path().join("original"))?;
    let relocated = relocate::relocate(&c.tree, &c.hints, &found, &target_of)?;
    // Prove: the relocated copy, built or read as kubectl would, names
    // only images that are in the target registry.
    let after = relocate::find(&relocated.tree, &[], &scratch.path().join("relocated"))?;
    let mut images: Vec<String> = after.literals().into_iter().collect();
    for h in &c.hints {
        images.push(target_of(&h.image)?);
    }
    images.sort();
    images.dedup();
    prove(&images, registry, client, opts, progress).await?;
    let (target_desc, outcome, location) =
        publish_to(target, rec, &relocated.tree, client, opts).await?;
    progress.println(format!(
        "manifests {} {} -> {target_desc}: {outcome}, {} images, {} edits",
        rec.name,
        rec.version,
        images.len(),
        relocated.edits.len()
    ));
    let state = (!opts.dry_run).then(|| SyncedManifests {
        name: rec.name.clone(),
        version: rec.version.clone(),
        kind: rec.kind,
        apply: rec.apply.clone(),
        namespace: rec.namespace.clone(),
        target_kind: target.kind.as_str().to_string(),
        location: location.display().to_string(),
        registry: registry.to_string(),
        images: images.clone(),
        synced_at: super::state::now_rfc3339(),
    });
    Ok((
        ManifestsLine {
            name: rec.name.clone(),
            version: rec.version.clone(),
            target: target_desc,
            outcome,
            images: images.len(),
            edits: relocated.edits,
        },
        state,
    ))
}

/// Every image the relocated copy names must be in the target registry
/// (and, unless planning, there); otherwise nothing is published unless
/// `--allow-unrelocated`.
async fn prove(
    images: &[String],
    registry: &str,
    client: &RegistryClient,
    opts: &SyncOptions,
    progress: &Progress,
) -> anyhow::Result<()> {
    let mut misses = Vec::new();
    for lit in images {
        let r = Reference::parse(lit)?;
        if r.registry != registry.split('/').next().unwrap_or(registry) {
            misses.push(format!("{lit} (not in {registry})"));
            continue;
        }
        if !opts.dry_run
            && client
                .head_manifest(&r.registry, &r.repository, &r.manifest_reference())
                .await?
                .is_none()
        {
            misses.push(format!("{lit} (not in the registry)"));
        }
    }
    if !misses.is_empty() {
        let msg = format!(
            "the relocated copy names images that are not in the target: {}",
            misses.join(", ")
        );
        if !opts.allow_unrelocated {
            bail!("{msg}; nothing was published (--allow-unrelocated publishes anyway)");
        }
        progress.println(format!("warning: {msg}"));
    }
    Ok(())
}

/// Write the relocated tree to the target: (description, outcome, where
/// `apply` finds it).
async fn publish_to(
    target: &crate::config::load_image::RepoSpec,
    rec: &ManifestsRecord,
    tree: &Tree,
    client: &RegistryClient,
    opts: &SyncOptions,
) -> anyhow::Result<(String, String, PathBuf)> {
    let dir_name = format!("{}-{}", rec.name, rec.version);
    Ok(match target.kind {
        RepoKind::Local => {
            let base = target.path.clone().unwrap_or_else(|| PathBuf::from("."));
            let dest = base.join(&dir_name);
            let desc = dest.display().to_string();
            if opts.dry_run {
                (desc, "planned".to_string(), dest)
            } else {
                let o = publish_local(tree, &base, &dest, opts.force)?;
                (desc, o, std::path::absolute(&dest).unwrap_or(dest))
            }
        }
        _ => {
            let loc = target
                .oci_location()
                .context("target.repo: not an oci:// URL")?;
            let repo = if loc.path.is_empty() {
                rec.name.clone()
            } else {
                format!("{}/{}", loc.path, rec.name)
            };
            let tag = rec.version.replace('+', "_");
            let desc = format!("oci://{}/{repo}:{tag}", loc.registry);
            let o = if opts.dry_run {
                "planned".to_string()
            } else {
                push_artifact(client, &loc.registry, &repo, &tag, rec, tree, opts.force).await?
            };
            (desc.clone(), o, PathBuf::from(desc))
        }
    })
}

/// Write `tree` to `dest` through a temp directory beside it.
fn publish_local(tree: &Tree, base: &Path, dest: &Path, force: bool) -> anyhow::Result<String> {
    std::fs::create_dir_all(base).with_context(|| format!("creating {}", base.display()))?;
    if dest.exists() {
        let existing = read_tree_dir(dest, tree.kind, &tree.apply)?;
        if existing.files == tree.files {
            return Ok("unchanged".into());
        }
        if !force {
            bail!(
                "{} already holds a different copy (use --force to replace it)",
                dest.display()
            );
        }
    }
    let staging = tempfile::Builder::new()
        .prefix(".bundler-manifests-")
        .tempdir_in(base)
        .with_context(|| format!("creating a temp directory in {}", base.display()))?;
    tree.write_to(staging.path())?;
    if dest.exists() {
        std::fs::remove_dir_all(dest).with_context(|| format!("removing {}", dest.display()))?;
    }
    let staged = staging.keep();
    std::fs::rename(&staged, dest)
        .with_context(|| format!("moving {} to {}", staged.display(), dest.display()))?;
    Ok("published".into())
}

/// A relocated tree as written to a directory (every regular file).
pub fn read_tree_dir(dir: &Path, kind: TreeKind, apply: &str) -> anyhow::Result<Tree> {
    let mut files = BTreeMap::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let child = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push((e.path(), child));
            } else if ft.is_file() {
                files.insert(child, std::fs::read(e.path())?);
            }
        }
    }
    Ok(Tree {
        kind,
        apply: apply.to_string(),
        files,
    })
}

/// The tree as a deterministic tar: sorted names, mtime 0, uid/gid 0,
/// mode 0644.
pub fn tree_tar(tree: &Tree) -> anyhow::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, bytes) in &tree.files {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, bytes.as_slice())?;
    }
    Ok(b.into_inner()?)
}

const EMPTY_CONFIG: &[u8] = b"{}";
const ANN_KIND: &str = "io.bundler.manifests.kind";
const ANN_APPLY: &str = "io.bundler.manifests.apply";
const ANN_NAMESPACE: &str = "io.bundler.manifests.namespace";

fn artifact_manifest(rec: &ManifestsRecord, layer: &[u8]) -> anyhow::Result<Vec<u8>> {
    let kind = serde_json::to_value(rec.kind)?;
    let mut ann = serde_json::json!({
        "org.opencontainers.image.title": rec.name,
        "org.opencontainers.image.version": rec.version,
        ANN_KIND: kind,
        ANN_APPLY: rec.apply,
    });
    if let Some(ns) = &rec.namespace {
        ann[ANN_NAMESPACE] = ns.clone().into();
    }
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": Digest::of(EMPTY_CONFIG).to_string(),
            "size": EMPTY_CONFIG.len(),
        },
        "layers": [{
            "mediaType": TREE_LAYER_MEDIA_TYPE,
            "digest": Digest::of(layer).to_string(),
            "size": layer.len(),
            "annotations": {"org.opencontainers.image.title": format!("{}-{}.tar", rec.name, rec.version)},
        }],
        "annotations": ann,
    });
    Ok(serde_json::to_vec(&m)?)
}

async fn push_artifact(
    client: &RegistryClient,
    host: &str,
    repo: &str,
    tag: &str,
    rec: &ManifestsRecord,
    tree: &Tree,
    force: bool,
) -> anyhow::Result<String> {
    let layer = tree_tar(tree)?;
    let manifest = artifact_manifest(rec, &layer)?;
    let digest = Digest::of(&manifest);
    if let Some(existing) = client.head_manifest(host, repo, tag).await? {
        if existing == digest {
            return Ok("unchanged".into());
        }
        if !force {
            bail!("oci://{host}/{repo}:{tag} already holds different manifests (use --force to replace them)");
        }
    }
    for bytes in [EMPTY_CONFIG.to_vec(), layer] {
        let d = Digest::of(&bytes);
        client
            .push_blob(
                host,
                repo,
                &d,
                BlobSource::Bytes(Bytes::from(bytes)),
                None,
                None,
            )
            .await?;
    }
    let got = client
        .put_manifest(host, repo, tag, media::OCI_MANIFEST, Bytes::from(manifest))
        .await?;
    if got != digest {
        bail!("the registry stored the manifests artifact as {got}, expected {digest}");
    }
    Ok("published".into())
}

/// Pull a manifests artifact (`oci://host/repo:tag`) into `dest`
/// (created, must not exist): its kind and apply path come from the
/// artifact's annotations.
pub async fn pull(client: &RegistryClient, location: &str, dest: &Path) -> anyhow::Result<Tree> {
    let rest = location
        .strip_prefix("oci://")
        .with_context(|| format!("{location}: not an oci:// reference"))?;
    let (host, path) = rest
        .split_once('/')
        .context("no repository in the reference")?;
    let (repo, tag) = path.rsplit_once(':').context("no tag in the reference")?;
    let m = client.get_manifest(host, repo, tag).await?;
    let v: serde_json::Value = serde_json::from_slice(&m.bytes)?;
    if v["artifactType"] != ARTIFACT_TYPE {
        bail!(
            "{location}: artifactType {} is not {ARTIFACT_TYPE}: not a bundler manifests artifact",
            v["artifactType"]
        );
    }
    let layer: media::Descriptor = serde_json::from_value(v["layers"][0].clone())
        .with_context(|| format!("{location}: no layer"))?;
    if layer.media_type != TREE_LAYER_MEDIA_TYPE {
        bail!(
            "{location}: layer media type {} is not {TREE_LAYER_MEDIA_TYPE}",
            layer.media_type
        );
    }
    let kind: TreeKind = serde_json::from_value(v["annotations"][ANN_KIND].clone())
        .with_context(|| format!("{location}: annotation {ANN_KIND}"))?;
    let apply = v["annotations"][ANN_APPLY]
        .as_str()
        .with_context(|| format!("{location}: annotation {ANN_APPLY}"))?
        .to_string();
    let bytes = client.pull_blob_bytes(host, repo, &layer).await?;
    let mut files = BTreeMap::new();
    let mut ar = tar::Archive::new(std::io::Cursor::new(bytes));
    for e in ar.entries()? {
        let mut e = e?;
        if e.header().entry_type() != tar::EntryType::Regular {
            bail!("{location}: the tree holds a non-file entry");
        }
        let raw = e.path()?.to_string_lossy().into_owned();
        let name =
            check_entry_name(&raw)?.with_context(|| format!("{location}: empty entry name"))?;
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut buf)?;
        files.insert(name, buf);
    }
    let tree = Tree { kind, apply, files };
    tree.write_to(dest)?;
    Ok(tree)
}
