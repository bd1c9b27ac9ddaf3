//! The one stand-in of the test suite: a `helm` executable for the cluster
//! side (no Kubernetes API server can run here). It keeps releases in files
//! and implements `list`, `get values`, `history`, `status`, `upgrade` and
//! `rollback`; everything else (`template`, `pull`, `version`, `show`,
//! `dependency`, ...) is delegated to the real helm, so rendering and chart
//! download are real, and `version` tells v3 or v4 truthfully. `upgrade`
//! first runs the real `helm template` with the same arguments (minus
//! nothing: template accepts every flag bundler passes to upgrade, in the
//! dialect of its own version), so a wrong flag, chart, version or value
//! fails as it would with a cluster. Every argv is logged, one line per
//! call, arguments separated by the unit separator (0x1f).
use std::path::{Path, PathBuf};

pub struct FakeHelm {
    pub dir: tempfile::TempDir,
    /// The executable to give bundler (`--helm` / `BUNDLER_HELM`).
    pub path: PathBuf,
    pub real: PathBuf,
}

/// The script itself is a file of its own so that scripts/demo.sh uses the
/// same stand-in.
const SCRIPT: &str = include_str!("helm-cluster-standin");

impl FakeHelm {
    /// A fake helm delegating to `real` (e.g. `/usr/local/bin/helm3`).
    pub fn new(real: &Path) -> FakeHelm {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("helm");
        std::fs::write(&path, SCRIPT).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::create_dir_all(dir.path().join("state/releases")).unwrap();
        FakeHelm {
            dir,
            path,
            real: real.to_path_buf(),
        }
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Environment the fake needs (set on the bundler process).
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("FAKE_HELM_STATE".into(), self.state().display().to_string()),
            ("FAKE_HELM_REAL".into(), self.real.display().to_string()),
            ("BUNDLER_HELM".into(), self.path.display().to_string()),
        ]
    }

    fn rel(&self, ns: &str, name: &str) -> PathBuf {
        self.state().join("releases").join(ns).join(name)
    }

    /// A deployed release at `revisions` revisions, the last with `values`.
    pub fn add_release(&self, name: &str, ns: &str, chart: &str, revisions: u32, values: &str) {
        let d = self.rel(ns, name);
        std::fs::create_dir_all(&d).unwrap();
        for r in 1..=revisions {
            let w = |f: &str, v: &str| std::fs::write(d.join(format!("{f}-{r}")), v).unwrap();
            w("chart", &format!("{chart}\n"));
            w("app", "1.0\n");
            w(
                "status",
                if r == revisions {
                    "deployed\n"
                } else {
                    "superseded\n"
                },
            );
            std::fs::write(
                d.join(format!("values-{r}.yaml")),
                if r == revisions {
                    values.to_string()
                } else {
                    format!("rev: {r}\n")
                },
            )
            .unwrap();
        }
        std::fs::write(d.join("current"), format!("{revisions}\n")).unwrap();
    }

    pub fn fail_upgrades(&self, fail: bool) {
        let f = self.state().join("fail-upgrade");
        if fail {
            std::fs::write(f, "").unwrap();
        } else {
            let _ = std::fs::remove_file(f);
        }
    }

    pub fn revision(&self, name: &str, ns: &str) -> u32 {
        std::fs::read_to_string(self.rel(ns, name).join("current"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    pub fn values(&self, name: &str, ns: &str, rev: u32) -> String {
        std::fs::read_to_string(self.rel(ns, name).join(format!("values-{rev}.yaml"))).unwrap()
    }

    pub fn chart(&self, name: &str, ns: &str, rev: u32) -> String {
        std::fs::read_to_string(self.rel(ns, name).join(format!("chart-{rev}")))
            .unwrap()
            .trim()
            .to_string()
    }

    pub fn status(&self, name: &str, ns: &str, rev: u32) -> String {
        std::fs::read_to_string(self.rel(ns, name).join(format!("status-{rev}")))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Every argv the fake saw, in order.
    pub fn calls(&self) -> Vec<Vec<String>> {
        std::fs::read_to_string(self.state().join("argv.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| l.split('\x1f').map(str::to_string).collect())
            .collect()
    }

    /// The calls whose first argument is `verb`.
    pub fn calls_of(&self, verb: &str) -> Vec<Vec<String>> {
        self.calls()
            .into_iter()
            .filter(|c| c.first().map(String::as_str) == Some(verb))
            .collect()
    }
}
