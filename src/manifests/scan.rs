//! Finding image references in Kubernetes manifests.
//!
//! Two kinds of places:
//! - **fields**: a string under a key `image` (containers, initContainers,
//!   ephemeralContainers of every workload kind, Pods, CronJobs, and custom
//!   resources such as TFJob or volcano Jobs) or a key ending in `Image`
//!   (`executorImage`, `cacheImage`): the whole value is the reference;
//! - **text**: container `args`, `command` and `env[].value`, and ConfigMap
//!   `data` (where `configMapGenerator` files and env files end up): image
//!   references inside longer strings. Only tokens that name a registry host
//!   (`gcr.io/...`, `127.0.0.1:5000/...`) count there, and an untagged one
//!   needs two repository components, so `apps/v1` or a URL path is not
//!   taken for an image; Docker Hub short names in free text need a hint.
//!
//! CustomResourceDefinitions are skipped: their schemas have `image:` keys
//! that describe fields rather than name images.
use serde_yaml_ng::Value;

use crate::chart::yamledit::Seg;
use crate::oci::Reference;

/// How an image appears at its place.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Place {
    /// The whole string is the reference (`image: nginx:1.25`).
    Field,
    /// The reference is a token inside a longer string.
    Text,
}

/// One image reference at one place of one document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Occurrence {
    /// Index of the document in its file (or in the build output).
    pub doc: usize,
    pub path: Vec<Seg>,
    /// The reference exactly as written.
    pub literal: String,
    pub place: Place,
    /// A `containers`/`initContainers` image field: kustomize's `images:`
    /// transformer reaches it.
    pub in_container: bool,
    /// `Kind/name` of the document, for messages.
    pub object: String,
}

/// Byte ranges of the YAML documents of `text` (split at `---` lines).
/// A block scalar cannot hold a line starting with `---` at column 0 (it
/// would end the document), so splitting by lines is exact.
pub fn split_documents(text: &str) -> Vec<(usize, usize)> {
    let mut starts = vec![0];
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let l = line.trim_end_matches(['\n', '\r']);
        if pos > 0 && (l == "---" || l.starts_with("--- ") || l.starts_with("---\t")) {
            starts.push(pos);
        }
        pos += line.len();
    }
    let mut out = Vec::new();
    for (i, s) in starts.iter().enumerate() {
        let e = starts.get(i + 1).copied().unwrap_or(text.len());
        out.push((*s, e));
    }
    out
}

/// Every image of every document of `text` (a YAML file or a build output).
pub fn scan_documents(text: &str, what: &str) -> anyhow::Result<Vec<Occurrence>> {
    let mut out = Vec::new();
    for (i, (s, e)) in split_documents(text).into_iter().enumerate() {
        // CRDs name no image; their schemas are most of the bytes of some
        // trees (2.5 MB in the training-operator), so they are not parsed.
        if text[s..e]
            .lines()
            .any(|l| l.trim_end() == "kind: CustomResourceDefinition")
        {
            continue;
        }
        let v: Value = crate::yaml_bounds::from_str(&text[s..e])
            .map_err(|err| anyhow::anyhow!("{what}: document {}: {err:#}", i + 1))?;
        scan_value(&v, i, &mut out);
    }
    Ok(out)
}

/// The images of one parsed document `doc`.
pub fn scan_value(v: &Value, doc: usize, out: &mut Vec<Occurrence>) {
    let kind = v.get("kind").and_then(Value::as_str).unwrap_or("");
    if kind == "CustomResourceDefinition" || !v.is_mapping() {
        return;
    }
    let name = v
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .unwrap_or("?");
    let object = format!("{kind}/{name}");
    let config_map = kind == "ConfigMap";
    walk(v, &mut Vec::new(), doc, config_map, &object, out);
}

const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];
/// The lists kustomize's `images:` transformer rewrites (at any depth);
/// not `ephemeralContainers`.
const KUSTOMIZE_IMAGE_LISTS: [&str; 2] = ["containers", "initContainers"];

fn key_at(path: &[Seg], back: usize) -> Option<&str> {
    match path.len().checked_sub(back).and_then(|i| path.get(i)) {
        Some(Seg::Key(k)) => Some(k),
        _ => None,
    }
}

fn index_at(path: &[Seg], back: usize) -> bool {
    matches!(
        path.len().checked_sub(back).and_then(|i| path.get(i)),
        Some(Seg::Index(_))
    )
}

fn walk(
    v: &Value,
    path: &mut Vec<Seg>,
    doc: usize,
    config_map: bool,
    object: &str,
    out: &mut Vec<Occurrence>,
) {
    match v {
        Value::Mapping(m) => {
            for (k, child) in m {
                let Some(k) = k.as_str() else { continue };
                path.push(Seg::Key(k.to_string()));
                walk(child, path, doc, config_map, object, out);
                path.pop();
            }
        }
        Value::Sequence(items) => {
            for (i, child) in items.iter().enumerate() {
                path.push(Seg::Index(i));
                walk(child, path, doc, config_map, object, out);
                path.pop();
            }
        }
        Value::Tagged(t) => walk(&t.value, path, doc, config_map, object, out),
        Value::String(s) => classify(s, path, doc, config_map, object, out),
        _ => {}
    }
}

fn classify(
    s: &str,
    path: &[Seg],
    doc: usize,
    config_map: bool,
    object: &str,
    out: &mut Vec<Occurrence>,
) {
    let push = |out: &mut Vec<Occurrence>, literal: &str, place: Place, in_container: bool| {
        out.push(Occurrence {
            doc,
            path: path.to_vec(),
            literal: literal.to_string(),
            place,
            in_container,
            object: object.to_string(),
        })
    };
    let last = key_at(path, 1);
    let in_container_item = |back: usize| {
        index_at(path, back) && key_at(path, back + 1).is_some_and(|k| CONTAINER_LISTS.contains(&k))
    };
    if let Some(k) = last {
        if k == "image" || (k.ends_with("Image") && k.len() > 5) {
            if looks_like_field_image(s) {
                push(
                    out,
                    s.trim(),
                    Place::Field,
                    k == "image"
                        && in_container_item(2)
                        && key_at(path, 3).is_some_and(|l| KUSTOMIZE_IMAGE_LISTS.contains(&l)),
                );
            }
            return;
        }
    }
    // args / command items of a container, env[].value of a container.
    let container_text = (index_at(path, 1)
        && matches!(key_at(path, 2), Some("args" | "command"))
        && in_container_item(3))
        || (last == Some("value")
            && index_at(path, 2)
            && key_at(path, 3) == Some("env")
            && in_container_item(4));
    let config_map_data = config_map && matches!(path.first(), Some(Seg::Key(k)) if k == "data");
    if container_text || config_map_data {
        for (_, token) in image_tokens(s) {
            push(out, token, Place::Text, false);
        }
    }
}

/// A whole field value that names an image.
fn looks_like_field_image(s: &str) -> bool {
    let s = s.trim();
    !s.is_empty() && !s.contains("{{") && !s.contains("$(") && Reference::parse(s).is_ok()
}

fn token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | ':' | '@')
}

/// Image references inside free text, with their byte offsets: tokens
/// that start with a registry host (a dot or a port in the first
/// component, or `localhost`), are not part of a URL, and parse as a
/// reference; an untagged one needs at least two repository components.
pub fn image_tokens(s: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in s.char_indices() {
        match (token_char(c), start) {
            (true, None) => start = Some(i),
            (false, Some(b)) => {
                check_token(s, b, i, &mut out);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(b) = start {
        check_token(s, b, s.len(), &mut out);
    }
    out
}

/// Keep `s[from..to]` in `out` when it names an image (see [`image_tokens`]).
fn check_token<'a>(s: &'a str, from: usize, to: usize, out: &mut Vec<(usize, &'a str)>) {
    {
        let mut tok = &s[from..to];
        // A URL (`https://host/...`) is not an image.
        if tok.contains("://") || s[..from].ends_with("://") {
            return;
        }
        tok = tok.trim_end_matches(['.', ':', ',']);
        if tok.ends_with('/') || !tok.contains('/') {
            return;
        }
        let host = tok.split('/').next().unwrap_or("");
        let host_ok = host == "localhost"
            || ((host.contains('.') || host.contains(':'))
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
                && !host.starts_with(['.', '-'])
                && host_and_port_ok(host));
        if !host_ok {
            return;
        }
        let Ok(r) = Reference::parse(tok) else { return };
        if r.tag.is_none() && r.digest.is_none() && !r.repository.contains('/') {
            return;
        }
        out.push((from, tok));
    }
}

/// `name[:port]`: a non-empty name with a letter or a dot whose last label
/// is alphanumeric, and a numeric port when there is a ':'
/// (`8000:/v2/health` is not a registry).
fn host_and_port_ok(host: &str) -> bool {
    let (name, port) = match host.split_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (host, None),
    };
    let port_ok = port.is_none_or(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    let tld_ok = name
        .rsplit('.')
        .next()
        .is_some_and(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_alphanumeric()));
    port_ok && tld_ok && name.chars().any(|c| c.is_ascii_alphabetic() || c == '.')
}

/// Replace every occurrence of the token `from` in `s` that stands alone
/// (not part of a longer image-like token) with `to`; returns the new
/// string and how many were replaced.
pub fn replace_tokens(s: &str, from: &str, to: &str) -> (String, usize) {
    let mut out = String::with_capacity(s.len());
    let mut n = 0;
    let mut rest = 0;
    let mut search = 0;
    while let Some(p) = s[search..].find(from) {
        let at = search + p;
        let end = at + from.len();
        let before_ok = s[..at].chars().next_back().is_none_or(|c| !token_char(c));
        let after = s[end..].chars().next();
        // A trailing '.', ',' or ':' followed by a non-token char ends a
        // sentence, not the reference.
        let after_ok = match after {
            None => true,
            Some(c) if !token_char(c) => true,
            Some('.' | ',' | ':') => s[end + 1..].chars().next().is_none_or(|c| !token_char(c)),
            _ => false,
        };
        if before_ok && after_ok {
            out.push_str(&s[rest..at]);
            out.push_str(to);
            rest = end;
            n += 1;
        }
        search = end;
    }
    out.push_str(&s[rest..]);
    (out, n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_in_text() {
        let t = "AUTOML='ccr.ccs.tencentyun.com/cube-studio/automl'\nORG='ccr.ccs.tencentyun.com/cube-studio/'\n\
                 url: https://gcr.io/a/b:1 apiVersion: kubeflow.org/v1 x=gcr.io/kubeflow-ci/tf:1.0, /data/k8s/x mysql-service.infra:3306/kubeflow \"triton\":\"8000:/v2/health/ready\"";
        let got: Vec<&str> = image_tokens(t).into_iter().map(|(_, t)| t).collect();
        assert_eq!(
            got,
            vec![
                "ccr.ccs.tencentyun.com/cube-studio/automl",
                "gcr.io/kubeflow-ci/tf:1.0"
            ]
        );
    }

    #[test]
    fn replace_only_whole_tokens() {
        let (s, n) = replace_tokens(
            "a gcr.io/x/y gcr.io/x/y:1 gcr.io/x/yz gcr.io/x/y.",
            "gcr.io/x/y",
            "r/x/y",
        );
        assert_eq!(s, "a r/x/y gcr.io/x/y:1 gcr.io/x/yz r/x/y.");
        assert_eq!(n, 2);
    }

    #[test]
    fn fields_args_env_configmap() {
        let y = "kind: Deployment\nmetadata: {name: d}\nspec:\n  template:\n    spec:\n      ephemeralContainers:\n      - image: debug:1\n      initContainers:\n      - image: busybox\n      containers:\n      - image: \"nginx:1\"\n        args: [--executor-image, gcr.io/ml/argoexec:v2]\n        env:\n        - {name: X, value: 'quay.io/a/b:1'}\n---\nkind: ConfigMap\nmetadata: {name: c}\ndata:\n  cacheImage: gcr.io/google-containers/busybox\n  script: |\n    docker pull busybox\n---\nkind: CustomResourceDefinition\nspec: {image: {type: string}}\n";
        let occ = scan_documents(y, "t").unwrap();
        let lits: Vec<(&str, Place, bool)> = occ
            .iter()
            .map(|o| (o.literal.as_str(), o.place, o.in_container))
            .collect();
        assert_eq!(
            lits,
            vec![
                ("debug:1", Place::Field, false),
                ("busybox", Place::Field, true),
                ("nginx:1", Place::Field, true),
                ("gcr.io/ml/argoexec:v2", Place::Text, false),
                ("quay.io/a/b:1", Place::Text, false),
                ("gcr.io/google-containers/busybox", Place::Field, false),
            ]
        );
    }
}
