//! `target.mirrors`: further registries every image also goes to (a
//! second data centre, a DR site, one registry per cluster), each with its
//! own image rewrite rules and credentials:
//!
//! ```yaml
//! target:
//!   containerPrefixRegistry: harbor.dc1.example:443
//!   mirrors:
//!     - containerPrefixRegistry: harbor.dc2.example:443
//!       containers:
//!         auth: {username: robot, password: secret}
//! ```
//!
//! Each entry takes the image keys of `target` (the prefix rules or the
//! replace rules) and `containers.auth`. Charts are relocated for, and
//! published to, the main target only.
use serde::Deserialize;

use super::super::yaml::{lenient_string, Doc};
use super::{creds, non_empty};
use crate::oci::auth::Credentials;
use crate::oci::reference::RewriteRules;

/// One further image registry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    pub rewrite: RewriteRules,
    pub containers_auth: Option<Credentials>,
}

impl Mirror {
    /// The registry host the rules send images to.
    pub fn registry(&self) -> Option<String> {
        (self.rewrite.prefix_registry.clone())
            .or_else(|| self.rewrite.registry.clone())
            .map(|r| r.split('/').next().unwrap_or(&r).to_string())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub(super) struct RawMirror {
    #[serde(default, deserialize_with = "lenient_string")]
    container_registry: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    container_prefix_registry: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    container_repository: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    container_prefix_repository: Option<String>,
    append_origin_registry: Option<bool>,
    containers: Option<RawMirrorContainers>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMirrorContainers {
    auth: Option<RawMirrorAuth>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMirrorAuth {
    #[serde(default, deserialize_with = "lenient_string")]
    username: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    password: Option<String>,
}

/// Validate `target.mirrors`: each names a registry, uses one kind of
/// rules, and is not the main target again.
pub(super) fn parse_mirrors(
    doc: &Doc,
    raw: Option<Vec<RawMirror>>,
    main: &RewriteRules,
) -> anyhow::Result<Vec<Mirror>> {
    let mut out: Vec<Mirror> = Vec::new();
    for (i, m) in raw.unwrap_or_default().into_iter().enumerate() {
        let key = "target.mirrors";
        let at = |what: String| doc.error_at(key, &[], format!("entry {}: {what}", i + 1));
        let rewrite = RewriteRules {
            prefix_registry: non_empty(m.container_prefix_registry),
            prefix_repository: non_empty(m.container_prefix_repository)
                .map(|s| s.trim_matches('/').to_string()),
            append_origin_registry: m.append_origin_registry.unwrap_or(false),
            registry: non_empty(m.container_registry),
            repository: non_empty(m.container_repository).map(|s| s.trim_matches('/').to_string()),
        };
        let prefix = rewrite.prefix_registry.is_some() || rewrite.prefix_repository.is_some();
        let replace = rewrite.registry.is_some() || rewrite.repository.is_some();
        if prefix && replace {
            return Err(at(
                "use the prefix rules (containerPrefixRegistry, containerPrefixRepository) or \
                 the replace rules (containerRegistry, containerRepository), not both"
                    .into(),
            ));
        }
        if rewrite.prefix_registry.is_none() && rewrite.registry.is_none() {
            return Err(at(
                "names no registry: give containerPrefixRegistry or containerRegistry".into(),
            ));
        }
        if &rewrite == main || out.iter().any(|o| o.rewrite == rewrite) {
            return Err(at(
                "sends images where another target already does: remove it".into(),
            ));
        }
        let auth = m.containers.and_then(|c| c.auth);
        out.push(Mirror {
            rewrite,
            containers_auth: creds(
                auth.as_ref().and_then(|a| a.username.clone()),
                auth.as_ref().and_then(|a| a.password.clone()),
            ),
        });
    }
    Ok(out)
}
