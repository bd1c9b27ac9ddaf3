//! The chart half of `bundler diff OLD NEW` (issue 22): charts added and
//! removed, version changes (`shop 1.2.0 -> 1.3.0`) and hint changes
//! (templates added or removed), next to the image differences. Read from
//! the bundles' `hints.yaml` and `Chart.yaml` entries (or an inventory's
//! published charts, which carry no hints); no blob is read.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

/// One chart as a package, bundle or inventory holds it.
#[derive(Debug, Clone)]
struct HeldChart {
    version: String,
    /// Hint templates; `None` from an inventory (it records none).
    hints: Option<BTreeSet<String>>,
}

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartDiff {
    pub added: Vec<ChartVersion>,
    pub removed: Vec<ChartVersion>,
    pub changed: Vec<ChartChange>,
    pub unchanged: usize,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartVersion {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChartChange {
    pub name: String,
    pub old_version: String,
    pub new_version: String,
    /// Hint templates only NEW has / only OLD has.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hints_added: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hints_removed: Vec<String>,
}

impl ChartDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    /// Text lines, `chart + name version`, `chart ~ name a -> b`, and the
    /// hint templates that came and went under a change.
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        for a in &self.added {
            out.push(format!("chart + {} {}", a.name, a.version));
        }
        for r in &self.removed {
            out.push(format!("chart - {} {}", r.name, r.version));
        }
        for c in &self.changed {
            if c.old_version == c.new_version {
                out.push(format!(
                    "chart ~ {} {} (hints changed)",
                    c.name, c.new_version
                ));
            } else {
                out.push(format!(
                    "chart ~ {} {} -> {}",
                    c.name, c.old_version, c.new_version
                ));
            }
            for h in &c.hints_added {
                out.push(format!("    hint + {h}"));
            }
            for h in &c.hints_removed {
                out.push(format!("    hint - {h}"));
            }
        }
        if !out.is_empty() || self.unchanged > 0 {
            out.push(format!(
                "charts: {} added, {} removed, {} changed, {} unchanged",
                self.added.len(),
                self.removed.len(),
                self.changed.len(),
                self.unchanged
            ));
        }
        out
    }
}

/// Charts of an inventory, an offline package, a bundle or a directory.
fn load(path: &Path) -> anyhow::Result<BTreeMap<String, HeldChart>> {
    let mut out = BTreeMap::new();
    if !path.is_dir() {
        if let Ok(inv) = crate::bundle::delta::Inventory::load(path) {
            for c in inv.charts {
                out.insert(
                    c.name,
                    HeldChart {
                        version: c.version,
                        hints: None,
                    },
                );
            }
            return Ok(out);
        }
    }
    for loc in crate::bundle::location::list_bundles(path)? {
        let reader = loc.open()?;
        let Some((name, version)) = reader.chart_name_version()? else {
            continue;
        };
        let hints = reader
            .hints()?
            .and_then(|t| crate::chart::hints::Hints::parse(&t).ok())
            .map(|h| h.templates.into_iter().collect());
        // Several versions of one chart: the newest stands for it.
        let newer = out.get(&name).is_none_or(|h: &HeldChart| {
            crate::chart::package::compare_versions(&h.version, &version).is_lt()
        });
        if newer {
            out.insert(name, HeldChart { version, hints });
        }
    }
    Ok(out)
}

/// The chart differences between OLD and NEW.
pub fn compare(old: &Path, new: &Path) -> anyhow::Result<ChartDiff> {
    let old = load(old)?;
    let new = load(new)?;
    let mut d = ChartDiff::default();
    for (name, n) in &new {
        let Some(o) = old.get(name) else {
            d.added.push(ChartVersion {
                name: name.clone(),
                version: n.version.clone(),
            });
            continue;
        };
        let (hints_added, hints_removed) = match (&o.hints, &n.hints) {
            (Some(a), Some(b)) => (
                b.difference(a).cloned().collect(),
                a.difference(b).cloned().collect(),
            ),
            _ => (Vec::new(), Vec::new()),
        };
        if o.version == n.version && hints_added.is_empty() && hints_removed.is_empty() {
            d.unchanged += 1;
            continue;
        }
        d.changed.push(ChartChange {
            name: name.clone(),
            old_version: o.version.clone(),
            new_version: n.version.clone(),
            hints_added,
            hints_removed,
        });
    }
    for (name, o) in &old {
        if !new.contains_key(name) {
            d.removed.push(ChartVersion {
                name: name.clone(),
                version: o.version.clone(),
            });
        }
    }
    Ok(d)
}
