//! Step 1 of relocation planning: find every image a rendered chart names.
//!
//! A site must hold every image its workloads will pull, and not all of
//! them are in `image:` fields: operators take images in container args
//! (`--collector-image=…`), env values (`RELATED_IMAGE_*`, multi-line
//! `4.2.0=quay.io/…` lists), ConfigMap data (`provisioner: "registry…"`),
//! and custom resources that hold `{repository, tag}` (or `{repository,
//! image, version}`) maps the operator joins later. So the whole output of
//! `helm template` is walked, document by document (CRDs are skipped: their
//! descriptions quote example images nobody runs), and each image found is
//! an [`ImageSite`] with a location that is the same in every render of the
//! same chart (so a perturbed render can be compared with the original one,
//! see [`super::learn_controls`]), the template file it came from, and
//! whether it belongs to a `helm.sh/hook: test` resource (not deployed by
//! install or upgrade).
use serde::Serialize;
use serde_yaml_ng::Value;

use crate::oci::Reference;

/// How an image is written in the manifests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum SiteKind {
    /// An `image:` string field (containers, initContainers, ephemeral
    /// containers, or any other kind's field).
    Field,
    /// A `{repository, tag}` / `{repository, image, version}` map (custom
    /// resources).
    Map,
    /// Inside a longer string: container args/command, env values,
    /// ConfigMap data.
    Text,
}

impl std::fmt::Display for SiteKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SiteKind::Field => "image field",
            SiteKind::Map => "{repository, tag} map",
            SiteKind::Text => "reference in text",
        })
    }
}

/// One image reference in rendered manifests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ImageSite {
    /// The reference as rendered (for a map, its parts joined).
    pub image: String,
    /// `Deployment/grafana containers[0]`, `ConfigMap/x data.plugin`,
    /// `Deployment/op containers[0].args[2]#0`: stable across renders.
    pub location: String,
    pub kind: SiteKind,
    /// The template file (`# Source:` of the document).
    pub source: String,
    /// Template file, document number within it, and field path: what
    /// stays the same when values (even a `nameOverride`) change.
    #[serde(skip)]
    pub key: String,
    /// In a `helm.sh/hook: test` resource.
    pub test_hook: bool,
}

/// Every image site of a multi-document `helm template` output.
pub fn image_sites(text: &str) -> Vec<ImageSite> {
    image_sites_where(text, |_| true)
}

/// [`image_sites`] of the documents whose text passes `keep` (a perturbed
/// render only needs the documents where a sentinel shows). Documents are
/// numbered as in [`image_sites`], so keys stay comparable.
pub fn image_sites_where(text: &str, keep: impl Fn(&str) -> bool) -> Vec<ImageSite> {
    let mut out = Vec::new();
    let mut per_source: std::collections::HashMap<String, usize> = Default::default();
    for (source, doc) in documents(text) {
        let n = per_source.entry(source.to_string()).or_default();
        let doc_key = format!("{source}#{n}");
        *n += 1;
        // CRDs are big and quote example images nobody runs: skip them
        // before parsing.
        if is_crd(doc) || !keep(doc) {
            continue;
        }
        let Ok(v) = serde_yaml_ng::from_str::<Value>(doc) else {
            continue;
        };
        let kind = v.get("kind").and_then(Value::as_str).unwrap_or("?");
        if kind == "CustomResourceDefinition" {
            continue;
        }
        let meta = v.get("metadata");
        let name = meta
            .and_then(|m| m.get("name"))
            .and_then(super::hints::scalar_string)
            .unwrap_or_default();
        let test_hook = meta
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get("helm.sh/hook"))
            .and_then(Value::as_str)
            .is_some_and(|h| h.split(',').any(|p| p.trim().starts_with("test")));
        let doc = Doc {
            what: format!("{kind}/{name}"),
            source: source.to_string(),
            test_hook,
            secret: kind == "Secret",
            key: doc_key,
        };
        walk(&doc, &v, &mut Vec::new(), &mut out);
    }
    out
}

fn is_crd(doc: &str) -> bool {
    doc.lines()
        .any(|l| l.trim_end() == "kind: CustomResourceDefinition")
}

struct Doc {
    what: String,
    source: String,
    test_hook: bool,
    secret: bool,
    key: String,
}

/// Split on `---` lines; each document with the `# Source:` it follows.
fn documents(text: &str) -> Vec<(&str, &str)> {
    let mut spans: Vec<(usize, usize)> = Vec::new();
    let (mut start, mut pos) = (0, 0);
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            spans.push((start, pos));
            start = pos + line.len();
        }
        pos += line.len();
    }
    spans.push((start, text.len()));
    let mut out = Vec::new();
    let mut source = "";
    for (s, e) in spans {
        let doc = &text[s..e];
        if let Some(src) = doc.lines().find_map(|l| l.strip_prefix("# Source: ")) {
            source = src.trim();
        }
        if !doc.trim().is_empty() {
            out.push((source, doc));
        }
    }
    out
}

fn walk(doc: &Doc, v: &Value, path: &mut Vec<String>, out: &mut Vec<ImageSite>) {
    match v {
        Value::Mapping(m) => {
            if path.last().map(String::as_str) == Some("metadata") {
                return;
            }
            let is_map_image = match map_image(m) {
                Some(image) => {
                    out.push(site(doc, path, image, SiteKind::Map, None));
                    true
                }
                None => false,
            };
            for (k, child) in m {
                let Some(k) = k.as_str() else { continue };
                // In a `{repository, image, version}` map, `image` is a
                // part of the map's reference.
                if is_map_image && matches!(k, "image" | "name" | "repository" | "registry") {
                    continue;
                }
                if k == "image" || k == "imageName" {
                    if let Value::String(s) = child {
                        if !s.trim().is_empty() {
                            path.push(k.to_string());
                            out.push(site(doc, path, s.trim().into(), SiteKind::Field, None));
                            path.pop();
                        }
                        continue;
                    }
                }
                path.push(k.to_string());
                walk(doc, child, path, out);
                path.pop();
            }
        }
        Value::Sequence(s) => {
            for (i, child) in s.iter().enumerate() {
                path.push(format!("[{i}]"));
                walk(doc, child, path, out);
                path.pop();
            }
        }
        Value::String(s) if !doc.secret => {
            for (i, token) in reference_tokens(s) {
                out.push(site(doc, path, token, SiteKind::Text, Some(i)));
            }
        }
        _ => {}
    }
}

fn site(
    doc: &Doc,
    path: &[String],
    image: String,
    kind: SiteKind,
    token: Option<usize>,
) -> ImageSite {
    let mut loc = location(&doc.what, path);
    let mut key = format!("{} {}", doc.key, path.join("."));
    if let Some(i) = token {
        loc.push_str(&format!("#{i}"));
        key.push_str(&format!("#{i}"));
    }
    ImageSite {
        image,
        location: loc,
        key,
        kind,
        source: doc.source.clone(),
        test_hook: doc.test_hook,
    }
}

/// `Deployment/x containers[0]` for a workload container's image, else
/// the field path.
fn location(what: &str, path: &[String]) -> String {
    let n = path.len();
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        if n >= 3 && path[n - 3] == list && path[n - 1] == "image" {
            return format!("{what} {list}{}", path[n - 2]);
        }
    }
    let mut s = String::new();
    for p in path {
        if !p.starts_with('[') && !s.is_empty() {
            s.push('.');
        }
        s.push_str(p);
    }
    format!("{what} {s}")
}

/// A `{repository, tag|version}` map (optionally with `registry` before
/// and `image`/`name` after the repository) as one reference.
fn map_image(m: &serde_yaml_ng::Mapping) -> Option<String> {
    let s = |k: &str| {
        m.get(Value::String(k.into()))
            .and_then(super::hints::scalar_string)
            .filter(|s| !s.trim().is_empty())
    };
    let repository = s("repository")?;
    let tag = s("tag").or_else(|| s("version"))?;
    let mut name = repository;
    if let Some(reg) = s("registry") {
        name = format!("{}/{}", reg.trim_end_matches('/'), name);
    }
    if let Some(img) = s("image").or_else(|| s("name")) {
        if !img.contains(':') && !img.contains('/') {
            name = format!("{}/{img}", name.trim_end_matches('/'));
        }
    }
    let text = if tag.starts_with("sha256:") {
        format!("{name}@{tag}")
    } else {
        format!("{name}:{tag}")
    };
    Reference::parse(&text).ok()?;
    Some(text)
}

/// References inside a longer string: tokens split at whitespace, `=`,
/// `,`, `;` and quotes that name a registry host (a dot or port in the
/// first component, or `localhost`) and a tag or digest, each with its
/// index among all the pieces of the string (stable when a value changes
/// one piece). Short Docker Hub names are not taken from free text (too
/// many words look like them). A piece holding a learning sentinel
/// (`zs3x.snt`) is taken when it parses at all: the sentinel may stand for
/// the whole name.
pub fn reference_tokens(s: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let pieces = s.split(|c: char| c.is_whitespace() || "=,;\"'`()[]{}<>".contains(c));
    for (i, t) in pieces.enumerate() {
        let t = t.trim_end_matches(['.', ':']);
        if t.contains("x.snt") && !t.contains("://") && Reference::parse(t).is_ok() {
            out.push((i, t.to_string()));
            continue;
        }
        if t.len() < 6 || t.contains("://") || !t.contains('/') {
            continue;
        }
        let first = t.split('/').next().unwrap_or("");
        let host = first.split(':').next().unwrap_or("");
        let hostlike = host == "localhost"
            || (host.contains('.')
                && host
                    .rsplit('.')
                    .next()
                    .is_some_and(|tld| tld.chars().any(|c| c.is_ascii_alphabetic())));
        if !hostlike
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-.".contains(c))
        {
            continue;
        }
        let after_host = &t[first.len()..];
        let has_tag = after_host
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':') || last.contains('@'));
        if !has_tag {
            continue;
        }
        if Reference::parse(t).is_ok() {
            out.push((i, t.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_in_fields_maps_args_env_and_config() {
        let text = "---\n# Source: c/templates/op.yaml\nkind: Deployment\nmetadata: {name: op}\nspec:\n  template:\n    spec:\n      containers:\n        - image: a/b:1\n          args: [\"--collector-image=ghcr.io/o/col:0.1\", \"--port=8080\"]\n          env:\n            - name: IMAGES\n              value: |\n                4.2.0=quay.io/s/kafka:1-kafka-4.2.0\n                4.3.0=quay.io/s/kafka:1-kafka-4.3.0\n---\n# Source: c/templates/cm.yaml\nkind: ConfigMap\nmetadata: {name: m, labels: {x: \"quay.io/not/this:1\"}}\ndata:\n  plugin: \"quay.io/cephcsi/cephcsi:v3.17.0\"\n  url: \"https://quay.io/x/y:1\"\n---\n# Source: c/templates/np.yaml\nkind: NginxProxy\nmetadata: {name: p}\nspec:\n  image: {repository: ghcr.io/n/nginx, tag: 2.6.7}\n  driver: {repository: nvcr.io/nvidia, image: driver, version: v570}\n---\n# Source: c/templates/tests/t.yaml\nkind: Pod\nmetadata:\n  name: t\n  annotations: {helm.sh/hook: test}\nspec:\n  containers: [{image: busybox}]\n---\nkind: CustomResourceDefinition\nmetadata: {name: x}\nspec: {description: \"quay.io/example/img:1\"}\n";
        let got: Vec<(String, String, SiteKind, bool)> = image_sites(text)
            .into_iter()
            .map(|s| (s.image, s.location, s.kind, s.test_hook))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "a/b:1".into(),
                    "Deployment/op containers[0]".into(),
                    SiteKind::Field,
                    false
                ),
                (
                    "ghcr.io/o/col:0.1".into(),
                    "Deployment/op spec.template.spec.containers[0].args[0]#1".into(),
                    SiteKind::Text,
                    false
                ),
                (
                    "quay.io/s/kafka:1-kafka-4.2.0".into(),
                    "Deployment/op spec.template.spec.containers[0].env[0].value#1".into(),
                    SiteKind::Text,
                    false
                ),
                (
                    "quay.io/s/kafka:1-kafka-4.3.0".into(),
                    "Deployment/op spec.template.spec.containers[0].env[0].value#3".into(),
                    SiteKind::Text,
                    false
                ),
                (
                    "quay.io/cephcsi/cephcsi:v3.17.0".into(),
                    "ConfigMap/m data.plugin#0".into(),
                    SiteKind::Text,
                    false
                ),
                (
                    "ghcr.io/n/nginx:2.6.7".into(),
                    "NginxProxy/p spec.image".into(),
                    SiteKind::Map,
                    false
                ),
                (
                    "nvcr.io/nvidia/driver:v570".into(),
                    "NginxProxy/p spec.driver".into(),
                    SiteKind::Map,
                    false
                ),
                (
                    "busybox".into(),
                    "Pod/t containers[0]".into(),
                    SiteKind::Field,
                    true
                ),
            ]
        );
        assert_eq!(image_sites(text)[0].source, "c/templates/op.yaml");
    }
}
