//! `package.json`, the offline package's table of contents: the first entry
//! of every package bundler writes. It names the product and every member
//! with its size and sha256 (and, for bundles, the digest of their
//! `bundle.json` and the chart they carry), so a reader can tell a whole
//! package from a part of one (a copy that stopped at an entry boundary
//! still looks like a valid tar), and an edited or swapped member from the
//! one that was packed. Its signature (`package.json.sig`, see
//! [`super::sign`]) therefore pins every byte of the package.
use std::collections::BTreeMap;

use anyhow::bail;
use serde::{Deserialize, Serialize};

use crate::oci::Digest;

/// The first entry of a package.
pub const PACKAGE_JSON: &str = "package.json";
/// The signature of `package.json`, the second entry of a signed package.
pub const SIGNATURE: &str = "package.json.sig";
/// `kind` of a package.json.
pub const KIND: &str = "bundler-offline-package";
/// Version of the package layout; readers refuse a newer major version.
pub const PACKAGE_FORMAT: &str = "1.0";

/// What the package holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PackageToc {
    pub kind: String,
    pub format_version: String,
    pub product: String,
    pub version: String,
    pub arch: String,
    /// The bundle format the members are written in.
    pub bundle_format: String,
    pub bundler_version: String,
    /// Every member, in the order of the tar (sorted by name).
    pub members: Vec<TocMember>,
    /// Present when the package was written as volumes (`pack --split`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<VolumeLayout>,
}

/// One member of the package.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TocMember {
    pub name: String,
    pub size: u64,
    pub sha256: Digest,
    /// Bundles: the digest of their `bundle.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_json: Option<Digest>,
    /// Bundles of a chart: `NAME-VERSION`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<String>,
}

/// How a split package was cut (the volumes' count and digests are in the
/// volume table, which cannot be inside the stream it describes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VolumeLayout {
    pub volume_size: u64,
    pub parity_volumes: u32,
}

impl PackageToc {
    /// Parse and check the header fields of a package.json.
    pub fn parse(bytes: &[u8], what: &str) -> anyhow::Result<Self> {
        let toc: PackageToc = serde_json::from_slice(bytes).map_err(|e| {
            anyhow::anyhow!(
                "{what}: {PACKAGE_JSON} is malformed ({e}): the package is damaged; copy it again"
            )
        })?;
        if toc.kind != KIND {
            bail!(
                "{what}: {PACKAGE_JSON} has kind {:?}, expected {KIND:?}: not a bundler offline package",
                toc.kind
            );
        }
        let major = |v: &str| v.split('.').next().and_then(|m| m.parse::<u32>().ok());
        if major(&toc.format_version)
            .zip(major(PACKAGE_FORMAT))
            .is_none_or(|(a, b)| a > b)
        {
            bail!(
                "{what}: package formatVersion {:?} is not supported by this bundler (supports {PACKAGE_FORMAT}): upgrade bundler",
                toc.format_version
            );
        }
        Ok(toc)
    }

    /// The canonical bytes written into the package (and signed).
    pub fn to_bytes(&self) -> anyhow::Result<Vec<u8>> {
        let mut v = serde_json::to_vec_pretty(self)?;
        v.push(b'\n');
        Ok(v)
    }

    /// The member named `name`.
    pub fn member(&self, name: &str) -> Option<&TocMember> {
        self.members.iter().find(|m| m.name == name)
    }
}

/// Refuse two bundles that carry the same chart version with different
/// content (issue 20.15): sync would publish one and fail on the other,
/// and serve would serve the first. `items` are (label, `NAME-VERSION`,
/// bundle.json digest); the same content twice is harmless.
pub fn refuse_duplicate_charts<'a>(
    what: &str,
    items: impl IntoIterator<Item = (&'a str, &'a str, Option<&'a Digest>)>,
) -> anyhow::Result<()> {
    let mut seen: BTreeMap<&str, (&str, Option<&Digest>)> = BTreeMap::new();
    for (label, chart, digest) in items {
        match seen.get(chart) {
            Some((first, d)) if *d != digest || digest.is_none() => bail!(
                "{what}: chart {chart} is carried twice with different content ({first} and {label}): \
                 refused, a site would publish one and serve the other; keep one bundle per chart version"
            ),
            Some(_) => {}
            None => {
                seen.insert(chart, (label, digest));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_chart_versions_with_other_content_are_refused() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let same = [("x", "shop-1.0", Some(&a)), ("y", "shop-1.0", Some(&a))];
        refuse_duplicate_charts("p", same).unwrap();
        let differ = [("x", "shop-1.0", Some(&a)), ("y", "shop-1.0", Some(&b))];
        let e = refuse_duplicate_charts("p", differ)
            .unwrap_err()
            .to_string();
        assert!(e.contains("shop-1.0") && e.contains("x and y"), "{e}");
    }

    #[test]
    fn newer_major_and_foreign_kinds_are_refused() {
        let toc = PackageToc {
            kind: KIND.into(),
            format_version: "2.0".into(),
            product: "p".into(),
            version: "1".into(),
            arch: "amd64".into(),
            bundle_format: "1.0".into(),
            bundler_version: "0".into(),
            members: vec![],
            volumes: None,
        };
        let e = PackageToc::parse(&toc.to_bytes().unwrap(), "pkg").unwrap_err();
        assert!(e.to_string().contains("upgrade bundler"), "{e}");
        let other = PackageToc {
            kind: "x".into(),
            format_version: "1.0".into(),
            ..toc
        };
        let e = PackageToc::parse(&other.to_bytes().unwrap(), "pkg").unwrap_err();
        assert!(
            e.to_string().contains("not a bundler offline package"),
            "{e}"
        );
    }
}
