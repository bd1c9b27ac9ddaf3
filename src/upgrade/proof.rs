//! The proof after helm says done: what the release actually holds.
//!
//! `helm upgrade` succeeding says the manifests were applied and (with
//! `--wait`) became ready; it says nothing about *which* images run. A
//! stale pinned value, a template that hard-codes an image, or a value of
//! this run can all leave the site on images the package does not carry.
//! So after each upgrade the release's manifest (`helm get manifest` and
//! `helm get hooks`, what helm applied) is read, every image of every workload and every `image`
//! field of custom resources is taken, and each must be an image the
//! bundle carries for this chart version, present in the target registry
//! with the digest the bundle recorded. `status` runs the same check any
//! time later.
use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

use super::helm::Helm;
use super::plan::strings;
use crate::carried::CarriedImage;
use crate::chart::hints;
use crate::chart::render_check::RenderedManifests;
use crate::oci::auth::CredentialStore;
use crate::oci::reference::Reference;
use crate::oci::registry::{ClientOptions, RegistryClient};

/// One image the release runs, and what the check found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageCheck {
    pub image: String,
    /// Where in the manifest (`Deployment/skoala-ui containers[0]`, every place).
    pub locations: Vec<String>,
    /// `ok`; `pinned` (kept by `--keep-pinned-images`, present); `present`
    /// (no record of what the package carries: presence only); `forced`
    /// (absent or unchecked, let through by `--force`);
    /// `not-carried`, `digest-mismatch`, `missing`, `unchecked`: failures.
    pub result: String,
    /// The digest the package recorded for this image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expected_digest: Option<String>,
    /// The digest the registry serves for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_digest: Option<String>,
    /// The values that put it there, or why none did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl ImageCheck {
    pub fn passed(&self) -> bool {
        matches!(self.result.as_str(), "ok" | "pinned" | "present" | "forced")
    }

    /// One line for people.
    pub fn line(&self) -> String {
        let mut s = format!(
            "  {:<15} {} ({})",
            self.result,
            self.image,
            self.locations.join(", ")
        );
        if let Some(d) = &self.detail {
            s.push_str(&format!(": {d}"));
        }
        if !self.passed() {
            if let Some(v) = &self.from_value {
                s.push_str(&format!("; put there by {v}"));
            }
        }
        s
    }
}

/// What the check compares against.
pub struct Expectation<'a> {
    /// What the package carries for this chart version (`None`: not recorded).
    pub carried: Option<&'a [CarriedImage]>,
    /// Images that `--keep-pinned-images` let through (rendered in the pre-flight).
    pub pinned_ok: &'a [String],
    /// Images `--force` let through absent or unchecked.
    pub forced: &'a [String],
}

/// Registry access for the digest checks.
pub struct RegistryAccess {
    pub insecure: bool,
    pub ca_file: Option<std::path::PathBuf>,
    pub store: CredentialStore,
}

/// `helm get manifest` and `hooks`, `helm get values` (user) and `--all` of a release.
pub struct ReleaseState {
    pub manifest: String,
    pub user_values: Value,
    pub all_values: Value,
}

pub async fn read_release(helm: &Helm, release: &str, ns: &str) -> anyhow::Result<ReleaseState> {
    let mut manifest = helm
        .query_ok(&helm.on_cluster(strings(&["get", "manifest", release, "-n", ns])))
        .await?;
    // hooks (a pre-install Job that migrates a database) run images too
    let hooks = helm
        .query_ok(&helm.on_cluster(strings(&["get", "hooks", release, "-n", ns])))
        .await?;
    if !hooks.trim().is_empty() {
        manifest.push_str("\n---\n");
        manifest.push_str(&hooks);
    }
    let user = helm
        .query_ok(&helm.on_cluster(strings(&["get", "values", release, "-n", ns, "-o", "yaml"])))
        .await?;
    let all = helm
        .query_ok(&helm.on_cluster(strings(&[
            "get", "values", release, "-n", ns, "--all", "-o", "yaml",
        ])))
        .await?;
    Ok(ReleaseState {
        manifest,
        user_values: super::values::parse_values(&user, "`helm get values` output")?,
        all_values: super::values::parse_values(&all, "`helm get values --all` output")?,
    })
}

/// Check every image of `state.manifest` against `expect` and the registry.
pub async fn check(
    state: &ReleaseState,
    expect: &Expectation<'_>,
    access: &RegistryAccess,
) -> anyhow::Result<Vec<ImageCheck>> {
    let rendered = RenderedManifests::parse(&state.manifest);
    // each image once, with every place it appears
    let mut by_image: Vec<(String, Vec<String>)> = Vec::new();
    for it in &rendered.items {
        match by_image.iter_mut().find(|(i, _)| *i == it.image) {
            Some((_, locs)) => locs.push(it.location.clone()),
            None => by_image.push((it.image.clone(), vec![it.location.clone()])),
        }
    }
    let client = RegistryClient::new(
        ClientOptions {
            insecure: access.insecure,
            ca_file: access.ca_file.clone(),
            max_attempts: 3,
            ..Default::default()
        },
        access.store.clone(),
    )?;
    let checks = by_image.into_iter().map(|(image, locations)| {
        let client = client.clone();
        async move { check_one(&client, image, locations, expect).await }
    });
    let mut out = futures_util::future::join_all(checks).await;
    for c in out.iter_mut().filter(|c| !c.passed()) {
        c.from_value = Some(which_value(state, &c.image));
    }
    Ok(out)
}

async fn check_one(
    client: &RegistryClient,
    image: String,
    locations: Vec<String>,
    expect: &Expectation<'_>,
) -> ImageCheck {
    let mut c = ImageCheck {
        image: image.clone(),
        locations,
        result: String::new(),
        expected_digest: None,
        registry_digest: None,
        from_value: None,
        detail: None,
    };
    let r = match Reference::parse(&image) {
        Ok(r) => r,
        Err(e) => {
            c.result = "not-carried".into();
            c.detail = Some(format!("not a valid image reference: {e:#}"));
            return c;
        }
    };
    let carried = expect
        .carried
        .map(|list| crate::carried::find_image(list, &r));
    match carried {
        Some(Some(ci)) => c.expected_digest = Some(ci.digest.clone()),
        Some(None) if expect.pinned_ok.contains(&image) => {
            c.detail = Some("kept by --keep-pinned-images".into());
        }
        Some(None) => {
            c.result = "not-carried".into();
            c.detail = Some("the package does not carry this image for this chart version".into());
            return c;
        }
        None => {}
    }
    match client
        .head_manifest(&r.registry, &r.repository, &r.manifest_reference())
        .await
    {
        Ok(Some(d)) => {
            c.registry_digest = Some(d.to_string());
            c.result = match &c.expected_digest {
                Some(want) if *want != d.to_string() => {
                    c.detail = Some(format!(
                        "the registry serves {d}, the package recorded {want}"
                    ));
                    "digest-mismatch"
                }
                Some(_) => "ok",
                None if carried.is_none() => "present",
                None => "pinned",
            }
            .into();
        }
        Ok(None) => {
            c.result = "missing".into();
            c.detail = Some(format!("not in {}", r.registry));
        }
        Err(e) => {
            c.result = "unchecked".into();
            c.detail = Some(crate::error::redact(&format!("{e:#}")));
        }
    }
    if matches!(c.result.as_str(), "missing" | "unchecked") && expect.forced.contains(&image) {
        let why = c.detail.take().unwrap_or_default();
        c.detail = Some(format!("{why}; let through by --force"));
        c.result = "forced".into();
    }
    c
}

/// Which value put `image` there: a user-supplied value first (what this
/// or an earlier run passed), then a chart default; else the templates.
pub fn which_value(state: &ReleaseState, image: &str) -> String {
    let mut paths = paths_naming(&state.all_values, image);
    for p in paths_naming(&state.user_values, image) {
        if !paths.contains(&p) {
            paths.push(p);
        }
    }
    if paths.is_empty() {
        return "no value: the chart's templates write it".into();
    }
    let parts: Vec<String> = paths
        .iter()
        .map(|p| {
            let segs: Vec<String> = p.split('.').map(str::to_string).collect();
            match hints::lookup(&state.user_values, &segs).and_then(hints::scalar_string) {
                Some(v) => format!("{p}={v:?} (user-supplied)"),
                None => format!("{p} (chart default)"),
            }
        })
        .collect();
    format!(
        "the value{} {}",
        if paths.len() > 1 { "s" } else { "" },
        parts.join(", ")
    )
}

/// Values paths whose string is the image, its name, its repository, or
/// its tag beside a value naming its repository.
fn paths_naming(values: &Value, image: &str) -> Vec<String> {
    let Ok(r) = Reference::parse(image) else {
        return Vec::new();
    };
    let name = format!("{}/{}", r.registry, r.repository);
    let names_repo = |s: &str| -> bool {
        !s.is_empty()
            && (s == image
                || s == name
                || s == r.repository
                || (s.contains('/') && name.ends_with(&format!("/{s}")))
                || Reference::parse(s).is_ok_and(|p| {
                    p.registry == r.registry && p.repository == r.repository && s.contains('/')
                }))
    };
    let mut out = Vec::new();
    fn walk(
        v: &Value,
        path: &mut Vec<String>,
        names_repo: &dyn Fn(&str) -> bool,
        tag: Option<&str>,
        out: &mut Vec<String>,
    ) {
        match v {
            Value::Mapping(m) => {
                let sibling_names_repo = m.values().any(|c| c.as_str().is_some_and(names_repo));
                for (k, c) in m {
                    let Some(k) = k.as_str() else { continue };
                    path.push(k.to_string());
                    if let (Some(s), Some(t)) = (c.as_str(), tag) {
                        if s == t && sibling_names_repo && out.len() < 5 {
                            out.push(path.join("."));
                        }
                    }
                    walk(c, path, names_repo, tag, out);
                    path.pop();
                }
            }
            Value::Sequence(s) => {
                for (i, c) in s.iter().enumerate() {
                    path.push(i.to_string());
                    walk(c, path, names_repo, tag, out);
                    path.pop();
                }
            }
            Value::String(s) if names_repo(s) && out.len() < 5 => out.push(path.join(".")),
            _ => {}
        }
    }
    walk(
        values,
        &mut Vec::new(),
        &names_repo,
        r.tag.as_deref(),
        &mut out,
    );
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_behind_an_image() {
        let state = ReleaseState {
            manifest: String::new(),
            user_values: serde_yaml_ng::from_str("ui:\n  image:\n    tag: v0.19.0\n").unwrap(),
            all_values: serde_yaml_ng::from_str(
                "ui:\n  image:\n    registry: reg:5000\n    repository: skoala/ui\n    tag: v0.19.0\nside: reg:5000/x/side:1\n",
            )
            .unwrap(),
        };
        // the tag is user-supplied; the merged values show it beside its repository
        assert_eq!(
            which_value(&state, "reg:5000/skoala/ui:v0.19.0"),
            "the values ui.image.repository (chart default), ui.image.tag=\"v0.19.0\" (user-supplied)"
        );
        assert_eq!(
            which_value(&state, "reg:5000/x/side:1"),
            "the value side (chart default)"
        );
        assert_eq!(
            which_value(&state, "docker.io/library/busybox:1.36"),
            "no value: the chart's templates write it"
        );
    }
}
