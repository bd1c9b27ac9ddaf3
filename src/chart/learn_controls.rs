//! Step 2 of relocation planning: learn, by rendering, which values
//! control each image the chart renders.
//!
//! Guessing what a values key means (a map with `registry`/`repository`/
//! `tag`) fails on charts that take the registry from a global, join a
//! `hub` with a name in the template, default every part inside the
//! template, or copy images into args, env and custom resources. So the
//! chart is asked instead: candidate values are set to sentinel strings
//! (`zs12x.snt`, valid as a registry, a path component and a tag) with
//! `helm template --set-string`, many at once, and every image site of the
//! render ([`super::find_images`]) is compared with the same site at the
//! release defaults. Where a sentinel shows up, the value it replaced is
//! what the template printed there; the site's image becomes a hint
//! template (`{{ .global.registry }}/operator:{{ .global.tag }}`) that
//! renders the same text at default values and that `relocate` can solve
//! for a new registry.
//!
//! Two rounds, each one render per batch (a batch that does not render is
//! split in halves until the value that breaks it is alone):
//! 1. every non-empty scalar whose text occurs in a rendered image;
//! 2. only for images whose registry no value of round 1 controls: empty
//!    and null values with image-like keys, and the usual global registry
//!    keys even where the chart does not set them: first the globals (one
//!    global key beats many per-image keys), then the rest, in parallel.
//!    A value found there took the place of a default inside the template
//!    (`default "docker.io" .registry`), so its placeholder carries that
//!    default: `{{ or .image.registry "docker.io" }}` (a Go template
//!    builtin, so relok8s reads it too).
//!
//! What no value controls is reported with its kind and template file.
//! Charts that refuse substituted images (guards such as Bitnami's
//! `global.security.allowInsecureImages`) are rendered with the guard set,
//! as the relocated chart will be ([`guard_paths`]).
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_yaml_ng::Value;

use super::find_images::{image_sites, ImageSite};
use super::hints::{self, MergedValues};
use super::render_check::ReleaseDefaults;
use super::Chart;

/// The values that decide one rendered image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteControl {
    pub site: ImageSite,
    /// The hint template, when some value controls the image's name.
    pub template: Option<String>,
    /// What the site renders for another cluster version, when its tag
    /// follows `.Capabilities.KubeVersion` rather than a value.
    pub other_kube_version: Option<(String, String)>,
    /// No perturbed value showed in it at all (its values could not be
    /// perturbed, or the template prints only literals): a guess from the
    /// values' shapes may still serve it.
    pub inconclusive: bool,
}

/// What rendering taught about a chart.
#[derive(Clone, Debug, Default)]
pub struct Learned {
    /// Every image site at the release defaults, with its control.
    pub sites: Vec<SiteControl>,
    /// Renders run (for the cost note).
    pub renders: usize,
}

impl Learned {
    /// The distinct templates, in site order.
    pub fn templates(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in &self.sites {
            if let Some(t) = &s.template {
                if !out.contains(t) {
                    out.push(t.clone());
                }
            }
        }
        out
    }

    /// Sites whose registry no value controls (literal in a template).
    pub fn uncontrolled(&self) -> impl Iterator<Item = &ImageSite> {
        self.sites
            .iter()
            .filter(|s| s.template.is_none())
            .map(|s| &s.site)
    }
}

/// `helm template` of one packaged chart with extra `--set-string` values.
pub struct Renderer {
    helm: PathBuf,
    _dir: tempfile::TempDir,
    tgz: PathBuf,
    release: ReleaseDefaults,
    /// Values every render sets (guards).
    always: Vec<(String, String)>,
    /// Where what is learned with this renderer is kept.
    cache_key: String,
}

impl Renderer {
    pub fn new(chart: &Chart, helm: &Path, release: &ReleaseDefaults) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let tgz = dir.path().join(super::package::archive_name(chart));
        let bytes = super::package::package_tgz(chart)?;
        std::fs::write(&tgz, &bytes).with_context(|| format!("writing {}", tgz.display()))?;
        Ok(Renderer {
            cache_key: super::learn_cache::key(&bytes, helm, release),
            helm: helm.to_path_buf(),
            _dir: dir,
            tgz,
            release: release.clone(),
            always: Vec::new(),
        })
    }

    /// The manifests with `sets` (`--set-string` paths and values).
    pub fn render(&self, sets: &[(String, String)]) -> anyhow::Result<String> {
        self.render_for(sets, self.release.kube_version.as_deref())
    }

    fn render_for(
        &self,
        sets: &[(String, String)],
        kube_version: Option<&str>,
    ) -> anyhow::Result<String> {
        let mut cmd = std::process::Command::new(&self.helm);
        cmd.arg("template")
            .arg(self.release.name.as_deref().unwrap_or("release"))
            .arg(&self.tgz);
        if let Some(ns) = &self.release.namespace {
            cmd.arg("--namespace").arg(ns);
        }
        if let Some(kv) = kube_version {
            cmd.arg("--kube-version").arg(kv);
        }
        for (k, v) in self.always.iter().chain(sets) {
            cmd.arg("--set-string").arg(format!("{k}={v}"));
        }
        let out = cmd
            .output()
            .with_context(|| format!("running {} template", self.helm.display()))?;
        if !out.status.success() {
            anyhow::bail!(
                "helm template failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        crate::yaml_bounds::check(&text).context("the output of helm template")?;
        Ok(text)
    }
}

/// A value that may control an image: its path in the merged values, its
/// `--set` path, and its text at default values ("" for null or absent).
#[derive(Clone, Debug)]
struct Candidate {
    path: Vec<String>,
    set_path: String,
    value: String,
    /// A number in values.yaml (schemas often insist on one).
    number: bool,
}

/// Learn the controls of every image `base` (the render at release
/// defaults) names. `hint_paths`: value paths shape-guessing proposed
/// (tried first, with the rest of round 1).
pub fn learn(
    chart: &Chart,
    helm: &Path,
    release: &ReleaseDefaults,
    base: &str,
    hint_paths: &[Vec<String>],
) -> anyhow::Result<Learned> {
    learn_with(
        chart,
        Renderer::new(chart, helm, release)?,
        base,
        hint_paths,
    )
}

/// [`learn`] with the chart already packaged for `helm template`.
pub fn learn_with(
    chart: &Chart,
    mut renderer: Renderer,
    base: &str,
    hint_paths: &[Vec<String>],
) -> anyhow::Result<Learned> {
    if let Some(l) = super::learn_cache::load(&renderer.cache_key) {
        return Ok(l);
    }
    let merged = MergedValues::of(chart)?;
    renderer.always = guard_paths(&merged)
        .into_iter()
        .map(|p| (set_path(&merged, &p), "true".to_string()))
        .collect();
    let sites = image_sites(base);
    let mut spans: Vec<Vec<Span>> = vec![Vec::new(); sites.len()];
    let mut renders = 0;

    // Round 1: non-empty values whose text is in a rendered image; those
    // that look like image parts first, the rest only when needed.
    let needs = |spans: &[Vec<Span>]| -> bool {
        (0..sites.len()).any(|i| !sites[i].test_hook && !spans[i].iter().any(|s| s.start == 0))
    };
    let leaves = leaves(&merged);
    // Empty tags of guessed hints go with them: the template's default
    // (appVersion, `v` + appVersion) is then the `or` default, so the hint
    // names the tag's value path too.
    let empty_tags = leaves.iter().filter(|c| {
        c.value.is_empty()
            && hint_paths.contains(&c.path)
            && matches!(c.path.last().map(String::as_str), Some("tag" | "version"))
    });
    let (likely, others): (Vec<Candidate>, Vec<Candidate>) = leaves
        .iter()
        .filter(|c| !c.value.is_empty() && c.value.len() >= 2)
        .filter(|c| !c.number || image_like_key(&c.path))
        .filter(|c| sites.iter().any(|s| s.image.contains(&c.value)))
        .cloned()
        .partition(|c| {
            hint_paths.contains(&c.path) || image_like_path(&c.path) || c.value.contains('/')
        });
    let likely: Vec<Candidate> = likely.into_iter().chain(empty_tags.cloned()).collect();
    let found = perturb(&renderer, &likely, &sites, &mut renders);
    merge_spans(&mut spans, found);
    if needs(&spans) {
        let found = perturb(&renderer, &others, &sites, &mut renders);
        merge_spans(&mut spans, found);
    }

    // Round 2: who else sets the registry where round 1 left it literal.
    if needs(&spans) {
        let empties: Vec<Candidate> = leaves
            .iter()
            .filter(|c| c.value.is_empty() && image_like_key(&c.path))
            .cloned()
            .chain(usual_globals(&merged))
            .collect();
        let (globals, others): (Vec<Candidate>, Vec<Candidate>) = empties
            .into_iter()
            .partition(|c| c.path.first().map(String::as_str) == Some("global"));
        let (mut r_g, mut r_o) = (0, 0);
        let (found_g, found_o) = std::thread::scope(|s| {
            let g = s.spawn(|| perturb(&renderer, &globals, &sites, &mut r_g));
            let o = perturb(&renderer, &others, &sites, &mut r_o);
            (g.join().unwrap_or_default(), o)
        });
        renders += r_g + r_o;
        // Globals first: a later span overlapping an earlier one is dropped.
        merge_spans(&mut spans, found_g);
        merge_spans(&mut spans, found_o);
    }

    let other = kube_dependent(&renderer, &sites, &spans, &mut renders);
    let sites = sites
        .into_iter()
        .zip(spans)
        .zip(other)
        .map(|((site, spans), other_kube_version)| {
            let template = template_of(&site.image, &spans);
            SiteControl {
                site,
                template,
                other_kube_version,
                inconclusive: spans.is_empty(),
            }
        })
        .collect();
    let learned = Learned { sites, renders };
    super::learn_cache::store(&renderer.cache_key, &learned);
    Ok(learned)
}

/// Sites whose tag no value prints may take it from the cluster version
/// (`kubectl:{{ .Capabilities.KubeVersion.Minor }}`): render once more for
/// another version and report those that change.
fn kube_dependent(
    renderer: &Renderer,
    sites: &[ImageSite],
    spans: &[Vec<Span>],
    renders: &mut usize,
) -> Vec<Option<(String, String)>> {
    let mut out = vec![None; sites.len()];
    let literal_tag = |i: usize| {
        let (name_end, _) = hints::name_and_tag_end(&sites[i].image);
        name_end < sites[i].image.len() && !spans[i].iter().any(|s| s.end > name_end)
    };
    if !(0..sites.len()).any(|i| !sites[i].test_hook && literal_tag(i)) {
        return out;
    }
    let other = match renderer.release.kube_version.as_deref() {
        Some("1.99.0") => "1.98.0",
        _ => "1.99.0",
    };
    *renders += 1;
    let Ok(text) = renderer.render_for(&[], Some(other)) else {
        return out;
    };
    let by_key: BTreeMap<String, String> = image_sites(&text)
        .into_iter()
        .map(|s| (s.key, s.image))
        .collect();
    for (i, s) in sites.iter().enumerate() {
        match by_key.get(&s.key) {
            Some(img) if literal_tag(i) && *img != s.image => {
                out[i] = Some((other.to_string(), img.clone()));
            }
            _ => {}
        }
    }
    out
}

/// A part of a site's text that a value prints: `[start, end)` of the
/// text at default values, the value path, and the default the template
/// falls back to (for values that are empty at default).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Span {
    start: usize,
    end: usize,
    path: Vec<String>,
    default: Option<String>,
}

fn merge_spans(spans: &mut [Vec<Span>], found: Vec<(usize, Span)>) {
    for (i, s) in found {
        if !spans[i]
            .iter()
            .any(|o| o.start < s.end && s.start < o.end || *o == s)
        {
            spans[i].push(s);
        }
    }
}

/// The hint template of a site from its spans; `None` when no span covers
/// the start of the name (the registry is literal, so no value relocates
/// the image).
fn template_of(text: &str, spans: &[Span]) -> Option<String> {
    if !spans.iter().any(|s| s.start == 0) {
        return None;
    }
    let mut spans = spans.to_vec();
    spans.sort_by_key(|s| s.start);
    let mut out = String::new();
    let mut pos = 0;
    for s in &spans {
        out.push_str(&text[pos..s.start]);
        match &s.default {
            None => out.push_str(&format!("{{{{ .{} }}}}", s.path.join("."))),
            Some(d) => out.push_str(&format!(
                "{{{{ or .{} {} }}}}",
                s.path.join("."),
                serde_json::to_string(d).unwrap_or_default()
            )),
        }
        pos = s.end;
    }
    out.push_str(&text[pos..]);
    Some(out)
}

/// Set each candidate to its own sentinel in one render (halving the batch
/// when it does not render) and return the spans found, per site index.
/// A candidate with a value must print as that value; an empty one
/// stands for whatever the template printed in its place.
fn perturb(
    renderer: &Renderer,
    cands: &[Candidate],
    sites: &[ImageSite],
    renders: &mut usize,
) -> Vec<(usize, Span)> {
    if cands.is_empty() {
        return Vec::new();
    }
    let sets: Vec<(String, String)> = cands
        .iter()
        .enumerate()
        .map(|(i, c)| (c.set_path.clone(), sentinel(i, c)))
        .collect();
    *renders += 1;
    let text = match renderer.render(&sets) {
        Ok(t) => t,
        Err(e) => {
            if cands.len() == 1 {
                tracing::debug!("perturbing {} does not render: {e:#}", cands[0].set_path);
                return Vec::new();
            }
            let (a, b) = cands.split_at(cands.len() / 2);
            let mut out = perturb(renderer, a, sites, renders);
            out.extend(perturb(renderer, b, sites, renders));
            return out;
        }
    };
    let by_key: BTreeMap<&str, usize> = sites
        .iter()
        .enumerate()
        .map(|(i, s)| (s.key.as_str(), i))
        .collect();
    let perturbed = image_sites_loose(&text);
    tracing::debug!(
        "perturbed {} values, {} image sites show a sentinel",
        cands.len(),
        perturbed
            .iter()
            .filter(|s| s.image.contains("x.snt"))
            .count()
    );
    let mut out = Vec::new();
    for p in perturbed {
        let Some(&i) = by_key.get(p.key.as_str()) else {
            continue;
        };
        if !p.image.contains(".snt") {
            continue;
        }
        let pieces = split_sentinels(&p.image, cands.len());
        for span in align(&sites[i].image, &pieces, cands) {
            out.push((i, span));
        }
    }
    out
}

/// Image sites of a perturbed render, in the documents a sentinel reached.
fn image_sites_loose(text: &str) -> Vec<ImageSite> {
    super::find_images::image_sites_where(text, |d| d.contains("x.snt"))
}

/// `zs{i}x.snt`: a valid registry host, path component and tag, and no
/// sentinel is a substring of another. For tags and versions,
/// `9.9.{i}-zs{i}x.snt`: also a semantic version, for the charts that
/// `semverCompare` their image tag.
fn sentinel(i: usize, c: &Candidate) -> String {
    let key = c
        .path
        .last()
        .map(|k| k.to_ascii_lowercase())
        .unwrap_or_default();
    let v = c.value.trim_start_matches('v');
    let versionish = key.contains("tag")
        || key.contains("version")
        || (v.split('.').count() >= 2
            && v.split('.')
                .next()
                .is_some_and(|m| !m.is_empty() && m.chars().all(|c| c.is_ascii_digit())));
    if versionish {
        format!("9.9.{i}-zs{i}x.snt")
    } else {
        format!("zs{i}x.snt")
    }
}

/// A perturbed text as literal pieces and sentinel indexes.
#[derive(Debug)]
enum Piece {
    Lit(String),
    Sent(usize),
}

fn split_sentinels(s: &str, n: usize) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut rest = s;
    'outer: while !rest.is_empty() {
        let mut best: Option<(usize, usize, usize)> = None;
        let mut from = 0;
        while let Some(p) = rest[from..].find("zs") {
            let at = from + p;
            let tail = &rest[at + 2..];
            let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
            if !digits.is_empty() && tail[digits.len()..].starts_with("x.snt") {
                if let Ok(i) = digits.parse::<usize>() {
                    if i < n {
                        let semver = format!("9.9.{i}-");
                        let start = if rest[..at].ends_with(&semver) {
                            at - semver.len()
                        } else {
                            at
                        };
                        best = Some((start, at + 2 + digits.len() + 5, i));
                        break;
                    }
                }
            }
            from = at + 2;
        }
        match best {
            Some((a, b, i)) => {
                if a > 0 {
                    out.push(Piece::Lit(rest[..a].to_string()));
                }
                out.push(Piece::Sent(i));
                rest = &rest[b..];
            }
            None => {
                out.push(Piece::Lit(rest.to_string()));
                break 'outer;
            }
        }
    }
    out
}

/// Match the pieces of a perturbed text against the site's text at
/// default values: literal pieces must appear as they are; each sentinel
/// stands for the text between them: the value itself when it has one,
/// else the default the template printed in its place.
fn align(base: &str, pieces: &[Piece], cands: &[Candidate]) -> Vec<Span> {
    fn go(
        base: &str,
        pieces: &[Piece],
        cands: &[Candidate],
        pos: usize,
        acc: &mut Vec<Span>,
        steps: &mut usize,
    ) -> bool {
        *steps += 1;
        if *steps > 10_000 {
            return false;
        }
        let Some((first, rest)) = pieces.split_first() else {
            return pos == base.len();
        };
        match first {
            Piece::Lit(l) => {
                base[pos..].starts_with(l.as_str())
                    && go(base, rest, cands, pos + l.len(), acc, steps)
            }
            Piece::Sent(i) => {
                let c = &cands[*i];
                let exact = !c.value.is_empty();
                let ends: Vec<usize> = if exact {
                    if base[pos..].starts_with(c.value.as_str()) {
                        vec![pos + c.value.len()]
                    } else {
                        vec![]
                    }
                } else {
                    (pos..=base.len())
                        .filter(|e| base.is_char_boundary(*e))
                        .collect()
                };
                for e in ends {
                    acc.push(Span {
                        start: pos,
                        end: e,
                        path: c.path.clone(),
                        default: (!exact).then(|| base[pos..e].to_string()),
                    });
                    if go(base, rest, cands, e, acc, steps) {
                        return true;
                    }
                    acc.pop();
                }
                false
            }
        }
    }
    let mut acc = Vec::new();
    let mut steps = 0;
    if go(base, pieces, cands, 0, &mut acc, &mut steps) {
        // An empty default that printed nothing cannot be relocated into.
        acc.retain(|s| s.end > s.start);
        acc
    } else {
        Vec::new()
    }
}

/// Every scalar leaf of the merged values that a `--set` can reach (a
/// subchart's copy of `global` is the parent's `global`, so skipped).
fn leaves(merged: &MergedValues) -> Vec<Candidate> {
    fn walk(merged: &MergedValues, v: &Value, path: &mut Vec<String>, out: &mut Vec<Candidate>) {
        match v {
            Value::Mapping(m) => {
                for (k, c) in m {
                    let Some(k) = k.as_str() else { continue };
                    if !k
                        .chars()
                        .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
                    {
                        continue;
                    }
                    if k == "global" && !path.is_empty() && merged.is_subchart(path) {
                        continue;
                    }
                    path.push(k.to_string());
                    walk(merged, c, path, out);
                    path.pop();
                }
            }
            Value::Sequence(s) => {
                for (i, c) in s.iter().enumerate().take(50) {
                    path.push(i.to_string());
                    walk(merged, c, path, out);
                    path.pop();
                }
            }
            Value::Bool(_) => {}
            Value::Tagged(t) => walk(merged, &t.value, path, out),
            other => {
                let value = hints::scalar_string(other).unwrap_or_default();
                if value.contains(char::is_whitespace) || value.len() > 300 {
                    return;
                }
                out.push(Candidate {
                    path: path.clone(),
                    set_path: set_path(merged, path),
                    value,
                    number: matches!(other, Value::Number(_)),
                });
            }
        }
    }
    let mut out = Vec::new();
    walk(merged, &merged.values, &mut Vec::new(), &mut out);
    out
}

/// `a.b[0].c` for `--set`: list indexes in brackets.
fn set_path(merged: &MergedValues, path: &[String]) -> String {
    let mut s = String::new();
    for (i, k) in path.iter().enumerate() {
        let in_list = matches!(
            hints::lookup(&merged.values, &path[..i]),
            Some(Value::Sequence(_))
        );
        if in_list {
            s.push_str(&format!("[{k}]"));
        } else {
            if i > 0 {
                s.push('.');
            }
            s.push_str(k);
        }
    }
    s
}

/// A value under an image-like key anywhere on its path
/// (`operator.image.tag`, `global.hub`, `csi.cephcsi.repository`).
fn image_like_path(path: &[String]) -> bool {
    path.iter().any(|k| {
        let k = k.to_ascii_lowercase();
        [
            "image", "registry", "repo", "hub", "tag", "version", "digest",
        ]
        .iter()
        .any(|w| k.contains(w))
    })
}

/// Keys that name a part of an image.
fn image_like_key(path: &[String]) -> bool {
    let Some(k) = path.last() else { return false };
    let k = k.to_ascii_lowercase();
    [
        "registry", "repo", "image", "hub", "name", "override", "prefix", "tag", "version",
    ]
    .iter()
    .any(|w| k.contains(w))
}

/// Global registry keys charts commonly read, when the chart's values do
/// not set them (a template may still read them).
fn usual_globals(merged: &MergedValues) -> Vec<Candidate> {
    let mut out = Vec::new();
    for p in [
        "global.imageRegistry",
        "global.registry",
        "global.image.registry",
        "global.hub",
    ] {
        let path: Vec<String> = p.split('.').map(String::from).collect();
        // Only where the path can be set (no scalar on the way).
        let mut ok = true;
        for i in 1..path.len() {
            match hints::lookup(&merged.values, &path[..i]) {
                None | Some(Value::Mapping(_)) | Some(Value::Null) => {}
                _ => ok = false,
            }
        }
        if ok && hints::lookup(&merged.values, &path).is_none() {
            out.push(Candidate {
                set_path: p.to_string(),
                path,
                value: String::new(),
                number: false,
            });
        }
    }
    out
}

/// Boolean values a chart family uses to refuse substituted images
/// (`global.security.allowInsecureImages`): set to `true` in every
/// perturbed render and in the relocated values.
pub fn guard_paths(merged: &MergedValues) -> Vec<Vec<String>> {
    let mut out = BTreeSet::new();
    fn walk(v: &Value, path: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
        if let Value::Mapping(m) = v {
            for (k, c) in m {
                let Some(k) = k.as_str() else { continue };
                path.push(k.to_string());
                if matches!(c, Value::Bool(false)) && is_guard_key(k) {
                    out.insert(path.clone());
                }
                walk(c, path, out);
                path.pop();
            }
        }
    }
    if let Some(g) = hints::lookup(&merged.values, &["global".to_string()]) {
        walk(g, &mut vec!["global".to_string()], &mut out);
    }
    out.into_iter().collect()
}

/// `allowInsecureImages` and its kin.
pub fn is_guard_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    k.starts_with("allow")
        && k.contains("image")
        && (k.contains("insecure") || k.contains("unsupported") || k.contains("custom"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(path: &str, value: &str) -> Candidate {
        Candidate {
            path: path.split('.').map(String::from).collect(),
            set_path: path.into(),
            value: value.into(),
            number: false,
        }
    }

    #[test]
    fn sentinels_align_with_the_values_they_replaced() {
        let cands = vec![
            cand("global.registry", "ghcr.io/dapr"),
            cand("op.image.name", "operator"),
            cand("global.tag", "1.18.3"),
        ];
        let p = split_sentinels("zs0x.snt/zs1x.snt:9.9.2-zs2x.snt", 3);
        let spans = align("ghcr.io/dapr/operator:1.18.3", &p, &cands);
        assert_eq!(
            template_of("ghcr.io/dapr/operator:1.18.3", &spans).unwrap(),
            "{{ .global.registry }}/{{ .op.image.name }}:{{ .global.tag }}"
        );
        // A value the template does not print as it is does not align.
        let p = split_sentinels("zs0x.snt/zs1x.snt:zs2x.snt", 3);
        assert!(align("ghcr.io/dapr/other:1.18.3", &p, &cands).is_empty());
    }

    #[test]
    fn null_values_carry_the_template_default() {
        let cands = vec![cand("image.registry", "")];
        let p = split_sentinels("zs0x.snt/bitnami/nginx:1.0", 1);
        let spans = align("docker.io/bitnami/nginx:1.0", &p, &cands);
        assert_eq!(
            template_of("docker.io/bitnami/nginx:1.0", &spans).unwrap(),
            "{{ or .image.registry \"docker.io\" }}/bitnami/nginx:1.0"
        );
        // Literal registry: not controlled.
        assert_eq!(template_of("docker.io/x:1", &[]), None);
    }

    #[test]
    fn guard_keys() {
        assert!(is_guard_key("allowInsecureImages"));
        assert!(!is_guard_key("allowPrivilegeEscalation"));
    }
}
