//! `bundler diff OLD NEW`: images added, removed and changed between two
//! packages, bundles or inventories, and the bytes a delta of NEW packed
//! against OLD would carry (every manifest and config of NEW, and each
//! layer whose digest OLD does not hold). Read from indexes and manifests
//! only; no blob data is read.
use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use serde::Serialize;

use crate::bundle::delta::{HeldImage, Holdings};
use crate::oci::{Digest, Reference};
use crate::progress::human_bytes;

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// What the site has: an inventory, an offline package, a bundle or a directory of bundles.
    pub old: PathBuf,
    /// What is to be carried: the same kinds.
    pub new: PathBuf,
    /// Print a JSON report on stdout.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DiffReport {
    pub added: Vec<ImageLine>,
    pub removed: Vec<ImageLine>,
    pub changed: Vec<ChangedLine>,
    pub unchanged: usize,
    /// Bytes of NEW's distinct blobs and manifests (a full package).
    pub full_bytes: u64,
    /// What a delta against OLD would carry.
    pub delta_bytes: u64,
    /// Layers a delta would carry / leave out.
    pub layers_carried: usize,
    pub layers_external: usize,
    /// Charts added, removed, changed in version or hints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub charts: Option<crate::diff_charts::ChartDiff>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageLine {
    pub reference: String,
    pub digest: Digest,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangedLine {
    pub old: String,
    pub new: String,
    pub old_digest: Digest,
    pub new_digest: Digest,
    /// Bytes of this image's layers OLD does not hold.
    pub new_layer_bytes: u64,
}

pub fn run(args: &DiffArgs) -> anyhow::Result<()> {
    let old = Holdings::load(std::slice::from_ref(&args.old))?;
    let new = Holdings::load(std::slice::from_ref(&args.new))?;
    let mut r = diff(&old, &new);
    r.charts = Some(crate::diff_charts::compare(&args.old, &args.new)?);
    let referrers = crate::referrers::describe::diff_paths(&args.old, &args.new)?;
    if args.json {
        let mut v = serde_json::to_value(&r)?;
        if let (Some(obj), Some(rd)) = (v.as_object_mut(), &referrers) {
            obj.extend(
                serde_json::to_value(rd)?
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            );
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if let Some(rd) = &referrers {
        rd.print();
    }
    if let Some(c) = &r.charts {
        for l in c.lines() {
            println!("{l}");
        }
    }
    for a in &r.added {
        println!("+ {}  {}", a.reference, a.digest);
    }
    for a in &r.removed {
        println!("- {}  {}", a.reference, a.digest);
    }
    for c in &r.changed {
        let name = if c.old == c.new {
            c.new.clone()
        } else {
            format!("{} -> {}", c.old, c.new)
        };
        println!(
            "~ {name}  {} -> {}  ({} of new layers)",
            c.old_digest,
            c.new_digest,
            human_bytes(c.new_layer_bytes)
        );
    }
    println!(
        "{} added, {} removed, {} changed, {} unchanged; a delta would carry {} instead of {} (layers: {} carried, {} external)",
        r.added.len(),
        r.removed.len(),
        r.changed.len(),
        r.unchanged,
        human_bytes(r.delta_bytes),
        human_bytes(r.full_bytes),
        r.layers_carried,
        r.layers_external
    );
    Ok(())
}

/// `registry/repository` of a reference string (the string itself when it
/// does not parse).
fn name_of(reference: &str) -> String {
    Reference::parse(reference)
        .map(|r| r.name())
        .unwrap_or_else(|_| reference.to_string())
}

pub fn diff(old: &Holdings, new: &Holdings) -> DiffReport {
    let old_blobs = old.blob_sizes();
    let mut r = DiffReport::default();

    // Match by full reference, then what is left by repository (a new tag
    // of the same image is a change, not an add and a remove).
    let mut old_left: BTreeMap<&str, &HeldImage> = old
        .images
        .iter()
        .map(|i| (i.reference.as_str(), i))
        .collect();
    let mut pairs: Vec<(Option<&HeldImage>, &HeldImage)> = Vec::new();
    let mut unmatched = Vec::new();
    for n in dedup(&new.images) {
        match old_left.remove(n.reference.as_str()) {
            Some(o) => pairs.push((Some(o), n)),
            None => unmatched.push(n),
        }
    }
    for n in unmatched {
        let name = name_of(&n.reference);
        let key = old_left
            .keys()
            .find(|k| name_of(k) == name)
            .map(|k| k.to_string());
        pairs.push((key.and_then(|k| old_left.remove(k.as_str())), n));
    }
    for o in old_left.values() {
        r.removed.push(ImageLine {
            reference: o.reference.clone(),
            digest: o.digest.clone(),
        });
    }

    let mut counted: HashSet<&Digest> = HashSet::new();
    for (o, n) in pairs {
        let mut new_layer_bytes = 0;
        r.full_bytes += n.manifest_bytes;
        r.delta_bytes += n.manifest_bytes;
        for b in &n.blobs {
            if !counted.insert(&b.digest) {
                continue;
            }
            r.full_bytes += b.size;
            let site_has = old_blobs.get(&b.digest) == Some(&b.size);
            if b.config {
                r.delta_bytes += b.size;
            } else if site_has {
                r.layers_external += 1;
            } else {
                r.layers_carried += 1;
                r.delta_bytes += b.size;
                new_layer_bytes += b.size;
            }
        }
        match o {
            None => r.added.push(ImageLine {
                reference: n.reference.clone(),
                digest: n.digest.clone(),
            }),
            Some(o) if o.digest == n.digest && o.reference == n.reference => r.unchanged += 1,
            Some(o) => r.changed.push(ChangedLine {
                old: o.reference.clone(),
                new: n.reference.clone(),
                old_digest: o.digest.clone(),
                new_digest: n.digest.clone(),
                new_layer_bytes,
            }),
        }
    }
    r
}

/// The same image in two bundles of a package (a chart's and the
/// image-only bundle) is one image.
fn dedup(images: &[HeldImage]) -> Vec<&HeldImage> {
    let mut seen = HashSet::new();
    images
        .iter()
        .filter(|i| seen.insert((i.reference.clone(), i.digest.clone())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::delta::HeldBlob;

    fn image(reference: &str, digest: u8, blobs: &[(u8, u64, bool)]) -> HeldImage {
        HeldImage {
            reference: reference.into(),
            site_repository: None,
            digest: Digest::of(&[digest]),
            manifest_bytes: 500,
            blobs: blobs
                .iter()
                .map(|(d, size, config)| HeldBlob {
                    digest: Digest::of(&[*d]),
                    size: *size,
                    media_type: String::new(),
                    config: *config,
                })
                .collect(),
        }
    }

    fn holdings(images: Vec<HeldImage>) -> Holdings {
        Holdings {
            records: Vec::new(),
            images,
        }
    }

    #[test]
    fn a_new_tag_of_the_same_repository_is_a_change_and_only_new_layers_count() {
        let old = holdings(vec![
            image("r.example/a:1", 1, &[(10, 5, true), (11, 1000, false)]),
            image("r.example/b:1", 2, &[(20, 5, true), (21, 2000, false)]),
            image("r.example/gone:1", 3, &[(30, 5, true)]),
        ]);
        let new = holdings(vec![
            image("r.example/a:1", 1, &[(10, 5, true), (11, 1000, false)]),
            image(
                "r.example/b:2",
                4,
                &[(22, 6, true), (21, 2000, false), (23, 3000, false)],
            ),
            image("r.example/new:1", 5, &[(40, 7, true), (11, 1000, false)]),
        ]);
        let r = diff(&old, &new);
        assert_eq!(r.unchanged, 1);
        assert_eq!(r.changed.len(), 1);
        assert_eq!(
            (r.changed[0].old.as_str(), r.changed[0].new.as_str()),
            ("r.example/b:1", "r.example/b:2")
        );
        assert_eq!(r.changed[0].new_layer_bytes, 3000);
        assert_eq!(r.added.len(), 1);
        assert_eq!(r.added[0].reference, "r.example/new:1");
        assert_eq!(r.removed.len(), 1);
        assert_eq!(r.removed[0].reference, "r.example/gone:1");
        // Manifests (3 x 500) and configs (5 + 6 + 7) always, plus the one new layer.
        assert_eq!(r.delta_bytes, 1500 + 18 + 3000);
        assert_eq!((r.layers_carried, r.layers_external), (1, 2));
        assert_eq!(r.full_bytes, 1500 + 18 + 1000 + 2000 + 3000);
    }
}
