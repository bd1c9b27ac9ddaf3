//! Proof that relocation worked: render the chart with the real `helm
//! template` and look at every image the manifests name.
//!
//! Hints and discovery are heuristics over values; what the cluster will
//! pull is what the templates print. So after relocating a chart, both in
//! `pack` (a trial relocation to a probe registry, checked against the
//! images the bundle carries) and in `sync` (the chart as published,
//! checked against the target registry), the chart is rendered at its
//! default values plus the manifest's release name and namespace, and every
//! image is collected: the containers, initContainers and ephemeral
//! containers of workloads, and any `image:` field of any other kind (CRs
//! such as Prometheus or Alertmanager name images that way). An image that
//! is not where it must be is a miss, reported with the values path it most
//! likely came from. Without helm the check is skipped, and said so.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use serde_yaml_ng::Value;

use super::hints::{Hints, MergedValues};
use super::Chart;
use crate::bundle::format::ReleaseInfo;
use crate::oci::reference::RewriteRules;
use crate::oci::Reference;

/// The registry a trial relocation in `pack` points images at. `.invalid`
/// never resolves, so nothing can be pulled from it by accident.
pub const PROBE_REGISTRY: &str = "relocation-check.bundler.invalid";

/// One image of rendered manifests (see [`super::find_images`]).
pub type RenderedImage = super::find_images::ImageSite;

/// The images of `helm template` output.
#[derive(Clone, Debug, Default)]
pub struct RenderedManifests {
    pub items: Vec<RenderedImage>,
    /// The output itself (what learning compares perturbed renders with).
    pub text: String,
}

impl RenderedManifests {
    /// Collect images from a multi-document YAML stream: `image:` fields,
    /// `{repository, tag}` maps, and references in args, env and config.
    pub fn parse(text: &str) -> Self {
        RenderedManifests {
            items: super::find_images::image_sites(text),
            text: text.to_string(),
        }
    }

    /// The images, parsed, each once (unparsable texts are kept out).
    pub fn images(&self) -> Vec<Reference> {
        let mut out: Vec<Reference> = Vec::new();
        for i in &self.items {
            if let Ok(r) = Reference::parse(&i.image) {
                if !out.contains(&r) {
                    out.push(r);
                }
            }
        }
        out
    }
}

/// `helm template RELEASE CHART.tgz [--namespace NS]`.
pub fn render_tgz(
    tgz: &[u8],
    file_name: &str,
    helm: &Path,
    release: &ReleaseDefaults,
) -> anyhow::Result<RenderedManifests> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let path = dir.path().join(file_name);
    std::fs::write(&path, tgz).with_context(|| format!("writing {}", path.display()))?;
    let mut cmd = std::process::Command::new(helm);
    cmd.arg("template")
        .arg(release.name.as_deref().unwrap_or("release"))
        .arg(&path);
    if let Some(ns) = &release.namespace {
        cmd.arg("--namespace").arg(ns);
    }
    if let Some(kv) = &release.kube_version {
        cmd.arg("--kube-version").arg(kv);
    }
    let out = cmd
        .output()
        .with_context(|| format!("running {} template", helm.display()))?;
    if !out.status.success() {
        anyhow::bail!(
            "helm template failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    // helm expands the chart's own YAML aliases; bound what we read back.
    crate::yaml_bounds::check(&text).context("the output of helm template")?;
    Ok(RenderedManifests::parse(&text))
}

/// Render a chart as it would be packaged.
pub fn render_chart(
    chart: &Chart,
    helm: &Path,
    release: &ReleaseDefaults,
) -> anyhow::Result<RenderedManifests> {
    let tgz = super::package::package_tgz(chart)?;
    render_tgz(&tgz, &super::package::archive_name(chart), helm, release)
}

/// Release name and namespace to render with (the manifest's release).
#[derive(Clone, Debug, Default)]
pub struct ReleaseDefaults {
    pub name: Option<String>,
    pub namespace: Option<String>,
    /// `--kube-version` for `helm template` (`.Capabilities.KubeVersion`).
    pub kube_version: Option<String>,
}

impl From<Option<&ReleaseInfo>> for ReleaseDefaults {
    fn from(r: Option<&ReleaseInfo>) -> Self {
        ReleaseDefaults {
            name: r.map(|r| r.name.clone()),
            namespace: r.and_then(|r| r.namespace.clone()),
            kube_version: None,
        }
    }
}

/// An image the relocated chart renders that is not where it must be.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Miss {
    pub chart: String,
    pub image: String,
    pub location: String,
    /// Values paths whose value is (part of) this image.
    pub values_paths: Vec<String>,
    pub reason: String,
}

impl std::fmt::Display for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "chart {}: {} ({}): {}",
            self.chart, self.image, self.location, self.reason
        )?;
        if !self.values_paths.is_empty() {
            write!(f, " [values: {}]", self.values_paths.join(", "))?;
        }
        Ok(())
    }
}

/// The outcome of one chart's check.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Proof {
    pub chart: String,
    /// Why the check was not done (no helm; the chart does not render).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    /// Image fields rendered.
    pub rendered: usize,
    /// Of those, relocated and present.
    pub relocated: usize,
    pub misses: Vec<Miss>,
    /// Unrelocated images of `helm.sh/hook: test` resources: install and
    /// upgrade do not deploy them, so they are reported, never refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Miss>,
}

impl Proof {
    fn skipped(chart: &Chart, why: String) -> Self {
        Proof {
            chart: chart_label(chart),
            skipped: Some(why),
            ..Default::default()
        }
    }

    /// Count one rendered image: relocated when `reason` is `None`, else a
    /// miss (pack and sync judge differently, and record the same way).
    fn record(&mut self, merged: &MergedValues, item: &RenderedImage, reason: Option<String>) {
        let Some(reason) = reason else {
            self.relocated += 1;
            return;
        };
        let miss = Miss {
            chart: self.chart.clone(),
            image: item.image.clone(),
            location: if item.source.is_empty() {
                item.location.clone()
            } else {
                format!("{}, {} in {}", item.location, item.kind, item.source)
            },
            values_paths: values_paths_for(merged, &item.image),
            reason,
        };
        if item.test_hook {
            self.warnings.push(Miss {
                reason: format!(
                    "{} (a helm.sh/hook: test resource: install and upgrade do not deploy it, so this is only a warning)",
                    miss.reason
                ),
                ..miss
            });
        } else {
            self.misses.push(miss);
        }
    }

    /// One line for the user.
    pub fn summary(&self) -> String {
        match &self.skipped {
            Some(why) => format!("chart {}: relocation check skipped: {why}", self.chart),
            None => {
                let mut line = format!(
                    "chart {}: relocation check: {} images rendered, {} relocated, {} missed",
                    self.chart,
                    self.rendered,
                    self.relocated,
                    self.misses.len()
                );
                if !self.warnings.is_empty() {
                    line.push_str(&format!(
                        ", {} in test hooks not relocated (warning)",
                        self.warnings.len()
                    ));
                }
                line
            }
        }
    }
}

fn chart_label(chart: &Chart) -> String {
    format!("{} {}", chart.name, chart.version)
}

/// `helm` from a flag, `$BUNDLER_HELM`, or `PATH`.
pub fn find_helm(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = flag {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("BUNDLER_HELM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("helm"))
        .find(|p| p.is_file())
}

/// The pack-side check: relocate a copy of `chart` to [`PROBE_REGISTRY`]
/// with `hints`, render it, and require every rendered image to be under
/// the probe registry and to be one of `carried` (the bundle's images).
/// `original` is the render of the chart as fetched: when it failed, the
/// chart does not render at default values and the check is skipped.
pub fn prove_pack(
    chart: &Chart,
    hints: &Hints,
    carried: &[Reference],
    helm: Option<&Path>,
    original: Option<&anyhow::Result<RenderedManifests>>,
    release: &ReleaseDefaults,
) -> anyhow::Result<Proof> {
    let Some(helm) = helm else {
        return Ok(Proof::skipped(
            chart,
            "helm was not found (give --helm or put helm on PATH)".into(),
        ));
    };
    match original {
        Some(Err(e)) => {
            return Ok(Proof::skipped(
                chart,
                format!("the chart does not render at its default values: {e:#}"),
            ))
        }
        None => return Ok(Proof::skipped(chart, "the chart was not rendered".into())),
        Some(Ok(_)) => {}
    }
    let mut trial = chart.clone();
    let rules = RewriteRules {
        prefix_registry: Some(PROBE_REGISTRY.into()),
        ..Default::default()
    };
    super::relocate::relocate(&mut trial, hints, &rules, &HashMap::new(), None)
        .with_context(|| format!("relocating chart {} (trial)", chart_label(chart)))?;
    let rendered = render_chart(&trial, helm, release).with_context(|| {
        format!(
            "chart {} renders at default values, but not once relocated",
            chart_label(chart)
        )
    })?;
    let merged = MergedValues::of(chart)?;
    let mut proof = Proof {
        chart: chart_label(chart),
        rendered: rendered.items.len(),
        ..Default::default()
    };
    // What each carried image becomes under the probe rules.
    let expected: Vec<Reference> = carried
        .iter()
        .filter_map(|c| {
            rules.rewrite(c).ok().map(|rw| {
                let mut t = rw.target;
                t.digest = c.digest.clone();
                t
            })
        })
        .collect();
    let prefix = format!("{PROBE_REGISTRY}/");
    for item in &rendered.items {
        let reason = if !item.image.starts_with(&prefix) {
            Some(
                "not relocated: no hint covers it, so the site would pull it from its public registry"
                    .to_string(),
            )
        } else {
            match Reference::parse(&item.image) {
                Ok(r) if expected.iter().any(|c| carries(c, &r)) => None,
                Ok(_) => Some(
                    "relocated, but the bundle does not carry this image (add it to the chart's images)"
                        .to_string(),
                ),
                Err(e) => Some(format!("relocated to something that is not a reference: {e:#}")),
            }
        };
        proof.record(&merged, item, reason);
    }
    Ok(proof)
}

/// Whether the bundle image `c` serves the rendered image `r`.
fn carries(c: &Reference, r: &Reference) -> bool {
    if c.registry != r.registry || c.repository != r.repository {
        return false;
    }
    match (&r.digest, &c.digest) {
        (Some(rd), Some(cd)) => rd == cd,
        _ => r.tag_or_latest() == c.tag_or_latest() || (r.tag.is_none() && r.digest.is_some()),
    }
}

/// The sync-side check: render the chart as published (`tgz`) and require
/// every rendered image to name `target` (the target registry, with its
/// path prefix if any) and to exist there.
pub async fn prove_synced(
    chart: &Chart,
    tgz: &[u8],
    release: &ReleaseDefaults,
    target: &str,
    client: &crate::oci::registry::RegistryClient,
) -> anyhow::Result<Proof> {
    let Some(helm) = find_helm(None) else {
        return Ok(Proof::skipped(
            chart,
            "helm was not found (set BUNDLER_HELM or put helm on PATH)".into(),
        ));
    };
    let rendered = match render_tgz(tgz, &super::package::archive_name(chart), &helm, release) {
        Ok(r) => r,
        Err(e) => {
            return Ok(Proof::skipped(
                chart,
                format!("the relocated chart does not render at its default values: {e:#}"),
            ))
        }
    };
    let merged = MergedValues::of(chart)?;
    let mut proof = Proof {
        chart: chart_label(chart),
        rendered: rendered.items.len(),
        ..Default::default()
    };
    let target = target.trim_end_matches('/');
    let mut exists: HashMap<String, Result<(), String>> = HashMap::new();
    for item in &rendered.items {
        let reason = match Reference::parse(&item.image) {
            Err(e) => Some(format!("not an image reference: {e:#}")),
            Ok(r)
                if !format!("{}/{}", r.registry, r.repository)
                    .starts_with(&format!("{target}/")) =>
            {
                Some(format!(
                    "not relocated: it does not name the target registry {target}"
                ))
            }
            Ok(r) => {
                let key = r.to_string();
                if !exists.contains_key(&key) {
                    let found = client
                        .head_manifest(&r.registry, &r.repository, &r.manifest_reference())
                        .await;
                    exists.insert(
                        key.clone(),
                        match found {
                            Ok(Some(_)) => Ok(()),
                            Ok(None) => {
                                Err("relocated, but the target registry does not have it".into())
                            }
                            Err(e) => Err(format!(
                                "relocated, but checking the target registry failed: {e:#}"
                            )),
                        },
                    );
                }
                exists[&key].clone().err()
            }
        };
        proof.record(&merged, item, reason);
    }
    Ok(proof)
}

/// Check every chart about to be published, after its images were pushed:
/// one line per chart; the misses of all (see [`refuse_misses`]).
pub async fn prove_all_synced(
    charts: &[(&Chart, &[u8], ReleaseDefaults)],
    target: &str,
    client: &crate::oci::registry::RegistryClient,
    progress: &crate::progress::Progress,
) -> anyhow::Result<Vec<Miss>> {
    let mut misses = Vec::new();
    for (chart, tgz, release) in charts {
        let proof = prove_synced(chart, tgz, release, target, client).await?;
        if proof.skipped.is_some() {
            eprintln!("warning: {}", proof.summary());
        } else {
            progress.println(proof.summary());
        }
        for m in &proof.misses {
            progress.println(format!("  missed: {m}"));
        }
        for w in &proof.warnings {
            eprintln!("warning: {w}");
        }
        misses.extend(proof.misses);
    }
    Ok(misses)
}

/// Any miss fails the run (exit 1) unless `allow` (`--allow-unrelocated`).
pub fn refuse_misses(misses: &[Miss], allow: bool, what: &str) -> anyhow::Result<()> {
    if misses.is_empty() || allow {
        return Ok(());
    }
    Err(unrelocated_error(misses).context(what.to_string()))
}

/// The error for misses (exit 1).
pub fn unrelocated_error(misses: &[Miss]) -> anyhow::Error {
    let mut msg = format!("{} rendered image(s) are not relocated:\n", misses.len());
    for m in misses {
        msg.push_str(&format!("  {m}\n"));
    }
    msg.push_str(
        "give the chart a hints file (or list the images in the manifest) so every image is relocated, \
         or pass --allow-unrelocated to accept it",
    );
    anyhow::anyhow!(msg)
}

/// Values paths (in the chart's merged values) whose string value is this
/// image, its name, or a part of its repository: where a miss most likely
/// comes from.
pub fn values_paths_for(merged: &MergedValues, image: &str) -> Vec<String> {
    let Ok(r) = Reference::parse(image) else {
        return Vec::new();
    };
    let name = format!("{}/{}", r.registry, r.repository);
    let mut out = Vec::new();
    fn walk(v: &Value, path: &mut Vec<String>, f: &dyn Fn(&str) -> bool, out: &mut Vec<String>) {
        match v {
            Value::Mapping(m) => {
                for (k, c) in m {
                    if let Some(k) = k.as_str() {
                        path.push(k.to_string());
                        walk(c, path, f, out);
                        path.pop();
                    }
                }
            }
            Value::Sequence(s) => {
                for (i, c) in s.iter().enumerate() {
                    path.push(i.to_string());
                    walk(c, path, f, out);
                    path.pop();
                }
            }
            Value::String(s) if f(s) && out.len() < 5 => out.push(path.join(".")),
            _ => {}
        }
    }
    let matches = |s: &str| -> bool {
        if s.is_empty() || s.contains(char::is_whitespace) {
            return false;
        }
        if s == image {
            return true;
        }
        if let Ok(p) = Reference::parse(s) {
            if format!("{}/{}", p.registry, p.repository) == name && s.contains('/') {
                return true;
            }
        }
        s.contains('/') && (name.ends_with(&format!("/{s}")) || r.repository == s)
    };
    walk(&merged.values, &mut Vec::new(), &matches, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_of_workloads_and_other_kinds() {
        let text = "---\n# Source: x\nkind: CronJob\nmetadata: {name: c}\nspec:\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          initContainers:\n            - image: busybox:1\n          containers:\n            - image: \"a/b:2\"\n---\nkind: Prometheus\nmetadata: {name: p}\nspec:\n  image: quay.io/prometheus/prometheus:v2\n---\nkind: ConfigMap\nmetadata: {name: m}\ndata:\n  x: \"image: not/this:1\"\n";
        let r = RenderedManifests::parse(text);
        let got: Vec<(String, String)> = r
            .items
            .iter()
            .map(|i| (i.image.clone(), i.location.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("busybox:1".into(), "CronJob/c initContainers[0]".into()),
                ("a/b:2".into(), "CronJob/c containers[0]".into()),
                (
                    "quay.io/prometheus/prometheus:v2".into(),
                    "Prometheus/p spec.image".into()
                ),
            ]
        );
    }

    #[test]
    fn values_paths_of_a_miss() {
        let c = Chart::from_files(vec![
            ("Chart.yaml".into(), b"name: c\nversion: 1.0.0\n".to_vec()),
            (
                "values.yaml".into(),
                b"test:\n  image:\n    registry: docker.io\n    repository: bats/bats\n    tag: v1\nother: bats\n"
                    .to_vec(),
            ),
        ])
        .unwrap();
        let m = MergedValues::of(&c).unwrap();
        assert_eq!(
            values_paths_for(&m, "docker.io/bats/bats:v1"),
            vec!["test.image.repository"]
        );
    }
}
