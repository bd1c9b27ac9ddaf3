//! What bundler deployed, kept in the cluster beside helm's own state.
//!
//! helm keeps a release as Secrets in the release namespace; bundler keeps
//! one more there, `bundler.deployed.<release>` (type
//! `bundler.io/deploy-record`), holding the product, chart version, package
//! (bundle.json) digest, the helm revision bundler's upgrade wrote, and the
//! images it proved with their digests. Anyone with the kubeconfig reads it
//! (`bundler status` from any machine, no local files needed); a revision
//! newer than the recorded one is a change made outside bundler (drift).
//!
//! Written and read with `kubectl` (`create`, else `replace`; `get -o
//! json`), so every way a kubeconfig authenticates works as it does for
//! helm, and no credential passes through bundler. The record holds no
//! values (they may hold secrets), only names and digests.
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::helm::{display_command, Helm};
use crate::error::redact;

pub const RECORD_KEY: &str = "record.json";
pub const RECORD_TYPE: &str = "bundler.io/deploy-record";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployRecord {
    pub release: String,
    pub namespace: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<crate::bundle::format::ProductInfo>,
    pub chart: String,
    pub chart_version: String,
    /// sha256 of the bundle's bundle.json (empty: not recorded at sync).
    #[serde(default)]
    pub package_digest: String,
    /// The helm revision bundler's upgrade wrote.
    pub revision: String,
    pub registry: String,
    /// The images the post-upgrade check proved: `image` → `digest`.
    pub images: Vec<RecordedImage>,
    /// `upgraded` (proven), `rolled-back` (bundler put an earlier revision back).
    #[serde(default)]
    pub outcome: String,
    /// RFC 3339 UTC.
    pub deployed_at: String,
    pub bundler_version: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordedImage {
    pub image: String,
    pub digest: String,
}

pub fn secret_name(release: &str) -> String {
    format!("bundler.deployed.{release}")
}

/// kubectl with the same cluster as a helm (`--kube-context` → `--context`).
#[derive(Clone, Debug)]
pub struct Kubectl {
    pub path: PathBuf,
    pub cluster: Vec<String>,
    pub bound: Duration,
}

impl Kubectl {
    /// `--kubectl`, `$BUNDLER_KUBECTL`, else `kubectl` on PATH; the cluster flags of `helm`.
    pub fn for_helm(path: Option<&std::path::Path>, helm: &Helm) -> Kubectl {
        let path = path
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("BUNDLER_KUBECTL").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("kubectl"));
        let cluster = helm
            .cluster
            .iter()
            .map(|a| {
                if a == "--kube-context" {
                    "--context".to_string()
                } else {
                    a.clone()
                }
            })
            .collect();
        Kubectl {
            path,
            cluster,
            bound: helm.query_bound,
        }
    }

    async fn run(
        &self,
        args: &[String],
        stdin: Option<&[u8]>,
    ) -> anyhow::Result<(bool, String, String)> {
        use tokio::io::AsyncWriteExt;
        let mut all = self.cluster.clone();
        all.extend(args.iter().cloned());
        let mut cmd = tokio::process::Command::new(&self.path);
        cmd.args(&all)
            .stdin(if stdin.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "cannot run kubectl ({}) to read or write bundler's deploy record: install kubectl, \
                 or give its path with --kubectl or $BUNDLER_KUBECTL",
                self.path.display()
            )
        })?;
        if let (Some(bytes), Some(mut w)) = (stdin, child.stdin.take()) {
            w.write_all(bytes).await?;
            drop(w);
        }
        let out = tokio::time::timeout(self.bound, child.wait_with_output())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "`{}` did not finish within {:?}; it was stopped",
                    display_command(&self.path, &all),
                    self.bound
                )
            })??;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    /// Create or replace the record of `rec.release` in `rec.namespace`.
    pub async fn write(&self, rec: &DeployRecord) -> anyhow::Result<()> {
        let data = base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(rec)?);
        let secret = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": secret_name(&rec.release),
                "namespace": rec.namespace,
                "labels": {
                    "app.kubernetes.io/managed-by": "bundler",
                    "bundler.io/release": rec.release,
                },
            },
            "type": RECORD_TYPE,
            "data": { RECORD_KEY: data },
        });
        let body = serde_json::to_vec(&secret)?;
        let create: Vec<String> = ["create", "-f", "-"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (ok, _, err) = self.run(&create, Some(&body)).await?;
        if ok {
            return Ok(());
        }
        if !err.contains("AlreadyExists") {
            bail!(
                "writing bundler's deploy record {} in namespace {} (`{}`): {}",
                secret_name(&rec.release),
                rec.namespace,
                display_command(&self.path, &create),
                redact(err.trim())
            );
        }
        let replace: Vec<String> = ["replace", "-f", "-"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (ok, _, err) = self.run(&replace, Some(&body)).await?;
        if !ok {
            bail!(
                "replacing bundler's deploy record {} in namespace {} (`{}`): {}",
                secret_name(&rec.release),
                rec.namespace,
                display_command(&self.path, &replace),
                redact(err.trim())
            );
        }
        Ok(())
    }

    /// The record of `release` in `ns`; `None` when bundler never wrote one.
    pub async fn read(&self, release: &str, ns: &str) -> anyhow::Result<Option<DeployRecord>> {
        let args: Vec<String> = [
            "get",
            "secret",
            &secret_name(release),
            "-n",
            ns,
            "-o",
            "json",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let (ok, out, err) = self.run(&args, None).await?;
        if !ok {
            if err.contains("NotFound") || err.contains("not found") {
                return Ok(None);
            }
            bail!(
                "reading bundler's deploy record (`{}`): {}",
                display_command(&self.path, &args),
                redact(err.trim())
            );
        }
        let v: serde_json::Value = serde_json::from_str(&out)
            .with_context(|| format!("`{}` printed no JSON", display_command(&self.path, &args)))?;
        let data = v["data"][RECORD_KEY].as_str().with_context(|| {
            format!(
                "Secret {} in {ns} has no {RECORD_KEY}: not written by bundler",
                secret_name(release)
            )
        })?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(data)
            .context("deploy record: bad base64")?;
        let rec = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "Secret {} in {ns}: not a bundler deploy record",
                secret_name(release)
            )
        })?;
        Ok(Some(rec))
    }
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
