//! Reading a bundle without unpacking it: `open` reads only tar headers,
//! seeking over data, and builds an index of every entry (nested
//! `images.tar` entries included, with absolute offsets in the outer file).
//!
//! Every entry is validated while indexing ([`index_tar`]): no `..`, no
//! absolute paths, no links, devices or fifos, no duplicate names, no sizes
//! past the end of the file, no more than [`MAX_ENTRIES`] entries, UTF-8
//! names only. Nothing is ever written to disk.
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use bytes::Bytes;
use sha2::{Digest as _, Sha256};

use crate::package::source::{PackageFile, ReadAt};

use super::format::{BundleJson, ImageRecord, BUNDLE_JSON, CHART_DIR, HINTS_FILE, IMAGES_TAR};
use crate::oci::media::{self, Descriptor, Parsed, Platform};
use crate::oci::{Digest, Reference};

/// Most tar entries accepted in one archive (tar bomb guard).
pub const MAX_ENTRIES: usize = 1_000_000;
/// Largest small file (`read_file`, manifests, `bundle.json`) read into memory.
pub const MAX_SMALL_FILE: u64 = 16 << 20;
/// Largest GNU long name / PAX header accepted.
const MAX_META: u64 = 1 << 20;

/// Where an entry's data lies in the bundle file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub size: u64,
}

/// A manifest or index of an image, with its bytes (small, kept in memory).
#[derive(Clone, Debug)]
pub struct ManifestDoc {
    pub digest: Digest,
    pub media_type: String,
    pub bytes: Bytes,
}

impl ManifestDoc {
    /// A document from its bytes (digest computed) and media type.
    pub fn new(media_type: impl Into<String>, bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        ManifestDoc {
            digest: Digest::of(&bytes),
            media_type: media_type.into(),
            bytes,
        }
    }

    pub fn parse(&self) -> anyhow::Result<Parsed> {
        media::parse(&self.bytes, Some(&self.media_type))
            .with_context(|| format!("manifest {}", self.digest))
    }
}

/// One image found in a bundle.
#[derive(Clone, Debug)]
pub struct BundleImage {
    /// Full original reference (from `index.json` annotations, or the
    /// docker archive's `RepoTags`).
    pub reference: Reference,
    /// The manifest or index pushed under the tag (its digest is the one
    /// that survives).
    pub root: ManifestDoc,
    /// For an index: every child manifest kept. Empty for a manifest.
    pub children: Vec<ManifestDoc>,
    /// Every blob (configs and layers) of the image, deduplicated.
    pub blobs: Vec<Descriptor>,
    /// True when the manifest was synthesized from a docker archive
    /// (`manifest.json` only, e.g. relok8s bundles): digests are new.
    pub synthesized: bool,
}

/// Kind of a tar entry that passed validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TarKind {
    File,
    Dir,
}

/// One validated tar entry: normalised name (no leading `./`, no trailing
/// `/`), absolute offset of its data and its size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TarEntry {
    pub name: String,
    pub kind: TarKind,
    pub extent: Extent,
}

/// What a file whose first block is not a tar header seems to be, in words
/// (its raw bytes mean nothing to a reader of the error).
fn describe_non_tar(first: &[u8; 512]) -> &'static str {
    match first {
        [0x1f, 0x8b, ..] => "it is gzip-compressed: bundles and offline packages are plain tar; a chart .tgz is not a bundle",
        [0x28, 0xb5, 0x2f, 0xfd, ..] => "it is zstd-compressed: bundles and offline packages are plain tar",
        [b'B', b'Z', b'h', ..] => "it is bzip2-compressed: bundles and offline packages are plain tar",
        [0xfd, b'7', b'z', b'X', b'Z', 0, ..] => "it is xz-compressed: bundles and offline packages are plain tar",
        [b'P', b'K', 3, 4, ..] => "it is a zip archive",
        _ if first
            .iter()
            .take_while(|&&b| b != 0)
            .all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace()) =>
        {
            "it is a text file"
        }
        _ => "its first 512 bytes are not a tar header",
    }
}

fn parse_octal(field: &[u8]) -> Option<u64> {
    // GNU base-256 for big numbers.
    if let Some(&first) = field.first() {
        if first & 0x80 != 0 {
            if first & 0x40 != 0 {
                return None; // negative
            }
            let mut v: u64 = (first & 0x3f) as u64;
            for &b in &field[1..] {
                v = v.checked_mul(256)?.checked_add(b as u64)?;
            }
            return Some(v);
        }
    }
    let s: Vec<u8> = field
        .iter()
        .copied()
        .take_while(|&b| b != 0)
        .filter(|&b| b != b' ')
        .collect();
    if s.is_empty() {
        return Some(0);
    }
    let mut v: u64 = 0;
    for b in s {
        if !(b'0'..=b'7').contains(&b) {
            return None;
        }
        v = v.checked_mul(8)?.checked_add((b - b'0') as u64)?;
    }
    Some(v)
}

fn cstr(field: &[u8]) -> &[u8] {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    &field[..end]
}

/// Normalise and validate an entry name; returns None for the root (`./`).
pub fn check_entry_name(raw: &str) -> anyhow::Result<Option<String>> {
    if raw.is_empty() {
        bail!("empty entry name");
    }
    if raw.starts_with('/') {
        bail!("absolute path");
    }
    if raw.contains('\0') || raw.contains('\\') {
        bail!("invalid character in name");
    }
    let mut parts = Vec::new();
    for part in raw.split('/') {
        match part {
            "" | "." => continue,
            ".." => bail!("path contains \"..\""),
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    Ok(Some(parts.join("/")))
}

fn parse_pax(data: &[u8]) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .context("malformed PAX record")?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .context("malformed PAX record length")?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            bail!("malformed PAX record");
        }
        let rec = &rest[sp + 1..len - 1];
        let eq = rec
            .iter()
            .position(|&b| b == b'=')
            .context("malformed PAX record")?;
        let key = String::from_utf8(rec[..eq].to_vec()).context("non-UTF-8 PAX key")?;
        out.insert(key, rec[eq + 1..].to_vec());
        rest = &rest[len..];
    }
    Ok(out)
}

/// Index a tar archive lying at `base..base+len` of `file` by reading its
/// headers only (data is skipped by seeking). Every entry is validated;
/// errors name `what` (the archive) and the entry. Only regular files and
/// directories are accepted.
pub fn index_tar<F: ReadAt + ?Sized>(
    file: &F,
    base: u64,
    len: u64,
    what: &str,
) -> anyhow::Result<Vec<TarEntry>> {
    index_tar_opts(file, base, len, what, max_entries(), false)
}

/// The tar entry limit in force: [`MAX_ENTRIES`], or less when the
/// environment variable `BUNDLER_MAX_TAR_ENTRIES` asks for less. A test
/// knob (reaching the real limit takes a 512 MB tar of bare headers); it
/// can only lower the limit, never raise it.
pub fn max_entries() -> usize {
    std::env::var("BUNDLER_MAX_TAR_ENTRIES")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .map_or(MAX_ENTRIES, |n| n.min(MAX_ENTRIES))
}

/// [`index_tar`] with a custom entry limit.
pub fn index_tar_limited<F: ReadAt + ?Sized>(
    file: &F,
    base: u64,
    len: u64,
    what: &str,
    max_entries: usize,
) -> anyhow::Result<Vec<TarEntry>> {
    index_tar_opts(file, base, len, what, max_entries, false)
}

/// Resolve a link target to a normalised archive path: symlinks relative to
/// the link's directory, hard links from the archive root; never outside.
fn resolve_link(name: &str, target: &str, symbolic: bool) -> anyhow::Result<String> {
    if target.starts_with('/') {
        bail!("link target {target:?} is absolute");
    }
    let mut parts: Vec<&str> = Vec::new();
    if symbolic {
        parts.extend(name.split('/').filter(|p| !p.is_empty() && *p != "."));
        parts.pop();
    }
    for p in target.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    bail!("link target {target:?} leaves the archive");
                }
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        bail!("link target {target:?} is the archive root");
    }
    Ok(parts.join("/"))
}

/// [`index_tar`] for image archives from other tools (`docker save`,
/// `skopeo copy docker-archive:`), which use links for shared layers:
/// symbolic and hard links are accepted when they point at a regular file
/// inside the archive, and are listed as that file's extent under the
/// link's name. Links out of the archive, dangling links and link loops are
/// refused.
pub fn index_tar_with_links<F: ReadAt + ?Sized>(
    file: &F,
    base: u64,
    len: u64,
    what: &str,
) -> anyhow::Result<Vec<TarEntry>> {
    index_tar_opts(file, base, len, what, max_entries(), true)
}

fn index_tar_opts<F: ReadAt + ?Sized>(
    file: &F,
    base: u64,
    len: u64,
    what: &str,
    max_entries: usize,
    allow_links: bool,
) -> anyhow::Result<Vec<TarEntry>> {
    let mut links: Vec<(String, String)> = Vec::new();
    let mut long_link: Option<Vec<u8>> = None;
    let mut out: Vec<TarEntry> = Vec::new();
    // Every name indexed so far, with its kind: a repeated directory is
    // told from a duplicate file in one lookup (a scan of `out` here made
    // 400k entries take 21 s).
    let mut seen: BTreeMap<String, TarKind> = BTreeMap::new();
    let mut pos: u64 = 0;
    let mut long_name: Option<Vec<u8>> = None;
    let mut pax: Option<BTreeMap<String, Vec<u8>>> = None;
    let mut headers = 0usize;
    let mut block = [0u8; 512];
    loop {
        if pos >= len {
            break; // no end-of-archive blocks: accepted (some writers omit them)
        }
        if pos + 512 > len {
            if pos == 0 {
                let mut head = [0u8; 512];
                let _ = file.read_exact_at(&mut head[..len as usize], base);
                bail!(
                    "{what}: not a tar archive ({len} bytes, less than one tar header; {})",
                    describe_non_tar(&head)
                );
            }
            bail!(
                "{what}: the file is incomplete: it ends inside a tar header at offset {pos} \
                 ({len} bytes; at least {} expected): copy it again",
                pos + 512 + 1024
            );
        }
        file.read_exact_at(&mut block, base + pos)
            .with_context(|| format!("{what}: reading tar header at offset {pos}"))?;
        if block.iter().all(|&b| b == 0) {
            break;
        }
        headers += 1;
        if headers > max_entries {
            bail!("{what}: more than {max_entries} tar entries: refused (tar bomb?)");
        }
        let stored = parse_octal(&block[148..156]);
        // The checksum field counts as eight spaces.
        let computed: u64 = block.iter().fold(0u64, |a, &b| a + b as u64)
            - block[148..156].iter().fold(0u64, |a, &b| a + b as u64)
            + 8 * 32;
        let raw_name_for_msg = String::from_utf8_lossy(cstr(&block[0..100])).into_owned();
        if stored != Some(computed) {
            if pos == 0 {
                bail!("{what}: not a tar archive ({})", describe_non_tar(&block));
            }
            bail!("{what}: bad tar header checksum at offset {pos}: the archive is corrupted (after {} entries)", headers - 1);
        }
        let typeflag = block[156];
        let mut size = parse_octal(&block[124..136])
            .with_context(|| format!("{what}: entry {raw_name_for_msg:?}: invalid size field"))?;
        // Name: GNU long name or PAX path override the header's.
        let mut name_bytes: Vec<u8> = cstr(&block[0..100]).to_vec();
        let is_ustar = &block[257..263] == b"ustar\0";
        if is_ustar {
            let prefix = cstr(&block[345..500]);
            if !prefix.is_empty() {
                let mut n = prefix.to_vec();
                n.push(b'/');
                n.extend_from_slice(&name_bytes);
                name_bytes = n;
            }
        }
        if let Some(l) = long_name.take() {
            name_bytes = l;
        }
        let mut link_bytes: Vec<u8> = cstr(&block[157..257]).to_vec();
        if let Some(l) = long_link.take() {
            link_bytes = l;
        }
        if let Some(p) = pax.take() {
            if let Some(path) = p.get("path") {
                name_bytes = path.clone();
            }
            if let Some(l) = p.get("linkpath") {
                link_bytes = l.clone();
            }
            if let Some(s) = p.get("size") {
                size = std::str::from_utf8(s)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .with_context(|| {
                        format!("{what}: entry {raw_name_for_msg:?}: invalid PAX size")
                    })?;
            }
        }
        let name = String::from_utf8(name_bytes).map_err(|_| {
            anyhow::anyhow!("{what}: entry {raw_name_for_msg:?}: name is not valid UTF-8: refused")
        })?;
        // Names come from headers of up to 1 MiB: error lines quote them cut.
        let shown = crate::chart::tgz::short_name(&name);
        let data = pos + 512;
        let padded = size
            .checked_add(511)
            .map(|s| s / 512 * 512)
            .context("size overflow")?;
        if data.checked_add(size).is_none_or(|end| end > len) {
            // A copy cut short (scp, a USB stick pulled early) is by far the
            // likeliest cause: say so, with the size the complete file has
            // (exact when this is the last entry, as images.tar is).
            let expected = data.saturating_add(padded).saturating_add(1024);
            bail!(
                "{what}: the file is incomplete: entry {shown} needs {size} bytes from offset {data}, \
                 but the file ends at {len} (the complete file is at least {expected} bytes): \
                 copy it again"
            );
        }
        let next = data + padded;
        match typeflag {
            b'L' => {
                if size > MAX_META {
                    bail!("{what}: GNU long name of {size} bytes: refused");
                }
                let mut buf = vec![0u8; size as usize];
                file.read_exact_at(&mut buf, base + data)?;
                long_name = Some(cstr(&buf).to_vec());
            }
            b'K' => {
                if size > MAX_META {
                    bail!("{what}: GNU long link name of {size} bytes: refused");
                }
                let mut buf = vec![0u8; size as usize];
                file.read_exact_at(&mut buf, base + data)?;
                long_link = Some(cstr(&buf).to_vec());
            }
            b'1' | b'2' if allow_links => {
                let norm = check_entry_name(&name)
                    .with_context(|| format!("{what}: entry {shown} (header at offset {pos}): refused"))?
                    .with_context(|| format!("{what}: link {shown} (header at offset {pos}) has no name: refused"))?;
                let target = String::from_utf8(link_bytes).map_err(|_| {
                    anyhow::anyhow!("{what}: link {shown} (header at offset {pos}): target is not valid UTF-8: refused")
                })?;
                let resolved = resolve_link(&norm, &target, typeflag == b'2')
                    .with_context(|| format!("{what}: link {shown} (header at offset {pos}): refused"))?;
                if seen.insert(norm.clone(), TarKind::File).is_some() {
                    bail!("{what}: duplicate entry {shown} (header at offset {pos}): refused");
                }
                links.push((norm, resolved));
            }
            b'x' => {
                if size > MAX_META {
                    bail!("{what}: PAX header of {size} bytes: refused");
                }
                let mut buf = vec![0u8; size as usize];
                file.read_exact_at(&mut buf, base + data)?;
                pax = Some(parse_pax(&buf).with_context(|| format!("{what}: entry {shown} (header at offset {pos})"))?);
            }
            b'g' => {} // global PAX header: nothing we use
            b'0' | b'\0' | b'7' | b'5' => {
                let kind = if typeflag == b'5' || (typeflag == b'\0' && name.ends_with('/')) {
                    TarKind::Dir
                } else {
                    TarKind::File
                };
                let norm = check_entry_name(&name)
                    .with_context(|| format!("{what}: entry {shown} (header at offset {pos}): refused"))?;
                if let Some(norm) = norm {
                    if let Some(&earlier) = seen.get(&norm) {
                        if kind == TarKind::Dir && earlier == TarKind::Dir {
                            // a directory listed twice is harmless
                        } else {
                            bail!("{what}: duplicate entry {shown} (header at offset {pos}): refused");
                        }
                    } else {
                        seen.insert(norm.clone(), kind);
                        out.push(TarEntry {
                            name: norm,
                            kind,
                            extent: Extent {
                                offset: base + data,
                                size: if kind == TarKind::Dir { 0 } else { size },
                            },
                        });
                    }
                }
            }
            b'1' => bail!("{what}: entry {shown} (header at offset {pos}) is a hard link: refused"),
            b'2' => bail!("{what}: entry {shown} (header at offset {pos}) is a symbolic link: refused"),
            b'3' => bail!("{what}: entry {shown} (header at offset {pos}) is a character device: refused"),
            b'4' => bail!("{what}: entry {shown} (header at offset {pos}) is a block device: refused"),
            b'6' => bail!("{what}: entry {shown} (header at offset {pos}) is a fifo: refused"),
            other => bail!(
                "{what}: entry {shown} (header at offset {pos}) has unsupported tar type {:?}: refused",
                other as char
            ),
        }
        pos = next;
    }
    if long_name.is_some() || pax.is_some() || long_link.is_some() {
        bail!("{what}: archive ends after a long-name/PAX header without its entry");
    }
    if !links.is_empty() {
        let link_map: BTreeMap<&str, &str> = links
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let files: BTreeMap<&str, Extent> = out
            .iter()
            .filter(|e| e.kind == TarKind::File)
            .map(|e| (e.name.as_str(), e.extent))
            .collect();
        let mut resolved = Vec::new();
        for (name, target) in &links {
            let mut t = target.as_str();
            let mut hops = 0;
            let ext = loop {
                if let Some(e) = files.get(t) {
                    break *e;
                }
                match link_map.get(t) {
                    Some(next) if hops < 16 => {
                        t = next;
                        hops += 1;
                    }
                    Some(_) => bail!(
                        "{what}: link {}: link loop: refused",
                        crate::chart::tgz::short_name(name)
                    ),
                    None => bail!(
                        "{what}: link {} points at {}, which is not a file in the archive: refused",
                        crate::chart::tgz::short_name(name),
                        crate::chart::tgz::short_name(target)
                    ),
                }
            };
            resolved.push(TarEntry {
                name: name.clone(),
                kind: TarKind::File,
                extent: ext,
            });
        }
        out.extend(resolved);
    }
    Ok(out)
}

/// Stream-hash `size` bytes at `offset` of `file` (1 MiB reads).
pub fn hash_range<F: ReadAt + ?Sized>(
    file: &F,
    offset: u64,
    size: u64,
    buf: &mut Vec<u8>,
) -> std::io::Result<Digest> {
    let mut h = Sha256::new();
    hash_range_into(file, offset, size, buf, |chunk| h.update(chunk))?;
    Ok(Digest::from_sha256(h))
}

/// Read `size` bytes at `offset` in 1 MiB chunks, handing each to `f`.
pub fn hash_range_into<F: ReadAt + ?Sized>(
    file: &F,
    offset: u64,
    size: u64,
    buf: &mut Vec<u8>,
    mut f: impl FnMut(&[u8]),
) -> std::io::Result<()> {
    buf.resize(1 << 20, 0);
    let mut done = 0u64;
    while done < size {
        let n = ((size - done) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], offset + done)?;
        f(&buf[..n]);
        done += n as u64;
    }
    Ok(())
}

/// The full reference of an `index.json` entry from its annotations:
/// `io.containerd.image.name` (full) or `org.opencontainers.image.ref.name`
/// (full, or only a tag that is combined with the containerd name).
pub fn reference_from_annotations(
    ann: Option<&BTreeMap<String, String>>,
) -> anyhow::Result<Option<Reference>> {
    let Some(ann) = ann else { return Ok(None) };
    let ref_name = ann.get(media::ANNOTATION_REF_NAME).map(String::as_str);
    let ctr = ann
        .get(media::ANNOTATION_CONTAINERD_NAME)
        .map(String::as_str);
    let looks_like_tag = |s: &str| {
        !s.contains(['/', ':', '@'])
            && !s.is_empty()
            && s.len() <= 128
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    };
    match (ref_name, ctr) {
        (_, Some(c)) => {
            let mut r = Reference::parse(c).context("io.containerd.image.name annotation")?;
            if let Some(t) = ref_name.filter(|t| looks_like_tag(t)) {
                if r.tag.is_none() {
                    r.tag = Some(t.to_string());
                }
            }
            Ok(Some(r))
        }
        (Some(r), None) => {
            let parsed =
                Reference::parse(r).context("org.opencontainers.image.ref.name annotation")?;
            Ok(Some(parsed))
        }
        (None, None) => Ok(None),
    }
}

/// The digest a docker-archive file name implies (`sha256:<hex>`,
/// `blobs/sha256/<hex>`, `<hex>.json`, `<hex>.tar.gz`, `<hex>.tar`, `<hex>`).
pub fn digest_from_name(name: &str) -> Option<Digest> {
    let base = name.rsplit('/').next().unwrap_or(name);
    if let Some(h) = base.strip_prefix("sha256:") {
        return Digest::from_hex(h).ok();
    }
    if let Some(h) = name.strip_prefix("blobs/sha256/") {
        return Digest::from_hex(h).ok();
    }
    let stem = base
        .strip_suffix(".tar.gz")
        .or_else(|| base.strip_suffix(".tar"))
        .or_else(|| base.strip_suffix(".json"))
        .unwrap_or(base);
    Digest::from_hex(stem).ok()
}

/// One entry of a docker archive `manifest.json`.
#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerArchiveEntry {
    pub config: String,
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(default)]
    pub layers: Vec<String>,
}

/// A docker v2 schema2 manifest for a docker-archive image (stable bytes).
pub fn synthesize_docker_manifest(config: &Descriptor, layers: &[Descriptor]) -> ManifestDoc {
    #[derive(serde::Serialize)]
    struct D<'a> {
        #[serde(rename = "mediaType")]
        media_type: &'a str,
        size: u64,
        digest: &'a Digest,
    }
    #[derive(serde::Serialize)]
    struct M<'a> {
        #[serde(rename = "schemaVersion")]
        schema_version: u32,
        #[serde(rename = "mediaType")]
        media_type: &'a str,
        config: D<'a>,
        layers: Vec<D<'a>>,
    }
    fn d(x: &Descriptor) -> D<'_> {
        D {
            media_type: &x.media_type,
            size: x.size,
            digest: &x.digest,
        }
    }
    let m = M {
        schema_version: 2,
        media_type: media::DOCKER_MANIFEST,
        config: d(config),
        layers: layers.iter().map(d).collect(),
    };
    let bytes = serde_json::to_vec_pretty(&m).expect("serialise manifest");
    ManifestDoc::new(media::DOCKER_MANIFEST, bytes)
}

pub struct BundleReader {
    /// The file holding the bundle (the bundle itself, or the outer package
    /// it sits in: extents are absolute offsets in this file).
    pub path: PathBuf,
    /// How to name this bundle in messages.
    pub label: String,
    /// The bundle's entry name when it sits inside an offline package.
    pub package_entry: Option<String>,
    /// Where the bundle lies in `path` (the whole file for a bare bundle).
    pub extent: Extent,
    pub entries: BTreeMap<String, Extent>,
    pub images_entries: BTreeMap<String, Extent>,
    pub meta: Option<BundleJson>,
    pub images: Vec<BundleImage>,
    /// Every content-addressed file (OCI `blobs/sha256/<hex>`, or a docker
    /// archive's config/layer files), by digest, absolute extents.
    pub blob_index: BTreeMap<Digest, Extent>,
    /// Platform of each image of `images` (same order), when known.
    pub platforms: Vec<Option<Platform>>,
    /// Digests of docker-archive files that were named by their digest and
    /// not hashed at open (verify checks them).
    pub named_blobs: BTreeSet<Digest>,
    file: PackageFile,
}

impl std::fmt::Debug for BundleReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleReader")
            .field("path", &self.path)
            .field("entries", &self.entries.len())
            .field("images", &self.images.len())
            .finish()
    }
}

impl BundleReader {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let what = format!("bundle {}", path.display());
        // Opening a FIFO would block forever.
        crate::file_kind::check_path(path, "bundle", false)?;
        let file = File::open(path).with_context(|| format!("opening {what}"))?;
        let len = file
            .metadata()
            .with_context(|| format!("reading {what}"))?
            .len();
        Self::open_region(
            path,
            file.into(),
            Extent {
                offset: 0,
                size: len,
            },
            None,
            what,
        )
    }

    /// A bundle stored as entry `name` of an outer offline package (seed
    /// 002's `<name>_<version>_<arch>.tar`), read in place: every extent is
    /// an absolute offset in the package file, so blobs stream straight
    /// from it and nothing is extracted.
    pub fn open_at(package: &Path, name: &str, region: Extent) -> anyhow::Result<Self> {
        let file = File::open(package).with_context(|| format!("opening {}", package.display()))?;
        Self::open_in(package, file.into(), name, region)
    }

    /// [`BundleReader::open_at`] on an opened package (a split package's
    /// volumes read as one stream).
    pub fn open_in(
        package: &Path,
        file: PackageFile,
        name: &str,
        region: Extent,
    ) -> anyhow::Result<Self> {
        let what = format!("bundle {name} in {}", package.display());
        Self::open_region(package, file, region, Some(name.to_string()), what)
    }

    fn open_region(
        path: &Path,
        file: PackageFile,
        region: Extent,
        package_entry: Option<String>,
        what: String,
    ) -> anyhow::Result<Self> {
        let mut entries = BTreeMap::new();
        for e in index_tar(&file, region.offset, region.size, &what)? {
            if e.kind == TarKind::File {
                entries.insert(e.name, e.extent);
            }
        }
        let mut r = BundleReader {
            path: path.to_path_buf(),
            label: what.trim_start_matches("bundle ").to_string(),
            package_entry,
            extent: region,
            entries,
            images_entries: BTreeMap::new(),
            meta: None,
            images: Vec::new(),
            blob_index: BTreeMap::new(),
            platforms: Vec::new(),
            named_blobs: BTreeSet::new(),
            file,
        };
        // Every bundle (bundler's, relok8s') ends with images.tar. Without
        // it the file is not a bundle, or was cut off at an entry boundary
        // (the reader accepts archives without end-of-archive blocks, so
        // such a cut would otherwise pass for a smaller, valid bundle).
        if !r.entries.contains_key(IMAGES_TAR) {
            bail!("{what}: no {IMAGES_TAR} in it: not a bundle, or the file is truncated");
        }
        if r.entries.contains_key(BUNDLE_JSON) {
            let raw = r.read_file(BUNDLE_JSON)?;
            let meta: BundleJson = serde_json::from_slice(&raw)
                .with_context(|| format!("{what}: bundle.json is malformed"))?;
            let major = meta.format_version.split('.').next().unwrap_or("");
            let ours = super::format::FORMAT_VERSION
                .split('.')
                .next()
                .unwrap_or("");
            let is_delta = meta.format_version == super::format::DELTA_FORMAT_VERSION;
            if is_delta != meta.delta.is_some() {
                bail!(
                    "{what}: bundle.json formatVersion {:?} {} delta record: the bundle is damaged",
                    meta.format_version,
                    if is_delta { "without a" } else { "with a" }
                );
            }
            // A manifests bundle (crate::manifests) is read by this bundler.
            let is_manifests = meta.format_version == crate::manifests::MANIFESTS_FORMAT_VERSION;
            if !is_delta
                && !is_manifests
                && major
                    .parse::<u32>()
                    .ok()
                    .zip(ours.parse::<u32>().ok())
                    .is_none_or(|(a, b)| a > b)
            {
                bail!(
                    "{what}: bundle.json formatVersion {:?} is not supported by this bundler (supports {}): upgrade bundler",
                    meta.format_version,
                    super::format::FORMAT_VERSION
                );
            }
            r.meta = Some(meta);
        }
        if let Some(ext) = r.entries.get(IMAGES_TAR).copied() {
            let inner_what = format!("{what} ({IMAGES_TAR})");
            for e in index_tar(&r.file, ext.offset, ext.size, &inner_what)? {
                if e.kind == TarKind::File {
                    r.images_entries.insert(e.name, e.extent);
                }
            }
            r.load_images(&inner_what)?;
        }
        Ok(r)
    }

    fn read_extent(&self, ext: Extent, name: &str) -> anyhow::Result<Vec<u8>> {
        if ext.size > MAX_SMALL_FILE {
            bail!(
                "bundle {}: {name} is {} bytes, more than the {} bytes allowed for a small file",
                self.path.display(),
                ext.size,
                MAX_SMALL_FILE
            );
        }
        let mut buf = vec![0u8; ext.size as usize];
        self.file
            .read_exact_at(&mut buf, ext.offset)
            .with_context(|| format!("bundle {}: reading {name}", self.path.display()))?;
        Ok(buf)
    }

    /// Read a small file of the nested `images.tar` (index.json, ...).
    pub fn read_images_file(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let ext =
            self.images_entries.get(name).copied().with_context(|| {
                format!("bundle {}: no {IMAGES_TAR}/{name}", self.path.display())
            })?;
        self.read_extent(ext, &format!("{IMAGES_TAR}/{name}"))
    }

    /// Read a small blob (manifest, config) by digest, checking its digest.
    pub fn read_blob(&self, digest: &Digest) -> anyhow::Result<Vec<u8>> {
        let ext = self
            .blob(digest)
            .with_context(|| format!("bundle {}: blob {digest} is missing", self.path.display()))?;
        let bytes = self.read_extent(ext, &format!("blob {digest}"))?;
        let got = Digest::of(&bytes);
        if &got != digest {
            bail!(
                "bundle {}: blob {digest} is corrupted (its content has digest {got})",
                self.path.display()
            );
        }
        Ok(bytes)
    }

    /// The open bundle file (for positioned reads of blob extents).
    pub fn file(&self) -> &PackageFile {
        &self.file
    }

    /// The `bundle.json` record of an image (by root digest), if any.
    pub fn record_for(&self, image: &BundleImage) -> Option<&ImageRecord> {
        self.meta.as_ref().and_then(|m| {
            m.images
                .iter()
                .find(|r| {
                    r.digest == image.root.digest && r.reference == image.reference.to_string()
                })
                .or_else(|| m.images.iter().find(|r| r.digest == image.root.digest))
        })
    }

    fn load_images(&mut self, what: &str) -> anyhow::Result<()> {
        for (name, ext) in &self.images_entries {
            if let Some(h) = name.strip_prefix("blobs/sha256/") {
                if let Ok(d) = Digest::from_hex(h) {
                    self.blob_index.insert(d, *ext);
                }
            }
        }
        if self.is_delta() {
            // A delta's index has its own name (see format::DELTA_INDEX).
            self.load_oci(what, super::format::DELTA_INDEX)?;
        } else if self.images_entries.contains_key("index.json") {
            self.load_oci(what, "index.json")?;
            if self.images_entries.contains_key("manifest.json") {
                // Check the docker view points at files that exist.
                for (i, e) in self.docker_entries(what)?.iter().enumerate() {
                    for f in std::iter::once(&e.config).chain(e.layers.iter()) {
                        if !self.images_entries.contains_key(f.trim_start_matches("./")) {
                            bail!("{what}: manifest.json entry {i} points at {f:?}, which is not in the archive");
                        }
                    }
                }
            }
        } else if self.images_entries.contains_key("manifest.json") {
            self.load_docker(what)?;
        } else if !self.images_entries.is_empty() {
            bail!("{what}: neither index.json nor manifest.json: not an image archive");
        }
        Ok(())
    }

    fn docker_entries(&self, what: &str) -> anyhow::Result<Vec<DockerArchiveEntry>> {
        let raw = self.read_images_file("manifest.json")?;
        serde_json::from_slice(&raw).with_context(|| format!("{what}: manifest.json is malformed"))
    }

    fn load_oci(&mut self, what: &str, index_name: &str) -> anyhow::Result<()> {
        let raw = self.read_images_file(index_name)?;
        let index = match media::parse(&raw, Some(media::OCI_INDEX))
            .with_context(|| format!("{what}: {index_name} is malformed"))?
        {
            Parsed::Index { manifests, .. } => manifests,
            Parsed::Manifest { .. } => bail!("{what}: {index_name} is not an index"),
        };
        for desc in index {
            let reference = reference_from_annotations(desc.annotations.as_ref())
                .with_context(|| format!("{what}: index.json entry {}", desc.digest))?
                .with_context(|| {
                    format!(
                        "{what}: index.json entry {} has no {} annotation: cannot tell which image it is",
                        desc.digest,
                        media::ANNOTATION_REF_NAME
                    )
                })?;
            let root = self.load_doc(&desc, what, "index.json")?;
            let mut children = Vec::new();
            let mut blobs: Vec<Descriptor> = Vec::new();
            let mut seen = BTreeSet::new();
            let mut platform = desc.platform.clone();
            let omitted: BTreeSet<Digest> = self
                .meta
                .as_ref()
                .and_then(|m| {
                    m.images
                        .iter()
                        .find(|r| r.digest == desc.digest)
                        .map(|r| r.omitted.iter().cloned().collect())
                })
                .unwrap_or_default();
            match root.parse().with_context(|| what.to_string())? {
                Parsed::Manifest { config, layers, .. } => {
                    for b in std::iter::once(config).chain(layers) {
                        self.push_blob(&mut blobs, &mut seen, b, &root.digest, what)?;
                    }
                }
                Parsed::Index { manifests, .. } => {
                    for child in manifests {
                        if self.blob(&child.digest).is_none() && omitted.contains(&child.digest) {
                            continue;
                        }
                        if self.blob(&child.digest).is_none() {
                            bail!(
                                "{what}: index {} of {reference} names manifest {}, which is missing from the bundle",
                                root.digest,
                                child.digest
                            );
                        }
                        let doc = self.load_doc(&child, what, &format!("index {}", root.digest))?;
                        match doc.parse()? {
                            Parsed::Manifest { config, layers, .. } => {
                                for b in std::iter::once(config).chain(layers) {
                                    self.push_blob(&mut blobs, &mut seen, b, &doc.digest, what)?;
                                }
                            }
                            Parsed::Index { .. } => bail!(
                                "{what}: nested index {} inside {} is not supported",
                                doc.digest,
                                root.digest
                            ),
                        }
                        children.push(doc);
                    }
                }
            }
            if let Some(rec) = self
                .meta
                .as_ref()
                .and_then(|m| m.images.iter().find(|r| r.digest == desc.digest))
            {
                if rec.platform.is_some() {
                    platform = rec.platform.clone();
                }
            }
            self.images.push(BundleImage {
                reference,
                root,
                children,
                blobs,
                synthesized: false,
            });
            self.platforms.push(platform);
        }
        Ok(())
    }

    fn push_blob(
        &self,
        blobs: &mut Vec<Descriptor>,
        seen: &mut BTreeSet<Digest>,
        b: Descriptor,
        manifest: &Digest,
        what: &str,
    ) -> anyhow::Result<()> {
        // A delta leaves out the layers the site has: listed, not missing.
        // `blobs` is what the bundle carries, so they are not added.
        if self.blob(&b.digest).is_none() {
            if let Some(ext) = self.meta.as_ref().and_then(|m| m.external_blob(&b.digest)) {
                if ext.size != b.size {
                    bail!(
                        "{what}: external blob {} is {} bytes in bundle.json but manifest {manifest} says {}",
                        b.digest,
                        ext.size,
                        b.size
                    );
                }
                return Ok(());
            }
        }
        let ext = self.blob(&b.digest).with_context(|| {
            format!(
                "{what}: blob {} referenced by manifest {manifest} is missing from the bundle",
                b.digest
            )
        })?;
        if ext.size != b.size {
            bail!(
                "{what}: blob {} is {} bytes but manifest {manifest} says {}",
                b.digest,
                ext.size,
                b.size
            );
        }
        if seen.insert(b.digest.clone()) {
            blobs.push(b);
        }
        Ok(())
    }

    fn load_doc(&self, desc: &Descriptor, what: &str, from: &str) -> anyhow::Result<ManifestDoc> {
        let ext = self.blob(&desc.digest).with_context(|| {
            format!(
                "{what}: {from} points at {}, which is missing from the bundle",
                desc.digest
            )
        })?;
        if ext.size != desc.size {
            bail!(
                "{what}: manifest {} is {} bytes but {from} says {}",
                desc.digest,
                ext.size,
                desc.size
            );
        }
        let bytes = self.read_blob(&desc.digest)?;
        let parsed = media::parse(&bytes, Some(&desc.media_type))
            .with_context(|| format!("{what}: manifest {}", desc.digest))?;
        Ok(ManifestDoc {
            digest: desc.digest.clone(),
            media_type: parsed.media_type().to_string(),
            bytes: Bytes::from(bytes),
        })
    }

    /// Extent and digest of a file of the docker archive; the digest comes
    /// from the file name when it names one (checked later by verify), else
    /// it is computed here. Hashing at open happens only for docker archives
    /// whose files are not named by digest (legacy `docker save` layouts),
    /// whose layers are usually small in relok8s-written bundles.
    fn docker_file(
        &mut self,
        name: &str,
        what: &str,
        buf: &mut Vec<u8>,
    ) -> anyhow::Result<(Digest, Extent)> {
        let key = name.trim_start_matches("./");
        let ext = self.images_entries.get(key).copied().with_context(|| {
            format!("{what}: manifest.json points at {name:?}, which is not in the archive")
        })?;
        let digest = match digest_from_name(key) {
            Some(d) => {
                self.named_blobs.insert(d.clone());
                d
            }
            None => hash_range(&self.file, ext.offset, ext.size, buf)
                .with_context(|| format!("{what}: hashing {name}"))?,
        };
        if let Some(prev) = self.blob_index.get(&digest) {
            if *prev != ext {
                // Same content under two names: keep the first.
            }
        } else {
            self.blob_index.insert(digest.clone(), ext);
        }
        Ok((digest, ext))
    }

    fn load_docker(&mut self, what: &str) -> anyhow::Result<()> {
        let entries = self.docker_entries(what)?;
        let mut buf = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            let (cd, cext) = self.docker_file(&e.config, what, &mut buf)?;
            let config = Descriptor {
                media_type: media::DOCKER_CONFIG.to_string(),
                digest: cd,
                size: cext.size,
                platform: None,
                annotations: None,
            };
            let mut layers = Vec::new();
            for l in &e.layers {
                let (ld, lext) = self.docker_file(l, what, &mut buf)?;
                let mut magic = [0u8; 2];
                let gz = lext.size >= 2
                    && self.file.read_exact_at(&mut magic, lext.offset).is_ok()
                    && magic == [0x1f, 0x8b];
                layers.push(Descriptor {
                    media_type: if gz {
                        media::DOCKER_LAYER_GZIP
                    } else {
                        media::DOCKER_LAYER_TAR
                    }
                    .to_string(),
                    digest: ld,
                    size: lext.size,
                    platform: None,
                    annotations: None,
                });
            }
            let root = synthesize_docker_manifest(&config, &layers);
            let mut blobs = Vec::new();
            let mut seen = BTreeSet::new();
            for b in std::iter::once(config.clone()).chain(layers.iter().cloned()) {
                if seen.insert(b.digest.clone()) {
                    blobs.push(b);
                }
            }
            let platform = self.docker_platform(&config);
            let tags = e.repo_tags.clone().unwrap_or_default();
            if tags.is_empty() {
                bail!("{what}: manifest.json entry {i} has no RepoTags: cannot tell which image it is");
            }
            for t in tags {
                let reference = Reference::parse(&t)
                    .with_context(|| format!("{what}: manifest.json entry {i} RepoTags"))?;
                self.images.push(BundleImage {
                    reference,
                    root: root.clone(),
                    children: Vec::new(),
                    blobs: blobs.clone(),
                    synthesized: true,
                });
                self.platforms.push(platform.clone());
            }
        }
        Ok(())
    }

    /// os/architecture from a (small) image config, when readable.
    fn docker_platform(&self, config: &Descriptor) -> Option<Platform> {
        #[derive(serde::Deserialize)]
        struct C {
            os: Option<String>,
            architecture: Option<String>,
            variant: Option<String>,
        }
        let ext = self.blob(&config.digest)?;
        if ext.size > 1 << 20 {
            return None;
        }
        let bytes = self.read_extent(ext, "config").ok()?;
        let c: C = serde_json::from_slice(&bytes).ok()?;
        Some(Platform {
            os: c.os?,
            architecture: c.architecture?,
            variant: c.variant.filter(|v| !v.is_empty()),
        })
    }

    /// Read a small non-blob file of the outer tar (hints.yaml, chart files).
    pub fn read_file(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let ext = self
            .entries
            .get(name)
            .copied()
            .with_context(|| format!("bundle {}: no entry {name}", self.path.display()))?;
        self.read_extent(ext, name)
    }

    /// `original-chart/...` files: (path relative to the chart root, bytes).
    pub fn chart_files(&self) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        // The chart's own files are bounded together before any is read
        // (packaged subcharts are then counted by `Chart::from_files`).
        let own: u64 = (self.entries.iter())
            .filter(|(name, _)| name.starts_with(CHART_DIR))
            .map(|(_, e)| e.size)
            .sum();
        if own > crate::chart::load::MAX_TOTAL_SIZE {
            bail!(
                "bundle {}: the chart in {CHART_DIR} is {own} bytes: more than {} MiB, refused",
                self.path.display(),
                crate::chart::load::MAX_TOTAL_SIZE >> 20
            );
        }
        let mut out = Vec::new();
        for name in self.entries.keys() {
            if let Some(rel) = name.strip_prefix(CHART_DIR) {
                out.push((rel.to_string(), self.read_file(name)?));
            }
        }
        Ok(out)
    }

    /// The hints text (`hints.yaml`), if any.
    pub fn hints(&self) -> anyhow::Result<Option<String>> {
        if !self.entries.contains_key(HINTS_FILE) {
            return Ok(None);
        }
        let raw = self.read_file(HINTS_FILE)?;
        let s = String::from_utf8(raw)
            .with_context(|| format!("bundle {}: hints.yaml is not UTF-8", self.path.display()))?;
        Ok(Some(s))
    }

    /// Chart name and version from `original-chart/Chart.yaml`.
    pub fn chart_name_version(&self) -> anyhow::Result<Option<(String, String)>> {
        #[derive(serde::Deserialize)]
        struct ChartYaml {
            name: String,
            version: serde_yaml_ng::Value,
        }
        let name = format!("{CHART_DIR}Chart.yaml");
        if !self.entries.contains_key(&name) {
            return Ok(None);
        }
        let raw = self.read_file(&name)?;
        let c: ChartYaml = crate::yaml_bounds::from_slice(&raw)
            .with_context(|| format!("bundle {}: {name} is malformed", self.path.display()))?;
        let version = match c.version {
            serde_yaml_ng::Value::String(s) => s,
            serde_yaml_ng::Value::Number(n) => n.to_string(),
            other => bail!(
                "bundle {}: {name}: version {other:?} is not a string",
                self.path.display()
            ),
        };
        Ok(Some((c.name, version)))
    }

    /// A delta bundle: some blobs are external (in the site's registry).
    pub fn is_delta(&self) -> bool {
        self.meta.as_ref().is_some_and(|m| m.delta.is_some())
    }

    /// Extent of a blob in the outer file.
    pub fn blob(&self, digest: &Digest) -> Option<Extent> {
        self.blob_index.get(digest).copied()
    }
}
