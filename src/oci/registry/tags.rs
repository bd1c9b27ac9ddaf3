//! Tag listing with `Link` pagination.

use anyhow::Context;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};

use super::transport::{read_limited, status_error};
use super::{pull_scope, RegistryClient};

impl RegistryClient {
    /// List tags of a repository (`/v2/<repo>/tags/list`), for `upgrade`.
    /// A repository the registry does not know has no tags.
    pub async fn list_tags(&self, registry: &str, repo: &str) -> anyhow::Result<Vec<String>> {
        let scopes = [pull_scope(repo)];
        let mut url = self
            .url(registry, &format!("/v2/{repo}/tags/list?n=1000"))
            .await?;
        let mut tags = Vec::new();
        for _page in 0..10_000 {
            let resp = self
                .simple(
                    registry,
                    &scopes,
                    Method::GET,
                    url.clone(),
                    HeaderMap::new(),
                    None,
                )
                .await
                .with_context(|| format!("listing tags of {registry}/{repo}"))?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(tags);
            }
            if !resp.status().is_success() {
                return Err(
                    status_error(resp, &format!("listing tags of {registry}/{repo}")).await,
                );
            }
            let next = resp
                .headers()
                .get("link")
                .and_then(|v| v.to_str().ok())
                .and_then(|l| {
                    let (target, rel) = l.split_once(';')?;
                    rel.contains("next").then(|| {
                        target
                            .trim()
                            .trim_start_matches('<')
                            .trim_end_matches('>')
                            .to_string()
                    })
                });
            let base = resp.url().clone();
            let body = read_limited(resp, 64 << 20, self.stall()).await?;
            #[derive(serde::Deserialize)]
            struct TagList {
                #[serde(default)]
                tags: Option<Vec<String>>,
            }
            let list: TagList = serde_json::from_slice(&body)
                .with_context(|| format!("tag list of {registry}/{repo} is not valid JSON"))?;
            tags.extend(list.tags.unwrap_or_default());
            match next {
                Some(n) => url = base.join(&n)?,
                None => return Ok(tags),
            }
        }
        Ok(tags)
    }
}
