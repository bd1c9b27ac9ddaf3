//! Discovering image hints for charts that ship none.
//!
//! From the merged values (subcharts under their key, `global`):
//! - maps with a `repository` string (plus optional `registry`, `tag`,
//!   `digest`): `{{ .p.registry }}/{{ .p.repository }}:{{ .p.tag }}`; when
//!   `global.imageRegistry` is set, Bitnami's convention is followed and the
//!   global takes the registry's place;
//! - `image` maps with `name` (+ `tag`), with `global.repository` as prefix
//!   when set (seed 000's layout);
//! - string values under keys named `image` (or `...Image`) that parse as an
//!   image reference: `{{ .p.image }}`.
//!
//! Then, when `helm` is given, `helm template` renders the chart and every
//! `image:` it prints that no hint explains is reported as an extra image
//! (to pack, but not relocatable through values).
use std::collections::BTreeSet;
use std::path::Path;

use anyhow::Context;
use serde_yaml_ng::Value;

use super::hints::{self, Hints, MergedValues};
use super::Chart;
use crate::oci::Reference;

/// What discovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovered {
    /// Hints for images whose reference lives in values.
    pub hints: Hints,
    /// Images in `helm template` output that no hint explains.
    pub extra_images: Vec<Reference>,
}

/// Hints from values (registry/repository/tag maps, `image: name:tag`
/// strings, subcharts, `global`) and, when `helm` is given, images in
/// `helm template` output that values did not explain.
pub fn discover(chart: &Chart, helm: Option<&Path>) -> anyhow::Result<Discovered> {
    let merged = MergedValues::of(chart)?;
    let mut templates: Vec<String> = Vec::new();
    walk(&merged, &merged.values, &mut Vec::new(), &mut templates);
    let mut seen = BTreeSet::new();
    templates.retain(|t| seen.insert(t.clone()));
    // Keep only hints that resolve to an image.
    let mut explained = BTreeSet::new();
    let mut kept = Vec::new();
    for t in templates {
        if let Ok(r) = hints::resolve_one(&t, &merged.values) {
            explained.insert(normalise(&r.reference));
            kept.push(t);
        }
    }
    let mut extra_images = Vec::new();
    if let Some(helm) = helm {
        match rendered_images(chart, helm) {
            Ok(images) => {
                for img in images {
                    if !explained.contains(&normalise(&img)) && !extra_images.contains(&img) {
                        extra_images.push(img);
                    }
                }
            }
            Err(e) => tracing::warn!(
                "chart {} {}: helm template failed, only values were searched for images: {e:#}",
                chart.name,
                chart.version
            ),
        }
    }
    Ok(Discovered {
        hints: Hints { templates: kept },
        extra_images,
    })
}

fn normalise(r: &Reference) -> String {
    let mut r = r.clone();
    if r.tag.is_none() && r.digest.is_none() {
        r.tag = Some("latest".into());
    }
    r.to_string()
}

fn non_empty_str(v: Option<&Value>) -> Option<String> {
    v.and_then(hints::scalar_string).filter(|s| !s.is_empty())
}

fn dotted(path: &[String], key: &str) -> String {
    let mut s = String::from("{{ .");
    for p in path {
        s.push_str(p);
        s.push('.');
    }
    s.push_str(key);
    s.push_str(" }}");
    s
}

/// The path of the chart level that `path` is in (its subchart keys).
fn chart_level<'p>(merged: &MergedValues, path: &'p [String]) -> &'p [String] {
    let mut i = 0;
    while i < path.len() && merged.is_subchart(&path[..=i]) {
        i += 1;
    }
    &path[..i]
}

fn walk(merged: &MergedValues, v: &Value, path: &mut Vec<String>, out: &mut Vec<String>) {
    let Value::Mapping(m) = v else {
        return;
    };
    let get = |k: &str| m.get(Value::String(k.to_string()));
    let level = chart_level(merged, path).to_vec();
    let global_at = |k: &str| -> Option<String> {
        let mut p = level.clone();
        p.push("global".into());
        p.push(k.into());
        non_empty_str(hints::lookup(&merged.values, &p))
    };
    let global_ph = |k: &str| -> String {
        let mut p = level.clone();
        p.push("global".into());
        dotted(&p, k)
    };
    let tag_part = |t: &mut String| {
        if get("tag").is_some_and(|t| hints::scalar_string(t).is_some()) {
            t.push(':');
            t.push_str(&dotted(path, "tag"));
        }
        if non_empty_str(get("digest")).is_some() {
            t.push('@');
            t.push_str(&dotted(path, "digest"));
        }
    };
    if non_empty_str(get("repository")).is_some()
        && !matches!(get("repository"), Some(Value::Mapping(_)))
    {
        let mut t = String::new();
        if get("registry").is_some() {
            if global_at("imageRegistry").is_some() {
                t.push_str(&global_ph("imageRegistry"));
            } else {
                t.push_str(&dotted(path, "registry"));
            }
            t.push('/');
        }
        t.push_str(&dotted(path, "repository"));
        tag_part(&mut t);
        out.push(t);
    } else if path.last().map(String::as_str) == Some("image")
        && non_empty_str(get("name")).is_some()
    {
        let mut t = String::new();
        if global_at("repository").is_some() {
            t.push_str(&global_ph("repository"));
            t.push('/');
        }
        t.push_str(&dotted(path, "name"));
        tag_part(&mut t);
        out.push(t);
    }
    for (k, child) in m {
        let Some(k) = k.as_str() else { continue };
        if !k
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        {
            continue;
        }
        // A subchart's `global` is the parent's, already walked.
        if k == "global" && !path.is_empty() {
            continue;
        }
        match child {
            Value::Mapping(_) => {
                path.push(k.to_string());
                walk(merged, child, path, out);
                path.pop();
            }
            Value::String(s) if is_image_key(k) && looks_like_image(s) => {
                out.push(dotted(path, k));
            }
            _ => {}
        }
    }
}

fn is_image_key(k: &str) -> bool {
    k == "image" || k.ends_with("Image") || k.ends_with("_image")
}

fn looks_like_image(s: &str) -> bool {
    (s.contains(':') || s.contains('/') || s.contains('@'))
        && !s.contains("{{")
        && Reference::parse(s).is_ok()
}

/// Images in `helm template` output (`image:` fields).
pub fn rendered_images(chart: &Chart, helm: &Path) -> anyhow::Result<Vec<Reference>> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let root = dir.path().join(&chart.name);
    for (p, data) in &chart.files {
        let dest = root.join(p);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&dest, data)?;
    }
    let out = std::process::Command::new(helm)
        .arg("template")
        .arg("discover")
        .arg(&root)
        .output()
        .with_context(|| format!("running {} template", helm.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "helm template failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(images_in_manifests(&String::from_utf8_lossy(&out.stdout)))
}

/// Every `image:` value in rendered manifests, parsed (unparsable ones
/// skipped), in order of first appearance.
pub fn images_in_manifests(text: &str) -> Vec<Reference> {
    let mut out: Vec<Reference> = Vec::new();
    for line in text.lines() {
        let l = line.trim_start().trim_start_matches("- ").trim_start();
        let Some(rest) = l.strip_prefix("image:") else {
            continue;
        };
        let v = rest.split(" #").next().unwrap_or("").trim();
        let v = v.trim_matches(|c| c == '"' || c == '\'');
        if v.is_empty() {
            continue;
        }
        if let Ok(r) = Reference::parse(v) {
            if !out.contains(&r) {
                out.push(r);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_maps_strings_and_globals() {
        let c = Chart::from_files(vec![
            ("Chart.yaml".into(), b"name: c\nversion: 1.0.0\n".to_vec()),
            (
                "values.yaml".into(),
                b"global:\n  imageRegistry: ''\nimage:\n  registry: docker.io\n  repository: bitnami/kafka\n  tag: 2.8.1\nsidecar:\n  image: busybox:1.36\nmetrics:\n  image:\n    repository: prom/exporter\nnotAnImage:\n  image: true\n"
                    .to_vec(),
            ),
        ])
        .unwrap();
        let d = discover(&c, None).unwrap();
        assert_eq!(
            d.hints.templates,
            vec![
                "{{ .image.registry }}/{{ .image.repository }}:{{ .image.tag }}",
                "{{ .sidecar.image }}",
                "{{ .metrics.image.repository }}",
            ]
        );
    }

    #[test]
    fn manifest_images() {
        let t = "spec:\n  containers:\n    - name: a\n      image: \"docker.io/bitnami/kafka:2.8.1\"\n    - image: busybox\n";
        let v = images_in_manifests(t);
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].to_string(), "docker.io/library/busybox");
    }
}
