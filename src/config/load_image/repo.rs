//! `source.repo` / `target.repo` of `load-image.yaml`: the chart repository
//! entries, checked per kind (LOCAL needs a path, OCI an oci:// URL, the
//! HTTP kinds an http(s) URL) with their credentials resolved. Apart from
//! the schema because it is the one part with per-kind rules.
use std::path::PathBuf;

use super::{creds, parse_oci_url, split_userinfo, RawKind, RawRepo, RepoKind, RepoSpec};
use crate::config::yaml::Doc;

/// One repository entry `at`, with auth from `auth:`, else the URL's
/// userinfo, overridden by `env("USERNAME")` / `env("PASSWORD")`.
pub(super) fn repo_spec(
    doc: &Doc,
    at: &str,
    r: RawRepo,
    is_target: bool,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<RepoSpec> {
    let kind = repo_kind(doc, at, r.kind, is_target)?;
    let (url, url_user, url_pass) = split_userinfo(r.url.unwrap_or_default().trim());
    let mut path = None;
    match kind {
        RepoKind::Local => {
            let p = r.path.unwrap_or_default();
            if p.trim().is_empty() {
                return Err(doc.error_at(
                    &format!("{at}.path"),
                    &[&format!("{at}.kind")],
                    "missing: LOCAL needs path, the directory where the chart .tgz files and index.yaml go",
                ));
            }
            path = Some(PathBuf::from(p));
        }
        RepoKind::Oci => {
            if url.is_empty() {
                return Err(doc.error_at(
                    &format!("{at}.url"),
                    &[&format!("{at}.kind")],
                    "missing: OCI needs url, e.g. oci://registry.example.com:5000/charts",
                ));
            }
            if let Err(why) = parse_oci_url(&url) {
                return Err(doc.error_at(&format!("{at}.url"), &[], format!("{url:?}: {why}")));
            }
        }
        RepoKind::Helm | RepoKind::Harbor | RepoKind::Chartmuseum => {
            if url.is_empty() {
                return Err(doc.error_at(
                    &format!("{at}.url"),
                    &[&format!("{at}.kind")],
                    format!(
                        "missing: {kind} needs url, e.g. http://10.16.10.111/chartrepo/PROJECT"
                    ),
                ));
            }
            let ok = url::Url::parse(&url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
            if ok.is_none() {
                return Err(doc.error_at(
                    &format!("{at}.url"),
                    &[],
                    format!("{url:?}: expected an http:// or https:// URL"),
                ));
            }
        }
    }
    let mut user = r.auth.as_ref().and_then(|a| a.username.clone());
    let mut pass = r.auth.as_ref().and_then(|a| a.password.clone());
    // `user:pw@` in the URL is taken as auth (unless auth is given), and
    // the URL keeps no userinfo: it is printed and stored in synced.json.
    if user.is_none() && pass.is_none() {
        user = url_user;
        pass = url_pass;
    }
    if let Some(v) = env("USERNAME") {
        user = Some(v);
    }
    if let Some(v) = env("PASSWORD") {
        pass = Some(v);
    }
    Ok(RepoSpec {
        kind,
        url,
        path,
        auth: creds(user, pass),
    })
}

/// `at.kind`: a kind bundler handles; a target must be one that can be
/// pushed to.
fn repo_kind(
    doc: &Doc,
    at: &str,
    kind: Option<RawKind>,
    is_target: bool,
) -> anyhow::Result<RepoKind> {
    let kind = match kind {
        Some(RawKind::Known(k)) => k,
        Some(RawKind::Jfrog) => return Err(doc.error_at(
            &format!("{at}.kind"),
            &[],
            "JFROG is not supported by bundler; use OCI (Artifactory serves OCI) or CHARTMUSEUM",
        )),
        Some(RawKind::Unknown) | None => {
            return Err(doc.error_at(
                &format!("{at}.kind"),
                &[at],
                "missing: give kind HARBOR, CHARTMUSEUM, OCI or LOCAL",
            ))
        }
    };
    if is_target && kind == RepoKind::Helm {
        return Err(doc.error_at(
            &format!("{at}.kind"),
            &[],
            "HELM (a plain HTTP chart repository) cannot be pushed to; use CHARTMUSEUM, HARBOR, OCI, or LOCAL (then serve the directory)",
        ));
    }
    Ok(kind)
}
