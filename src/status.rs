//! `bundler status [RELEASE...]`: what the site runs, any time.
//!
//! For each release of the product (named, or every release the sync
//! record knows): the chart version deployed vs the newest the package
//! carries; each image the release's manifest names vs what the package
//! carries for that chart version vs what the registry serves (digest); and
//! drift: a revision written after bundler's last upgrade (a hand `helm
//! upgrade`, `helm rollback`) is a release changed outside bundler.
//! bundler's deploy record lives in the cluster (upgrade::record), so this
//! works from any machine with the kubeconfig; the sync record beside the
//! config only adds what the newest package carries.
//! Exit 0 when every release matches, 1 otherwise; `--json`.
use serde::Serialize;

use crate::carried::{CarriedChart, CarriedImage};
use crate::error::input_error;
use crate::state::SyncState;
use crate::upgrade::helm::{Helm, ListedRelease};
use crate::upgrade::proof::{self, Expectation, ImageCheck};
use crate::upgrade::record::{DeployRecord, Kubectl};

#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// Releases (NAME or NAME@KUBE-CONTEXT); default: every release the sync record knows.
    pub releases: Vec<String>,
    /// The sync config (its record says what the package carries).
    #[arg(long, short = 'c', default_value = "load-image.yaml")]
    pub config: std::path::PathBuf,
    /// Namespace of the releases; default: the bundle's, else where helm lists them.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    /// kubeconfig context for every helm and kubectl call.
    #[arg(long)]
    pub kube_context: Option<String>,
    /// kubeconfig file for every helm and kubectl call.
    #[arg(long)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The helm binary.
    #[arg(long, env = "BUNDLER_HELM")]
    pub helm: Option<std::path::PathBuf>,
    /// The kubectl binary that reads bundler's deploy record (also $BUNDLER_KUBECTL).
    #[arg(long)]
    pub kubectl: Option<std::path::PathBuf>,
    /// Print a JSON report on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub transport: crate::oci::TransportArgs,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    /// true when every release runs exactly the package.
    pub matches: bool,
    pub releases: Vec<ReleaseStatus>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseStatus {
    pub release: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    pub namespace: Option<String>,
    pub revision: Option<String>,
    /// `name-version` as helm lists it.
    pub chart_deployed: Option<String>,
    /// The newest version of this chart the sync record holds.
    pub chart_carried: Option<String>,
    /// bundler's record in the cluster.
    pub record: Option<DeployRecord>,
    /// A change made outside bundler since its last upgrade.
    pub drift: Option<String>,
    pub images: Vec<ImageCheck>,
    pub problems: Vec<String>,
    pub matches: bool,
}

pub async fn run(args: &StatusArgs) -> anyhow::Result<()> {
    let say = |m: String| {
        if args.json {
            eprintln!("{m}");
        } else {
            println!("{m}");
        }
    };
    let config = crate::upgrade::plan::load_config(&args.config)?;
    let state = SyncState::load(&args.config)?;
    let mut cluster = Vec::new();
    if let Some(c) = &args.kube_context {
        cluster.extend(["--kube-context".to_string(), c.clone()]);
    }
    if let Some(k) = &args.kubeconfig {
        cluster.extend(["--kubeconfig".to_string(), k.to_string_lossy().into_owned()]);
    }
    let helm = Helm::detect(args.helm.as_deref(), cluster).await?;
    let releases = if args.releases.is_empty() {
        known_releases(&state, args)?
    } else {
        args.releases.clone()
    };
    let access = crate::upgrade::after::registry_access(&args.transport, config.as_ref());
    let mut report = StatusReport::default();
    for spec in &releases {
        let (name, h, ctx) = match spec.split_once('@') {
            Some((n, c)) if !n.is_empty() && !c.is_empty() => (n, helm.with_context(c), Some(c)),
            Some(_) => {
                return Err(input_error(format!(
                    "{spec}: write a release as NAME or NAME@KUBE-CONTEXT"
                )))
            }
            None => (spec.as_str(), helm.clone(), None),
        };
        let mut st = one_release(args, &state, name, &h, &access).await?;
        st.context = ctx.map(str::to_string);
        for l in describe(&st) {
            say(l);
        }
        report.releases.push(st);
    }
    report.matches = report.releases.iter().all(|r| r.matches);
    let bad: Vec<&str> = (report.releases.iter())
        .filter(|r| !r.matches)
        .map(|r| r.release.as_str())
        .collect();
    if bad.is_empty() {
        say(format!(
            "every release ({}) runs exactly the package",
            releases.join(", ")
        ));
        if args.json {
            println!("{}", serde_json::to_string_pretty(&report)?);
        }
        return Ok(());
    }
    let msg = format!(
        "{} of {} release(s) do not run exactly the package: {}",
        bad.len(),
        report.releases.len(),
        bad.join(", ")
    );
    crate::outcome::record(&report);
    anyhow::bail!(msg)
}

/// Every release name the sync record knows, in its order.
fn known_releases(state: &SyncState, args: &StatusArgs) -> anyhow::Result<Vec<String>> {
    let names = state.release_names();
    if names.is_empty() {
        return Err(input_error(format!(
            "no releases to report: {} records no synced chart; name the releases (bundler status skoala skoala-init)",
            SyncState::path_for(&args.config).display()
        )));
    }
    Ok(names)
}

async fn one_release(
    args: &StatusArgs,
    state: &SyncState,
    name: &str,
    helm: &Helm,
    access: &proof::RegistryAccess,
) -> anyhow::Result<ReleaseStatus> {
    let mut st = ReleaseStatus {
        release: name.to_string(),
        ..Default::default()
    };
    let synced = crate::upgrade::plan::find_synced(state, name, None);
    st.chart_carried = synced.map(|s| format!("{}-{}", s.name, s.version));
    let ns_hint = args.namespace.clone().or_else(|| {
        synced
            .and_then(|s| s.release.as_ref())
            .and_then(|r| r.namespace.clone())
    });
    let mut found: Vec<ListedRelease> = helm.find_release(name, ns_hint.as_deref()).await?;
    if found.is_empty() && ns_hint.is_some() && args.namespace.is_none() {
        found = helm.find_release(name, None).await?;
    }
    if found.len() > 1 {
        return Err(input_error(format!(
            "release {name} exists in several namespaces ({}); choose one with -n",
            found
                .iter()
                .map(|r| r.namespace.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let Some(listed) = found.into_iter().next() else {
        st.problems.push(format!(
            "not installed in {}",
            crate::upgrade::cluster::describe(helm)
        ));
        return Ok(st);
    };
    st.namespace = Some(listed.namespace.clone());
    st.revision = Some(listed.revision.clone());
    st.chart_deployed = Some(listed.chart.clone());
    if listed.status != "deployed" {
        st.problems
            .push(format!("helm status is {}", listed.status));
    }
    if let Some(c) = &st.chart_carried {
        if *c != listed.chart {
            st.problems.push(format!(
                "runs chart {}, the package carries {c}",
                listed.chart
            ));
        }
    }

    // bundler's record, and drift since
    let kubectl = Kubectl::for_helm(args.kubectl.as_deref(), helm);
    st.record = kubectl.read(name, &listed.namespace).await?;
    match &st.record {
        None => st.problems.push(
            "no bundler deploy record in the cluster: not deployed (or not recorded) by bundler upgrade".into(),
        ),
        Some(r) if r.revision != listed.revision => {
            let d = format!(
                "changed outside bundler: revision {} was written after bundler's revision {} ({} {} at {})",
                listed.revision, r.revision, r.outcome, r.chart_version, r.deployed_at
            );
            st.drift = Some(d.clone());
            st.problems.push(d);
        }
        Some(_) => {}
    }

    // the images: what the package carries for the deployed chart version
    let deployed_version = listed.chart_version().unwrap_or_default();
    let carried: Option<Vec<CarriedImage>> = match synced {
        Some(s) => CarriedChart::load(&args.config, &s.name, &deployed_version)?.map(|c| c.images),
        None => None,
    }
    .or_else(|| {
        // from another machine: the images bundler proved at its upgrade
        st.record
            .as_ref()
            .filter(|r| r.chart_version == deployed_version && !r.images.is_empty())
            .map(|r| {
                r.images
                    .iter()
                    .map(|i| CarriedImage {
                        source: String::new(),
                        image: i.image.clone(),
                        digest: i.digest.clone(),
                    })
                    .collect()
            })
    });
    if carried.is_none() {
        st.problems.push(format!(
            "no record of the images the package carries for chart version {deployed_version}"
        ));
    }
    let rel = proof::read_release(helm, name, &listed.namespace).await?;
    st.images = proof::check(
        &rel,
        &Expectation {
            carried: carried.as_deref(),
            pinned_ok: &[],
            forced: &[],
        },
        access,
    )
    .await?;
    st.matches = st.problems.is_empty() && st.images.iter().all(|i| i.result == "ok");
    Ok(st)
}

fn describe(st: &ReleaseStatus) -> Vec<String> {
    let mut out = Vec::new();
    let verdict = if st.matches { "OK" } else { "DOES NOT MATCH" };
    out.push(format!(
        "{}{} in {}: revision {}, chart {} (the package carries {}): {verdict}",
        st.release,
        st.context
            .as_deref()
            .map(|c| format!("@{c}"))
            .unwrap_or_default(),
        st.namespace.as_deref().unwrap_or("-"),
        st.revision.as_deref().unwrap_or("-"),
        st.chart_deployed.as_deref().unwrap_or("-"),
        st.chart_carried.as_deref().unwrap_or("nothing recorded")
    ));
    if let Some(r) = &st.record {
        out.push(format!(
            "  bundler record: revision {} ({}), {}{} at {}",
            r.revision,
            r.outcome,
            r.product
                .as_ref()
                .map(|p| format!("product {} {}, ", p.name, p.version))
                .unwrap_or_default(),
            if r.package_digest.is_empty() {
                "package digest not recorded".to_string()
            } else {
                format!("package {}", r.package_digest)
            },
            r.deployed_at
        ));
    }
    for p in &st.problems {
        out.push(format!("  ! {p}"));
    }
    for i in &st.images {
        out.push(i.line());
    }
    out
}
