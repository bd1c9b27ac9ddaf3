//! Opening an offline package the way every reader must: `package.json`
//! first, then its signature (when a key is given or required), then the
//! members against it — missing, extra, resized, swapped (`bundle.json`
//! digest) and, when asked, changed (sha256 of every byte) — all before a
//! single bundle is read, so nothing is pushed or served from a package
//! that is not the one that was packed.
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};

use super::sign::VerifyKey;
use super::source::{PackageFile, ReadAt};
use super::toc::{PackageToc, PACKAGE_JSON, SIGNATURE};
use super::volumes::VolumeSet;
use crate::bundle::format::BUNDLE_JSON;
use crate::bundle::reader::{hash_range, index_tar, Extent, TarEntry, TarKind, MAX_SMALL_FILE};
use crate::oci::Digest;

/// What a reader checks beyond the table of contents itself.
#[derive(Clone, Debug, Default)]
pub struct PackageCheck {
    /// Hash every member (and every volume of a split package): what
    /// verify, sync and serve do; inspect and diff only check the table.
    pub contents: bool,
    /// Hash every volume of a split package against its table (implied by
    /// `contents`): what finds a damaged volume so that it is read from
    /// parity.
    pub volumes: bool,
    /// Check the signature with this key; an unsigned package is refused.
    pub key: Option<(VerifyKey, PathBuf)>,
}

/// A package whose table of contents (if it has one) matched.
#[derive(Debug)]
pub struct OpenedPackage {
    pub path: PathBuf,
    pub file: PackageFile,
    pub toc: Option<PackageToc>,
    pub signed: bool,
    /// The member entries (package.json and its signature left out).
    pub members: Vec<TarEntry>,
}

/// Open the package at `path` (a plain file; split packages go through
/// [`open_volumes`]), already indexed as `entries`.
pub fn check_package(
    path: &Path,
    file: PackageFile,
    entries: Vec<TarEntry>,
    check: &PackageCheck,
) -> anyhow::Result<OpenedPackage> {
    let what = format!("offline package {}", path.display());
    let first = entries.first().map(|e| e.name.as_str());
    if first != Some(PACKAGE_JSON) {
        if entries.iter().any(|e| e.name == PACKAGE_JSON) {
            bail!("{what}: {PACKAGE_JSON} is not the first entry: the package was rebuilt by hand; use the package `bundler pack` wrote");
        }
        if let Some((_, key_path)) = &check.key {
            bail!(
                "{what}: not signed (no {PACKAGE_JSON}: written by a bundler before packages had a table of contents), \
                 and a signature by {} is required: refused",
                key_path.display()
            );
        }
        tracing::warn!(
            "{what} has no {PACKAGE_JSON} (written by an older bundler): whether it is complete cannot be checked"
        );
        let members: Vec<TarEntry> = entries
            .into_iter()
            .filter(|e| e.kind == TarKind::File)
            .collect();
        refuse_duplicate_charts(&members, &file, &what)?;
        return Ok(OpenedPackage {
            path: path.to_path_buf(),
            file,
            toc: None,
            signed: false,
            members,
        });
    }
    let toc_bytes = read_small(&file, entries[0].extent, PACKAGE_JSON, &what)?;
    let sig_entry = entries.get(1).filter(|e| e.name == SIGNATURE).cloned();
    if let Some((key, key_path)) = &check.key {
        verify_signature(&file, &entries, key, key_path, &what)?;
    }
    let toc = PackageToc::parse(&toc_bytes, &what)?;
    let members: Vec<TarEntry> = entries
        .into_iter()
        .skip(if sig_entry.is_some() { 2 } else { 1 })
        .filter(|e| e.kind == TarKind::File)
        .collect();
    check_members(&toc, &members, &file, &what)?;
    if check.contents {
        hash_members(&toc, &members, &file, &what)?;
    }
    Ok(OpenedPackage {
        path: path.to_path_buf(),
        file,
        toc: Some(toc),
        signed: sig_entry.is_some(),
        members,
    })
}

/// `package.json.sig` against `package.json` (the first two entries).
fn verify_signature<F: ReadAt + ?Sized>(
    file: &F,
    entries: &[TarEntry],
    key: &VerifyKey,
    key_path: &Path,
    what: &str,
) -> anyhow::Result<()> {
    let not_signed = || {
        anyhow::anyhow!(
            "{what}: not signed, and a signature by {} ({}) is required: refused; ask for a package made with `pack --sign-key`",
            key_path.display(),
            key.fingerprint()
        )
    };
    let toc = entries
        .first()
        .filter(|e| e.name == PACKAGE_JSON)
        .ok_or_else(not_signed)?;
    let sig = entries
        .get(1)
        .filter(|e| e.name == SIGNATURE)
        .ok_or_else(not_signed)?;
    let toc_bytes = read_small(file, toc.extent, PACKAGE_JSON, what)?;
    let sig = read_small(file, sig.extent, SIGNATURE, what)?;
    key.verify(&toc_bytes, &sig).map_err(|e| {
        anyhow::anyhow!(
            "{what}: {e} for key {} ({} {}): signed by another key, or {PACKAGE_JSON} was edited; refused, nothing was read",
            key_path.display(),
            key.kind(),
            key.fingerprint()
        )
    })
}

fn read_small<F: ReadAt + ?Sized>(
    file: &F,
    ext: Extent,
    name: &str,
    what: &str,
) -> anyhow::Result<Vec<u8>> {
    if ext.size > MAX_SMALL_FILE {
        bail!("{what}: {name} is {} bytes: refused", ext.size);
    }
    let mut buf = vec![0u8; ext.size as usize];
    file.read_exact_at(&mut buf, ext.offset)
        .with_context(|| format!("{what}: reading {name}"))?;
    Ok(buf)
}

const COPY_AGAIN: &str = "copy the package again from the connected side";

/// Names and sizes against the table, and each bundle's `bundle.json`.
fn check_members(
    toc: &PackageToc,
    members: &[TarEntry],
    file: &PackageFile,
    what: &str,
) -> anyhow::Result<()> {
    for m in members {
        let Some(t) = toc.member(&m.name) else {
            bail!("{what}: {} is not in {PACKAGE_JSON}: it was added after packing; refused ({COPY_AGAIN})", m.name);
        };
        if t.size != m.extent.size {
            bail!(
                "{what}: {} is {} bytes, {PACKAGE_JSON} says {}: refused, the member was replaced or cut ({COPY_AGAIN})",
                m.name,
                m.extent.size,
                t.size
            );
        }
    }
    let missing: Vec<&str> = toc
        .members
        .iter()
        .filter(|t| !members.iter().any(|m| m.name == t.name))
        .map(|t| t.name.as_str())
        .collect();
    if !missing.is_empty() {
        bail!(
            "{what}: incomplete, {} of {} members missing ({}): the copy stopped short or members were removed; refused ({COPY_AGAIN})",
            missing.len(),
            toc.members.len(),
            missing.join(", ")
        );
    }
    for t in &toc.members {
        let Some(expect) = &t.bundle_json else {
            continue;
        };
        let m = members
            .iter()
            .find(|m| m.name == t.name)
            .expect("checked above");
        let got = bundle_identity(file, m, what)?.map(|(d, _)| d);
        if got.as_ref() != Some(expect) {
            bail!(
                "{what}: {} is not the bundle that was packed (its {BUNDLE_JSON} is {}, {PACKAGE_JSON} says {expect}): \
                 refused, a member was swapped ({COPY_AGAIN})",
                t.name,
                got.map_or("missing".to_string(), |d| d.to_string())
            );
        }
    }
    refuse_duplicate_charts(members, file, what)
}

/// The digest of a bundle member's `bundle.json` and its chart
/// (`NAME-VERSION`), read from the bytes (headers and one small file).
fn bundle_identity(
    file: &PackageFile,
    m: &TarEntry,
    what: &str,
) -> anyhow::Result<Option<(Digest, Option<String>)>> {
    let inner = index_tar(
        file,
        m.extent.offset,
        m.extent.size,
        &format!("{what}: {}", m.name),
    )?;
    let Some(e) = inner
        .iter()
        .find(|e| e.name == BUNDLE_JSON && e.kind == TarKind::File)
    else {
        return Ok(None);
    };
    let raw = read_small(file, e.extent, BUNDLE_JSON, what)?;
    let chart = serde_json::from_slice::<crate::bundle::format::BundleJson>(&raw)
        .ok()
        .and_then(|b| b.chart)
        .map(|c| format!("{}-{}", c.name, c.version));
    Ok(Some((Digest::of(&raw), chart)))
}

/// One chart version in two bundles with different content (issue 20.15),
/// by the bundles' own `bundle.json`.
fn refuse_duplicate_charts(
    members: &[TarEntry],
    file: &PackageFile,
    what: &str,
) -> anyhow::Result<()> {
    let mut ids = Vec::new();
    for m in members.iter().filter(|m| m.name.ends_with(".bundle.tar")) {
        if let Some((d, Some(chart))) = bundle_identity(file, m, what)? {
            ids.push((m.name.clone(), chart, d));
        }
    }
    super::toc::refuse_duplicate_charts(
        what,
        ids.iter()
            .map(|(n, c, d)| (n.as_str(), c.as_str(), Some(d))),
    )
}

/// Every byte of every member against its sha256.
fn hash_members(
    toc: &PackageToc,
    members: &[TarEntry],
    file: &PackageFile,
    what: &str,
) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    for m in members {
        let t = toc.member(&m.name).expect("checked");
        let got = hash_range(file, m.extent.offset, m.extent.size, &mut buf)
            .with_context(|| format!("{what}: reading {}", m.name))?;
        if got != t.sha256 {
            bail!(
                "{what}: {} was changed after packing (sha256 {got}, {PACKAGE_JSON} says {}){}: refused ({COPY_AGAIN})",
                m.name,
                t.sha256,
                explain_member(file, what, m)
            );
        }
    }
    Ok(())
}

/// What inside a changed bundle member differs (a damaged blob, say), to
/// name it in the refusal; empty when nothing more can be said.
fn explain_member(file: &PackageFile, what: &str, m: &TarEntry) -> String {
    if !m.name.ends_with(".bundle.tar") {
        return String::new();
    }
    let Ok(f) = file.try_clone() else {
        return String::new();
    };
    let path = PathBuf::from(what.trim_start_matches("offline package "));
    let quiet = crate::progress::Progress::new(crate::progress::Mode::Quiet);
    match crate::bundle::reader::BundleReader::open_in(&path, f, &m.name, m.extent)
        .and_then(|r| crate::bundle::verify::verify(&r, &quiet))
    {
        Err(e) => format!(" ({e:#})"),
        Ok(_) => String::new(),
    }
}

/// Every member of the package at `path` (its bytes in `file`) against
/// `package.json`: what verify checks after the bundles themselves, so
/// that a damaged blob is named by its bundle first.
pub fn check_member_digests(path: &Path, file: PackageFile) -> anyhow::Result<()> {
    let what = format!("offline package {}", path.display());
    let entries = index_tar(&file, 0, file.len()?, &what)?;
    if entries.first().map(|e| e.name.as_str()) != Some(PACKAGE_JSON) {
        return Ok(());
    }
    let toc = PackageToc::parse(
        &read_small(&file, entries[0].extent, PACKAGE_JSON, &what)?,
        &what,
    )?;
    let members: Vec<TarEntry> = entries
        .into_iter()
        .skip(1)
        .filter(|e| e.kind == TarKind::File && e.name != SIGNATURE)
        .collect();
    hash_members(&toc, &members, &file, &what)
}

/// Open a split package (`base` = `DIR/NAME.tar`): the volumes, the
/// package in them, and, with `check.contents`, every volume's digest.
pub fn open_volumes(base: &Path, check: &PackageCheck) -> anyhow::Result<OpenedPackage> {
    let mut set = VolumeSet::open(base)?;
    let shown = set.first_volume();
    if let Some((key, key_path)) = &check.key {
        // The signature before anything else is read (headers, package.json
        // and its signature; a missing volume's bytes come from parity).
        let what = format!("split package {}", shown.display());
        let entries = index_tar(&set, 0, set.stream_len(), &what)?;
        verify_signature(&set, &entries, key, key_path, &what)?;
    }
    if check.contents || check.volumes {
        let progress = crate::progress::Progress::new(crate::progress::Mode::Quiet);
        set.check_digests(&progress)?;
    }
    for p in set.problems() {
        tracing::warn!(
            "{p}: read from parity; run `bundler repair {}` to write it back",
            shown.display()
        );
    }
    let set = Arc::new(set);
    let file = PackageFile::Volumes(set.clone());
    let entries = index_tar(
        &file,
        0,
        set.stream_len(),
        &format!("split package {}", shown.display()),
    )?;
    let opened = check_package(&shown, file, entries, check)?;
    if let Some(toc) = &opened.toc {
        let t = &set.table;
        match toc.volumes {
            Some(v)
                if v.volume_size == t.volume_size
                    && v.parity_volumes as usize == t.parity.len() => {}
            _ => bail!(
                "split package {}: the volume table ({} data and {} parity volumes of {} bytes) does not match {PACKAGE_JSON}: \
                 the volumes are from different packs; copy them again",
                shown.display(),
                t.data.len(),
                t.parity.len(),
                t.volume_size
            ),
        }
    }
    Ok(opened)
}

/// One line about a package for `inspect`: what `package.json` says, and
/// whether it is signed and split.
pub fn describe(path: &Path, file: PackageFile) -> String {
    let what = format!("offline package {}", path.display());
    let head = (|| -> anyhow::Result<Option<(PackageToc, bool)>> {
        let entries = index_tar(&file, 0, file.len()?, &what)?;
        if entries.first().map(|e| e.name.as_str()) != Some(PACKAGE_JSON) {
            return Ok(None);
        }
        let toc = PackageToc::parse(
            &read_small(&file, entries[0].extent, PACKAGE_JSON, &what)?,
            &what,
        )?;
        Ok(Some((
            toc,
            entries.get(1).is_some_and(|e| e.name == SIGNATURE),
        )))
    })();
    let split = match &file {
        PackageFile::Volumes(v) => format!(
            ", split into {} volumes of {} + {} parity",
            v.table.data.len(),
            crate::progress::human_bytes(v.table.volume_size),
            v.table.parity.len()
        ),
        PackageFile::Plain(_) => String::new(),
    };
    match head {
        Ok(Some((toc, signed))) => format!(
            "package:  {} ({} {} {}, {} members in package.json, {}{split})",
            path.display(),
            toc.product,
            toc.version,
            toc.arch,
            toc.members.len(),
            if signed { "signed" } else { "not signed" }
        ),
        Ok(None) => format!(
            "package:  {} (no package.json: written by an older bundler{split})",
            path.display()
        ),
        Err(e) => format!("package:  {} ({e:#})", path.display()),
    }
}
