//! What [`super::learn_controls`] learned about a chart, kept on disk per
//! chart version, so that planning the same chart again costs one render
//! (the one at release defaults) instead of several.
//!
//! The key is the packaged chart's digest with everything else that
//! changes a render (release name and namespace, `--kube-version`, the helm
//! binary) and this build of bundler (a new build may learn differently).
//! Entries live under `$BUNDLER_CACHE_DIR`, else `$XDG_CACHE_HOME/bundler/
//! learned`, else `~/.cache/bundler/learned`; a missing or unreadable
//! entry is learned again, and a cache that cannot be written is skipped.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::find_images::{ImageSite, SiteKind};
use super::learn_controls::{Learned, SiteControl};
use super::render_check::ReleaseDefaults;
use crate::oci::Digest;

#[derive(Serialize, Deserialize)]
struct Entry {
    image: String,
    location: String,
    kind: String,
    source: String,
    test_hook: bool,
    key: String,
    template: Option<String>,
    #[serde(default)]
    other_kube_version: Option<(String, String)>,
    #[serde(default)]
    inconclusive: bool,
}

fn dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("BUNDLER_CACHE_DIR") {
        return Some(PathBuf::from(d).join("learned"));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("bundler").join("learned"))
}

fn stamp(p: &Path) -> String {
    std::fs::metadata(p)
        .map(|m| {
            let t = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            format!("{}:{}:{t}", p.display(), m.len())
        })
        .unwrap_or_else(|_| p.display().to_string())
}

/// The cache key of a learning run.
pub fn key(tgz: &[u8], helm: &Path, release: &ReleaseDefaults) -> String {
    let exe = std::env::current_exe()
        .map(|p| stamp(&p))
        .unwrap_or_default();
    let text = format!(
        "learn-v2\n{}\n{:?}\n{:?}\n{:?}\n{}\n{exe}\n",
        Digest::of(tgz),
        release.name,
        release.namespace,
        release.kube_version,
        stamp(helm)
    );
    Digest::of(text.as_bytes()).hex().to_string()
}

/// A cached result, if any.
pub fn load(key: &str) -> Option<Learned> {
    let path = dir()?.join(format!("{key}.json"));
    let bytes = std::fs::read(&path).ok()?;
    let entries: Vec<Entry> = serde_json::from_slice(&bytes).ok()?;
    let sites = entries
        .into_iter()
        .map(|e| SiteControl {
            site: ImageSite {
                image: e.image,
                location: e.location,
                kind: match e.kind.as_str() {
                    "map" => SiteKind::Map,
                    "text" => SiteKind::Text,
                    _ => SiteKind::Field,
                },
                source: e.source,
                key: e.key,
                test_hook: e.test_hook,
            },
            template: e.template,
            other_kube_version: e.other_kube_version,
            inconclusive: e.inconclusive,
        })
        .collect();
    Some(Learned { sites, renders: 0 })
}

/// Keep a result (best effort).
pub fn store(key: &str, learned: &Learned) {
    let Some(dir) = dir() else { return };
    let entries: Vec<Entry> = learned
        .sites
        .iter()
        .map(|s| Entry {
            image: s.site.image.clone(),
            location: s.site.location.clone(),
            kind: match s.site.kind {
                SiteKind::Field => "field",
                SiteKind::Map => "map",
                SiteKind::Text => "text",
            }
            .into(),
            source: s.site.source.clone(),
            test_hook: s.site.test_hook,
            key: s.site.key.clone(),
            template: s.template.clone(),
            other_kube_version: s.other_kube_version.clone(),
            inconclusive: s.inconclusive,
        })
        .collect();
    let Ok(bytes) = serde_json::to_vec(&entries) else {
        return;
    };
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = crate::atomic_file::write_atomic(&dir.join(format!("{key}.json")), &bytes);
    }
}
