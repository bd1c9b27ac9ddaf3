//! `bundler inspect`: what a bundle holds, from its index only (tar headers,
//! `bundle.json`, `index.json`/`manifest.json` and the small manifests; no
//! blob data is read).
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::format::{ChartInfo, ProductInfo};
use super::reader::BundleReader;
use crate::oci::media::Platform;
use crate::oci::Digest;
use crate::progress::human_bytes;

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectImage {
    pub reference: String,
    pub digest: Digest,
    pub media_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    /// Bytes of the image's config and layer blobs.
    pub size: u64,
    pub blobs: usize,
    /// Delta bundles: bytes of the image's layers the site holds (not carried).
    #[serde(skip_serializing_if = "is_zero")]
    pub external_bytes: u64,
    /// Platform manifests kept (index roots).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Digest>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_index: Option<Digest>,
    pub synthesized: bool,
    /// Signatures, attestations, SBOMs carried for the image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub referrers: Option<crate::referrers::describe::ImageReferrers>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectReport {
    /// The bundle file, or its entry name inside `package`.
    pub bundle: String,
    /// The offline package the bundle sits in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub package: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product: Option<ProductInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chart: Option<ChartInfo>,
    pub chart_files: usize,
    pub hints: usize,
    pub images: Vec<InspectImage>,
    /// Images no hint names: carried, but the relocated chart does not
    /// point at them (see [`super::unhinted`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub not_named_by_hints: Vec<String>,
    /// Size of the bundle file.
    pub total_bytes: u64,
    /// Bytes of distinct config/layer blobs (each stored once).
    pub unique_blob_bytes: u64,
    /// Sum of every image's blob bytes (what separate archives would hold).
    pub image_blob_bytes: u64,
    /// `image_blob_bytes - unique_blob_bytes`: saved by storing shared blobs once.
    pub shared_savings: u64,
    /// A delta bundle: what it leaves out (the site's registry has it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<InspectDelta>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InspectDelta {
    /// The one-line summary ("delta: 37 of 40 blobs external (9.2 GiB not carried)").
    pub summary: String,
    pub external_blobs: usize,
    pub blobs: usize,
    pub external_bytes: u64,
    pub packed_against: Vec<super::format::AgainstRecord>,
    pub external: Vec<super::format::ExternalBlob>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Count the templates of a hints file (a YAML list of strings).
fn count_hints(text: &str) -> usize {
    match crate::yaml_bounds::from_str::<Option<Vec<serde_yaml_ng::Value>>>(text) {
        Ok(v) => v.map_or(0, |v| v.len()),
        Err(_) => text
            .lines()
            .filter(|l| l.trim_start().starts_with("- "))
            .count(),
    }
}

pub fn inspect(reader: &BundleReader) -> anyhow::Result<InspectReport> {
    let total_bytes = reader.extent.size;
    let mut chart = reader.meta.as_ref().and_then(|m| m.chart.clone());
    if chart.is_none() {
        if let Some((name, version)) = reader.chart_name_version()? {
            chart = Some(ChartInfo {
                name,
                version,
                ..Default::default()
            });
        }
    }
    let hints = reader.hints()?.map_or(0, |h| count_hints(&h));
    let mut unique: BTreeMap<&Digest, u64> = BTreeMap::new();
    let mut images = Vec::new();
    let mut image_blob_bytes = 0;
    for (i, img) in reader.images.iter().enumerate() {
        let size: u64 = img.blobs.iter().map(|b| b.size).sum();
        image_blob_bytes += size;
        for b in &img.blobs {
            unique.insert(&b.digest, b.size);
        }
        let rec = reader.record_for(img);
        images.push(InspectImage {
            reference: img.reference.to_string(),
            digest: img.root.digest.clone(),
            media_type: img.root.media_type.clone(),
            platform: reader.platforms.get(i).cloned().flatten(),
            size,
            blobs: img.blobs.len(),
            external_bytes: super::delta::manifest_blobs(img)
                .iter()
                .filter(|(d, _)| reader.blob(&d.digest).is_none())
                .map(|(d, _)| d.size)
                .sum(),
            children: img.children.iter().map(|c| c.digest.clone()).collect(),
            source_index: rec.and_then(|r| r.source_index.clone()),
            synthesized: img.synthesized,
            referrers: None,
        });
    }
    let unique_blob_bytes: u64 = unique.values().sum();
    Ok(InspectReport {
        bundle: reader
            .package_entry
            .clone()
            .unwrap_or_else(|| reader.path.display().to_string()),
        package: reader.package_entry.as_ref().map(|_| reader.path.clone()),
        format_version: reader.meta.as_ref().map(|m| m.format_version.clone()),
        tool: reader.meta.as_ref().map(|m| m.tool.clone()),
        product: reader.meta.as_ref().and_then(|m| m.product.clone()),
        chart,
        chart_files: reader
            .entries
            .keys()
            .filter(|k| k.starts_with(super::format::CHART_DIR))
            .count(),
        hints,
        images,
        not_named_by_hints: super::unhinted::images_no_hint_names(reader),
        total_bytes,
        unique_blob_bytes,
        image_blob_bytes,
        shared_savings: image_blob_bytes.saturating_sub(unique_blob_bytes),
        delta: inspect_delta(reader),
    })
}

fn inspect_delta(reader: &BundleReader) -> Option<InspectDelta> {
    let delta = reader.meta.as_ref()?.delta.as_ref()?;
    let (external_blobs, blobs, external_bytes) = super::delta::delta_counts(reader)?;
    Some(InspectDelta {
        summary: super::delta::describe_delta(reader)?,
        external_blobs,
        blobs,
        external_bytes,
        packed_against: delta.packed_against.clone(),
        external: delta.external.clone(),
    })
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    /// A bundle (*.bundle.tar), an offline package (<name>_<version>_<arch>.tar) or a directory of bundles.
    #[arg(value_name = "BUNDLE|PACKAGE|DIR")]
    pub bundle: std::path::PathBuf,
    /// Print the report as JSON on stdout (an object for one bundle, an array for a package or directory).
    #[arg(long)]
    pub json: bool,
    /// A cosign public key (cosign.pub): say which images carry a valid
    /// signature for it (and the key's fingerprint).
    #[arg(long, value_name = "COSIGN_PUB")]
    pub key: Option<std::path::PathBuf>,
}

pub fn run(args: &InspectArgs) -> anyhow::Result<()> {
    let locations = super::location::list_bundles(&args.bundle)?;
    if locations.is_empty() {
        anyhow::bail!(
            "{}: no *.bundle.tar and no offline package in this directory",
            args.bundle.display()
        );
    }
    let key = args
        .key
        .as_deref()
        .map(crate::referrers::cosign::PublicKey::load)
        .transpose()?;
    let reports = locations
        .iter()
        .map(|loc| {
            let reader = loc.open()?;
            let mut report = inspect(&reader)?;
            crate::referrers::describe::annotate(&mut report, &reader, key.as_ref())?;
            Ok(report)
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    // One bundle named directly: one object (as before packages were
    // accepted); a package or a directory: an array, even of one.
    let single = matches!(locations.as_slice(), [super::location::BundleLocation::File(p)] if p == &args.bundle);
    if args.json {
        let text = if single {
            serde_json::to_string_pretty(&reports[0])?
        } else {
            serde_json::to_string_pretty(&reports)?
        };
        println!("{text}");
        return Ok(());
    }
    let mut described = Vec::new();
    for (i, (r, loc)) in reports.iter().zip(&locations).enumerate() {
        if let super::location::BundleLocation::InPackage {
            package, volumes, ..
        } = loc
        {
            if !described.contains(package) {
                described.push(package.clone());
                let file = match volumes {
                    Some(v) => crate::package::source::PackageFile::Volumes(v.0.clone()),
                    None => std::fs::File::open(package)?.into(),
                };
                println!("{}\n", crate::package::read::describe(package, file));
            }
        }
        if i > 0 {
            println!();
        }
        print_report(r);
    }
    Ok(())
}

fn print_report(r: &InspectReport) {
    match &r.package {
        Some(p) => println!(
            "bundle:   {} (in offline package {})",
            r.bundle,
            p.display()
        ),
        None => println!("bundle:   {}", r.bundle),
    }
    if let (Some(v), Some(t)) = (&r.format_version, &r.tool) {
        println!("format:   {v} (written by {t})");
    } else {
        println!("format:   no bundle.json (written by another tool)");
    }
    if let Some(p) = &r.product {
        println!("product:  {} {}", p.name, p.version);
    }
    match &r.chart {
        Some(c) => println!(
            "chart:    {} {} ({} files)",
            c.name, c.version, r.chart_files
        ),
        None if r.format_version.as_deref() == Some(crate::manifests::MANIFESTS_FORMAT_VERSION) => {
            println!("chart:    none (manifests bundle: original-manifests/, described by manifests.json)")
        }
        None => println!("chart:    none (image-only bundle)"),
    }
    println!("hints:    {}", r.hints);
    println!("images:   {}", r.images.len());
    for img in &r.images {
        let platform = img
            .platform
            .as_ref()
            .map(|p| p.to_string())
            .unwrap_or_else(|| {
                if img.children.is_empty() {
                    "-".into()
                } else {
                    format!("{} platforms", img.children.len())
                }
            });
        let external = if img.external_bytes > 0 {
            format!(" (+ {} external)", human_bytes(img.external_bytes))
        } else {
            String::new()
        };
        println!(
            "  {}\n    digest {}  {}  {}{external}{}",
            img.reference,
            img.digest,
            platform,
            human_bytes(img.size),
            if img.synthesized {
                "  (manifest synthesized from docker archive)"
            } else {
                ""
            }
        );
        if let Some(si) = &img.source_index {
            println!("    from index {si}");
        }
        if let Some(refs) = &img.referrers {
            println!("    {}", refs.line());
        }
    }
    if !r.not_named_by_hints.is_empty() {
        println!(
            "not named by any hint ({}; carried, but the relocated chart does not point at them):",
            r.not_named_by_hints.len()
        );
        for i in &r.not_named_by_hints {
            println!("  {i}");
        }
    }
    if let Some(d) = &r.delta {
        println!("{}", d.summary);
        println!(
            "          packed against {}",
            super::delta::describe_records(&d.packed_against)
        );
        println!("          sync checks the target has every external blob first; docker load / ctr import cannot read this bundle's images.tar");
    }
    println!(
        "size:     {} file, {} unique blobs, {} summed over images (shared blobs save {})",
        human_bytes(r.total_bytes),
        human_bytes(r.unique_blob_bytes),
        human_bytes(r.image_blob_bytes),
        human_bytes(r.shared_savings)
    );
}
