//! `--plan FILE`: the releases of one upgrade, their clusters and their own
//! values, written down once (seed 002 upgrades skoala on the global service
//! cluster and skoala-init on a worker, each with its own values):
//!
//! ```yaml
//! releases:
//!   - name: skoala
//!     context: global          # kubeconfig context (optional)
//!     set: ["ui.replicas=2"]   # helm --set, this release only (optional)
//!     values: [skoala.yaml]    # helm -f, relative to the plan file (optional)
//!   - name: skoala-init
//!     context: worker1
//! ```
//!
//! The releases are upgraded in this order, exactly as
//! `skoala@global skoala-init@worker1 --set skoala:... -f skoala:...`.
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use super::scoped::ReleaseValues;
use crate::error::input_error;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    releases: Vec<PlannedRelease>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlannedRelease {
    name: String,
    #[serde(default)]
    context: Option<String>,
    #[serde(default)]
    set: Vec<String>,
    #[serde(default)]
    values: Vec<PathBuf>,
}

/// The release specs (`NAME` or `NAME@CONTEXT`) and each one's values.
pub fn load(path: &Path) -> anyhow::Result<(Vec<String>, Vec<ReleaseValues>)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the upgrade plan {}", path.display()))?;
    let plan: PlanFile = crate::yaml_bounds::from_str(&text)
        .map_err(|e| input_error(format!("{}: {e:#}", path.display())))?;
    if plan.releases.is_empty() {
        return Err(input_error(format!(
            "{}: no releases listed",
            path.display()
        )));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let mut specs = Vec::new();
    let mut values = Vec::new();
    for r in plan.releases {
        if r.name.is_empty() || r.name.contains('@') {
            return Err(input_error(format!(
                "{}: release name {:?}: give the context as `context:`",
                path.display(),
                r.name
            )));
        }
        specs.push(match &r.context {
            Some(c) => format!("{}@{c}", r.name),
            None => r.name.clone(),
        });
        let mut files = Vec::new();
        for f in r.values {
            let f = if f.is_relative() { base.join(f) } else { f };
            if !f.is_file() {
                return Err(input_error(format!(
                    "{}: values file {} of release {} not found",
                    path.display(),
                    f.display(),
                    r.name
                )));
            }
            files.push(f);
        }
        values.push(ReleaseValues { set: r.set, files });
    }
    Ok((specs, values))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_lists_releases_contexts_and_their_own_values() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("skoala.yaml"), "a: 1\n").unwrap();
        let plan = dir.path().join("plan.yaml");
        std::fs::write(
            &plan,
            "releases:\n  - name: skoala\n    context: global\n    set: [\"ui.replicas=2\"]\n    values: [skoala.yaml]\n  - name: skoala-init\n    context: worker1\n",
        )
        .unwrap();
        let (specs, values) = load(&plan).unwrap();
        assert_eq!(specs, vec!["skoala@global", "skoala-init@worker1"]);
        assert_eq!(values[0].set, vec!["ui.replicas=2"]);
        assert_eq!(values[0].files, vec![dir.path().join("skoala.yaml")]);
        assert_eq!(values[1], ReleaseValues::default());

        std::fs::write(&plan, "releases:\n  - name: skoala\n    valuez: [x]\n").unwrap();
        let e = load(&plan).unwrap_err();
        assert!(format!("{e:#}").contains("valuez"), "{e:#}");
        std::fs::write(
            &plan,
            "releases:\n  - name: skoala\n    values: [missing.yaml]\n",
        )
        .unwrap();
        let e = load(&plan).unwrap_err();
        assert!(
            format!("{e:#}").contains("missing.yaml of release skoala not found"),
            "{e:#}"
        );
    }
}
