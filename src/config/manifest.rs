//! The bundle manifest, input of `pack`.
//!
//! ```yaml
//! apiVersion: bundler/v1
//! kind: BundleManifest
//! metadata: {name: skoala, version: 0.28.1}
//! spec:
//!   platforms: [linux/amd64]        # default [linux/amd64]; "all" (or [all]) keeps every platform
//!   charts:
//!     - name: skoala
//!       version: 0.28.1             # optional for path charts (taken from Chart.yaml)
//!       repo: https://release.example.com/chartrepo/skoala   # or oci://host/path, or
//!       path: ./charts/skoala       # a chart dir or .tgz, relative to this file
//!       hints: hints/skoala.yaml    # optional, relative to this file
//!       images: [docker.io/library/busybox:1.36]
//!       release: {name: skoala, namespace: skoala-system}   # name defaults to the chart name
//!       auth:                       # classic repos only; never an inline password
//!         username: alice           # or usernameEnv: VAR
//!         passwordEnv: CHARTS_PW    # or passwordFile: ./secrets/charts (relative to this file)
//!         passCredentials: false    # true: also send them to chart URLs on other hosts
//!   images:
//!     - docker.io/library/mysql:5.7.34
//!     - archive: ./images/mlab-gateway.tar                  # docker save tar or OCI layout
//! ```
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, MapAccess};
use serde::Deserialize;

use super::yaml::{lenient_string, Doc};
use crate::bundle::format::ReleaseInfo;
use crate::oci::media::Platform;
use crate::oci::reference::Reference;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChartSource {
    /// Classic HTTP repo (index.yaml).
    Repo(String),
    /// `oci://host/path` (the chart name is appended).
    Oci(String),
    /// Local dir or `.tgz` (resolved against the manifest's directory).
    Path(PathBuf),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChartEntry {
    pub name: String,
    pub version: Option<String>,
    pub source: ChartSource,
    pub hints: Option<PathBuf>,
    pub images: Vec<String>,
    /// `images: [{archive: PATH}]` entries: local archives (`docker save`
    /// tar, OCI layout dir or tar) that provide this chart's images, so
    /// that they are taken from disk rather than pulled.
    pub image_archives: Vec<PathBuf>,
    pub release: Option<ReleaseInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSource {
    Reference(String),
    /// A `docker save` tar or an OCI layout (dir or tar), resolved against
    /// the manifest's directory.
    Archive(PathBuf),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleManifest {
    pub file: PathBuf,
    pub name: String,
    pub version: String,
    /// `None` keeps every platform ("all"); default `[linux/amd64]`.
    pub platforms: Option<Vec<crate::oci::media::Platform>>,
    pub charts: Vec<ChartEntry>,
    pub images: Vec<ImageSource>,
    /// `spec.manifests`: raw YAML files and kustomize trees.
    pub manifests: Vec<crate::manifests::ManifestsEntry>,
    /// Credentials for classic chart repos, by chart name (`auth:` of an
    /// entry, or `user:pw@` in its repo URL, which is then removed).
    pub chart_auth: std::collections::BTreeMap<String, ChartRepoAuth>,
}

/// Basic-auth credentials for a classic chart repository, resolved from the
/// environment or a file when the manifest is loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChartRepoAuth {
    pub credentials: crate::oci::auth::Credentials,
    /// Also send the credentials to chart URLs the index lists on another
    /// host (helm's `--pass-credentials`); by default only the repo's own
    /// scheme, host and port get them.
    pub pass_credentials: bool,
}

const HINT: &str =
    "see the README (Writing a bundle manifest for your product) and bundle-manifests/example.yaml";

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawManifest {
    #[serde(default, deserialize_with = "lenient_string")]
    api_version: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    kind: Option<String>,
    metadata: Option<RawMetadata>,
    spec: Option<RawSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetadata {
    #[serde(default, deserialize_with = "lenient_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    version: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    platforms: Option<RawPlatforms>,
    charts: Option<Vec<RawChart>>,
    images: Option<Vec<RawImage>>,
    manifests: Option<Vec<crate::manifests::entry::RawManifestsEntry>>,
}

enum RawPlatforms {
    All,
    List(Vec<String>),
}

impl<'de> Deserialize<'de> for RawPlatforms {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = RawPlatforms;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a list of os/arch platforms, or \"all\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawPlatforms, E> {
                if v == "all" {
                    Ok(RawPlatforms::All)
                } else {
                    Ok(RawPlatforms::List(vec![v.to_string()]))
                }
            }
            fn visit_seq<A: de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<RawPlatforms, A::Error> {
                let mut v = Vec::new();
                while let Some(s) = seq.next_element::<String>()? {
                    v.push(s);
                }
                Ok(RawPlatforms::List(v))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChart {
    #[serde(default, deserialize_with = "lenient_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    version: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    repo: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    path: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    hints: Option<String>,
    images: Option<Vec<RawImage>>,
    release: Option<RawRelease>,
    auth: Option<RawChartAuth>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawChartAuth {
    #[serde(default, deserialize_with = "lenient_string")]
    username: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    username_env: Option<String>,
    /// Refused: the manifest is committed and travels; only its presence
    /// is recorded so the error can say what to write instead.
    password: Option<de::IgnoredAny>,
    #[serde(default, deserialize_with = "lenient_string")]
    password_env: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    password_file: Option<String>,
    pass_credentials: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelease {
    #[serde(default, deserialize_with = "lenient_string")]
    name: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    namespace: Option<String>,
}

pub(crate) enum RawImage {
    Reference(String),
    Archive(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArchive {
    archive: String,
}

impl<'de> Deserialize<'de> for RawImage {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = RawImage;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an image reference or {archive: PATH}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawImage, E> {
                Ok(RawImage::Reference(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawImage, A::Error> {
                let a = RawArchive::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(RawImage::Archive(a.archive))
            }
        }
        d.deserialize_any(V)
    }
}

impl BundleManifest {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let doc = Doc::read(path, "bundle manifest")?;
        let raw: RawManifest = doc.parse(HINT)?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let resolve = |p: &str| -> PathBuf {
            let p = Path::new(p);
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };

        check_header(&doc, raw.api_version.as_deref(), raw.kind.as_deref())?;
        let (name, version) = parse_metadata(&doc, raw.metadata)?;
        let Some(spec) = raw.spec else {
            return Err(doc.error_at("spec", &[], "missing: give spec.charts and/or spec.images"));
        };

        let platforms = parse_platforms(&doc, spec.platforms)?;
        let (charts, chart_auth) = parse_charts(&doc, spec.charts, &resolve)?;
        let images = parse_images(&doc, spec.images, &resolve)?;
        let chart_names: Vec<String> = charts.iter().map(|c| c.name.clone()).collect();
        let manifests =
            crate::manifests::entry::parse(&doc, spec.manifests, &chart_names, &resolve)?;
        if charts.is_empty() && images.is_empty() && manifests.is_empty() {
            return Err(doc.error_at(
                "spec",
                &[],
                "nothing to pack: give spec.charts, spec.manifests and/or spec.images",
            ));
        }
        Ok(BundleManifest {
            file: path.to_path_buf(),
            name,
            version,
            platforms,
            charts,
            images,
            manifests,
            chart_auth,
        })
    }

    /// The directory relative paths in the manifest are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        self.file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf()
    }
}

/// `apiVersion: bundler/v1` and `kind: BundleManifest`.
fn check_header(doc: &Doc, api_version: Option<&str>, kind: Option<&str>) -> anyhow::Result<()> {
    match api_version {
        Some("bundler/v1") => {}
        Some(other) => {
            return Err(doc.error_at(
                "apiVersion",
                &[],
                format!("{other:?} is not supported; write apiVersion: bundler/v1"),
            ))
        }
        None => {
            return Err(doc.error_at("apiVersion", &[], "missing: write apiVersion: bundler/v1"))
        }
    }
    match kind {
        Some("BundleManifest") => {}
        Some(other) => {
            return Err(doc.error_at(
                "kind",
                &[],
                format!("{other:?}: this file must have kind: BundleManifest"),
            ))
        }
        None => return Err(doc.error_at("kind", &[], "missing: write kind: BundleManifest")),
    }
    Ok(())
}

/// `metadata`: the product name and version, both usable in a file name.
fn parse_metadata(doc: &Doc, meta: Option<RawMetadata>) -> anyhow::Result<(String, String)> {
    let Some(meta) = meta else {
        return Err(doc.error_at(
            "metadata",
            &[],
            "missing: give metadata: {name: PRODUCT, version: VERSION}",
        ));
    };
    let name = meta.name.filter(|s| !s.trim().is_empty()).ok_or_else(|| {
        doc.error_at(
            "metadata.name",
            &["metadata"],
            "missing: the product name (used in the offline package file name)",
        )
    })?;
    if name.contains(['/', '\\']) || name.starts_with('.') {
        return Err(doc.error_at(
            "metadata.name",
            &[],
            format!("{name:?}: must be a plain file-name part (no '/', no leading '.')"),
        ));
    }
    let version = meta
        .version
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            doc.error_at(
                "metadata.version",
                &["metadata"],
                "missing: the product version (used in the offline package file name)",
            )
        })?;
    if version.contains(['/', '\\']) {
        return Err(doc.error_at(
            "metadata.version",
            &[],
            format!("{version:?}: must not contain '/'"),
        ));
    }
    Ok((name, version))
}

/// `spec.platforms`: `None` keeps every platform; default `[linux/amd64]`.
fn parse_platforms(
    doc: &Doc,
    platforms: Option<RawPlatforms>,
) -> anyhow::Result<Option<Vec<Platform>>> {
    let platforms = match platforms {
        None => Some(vec![Platform::parse("linux/amd64")?]),
        Some(RawPlatforms::All) => None,
        Some(RawPlatforms::List(list)) if list.iter().any(|p| p == "all") => None,
        Some(RawPlatforms::List(list)) => {
            if list.is_empty() {
                return Err(doc.error_at(
                    "spec.platforms",
                    &[],
                    "empty list: give os/arch entries (e.g. linux/amd64) or \"all\"",
                ));
            }
            let mut out = Vec::new();
            for (i, p) in list.iter().enumerate() {
                match Platform::parse(p) {
                    Ok(p) => out.push(p),
                    Err(e) => {
                        return Err(doc.error_at(
                            &format!("spec.platforms[{i}]"),
                            &["spec.platforms"],
                            e,
                        ))
                    }
                }
            }
            Some(out)
        }
    };
    Ok(platforms)
}

/// `spec.charts`, and the repository credentials of each chart by name.
fn parse_charts(
    doc: &Doc,
    charts: Option<Vec<RawChart>>,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> anyhow::Result<(Vec<ChartEntry>, BTreeMap<String, ChartRepoAuth>)> {
    let mut entries = Vec::new();
    let mut chart_auth = BTreeMap::new();
    for (i, c) in charts.unwrap_or_default().into_iter().enumerate() {
        let at = format!("spec.charts[{i}]");
        let entry = parse_chart(doc, &at, c, &entries, &mut chart_auth, resolve)?;
        entries.push(entry);
    }
    Ok((entries, chart_auth))
}

/// One entry `at` of `spec.charts`; `listed` are the entries before it.
fn parse_chart(
    doc: &Doc,
    at: &str,
    c: RawChart,
    listed: &[ChartEntry],
    chart_auth: &mut BTreeMap<String, ChartRepoAuth>,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> anyhow::Result<ChartEntry> {
    let cname = c
        .name
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| doc.error_at(&format!("{at}.name"), &[at], "missing: the chart name"))?;
    if listed.iter().any(|e| e.name == cname) {
        return Err(doc.error_at(
            &format!("{at}.name"),
            &[at],
            format!("chart {cname:?} is listed twice"),
        ));
    }
    let source = chart_source(doc, at, &cname, c.repo, c.path, chart_auth, resolve)?;
    let cversion = c.version.filter(|s| !s.trim().is_empty());
    if cversion.is_none() && !matches!(source, ChartSource::Path(_)) {
        return Err(doc.error_at(
            &format!("{at}.version"),
            &[&format!("{at}.name")],
            "missing: charts from a repository need a version",
        ));
    }
    let (images, image_archives) = chart_images(doc, at, c.images, resolve)?;
    if let Some(a) = c.auth {
        if !matches!(source, ChartSource::Repo(_)) {
            return Err(doc.error_at(
                &format!("{at}.auth"),
                &[],
                "auth is for classic chart repositories (repo: https://...); OCI registries take their credentials from ~/.docker/config.json",
            ));
        }
        chart_auth.insert(cname.clone(), chart_repo_auth(doc, at, a, resolve)?);
    }
    let release = match c.release {
        None => None,
        Some(r) => Some(ReleaseInfo {
            name: r
                .name
                .filter(|s| !s.trim().is_empty())
                .unwrap_or_else(|| cname.clone()),
            namespace: r.namespace.filter(|s| !s.trim().is_empty()),
        }),
    };
    Ok(ChartEntry {
        name: cname,
        version: cversion,
        source,
        hints: c
            .hints
            .filter(|s| !s.trim().is_empty())
            .map(|h| resolve(&h)),
        images,
        image_archives,
        release,
    })
}

/// `repo` or `path` of chart entry `at`. Userinfo in a classic repo URL is
/// removed from it and recorded in `chart_auth`.
fn chart_source(
    doc: &Doc,
    at: &str,
    cname: &str,
    repo: Option<String>,
    path: Option<String>,
    chart_auth: &mut BTreeMap<String, ChartRepoAuth>,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> anyhow::Result<ChartSource> {
    let source = match (repo, path) {
        (Some(_), Some(_)) => {
            return Err(doc.error_at(
                &format!("{at}.path"),
                &[at],
                "repo and path are both set; keep one (repo: a chart repository URL or oci://..., path: a local chart dir or .tgz)",
            ))
        }
        (None, None) => {
            return Err(doc.error_at(
                &format!("{at}.name"),
                &[at],
                "neither repo nor path is set; give one (repo: https://... or oci://..., path: ./charts/NAME or a .tgz)",
            ))
        }
        (Some(r), None) => {
            let r = r.trim().to_string();
            if r.starts_with("oci://") {
                if r.len() <= "oci://".len() {
                    return Err(doc.error_at(&format!("{at}.repo"), &[], "oci:// needs a registry host and path"));
                }
                ChartSource::Oci(r)
            } else {
                let ok = url::Url::parse(&r)
                    .ok()
                    .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
                if ok.is_none() {
                    return Err(doc.error_at(
                        &format!("{at}.repo"),
                        &[],
                        format!("{r:?}: expected an http(s):// chart repository URL or oci://host/path (for a local chart use path:)"),
                    ));
                }
                // userinfo leaves the URL (bundle.json records it).
                let (clean, user, pass) = super::load_image::split_userinfo(&r);
                if user.is_some() || pass.is_some() {
                    chart_auth.insert(
                        cname.to_string(),
                        ChartRepoAuth {
                            credentials: crate::oci::auth::Credentials {
                                username: user.unwrap_or_default(),
                                password: pass.unwrap_or_default(),
                            },
                            pass_credentials: false,
                        },
                    );
                }
                ChartSource::Repo(clean)
            }
        }
        (None, Some(p)) => ChartSource::Path(resolve(&p)),
    };
    Ok(source)
}

/// `images` of chart entry `at`: references and local archives.
pub(crate) fn chart_images(
    doc: &Doc,
    at: &str,
    raw_images: Option<Vec<RawImage>>,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> anyhow::Result<(Vec<String>, Vec<PathBuf>)> {
    let mut images = Vec::new();
    let mut image_archives = Vec::new();
    for (j, img) in raw_images.unwrap_or_default().into_iter().enumerate() {
        match img {
            RawImage::Reference(img) => {
                if let Err(e) = Reference::parse(&img) {
                    return Err(doc.error_at(
                        &format!("{at}.images[{j}]"),
                        &[&format!("{at}.images")],
                        format!("{e:#}"),
                    ));
                }
                images.push(img);
            }
            RawImage::Archive(a) => {
                if a.trim().is_empty() {
                    return Err(doc.error_at(
                        &format!("{at}.images[{j}].archive"),
                        &[&format!("{at}.images")],
                        "empty path",
                    ));
                }
                image_archives.push(resolve(&a));
            }
        }
    }
    Ok((images, image_archives))
}

/// `spec.images`: references and local archives not tied to a chart.
fn parse_images(
    doc: &Doc,
    raw_images: Option<Vec<RawImage>>,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> anyhow::Result<Vec<ImageSource>> {
    let mut images = Vec::new();
    for (i, img) in raw_images.unwrap_or_default().into_iter().enumerate() {
        match img {
            RawImage::Reference(r) => {
                if let Err(e) = Reference::parse(&r) {
                    return Err(doc.error_at(
                        &format!("spec.images[{i}]"),
                        &["spec.images"],
                        format!("{e:#}"),
                    ));
                }
                images.push(ImageSource::Reference(r));
            }
            RawImage::Archive(a) => {
                if a.trim().is_empty() {
                    return Err(doc.error_at(
                        &format!("spec.images[{i}].archive"),
                        &[],
                        "empty path",
                    ));
                }
                images.push(ImageSource::Archive(resolve(&a)));
            }
        }
    }
    Ok(images)
}

/// Resolve `auth:` of chart entry `at`: username inline or from the
/// environment, password from the environment or a file, never inline.
fn chart_repo_auth(
    doc: &Doc,
    at: &str,
    a: RawChartAuth,
    resolve: &dyn Fn(&str) -> PathBuf,
) -> anyhow::Result<ChartRepoAuth> {
    let key = |k: &str| format!("{at}.auth.{k}");
    let from_env = |k: &str, var: &str| -> anyhow::Result<String> {
        std::env::var(var).map_err(|_| {
            doc.error_at(
                &key(k),
                &[&format!("{at}.auth")],
                format!(
                    "the environment variable {var} is not set (export it before running pack)"
                ),
            )
        })
    };
    if a.password.is_some() {
        return Err(doc.error_at(
            &key("password"),
            &[],
            "an inline password is refused (the manifest is shared and committed); \
             write passwordEnv: VARIABLE or passwordFile: PATH",
        ));
    }
    let username = match (a.username, a.username_env) {
        (Some(_), Some(_)) => {
            return Err(doc.error_at(
                &key("usernameEnv"),
                &[],
                "username and usernameEnv are both set; keep one",
            ))
        }
        (Some(u), None) => u,
        (None, Some(var)) => from_env("usernameEnv", &var)?,
        (None, None) => String::new(),
    };
    let password = match (a.password_env, a.password_file) {
        (Some(_), Some(_)) => {
            return Err(doc.error_at(
                &key("passwordFile"),
                &[],
                "passwordEnv and passwordFile are both set; keep one",
            ))
        }
        (Some(var), None) => from_env("passwordEnv", &var)?,
        (None, Some(f)) => {
            let p = resolve(&f);
            crate::file_kind::check_path(&p, "auth.passwordFile", false)?;
            let text = std::fs::read_to_string(&p).map_err(|e| {
                doc.error_at(
                    &key("passwordFile"),
                    &[],
                    format!("cannot read {}: {e}", p.display()),
                )
            })?;
            text.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, None) => {
            return Err(doc.error_at(
                &key("passwordEnv"),
                &[&format!("{at}.auth")],
                "missing: give passwordEnv: VARIABLE or passwordFile: PATH",
            ))
        }
    };
    Ok(ChartRepoAuth {
        credentials: crate::oci::auth::Credentials { username, password },
        pass_credentials: a.pass_credentials.unwrap_or(false),
    })
}
