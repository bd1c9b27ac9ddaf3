//! Credentials and bearer tokens: which `Authorization` a request carries.
//! Auth follows the registry's `WWW-Authenticate` challenge: Basic sends
//! the credentials, Bearer fetches a token for the scopes the operation
//! needs (cached per host and scope set); a 401 re-authenticates once.
use std::time::{Duration, Instant};

use anyhow::anyhow;
use reqwest::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use reqwest::{Response, StatusCode};
use url::Url;

use super::transport::{
    backoff, read_limited, retry_after, retryable_status, sensitive, show, status_error, tls_error,
    Call,
};
use super::RegistryClient;
use crate::error::CredentialError;
use crate::oci::auth::{parse_www_authenticate, Challenge, Credentials};

/// 401s seen by one call, with and without auth sent.
#[derive(Default)]
pub(super) struct Refusals {
    pub(super) without_auth: bool,
    pub(super) with_auth: bool,
}

pub(super) fn credential_error(
    registry: &str,
    creds: Option<&Credentials>,
    what: String,
) -> anyhow::Error {
    let detail = match creds {
        Some(c) => format!(
            "the credentials for user {:?} were rejected ({what})",
            c.username
        ),
        None => format!(
            "credentials are missing: the registry requires authentication and none are \
             configured for this host ({what})"
        ),
    };
    anyhow::Error::new(CredentialError {
        registry: registry.to_string(),
        detail,
    })
}

impl RegistryClient {
    // ----- credentials and tokens -------------------------------------------

    pub(super) async fn creds_for(&self, registry: &str) -> Option<Credentials> {
        if let Some(c) = self.inner.cred_cache.lock().unwrap().get(registry) {
            return c.clone();
        }
        let store = self.inner.creds.clone();
        let reg = registry.to_string();
        let found = tokio::task::spawn_blocking(move || store.lookup(&reg))
            .await
            .unwrap_or(None);
        self.inner
            .cred_cache
            .lock()
            .unwrap()
            .insert(registry.to_string(), found.clone());
        found
    }

    pub(super) fn token_key(registry: &str, scopes: &[String]) -> (String, String) {
        let mut s: Vec<&str> = scopes.iter().map(|s| s.as_str()).collect();
        s.sort();
        s.dedup();
        (registry.to_string(), s.join(" "))
    }

    /// The Authorization header value for a request, from the challenge
    /// the host sent before (None when none was seen yet).
    pub(super) async fn auth_header(
        &self,
        registry: &str,
        scopes: &[String],
    ) -> anyhow::Result<Option<String>> {
        let ch = self.inner.challenges.lock().unwrap().get(registry).cloned();
        match ch {
            None => Ok(None),
            Some(Challenge::Basic { .. }) => {
                Ok(self.creds_for(registry).await.map(|c| c.basic_header()))
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let key = Self::token_key(registry, scopes);
                if let Some((tok, exp)) = self.inner.tokens.lock().unwrap().get(&key) {
                    if Instant::now() < *exp {
                        return Ok(Some(format!("Bearer {tok}")));
                    }
                }
                let mut want: Vec<String> = scopes.to_vec();
                if want.is_empty() {
                    if let Some(s) = scope {
                        want.extend(s.split_whitespace().map(String::from));
                    }
                }
                let (tok, ttl) = self
                    .fetch_token(registry, &realm, service.as_deref(), &want)
                    .await?;
                self.inner
                    .tokens
                    .lock()
                    .unwrap()
                    .insert(key, (tok.clone(), Instant::now() + ttl));
                Ok(Some(format!("Bearer {tok}")))
            }
        }
    }

    pub(super) fn forget_token(&self, registry: &str, scopes: &[String]) {
        let key = Self::token_key(registry, scopes);
        self.inner.tokens.lock().unwrap().remove(&key);
    }

    /// GET the token realm with service and scopes (basic creds if any).
    pub(super) async fn fetch_token(
        &self,
        registry: &str,
        realm: &str,
        service: Option<&str>,
        scopes: &[String],
    ) -> anyhow::Result<(String, Duration)> {
        let mut url = Url::parse(realm)
            .map_err(|e| anyhow!("{registry}: invalid token realm {realm:?}: {e}"))?;
        // Without --insecure the registry is HTTPS: a plain-HTTP realm
        // would get the user's password (basic auth) in clear text.
        if url.scheme() != "https" && !self.inner.opts.insecure {
            return Err(crate::error::input_error(format!(
                "{registry} (HTTPS) sends its token requests to {}, which is plain HTTP: \
                 refused, the credentials would cross the network in clear text. Fix the \
                 registry's token realm, or pass --insecure to allow it",
                show(&url)
            )));
        }
        {
            let mut q = url.query_pairs_mut();
            if let Some(s) = service {
                q.append_pair("service", s);
            }
            for s in scopes {
                q.append_pair("scope", s);
            }
        }
        let creds = self.creds_for(registry).await;
        let mut attempt = 0;
        let resp = loop {
            attempt += 1;
            let mut rb = self.inner.http.get(url.clone());
            if let Some(c) = &creds {
                rb = rb.header(AUTHORIZATION, sensitive(&c.basic_header())?);
            }
            self.count_request();
            match self.send_watched(rb).await {
                Ok(r) if retryable_status(r.status()) && attempt < self.max_attempts() => {
                    let d = retry_after(&r).unwrap_or_else(|| backoff(attempt));
                    self.count_retry();
                    tokio::time::sleep(d).await;
                }
                Ok(r) => break r,
                Err(e) => {
                    if let Some(t) = e.tls() {
                        if !self.inner.opts.insecure {
                            return Err(tls_error(url.host_str().unwrap_or(realm), &t));
                        }
                    }
                    if attempt >= self.max_attempts() {
                        let what = format!("token request to {}", show(&url));
                        return Err(e.give_up(&what, attempt));
                    }
                    self.count_retry();
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        };
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(credential_error(
                registry,
                creds.as_ref(),
                format!("token service {} answered {status}", show(&url)),
            ));
        }
        if !status.is_success() {
            return Err(status_error(resp, "token request").await);
        }
        let body = read_limited(resp, 1 << 20, self.stall()).await?;
        #[derive(serde::Deserialize)]
        struct TokenResp {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let t: TokenResp = serde_json::from_slice(&body).map_err(|_| {
            anyhow!(
                "token service {} answered something that is not a token",
                show(&url)
            )
        })?;
        let tok = t
            .token
            .filter(|s| !s.is_empty())
            .or(t.access_token.filter(|s| !s.is_empty()))
            .ok_or_else(|| anyhow!("token service {} answered without a token", show(&url)))?;
        // Refresh a little early; the spec's default lifetime is 60 s.
        let ttl = Duration::from_secs(t.expires_in.unwrap_or(60).max(10) - 5);
        Ok((tok, ttl))
    }

    /// A 401: remember the challenge it carries so the next try
    /// authenticates, or fail when authenticating cannot help.
    ///
    /// A 401 to a request sent without auth teaches the challenge; a 401
    /// to auth we sent (an expired or revoked token, a token fetched just
    /// before a clock-skewed expiry) earns one fresh token. A second
    /// refusal of either kind is a credential error.
    pub(super) async fn learn_challenge(
        &self,
        call: &Call<'_>,
        resp: &Response,
        sent_auth: bool,
        refusals: &mut Refusals,
    ) -> anyhow::Result<()> {
        let creds = self.creds_for(call.registry).await;
        let what = format!("{} {} answered 401", call.method, show(&call.url));
        let seen = if sent_auth {
            &mut refusals.with_auth
        } else {
            &mut refusals.without_auth
        };
        if *seen {
            return Err(credential_error(call.registry, creds.as_ref(), what));
        }
        *seen = true;
        let ch = resp
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_www_authenticate);
        let Some(ch) = ch else {
            return Err(credential_error(call.registry, creds.as_ref(), what));
        };
        if matches!(ch, Challenge::Basic { .. }) && creds.is_none() {
            return Err(credential_error(call.registry, None, what));
        }
        self.inner
            .challenges
            .lock()
            .unwrap()
            .insert(call.registry.to_string(), ch);
        self.forget_token(call.registry, call.scopes);
        Ok(())
    }
}
