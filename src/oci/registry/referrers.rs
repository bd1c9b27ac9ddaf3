//! The OCI 1.1 referrers API: `GET /v2/<name>/referrers/<digest>` (an
//! index of the manifests whose `subject` is that digest), and a manifest
//! PUT that reports the `OCI-Subject` header a registry sends when it
//! indexed the pushed manifest's subject itself (when it does not, the
//! client must maintain the `sha256-<hex>` fallback tag; see
//! `crate::referrers::push`).
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;

use super::transport::{header_digest, read_limited, status_error};
use super::{pull_scope, push_scope, Digest, RegistryClient, MAX_MANIFEST_SIZE};
use crate::oci::media::{self, Descriptor, Parsed};

/// What a manifest PUT answered.
#[derive(Debug, Clone)]
pub struct PutManifest {
    pub digest: Digest,
    /// `OCI-Subject`: the registry took the manifest's `subject` into its
    /// referrers API.
    pub oci_subject: Option<Digest>,
}

impl RegistryClient {
    /// The referrers of `digest` in `repo`, or `None` when the registry has
    /// no referrers API (it answers 404 for the route, as CNCF distribution
    /// 2.8 does, or another "no such route" status). The spec says a registry with the API
    /// answers an index, empty when nothing refers to the digest.
    pub async fn get_referrers(
        &self,
        registry: &str,
        repo: &str,
        digest: &Digest,
    ) -> anyhow::Result<Option<Vec<Descriptor>>> {
        let what = format!("referrers of {registry}/{repo}@{digest}");
        let scopes = [pull_scope(repo)];
        let url = self
            .url(registry, &format!("/v2/{repo}/referrers/{digest}"))
            .await?;
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_static(media::OCI_INDEX));
        let resp = self
            .simple(registry, &scopes, Method::GET, url, h, None)
            .await
            .with_context(|| format!("fetching {what}"))?;
        let status = resp.status();
        // No such route: distribution 2.8 answers 404, others 405, 400
        // (the path does not parse as a manifest request) or 501.
        if matches!(
            status,
            StatusCode::NOT_FOUND
                | StatusCode::METHOD_NOT_ALLOWED
                | StatusCode::BAD_REQUEST
                | StatusCode::NOT_ACCEPTABLE
                | StatusCode::NOT_IMPLEMENTED
        ) {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(status_error(resp, &format!("fetching {what}")).await);
        }
        let body = read_limited(resp, MAX_MANIFEST_SIZE, self.stall())
            .await
            .with_context(|| format!("reading {what}"))?;
        match media::parse(&body, Some(media::OCI_INDEX)) {
            Ok(Parsed::Index { manifests, .. }) => Ok(Some(manifests)),
            // Some registries answer the route with something else than an
            // index (an HTML page, a manifest): no usable API.
            _ => Ok(None),
        }
    }

    /// PUT a manifest like [`RegistryClient::put_manifest`], and report the
    /// `OCI-Subject` header of the answer.
    pub async fn put_manifest_with_subject(
        &self,
        registry: &str,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> anyhow::Result<PutManifest> {
        let ours = Digest::of(&bytes);
        if reference.contains(':') && reference.parse::<Digest>()? != ours {
            bail!(
                "manifest for {registry}/{repo}@{reference} hashes to {ours}: refusing to push it"
            );
        }
        let what = format!("pushing manifest {registry}/{repo}:{reference}");
        let scopes = [push_scope(repo)];
        let url = self
            .url(registry, &format!("/v2/{repo}/manifests/{reference}"))
            .await?;
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_str(media_type)
                .map_err(|_| anyhow!("invalid media type {media_type:?}"))?,
        );
        let resp = self
            .simple(registry, &scopes, Method::PUT, url, h, Some(bytes))
            .await
            .with_context(|| what.clone())?;
        if !resp.status().is_success() {
            return Err(status_error(resp, &what).await);
        }
        if let Some(d) = header_digest(&resp)? {
            if d != ours {
                bail!("{what}: the registry computed {d}, we sent {ours}");
            }
        }
        let oci_subject = resp
            .headers()
            .get("oci-subject")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        Ok(PutManifest {
            digest: ours,
            oci_subject,
        })
    }
}
