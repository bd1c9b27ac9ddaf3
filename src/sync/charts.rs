//! The chart side of a sync: every chart is relocated and packaged before
//! the first request (so a chart or hints problem stops the run before
//! anything is pushed), and published only after all images are in.
//! Harbor projects for `--auto-create-repository` are made here too.
use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::Context;

use super::bundles::SelectedBundle;
use super::report::ChartLine;
use crate::bundle::reader::BundleReader;
use crate::chart::hints::Hints;
use crate::chart::repo::{PublishOptions, PublishOutcome};
use crate::config::load_image::{RepoKind, SyncConfig};
use crate::oci::registry::RegistryClient;
use crate::oci::Digest;
use crate::progress::Progress;
use crate::state::SyncedChart;
use crate::transfer::ImageJob;

/// Relocate and package the chart of every selected bundle (no network).
pub fn prepare_all(
    selected: &[SelectedBundle],
    config: &SyncConfig,
    platform_map: &HashMap<usize, HashMap<Digest, Digest>>,
) -> anyhow::Result<Vec<Option<PreparedChart>>> {
    selected
        .iter()
        .enumerate()
        .map(|(bi, b)| {
            prepare_chart(b, config, platform_map.get(&bi)).with_context(|| {
                format!("bundle {} was refused; nothing was pushed", b.reader.label)
            })
        })
        .collect()
}

/// Publish the prepared charts; returns what `upgrade` needs recorded.
/// Each published chart is added to `lines` as it goes, so a failure
/// part-way still reports what was done.
pub async fn publish_all(
    selected: &[SelectedBundle],
    prepared: Vec<Option<PreparedChart>>,
    config: &SyncConfig,
    client: &RegistryClient,
    opts: &PublishOptions,
    progress: &Progress,
    lines: &mut Vec<ChartLine>,
) -> anyhow::Result<Vec<SyncedChart>> {
    let target_desc = describe_target(config);
    let image_registry = config.image_registry().unwrap_or_default();
    let mut synced = Vec::new();
    // The same chart version in two bundles is published (and counted)
    // once; two different packages under one version still go to the
    // target, which refuses the second unless --force.
    let mut seen: HashMap<(String, String), Digest> = HashMap::new();
    for (b, prep) in selected.iter().zip(prepared) {
        let (
            Some((name, version)),
            Some(PreparedChart {
                chart,
                tgz,
                release,
                carried,
            }),
        ) = (&b.chart, prep)
        else {
            continue;
        };
        let Some(target_repo) =
            config.chart_target(std::slice::from_ref(&(name.clone(), version.clone())))?
        else {
            continue;
        };
        let sum = Digest::of(&tgz);
        if seen.get(&(name.clone(), version.clone())) == Some(&sum) {
            continue;
        }
        seen.insert((name.clone(), version.clone()), sum);
        let outcome = crate::chart::repo::publish(target_repo, &chart, &tgz, client, opts)
            .await
            .with_context(|| format!("publishing chart {name} {version} to {target_desc}"))
            .map_err(|e| name_chart_credentials(e, config))?;
        let outcome_s = match outcome {
            PublishOutcome::Published => "published",
            PublishOutcome::AlreadyPresent => "already present",
        };
        progress.println(format!(
            "chart {name} {version}: {outcome_s} ({target_desc})"
        ));
        lines.push(ChartLine {
            name: name.clone(),
            version: version.clone(),
            target: target_desc.clone(),
            outcome: outcome_s.into(),
        });
        synced.push(synced_chart(
            name,
            version,
            &image_registry,
            release,
            target_repo,
        ));
        // what upgrade proves the release runs (stale pins, post-upgrade check)
        carried.record(&config.file).with_context(|| {
            format!(
                "recording what bundle {} carries for {name} {version}",
                b.reader.label
            )
        })?;
    }
    Ok(synced)
}

/// What the relocation check renders: each prepared chart as published.
pub fn proof_inputs(
    prepared: &[Option<PreparedChart>],
) -> Vec<(
    &crate::chart::Chart,
    &[u8],
    crate::chart::render_check::ReleaseDefaults,
)> {
    (prepared.iter().flatten())
        .map(|p| (&p.chart, &p.tgz[..], p.release.as_ref().into()))
        .collect()
}

/// A bundle's chart, relocated and packaged, ready to publish.
pub struct PreparedChart {
    chart: crate::chart::Chart,
    tgz: Vec<u8>,
    release: Option<crate::bundle::format::ReleaseInfo>,
    /// Images and image values paths, for `upgrade`.
    carried: crate::carried::CarriedChart,
}

/// A LOCAL target gets every chart archive and a new index.yaml: refuse
/// up front, with both figures, when they do not fit (issue 21).
pub fn check_local_space(
    config: &SyncConfig,
    prepared: &[Option<PreparedChart>],
) -> anyhow::Result<()> {
    let Some(repo) = &config.target_repo else {
        return Ok(());
    };
    if repo.kind != crate::config::load_image::RepoKind::Local {
        return Ok(());
    }
    let Some(dir) = &repo.path else { return Ok(()) };
    let charts: u64 = prepared.iter().flatten().map(|p| p.tgz.len() as u64).sum();
    if charts == 0 {
        return Ok(());
    }
    // The index is rewritten whole (temp + rename): old size plus ~1 KiB
    // a chart; the sync state file is small.
    let index = std::fs::metadata(dir.join("index.yaml")).map_or(0, |m| m.len());
    let needed = charts + index + 1024 * prepared.len() as u64 + (64 << 10);
    let mut existing = dir.as_path();
    while !existing.exists() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => {
                existing = std::path::Path::new(".");
                break;
            }
        }
    }
    crate::package::space::require(existing, needed, "sync into the LOCAL repo")
}

/// Load, relocate and package the chart of a bundle (None: no chart).
fn prepare_chart(
    b: &SelectedBundle,
    config: &SyncConfig,
    platform_map: Option<&HashMap<Digest, Digest>>,
) -> anyhow::Result<Option<PreparedChart>> {
    let Some((name, version)) = &b.chart else {
        return Ok(None);
    };
    let files = b.reader.chart_files()?;
    if files.is_empty() {
        return Ok(None);
    }
    let mut chart = crate::chart::Chart::from_files(files)
        .with_context(|| format!("loading the chart of bundle {}", b.reader.label))?;
    let relocation = relocate_bundle_chart(&b.reader, &mut chart, config, platform_map)
        .with_context(|| format!("relocating chart {name} {version} from {}", b.reader.label))?;
    tracing::debug!("relocated {name} {version}:\n{}", relocation.diff);
    let carried = crate::carried::CarriedChart::of(&b.reader, &chart, config, platform_map)?;
    let tgz = crate::chart::package::package_tgz(&chart)?;
    let release = b
        .reader
        .meta
        .as_ref()
        .and_then(|m| m.chart.clone())
        .and_then(|c| c.release);
    Ok(Some(PreparedChart {
        chart,
        tgz,
        release,
        carried,
    }))
}

/// Relocate a bundle's chart for `config` (what `sync` publishes and what
/// `serve --config` serves): the bundle's hints rewritten by the config's
/// rules, index digests mapped to the platform manifest kept (plus
/// `platform_map` for `--platform`), and dependencies re-pointed from the
/// source repository to the target's.
pub fn relocate_bundle_chart(
    reader: &BundleReader,
    chart: &mut crate::chart::Chart,
    config: &SyncConfig,
    platform_map: Option<&HashMap<Digest, Digest>>,
) -> anyhow::Result<crate::chart::relocate::Relocation> {
    let hints = match reader.hints()? {
        Some(text) => {
            Hints::parse(&text).with_context(|| format!("{}: hints.yaml", reader.label))?
        }
        None => Hints::default(),
    };
    let mut digest_map = digest_map(reader);
    digest_map.extend(platform_map.cloned().unwrap_or_default());
    let source_repo = reader
        .meta
        .as_ref()
        .and_then(|m| m.chart.as_ref())
        .and_then(|c| c.source.clone())
        .filter(|s| s.contains("://"));
    let target_url = config
        .target_repo
        .as_ref()
        .map(|r| r.url.clone())
        .unwrap_or_default();
    let repos = source_repo.as_deref().map(|s| (s, target_url.as_str()));
    crate::chart::relocate::relocate(chart, &hints, &config.rewrite, &digest_map, repos)
}

/// index digest → platform manifest digest kept, from bundle.json.
fn digest_map(reader: &BundleReader) -> HashMap<Digest, Digest> {
    reader
        .meta
        .as_ref()
        .map(|m| {
            m.images
                .iter()
                .filter_map(|i| i.source_index.clone().map(|s| (s, i.digest.clone())))
                .collect()
        })
        .unwrap_or_default()
}

pub fn describe_target(config: &SyncConfig) -> String {
    let Some(r) = &config.target_repo else {
        return "no chart repository (target.repo not set)".into();
    };
    match r.kind {
        RepoKind::Local => format!(
            "LOCAL {}",
            r.path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        ),
        RepoKind::Oci => format!("OCI {}", r.url),
        RepoKind::Harbor => format!("HARBOR {}", r.url),
        RepoKind::Chartmuseum => format!("CHARTMUSEUM {}", r.url),
        RepoKind::Helm => format!("HELM {}", r.url),
    }
}

fn synced_chart(
    name: &str,
    version: &str,
    registry: &str,
    release: Option<crate::bundle::format::ReleaseInfo>,
    r: &crate::config::load_image::RepoSpec,
) -> SyncedChart {
    let (kind, chart_ref, repo_url) = match r.kind {
        RepoKind::Local => {
            let dir = r.path.clone().unwrap_or_default();
            let abs = std::fs::canonicalize(&dir).unwrap_or(dir);
            (
                "LOCAL",
                abs.join(format!("{name}-{version}.tgz"))
                    .display()
                    .to_string(),
                None,
            )
        }
        RepoKind::Oci => {
            // Validated when the config was loaded.
            let loc = r.oci_location().unwrap_or_default();
            let path = if loc.path.is_empty() {
                String::new()
            } else {
                format!("/{}", loc.path)
            };
            ("OCI", format!("oci://{}{path}/{name}", loc.registry), None)
        }
        RepoKind::Harbor => ("HARBOR", name.to_string(), Some(r.url.clone())),
        RepoKind::Chartmuseum => ("CHARTMUSEUM", name.to_string(), Some(r.url.clone())),
        RepoKind::Helm => ("HELM", name.to_string(), Some(r.url.clone())),
    };
    SyncedChart {
        name: name.to_string(),
        version: version.to_string(),
        kind: kind.to_string(),
        chart_ref,
        repo_url,
        registry: registry.to_string(),
        release,
        synced_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
    }
}

/// Credentials by purpose (issue 22): images go up with
/// `target.containers.auth` (then docker `config.json`); charts pushed
/// through the registry client (OCI, Harbor >= 2.8) with `target.repo.auth`
/// for the chart repository's host, even when that host is the image
/// registry's. A wrong `target.repo.auth` then fails the chart push, naming
/// that key, instead of the container credentials being used silently.
/// Without a `target.repo.auth`, chart pushes fall back to the image
/// credentials (one account for both, as many sites have).
pub fn credential_store(config: &SyncConfig) -> crate::oci::auth::CredentialStore {
    config.credential_store()
}

/// The credentials chart pushes use: see [`credential_store`].
pub fn chart_credential_store(config: &SyncConfig) -> crate::oci::auth::CredentialStore {
    let mut store = config.credential_store();
    if let (Some(auth), Some(host)) = (
        config.target_repo.as_ref().and_then(|r| r.auth.as_ref()),
        chart_registry_host(config),
    ) {
        store.explicit.insert(host, auth.clone());
    }
    store
}

/// The registry host chart pushes go to (OCI and Harbor targets).
fn chart_registry_host(config: &SyncConfig) -> Option<String> {
    let repo = config.target_repo.as_ref()?;
    match repo.kind {
        RepoKind::Oci => repo.oci_location().map(|l| l.registry),
        RepoKind::Harbor => crate::chart::repo::parse_harbor_url(&repo.url)
            .ok()
            .map(|(_, host, _)| host),
        _ => None,
    }
}

/// Say which credentials a refused chart push used (a credential error of
/// the chart repository names `target.repo.auth`, not the images' ones).
pub fn name_chart_credentials(err: anyhow::Error, config: &SyncConfig) -> anyhow::Error {
    if !err
        .chain()
        .any(|c| c.downcast_ref::<crate::error::CredentialError>().is_some())
    {
        return err;
    }
    let which = match config.target_repo.as_ref().and_then(|r| r.auth.as_ref()) {
        Some(a) => format!(
            "target.repo.auth (user {:?}) was refused by the chart repository; \
             fix that password (TARGET_REPO_AUTH_PASSWORD overrides it): \
             target.containers.auth is used for images only",
            a.username
        ),
        None => "the chart repository refused the image credentials (target.repo.auth is \
                 not set, so chart pushes use target.containers.auth): set target.repo.auth"
            .to_string(),
    };
    err.context(which)
}

/// `--auto-create-repository`: Harbor refuses pushes into a project that
/// does not exist, so create the project (first path segment) of every image
/// target. A registry that is not a Harbor (404 on the project API) is left
/// alone: plain registries create repositories on push.
pub async fn create_image_projects(
    config: &SyncConfig,
    jobs: &[ImageJob],
    insecure: bool,
    ca_file: Option<PathBuf>,
    progress: &Progress,
) -> anyhow::Result<()> {
    let opts = PublishOptions {
        insecure,
        ca_file,
        ..PublishOptions::default()
    };
    let http = crate::chart::repo::http_client(&opts)?;
    let store = credential_store(config);
    let mut seen = std::collections::BTreeSet::new();
    for j in jobs {
        let project = j
            .target
            .repository
            .split('/')
            .next()
            .unwrap_or("")
            .to_string();
        if project.is_empty() || !seen.insert((j.target.registry.clone(), project.clone())) {
            continue;
        }
        let auth = store.lookup(&j.target.registry);
        let mut last_err = None;
        // https first; plain http only when --insecure allows it.
        let schemes: &[&str] = if insecure {
            &["https", "http"]
        } else {
            &["https"]
        };
        for scheme in schemes {
            let origin = format!("{scheme}://{}", j.target.registry);
            match crate::chart::repo::ensure_harbor_project(&http, &origin, &project, auth.as_ref())
                .await
            {
                Ok(crate::chart::repo::ProjectOutcome::Created) => {
                    progress.println(format!(
                        "created Harbor project {project} on {}",
                        j.target.registry
                    ));
                    last_err = None;
                    break;
                }
                Ok(_) => {
                    last_err = None;
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        if let Some(e) = last_err {
            return Err(e.context(format!("--auto-create-repository on {}", j.target.registry)));
        }
    }
    Ok(())
}
