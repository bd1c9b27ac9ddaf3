//! Fetching charts from sources (HTTP repo, OCI, local) and publishing them
//! to targets (HARBOR, CHARTMUSEUM, OCI, LOCAL), SPEC §6.
//!
//! Credentials: HTTP targets use `RepoSpec::auth` (basic auth); OCI pushes
//! go through the [`RegistryClient`], whose credential store must hold the
//! target registry's credentials. Errors name URLs without credentials.
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use bytes::Bytes;
use serde_yaml_ng::Value;

use crate::config::load_image::{RepoKind, RepoSpec};
use crate::config::manifest::{ChartEntry, ChartRepoAuth, ChartSource};
use crate::oci::auth::Credentials;
use crate::oci::media::{self, Descriptor};
use crate::oci::registry::{BlobSource, RegistryClient};
use crate::oci::Digest;

use super::package::{self, archive_name, find_in_index, index_entry, merge_index};
use super::Chart;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishOutcome {
    Published,
    /// Same version with the same content already there.
    AlreadyPresent,
}

/// Options shared by publishing calls.
#[derive(Clone, Debug, Default)]
pub struct PublishOptions {
    pub insecure: bool,
    pub ca_file: Option<std::path::PathBuf>,
    pub force: bool,
    pub auto_create_repository: bool,
}

/// Largest chart archive or index accepted over HTTP.
const MAX_DOWNLOAD: usize = 256 << 20;

/// Fetch a chart named by a bundle manifest entry.
pub async fn fetch(
    entry: &ChartEntry,
    base_dir: &std::path::Path,
    client: &RegistryClient,
    opts: &PublishOptions,
) -> anyhow::Result<(Chart, Vec<u8>)> {
    fetch_with_auth(entry, base_dir, client, opts, None).await
}

/// [`fetch`], authenticating to a classic repo with `auth` (the
/// manifest's `BundleManifest::chart_auth` of the entry).
pub async fn fetch_with_auth(
    entry: &ChartEntry,
    base_dir: &std::path::Path,
    client: &RegistryClient,
    opts: &PublishOptions,
    auth: Option<&ChartRepoAuth>,
) -> anyhow::Result<(Chart, Vec<u8>)> {
    let (chart, tgz) = match &entry.source {
        ChartSource::Path(p) => {
            let path = if p.is_absolute() {
                p.clone()
            } else {
                base_dir.join(p)
            };
            let meta = match std::fs::metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    // Bad manifest input (exit 2), named as it resolved.
                    return Err(crate::error::input_error(format!(
                        "chart {}: path {} does not exist (`path:` in a bundle manifest \
                         is relative to the manifest's directory)",
                        entry.name,
                        crate::paths::resolved(
                            &crate::paths::cwd(),
                            &crate::paths::resolved(base_dir, p)
                        )
                        .display(),
                    )));
                }
                r => {
                    r.with_context(|| format!("chart {}: reading {}", entry.name, path.display()))?
                }
            };
            crate::file_kind::require_file(&path, &meta, "chart path", true)?;
            if meta.is_dir() {
                let chart = Chart::from_dir(&path)?;
                let tgz = package::package_tgz(&chart)?;
                (chart, tgz)
            } else {
                let bytes = std::fs::read(&path)
                    .with_context(|| format!("chart {}: reading {}", entry.name, path.display()))?;
                let chart = Chart::from_tgz(&bytes)
                    .with_context(|| format!("chart archive {}", path.display()))?;
                (chart, bytes)
            }
        }
        ChartSource::Repo(url) => {
            let creds = auth.map(|a| &a.credentials);
            let pass = auth.is_some_and(|a| a.pass_credentials);
            fetch_from_repo(url, entry, opts, creds, pass).await?
        }
        ChartSource::Oci(url) => fetch_from_oci(url, entry, client).await?,
    };
    if chart.name != entry.name {
        bail!(
            "chart {}: the chart found is named {:?} (Chart.yaml)",
            entry.name,
            chart.name
        );
    }
    if let Some(v) = &entry.version {
        if chart.version != *v {
            bail!(
                "chart {}: wanted version {v}, found {} (Chart.yaml)",
                entry.name,
                chart.version
            );
        }
    }
    Ok((chart, tgz))
}

/// An HTTP client honouring `--insecure` and `--ca-file`.
pub fn http_client(opts: &PublishOptions) -> anyhow::Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .user_agent(concat!("bundler/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(30))
        .timeout(std::time::Duration::from_secs(600));
    if opts.insecure {
        b = b.danger_accept_invalid_certs(true);
    }
    if let Some(ca) = &opts.ca_file {
        let pem = std::fs::read(ca).with_context(|| format!("reading CA file {}", ca.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("CA file {} is not a PEM certificate", ca.display()))?;
        b = b.add_root_certificate(cert);
    }
    b.build().context("building the HTTP client")
}

fn with_auth(rb: reqwest::RequestBuilder, auth: Option<&Credentials>) -> reqwest::RequestBuilder {
    match auth {
        Some(c) => rb.basic_auth(&c.username, Some(&c.password)),
        None => rb,
    }
}

/// A URL without user info, for messages.
fn safe_url(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut p) => {
            let _ = p.set_username("");
            let _ = p.set_password(None);
            p.to_string()
        }
        Err(_) => u.to_string(),
    }
}

fn describe(e: reqwest::Error) -> String {
    // reqwest errors carry the URL; strip any credentials from it.
    let e = e.without_url();
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

async fn get_bytes(
    http: &reqwest::Client,
    url: &str,
    auth: Option<&Credentials>,
) -> anyhow::Result<Option<Vec<u8>>> {
    let resp = with_auth(http.get(url), auth)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("GET {}: {}", safe_url(url), describe(e)))?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        bail!(
            "GET {}: {status}: the credentials were refused or are missing (check the repo's auth username/password)",
            safe_url(url)
        );
    }
    if !status.is_success() {
        bail!("GET {}: {status}", safe_url(url));
    }
    if resp.content_length().unwrap_or(0) as usize > MAX_DOWNLOAD {
        bail!("GET {}: response too large", safe_url(url));
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| anyhow::anyhow!("GET {}: {}", safe_url(url), describe(e)))?;
    if body.len() > MAX_DOWNLOAD {
        bail!("GET {}: response too large", safe_url(url));
    }
    Ok(Some(body.to_vec()))
}

async fn get_index(
    http: &reqwest::Client,
    base: &str,
    auth: Option<&Credentials>,
) -> anyhow::Result<Option<Value>> {
    let url = format!("{}/index.yaml", base.trim_end_matches('/'));
    match get_bytes(http, &url, auth).await? {
        None => Ok(None),
        Some(b) => Ok(Some(crate::yaml_bounds::from_slice(&b).with_context(
            || format!("{} is not a valid index.yaml", safe_url(&url)),
        )?)),
    }
}

async fn fetch_from_repo(
    url: &str,
    entry: &ChartEntry,
    opts: &PublishOptions,
    auth: Option<&Credentials>,
    pass_credentials: bool,
) -> anyhow::Result<(Chart, Vec<u8>)> {
    let http = http_client(opts)?;
    let base = url.trim_end_matches('/');
    let index = get_index(&http, base, auth)
        .await?
        .with_context(|| format!("{}/index.yaml: not found", safe_url(base)))?;
    let e = find_in_index(&index, &entry.name, entry.version.as_deref()).with_context(|| {
        format!(
            "chart {} {} is not in {}/index.yaml",
            entry.name,
            entry.version.as_deref().unwrap_or("(any version)"),
            safe_url(base)
        )
    })?;
    let first = e
        .get("urls")
        .and_then(Value::as_sequence)
        .and_then(|u| u.first())
        .and_then(Value::as_str)
        .context("index entry has no urls")?;
    let base_url = url::Url::parse(&format!("{base}/"))
        .with_context(|| format!("invalid repo URL {}", safe_url(base)))?;
    let chart_url = base_url
        .join(first)
        .with_context(|| format!("invalid chart URL {first:?}"))?;
    // Like helm: the repo's credentials go to its own scheme/host/port
    // only, unless passCredentials says the chart host may have them.
    let chart_auth = if pass_credentials || same_origin(&base_url, &chart_url) {
        auth
    } else {
        None
    };
    let bytes = get_bytes(&http, chart_url.as_str(), chart_auth)
        .await?
        .with_context(|| format!("{}: not found", safe_url(chart_url.as_str())))?;
    if let Some(d) = e.get("digest").and_then(Value::as_str) {
        let got = Digest::of(&bytes);
        if !d.is_empty() && d.trim_start_matches("sha256:") != got.hex() {
            bail!(
                "{}: digest {} does not match the index ({d})",
                safe_url(chart_url.as_str()),
                got
            );
        }
    }
    let chart = Chart::from_tgz(&bytes)
        .with_context(|| format!("chart archive {}", safe_url(chart_url.as_str())))?;
    Ok((chart, bytes))
}

fn same_origin(a: &url::Url, b: &url::Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// `oci://host[:port]/path` or `http(s)://host[:port]/path` → (host, path).
pub fn parse_oci_url(url: &str) -> anyhow::Result<(String, String)> {
    let loc = crate::config::load_image::parse_oci_url(url)
        .map_err(|why| anyhow::anyhow!("invalid OCI URL {:?}: {why}", safe_url(url)))?;
    Ok((loc.registry, loc.path))
}

fn oci_tag(version: &str) -> String {
    version.replace('+', "_")
}

async fn fetch_from_oci(
    url: &str,
    entry: &ChartEntry,
    client: &RegistryClient,
) -> anyhow::Result<(Chart, Vec<u8>)> {
    let (host, path) = parse_oci_url(url)?;
    let repo = if path.is_empty() {
        entry.name.clone()
    } else {
        format!("{path}/{}", entry.name)
    };
    let version = match &entry.version {
        Some(v) => v.clone(),
        None => {
            let tags = client.list_tags(&host, &repo).await?;
            tags.into_iter()
                .filter(|t| t.chars().next().is_some_and(|c| c.is_ascii_digit()))
                .max_by(|a, b| package::compare_versions(a, b))
                .with_context(|| format!("oci://{host}/{repo} has no version tags"))?
                .replace('_', "+")
        }
    };
    let m = client
        .get_manifest(&host, &repo, &oci_tag(&version))
        .await?;
    let layer = chart_layer(&m.bytes).with_context(|| format!("oci://{host}/{repo}:{version}"))?;
    let bytes = client.pull_blob_bytes(&host, &repo, &layer).await?;
    let chart = Chart::from_tgz(&bytes)
        .with_context(|| format!("chart archive oci://{host}/{repo}:{version}"))?;
    Ok((chart, bytes.to_vec()))
}

fn chart_layer(manifest: &[u8]) -> anyhow::Result<Descriptor> {
    #[derive(serde::Deserialize)]
    struct M {
        #[serde(default)]
        layers: Vec<Descriptor>,
    }
    let m: M = serde_json::from_slice(manifest).context("manifest is not valid JSON")?;
    m.layers
        .into_iter()
        .find(|l| l.media_type == media::HELM_CHART_CONTENT)
        .context("the manifest has no Helm chart layer (not a Helm chart)")
}

/// Publish a packaged chart to a target repo.
pub async fn publish(
    target: &RepoSpec,
    chart: &Chart,
    tgz: &[u8],
    client: &RegistryClient,
    opts: &PublishOptions,
) -> anyhow::Result<PublishOutcome> {
    match target.kind {
        RepoKind::Local => {
            let dir = target
                .path
                .clone()
                .or_else(|| {
                    let u = target.url.strip_prefix("file://").unwrap_or(&target.url);
                    (!u.is_empty()).then(|| PathBuf::from(u))
                })
                .context("LOCAL target needs a path")?;
            publish_local(&dir, chart, tgz, opts.force)
        }
        RepoKind::Chartmuseum => publish_chartmuseum(target, chart, tgz, opts).await,
        RepoKind::Harbor => publish_harbor(target, chart, tgz, client, opts).await,
        RepoKind::Oci => {
            let (host, path) = parse_oci_url(&target.url)?;
            publish_oci(client, &host, &path, chart, tgz, opts.force).await
        }
        RepoKind::Helm => bail!(
            "a HELM repo is a source kind; to publish charts use CHARTMUSEUM, HARBOR, OCI or LOCAL"
        ),
    }
}

/// Unique temp name, mode per umask (a web server must read LOCAL repos).
fn write_atomic(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    crate::atomic_file::write_atomic(path, data)
}

/// LOCAL: `<dir>/<name>-<version>.tgz` plus `index.yaml`.
pub fn publish_local(
    dir: &Path,
    chart: &Chart,
    tgz: &[u8],
    force: bool,
) -> anyhow::Result<PublishOutcome> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Two syncs into the same repo must both keep their index entries.
    let _lock = crate::atomic_file::DirLock::acquire(dir)?;
    // Temp files of killed runs (their PID no longer runs) go, as in pack.
    for p in crate::interrupt::remove_stale_partials(dir) {
        tracing::info!(
            "removed {} (left by a run that no longer runs)",
            p.display()
        );
    }
    let file = dir.join(archive_name(chart));
    let index_path = dir.join("index.yaml");
    let existing_index = match std::fs::read_to_string(&index_path) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("reading {}", index_path.display())),
    };
    let indexed = existing_index
        .as_deref()
        .and_then(|t| crate::yaml_bounds::from_str::<Value>(t).ok())
        .and_then(|v| {
            find_in_index(&v, &chart.name, Some(&chart.version))
                .and_then(|e| e.get("digest").and_then(Value::as_str).map(str::to_string))
        });
    let mut outcome = PublishOutcome::Published;
    match std::fs::read(&file) {
        Ok(old) if old == tgz => {
            if indexed.as_deref() == Some(Digest::of(tgz).hex()) {
                return Ok(PublishOutcome::AlreadyPresent);
            }
            outcome = PublishOutcome::AlreadyPresent;
        }
        Ok(_) if !force => bail!(
            "{} already exists with different content (use --force to overwrite)",
            file.display()
        ),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    }
    if outcome == PublishOutcome::Published {
        write_atomic(&file, tgz)?;
    }
    let entry = index_entry(chart, tgz, &archive_name(chart), &package::now_rfc3339())?;
    let index = merge_index(existing_index.as_deref(), entry)?;
    write_atomic(&index_path, index.as_bytes())?;
    Ok(outcome)
}

/// Compare an index entry with our archive.
fn check_existing(
    index: Option<&Value>,
    chart: &Chart,
    tgz: &[u8],
    force: bool,
    where_: &str,
) -> anyhow::Result<Option<PublishOutcome>> {
    let Some(e) = index.and_then(|i| find_in_index(i, &chart.name, Some(&chart.version))) else {
        return Ok(None);
    };
    let digest = e.get("digest").and_then(Value::as_str).unwrap_or("");
    if digest.trim_start_matches("sha256:") == Digest::of(tgz).hex() {
        return Ok(Some(PublishOutcome::AlreadyPresent));
    }
    if !force {
        bail!(
            "chart {} {} is already in {where_} with different content (use --force to overwrite)",
            chart.name,
            chart.version
        );
    }
    Ok(None)
}

fn multipart(chart: &Chart, tgz: &[u8]) -> anyhow::Result<reqwest::multipart::Form> {
    let part = reqwest::multipart::Part::bytes(tgz.to_vec())
        .file_name(archive_name(chart))
        .mime_str("application/gzip")?;
    Ok(reqwest::multipart::Form::new().part("chart", part))
}

async fn post_chart(
    http: &reqwest::Client,
    url: &str,
    auth: Option<&Credentials>,
    chart: &Chart,
    tgz: &[u8],
) -> anyhow::Result<reqwest::StatusCode> {
    let resp = with_auth(http.post(url), auth)
        .multipart(multipart(chart, tgz)?)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("POST {}: {}", safe_url(url), describe(e)))?;
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
        bail!(
            "POST {}: {status}: the credentials were refused or are missing (check target.repo.auth)",
            safe_url(url)
        );
    }
    if !status.is_success() && status != reqwest::StatusCode::CONFLICT {
        let body = resp.text().await.unwrap_or_default();
        bail!(
            "POST {}: {status}: {}",
            safe_url(url),
            body.chars().take(300).collect::<String>()
        );
    }
    Ok(status)
}

async fn publish_chartmuseum(
    target: &RepoSpec,
    chart: &Chart,
    tgz: &[u8],
    opts: &PublishOptions,
) -> anyhow::Result<PublishOutcome> {
    let http = http_client(opts)?;
    let base = target.url.trim_end_matches('/');
    let auth = target.auth.as_ref();
    let index = get_index(&http, base, auth).await?;
    if let Some(o) = check_existing(index.as_ref(), chart, tgz, opts.force, &safe_url(base))? {
        return Ok(o);
    }
    let mut url = format!("{base}/api/charts");
    if opts.force {
        url.push_str("?force=true");
    }
    let status = post_chart(&http, &url, auth, chart, tgz).await?;
    if status == reqwest::StatusCode::CONFLICT {
        let index = get_index(&http, base, auth).await?;
        if let Some(o) = check_existing(index.as_ref(), chart, tgz, false, &safe_url(base))? {
            return Ok(o);
        }
        bail!(
            "chart {} {} is already in {} (409 Conflict)",
            chart.name,
            chart.version,
            safe_url(base)
        );
    }
    Ok(PublishOutcome::Published)
}

/// `http(s)://host/chartrepo/<project>` (or `http(s)://host/<project>`) →
/// (origin, host, project).
pub fn parse_harbor_url(url: &str) -> anyhow::Result<(String, String, String)> {
    let u =
        url::Url::parse(url).with_context(|| format!("invalid Harbor URL {:?}", safe_url(url)))?;
    let host = u.host_str().context("Harbor URL has no host")?.to_string();
    let host = match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host,
    };
    let origin = format!("{}://{host}", u.scheme());
    let segs: Vec<&str> = u
        .path_segments()
        .map(|s| s.filter(|x| !x.is_empty()).collect())
        .unwrap_or_default();
    let project = match segs.as_slice() {
        ["chartrepo", p, ..] => p.to_string(),
        [p, ..] if *p != "chartrepo" => p.to_string(),
        _ => bail!(
            "Harbor URL {:?} names no project: expected http(s)://host/chartrepo/<project>",
            safe_url(url)
        ),
    };
    Ok((origin, host, project))
}

/// `v2.7.1-6015b3ef` → (2, 7).
fn harbor_version(v: &str) -> Option<(u64, u64)> {
    let v = v.trim_start_matches('v');
    let mut it = v.split(['.', '-']);
    let major = it.next()?.parse().ok()?;
    let minor = it.next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether a Harbor project had to be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProjectOutcome {
    Created,
    Exists,
    /// The host answered 404 on Harbor's project API: not a Harbor.
    NotHarbor,
}

/// Create Harbor project `project` at `origin` (`POST /api/v2.0/projects`,
/// private); 409 means it exists. Used for chart projects and, with
/// `--auto-create-repository`, for the projects images are pushed into.
pub async fn ensure_harbor_project(
    http: &reqwest::Client,
    origin: &str,
    project: &str,
    auth: Option<&Credentials>,
) -> anyhow::Result<ProjectOutcome> {
    let url = format!("{origin}/api/v2.0/projects");
    let body = serde_json::json!({
        "project_name": project,
        "public": false,
        "metadata": {"public": "false"},
    });
    let resp = with_auth(http.post(&url), auth)
        .json(&body)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("POST {}: {}", safe_url(&url), describe(e)))?;
    let status = resp.status();
    match status {
        s if s.is_success() => Ok(ProjectOutcome::Created),
        reqwest::StatusCode::CONFLICT => Ok(ProjectOutcome::Exists),
        reqwest::StatusCode::NOT_FOUND | reqwest::StatusCode::METHOD_NOT_ALLOWED => {
            Ok(ProjectOutcome::NotHarbor)
        }
        reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN => {
            bail!("creating Harbor project {project:?}: {status}: the credentials were refused or are missing")
        }
        _ => bail!(
            "creating Harbor project {project:?}: POST {}: {status}",
            safe_url(&url)
        ),
    }
}

async fn publish_harbor(
    target: &RepoSpec,
    chart: &Chart,
    tgz: &[u8],
    client: &RegistryClient,
    opts: &PublishOptions,
) -> anyhow::Result<PublishOutcome> {
    let http = http_client(opts)?;
    let auth = target.auth.as_ref();
    let (origin, host, project) = parse_harbor_url(&target.url)?;
    let info_url = format!("{origin}/api/v2.0/systeminfo");
    let info = get_bytes(&http, &info_url, auth)
        .await?
        .with_context(|| format!("{}: not found: is this a Harbor?", safe_url(&info_url)))?;
    let info: serde_json::Value = serde_json::from_slice(&info)
        .with_context(|| format!("{}: not JSON", safe_url(&info_url)))?;
    let version = info
        .get("harbor_version")
        .and_then(|v| v.as_str())
        .unwrap_or("");
    let legacy = match harbor_version(version) {
        Some((major, minor)) => (major, minor) < (2, 8),
        None => false,
    };
    if opts.auto_create_repository {
        ensure_harbor_project(&http, &origin, &project, auth).await?;
    }
    if !legacy {
        return publish_oci(client, &host, &project, chart, tgz, opts.force).await;
    }
    let repo_base = format!("{origin}/chartrepo/{project}");
    let index = get_index(&http, &repo_base, auth).await?;
    if let Some(o) = check_existing(
        index.as_ref(),
        chart,
        tgz,
        opts.force,
        &safe_url(&repo_base),
    )? {
        return Ok(o);
    }
    let exists = index
        .as_ref()
        .and_then(|i| find_in_index(i, &chart.name, Some(&chart.version)))
        .is_some();
    if exists {
        // --force: Harbor's chart API has no overwrite flag; delete first.
        let url = format!(
            "{origin}/api/chartrepo/{project}/charts/{}/{}",
            chart.name, chart.version
        );
        let resp = with_auth(http.delete(&url), auth)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("DELETE {}: {}", safe_url(&url), describe(e)))?;
        if !resp.status().is_success() && resp.status() != reqwest::StatusCode::NOT_FOUND {
            bail!("DELETE {}: {}", safe_url(&url), resp.status());
        }
    }
    let url = format!("{origin}/api/chartrepo/{project}/charts");
    let status = post_chart(&http, &url, auth, chart, tgz).await?;
    if status == reqwest::StatusCode::CONFLICT {
        let index = get_index(&http, &repo_base, auth).await?;
        if let Some(o) = check_existing(index.as_ref(), chart, tgz, false, &safe_url(&repo_base))? {
            return Ok(o);
        }
        bail!(
            "chart {} {} is already in {} (409 Conflict)",
            chart.name,
            chart.version,
            safe_url(&repo_base)
        );
    }
    Ok(PublishOutcome::Published)
}

/// Helm's config blob: the Chart.yaml metadata as JSON.
pub fn helm_config_json(chart: &Chart) -> anyhow::Result<Vec<u8>> {
    let meta = chart.metadata()?;
    let json: serde_json::Value =
        serde_json::to_value(&meta.raw).context("Chart.yaml cannot be expressed as JSON")?;
    Ok(serde_json::to_vec(&json)?)
}

/// The OCI manifest Helm writes for a chart (config, one chart layer).
pub fn helm_oci_manifest(chart: &Chart, config: &[u8], tgz: &[u8]) -> anyhow::Result<Vec<u8>> {
    let m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "config": {
            "mediaType": media::HELM_CONFIG,
            "digest": Digest::of(config).to_string(),
            "size": config.len(),
        },
        "layers": [{
            "mediaType": media::HELM_CHART_CONTENT,
            "digest": Digest::of(tgz).to_string(),
            "size": tgz.len(),
        }],
        "annotations": {
            "org.opencontainers.image.title": chart.name,
            "org.opencontainers.image.version": chart.version,
        },
    });
    Ok(serde_json::to_vec(&m)?)
}

/// Push a chart as an OCI artifact to `<host>/<path>/<name>:<version>`.
pub async fn publish_oci(
    client: &RegistryClient,
    host: &str,
    path: &str,
    chart: &Chart,
    tgz: &[u8],
    force: bool,
) -> anyhow::Result<PublishOutcome> {
    let repo = if path.is_empty() {
        chart.name.clone()
    } else {
        format!("{path}/{}", chart.name)
    };
    let tag = oci_tag(&chart.version);
    let config = helm_config_json(chart)?;
    let manifest = helm_oci_manifest(chart, &config, tgz)?;
    let manifest_digest = Digest::of(&manifest);
    if let Some(existing) = client.head_manifest(host, &repo, &tag).await? {
        if existing == manifest_digest {
            return Ok(PublishOutcome::AlreadyPresent);
        }
        let m = client.get_manifest(host, &repo, &tag).await?;
        let same_chart = chart_layer(&m.bytes)
            .map(|l| l.digest == Digest::of(tgz))
            .unwrap_or(false);
        if same_chart {
            return Ok(PublishOutcome::AlreadyPresent);
        }
        if !force {
            bail!(
                "chart {} {} is already in oci://{host}/{repo} with different content (use --force to overwrite)",
                chart.name,
                chart.version
            );
        }
    }
    for (digest, bytes) in [
        (Digest::of(&config), Bytes::from(config.clone())),
        (Digest::of(tgz), Bytes::from(tgz.to_vec())),
    ] {
        client
            .push_blob(host, &repo, &digest, BlobSource::Bytes(bytes), None, None)
            .await
            .with_context(|| format!("pushing chart {} to oci://{host}/{repo}", chart.name))?;
    }
    let got = client
        .put_manifest(
            host,
            &repo,
            &tag,
            media::OCI_MANIFEST,
            Bytes::from(manifest),
        )
        .await
        .with_context(|| format!("pushing chart {} to oci://{host}/{repo}:{tag}", chart.name))?;
    if got != manifest_digest {
        bail!("registry stored the chart manifest as {got}, expected {manifest_digest}");
    }
    Ok(PublishOutcome::Published)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_oci_url("oci://127.0.0.1:5000/charts/x").unwrap(),
            ("127.0.0.1:5000".into(), "charts/x".into())
        );
        assert_eq!(
            parse_oci_url("http://h:1").unwrap(),
            ("h:1".into(), "".into())
        );
        assert_eq!(
            parse_harbor_url("https://harbor.local:8443/chartrepo/skoala").unwrap(),
            (
                "https://harbor.local:8443".into(),
                "harbor.local:8443".into(),
                "skoala".into()
            )
        );
        assert!(parse_harbor_url("https://harbor.local/").is_err());
        assert_eq!(harbor_version("v2.7.1-6015b3ef"), Some((2, 7)));
        assert_eq!(harbor_version("v2.10.0"), Some((2, 10)));
    }
}
