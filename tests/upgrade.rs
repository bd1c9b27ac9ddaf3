//! `bundler upgrade` end to end: the real bundler binary, the real helm (v3
//! and v4) for `template`/`version`, a real registry for the pre-flight, and
//! the fake helm (tests/support/fake_helm.rs) for the cluster side only.
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bundler::bundle::format::ReleaseInfo;
use bundler::state::{SyncState, SyncedChart};
use support::fake_helm::FakeHelm;
use support::registry::{Mode, Registry};

const HELM4: &str = "/usr/local/bin/helm";
const HELM3: &str = "/usr/local/bin/helm3";

fn real_helm(major: u32) -> PathBuf {
    let p = PathBuf::from(if major == 3 { HELM3 } else { HELM4 });
    assert!(p.exists(), "{} is needed for this test", p.display());
    p
}

const CURRENT_VALUES: &str = "global:\n  imageRegistry: docker.io\nreplicas: 2\n";

struct Site {
    reg: Registry,
    work: tempfile::TempDir,
    fake: FakeHelm,
    tgz: PathBuf,
    major: u32,
}

impl Site {
    /// A synced site: images in the registry (all but `skip`), the chart
    /// packaged as LOCAL target, the sync record, and release `web` (chart
    /// demo) at revision 2 in namespace `shop`.
    fn new(major: u32, skip: &[&str]) -> Site {
        let reg = Registry::start(Mode::Plain);
        let work = tempfile::tempdir().unwrap();
        let w = work.path();
        let chart = w.join("src/demo");
        std::fs::create_dir_all(chart.join("templates")).unwrap();
        std::fs::write(
            chart.join("Chart.yaml"),
            "apiVersion: v2\nname: demo\nversion: 0.2.0\nappVersion: \"1.0\"\n",
        )
        .unwrap();
        std::fs::write(
            chart.join("values.yaml"),
            "global:\n  imageRegistry: docker.io\nreplicas: 1\n",
        )
        .unwrap();
        std::fs::write(
            chart.join("templates/web.yaml"),
            r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
  labels:
    helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
spec:
  replicas: {{ .Values.replicas }}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      initContainers:
        - name: init
          image: {{ .Values.global.imageRegistry }}/demo/init:1.0
      containers:
        - name: web
          image: "{{ .Values.global.imageRegistry }}/demo/web:1.0"
---
apiVersion: v1
kind: Service
metadata: {name: {{ .Release.Name }}-web}
spec: {ports: [{port: 80}]}
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: {{ .Release.Name }}-cron}
spec:
  schedule: "0 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: cron
              image: {{ .Values.global.imageRegistry }}/demo/cron:1.0
"#,
        )
        .unwrap();
        let real = real_helm(major);
        let out = Command::new(&real)
            .args(["package", "src/demo", "-d", "charts"])
            .current_dir(w)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let tgz = w.join("charts/demo-0.2.0.tgz");
        for (i, img) in ["demo/web:1.0", "demo/init:1.0", "demo/cron:1.0"]
            .iter()
            .enumerate()
        {
            if !skip.contains(img) {
                let content = format!("layer of {img}");
                support::images::push_simple(&reg, w, img, &[content.as_bytes(), &[i as u8]]);
            }
        }
        let config = w.join("load-image.yaml");
        std::fs::write(
            &config,
            format!(
                "source:\n  intermediateBundlesPath: bundles\ntarget:\n  containerRegistry: {}\n  repo:\n    kind: LOCAL\n    path: ./local-repo\n",
                reg.host()
            ),
        )
        .unwrap();
        SyncState::record(
            &config,
            vec![
                SyncedChart {
                    name: "demo".into(),
                    version: "0.1.0".into(),
                    kind: "LOCAL".into(),
                    chart_ref: w.join("charts/demo-0.1.0.tgz").display().to_string(),
                    repo_url: None,
                    registry: reg.host(),
                    release: Some(ReleaseInfo {
                        name: "web".into(),
                        namespace: None,
                    }),
                    synced_at: "2024-01-01T00:00:00Z".into(),
                },
                SyncedChart {
                    name: "demo".into(),
                    version: "0.2.0".into(),
                    kind: "LOCAL".into(),
                    chart_ref: tgz.display().to_string(),
                    repo_url: None,
                    registry: reg.host(),
                    release: Some(ReleaseInfo {
                        name: "web".into(),
                        namespace: None,
                    }),
                    synced_at: "2024-01-02T00:00:00Z".into(),
                },
            ],
        )
        .unwrap();
        let fake = FakeHelm::new(&real);
        fake.add_release("web", "shop", "demo-0.1.0", 2, CURRENT_VALUES);
        fake.add_release("other", "elsewhere", "other-1.0.0", 1, "a: 1\n");
        Site {
            reg,
            work,
            fake,
            tgz,
            major,
        }
    }

    fn dir(&self) -> &Path {
        self.work.path()
    }

    fn bundler(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(support::bundler_bin());
        // the test registry speaks plain HTTP, as `--insecure true` in seed 002
        cmd.current_dir(self.dir()).args(args).arg("--insecure");
        for (k, v) in self.fake.env() {
            cmd.env(k, v);
        }
        cmd.env_remove("BUNDLER_LOG");
        cmd.output().expect("run bundler")
    }

    fn wait(&self) -> &'static str {
        if self.major >= 4 {
            "--wait=watcher"
        } else {
            "--wait"
        }
    }

    fn backups(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.dir().join("backups/web"))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        support::stdout(o),
        support::stderr(o)
    )
}

fn backup_path_from(stdout: &str) -> PathBuf {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("values backup: "))
        .unwrap_or_else(|| panic!("no backup path printed:\n{stdout}"));
    PathBuf::from(line.trim())
}

fn happy_path(major: u32) {
    let site = Site::new(major, &[]);
    let out = site.bundler(&["upgrade", "web"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = support::stdout(&out);

    // release found by name alone, namespace from helm list -A
    let lists = site.fake.calls_of("list");
    assert!(
        lists.iter().any(|c| c.contains(&"-A".to_string())),
        "{lists:?}"
    );
    assert!(
        stdout.contains("release web in namespace shop: revision 2"),
        "{stdout}"
    );

    // backup: printed, named <UTC stamp>-rev2.yaml, holding the current values
    let backup = backup_path_from(&stdout);
    let backups = site.backups();
    assert_eq!(backups.len(), 1);
    let name = backups[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(
        regex::Regex::new(r"^\d{8}T\d{6}Z-rev2\.yaml$")
            .unwrap()
            .is_match(&name),
        "{name}"
    );
    assert_eq!(
        std::fs::canonicalize(site.dir().join(&backup)).unwrap(),
        std::fs::canonicalize(&backups[0]).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(&backups[0]).unwrap(),
        CURRENT_VALUES
    );
    assert_eq!(
        std::fs::read_to_string(&backups[0]).unwrap(),
        site.fake.values("web", "shop", 2)
    );

    // the diff before the change
    let host = site.reg.host();
    assert!(
        stdout.contains(&format!(
            "~ global.imageRegistry: \"docker.io\" -> \"{host}\""
        )),
        "{stdout}"
    );
    // pre-flight saw all three images
    for img in ["demo/web:1.0", "demo/init:1.0", "demo/cron:1.0"] {
        assert!(
            stdout.contains(&format!("ok       {host}/{img}")),
            "{stdout}"
        );
    }

    // the exact helm upgrade argv
    let ups = site.fake.calls_of("upgrade");
    assert_eq!(ups.len(), 1, "{ups:?}");
    let expect: Vec<String> = [
        "upgrade",
        "web",
        &site.tgz.display().to_string(),
        "-n",
        "shop",
        "-f",
        &backup.display().to_string(),
        "--set",
        &format!("global.imageRegistry={host}"),
        "--version",
        "0.2.0",
        site.wait(),
        "--timeout",
        "10m",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(ups[0], expect);
    assert!(site.fake.calls_of("rollback").is_empty());
    assert_eq!(site.fake.revision("web", "shop"), 3);
    assert_eq!(site.fake.status("web", "shop", 3), "deployed");
    assert_eq!(site.fake.chart("web", "shop", 3), "demo-0.2.0");

    // a second run keeps the first backup and writes a new one (of rev 3)
    let first = std::fs::read(&backups[0]).unwrap();
    let out = site.bundler(&["upgrade", "web"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let backups2 = site.backups();
    assert_eq!(backups2.len(), 2, "{backups2:?}");
    assert!(backups2.contains(&backups[0]));
    assert_eq!(std::fs::read(&backups[0]).unwrap(), first);
    let second = backups2.iter().find(|p| **p != backups[0]).unwrap();
    assert!(
        second
            .file_name()
            .unwrap()
            .to_string_lossy()
            .contains("-rev3"),
        "{second:?}"
    );
    assert_eq!(
        std::fs::read_to_string(second).unwrap(),
        site.fake.values("web", "shop", 3)
    );
}

#[test]
fn upgrade_with_helm_v4() {
    happy_path(4);
}

#[test]
fn upgrade_with_helm_v3() {
    happy_path(3);
}

#[test]
fn preflight_refuses_a_missing_image_and_changes_nothing() {
    let site = Site::new(4, &["demo/cron:1.0"]);
    let out = site.bundler(&["upgrade", "web"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = support::stderr(&out);
    let host = site.reg.host();
    assert!(err.contains(&format!("{host}/demo/cron:1.0")), "{err}");
    assert!(err.contains("nothing was changed"), "{err}");
    assert!(
        !err.contains("demo/web:1.0"),
        "only the missing image is named: {err}"
    );
    assert!(site.fake.calls_of("upgrade").is_empty());
    assert!(site.fake.calls_of("rollback").is_empty());
    assert_eq!(site.fake.revision("web", "shop"), 2);

    // --force goes on
    let out = site.bundler(&["upgrade", "web", "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(site.fake.calls_of("upgrade").len(), 1);
    assert_eq!(site.fake.revision("web", "shop"), 3);
}

#[test]
fn preflight_notices_an_image_deleted_from_the_registry() {
    let site = Site::new(4, &[]);
    // delete demo/web:1.0's manifest through the registry API
    let host = site.reg.host();
    let out = Command::new("skopeo")
        .args([
            "delete",
            "--tls-verify=false",
            &format!("docker://{host}/demo/web:1.0"),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = site.bundler(&["upgrade", "web"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        support::stderr(&out).contains(&format!("{host}/demo/web:1.0")),
        "{}",
        text(&out)
    );
    assert!(site.fake.calls_of("upgrade").is_empty());
}

fn rollback(major: u32) {
    let site = Site::new(major, &[]);
    site.fake.fail_upgrades(true);
    let out = site.bundler(&["upgrade", "web", "--timeout", "2m"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let backup = backup_path_from(&support::stdout(&out));
    let err = support::stderr(&out);
    assert!(err.contains(&backup.display().to_string()), "{err}");
    assert!(err.contains("rolled back to revision 2"), "{err}");
    assert!(
        err.contains(&format!("helm rollback web 2 -n shop {}", site.wait())),
        "exact restore command: {err}"
    );
    let rbs = site.fake.calls_of("rollback");
    assert_eq!(
        rbs,
        vec![[
            "rollback",
            "web",
            "2",
            "-n",
            "shop",
            site.wait(),
            "--timeout",
            "2m"
        ]
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()]
    );
    // fake state: 3 = the failed upgrade (superseded by the rollback, as
    // helm does), 4 = rollback to 2 with the old chart and values
    assert_eq!(site.fake.chart("web", "shop", 3), "demo-0.2.0");
    assert_eq!(site.fake.revision("web", "shop"), 4);
    assert_eq!(site.fake.status("web", "shop", 4), "deployed");
    assert_eq!(site.fake.values("web", "shop", 4), CURRENT_VALUES);
    assert_eq!(site.fake.chart("web", "shop", 4), "demo-0.1.0");
}

#[test]
fn failed_upgrade_rolls_back_v4() {
    rollback(4);
}

#[test]
fn failed_upgrade_rolls_back_v3() {
    rollback(3);
}

#[test]
fn dry_run_changes_nothing_and_prints_the_plan() {
    let site = Site::new(4, &[]);
    let out = site.bundler(&[
        "upgrade",
        "web",
        "--dry-run",
        "--json",
        "--set",
        "replicas=3",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(site.fake.calls_of("upgrade").is_empty());
    assert!(site.fake.calls_of("rollback").is_empty());
    assert_eq!(site.fake.revision("web", "shop"), 2);
    let err = support::stderr(&out);
    assert!(err.contains("dry run: would run"), "{err}");
    assert!(err.contains("~ replicas: 2 -> 3"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["outcome"], "planned");
    assert_eq!(v["namespace"], "shop");
    assert_eq!(v["fromRevision"], "2");
    assert_eq!(v["chart"]["version"], "0.2.0");
    assert_eq!(v["images"].as_array().unwrap().len(), 3);
    assert!(v["missingImages"].as_array().unwrap().is_empty());
    let cmd = v["upgradeCommand"].as_str().unwrap();
    assert!(
        cmd.contains("upgrade web") && cmd.contains("--set replicas=3"),
        "{cmd}"
    );
}

#[test]
fn everything_from_flags_without_config_or_record() {
    let site = Site::new(3, &[]);
    let empty = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(support::bundler_bin());
    cmd.current_dir(empty.path()).args([
        "upgrade",
        "web",
        "-n",
        "shop",
        "--chart",
        &site.tgz.display().to_string(),
        "--version",
        "0.2.0",
        "--registry",
        &site.reg.host(),
        "--backup-dir",
        "bk",
        "--insecure",
    ]);
    for (k, v) in site.fake.env() {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        std::fs::read_dir(empty.path().join("bk/web"))
            .unwrap()
            .count(),
        1
    );
    let lists = site.fake.calls_of("list");
    assert!(
        lists.iter().all(|c| !c.contains(&"-A".to_string())),
        "-n given: {lists:?}"
    );
    assert_eq!(site.fake.revision("web", "shop"), 3);
}

#[test]
fn unknown_release_and_missing_inputs() {
    let site = Site::new(4, &[]);
    let out = site.bundler(&["upgrade", "nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        support::stderr(&out).contains("release nope not found in any namespace"),
        "{}",
        text(&out)
    );
    // a release that exists but was never synced, without --chart
    let out = site.bundler(&["upgrade", "other"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        support::stderr(&out).contains("no chart known for release other: give --chart"),
        "{}",
        text(&out)
    );
    // a broken config is an input error
    std::fs::write(site.dir().join("load-image.yaml"), "source: {bogus: 1}\n").unwrap();
    let out = site.bundler(&["upgrade", "web"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        support::stderr(&out).contains("load-image.yaml:1:10: source.bogus"),
        "{}",
        text(&out)
    );
    assert!(site.fake.calls_of("upgrade").is_empty());
}
