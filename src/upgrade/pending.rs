//! A release left in a `pending-*` state by an interrupted helm run.
//!
//! When helm is killed mid-upgrade the release stays `pending-upgrade` (or
//! `pending-install`, `pending-rollback`) and helm refuses every further
//! operation ("another operation is in progress"). Going on would back up
//! the interrupted revision, fail, and advise rolling back *to* it. So this
//! is checked right after the release is found, before anything else: the
//! run stops and says what happened and the exact recovery command (a
//! rollback to the last deployed revision, or an uninstall of an
//! interrupted first install), or with `--recover` backs up the values of
//! that revision and runs the recovery itself, then plans the upgrade of
//! the recovered release.
use anyhow::bail;

use super::helm::{display_command, HistoryEntry, ListedRelease};
use super::plan::{strings, RunContext};
use super::Helm;
use crate::error::{input_error, redact};

/// `current` unchanged when it is not pending; otherwise a refusal that
/// names the recovery, or (with `--recover`) the release once recovered.
pub async fn resolve(
    cx: &RunContext<'_>,
    helm: &Helm,
    release: &str,
    current: Option<ListedRelease>,
) -> anyhow::Result<Option<ListedRelease>> {
    let Some(cur) = current else {
        return Ok(None);
    };
    if !cur.status.starts_with("pending") {
        return Ok(Some(cur));
    }
    let ns = cur.namespace.clone();
    let history = history(helm, release, &ns).await?;
    // The revision helm last completed: `deployed` (helm marks the old one
    // superseded only when the new one succeeds), else the newest
    // superseded one before the pending revision.
    let good = (history.iter().rev())
        .find(|h| h.status == "deployed")
        .or_else(|| history.iter().rev().find(|h| h.status == "superseded"));
    let recovery = match good {
        Some(h) => strings(&["rollback", release, &h.revision, "-n", &ns]),
        None => strings(&["uninstall", release, "-n", &ns]),
    };
    let shown = display_command(&helm.path, &helm.on_cluster(recovery.clone()));
    let what = format!(
        "release {release} in namespace {ns} is {} at revision {} (chart {}): an earlier helm \
         operation on it was interrupted, and helm refuses any other until it is resolved",
        cur.status, cur.revision, cur.chart
    );
    let target = match good {
        Some(h) => format!("back to revision {}, the last deployed one", h.revision),
        None => "it never finished installing: nothing to go back to".to_string(),
    };
    if !cx.args.recover {
        return Err(input_error(format!(
            "{what}. Nothing was changed. Recover with `{shown}` ({target}), then run bundler \
             upgrade again; or pass --recover to have bundler back up the values and do it"
        )));
    }
    cx.out
        .say(format!("{what}; recovering (--recover): {target}"));
    if let Some(h) = good {
        let text = helm
            .query_ok(&helm.on_cluster(strings(&[
                "get",
                "values",
                release,
                "-n",
                &ns,
                "--revision",
                &h.revision,
                "-o",
                "yaml",
            ])))
            .await?;
        let backup = super::backup::write(&cx.args.backup_dir, release, &h.revision, &text)?;
        cx.out.say(format!(
            "values backup (revision {}): {}",
            h.revision,
            backup.display()
        ));
    }
    let timeout = super::helm::parse_duration(&cx.args.timeout)?;
    let mut args = recovery;
    args.extend([
        helm.wait_flag().to_string(),
        "--timeout".to_string(),
        super::helm::show_duration(timeout),
    ]);
    let args = helm.on_cluster(args);
    cx.out
        .say(format!("running {}", display_command(&helm.path, &args)));
    let r = helm.change(&args, timeout).await?;
    if !r.ok {
        bail!(
            "recovering {release}: `{}` failed: {}; nothing else was changed",
            display_command(&helm.path, &args),
            redact(r.stderr.trim())
        );
    }
    let now = helm
        .find_release(release, Some(&ns))
        .await?
        .into_iter()
        .next();
    match &now {
        Some(n) => cx.out.say(format!(
            "recovered {release}: revision {}, status {}",
            n.revision, n.status
        )),
        None if !cx.args.install => bail!(
            "recovered {release}: the interrupted install was removed; run bundler upgrade \
             {release} --install to install it"
        ),
        None => cx.out.say(format!(
            "recovered {release}: the interrupted install was removed"
        )),
    }
    Ok(now)
}

/// Every revision of a release (`helm history`), oldest first.
async fn history(helm: &Helm, release: &str, ns: &str) -> anyhow::Result<Vec<HistoryEntry>> {
    let out = helm
        .query_ok(&helm.on_cluster(strings(&["history", release, "-n", ns, "-o", "json"])))
        .await?;
    let t = out.trim();
    if t.is_empty() || t == "null" {
        return Ok(Vec::new());
    }
    Ok(serde_json::from_str(t)?)
}
