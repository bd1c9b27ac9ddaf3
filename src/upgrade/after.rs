//! Step 7, after helm says done: prove what the release runs
//! ([`super::proof`]) and, when it is the package, record it in the
//! cluster ([`super::record`]) for `status` and drift detection.
use super::plan::Plan;
use super::proof::{self, Expectation, ImageCheck, RegistryAccess};
use super::record::{DeployRecord, Kubectl, RecordedImage};
use super::{Out, UpgradeArgs};
use crate::config::load_image::SyncConfig;
use crate::oci::auth::CredentialStore;

/// Registry access as the pre-flight has it (the config's credentials, else
/// the docker config).
pub fn registry_access(
    transport: &crate::oci::TransportArgs,
    config: Option<&SyncConfig>,
) -> RegistryAccess {
    RegistryAccess {
        insecure: transport.insecure(),
        ca_file: transport.ca_file.clone(),
        store: config
            .map(SyncConfig::credential_store)
            .unwrap_or_else(|| CredentialStore {
                use_docker_config: true,
                ..Default::default()
            }),
    }
}

/// Read the release's manifest and check every image; prints one line per image.
pub async fn prove(
    p: &Plan,
    args: &UpgradeArgs,
    config: Option<&SyncConfig>,
    out: &Out,
) -> anyhow::Result<Vec<ImageCheck>> {
    let state = proof::read_release(&p.helm, &p.release, &p.namespace).await?;
    let carried = p.carried.as_ref().map(|c| c.images_at(&p.registry));
    let expect = Expectation {
        carried: carried.as_deref(),
        pinned_ok: &p.kept_images,
        forced: &p.forced_images,
    };
    let checks = proof::check(&state, &expect, &registry_access(&args.transport, config)).await?;
    let what = match &p.carried {
        Some(c) => format!(
            "each must be one the package carries for {} {} ({}), with its digest, in the registry",
            c.name, c.version, c.bundle
        ),
        None => "no record of what the package carries for this chart version \
                 (the sync predates it, or --chart names an unsynced chart): checked presence in the registry only"
            .to_string(),
    };
    out.say(format!(
        "post-upgrade check of {} (helm get manifest): {} image(s); {what}",
        p.release,
        checks.len()
    ));
    for c in &checks {
        out.say(c.line());
    }
    Ok(checks)
}

/// The failure text of a check with failed images (`None`: all passed).
pub fn failure(p: &Plan, checks: &[ImageCheck]) -> Option<String> {
    let bad: Vec<&ImageCheck> = checks.iter().filter(|c| !c.passed()).collect();
    if bad.is_empty() {
        return None;
    }
    let lines: Vec<String> = bad
        .iter()
        .map(|c| {
            format!(
                "{} {} at {}{}{}",
                c.result,
                c.image,
                c.locations.join(", "),
                c.detail
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default(),
                c.from_value
                    .as_deref()
                    .map(|v| format!(", put there by {v}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    Some(format!(
        "the release {} runs {} image(s) that are not the package's: {}",
        p.release,
        bad.len(),
        lines.join("; ")
    ))
}

/// Record what was deployed and proven. A failure to record is said, not
/// fatal: the upgrade itself is done and proven.
pub async fn record(
    p: &Plan,
    args: &UpgradeArgs,
    outcome: &str,
    checks: &[ImageCheck],
    out: &Out,
) -> Option<String> {
    let kubectl = Kubectl::for_helm(args.kubectl.as_deref(), &p.helm);
    let latest = match p.helm.latest(&p.release, &p.namespace).await {
        Ok(Some(h)) => h,
        Ok(None) => return None,
        Err(e) => {
            out.say(format!(
                "warning: deploy record of {} not written: {e:#}",
                p.release
            ));
            return None;
        }
    };
    let (chart, version) = super::helm::split_chart(&latest.chart).unwrap_or_default();
    let rec = DeployRecord {
        release: p.release.clone(),
        namespace: p.namespace.clone(),
        product: p.carried.as_ref().and_then(|c| c.product.clone()),
        chart,
        chart_version: version,
        package_digest: p
            .carried
            .as_ref()
            .map(|c| c.bundle_digest.clone())
            .unwrap_or_default(),
        revision: latest.revision.clone(),
        registry: p.registry.clone(),
        images: checks
            .iter()
            .map(|c| RecordedImage {
                image: c.image.clone(),
                digest: c.registry_digest.clone().unwrap_or_default(),
            })
            .collect(),
        outcome: outcome.to_string(),
        deployed_at: super::record::now_rfc3339(),
        bundler_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    match kubectl.write(&rec).await {
        Ok(()) => {
            let name = super::record::secret_name(&p.release);
            out.say(format!(
                "recorded in the cluster: Secret {name} in {} (revision {}, {outcome})",
                p.namespace, latest.revision
            ));
            Some(name)
        }
        Err(e) => {
            out.say(format!(
                "warning: deploy record of {} not written ({e:#}); `bundler status` will report it as not deployed by bundler",
                p.release
            ));
            None
        }
    }
}
