//! `load-image.yaml`, the charts-syncer fork's schema.
//!
//! Every key of the DaoCloud charts-syncer fork's `api/config.proto` is
//! accepted, in its JSON (camelCase) spelling and its proto (snake_case)
//! spelling, as charts-syncer's protobuf JSON decoder does:
//!
//! ```yaml
//! source:                      # exactly one of intermediateBundlesPath, repo
//!   intermediateBundlesPath: DIR-or-PACKAGE.tar
//!   repo: {kind: HELM|CHARTMUSEUM|HARBOR|OCI|LOCAL, url, path, auth: {username, password},
//!          chartsIndex, useChartsIndex, disableChartsIndex}
//!   containers: {kind, url, auth: {registry, username, password}}
//! target:
//!   containerPrefixRegistry / containerPrefixRepository / appendOriginRegistry   # prefix rules, or
//!   containerRegistry / containerRepository                                      # replace rules
//!   repoName: myrepo
//!   repo: {kind: HARBOR|CHARTMUSEUM|OCI|LOCAL, url, path, auth: {username, password}}
//!   containers: {kind, auth: {username, password, registry}}
//! charts: [name, {name, versions: [..], skipImages: bool}]   # or
//! skipCharts: [name, ...]
//! relocateContainerImages: bool                              # accepted, has no effect
//! requireSignature: {key: cosign.pub}   # bundler's own: sync --require-signature --key
//! ```
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, MapAccess};
use serde::Deserialize;

use super::rewrite_rules::check_rewrite_rules;
use super::yaml::{lenient_string, lenient_strings, Doc};
use crate::oci::auth::{CredentialStore, Credentials};
use crate::oci::reference::RewriteRules;
use repo::repo_spec;

mod mirrors;
mod repo;
pub use mirrors::Mirror;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RepoKind {
    Helm,
    Oci,
    Harbor,
    Chartmuseum,
    Local,
}

impl RepoKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            RepoKind::Helm => "HELM",
            RepoKind::Oci => "OCI",
            RepoKind::Harbor => "HARBOR",
            RepoKind::Chartmuseum => "CHARTMUSEUM",
            RepoKind::Local => "LOCAL",
        }
    }
}

impl fmt::Display for RepoKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoSpec {
    pub kind: RepoKind,
    /// URL (`http(s)://...`, `oci://host/path`); empty for LOCAL.
    pub url: String,
    /// LOCAL: the directory (relative paths resolved against the cwd, as
    /// charts-syncer does).
    pub path: Option<PathBuf>,
    pub auth: Option<Credentials>,
}

/// Where an OCI chart repository lives, from `oci://host[:port]/path` or
/// `http(s)://host[:port]/path`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OciLocation {
    /// `host[:port]`
    pub registry: String,
    /// Repository path prefix, no leading or trailing `/` (may be empty).
    pub path: String,
    /// The URL said `http://` (plain HTTP is wanted).
    pub plain_http: bool,
}

impl RepoSpec {
    /// For OCI targets/sources: registry host and path prefix.
    pub fn oci_location(&self) -> Option<OciLocation> {
        if self.kind != RepoKind::Oci {
            return None;
        }
        parse_oci_url(&self.url).ok()
    }
}

/// Parse `oci://host[:port]/path` (also `https://`, and `http://` meaning
/// plain HTTP): the one OCI URL parser, for configs, bundle manifests and
/// chart targets.
pub fn parse_oci_url(url: &str) -> Result<OciLocation, String> {
    let (rest, plain_http) = if let Some(r) = url.strip_prefix("oci://") {
        (r, false)
    } else if let Some(r) = url.strip_prefix("https://") {
        (r, false)
    } else if let Some(r) = url.strip_prefix("http://") {
        (r, true)
    } else {
        return Err("expected oci://host[:port]/path (or http(s)://host[:port]/path)".into());
    };
    let rest = rest.trim_end_matches('/');
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() || host.contains(['@', '?', '#', ' ']) {
        return Err("no valid registry host in the URL".into());
    }
    if path.contains(['?', '#', ' ', ':'])
        || path.split('/').any(|p| p.is_empty() && !path.is_empty())
    {
        return Err(format!("invalid repository path {path:?} in the URL"));
    }
    Ok(OciLocation {
        registry: host.to_string(),
        path: path.to_string(),
        plain_http,
    })
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `source.intermediateBundlesPath`: a dir of bundles or an outer package.
    Bundles(PathBuf),
    /// `source.repo`.
    Repo {
        repo: RepoSpec,
        containers_auth: Option<Credentials>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChartFilter {
    pub name: String,
    /// Empty: every version.
    pub versions: Vec<String>,
}

impl ChartFilter {
    pub fn matches(&self, name: &str, version: &str) -> bool {
        self.name == name
            && (self.versions.is_empty() || self.versions.iter().any(|v| v == version))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncConfig {
    pub file: PathBuf,
    pub source: Source,
    pub rewrite: RewriteRules,
    pub containers_auth: Option<Credentials>,
    /// `target.repo`: where charts are published. Optional for image-only
    /// products (bundles without a chart); sync refuses bundles that carry
    /// a chart when it is missing ([`SyncConfig::chart_target`]).
    pub target_repo: Option<RepoSpec>,
    pub charts: Vec<ChartFilter>,
    pub skip_charts: Vec<ChartFilter>,
    /// `source.containers.auth.registry`: the registry the source
    /// credentials are for (source repo mode only).
    pub source_containers_registry: Option<String>,
    /// Charts listed with `skipImages: true` (their images are not pushed).
    pub skip_images_for: Vec<String>,
    /// `target.repoName` (charts-syncer's default is `myrepo`).
    pub repo_name: Option<String>,
    /// `requireSignature.key` (bundler's own key): every image must carry a
    /// valid cosign signature for this public key (relative to the cwd).
    pub require_signature_key: Option<PathBuf>,
    /// `source.requireSignature` with `source.signatureKey`: the public
    /// key the offline package must be signed with (issue 21).
    pub package_signature_key: Option<PathBuf>,
    /// `target.mirrors`: further image registries (see `mirrors`).
    pub mirrors: Vec<Mirror>,
}

const HINT: &str = "see the README (bundler sync) for the load-image.yaml schema";

// ---- raw schema -------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    source: Option<RawSource>,
    target: Option<RawTarget>,
    charts: Option<Vec<RawChart>>,
    #[serde(alias = "skip_charts")]
    skip_charts: Option<Vec<RawChart>>,
    #[serde(alias = "relocate_container_images")]
    #[allow(dead_code)]
    relocate_container_images: Option<bool>,
    #[serde(alias = "require_signature")]
    require_signature: Option<RawRequireSignature>,
}

/// `requireSignature: {key: cosign.pub}`
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequireSignature {
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSource {
    repo: Option<RawRepo>,
    #[serde(
        default,
        alias = "intermediate_bundles_path",
        deserialize_with = "lenient_string"
    )]
    intermediate_bundles_path: Option<String>,
    containers: Option<RawContainers>,
    /// Refuse packages not signed by `signatureKey`.
    #[serde(default)]
    require_signature: Option<bool>,
    #[serde(default, deserialize_with = "lenient_string")]
    signature_key: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTarget {
    repo: Option<RawRepo>,
    #[serde(
        default,
        alias = "intermediate_bundles_path",
        deserialize_with = "lenient_string"
    )]
    intermediate_bundles_path: Option<String>,
    #[serde(
        default,
        alias = "container_registry",
        deserialize_with = "lenient_string"
    )]
    container_registry: Option<String>,
    #[serde(
        default,
        alias = "container_prefix_registry",
        deserialize_with = "lenient_string"
    )]
    container_prefix_registry: Option<String>,
    #[serde(
        default,
        alias = "container_repository",
        deserialize_with = "lenient_string"
    )]
    container_repository: Option<String>,
    #[serde(
        default,
        alias = "container_prefix_repository",
        deserialize_with = "lenient_string"
    )]
    container_prefix_repository: Option<String>,
    #[serde(alias = "append_origin_registry")]
    append_origin_registry: Option<bool>,
    #[serde(default, alias = "repo_name", deserialize_with = "lenient_string")]
    repo_name: Option<String>,
    containers: Option<RawContainers>,
    mirrors: Option<Vec<mirrors::RawMirror>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawRepo {
    #[serde(default, deserialize_with = "lenient_string")]
    url: Option<String>,
    kind: Option<RawKind>,
    auth: Option<RawAuth>,
    #[serde(default, deserialize_with = "lenient_string")]
    path: Option<String>,
    #[serde(default, alias = "charts_index", deserialize_with = "lenient_string")]
    #[allow(dead_code)]
    charts_index: Option<String>,
    #[serde(alias = "use_charts_index")]
    #[allow(dead_code)]
    use_charts_index: Option<bool>,
    #[serde(alias = "disable_charts_index")]
    #[allow(dead_code)]
    disable_charts_index: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    #[serde(default, deserialize_with = "lenient_string")]
    username: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    password: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContainers {
    auth: Option<RawContainerAuth>,
    #[allow(dead_code)]
    kind: Option<RawKind>,
    #[serde(default, deserialize_with = "lenient_string")]
    #[allow(dead_code)]
    url: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContainerAuth {
    #[serde(default, deserialize_with = "lenient_string")]
    username: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    password: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    registry: Option<String>,
}

/// charts-syncer's `Kind` enum: a name (any case) or its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RawKind {
    Unknown,
    Known(RepoKind),
    Jfrog,
}

impl<'de> Deserialize<'de> for RawKind {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = RawKind;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("one of HELM, CHARTMUSEUM, HARBOR, OCI, LOCAL")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawKind, E> {
                Ok(match v.to_ascii_uppercase().as_str() {
                    "UNKNOWN" => RawKind::Unknown,
                    "HELM" => RawKind::Known(RepoKind::Helm),
                    "CHARTMUSEUM" => RawKind::Known(RepoKind::Chartmuseum),
                    "HARBOR" => RawKind::Known(RepoKind::Harbor),
                    "OCI" => RawKind::Known(RepoKind::Oci),
                    "LOCAL" => RawKind::Known(RepoKind::Local),
                    "JFROG" => RawKind::Jfrog,
                    _ => {
                        return Err(E::custom(format!(
                        "unknown kind {v:?}, expected one of HELM, CHARTMUSEUM, HARBOR, OCI, LOCAL"
                    )))
                    }
                })
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawKind, E> {
                let name = match v {
                    0 => "UNKNOWN",
                    1 => "HELM",
                    2 => "CHARTMUSEUM",
                    3 => "HARBOR",
                    4 => "OCI",
                    5 => "LOCAL",
                    6 => "JFROG",
                    _ => return Err(E::custom(format!("unknown kind number {v}"))),
                };
                self.visit_str(name)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawKind, E> {
                if v < 0 {
                    return Err(E::custom(format!("unknown kind number {v}")));
                }
                self.visit_u64(v as u64)
            }
        }
        d.deserialize_any(V)
    }
}

/// A `charts`/`skipCharts` entry: a name, or `{name, versions, skipImages}`.
struct RawChart {
    name: String,
    versions: Vec<String>,
    skip_images: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawChartMap {
    #[serde(default, deserialize_with = "lenient_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient_strings")]
    versions: Vec<String>,
    #[serde(default, alias = "skip_images")]
    skip_images: bool,
}

impl<'de> Deserialize<'de> for RawChart {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = RawChart;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a chart name or {name, versions}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawChart, E> {
                if v.trim().is_empty() {
                    return Err(E::custom("empty chart name"));
                }
                Ok(RawChart {
                    name: v.to_string(),
                    versions: Vec::new(),
                    skip_images: false,
                })
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawChart, A::Error> {
                let m = RawChartMap::deserialize(de::value::MapAccessDeserializer::new(map))?;
                match m.name {
                    Some(name) if !name.trim().is_empty() => Ok(RawChart {
                        name,
                        versions: m.versions,
                        skip_images: m.skip_images,
                    }),
                    _ => Err(de::Error::missing_field("name")),
                }
            }
        }
        d.deserialize_any(V)
    }
}

// ---- loading -------------------------------------------------------------

impl SyncConfig {
    /// Load, validate and apply environment overrides.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        Self::load_with_env(path, &|k| std::env::var(k).ok())
    }

    /// [`SyncConfig::load`] with the environment given as a function (so
    /// tests need not change the process environment). Empty values count
    /// as unset, as in charts-syncer.
    pub fn load_with_env(
        path: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Self> {
        let doc = Doc::read(path, "sync config (load-image.yaml)")?;
        let raw: RawConfig = doc.parse(HINT)?;
        let env = |names: &[&str]| -> Option<String> {
            names.iter().find_map(|n| env(n).filter(|v| !v.is_empty()))
        };
        let package_signature_key = parse_signature_key(&doc, raw.source.as_ref())?;
        let (source, source_containers_registry) = parse_source(&doc, raw.source, &env)?;
        let target = parse_target(&doc, raw.target, &env)?;
        let filters = parse_chart_filters(&doc, raw.charts, raw.skip_charts)?;
        Ok(SyncConfig {
            file: path.to_path_buf(),
            source,
            rewrite: target.rewrite,
            containers_auth: target.containers_auth,
            target_repo: target.repo,
            charts: filters.charts,
            skip_charts: filters.skip_charts,
            source_containers_registry,
            skip_images_for: filters.skip_images_for,
            repo_name: target.repo_name,
            require_signature_key: raw.require_signature.map(|r| PathBuf::from(r.key)),
            package_signature_key,
            mirrors: target.mirrors,
        })
    }
    /// (`containerPrefixRegistry`, else `containerRegistry`).
    pub fn image_registry(&self) -> Option<String> {
        self.rewrite
            .prefix_registry
            .clone()
            .or_else(|| self.rewrite.registry.clone())
    }

    /// Credentials for the target registry: `target.containers.auth` for the
    /// image registry host and as the default, then docker `config.json`.
    pub fn credential_store(&self) -> CredentialStore {
        let mut explicit = HashMap::new();
        for m in &self.mirrors {
            if let (Some(c), Some(host)) = (&m.containers_auth, m.registry()) {
                explicit.insert(host, c.clone());
            }
        }
        if let (Some(c), Some(host)) = (&self.containers_auth, self.image_registry()) {
            let host = host.split('/').next().unwrap_or(&host).to_string();
            explicit.insert(host, c.clone());
        }
        CredentialStore {
            explicit,
            default: self.containers_auth.clone(),
            use_docker_config: true,
            ..Default::default()
        }
    }

    /// Credentials for the source side (source repo mode):
    /// `source.containers.auth` for its registry, then docker `config.json`.
    pub fn source_credential_store(&self) -> CredentialStore {
        let mut store = CredentialStore {
            use_docker_config: true,
            ..Default::default()
        };
        if let Source::Repo {
            containers_auth: Some(c),
            ..
        } = &self.source
        {
            match &self.source_containers_registry {
                Some(r) => {
                    store.explicit.insert(r.clone(), c.clone());
                }
                None => store.default = Some(c.clone()),
            }
        }
        store
    }

    /// The chart repository the given charts (name, version) go to. With no
    /// `target.repo` the config is for image-only products: refused,
    /// naming every chart that could not be published, when there are any.
    pub fn chart_target(&self, charts: &[(String, String)]) -> anyhow::Result<Option<&RepoSpec>> {
        match (&self.target_repo, charts) {
            (Some(r), _) => Ok(Some(r)),
            (None, []) => Ok(None),
            (None, charts) => {
                let names: Vec<String> = charts.iter().map(|(n, v)| format!("{n} {v}")).collect();
                Err(crate::error::input_error(format!(
                    "{}: target.repo is not set, so {} chart{} cannot be published: {}. \
                     Add target.repo (kind HARBOR, CHARTMUSEUM, OCI or LOCAL), or leave the chart \
                     bundles out with skipCharts; nothing was pushed",
                    self.file.display(),
                    names.len(),
                    if names.len() == 1 { "" } else { "s" },
                    names.join(", ")
                )))
            }
        }
    }

    /// Whether a chart passes the `charts` / `skipCharts` filters.
    pub fn wants_chart(&self, name: &str, version: &str) -> bool {
        if !self.charts.is_empty() {
            return self.charts.iter().any(|f| f.matches(name, version));
        }
        !self.skip_charts.iter().any(|f| f.matches(name, version))
    }
}

/// The environment as [`SyncConfig::load_with_env`] consults it: the first
/// of the given names that is set to a non-empty value.
type EnvLookup<'a> = dyn Fn(&[&str]) -> Option<String> + 'a;

/// Empty or blank values count as unset.
fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|v| !v.trim().is_empty())
}

/// `source.requireSignature` + `source.signatureKey` (a key alone also
/// requires a signature; `requireSignature: false` turns it off).
fn parse_signature_key(doc: &Doc, src: Option<&RawSource>) -> anyhow::Result<Option<PathBuf>> {
    let Some(src) = src else { return Ok(None) };
    let key = non_empty(src.signature_key.clone());
    match (src.require_signature, key) {
        (Some(false), _) | (None, None) => Ok(None),
        (_, Some(k)) => Ok(Some(PathBuf::from(k))),
        (Some(true), None) => Err(doc.error_at(
            "source.requireSignature",
            &[],
            "requireSignature: true needs source.signatureKey, the public key (PEM, or cosign.pub) the offline package must be signed with",
        )),
    }
}

/// `source`: exactly one of intermediateBundlesPath, repo. Returns the
/// source and, in repo mode, the registry its container credentials are for.
fn parse_source(
    doc: &Doc,
    src: Option<RawSource>,
    env: &EnvLookup,
) -> anyhow::Result<(Source, Option<String>)> {
    let Some(src) = src else {
        return Err(doc.error_at(
            "source",
            &[],
            "missing: give source.intermediateBundlesPath (a directory of *.bundle.tar or an offline package) or source.repo",
        ));
    };
    let src_containers = src.containers.as_ref().and_then(|c| c.auth.as_ref());
    let mut src_cont_user = src_containers.and_then(|a| a.username.clone());
    let mut src_cont_pass = src_containers.and_then(|a| a.password.clone());
    let mut src_cont_reg = src_containers.and_then(|a| a.registry.clone());
    if let Some(v) = env(&["SOURCE_CONTAINERS_AUTH_USERNAME"]) {
        src_cont_user = Some(v);
    }
    if let Some(v) = env(&["SOURCE_CONTAINERS_AUTH_PASSWORD"]) {
        src_cont_pass = Some(v);
    }
    if let Some(v) = env(&["SOURCE_CONTAINERS_AUTH_REGISTRY"]) {
        src_cont_reg = Some(v);
    }
    let source = match (src.intermediate_bundles_path, src.repo) {
        (Some(_), Some(_)) => {
            return Err(doc.error_at(
                "source.repo",
                &[],
                "source.intermediateBundlesPath and source.repo are both set; keep exactly one \
                 (intermediateBundlesPath for bundles written by `bundler pack`, repo for a chart repository)",
            ))
        }
        (None, None) => {
            return Err(doc.error_at(
                "source",
                &[],
                "neither source.intermediateBundlesPath nor source.repo is set; give exactly one",
            ))
        }
        (Some(p), None) => {
            if p.trim().is_empty() {
                return Err(doc.error_at(
                    "source.intermediateBundlesPath",
                    &[],
                    "empty path; give the directory holding the *.bundle.tar files or the offline package .tar",
                ));
            }
            Source::Bundles(PathBuf::from(p))
        }
        (None, Some(r)) => {
            let repo = repo_spec(doc, "source.repo", r, false, |k| {
                env(&[&format!("SOURCE_REPO_AUTH_{k}"), &format!("SOURCE_AUTH_{k}")])
            })?;
            Source::Repo {
                repo,
                containers_auth: creds(src_cont_user, src_cont_pass),
            }
        }
    };
    let source_containers_registry = match source {
        Source::Repo { .. } => src_cont_reg.filter(|s| !s.is_empty()),
        Source::Bundles(_) => None,
    };
    Ok((source, source_containers_registry))
}

/// What `target` yields: the chart repository, the image rewrite rules and
/// the target registry credentials.
struct Target {
    repo: Option<RepoSpec>,
    rewrite: RewriteRules,
    containers_auth: Option<Credentials>,
    repo_name: Option<String>,
    mirrors: Vec<Mirror>,
}

fn parse_target(doc: &Doc, tgt: Option<RawTarget>, env: &EnvLookup) -> anyhow::Result<Target> {
    let Some(tgt) = tgt else {
        return Err(doc.error_at(
            "target",
            &[],
            "missing: give the image rules (containerPrefixRegistry or containerRegistry) and, when the bundles carry charts, target.repo (where charts go)",
        ));
    };
    if tgt.intermediate_bundles_path.is_some() {
        return Err(doc.error_at(
            "target.intermediateBundlesPath",
            &[],
            "writing bundles (charts-syncer's save mode) is not done by sync: use `bundler pack MANIFEST --output DIR` on the connected host",
        ));
    }
    let repo = tgt
        .repo
        .map(|r| {
            repo_spec(doc, "target.repo", r, true, |k| {
                env(&[
                    &format!("TARGET_REPO_AUTH_{k}"),
                    &format!("TARGET_AUTH_{k}"),
                ])
            })
        })
        .transpose()?;
    let rewrite = RewriteRules {
        prefix_registry: non_empty(tgt.container_prefix_registry),
        prefix_repository: non_empty(tgt.container_prefix_repository)
            .map(|s| s.trim_matches('/').to_string()),
        append_origin_registry: tgt.append_origin_registry.unwrap_or(false),
        registry: non_empty(tgt.container_registry),
        repository: non_empty(tgt.container_repository).map(|s| s.trim_matches('/').to_string()),
    };
    check_rewrite_rules(doc, &rewrite)?;
    let mirrors = mirrors::parse_mirrors(doc, tgt.mirrors, &rewrite)?;
    Ok(Target {
        repo,
        rewrite,
        containers_auth: target_containers_auth(tgt.containers.as_ref(), env),
        repo_name: non_empty(tgt.repo_name),
        mirrors,
    })
}

/// `target.containers.auth`, overridden by `TARGET_CONTAINERS_AUTH_*`.
fn target_containers_auth(
    containers: Option<&RawContainers>,
    env: &EnvLookup,
) -> Option<Credentials> {
    let tc = containers.and_then(|c| c.auth.as_ref());
    let mut user = tc.and_then(|a| a.username.clone());
    let mut pass = tc.and_then(|a| a.password.clone());
    if let Some(v) = env(&["TARGET_CONTAINERS_AUTH_USERNAME"]) {
        user = Some(v);
    }
    if let Some(v) = env(&["TARGET_CONTAINERS_AUTH_PASSWORD"]) {
        pass = Some(v);
    }
    creds(user, pass)
}

/// `charts` / `skipCharts` (one or the other), and the charts listed with
/// `skipImages: true`.
struct ChartFilters {
    charts: Vec<ChartFilter>,
    skip_charts: Vec<ChartFilter>,
    skip_images_for: Vec<String>,
}

fn parse_chart_filters(
    doc: &Doc,
    charts: Option<Vec<RawChart>>,
    skip: Option<Vec<RawChart>>,
) -> anyhow::Result<ChartFilters> {
    let charts = charts.unwrap_or_default();
    let skip = skip.unwrap_or_default();
    if !charts.is_empty() && !skip.is_empty() {
        return Err(doc.error_at(
            "skipCharts",
            &[],
            "charts and skipCharts are both set; keep one (charts lists what to sync, skipCharts what to leave out)",
        ));
    }
    let skip_images_for = charts
        .iter()
        .filter(|c| c.skip_images)
        .map(|c| c.name.clone())
        .collect();
    let to_filter = |v: Vec<RawChart>| -> Vec<ChartFilter> {
        v.into_iter()
            .map(|c| ChartFilter {
                name: c.name,
                versions: c.versions,
            })
            .collect()
    };
    Ok(ChartFilters {
        charts: to_filter(charts),
        skip_charts: to_filter(skip),
        skip_images_for,
    })
}

fn creds(user: Option<String>, pass: Option<String>) -> Option<Credentials> {
    let user = user.unwrap_or_default();
    let pass = pass.unwrap_or_default();
    if user.is_empty() && pass.is_empty() {
        None
    } else {
        Some(Credentials {
            username: user,
            password: pass,
        })
    }
}

/// `http://user:pw@host/x` → (`http://host/x`, user, pw), percent-decoded;
/// other strings unchanged.
pub fn split_userinfo(url: &str) -> (String, Option<String>, Option<String>) {
    let Ok(mut u) = url::Url::parse(url) else {
        return (url.to_string(), None, None);
    };
    if u.username().is_empty() && u.password().is_none() {
        return (url.to_string(), None, None);
    }
    let dec = |s: &str| {
        url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let user = Some(dec(u.username())).filter(|s| !s.is_empty());
    let pass = u.password().map(dec);
    let _ = u.set_username("");
    let _ = u.set_password(None);
    // Keep the user's spelling (no trailing slash added by the parser).
    let mut clean = u.to_string();
    if !url.ends_with('/') && clean.ends_with('/') && u.path() == "/" {
        clean.pop();
    }
    (clean, user, pass)
}
