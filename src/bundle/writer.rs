//! Writing a bundle.
//!
//! Every offset of the output is known before a byte of blob data moves
//! (tar headers are fixed-size, blob sizes come from descriptors), so the
//! writer lays out the whole file first, writes the small parts, and hands
//! back one slot per blob; the caller fills the slots in parallel with
//! positioned writes (`FileExt::write_at`), straight from the network or a
//! source file, then commits (fsync + rename from a temp name).
//!
//! Layout (deterministic: mtime 0, uid/gid 0, empty user/group names, mode
//! 0644 for files and 0755 for directories, GNU headers with GNU long names
//! for names over 100 bytes):
//!
//! ```text
//! hints.yaml
//! original-chart/<files, sorted>
//! bundle.json
//! images.tar:  oci-layout, index.json, manifest.json, blobs/, blobs/sha256/,
//!              blobs/sha256/<hex> sorted by digest (manifests, indexes,
//!              configs, layers; each once)
//! ```
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use sha2::{Digest as _, Sha256};

use super::format::{
    BundleJson, ChartInfo, DeltaInfo, ImageRecord, ProductInfo, BUNDLE_JSON, CHART_DIR,
    DELTA_FORMAT_VERSION, DELTA_INDEX, FORMAT_VERSION, HINTS_FILE, IMAGES_TAR,
};
use super::reader::{check_entry_name, ManifestDoc};
use crate::oci::media::{self, Descriptor, Parsed, Platform};
use crate::oci::{Digest, Reference};

/// An image to put in a bundle.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    pub reference: Reference,
    /// What index.json points at (index when all platforms are kept, else
    /// the chosen platform manifest).
    pub root: ManifestDoc,
    /// Child manifests of `root` when it is an index.
    pub children: Vec<ManifestDoc>,
    pub platform: Option<Platform>,
    pub source_index: Option<Digest>,
    /// For the docker archive `manifest.json`: the config and layers of one
    /// platform manifest (None when no platform manifest could be chosen).
    pub docker: Option<(Digest, Vec<Digest>)>,
}

#[derive(Clone, Debug, Default)]
pub struct BundleSpec {
    pub chart: Option<ChartInfo>,
    pub product: Option<ProductInfo>,
    pub hints: String,
    /// Chart files relative to the chart root (written under
    /// `original-chart/`).
    pub chart_files: Vec<(String, Vec<u8>)>,
    pub images: Vec<ImageSpec>,
    /// Every config/layer blob with its size (deduplicated by digest).
    pub blobs: std::collections::BTreeMap<Digest, u64>,
    /// A delta bundle: the blobs of `blobs` left out (no slot is laid out
    /// for them), recorded in `bundle.json`.
    pub delta: Option<DeltaInfo>,
    /// Signatures, attestations, SBOMs referring to the images: manifests
    /// stored as blobs (their own blobs are in `blobs`), subject links in
    /// `images.tar/referrers.json` (see [`crate::referrers`]).
    pub referrers: crate::referrers::Carried,
    /// A manifests bundle: `manifests.json` and `original-manifests/`
    /// (see [`crate::manifests`]).
    pub manifests: Option<crate::manifests::ManifestsPayload>,
}

/// A region of the output to be filled with one blob's bytes.
#[derive(Clone, Debug)]
pub struct BlobSlot {
    pub digest: Digest,
    pub offset: u64,
    pub size: u64,
}

/// A bundle being written: layout done, blob slots still to fill.
/// Dropping it without [`PendingBundle::commit`] removes the temp file.
pub struct PendingBundle {
    pub temp_path: PathBuf,
    pub final_path: PathBuf,
    pub slots: Vec<BlobSlot>,
    pub file: std::sync::Arc<std::fs::File>,
    /// Total size of the bundle file.
    pub total_size: u64,
    committed: bool,
}

const BLOCK: u64 = 512;

fn padded(n: u64) -> u64 {
    n.div_ceil(BLOCK) * BLOCK
}

/// Header bytes (one or more 512-byte blocks) for an entry.
fn header_bytes(name: &str, size: u64, dir: bool) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(1024);
    let name_b = name.as_bytes();
    let base = |h: &mut tar::Header, size: u64, kind: tar::EntryType, mode: u32| {
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_entry_type(kind);
    };
    if name_b.len() > 100 {
        let mut l = tar::Header::new_gnu();
        l.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        base(
            &mut l,
            name_b.len() as u64 + 1,
            tar::EntryType::GNULongName,
            0o644,
        );
        l.set_cksum();
        out.extend_from_slice(l.as_bytes());
        let mut data = name_b.to_vec();
        data.push(0);
        data.resize(padded(data.len() as u64) as usize, 0);
        out.extend_from_slice(&data);
    }
    let mut h = tar::Header::new_gnu();
    let n = name_b.len().min(100);
    h.as_old_mut().name[..n].copy_from_slice(&name_b[..n]);
    if dir {
        base(&mut h, 0, tar::EntryType::Directory, 0o755);
    } else {
        base(&mut h, size, tar::EntryType::Regular, 0o644);
    }
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
    Ok(out)
}

/// Content of one tar entry in the plan.
enum Content {
    Bytes(Vec<u8>),
    Dir,
    /// A blob filled by the caller.
    Slot(Digest, u64),
    /// The nested images.tar (its own plan).
    Nested(Box<Plan>),
}

struct Plan {
    entries: Vec<(String, Content)>,
}

impl Plan {
    fn content_size(c: &Content) -> u64 {
        match c {
            Content::Bytes(b) => b.len() as u64,
            Content::Dir => 0,
            Content::Slot(_, s) => *s,
            Content::Nested(p) => p.size(),
        }
    }

    /// Total size of the archive, with the two end-of-archive blocks.
    fn size(&self) -> u64 {
        let mut total = 0;
        for (name, c) in &self.entries {
            let s = Self::content_size(c);
            total += header_len(name) + padded(s);
        }
        total + 2 * BLOCK
    }

    /// Write headers and small contents at `base`, collecting slots.
    fn write(&self, file: &File, base: u64, slots: &mut Vec<BlobSlot>) -> anyhow::Result<()> {
        let mut pos = base;
        for (name, c) in &self.entries {
            let size = Self::content_size(c);
            let h = header_bytes(name, size, matches!(c, Content::Dir))?;
            file.write_all_at(&h, pos)?;
            pos += h.len() as u64;
            match c {
                Content::Bytes(b) => file.write_all_at(b, pos)?,
                Content::Dir => {}
                Content::Slot(d, s) => slots.push(BlobSlot {
                    digest: d.clone(),
                    offset: pos,
                    size: *s,
                }),
                Content::Nested(p) => p.write(file, pos, slots)?,
            }
            // Padding and end blocks are zero already (set_len on a new file).
            pos += padded(size);
        }
        Ok(())
    }
}

fn header_len(name: &str) -> u64 {
    if name.len() > 100 {
        BLOCK + padded(name.len() as u64 + 1) + BLOCK
    } else {
        BLOCK
    }
}

/// Everything `begin` computes before touching the disk.
struct Layout {
    plan: Plan,
    bundle_json: BundleJson,
}

fn sha(bytes: &[u8]) -> Digest {
    Digest::from_sha256(Sha256::new_with_prefix(bytes))
}

fn docker_repo_tag(r: &Reference) -> Option<String> {
    r.tag.as_ref().map(|t| format!("{}:{t}", r.name()))
}

fn plan(spec: &BundleSpec) -> anyhow::Result<Layout> {
    // Manifest documents by digest, verified.
    let mut docs: BTreeMap<Digest, &ManifestDoc> = BTreeMap::new();
    for img in &spec.images {
        for d in std::iter::once(&img.root).chain(img.children.iter()) {
            let got = Digest::of(&d.bytes);
            if got != d.digest {
                bail!(
                    "image {}: manifest bytes have digest {got}, not the {} they are filed under",
                    img.reference,
                    d.digest
                );
            }
            docs.insert(d.digest.clone(), d);
        }
    }
    let referrers_file = referrer_docs(spec, &mut docs)?;
    let external: BTreeSet<&Digest> = spec
        .delta
        .iter()
        .flat_map(|d| d.external.iter().map(|e| &e.digest))
        .collect();
    if let Some(d) = external.iter().find(|d| docs.contains_key(**d)) {
        bail!("blob {d} is a manifest: a delta carries every manifest");
    }
    let size_of = |d: &Digest| -> Option<u64> {
        spec.blobs
            .get(d)
            .copied()
            .or_else(|| docs.get(d).map(|m| m.bytes.len() as u64))
    };

    // index.json, manifest.json, bundle.json image records.
    let mut index_entries: Vec<Descriptor> = Vec::new();
    let mut docker_entries: Vec<serde_json::Value> = Vec::new();
    let mut records = Vec::new();
    for img in &spec.images {
        let parsed = img
            .root
            .parse()
            .with_context(|| format!("image {}", img.reference))?;
        let mut blob_set: BTreeMap<Digest, u64> = BTreeMap::new();
        let mut check = |desc: &Descriptor, m: &Digest| -> anyhow::Result<()> {
            match size_of(&desc.digest) {
                Some(s) if s == desc.size => {
                    blob_set.insert(desc.digest.clone(), s);
                    Ok(())
                }
                Some(s) => bail!(
                    "image {}: blob {} is {s} bytes but manifest {m} says {}",
                    img.reference,
                    desc.digest,
                    desc.size
                ),
                None => bail!(
                    "image {}: blob {} of manifest {m} is not in the bundle's blob list",
                    img.reference,
                    desc.digest
                ),
            }
        };
        let mut omitted = Vec::new();
        match &parsed {
            Parsed::Manifest { .. } => {
                for b in parsed.blobs() {
                    check(b, &img.root.digest)?;
                }
            }
            Parsed::Index { manifests, .. } => {
                let kids: BTreeSet<&Digest> = img.children.iter().map(|c| &c.digest).collect();
                for m in manifests {
                    if !kids.contains(&m.digest) {
                        omitted.push(m.digest.clone());
                        continue;
                    }
                    if m.size != docs[&m.digest].bytes.len() as u64 {
                        bail!(
                            "image {}: index {} says manifest {} is {} bytes, but it is {}",
                            img.reference,
                            img.root.digest,
                            m.digest,
                            m.size,
                            docs[&m.digest].bytes.len()
                        );
                    }
                }
                for c in &img.children {
                    let p = c
                        .parse()
                        .with_context(|| format!("image {}", img.reference))?;
                    if let Parsed::Index { .. } = p {
                        bail!(
                            "image {}: nested index {} is not supported",
                            img.reference,
                            c.digest
                        );
                    }
                    for b in p.blobs() {
                        check(b, &c.digest)?;
                    }
                }
            }
        }
        let full = img.reference.to_string();
        let mut ann = BTreeMap::new();
        ann.insert(media::ANNOTATION_REF_NAME.to_string(), full.clone());
        ann.insert(media::ANNOTATION_CONTAINERD_NAME.to_string(), full.clone());
        index_entries.push(Descriptor {
            media_type: parsed.media_type().to_string(),
            digest: img.root.digest.clone(),
            size: img.root.bytes.len() as u64,
            platform: img.platform.clone(),
            annotations: Some(ann),
        });
        if let Some((config, layers)) = &img.docker {
            for d in std::iter::once(config).chain(layers.iter()) {
                if size_of(d).is_none() {
                    bail!(
                        "image {}: docker archive blob {d} is not in the bundle's blob list",
                        img.reference
                    );
                }
            }
            let mut e = serde_json::Map::new();
            e.insert("Config".into(), config.layout_path().into());
            if let Some(t) = docker_repo_tag(&img.reference) {
                e.insert("RepoTags".into(), vec![t].into());
            }
            e.insert(
                "Layers".into(),
                layers
                    .iter()
                    .map(|l| serde_json::Value::from(l.layout_path()))
                    .collect::<Vec<_>>()
                    .into(),
            );
            docker_entries.push(serde_json::Value::Object(e));
        }
        records.push(ImageRecord {
            reference: full,
            digest: img.root.digest.clone(),
            media_type: parsed.media_type().to_string(),
            platform: img.platform.clone(),
            source_index: img.source_index.clone(),
            size: blob_set.values().sum(),
            omitted,
        });
    }

    let index_json = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_INDEX,
        "manifests": index_entries,
    }))?;
    // Nested images.tar: an OCI layout and a docker archive at once, or, in
    // a delta, neither (its index under another name), so that image tools
    // refuse it instead of importing images without their layers.
    let mut small_files: Vec<(&str, Vec<u8>)> = Vec::new();
    if spec.delta.is_some() {
        small_files.push((DELTA_INDEX, index_json));
    } else {
        small_files.push(("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()));
        small_files.push(("index.json", index_json));
        small_files.push(("manifest.json", serde_json::to_vec(&docker_entries)?));
    }
    if let Some(b) = referrers_file {
        small_files.push((crate::referrers::REFERRERS_FILE, b));
    }
    let mut inner: Vec<(String, Content)> = small_files
        .iter()
        .map(|(n, b)| (n.to_string(), Content::Bytes(b.clone())))
        .collect();
    inner.push(("blobs/".to_string(), Content::Dir));
    inner.push(("blobs/sha256/".to_string(), Content::Dir));
    let mut all: BTreeSet<&Digest> = spec.blobs.keys().collect();
    all.extend(docs.keys());
    for d in all.into_iter().filter(|d| !external.contains(d)) {
        let c = match docs.get(d) {
            Some(m) => Content::Bytes(m.bytes.to_vec()),
            None => Content::Slot(d.clone(), spec.blobs[d]),
        };
        inner.push((d.layout_path(), c));
    }

    // Outer entries and file checksums.
    let mut files = BTreeMap::new();
    let mut outer = Vec::new();
    files.insert(HINTS_FILE.to_string(), sha(spec.hints.as_bytes()));
    outer.push((
        HINTS_FILE.to_string(),
        Content::Bytes(spec.hints.as_bytes().to_vec()),
    ));
    let mut chart: Vec<(String, &Vec<u8>)> = Vec::new();
    let mut seen = BTreeSet::new();
    for (p, b) in &spec.chart_files {
        let norm = check_entry_name(p)
            .with_context(|| format!("chart file {p:?}: refused"))?
            .with_context(|| format!("chart file {p:?}: empty path"))?;
        if !seen.insert(norm.clone()) {
            bail!("chart file {p:?} given twice");
        }
        chart.push((format!("{CHART_DIR}{norm}"), b));
    }
    chart.sort();
    for (name, b) in chart {
        files.insert(name.clone(), sha(b));
        outer.push((name, Content::Bytes(b.clone())));
    }
    if let Some(m) = &spec.manifests {
        if spec.delta.is_some() {
            bail!("a manifests bundle cannot be a delta");
        }
        manifests_entries(m, &mut files, &mut outer)?;
    }
    for (n, b) in &small_files {
        files.insert(format!("{IMAGES_TAR}/{n}"), sha(b));
    }
    let bundle_json = BundleJson {
        format_version: if spec.delta.is_some() {
            DELTA_FORMAT_VERSION
        } else if spec.manifests.is_some() {
            crate::manifests::MANIFESTS_FORMAT_VERSION
        } else {
            FORMAT_VERSION
        }
        .to_string(),
        tool: format!("bundler {}", env!("CARGO_PKG_VERSION")),
        chart: spec.chart.clone(),
        product: spec.product.clone(),
        images: records,
        files,
        delta: spec.delta.clone(),
    };
    let mut bj = serde_json::to_vec_pretty(&bundle_json)?;
    bj.push(b'\n');
    outer.push((BUNDLE_JSON.to_string(), Content::Bytes(bj)));
    outer.push((
        IMAGES_TAR.to_string(),
        Content::Nested(Box::new(Plan { entries: inner })),
    ));
    Ok(Layout {
        plan: Plan { entries: outer },
        bundle_json,
    })
}

/// Add the referrer manifests to `docs` (checked like image manifests),
/// and return `referrers.json` when there are referrers: each one's
/// subject must be a manifest of the bundle, and its blobs in the list.
fn referrer_docs<'a>(
    spec: &'a BundleSpec,
    docs: &mut BTreeMap<Digest, &'a ManifestDoc>,
) -> anyhow::Result<Option<Vec<u8>>> {
    let carried = &spec.referrers;
    if carried.is_empty() {
        return Ok(None);
    }
    for d in &carried.manifests {
        let got = Digest::of(&d.bytes);
        if got != d.digest {
            bail!(
                "referrer manifest bytes have digest {got}, not the {} they are filed under",
                d.digest
            );
        }
        for b in d
            .parse()
            .map(|p| p.blobs().into_iter().cloned().collect::<Vec<_>>())?
        {
            if spec.blobs.get(&b.digest) != Some(&b.size) {
                bail!(
                    "referrer {}: blob {} ({} bytes) is not in the bundle's blob list",
                    d.digest,
                    b.digest,
                    b.size
                );
            }
        }
    }
    let subjects: BTreeSet<&Digest> = docs
        .keys()
        .chain(carried.manifests.iter().map(|m| &m.digest))
        .collect();
    for r in &carried.records {
        if !subjects.contains(&r.subject) {
            bail!(
                "{} {} refers to {}, which the bundle does not carry",
                r.kind,
                r.digest,
                r.subject
            );
        }
        if !carried.manifests.iter().any(|m| m.digest == r.digest) {
            bail!("internal: referrer {} has no manifest", r.digest);
        }
    }
    for d in &carried.manifests {
        docs.entry(d.digest.clone()).or_insert(d);
    }
    Ok(Some(carried.file_bytes()?))
}

/// `manifests.json` and `original-manifests/<files, sorted>`, hashed.
fn manifests_entries(
    m: &crate::manifests::ManifestsPayload,
    files: &mut BTreeMap<String, Digest>,
    outer: &mut Vec<(String, Content)>,
) -> anyhow::Result<()> {
    use crate::manifests::{MANIFESTS_DIR, MANIFESTS_JSON};
    files.insert(MANIFESTS_JSON.to_string(), sha(&m.record));
    outer.push((MANIFESTS_JSON.to_string(), Content::Bytes(m.record.clone())));
    let mut tree: Vec<(String, &Vec<u8>)> = Vec::new();
    let mut seen = BTreeSet::new();
    for (p, b) in &m.files {
        let norm = check_entry_name(p)
            .with_context(|| format!("manifests file {p:?}: refused"))?
            .with_context(|| format!("manifests file {p:?}: empty path"))?;
        if !seen.insert(norm.clone()) {
            bail!("manifests file {p:?} given twice");
        }
        tree.push((format!("{MANIFESTS_DIR}{norm}"), b));
    }
    tree.sort();
    for (name, b) in tree {
        files.insert(name.clone(), sha(b));
        outer.push((name, Content::Bytes(b.clone())));
    }
    Ok(())
}

/// The size of the file `begin` would write for `spec` (no I/O): for the
/// free-space check before a pack writes anything.
pub fn planned_size(spec: &BundleSpec) -> anyhow::Result<u64> {
    Ok(plan(spec)?.plan.size())
}

/// The `bundle.json` that `begin` would write for `spec` (no I/O).
pub fn bundle_json_for(spec: &BundleSpec) -> anyhow::Result<BundleJson> {
    Ok(plan(spec)?.bundle_json)
}

/// Lay out and write everything but blob data.
pub fn begin(final_path: &Path, spec: &BundleSpec) -> anyhow::Result<PendingBundle> {
    let layout = plan(spec).with_context(|| format!("laying out {}", final_path.display()))?;
    let total = layout.plan.size();
    let dir = match final_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = final_path
        .file_name()
        .with_context(|| format!("{}: not a file name", final_path.display()))?
        .to_string_lossy()
        .into_owned();
    // Unique per process and call, removed on SIGINT/SIGTERM.
    let temp_path = crate::atomic_file::temp_path_for(&dir.join(&name));
    let file = crate::atomic_file::create_tracked(&temp_path)?;
    let mut pending = PendingBundle {
        temp_path: temp_path.clone(),
        final_path: final_path.to_path_buf(),
        slots: Vec::new(),
        file: Arc::new(file),
        total_size: total,
        committed: false,
    };
    // From here on, dropping `pending` removes the temp file.
    pending
        .file
        .set_len(total)
        .with_context(|| format!("allocating {total} bytes for {}", temp_path.display()))?;
    let mut slots = Vec::new();
    layout
        .plan
        .write(&pending.file, 0, &mut slots)
        .with_context(|| format!("writing {}", temp_path.display()))?;
    pending.slots = slots;
    Ok(pending)
}

impl PendingBundle {
    /// The slot of a blob.
    pub fn slot(&self, digest: &Digest) -> Option<&BlobSlot> {
        self.slots.iter().find(|s| &s.digest == digest)
    }

    /// A writer that fills `slot` sequentially with positioned writes and
    /// checks size and digest on [`SlotWriter::finish`].
    pub fn slot_writer(&self, slot: &BlobSlot) -> SlotWriter {
        SlotWriter {
            file: self.file.clone(),
            slot: slot.clone(),
            written: 0,
            hasher: Sha256::new(),
        }
    }

    /// Fill `slot` from `len` bytes at `offset` of the file `src` (1 MiB
    /// chunks), checking the digest.
    pub fn fill_from_file(&self, slot: &BlobSlot, src: &Path, offset: u64) -> anyhow::Result<()> {
        let f = File::open(src).with_context(|| format!("opening {}", src.display()))?;
        let mut w = self.slot_writer(slot);
        let mut buf = Vec::new();
        let mut write_err: Option<std::io::Error> = None;
        super::reader::hash_range_into(&f, offset, slot.size, &mut buf, |chunk| {
            if write_err.is_none() {
                if let Err(e) = w.write_all(chunk) {
                    write_err = Some(e);
                }
            }
        })
        .with_context(|| format!("reading blob {} from {}", slot.digest, src.display()))?;
        if let Some(e) = write_err {
            return Err(anyhow::Error::new(e).context(format!(
                "writing blob {} into {}",
                slot.digest,
                self.temp_path.display()
            )));
        }
        w.finish()
            .with_context(|| format!("copying blob {} from {}", slot.digest, src.display()))
    }

    /// fsync and keep the temp name: the caller renames every output of
    /// the run together at its end (and removes the temp file on failure).
    /// Returns (temp, final).
    pub fn finish_unrenamed(mut self) -> anyhow::Result<(PathBuf, PathBuf)> {
        self.file
            .sync_all()
            .with_context(|| format!("syncing {}", self.temp_path.display()))?;
        self.committed = true;
        Ok((self.temp_path.clone(), self.final_path.clone()))
    }

    /// fsync and rename to the final name (after every slot is filled).
    pub fn commit(mut self) -> anyhow::Result<PathBuf> {
        self.file
            .sync_all()
            .with_context(|| format!("syncing {}", self.temp_path.display()))?;
        std::fs::rename(&self.temp_path, &self.final_path).with_context(|| {
            format!(
                "renaming {} to {}",
                self.temp_path.display(),
                self.final_path.display()
            )
        })?;
        self.committed = true;
        crate::interrupt::untrack(&self.temp_path);
        if let Some(dir) = self.final_path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(self.final_path.clone())
    }
}

impl Drop for PendingBundle {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp_path);
            crate::interrupt::untrack(&self.temp_path);
        }
    }
}

/// Sequential positioned writer into one blob slot, hashing as it goes.
pub struct SlotWriter {
    file: Arc<File>,
    slot: BlobSlot,
    written: u64,
    hasher: Sha256,
}

impl SlotWriter {
    /// Start over (a retried download).
    pub fn reset(&mut self) {
        self.written = 0;
        self.hasher = Sha256::new();
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Check that exactly `slot.size` bytes with `slot.digest` were written.
    pub fn finish(self) -> anyhow::Result<()> {
        if self.written != self.slot.size {
            bail!(
                "blob {}: got {} bytes, expected {}",
                self.slot.digest,
                self.written,
                self.slot.size
            );
        }
        let got = Digest::from_sha256(self.hasher);
        if got != self.slot.digest {
            bail!(
                "blob {}: content has digest {got}: corrupted in transit or at the source",
                self.slot.digest
            );
        }
        Ok(())
    }
}

impl Write for SlotWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written + buf.len() as u64 > self.slot.size {
            return Err(std::io::Error::other(format!(
                "blob {}: more than the {} bytes expected",
                self.slot.digest, self.slot.size
            )));
        }
        self.file
            .write_all_at(buf, self.slot.offset + self.written)?;
        self.hasher.update(buf);
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_get_gnu_longlink() {
        let name = format!("original-chart/{}", "a/".repeat(80) + "values.yaml");
        let h = header_bytes(&name, 5, false).unwrap();
        assert_eq!(h.len() as u64, header_len(&name));
        assert_eq!(h[156], b'L');
    }

    #[test]
    fn image_only_bundle_roundtrips() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x.bundle.tar");
        let spec = BundleSpec {
            hints: String::new(),
            ..Default::default()
        };
        let p = begin(&out, &spec).unwrap();
        assert!(p.slots.is_empty());
        let path = p.commit().unwrap();
        let r = crate::bundle::BundleReader::open(&path).unwrap();
        assert!(r.images.is_empty());
        assert!(r.entries.contains_key("bundle.json"));
        assert!(r.images_entries.contains_key("index.json"));
    }

    #[test]
    fn delta_bundle_leaves_out_external_layers_and_no_image_archive_index() {
        use crate::bundle::format::ExternalBlob;
        let (config, carried, external) = (
            b"{\"os\":\"linux\"}".to_vec(),
            b"carried layer".to_vec(),
            b"layer the site has".to_vec(),
        );
        let d = |b: &[u8]| Digest::of(b);
        let desc = |b: &[u8], mt: &str| serde_json::json!({"mediaType": mt, "digest": d(b).to_string(), "size": b.len()});
        let layer_mt = "application/vnd.oci.image.layer.v1.tar+gzip";
        let root = ManifestDoc::new(
            media::OCI_MANIFEST,
            serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": media::OCI_MANIFEST,
                "config": desc(&config, "application/vnd.oci.image.config.v1+json"),
                "layers": [desc(&carried, layer_mt), desc(&external, layer_mt)],
            }))
            .unwrap(),
        );
        let mut blobs = BTreeMap::new();
        for b in [&config, &carried, &external] {
            blobs.insert(d(b), b.len() as u64);
        }
        let spec = BundleSpec {
            images: vec![ImageSpec {
                reference: Reference::parse("example.com/a/b:1").unwrap(),
                root: root.clone(),
                children: Vec::new(),
                platform: None,
                source_index: None,
                docker: Some((d(&config), vec![d(&carried), d(&external)])),
            }],
            blobs,
            delta: Some(DeltaInfo {
                packed_against: Vec::new(),
                external: vec![ExternalBlob {
                    digest: d(&external),
                    size: external.len() as u64,
                    media_type: layer_mt.into(),
                    repository: None,
                    image: None,
                }],
            }),
            ..Default::default()
        };
        let dir = tempfile::tempdir().unwrap();
        let p = begin(&dir.path().join("x.bundle.tar"), &spec).unwrap();
        let slotted: BTreeSet<Digest> = p.slots.iter().map(|s| s.digest.clone()).collect();
        assert_eq!(slotted, [d(&config), d(&carried)].into_iter().collect());
        let content: BTreeMap<Digest, &Vec<u8>> = [(d(&config), &config), (d(&carried), &carried)]
            .into_iter()
            .collect();
        for s in &p.slots {
            let mut w = p.slot_writer(s);
            w.write_all(content[&s.digest]).unwrap();
            w.finish().unwrap();
        }
        let path = p.commit().unwrap();
        let r = crate::bundle::BundleReader::open(&path).unwrap();
        assert!(r.is_delta());
        assert_eq!(
            r.meta.as_ref().unwrap().format_version,
            DELTA_FORMAT_VERSION
        );
        for absent in ["index.json", "oci-layout", "manifest.json"] {
            assert!(!r.images_entries.contains_key(absent), "{absent}");
        }
        assert!(r.images_entries.contains_key(DELTA_INDEX));
        assert_eq!(r.images.len(), 1);
        assert_eq!(r.images[0].root.digest, root.digest);
        // What the bundle carries: the config and one layer.
        let carried_digests: Vec<Digest> =
            r.images[0].blobs.iter().map(|b| b.digest.clone()).collect();
        assert_eq!(carried_digests, vec![d(&config), d(&carried)]);
        crate::bundle::verify::verify(
            &r,
            &crate::progress::Progress::new(crate::progress::Mode::Quiet),
        )
        .unwrap();
    }

    #[test]
    fn dropped_pending_bundle_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("x.bundle.tar");
        let p = begin(&out, &BundleSpec::default()).unwrap();
        let tmp = p.temp_path.clone();
        assert!(tmp.exists());
        drop(p);
        assert!(!tmp.exists());
        assert!(!out.exists());
    }
}
