//! Validation of `target`'s image rewrite rules in `load-image.yaml`:
//! prefix rules or replace rules (not both), and registry hosts and
//! repository paths a registry accepts. Kept apart from the schema so the
//! rules a user can get wrong are in one place.
use super::yaml::{self, Doc};
use crate::oci::reference::RewriteRules;

/// Refuse prefix rules mixed with replace rules (naming the key that comes
/// second in the file), `appendOriginRegistry` without a prefix registry,
/// and malformed hosts or repository paths.
pub(super) fn check_rewrite_rules(doc: &Doc, rewrite: &RewriteRules) -> anyhow::Result<()> {
    let prefix_key = if rewrite.prefix_registry.is_some() {
        Some("target.containerPrefixRegistry")
    } else if rewrite.prefix_repository.is_some() {
        Some("target.containerPrefixRepository")
    } else if rewrite.append_origin_registry {
        Some("target.appendOriginRegistry")
    } else {
        None
    };
    let replace_key = if rewrite.registry.is_some() {
        Some("target.containerRegistry")
    } else if rewrite.repository.is_some() {
        Some("target.containerRepository")
    } else {
        None
    };
    if let (Some(p), Some(r)) = (prefix_key, replace_key) {
        let (first, second) = match (
            yaml::locate(&doc.text, &yaml::path(p)),
            yaml::locate(&doc.text, &yaml::path(r)),
        ) {
            (Some(a), Some(b)) if b < a => (r, p),
            _ => (p, r),
        };
        return Err(doc.error_at(
            second,
            &[],
            format!(
                "cannot be combined with {first}: use the prefix rules (containerPrefixRegistry, \
                 containerPrefixRepository, appendOriginRegistry) or the replace rules \
                 (containerRegistry, containerRepository), not both"
            ),
        ));
    }
    if rewrite.append_origin_registry && rewrite.prefix_registry.is_none() {
        return Err(doc.error_at(
            "target.appendOriginRegistry",
            &[],
            "needs target.containerPrefixRegistry (the registry the original registry name is appended to)",
        ));
    }
    for (key, v) in [
        ("target.containerPrefixRegistry", &rewrite.prefix_registry),
        ("target.containerRegistry", &rewrite.registry),
    ] {
        if let Some(v) = v {
            if let Err(why) = check_registry_host(v) {
                return Err(doc.error_at(key, &[], format!("{v:?}: {why}")));
            }
        }
    }
    for (key, v) in [
        (
            "target.containerPrefixRepository",
            &rewrite.prefix_repository,
        ),
        ("target.containerRepository", &rewrite.repository),
    ] {
        if let Some(v) = v {
            if let Err(why) = check_repository(v) {
                return Err(doc.error_at(key, &[], format!("{v:?}: {why}")));
            }
        }
    }
    Ok(())
}

fn check_registry_host(v: &str) -> Result<(), String> {
    if v.contains("://") {
        return Err("a registry host (host[:port]) without a scheme, e.g. 10.16.10.111 or registry.local:5000".into());
    }
    let host = v.split('/').next().unwrap_or(v);
    if host.is_empty() || v.chars().any(|c| c.is_whitespace() || c == '@') {
        return Err("not a registry host (host[:port])".into());
    }
    Ok(())
}

fn check_repository(v: &str) -> Result<(), String> {
    let ok = v.split('/').all(|p| {
        !p.is_empty()
            && p.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            })
    });
    if ok {
        Ok(())
    } else {
        Err(
            "not a repository path (lower-case letters, digits, '.', '_', '-', separated by '/')"
                .into(),
        )
    }
}
