//! How helm reaches a chart: `--repo`, TLS flags, and credentials.
//!
//! Credentials never go on helm's command line, where any user sees them in
//! `ps`: an OCI registry is logged in with `helm registry login
//! --password-stdin` into a registry config inside a private (0700) temp
//! directory, and an HTTP repository with credentials gets a private
//! repositories.yaml (0600) there; the calls that fetch the chart get
//! `--registry-config` / `--repository-config` / `--repository-cache`. The
//! directory is removed when the run ends (and on SIGINT, by the drop).
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::helm::{display_command, Helm};
use super::ChartTarget;
use crate::config::load_image::{RepoKind, SyncConfig};
use crate::error::redact;
use crate::oci::auth::Credentials;

/// The repository name bundler gives the target repo in its private config.
const REPO_NAME: &str = "bundler-target";

/// TLS and transport choices for reaching the chart.
pub struct Transport {
    pub insecure: bool,
    pub ca_file: Option<PathBuf>,
}

/// One run's private helm configuration (created on first need).
#[derive(Default)]
pub struct Access {
    dir: Option<tempfile::TempDir>,
    logged_in: BTreeSet<String>,
    repos_updated: bool,
}

impl Access {
    fn dir(&mut self) -> anyhow::Result<PathBuf> {
        if self.dir.is_none() {
            // tempfile creates directories 0700
            let d = tempfile::Builder::new()
                .prefix("bundler-helm-")
                .tempdir()
                .context("creating a private directory for helm's registry/repository config")?;
            self.dir = Some(d);
        }
        Ok(self.dir.as_ref().expect("just set").path().to_path_buf())
    }

    /// The private directory, once made (it is removed when the run ends,
    /// so a dry run must not print it as if it stayed).
    pub fn private_dir(&self) -> Option<&Path> {
        self.dir.as_ref().map(|d| d.path())
    }

    /// The flags that let helm fetch `chart` (for `template` and `upgrade`);
    /// may rewrite `chart` (an HTTP repo with credentials is reached by its
    /// name in the private repositories.yaml instead of `--repo URL`).
    pub async fn chart_flags(
        &mut self,
        helm: &Helm,
        chart: &mut ChartTarget,
        config: Option<&SyncConfig>,
        transport: &Transport,
    ) -> anyhow::Result<Vec<String>> {
        let target = config.and_then(|c| c.target_repo.as_ref());
        let creds = target
            .and_then(|t| t.auth.as_ref())
            .filter(|a| !a.username.is_empty());
        let mut f = Vec::new();
        let is_oci = chart.chart.starts_with("oci://");
        if is_oci {
            let host = chart
                .chart
                .trim_start_matches("oci://")
                .split('/')
                .next()
                .unwrap_or("")
                .to_string();
            let config_plain = target
                .filter(|t| t.kind == RepoKind::Oci)
                .and_then(|t| t.oci_location())
                .is_some_and(|l| l.plain_http && l.registry == host);
            let plain = config_plain || (transport.insecure && speaks_plain_http(&host).await);
            let mut tls = Vec::new();
            if plain {
                tls.push("--plain-http".to_string());
            } else if transport.insecure {
                tls.push("--insecure-skip-tls-verify".to_string());
            }
            if let Some(ca) = &transport.ca_file {
                f.push("--ca-file".into());
                f.push(ca.to_string_lossy().into_owned());
            }
            if let Some(c) = creds {
                let registry_config = self.login(helm, &host, c, plain, transport).await?;
                f.push("--registry-config".into());
                f.push(registry_config.to_string_lossy().into_owned());
            }
            f.extend(tls);
        } else if let Some(url) = chart.repo_url.clone() {
            if let Some(c) = creds {
                let (repo_config, cache) = self.repository(helm, &url, c, transport).await?;
                chart.chart = format!("{REPO_NAME}/{}", chart.chart);
                chart.repo_url = None;
                f.extend([
                    "--repository-config".into(),
                    repo_config.to_string_lossy().into_owned(),
                    "--repository-cache".into(),
                    cache.to_string_lossy().into_owned(),
                ]);
            } else {
                f.push("--repo".into());
                f.push(url.clone());
                if let Some(ca) = &transport.ca_file {
                    f.push("--ca-file".into());
                    f.push(ca.to_string_lossy().into_owned());
                }
                if transport.insecure && url.starts_with("https://") {
                    f.push("--insecure-skip-tls-verify".into());
                }
            }
        }
        Ok(f)
    }

    /// `helm registry login HOST --username U --password-stdin` into the
    /// private registry config; returns its path.
    async fn login(
        &mut self,
        helm: &Helm,
        host: &str,
        creds: &Credentials,
        plain: bool,
        transport: &Transport,
    ) -> anyhow::Result<PathBuf> {
        let path = self.dir()?.join("registry.json");
        if self.logged_in.contains(host) {
            return Ok(path);
        }
        let mut args: Vec<String> = vec![
            "registry".into(),
            "login".into(),
            host.into(),
            "--username".into(),
            creds.username.clone(),
            "--password-stdin".into(),
            "--registry-config".into(),
            path.to_string_lossy().into_owned(),
        ];
        if plain {
            args.push("--plain-http".into());
        } else if transport.insecure {
            args.push("--insecure".into());
        }
        if let Some(ca) = &transport.ca_file {
            args.push("--ca-file".into());
            args.push(ca.to_string_lossy().into_owned());
        }
        let r = helm
            .exec(&args, Some(creds.password.as_bytes()), helm.query_bound)
            .await?;
        if !r.ok {
            bail!(
                "logging helm in to {host} failed (`{}`): {}",
                display_command(&helm.path, &args),
                redact(r.stderr.trim())
            );
        }
        self.logged_in.insert(host.to_string());
        Ok(path)
    }

    /// A private repositories.yaml (0600) naming the target repo with its
    /// credentials, and its index fetched into a private cache.
    async fn repository(
        &mut self,
        helm: &Helm,
        url: &str,
        creds: &Credentials,
        transport: &Transport,
    ) -> anyhow::Result<(PathBuf, PathBuf)> {
        let dir = self.dir()?;
        let config = dir.join("repositories.yaml");
        let cache = dir.join("repository-cache");
        if self.repos_updated {
            return Ok((config, cache));
        }
        let mut entry = serde_yaml_ng::Mapping::new();
        let mut put = |k: &str, v: serde_yaml_ng::Value| {
            entry.insert(k.into(), v);
        };
        put("name", REPO_NAME.into());
        put("url", url.into());
        put("username", creds.username.clone().into());
        put("password", creds.password.clone().into());
        if let Some(ca) = &transport.ca_file {
            put("caFile", ca.to_string_lossy().into_owned().into());
        }
        put("insecure_skip_tls_verify", transport.insecure.into());
        let mut doc = serde_yaml_ng::Mapping::new();
        doc.insert("apiVersion".into(), "v1".into());
        doc.insert(
            "repositories".into(),
            serde_yaml_ng::Value::Sequence(vec![entry.into()]),
        );
        write_private(&config, &serde_yaml_ng::to_string(&doc)?)?;
        let args: Vec<String> = vec![
            "repo".into(),
            "update".into(),
            REPO_NAME.into(),
            "--repository-config".into(),
            config.to_string_lossy().into_owned(),
            "--repository-cache".into(),
            cache.to_string_lossy().into_owned(),
        ];
        let r = helm.query(&args).await?;
        if !r.ok {
            bail!(
                "fetching the chart repository index of {url} failed (`{}`): {}",
                display_command(&helm.path, &args),
                redact(r.stderr.trim())
            );
        }
        self.repos_updated = true;
        Ok((config, cache))
    }
}

/// Create `path` readable by its owner only, then write `text`.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Whether `host` answers plain HTTP on `/v2/` (an insecure registry).
async fn speaks_plain_http(host: &str) -> bool {
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(_) => return false,
    };
    client
        .get(format!("http://{host}/v2/"))
        .send()
        .await
        .is_ok_and(|r| {
            r.headers().contains_key("docker-distribution-api-version")
                || r.status().as_u16() == 401
                || r.status().is_success()
        })
}
