//! Manifests and indexes: GET (verified against the reference and
//! `Docker-Content-Digest`), HEAD, PUT.
use std::sync::atomic::Ordering;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};
use reqwest::{Method, StatusCode};

use super::stall::{stalled_advice, Stalled};
use super::transport::{backoff, header_digest, read_limited, show, status_error, BodyTooLarge};
use super::{pull_scope, push_scope, Digest, FetchedManifest, RegistryClient, MAX_MANIFEST_SIZE};
use crate::oci::media::{self};
use url::Url;

/// Times a manifest PUT is sent while the registry answers that a blob or
/// child manifest it references is unknown (see [`RefsUnknown`]).
const REFS_UNKNOWN_ATTEMPTS: u32 = 5;

/// A manifest PUT the registry kept refusing because a blob or child
/// manifest it references is unknown, although the caller pushed it first.
///
/// Why it happens: distribution (and registries built on it) rewrites a
/// blob's per-repository link file in place (truncate, then write) on
/// every upload or mount of that blob. A manifest PUT that checks the
/// link at that instant reads an empty file and answers `400
/// DIGEST_INVALID; MANIFEST_BLOB_UNKNOWN`: another client pushing the same
/// blob into the same repository (a second sync of an overlapping
/// product) makes a blob that is there look unknown for a moment. The PUT
/// is therefore asked again a few times, with backoff, before this error.
#[derive(Debug)]
pub struct RefsUnknown(pub String);

impl std::fmt::Display for RefsUnknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for RefsUnknown {}

/// Whether a refused manifest PUT says that something it references is
/// unknown to the registry (error codes of the distribution spec).
fn refs_unknown(err: &anyhow::Error) -> bool {
    let text = format!("{err:#}");
    ["MANIFEST_BLOB_UNKNOWN", "BLOB_UNKNOWN", "MANIFEST_UNKNOWN"]
        .iter()
        .any(|code| text.contains(code))
}

impl RegistryClient {
    // ----- manifests ---------------------------------------------------------

    /// GET a manifest or index by tag or digest. Errors name the reference.
    pub async fn get_manifest(
        &self,
        registry: &str,
        repo: &str,
        reference: &str,
    ) -> anyhow::Result<FetchedManifest> {
        let what = format!("manifest {registry}/{repo}:{reference}");
        self.get_manifest_inner(registry, repo, reference)
            .await
            .with_context(|| format!("fetching {what}"))
    }

    pub(super) async fn get_manifest_inner(
        &self,
        registry: &str,
        repo: &str,
        reference: &str,
    ) -> anyhow::Result<FetchedManifest> {
        let scopes = [pull_scope(repo)];
        let url = self
            .url(registry, &format!("/v2/{repo}/manifests/{reference}"))
            .await?;
        let (media_type, served, bytes) = self.fetch_manifest_body(registry, &scopes, url).await?;
        self.inner
            .stats
            .bytes_downloaded
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let digest = Digest::of(&bytes);
        if reference.contains(':') {
            let want: Digest = reference.parse()?;
            if want != digest {
                bail!("the registry served content with digest {digest}, not the {want} asked for");
            }
        }
        if let Some(d) = served {
            if d != digest {
                bail!("the registry says the manifest is {d} but its content hashes to {digest}");
            }
        }
        let media_type = if media_type.is_empty()
            || media_type == "application/json"
            || media_type == "text/plain"
        {
            // Fall back to the mediaType field of the document.
            serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.get("mediaType")
                        .and_then(|m| m.as_str())
                        .map(String::from)
                })
                .unwrap_or(media_type)
        } else {
            media_type
        };
        Ok(FetchedManifest {
            bytes,
            media_type,
            digest,
        })
    }

    /// GET a manifest: its `Content-Type` (without parameters), the
    /// `Docker-Content-Digest` it came with, and its bytes. A body that
    /// breaks off or stalls is fetched again, up to the usual attempts.
    async fn fetch_manifest_body(
        &self,
        registry: &str,
        scopes: &[String],
        url: Url,
    ) -> anyhow::Result<(String, Option<Digest>, Bytes)> {
        let max = self.max_attempts();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut h = HeaderMap::new();
            h.insert(ACCEPT, HeaderValue::from_static(media::MANIFEST_ACCEPT));
            let resp = self
                .simple(registry, scopes, Method::GET, url.clone(), h, None)
                .await?;
            if resp.status() == StatusCode::NOT_FOUND {
                bail!("not found in the registry ({})", resp.status());
            }
            if !resp.status().is_success() {
                return Err(status_error(resp, "GET manifest").await);
            }
            let media_type = resp
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.split(';').next().unwrap_or(s).trim().to_string())
                .unwrap_or_default();
            let served = header_digest(&resp)?;
            match read_limited(resp, MAX_MANIFEST_SIZE, self.stall()).await {
                Ok(b) => return Ok((media_type, served, Bytes::from(b))),
                Err(e) if e.is::<BodyTooLarge>() => return Err(e),
                Err(e) if attempt >= max => {
                    let what = format!("GET {} failed after {attempt} attempts", show(&url));
                    return Err(if e.is::<Stalled>() {
                        anyhow::Error::new(Stalled(format!("{what}: {e}{}", stalled_advice())))
                    } else {
                        e.context(what)
                    });
                }
                Err(e) => {
                    tracing::warn!(
                        "GET {}: {e} (attempt {attempt} of {max}); retrying",
                        show(&url)
                    );
                    self.count_retry();
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
    }

    /// HEAD a manifest: its digest, or `None` when the registry says 404.
    pub async fn head_manifest(
        &self,
        registry: &str,
        repo: &str,
        reference: &str,
    ) -> anyhow::Result<Option<Digest>> {
        let scopes = [pull_scope(repo)];
        let url = self
            .url(registry, &format!("/v2/{repo}/manifests/{reference}"))
            .await?;
        let mut h = HeaderMap::new();
        h.insert(ACCEPT, HeaderValue::from_static(media::MANIFEST_ACCEPT));
        let resp = self
            .simple(registry, &scopes, Method::HEAD, url, h, None)
            .await
            .with_context(|| format!("checking manifest {registry}/{repo}:{reference}"))?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(status_error(
                resp,
                &format!("HEAD manifest {registry}/{repo}:{reference}"),
            )
            .await);
        }
        match header_digest(&resp)? {
            Some(d) => Ok(Some(d)),
            // No digest header: fetch it and hash.
            None => Ok(Some(
                self.get_manifest(registry, repo, reference).await?.digest,
            )),
        }
    }

    /// PUT a manifest (bytes as given) under a tag or its digest; returns
    /// the digest the registry computed, which must equal ours.
    pub async fn put_manifest(
        &self,
        registry: &str,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: Bytes,
    ) -> anyhow::Result<Digest> {
        let ours = Digest::of(&bytes);
        if reference.contains(':') {
            let want: Digest = reference.parse()?;
            if want != ours {
                bail!(
                    "manifest for {registry}/{repo}@{want} hashes to {ours}: refusing to push it"
                );
            }
        }
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
        let n = bytes.len() as u64;
        let what = format!("pushing manifest {registry}/{repo}:{reference}");
        let mut attempt = 0u32;
        let resp = loop {
            attempt += 1;
            let resp = self
                .simple(
                    registry,
                    &scopes,
                    Method::PUT,
                    url.clone(),
                    h.clone(),
                    Some(bytes.clone()),
                )
                .await
                .with_context(|| what.clone())?;
            if resp.status().is_success() {
                break resp;
            }
            let refused = resp.status() == StatusCode::BAD_REQUEST;
            let err = status_error(resp, &what).await;
            if !(refused && refs_unknown(&err)) {
                return Err(err);
            }
            // The caller pushed what the manifest references first; a
            // registry that does not see it now is most likely reading a
            // link another client is rewriting this very moment.
            if attempt >= REFS_UNKNOWN_ATTEMPTS {
                return Err(anyhow::Error::new(RefsUnknown(format!("{err:#}"))));
            }
            tracing::info!("{err:#} (attempt {attempt}); asking again");
            self.count_retry();
            tokio::time::sleep(backoff(attempt + 1)).await;
        };
        self.inner
            .stats
            .bytes_uploaded
            .fetch_add(n, Ordering::Relaxed);
        if let Some(d) = header_digest(&resp)? {
            if d != ours {
                bail!("pushing manifest {registry}/{repo}:{reference}: the registry computed {d}, we sent {ours}");
            }
        }
        Ok(ours)
    }
}
