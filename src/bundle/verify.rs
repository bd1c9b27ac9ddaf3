//! `bundler verify`: every blob's sha256 (hashed in parallel with rayon,
//! streamed in 1 MiB positioned reads, never a whole blob in memory), every
//! checksum of `bundle.json`, and every blob size against its descriptors.
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::bail;
use rayon::prelude::*;
use serde::Serialize;

use super::format::IMAGES_TAR;
use super::reader::{hash_range_into, BundleReader, Extent};
use crate::oci::Digest;
use crate::progress::{human_bytes, Progress};

/// What a successful verification covered.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// The bundle file, or "ENTRY in PACKAGE".
    pub bundle: String,
    pub blobs: usize,
    pub bytes: u64,
    pub files: usize,
    /// Blobs of a delta bundle that the site's registry holds (listed in
    /// `bundle.json`, not carried; sync checks them in the target).
    pub external: usize,
    pub seconds: f64,
}

impl VerifyReport {
    pub fn mib_per_sec(&self) -> f64 {
        self.bytes as f64 / (1024.0 * 1024.0) / self.seconds.max(1e-6)
    }
}

thread_local! {
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn hash_extent(
    reader: &BundleReader,
    ext: Extent,
    progress: &Progress,
    label: &str,
) -> std::io::Result<Digest> {
    use sha2::Digest as _;
    let mut t = progress.transfer(label, ext.size);
    BUF.with(|b| {
        let mut buf = b.borrow_mut();
        let mut h = sha2::Sha256::new();
        hash_range_into(reader.file(), ext.offset, ext.size, &mut buf, |chunk| {
            h.update(chunk);
            t.inc(chunk.len() as u64);
        })?;
        Ok(Digest::from_sha256(h))
    })
}

/// Blob digest -> `"<role> of <image>"` for every image of the bundle
/// that refers to it (manifests, configs, layers).
fn blob_owners(reader: &BundleReader) -> BTreeMap<Digest, Vec<String>> {
    let mut owners: BTreeMap<Digest, Vec<String>> = BTreeMap::new();
    let mut add = |d: &Digest, what: String| {
        let v = owners.entry(d.clone()).or_default();
        if !v.contains(&what) {
            v.push(what);
        }
    };
    for img in &reader.images {
        let r = img.reference.to_string();
        add(&img.root.digest, format!("manifest of {r}"));
        for c in &img.children {
            add(&c.digest, format!("manifest of {r}"));
        }
        for b in &img.blobs {
            let role = if b.media_type.contains("config") {
                "config"
            } else {
                "layer"
            };
            add(&b.digest, format!("{role} of {r}"));
        }
    }
    owners
}

/// Verify one opened bundle. All problems are collected; the error lists
/// every one, each naming the bundle and the blob digest or file.
pub fn verify(reader: &BundleReader, progress: &Progress) -> anyhow::Result<VerifyReport> {
    let started = Instant::now();
    let bundle = reader.path.display().to_string();
    let mut problems: Vec<String> = Vec::new();

    // Sizes against descriptors (cheap, from the index).
    for img in &reader.images {
        for b in &img.blobs {
            match reader.blob(&b.digest) {
                None => problems.push(format!(
                    "bundle {bundle}: blob {} of {} is missing",
                    b.digest, img.reference
                )),
                Some(e) if e.size != b.size => problems.push(format!(
                    "bundle {bundle}: blob {} of {} is {} bytes, its descriptor says {}",
                    b.digest, img.reference, e.size, b.size
                )),
                _ => {}
            }
        }
    }

    // Which images each blob belongs to, for the messages.
    let owners = blob_owners(reader);
    let of = |d: &Digest| -> String {
        match owners.get(d) {
            Some(refs) => format!(" ({})", refs.join(", ")),
            None => " (no image of this bundle refers to it)".to_string(),
        }
    };

    // Blobs: every content-addressed file, hashed in parallel.
    let blobs: Vec<(&Digest, Extent)> = reader.blob_index.iter().map(|(d, e)| (d, *e)).collect();
    let total: u64 = blobs.iter().map(|(_, e)| e.size).sum();
    progress.add_total(total);
    let blob_problems: Vec<String> = blobs
        .par_iter()
        .filter_map(|(d, ext)| {
            let label = format!("verify {}", &d.hex()[..12]);
            match hash_extent(reader, *ext, progress, &label) {
                Ok(got) if &got == *d => None,
                Ok(got) => Some(format!(
                    "bundle {bundle}: blob {d} is corrupted: its content has digest {got}{}",
                    of(d)
                )),
                Err(e) => Some(format!(
                    "bundle {bundle}: blob {d}{}: read error: {e}",
                    of(d)
                )),
            }
        })
        .collect();
    problems.extend(blob_problems);

    // Files listed in bundle.json.
    let mut files = 0usize;
    if let Some(meta) = &reader.meta {
        let mut listed: BTreeMap<&str, ()> = BTreeMap::new();
        for (name, want) in &meta.files {
            files += 1;
            listed.insert(name.as_str(), ());
            let ext = match name.strip_prefix(&format!("{IMAGES_TAR}/")) {
                Some(inner) => reader.images_entries.get(inner),
                None => reader.entries.get(name.as_str()),
            };
            let Some(ext) = ext else {
                problems.push(format!(
                    "bundle {bundle}: {name} is listed in bundle.json but missing"
                ));
                continue;
            };
            match hash_extent(
                reader,
                *ext,
                &Progress::new(crate::progress::Mode::Quiet),
                name,
            ) {
                Ok(got) if &got == want => {}
                Ok(got) => problems.push(format!(
                    "bundle {bundle}: {name} is corrupted: sha256 {got}, bundle.json says {want}"
                )),
                Err(e) => problems.push(format!("bundle {bundle}: {name}: read error: {e}")),
            }
        }
        // Files bundle.json does not cover (added after packing?).
        for name in reader.entries.keys() {
            let covered = name == super::format::BUNDLE_JSON
                || name == IMAGES_TAR
                || listed.contains_key(name.as_str());
            if !covered {
                problems.push(format!(
                    "bundle {bundle}: {name} is not listed in bundle.json (added after packing?)"
                ));
            }
        }
    }

    // The chart and the hints must load: sync relocates and publishes
    // them, and must be able to refuse them before anything is pushed.
    match reader.chart_files() {
        Ok(files) if files.is_empty() => {}
        Ok(files) => {
            // values.yaml too: sync reads it to relocate images.
            let values = files.iter().find(|(p, _)| p == "values.yaml");
            if let Some(Err(e)) =
                values.map(|(_, text)| crate::yaml_bounds::from_slice::<serde_yaml_ng::Value>(text))
            {
                problems.push(format!(
                    "bundle {bundle}: {}values.yaml does not parse: {e:#}",
                    super::format::CHART_DIR
                ));
            }
            if let Err(e) = crate::chart::Chart::from_files(files) {
                problems.push(format!(
                    "bundle {bundle}: the chart in {} does not load: {e:#}",
                    super::format::CHART_DIR
                ));
            }
        }
        Err(e) => problems.push(format!("bundle {bundle}: {e:#}")),
    }
    match reader.hints() {
        Ok(Some(text)) => {
            if let Err(e) = crate::chart::hints::Hints::parse(&text) {
                problems.push(format!(
                    "bundle {bundle}: {} does not parse: {e:#}",
                    super::format::HINTS_FILE
                ));
            }
        }
        Ok(None) => {}
        Err(e) => problems.push(format!("bundle {bundle}: {e:#}")),
    }
    // Signatures and what else refers to the images: every subject,
    // manifest and blob that referrers.json names is in the bundle.
    if let Err(e) = crate::referrers::carried::BundleReferrers::load(reader) {
        problems.push(format!("{e:#}"));
    }

    if !problems.is_empty() {
        bail!(
            "bundle {bundle} failed verification ({} problem{}):\n  {}",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            problems.join("\n  ")
        );
    }
    Ok(VerifyReport {
        bundle: reader.label.clone(),
        blobs: blobs.len(),
        bytes: total,
        files,
        external: super::delta::delta_counts(reader).map_or(0, |(n, _, _)| n),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Open and verify one bundle.
pub fn verify_path(path: &std::path::Path, progress: &Progress) -> anyhow::Result<VerifyReport> {
    let reader = BundleReader::open(path)?;
    verify(&reader, progress)
}

/// The bundles an argument names (a bundle, a package, a directory); a
/// package is checked against its `package.json` first (every member
/// hashed) and its signature when `check` has a key.
fn bundles_of(
    path: &std::path::Path,
    check: &crate::package::read::PackageCheck,
) -> anyhow::Result<Vec<super::location::BundleLocation>> {
    let found = super::location::list_bundles_checked(path, check)?;
    if found.is_empty() {
        bail!(
            "{}: no *.bundle.tar and no offline package in this directory",
            path.display()
        );
    }
    if let (Some((_, key)), Some(super::location::BundleLocation::File(b))) =
        (&check.key, found.first())
    {
        bail!(
            "{}: a bundle, not an offline package: only packages are signed (--key {})",
            b.display(),
            key.display()
        );
    }
    Ok(found)
}

/// Volumes of split packages that are missing or damaged (read through
/// parity): verify names them and fails, since the media is not whole.
fn volume_problems(locations: &[super::location::BundleLocation]) -> Vec<String> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for l in locations {
        if let super::location::BundleLocation::InPackage {
            volumes: Some(v), ..
        } = l
        {
            if seen
                .iter()
                .any(|s: &crate::package::source::SharedVolumes| s == v)
            {
                continue;
            }
            seen.push(v.clone());
            let problems = v.0.problems();
            if !problems.is_empty() {
                out.push(format!(
                    "{}: {}; the content is intact through parity: run `bundler repair {}` to write {} back",
                    v.0.first_volume().display(),
                    problems.join("; "),
                    v.0.first_volume().display(),
                    if problems.len() == 1 { "it" } else { "them" }
                ));
            }
        }
    }
    out
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct JsonResult {
    bundle: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    report: Option<VerifyReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct VerifyArgs {
    /// Bundles (*.bundle.tar), offline packages (<name>_<version>_<arch>.tar) or directories of bundles.
    #[arg(required = true, value_name = "BUNDLE|PACKAGE|DIR")]
    pub bundles: Vec<std::path::PathBuf>,
    /// Print one JSON result per bundle (bundle, ok, report or error) on stdout instead of text.
    #[arg(long)]
    pub json: bool,
    /// Require offline packages signed by this key (PEM public key as
    /// openssl writes it, or cosign.pub); checked before anything else.
    #[arg(long, value_name = "FILE")]
    pub key: Option<std::path::PathBuf>,
}

pub fn run(args: &VerifyArgs) -> anyhow::Result<()> {
    let progress = Progress::auto(args.json);
    let mut results = Vec::new();
    let mut failed = 0usize;
    // Each argument expands to its bundles; an argument that names no
    // bundle at all (missing, not a tar, an empty directory) is one failure.
    let mut total = 0usize;
    // Members are hashed after the bundles (below), so that a damaged blob
    // is named by its bundle and the other bundles still report.
    let check = crate::package::read::PackageCheck {
        contents: false,
        volumes: true,
        key: match &args.key {
            Some(k) => Some((
                crate::package::sign::load_verify_key(k, "--key")
                    .map_err(|e| crate::error::input_error(format!("{e:#}")))?,
                k.clone(),
            )),
            None => None,
        },
    };
    let mut damaged_volumes = Vec::new();
    let mut packages: Vec<(
        std::path::PathBuf,
        Option<crate::package::source::SharedVolumes>,
    )> = Vec::new();
    let checks: Vec<_> = args
        .bundles
        .iter()
        .flat_map(|path| match bundles_of(path, &check) {
            Ok(locations) => {
                damaged_volumes.extend(volume_problems(&locations));
                for l in &locations {
                    if let super::location::BundleLocation::InPackage {
                        package, volumes, ..
                    } = l
                    {
                        let p = (package.clone(), volumes.clone());
                        if !packages.contains(&p) {
                            packages.push(p);
                        }
                    }
                }
                if let Some((key, _)) = &check.key {
                    if !args.json {
                        println!(
                            "OK signature of {} ({} key {})",
                            path.display(),
                            key.kind(),
                            key.fingerprint()
                        );
                    }
                }
                locations
                    .into_iter()
                    .map(|loc| (loc.label(), Ok(loc)))
                    .collect::<Vec<_>>()
            }
            Err(e) => vec![(path.display().to_string(), Err(e))],
        })
        .collect();
    for (label, loc) in checks {
        total += 1;
        let outcome = loc.and_then(|loc| verify(&loc.open()?, &progress));
        match outcome {
            Ok(r) => {
                if !args.json {
                    progress.println(String::new());
                    println!(
                        "OK {label} ({} blobs, {}, {:.1} MiB/s){}",
                        r.blobs,
                        human_bytes(r.bytes),
                        r.mib_per_sec(),
                        if r.external > 0 {
                            format!(
                                "; delta: {} external blobs not carried, checked in the target by sync",
                                r.external
                            )
                        } else {
                            String::new()
                        }
                    );
                }
                results.push(JsonResult {
                    bundle: label,
                    ok: true,
                    report: Some(r),
                    error: None,
                });
            }
            Err(e) => {
                failed += 1;
                let msg = format!("{e:#}");
                if !args.json {
                    eprintln!("FAILED {label}: {msg}");
                }
                results.push(JsonResult {
                    bundle: label,
                    ok: false,
                    report: None,
                    error: Some(msg),
                });
            }
        }
    }
    for (package, volumes) in &packages {
        let file = match volumes {
            Some(v) => Ok(crate::package::source::PackageFile::Volumes(v.0.clone())),
            None => std::fs::File::open(package).map(Into::into),
        };
        let outcome = file
            .map_err(anyhow::Error::from)
            .and_then(|f| crate::package::read::check_member_digests(package, f));
        if let Err(e) = outcome {
            failed += 1;
            total += 1;
            let msg = format!("{e:#}");
            if !args.json {
                eprintln!("FAILED {}: {msg}", package.display());
            }
            results.push(JsonResult {
                bundle: package.display().to_string(),
                ok: false,
                report: None,
                error: Some(msg),
            });
        }
    }
    progress.finish();
    for d in &damaged_volumes {
        failed += 1;
        total += 1;
        if !args.json {
            eprintln!("DAMAGED {d}");
        }
        results.push(JsonResult {
            bundle: d.split(": ").next().unwrap_or("").to_string(),
            ok: false,
            report: None,
            error: Some(d.clone()),
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    if failed > 0 {
        bail!(
            "{failed} of {total} bundle{} failed verification",
            if total == 1 { "" } else { "s" }
        );
    }
    Ok(())
}
