//! Discovering image hints for charts that ship none, and turning hints
//! into the exact images to pack.
//!
//! Public charts write image references in a handful of shapes; from the
//! merged values (subcharts under their name or alias, `global` inherited)
//! this finds, at any depth and inside lists:
//! - image maps `{registry?, repository|image|name, tag?, digest?|sha?}`:
//!   `{{ .p.registry }}/{{ .p.repository }}:{{ .p.tag }}`. An empty
//!   `registry` (the registry then lives in `repository`) is left out of the
//!   template, as the charts' `if .registry` guards do; a set
//!   `global.imageRegistry`, `global.image.registry` or `global.registry`
//!   takes the registry's place (Bitnami's and others' convention);
//! - strings under keys named `image` (or `...Image`) that parse as a
//!   reference (`image: "repo:tag"`), with a sibling `tag` when the string
//!   has none.
//!
//! A hint whose tag is empty is the chart's `appVersion` in nearly every
//! chart, sometimes with a `v` in front; what `helm template` renders for
//! the same name wins, then the `appVersion` of the chart that owns the
//! value. Images `helm template` renders that no hint explains are reported
//! as extra images (packed, but not relocatable through values), and values
//! that look like images but cannot be written as a hint are reported as
//! notes, never dropped silently.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_yaml_ng::Value;

use super::hints::{self, Hints, MergedValues, ResolvedHint};
use super::Chart;
use crate::oci::Reference;

/// Where an image of a bundle comes from (for `pack --print-images`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum ImageOrigin {
    /// The bundle manifest's `images` (of a chart, or `spec.images`).
    Manifest,
    /// An `archive:` of the bundle manifest.
    Archive { path: PathBuf },
    /// A hints file the manifest names.
    HintsFile { path: PathBuf, hint: String },
    /// The chart's own `.relok8s-images.yaml`.
    ChartHints { hint: String },
    /// Discovered in the values.
    Values { path: String, hint: String },
    /// Learned by rendering: the values of `hint` control a rendered image
    /// (see `learn_controls`).
    Learned { hint: String },
    /// Rendered by `helm template` (confirms a hint's image).
    Rendered,
    /// Rendered by `helm template`, explained by no hint: carried, but no
    /// value relocates it.
    RenderedOnly,
}

impl std::fmt::Display for ImageOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageOrigin::Manifest => f.write_str("manifest images"),
            ImageOrigin::Archive { path } => write!(f, "archive {}", path.display()),
            ImageOrigin::HintsFile { path, hint } => {
                write!(f, "hints file {}: {hint}", path.display())
            }
            ImageOrigin::ChartHints { hint } => write!(f, "chart .relok8s-images.yaml: {hint}"),
            ImageOrigin::Values { path, hint } => {
                write!(f, "discovered at values path {path}: {hint}")
            }
            ImageOrigin::Learned { hint } => {
                write!(f, "learned by rendering with its values changed: {hint}")
            }
            ImageOrigin::Rendered => f.write_str("rendered by helm template"),
            ImageOrigin::RenderedOnly => {
                f.write_str("rendered by helm template, in no values path (not relocatable)")
            }
        }
    }
}

/// What discovery found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Discovered {
    /// Hints for images whose reference lives in values.
    pub hints: Hints,
    /// Images in `helm template` output that no hint explains.
    pub extra_images: Vec<Reference>,
    /// Values that look like images but cannot be written as a hint.
    pub notes: Vec<String>,
}

/// Hints from values and, when `helm` is given, images in `helm template`
/// output that values did not explain.
pub fn discover(chart: &Chart, helm: Option<&Path>) -> anyhow::Result<Discovered> {
    let rendered = match helm {
        Some(h) => match super::render_check::render_chart(chart, h, &Default::default()) {
            Ok(r) => Some(r.images()),
            Err(e) => {
                tracing::warn!(
                    "chart {} {}: helm template failed, only values were searched for images: {e:#}",
                    chart.name,
                    chart.version
                );
                None
            }
        },
        None => None,
    };
    discover_with_rendered(chart, rendered.as_deref())
}

/// [`discover`] with the rendered images already at hand.
pub fn discover_with_rendered(
    chart: &Chart,
    rendered: Option<&[Reference]>,
) -> anyhow::Result<Discovered> {
    let merged = MergedValues::of(chart)?;
    let mut found = Found::default();
    walk(&merged, &merged.values, &mut Vec::new(), &mut found);
    let mut seen = BTreeSet::new();
    let mut kept = Vec::new();
    let mut explained = Vec::new();
    for candidates in found.templates {
        let mut resolved = Vec::new();
        for t in candidates {
            if !seen.insert(t.clone()) {
                continue;
            }
            match hints::resolve_one(&t, &merged.values) {
                Ok(r) => resolved.push(r),
                Err(e) => found.notes.push(format!("{e:#}")),
            }
        }
        for r in choose_candidates(&merged, resolved, rendered) {
            explained.extend(images_of_hint(&merged, &r, rendered));
            kept.push(r.template);
        }
    }
    let mut extra_images = Vec::new();
    for img in rendered.unwrap_or(&[]) {
        if !explained.iter().any(|e| same_image(e, img)) && !extra_images.contains(img) {
            extra_images.push(img.clone());
        }
    }
    Ok(Discovered {
        hints: Hints { templates: kept },
        extra_images,
        notes: found.notes,
    })
}

/// Of the candidate hints for one image map, those to keep: the ones whose
/// image `helm template` renders (all of them when their values agree);
/// when none is rendered, the first (a set global override, as Bitnami's
/// and most charts' helpers apply it).
fn choose_candidates(
    merged: &MergedValues,
    candidates: Vec<ResolvedHint>,
    rendered: Option<&[Reference]>,
) -> Vec<ResolvedHint> {
    if candidates.len() < 2 {
        return candidates;
    }
    let is_rendered = |h: &ResolvedHint| {
        images_of_hint(merged, h, rendered)
            .iter()
            .any(|i| rendered.unwrap_or(&[]).iter().any(|r| same_image(i, r)))
    };
    let (shown, hidden): (Vec<_>, Vec<_>) = candidates.into_iter().partition(is_rendered);
    if !shown.is_empty() {
        return shown;
    }
    // Nothing rendered: the first, and those that agree with it.
    let first = hidden[0].reference.clone();
    hidden
        .into_iter()
        .filter(|h| h.reference == first)
        .collect()
}

/// The images a resolved hint stands for. A hint with a tag or digest is
/// exactly that image. A hint without one (empty `tag`) is what `helm
/// template` rendered under the same name (`v1.2.3` where the chart
/// prefixes a `v`), else the `appVersion` of the chart owning the value.
pub fn images_of_hint(
    merged: &MergedValues,
    hint: &ResolvedHint,
    rendered: Option<&[Reference]>,
) -> Vec<Reference> {
    let r = &hint.reference;
    if r.tag.is_some() || r.digest.is_some() {
        return vec![r.clone()];
    }
    let same_name: Vec<Reference> = rendered
        .unwrap_or(&[])
        .iter()
        .filter(|x| x.registry == r.registry && x.repository == r.repository)
        .filter(|x| x.tag.is_some() || x.digest.is_some())
        .cloned()
        .collect();
    if !same_name.is_empty() {
        return same_name;
    }
    let owner = hint
        .parts
        .iter()
        .find(|p| p.role == hints::PartRole::Tag)
        .or_else(|| hint.parts.last())
        .map(|p| p.path.clone())
        .unwrap_or_default();
    let mut out = r.clone();
    out.tag = Some(
        merged
            .app_version_at(&owner)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "latest".into()),
    );
    vec![out]
}

/// Same image, `latest` standing in for no tag.
pub fn same_image(a: &Reference, b: &Reference) -> bool {
    normalise(a) == normalise(b)
}

fn normalise(r: &Reference) -> String {
    let mut r = r.clone();
    if r.tag.is_none() && r.digest.is_none() {
        r.tag = Some("latest".into());
    }
    r.to_string()
}

#[derive(Default)]
struct Found {
    /// Per image found in values, its candidate templates (more than one
    /// when it is not known whether a global registry override applies).
    templates: Vec<Vec<String>>,
    notes: Vec<String>,
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

fn path_string(path: &[String]) -> String {
    path.join(".")
}

/// The path of the chart level that `path` is in (its subchart keys).
fn chart_level<'p>(merged: &MergedValues, path: &'p [String]) -> &'p [String] {
    let mut i = 0;
    while i < path.len() && merged.is_subchart(&path[..=i]) {
        i += 1;
    }
    &path[..i]
}

/// The first set global registry override at this chart level, as a
/// placeholder.
fn global_registry(merged: &MergedValues, level: &[String]) -> Option<String> {
    for key in [
        &["imageRegistry"][..],
        &["image", "registry"][..],
        &["registry"][..],
    ] {
        let mut p = level.to_vec();
        p.push("global".into());
        p.extend(key.iter().map(|k| k.to_string()));
        if matches!(hints::lookup(&merged.values, &p), Some(Value::String(s)) if !s.is_empty()) {
            let last = p.pop().unwrap();
            return Some(dotted(&p, &last));
        }
    }
    None
}

fn has_tag_or_digest(s: &str) -> bool {
    let last = s.rsplit('/').next().unwrap_or(s);
    last.contains(':') || s.contains('@')
}

/// If the map at `path` is an image map, its hint template.
fn image_map_template(
    merged: &MergedValues,
    m: &serde_yaml_ng::Mapping,
    path: &[String],
    found: &mut Found,
) -> Option<Vec<String>> {
    let get = |k: &str| m.get(Value::String(k.to_string()));
    let is_str = |k: &str| matches!(get(k), Some(Value::String(_)));
    let has = |k: &str| get(k).is_some_and(|v| hints::scalar_string(v).is_some());
    let under_image_key = path.last().is_some_and(|k| is_image_key(k));
    // Which key holds the repository.
    let repo_key = if is_str("repository") {
        "repository"
    } else if is_str("image") && (has("registry") || has("tag") || has("digest")) {
        "image"
    } else if is_str("name") && under_image_key {
        // `image: {name, tag}` (a `name` elsewhere is a container's name).
        "name"
    } else {
        return None;
    };
    let repo = non_empty_str(get(repo_key))?;
    if repo.contains("{{") {
        found.notes.push(format!(
            "values path {}.{repo_key}: {repo:?} is a template, not an image reference; list the image in the manifest's images if it is needed",
            path_string(path)
        ));
        return None;
    }
    if repo_key == "image" && has_tag_or_digest(&repo) {
        // `{image: "repo:tag", ...}`: a whole reference.
        return Some(vec![dotted(path, "image")]);
    }
    let level = chart_level(merged, path).to_vec();
    // Registry prefixes the templates may use. A set global override and a
    // set registry of the map's own: which one wins is the template's
    // choice, so both are candidates and the rendered output decides.
    let mut prefixes: Vec<String> = Vec::new();
    let registry_set = non_empty_str(get("registry")).is_some();
    if get("registry").is_some() || repo_key == "name" {
        if let Some(g) = global_registry(merged, &level) {
            prefixes.push(format!("{g}/"));
        }
        if registry_set {
            prefixes.push(format!("{}/", dotted(path, "registry")));
        } else if repo_key == "name" && prefixes.is_empty() {
            // seed 000's layout: `global.repository` prefixes `image.name`.
            let mut p = level.clone();
            p.push("global".into());
            p.push("repository".into());
            if non_empty_str(hints::lookup(&merged.values, &p)).is_some() {
                p.pop();
                prefixes.push(format!("{}/", dotted(&p, "repository")));
            }
        }
    }
    if prefixes.is_empty() {
        prefixes.push(String::new());
    }
    let mut tail = dotted(path, repo_key);
    if has("tag") {
        tail.push(':');
        tail.push_str(&dotted(path, "tag"));
    }
    if non_empty_str(get("digest")).is_some() {
        tail.push('@');
        tail.push_str(&dotted(path, "digest"));
    } else if let Some(sha) = non_empty_str(get("sha")) {
        if sha.starts_with("sha256:") {
            tail.push('@');
        } else {
            tail.push_str("@sha256:");
        }
        tail.push_str(&dotted(path, "sha"));
    }
    Some(prefixes.into_iter().map(|p| format!("{p}{tail}")).collect())
}

fn walk(merged: &MergedValues, v: &Value, path: &mut Vec<String>, found: &mut Found) {
    match v {
        Value::Mapping(m) => {
            if let Some(candidates) = image_map_template(merged, m, path, found) {
                found.templates.push(candidates);
                return;
            }
            for (k, child) in m {
                let Some(k) = k.as_str() else { continue };
                if !k
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
                {
                    if is_image_key(k) || matches!(child, Value::Mapping(_)) {
                        tracing::debug!("values key {k:?} cannot be named in a hint");
                    }
                    continue;
                }
                // A subchart's `global` is the parent's, already walked.
                if k == "global" && !path.is_empty() && merged.is_subchart(path) {
                    continue;
                }
                match child {
                    Value::Mapping(_) | Value::Sequence(_) => {
                        path.push(k.to_string());
                        walk(merged, child, path, found);
                        path.pop();
                    }
                    Value::String(s) if is_image_key(k) && looks_like_image(s) => {
                        let sibling_tag = m
                            .get(Value::String("tag".into()))
                            .is_some_and(|t| hints::scalar_string(t).is_some());
                        if !has_tag_or_digest(s) && sibling_tag {
                            found.templates.push(vec![format!(
                                "{}:{}",
                                dotted(path, k),
                                dotted(path, "tag")
                            )]);
                        } else {
                            found.templates.push(vec![dotted(path, k)]);
                        }
                    }
                    Value::String(s) if is_image_key(k) && s.contains("{{") => {
                        let mut p = path.clone();
                        p.push(k.to_string());
                        found.notes.push(format!(
                            "values path {}: {s:?} is a template, not an image reference; list the image in the manifest's images if it is needed",
                            path_string(&p)
                        ));
                    }
                    _ => {}
                }
            }
        }
        Value::Sequence(items) => {
            for (i, child) in items.iter().enumerate() {
                if matches!(child, Value::Mapping(_) | Value::Sequence(_)) {
                    path.push(i.to_string());
                    walk(merged, child, path, found);
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

fn is_image_key(k: &str) -> bool {
    k == "image" || k.ends_with("Image") || k.ends_with("_image")
}

fn looks_like_image(s: &str) -> bool {
    (s.contains(':') || s.contains('/') || s.contains('@'))
        && !s.contains("{{")
        && !s.contains(char::is_whitespace)
        && Reference::parse(s).is_ok()
}

/// Every `image:` value in rendered manifests (any kind, any depth),
/// parsed (unparsable ones skipped), in order of first appearance.
pub fn images_in_manifests(text: &str) -> Vec<Reference> {
    let mut out: Vec<Reference> = Vec::new();
    for r in super::render_check::RenderedManifests::parse(text).images() {
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(values: &str) -> Chart {
        Chart::from_files(vec![
            (
                "Chart.yaml".into(),
                b"name: c\nversion: 1.0.0\nappVersion: 3.1.4\n".to_vec(),
            ),
            ("values.yaml".into(), values.as_bytes().to_vec()),
        ])
        .unwrap()
    }

    #[test]
    fn finds_maps_strings_and_globals() {
        let c = chart("global:\n  imageRegistry: ''\nimage:\n  registry: docker.io\n  repository: bitnami/kafka\n  tag: 2.8.1\nsidecar:\n  image: busybox:1.36\nmetrics:\n  image:\n    repository: prom/exporter\nnotAnImage:\n  image: true\n");
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

    /// Defect 1: `{registry, image, tag, digest}` (ingress-nginx) is an
    /// image map whose repository key is `image`, not a whole reference.
    #[test]
    fn image_key_as_repository() {
        let d = "sha256:594ceea76b01c592858f803f9136e1d19ce1ea1a6f0a1a7e7f4f3a0b1c2d3e4f";
        let c = chart(&format!("controller:\n  image:\n    registry: registry.k8s.io\n    image: ingress-nginx/controller\n    tag: \"v1.15.1\"\n    digest: {d}\n"));
        let found = discover(&c, None).unwrap();
        assert_eq!(
            found.hints.templates,
            vec!["{{ .controller.image.registry }}/{{ .controller.image.image }}:{{ .controller.image.tag }}@{{ .controller.image.digest }}"]
        );
        let r = found.hints.resolve(&c).unwrap();
        assert_eq!(
            r[0].reference.to_string(),
            format!("registry.k8s.io/ingress-nginx/controller:v1.15.1@{d}")
        );
    }

    /// Defect 2: `registry: ""` with the registry inside `repository`.
    #[test]
    fn empty_registry_with_registry_in_repository() {
        let c = chart(
            "image:\n  registry: \"\"\n  repository: quay.io/prometheus/pushgateway\n  tag: \"\"\n",
        );
        let found = discover(&c, None).unwrap();
        assert_eq!(
            found.hints.templates,
            vec!["{{ .image.repository }}:{{ .image.tag }}"]
        );
        assert_ne!(found.hints.to_yaml(), "[]\n");
    }

    /// Defect 3: an empty tag is what helm renders, else the appVersion.
    #[test]
    fn empty_tag_is_rendered_tag_then_app_version() {
        let c = chart("image:\n  registry: registry.k8s.io\n  repository: ksm/ksm\n  tag: \"\"\n");
        let merged = MergedValues::of(&c).unwrap();
        let found = discover(&c, None).unwrap();
        let hint = &found.hints.resolve(&c).unwrap()[0];
        assert_eq!(
            images_of_hint(&merged, hint, None)[0].to_string(),
            "registry.k8s.io/ksm/ksm:3.1.4"
        );
        let rendered = vec![Reference::parse("registry.k8s.io/ksm/ksm:v3.1.4").unwrap()];
        assert_eq!(
            images_of_hint(&merged, hint, Some(&rendered))[0].to_string(),
            "registry.k8s.io/ksm/ksm:v3.1.4"
        );
        let found = discover_with_rendered(&c, Some(&rendered)).unwrap();
        assert!(found.extra_images.is_empty(), "{:?}", found.extra_images);
    }

    #[test]
    fn lists_sibling_tags_and_global_image_registry() {
        let c = chart("global:\n  image:\n    registry: mirror.local\nsidecars:\n  - name: a\n    image:\n      registry: docker.io\n      repository: x/a\n      tag: '1'\nexporter:\n  image: ghcr.io/o/exporter\n  tag: v1.75.0\nbad:\n  image: \"{{ .Values.x }}/y\"\n");
        let found = discover(&c, None).unwrap();
        assert_eq!(
            found.hints.templates,
            vec![
                "{{ .global.image.registry }}/{{ .sidecars.0.image.repository }}:{{ .sidecars.0.image.tag }}",
                "{{ .exporter.image }}:{{ .exporter.tag }}",
            ]
        );
        let r = found.hints.resolve(&c).unwrap();
        assert_eq!(r[0].reference.to_string(), "mirror.local/x/a:1");
        assert_eq!(r[1].reference.to_string(), "ghcr.io/o/exporter:v1.75.0");
        assert_eq!(found.notes.len(), 1, "{:?}", found.notes);
    }

    /// ingress-nginx sets both `global.image.registry` and each image's
    /// `registry`: the rendered output decides which the template uses.
    #[test]
    fn global_or_own_registry_is_decided_by_the_render() {
        let c = chart("global:\n  image:\n    registry: mirror.example\nimage:\n  registry: registry.k8s.io\n  image: ingress-nginx/controller\n  tag: v1\n");
        let both = discover(&c, None).unwrap();
        assert_eq!(both.hints.templates.len(), 1, "{:?}", both.hints.templates);
        assert!(both.hints.templates[0].starts_with("{{ .global.image.registry }}"));
        let rendered =
            vec![Reference::parse("registry.k8s.io/ingress-nginx/controller:v1").unwrap()];
        let own = discover_with_rendered(&c, Some(&rendered)).unwrap();
        assert_eq!(
            own.hints.templates,
            vec!["{{ .image.registry }}/{{ .image.image }}:{{ .image.tag }}"]
        );
        assert!(own.extra_images.is_empty());
        // Equal values: both are kept, so relocation rewrites both.
        let c = chart("global:\n  image:\n    registry: registry.k8s.io\nimage:\n  registry: registry.k8s.io\n  image: ingress-nginx/controller\n  tag: v1\n");
        assert_eq!(discover(&c, None).unwrap().hints.templates.len(), 2);
    }

    #[test]
    fn manifest_images() {
        let t = "kind: Deployment\nspec:\n  template:\n    spec:\n      containers:\n        - name: a\n          image: \"docker.io/bitnami/kafka:2.8.1\"\n        - image: busybox\n";
        let v = images_in_manifests(t);
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].to_string(), "docker.io/library/busybox");
    }
}
