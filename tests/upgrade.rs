//! `bundler upgrade` end to end: the real bundler binary, the real helm v3
//! and v4 for every helm call, a real registry for the pre-flight, and the
//! Kubernetes API stand-in (tests/support/kube_api.rs) below helm. Every
//! release record, revision, value and rollback asserted here is real
//! helm's, read back with helm.
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bundler::bundle::format::ReleaseInfo;
use bundler::state::{SyncState, SyncedChart};
use support::kube_api::{real_helm, KubeApi};
use support::registry::{Mode, Registry};

/// The values `web` carries at revision 2 (set by hand before bundler came).
const CURRENT_VALUES: &str = "global:\n  imageRegistry: docker.io\nreplicas: 2\n";

/// A chart `name` at `version`: a Deployment (with an init container), a
/// Service and a CronJob, each image under `global.imageRegistry`.
fn write_chart(dir: &Path, name: &str, version: &str) {
    let chart = dir.join(format!("src/{name}-{version}"));
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        format!("apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: \"1.0\"\n"),
    )
    .unwrap();
    std::fs::write(
        chart.join("values.yaml"),
        "global:\n  imageRegistry: docker.io\nreplicas: 1\n",
    )
    .unwrap();
    let t = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}-web
  labels:
    helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
spec:
  replicas: {{ .Values.replicas }}
  selector: {matchLabels: {app: {{ .Release.Name }}}}
  template:
    metadata: {labels: {app: {{ .Release.Name }}}}
    spec:
      initContainers:
        - name: init
          image: {{ .Values.global.imageRegistry }}/demo/init:1.0
      containers:
        - name: web
          image: "{{ .Values.global.imageRegistry }}/demo/web:1.0"
          ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: {{ .Release.Name }}-web}
spec: {selector: {app: {{ .Release.Name }}}, ports: [{port: 80, targetPort: 8080}]}
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
"#;
    std::fs::write(chart.join("templates/all.yaml"), t).unwrap();
    let out = Command::new(real_helm(4))
        .args(["package"])
        .arg(&chart)
        .args(["-d"])
        .arg(dir.join("charts"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

struct Site {
    reg: Registry,
    api: KubeApi,
    work: tempfile::TempDir,
    major: u32,
    extra_env: Vec<(String, String)>,
}

impl Site {
    /// A synced site: images in the registry (all but `skip`), charts demo
    /// and side (0.1.0 installed, 0.2.0 synced) as LOCAL target, the sync
    /// record, and release `web` (chart demo 0.1.0) at revision 2 in
    /// namespace `shop`, installed and upgraded by the real helm `major`.
    fn new(major: u32, skip: &[&str]) -> Site {
        let reg = Registry::start(Mode::Plain);
        let api = KubeApi::start();
        let work = tempfile::tempdir().unwrap();
        let w = work.path();
        for name in ["demo", "side"] {
            for v in ["0.1.0", "0.2.0"] {
                write_chart(w, name, v);
            }
        }
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
        let synced = |name: &str, version: &str, release: &str| SyncedChart {
            name: name.into(),
            version: version.into(),
            kind: "LOCAL".into(),
            chart_ref: w
                .join(format!("charts/{name}-{version}.tgz"))
                .display()
                .to_string(),
            repo_url: None,
            registry: reg.host(),
            release: Some(ReleaseInfo {
                name: release.into(),
                namespace: None,
            }),
            synced_at: "2024-01-02T00:00:00Z".into(),
        };
        SyncState::record(
            &config,
            vec![
                synced("demo", "0.1.0", "web"),
                synced("demo", "0.2.0", "web"),
                synced("side", "0.2.0", "side"),
            ],
        )
        .unwrap();
        let site = Site {
            reg,
            api,
            work,
            major,
            extra_env: Vec::new(),
        };
        site.install("web", "demo", "shop");
        site
    }

    /// Install `release` from chart `name` 0.1.0, then upgrade it once with
    /// CURRENT_VALUES: it stands at revision 2.
    fn install(&self, release: &str, name: &str, ns: &str) {
        let tgz = self.chart_tgz(name, "0.1.0");
        let values = self.dir().join("current-values.yaml");
        std::fs::write(&values, CURRENT_VALUES).unwrap();
        let wait = self.wait();
        self.api.helm(
            self.major,
            &[
                "install",
                release,
                &tgz,
                "-n",
                ns,
                "--create-namespace",
                wait,
                "--timeout",
                "60s",
            ],
        );
        self.api.helm(
            self.major,
            &[
                "upgrade",
                release,
                &tgz,
                "-n",
                ns,
                "-f",
                &values.display().to_string(),
                wait,
                "--timeout",
                "60s",
            ],
        );
        assert_eq!(self.api.revision(release, ns), Some(2));
    }

    fn chart_tgz(&self, name: &str, version: &str) -> String {
        self.dir()
            .join(format!("charts/{name}-{version}.tgz"))
            .display()
            .to_string()
    }

    fn dir(&self) -> &Path {
        self.work.path()
    }

    fn bundler(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(support::bundler_bin());
        // the test registry speaks plain HTTP, as `--insecure true` in seed 002
        cmd.current_dir(self.dir()).args(args).arg("--insecure");
        for (k, v) in self.api.env() {
            cmd.env(k, v);
        }
        cmd.env("BUNDLER_HELM", real_helm(self.major));
        for (k, v) in &self.extra_env {
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

    fn backups(&self, release: &str) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.dir().join("backups").join(release))
            .map(|d| d.map(|e| e.unwrap().path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The first container image of a Deployment, as the API stores it.
    fn deployed_image(&self, ns: &str, name: &str) -> String {
        let (code, body) = self.api.request(
            "GET",
            &format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}"),
            "",
        );
        assert_eq!(code, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .unwrap()
            .to_string()
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

fn history_of(site: &Site, release: &str, ns: &str) -> Vec<(u64, String, String)> {
    site.api.history(release, ns)
}

fn happy_path(major: u32) {
    let site = Site::new(major, &[]);
    let out = site.bundler(&["upgrade", "web"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = support::stdout(&out);
    assert!(
        stdout.contains(
            "release web in namespace shop: revision 2, chart demo-0.1.0, status deployed"
        ),
        "found by name alone (helm list -A): {stdout}"
    );

    // backup: printed, named <UTC stamp>-rev2.yaml, holding helm's values of revision 2
    let backup = backup_path_from(&stdout);
    let backups = site.backups("web");
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
    let saved = std::fs::read_to_string(&backups[0]).unwrap();
    assert_eq!(saved, site.api.values("web", "shop", 2));
    assert_eq!(saved, CURRENT_VALUES);

    // the diff before the change, the pre-flight saw all three images
    let host = site.reg.host();
    assert!(
        stdout.contains(&format!(
            "~ global.imageRegistry: \"docker.io\" -> \"{host}\""
        )),
        "{stdout}"
    );
    for img in ["demo/web:1.0", "demo/init:1.0", "demo/cron:1.0"] {
        assert!(
            stdout.contains(&format!("ok       {host}/{img}")),
            "{stdout}"
        );
    }

    // helm's own record: revision 3 of the new chart, deployed, with the new registry
    let h = history_of(&site, "web", "shop");
    assert_eq!(h.len(), 3, "{h:?}");
    assert_eq!(h[2], (3, "deployed".into(), "demo-0.2.0".into()));
    assert_eq!(h[1].1, "superseded");
    let v3 = site.api.values("web", "shop", 3);
    assert!(v3.contains(&format!("imageRegistry: {host}")), "{v3}");
    assert!(
        v3.contains("replicas: 2"),
        "the backed-up values went along: {v3}"
    );
    assert_eq!(
        site.deployed_image("shop", "web-web"),
        format!("{host}/demo/web:1.0")
    );
    assert!(
        stdout.contains("web stands at revision 3 (deployed)"),
        "{stdout}"
    );

    // a second run keeps the first backup and writes a new one (of rev 3)
    let first = std::fs::read(&backups[0]).unwrap();
    let out = site.bundler(&["upgrade", "web"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let backups2 = site.backups("web");
    assert_eq!(backups2.len(), 2, "{backups2:?}");
    assert_eq!(std::fs::read(&backups[0]).unwrap(), first);
    let second = backups2.iter().find(|p| **p != backups[0]).unwrap();
    assert!(second.to_string_lossy().contains("-rev3"), "{second:?}");
    assert_eq!(
        std::fs::read_to_string(second).unwrap(),
        site.api.values("web", "shop", 3)
    );
    assert_eq!(site.api.revision("web", "shop"), Some(4));
}

#[test]
fn upgrade_with_helm_v4() {
    happy_path(4);
}

#[test]
fn upgrade_with_helm_v3() {
    happy_path(3);
}

fn preflight_refusal(major: u32) {
    let site = Site::new(major, &["demo/cron:1.0"]);
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
    assert!(
        !support::stdout(&out).contains("running "),
        "{}",
        text(&out)
    );
    assert_eq!(site.api.revision("web", "shop"), Some(2));

    // --force goes on
    let out = site.bundler(&["upgrade", "web", "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(site.api.revision("web", "shop"), Some(3));
}

#[test]
fn preflight_refuses_a_missing_image_v4() {
    preflight_refusal(4);
}

#[test]
fn preflight_refuses_a_missing_image_v3() {
    preflight_refusal(3);
}

#[test]
fn preflight_notices_an_image_deleted_from_the_registry() {
    let site = Site::new(4, &[]);
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
    assert_eq!(site.api.revision("web", "shop"), Some(2));
}

/// The new chart's Deployment never becomes ready: helm's own `--wait`
/// times out, bundler rolls back to the backed-up revision.
fn rollback(major: u32) {
    let site = Site::new(major, &[]);
    site.api.never_ready("helm.sh/chart=demo-0.2.0");
    let started = Instant::now();
    let out = site.bundler(&["upgrade", "web", "--timeout", "3s"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "a real wait timed out"
    );
    let backup = backup_path_from(&support::stdout(&out));
    let err = support::stderr(&out);
    assert!(err.contains(&backup.display().to_string()), "{err}");
    assert!(err.contains("rolled back to revision 2"), "{err}");
    // rolled back: nothing to do by hand, so no commands for it (issue 19)
    assert!(!err.contains("To restore by hand"), "{err}");
    assert!(!err.contains("<repo>"), "{err}");
    assert!(err.contains("web stands at revision 4 (deployed)"), "{err}");
    let h = history_of(&site, "web", "shop");
    assert_eq!(h.len(), 4, "{h:?}");
    assert_eq!(h[2], (3, "failed".into(), "demo-0.2.0".into()));
    assert_eq!(h[3], (4, "deployed".into(), "demo-0.1.0".into()));
    assert_eq!(site.api.values("web", "shop", 4), CURRENT_VALUES);
    assert_eq!(
        site.deployed_image("shop", "web-web"),
        "docker.io/demo/web:1.0"
    );
}

#[test]
fn failed_upgrade_rolls_back_v4() {
    rollback(4);
}

#[test]
fn failed_upgrade_rolls_back_v3() {
    rollback(3);
}

/// Two releases of one product; the second fails: both end where they
/// started, and every backup and pre-flight happened before the first change.
fn two_releases_second_fails(major: u32, all: bool) {
    let site = Site::new(major, &[]);
    site.install("side", "side", "shop");
    site.api.never_ready("helm.sh/chart=side-0.2.0");
    let out = if all {
        site.bundler(&["upgrade", "--all", "--timeout", "3s"])
    } else {
        site.bundler(&["upgrade", "web", "side", "--timeout", "3s"])
    };
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let stdout = support::stdout(&out);
    let first_change = stdout.find("running ").expect("an upgrade ran");
    for before in [
        "values backup: backups/web/",
        "values backup: backups/side/",
        "pre-flight of side: every image is present",
    ] {
        let at = stdout
            .find(before)
            .unwrap_or_else(|| panic!("{before}: {stdout}"));
        assert!(
            at < first_change,
            "{before} comes before the first upgrade:\n{stdout}"
        );
    }
    let up_web = stdout.find("upgraded web in shop").expect(&stdout);
    let rb_side = stdout
        .find("rolling back side to revision 2")
        .expect(&stdout);
    let rb_web = stdout
        .find("rolling back web to revision 2")
        .expect(&stdout);
    assert!(
        up_web < rb_side && rb_side < rb_web,
        "reverse order:\n{stdout}"
    );
    let err = support::stderr(&out);
    assert!(err.contains("helm upgrade of side failed"), "{err}");
    assert!(
        err.contains("web already upgraded in this run were rolled back too"),
        "{err}"
    );
    assert!(
        err.contains("web stands at revision 4 (deployed), side stands at revision 4 (deployed)"),
        "{err}"
    );
    let web = history_of(&site, "web", "shop");
    assert_eq!(
        web[2],
        (3, "superseded".into(), "demo-0.2.0".into()),
        "{web:?}"
    );
    assert_eq!(
        web[3],
        (4, "deployed".into(), "demo-0.1.0".into()),
        "{web:?}"
    );
    let side = history_of(&site, "side", "shop");
    assert_eq!(
        side[2],
        (3, "failed".into(), "side-0.2.0".into()),
        "{side:?}"
    );
    assert_eq!(
        side[3],
        (4, "deployed".into(), "side-0.1.0".into()),
        "{side:?}"
    );
    assert_eq!(site.api.values("web", "shop", 4), CURRENT_VALUES);
    assert_eq!(site.api.values("side", "shop", 4), CURRENT_VALUES);
}

#[test]
fn two_releases_second_fails_both_roll_back_v4() {
    two_releases_second_fails(4, false);
}

#[test]
fn all_releases_second_fails_both_roll_back_v3() {
    two_releases_second_fails(3, true);
}

fn install_new(major: u32) {
    let site = Site::new(major, &[]);
    // a synced chart without a release: refused without --install
    let out = site.bundler(&["upgrade", "side", "-n", "extra"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        support::stderr(&out).contains("pass --install"),
        "{}",
        text(&out)
    );
    let out = site.bundler(&["upgrade", "side", "-n", "extra", "--install"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = support::stdout(&out);
    assert!(
        stdout.contains("side: nothing to back up (not installed yet)"),
        "{stdout}"
    );
    assert!(site.backups("side").is_empty());
    assert!(stdout.contains("--install --create-namespace"), "{stdout}");
    assert!(stdout.contains("installed side in extra"), "{stdout}");
    assert_eq!(
        history_of(&site, "side", "extra"),
        vec![(1, "deployed".to_string(), "side-0.2.0".to_string())]
    );
    let host = site.reg.host();
    assert_eq!(
        site.deployed_image("extra", "side-web"),
        format!("{host}/demo/web:1.0")
    );
}

#[test]
fn install_a_new_release_v4() {
    install_new(4);
}

#[test]
fn install_a_new_release_v3() {
    install_new(3);
}

/// The release lives in the cluster of context `global`; the kubeconfig's
/// current context is another cluster, which must never be asked.
fn kube_context(major: u32) {
    let site = Site::new(major, &[]);
    let other = KubeApi::start();
    let kubeconfig = site.dir().join("two-clusters.kubeconfig");
    std::fs::write(
        &kubeconfig,
        support::kube_api::kubeconfig(&[("worker", &other), ("global", &site.api)], "worker"),
    )
    .unwrap();
    let kc = kubeconfig.display().to_string();
    // without --kube-context: the current context (worker) has no such release
    let out = site.bundler(&["upgrade", "web", "--kubeconfig", &kc]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        support::stderr(&out).contains("release web not found"),
        "{}",
        text(&out)
    );
    assert!(
        !other.requests().is_empty(),
        "the current context was asked"
    );
    let asked_before = other.requests().len();
    let out = site.bundler(&[
        "upgrade",
        "web",
        "--kubeconfig",
        &kc,
        "--kube-context",
        "global",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(site.api.revision("web", "shop"), Some(3));
    assert_eq!(
        other.requests().len(),
        asked_before,
        "{:?}",
        other.requests()
    );
    let stdout = support::stdout(&out);
    assert!(
        stdout.contains(&format!("--kube-context global --kubeconfig {kc}")),
        "{stdout}"
    );
}

#[test]
fn kube_context_reaches_every_cluster_call_v4() {
    kube_context(4);
}

#[test]
fn kube_context_reaches_every_cluster_call_v3() {
    kube_context(3);
}

/// A cluster that never answers: the first cluster call is killed at the
/// fixed bound, and the error names it.
fn hung_cluster(major: u32) {
    let mut site = Site::new(major, &[]);
    let hung = KubeApi::start_hung();
    site.extra_env
        .push(("BUNDLER_HELM_QUERY_TIMEOUT".into(), "2s".into()));
    let kc = hung.kubeconfig().display().to_string();
    let started = Instant::now();
    let out = site.bundler(&["upgrade", "web", "--kubeconfig", &kc]);
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = support::stderr(&out);
    assert!(err.contains("list -A"), "{err}");
    assert!(
        err.contains("did not finish within 2s and was killed"),
        "{err}"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[test]
fn hung_cluster_is_bounded_v4() {
    hung_cluster(4);
}

#[test]
fn hung_cluster_is_bounded_v3() {
    hung_cluster(3);
}

/// The cluster hangs on writes once the pre-flight is done: the upgrade is
/// killed at --timeout plus the fixed bound, and the release is untouched.
fn hung_upgrade(major: u32) {
    let mut site = Site::new(major, &[]);
    site.extra_env
        .push(("BUNDLER_HELM_QUERY_TIMEOUT".into(), "3s".into()));
    site.api.hang_writes();
    let started = Instant::now();
    let out = site.bundler(&["upgrade", "web", "--timeout", "2s"]);
    let took = started.elapsed();
    assert!(
        matches!(out.status.code(), Some(1) | Some(4)),
        "{}",
        text(&out)
    );
    let err = support::stderr(&out);
    assert!(err.contains("upgrade web"), "{err}");
    assert!(
        err.contains("did not finish within 5s and was killed"),
        "{err}"
    );
    assert!(took < Duration::from_secs(40), "{took:?}");
    assert_eq!(site.api.revision("web", "shop"), Some(2));
}

#[test]
fn hung_upgrade_is_killed_v4() {
    hung_upgrade(4);
}

#[test]
fn hung_upgrade_is_killed_v3() {
    hung_upgrade(3);
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
    assert_eq!(site.api.revision("web", "shop"), Some(2));
    let err = support::stderr(&out);
    assert!(err.contains("dry run: would run"), "{err}");
    assert!(err.contains("~ replicas: 2 -> 3"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["outcome"], "planned");
    let r = &v["releases"][0];
    assert_eq!(r["namespace"], "shop");
    assert_eq!(r["fromRevision"], "2");
    assert_eq!(r["chart"]["version"], "0.2.0");
    assert_eq!(r["images"].as_array().unwrap().len(), 3);
    assert!(r["missingImages"].as_array().unwrap().is_empty());
    let cmd = r["upgradeCommand"].as_str().unwrap();
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
        &site.chart_tgz("demo", "0.2.0"),
        "--version",
        "0.2.0",
        "--registry",
        &site.reg.host(),
        "--backup-dir",
        "bk",
        "--insecure",
    ]);
    for (k, v) in site.api.env() {
        cmd.env(k, v);
    }
    cmd.env("BUNDLER_HELM", real_helm(3));
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(
        std::fs::read_dir(empty.path().join("bk/web"))
            .unwrap()
            .count(),
        1
    );
    assert_eq!(site.api.revision("web", "shop"), Some(3));
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
    site.api.helm(
        4,
        &[
            "install",
            "other",
            &site.chart_tgz("demo", "0.1.0"),
            "-n",
            "elsewhere",
            "--create-namespace",
        ],
    );
    let out = site.bundler(&["upgrade", "other"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        support::stderr(&out).contains("no synced chart is for release other: ")
            && support::stderr(&out).contains("demo 0.2.0 (release web)"),
        "{}",
        text(&out)
    );
    // ... said the same with --install, in the very directory sync ran in (issue 19)
    let out = site.bundler(&["upgrade", "shop2", "--install"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        support::stderr(&out).contains("no synced chart is for release shop2: ")
            && !support::stderr(&out).contains("run in the directory"),
        "{}",
        text(&out)
    );
    // --chart names one chart
    let out = site.bundler(&["upgrade", "web", "side", "--chart", "x"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // a bad --timeout
    let out = site.bundler(&["upgrade", "web", "--timeout", "soon"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        support::stderr(&out).contains("--timeout soon"),
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
    assert_eq!(site.api.revision("web", "shop"), Some(2));
}

/// The chart in a password-protected OCI registry: bundler logs helm in
/// with --password-stdin into a private registry config, the password is
/// never on a command line nor in -vv logs, and the config is gone after.
fn oci_chart_with_credentials(major: u32) {
    use support::registry::{PASSWORD, USER};
    let site = Site::new(major, &[]);
    let reg = Registry::start(Mode::BasicAuth);
    let host = reg.host();
    let w = site.dir();
    for (i, img) in ["demo/web:1.0", "demo/init:1.0", "demo/cron:1.0"]
        .iter()
        .enumerate()
    {
        support::images::push_simple(&reg, w, img, &[img.as_bytes(), &[i as u8]]);
    }
    // the test's own helm home logs in and pushes the chart
    let mut login = Command::new(real_helm(major));
    login.args([
        "registry",
        "login",
        &host,
        "--username",
        USER,
        "--password-stdin",
        "--plain-http",
    ]);
    for (k, v) in site.api.env() {
        login.env(k, v);
    }
    let mut child = login
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(PASSWORD.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    site.api.helm(
        major,
        &[
            "push",
            &site.chart_tgz("demo", "0.2.0"),
            &format!("oci://{host}/charts"),
            "--plain-http",
        ],
    );
    // ... and forgets the login: bundler must bring its own
    site.api.helm(major, &["registry", "logout", &host]);

    std::fs::write(
        w.join("oci.yaml"),
        format!(
            "source:\n  intermediateBundlesPath: bundles\ntarget:\n  containerRegistry: {host}\n  containers:\n    auth: {{username: {USER}, password: {PASSWORD}}}\n  repo:\n    kind: OCI\n    url: oci://{host}/charts\n    auth: {{username: {USER}, password: {PASSWORD}}}\n"
        ),
    )
    .unwrap();
    SyncState::record(
        &w.join("oci.yaml"),
        vec![SyncedChart {
            name: "demo".into(),
            version: "0.2.0".into(),
            kind: "OCI".into(),
            chart_ref: format!("oci://{host}/charts/demo"),
            repo_url: None,
            registry: host.clone(),
            release: Some(ReleaseInfo {
                name: "web".into(),
                namespace: Some("shop".into()),
            }),
            synced_at: "2024-01-02T00:00:00Z".into(),
        }],
    )
    .unwrap();
    // a dry run prints no path of helm's private config, which is gone after it
    let out = site.bundler(&["upgrade", "web", "-c", "oci.yaml", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = support::stdout(&out);
    assert!(!said.contains("bundler-helm-"), "{said}");
    assert!(
        said.contains("--registry-config <private dir made at run time>/registry.json"),
        "{said}"
    );
    assert!(!site.dir().join("backups").exists(), "{said}");
    let out = site.bundler(&["-vv", "upgrade", "web", "-c", "oci.yaml"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(!all.contains(PASSWORD), "the password leaked: {all}");
    let login_line = all
        .lines()
        .find(|l| l.contains("registry login"))
        .unwrap_or_else(|| panic!("no registry login logged: {all}"));
    assert!(login_line.contains("--password-stdin"), "{login_line}");
    let config = regex::Regex::new(r"--registry-config (\S+registry\.json)")
        .unwrap()
        .captures(login_line)
        .expect(login_line)[1]
        .to_string();
    assert!(
        !Path::new(&config).exists(),
        "{config} is removed after the run"
    );
    assert!(
        all.contains(&format!("--registry-config {config}")),
        "{all}"
    );
    let h = history_of(&site, "web", "shop");
    assert_eq!(h[2], (3, "deployed".into(), "demo-0.2.0".into()), "{h:?}");
}

#[test]
fn oci_chart_with_credentials_v4() {
    oci_chart_with_credentials(4);
}

#[test]
fn oci_chart_with_credentials_v3() {
    oci_chart_with_credentials(3);
}

/// An install that fails is uninstalled again: the cluster ends as it was.
fn failed_install_is_uninstalled(major: u32) {
    let site = Site::new(major, &[]);
    site.api.never_ready("helm.sh/chart=side-0.2.0");
    let out = site.bundler(&[
        "upgrade",
        "web",
        "side",
        "--install",
        "-n",
        "shop",
        "--timeout",
        "3s",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    // --json on failure: one object on stdout, the releases and the error
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(v["outcome"], "rolled-back", "{v}");
    assert_eq!(v["error"]["kind"], "rolled-back", "{v}");
    assert_eq!(v["releases"][0]["release"], "web");
    assert_eq!(v["releases"][0]["outcome"], "rolled-back");
    assert_eq!(v["releases"][0]["revision"], "4");
    assert_eq!(v["releases"][1]["outcome"], "rolled-back");
    assert_eq!(v["releases"][1]["fromRevision"], serde_json::Value::Null);
    assert_eq!(v["releases"][1]["status"], "not installed");
    let err = support::stderr(&out);
    assert!(err.contains("helm upgrade of side failed"), "{err}");
    assert!(err.contains("uninstalled again"), "{err}");
    assert!(err.contains("side is not installed"), "{err}");
    assert_eq!(site.api.revision("side", "shop"), None);
    assert_eq!(site.api.revision("web", "shop"), Some(4));
    let (code, _) = site.api.request(
        "GET",
        "/apis/apps/v1/namespaces/shop/deployments/side-web",
        "",
    );
    assert_eq!(code, 404, "the failed install's Deployment is gone");
}

#[test]
fn failed_install_is_uninstalled_v4() {
    failed_install_is_uninstalled(4);
}

#[test]
fn failed_install_is_uninstalled_v3() {
    failed_install_is_uninstalled(3);
}

/// The chart in a ChartMuseum repository behind a password: bundler gives
/// helm a private repositories.yaml instead of `--username/--password`.
fn chartmuseum_with_credentials(major: u32) {
    use support::chart_server::{ChartServer, Config};
    const PW: &str = "museum-Passw0rd";
    let site = Site::new(major, &[]);
    let museum = ChartServer::start(Config {
        auth: Some(("keeper".into(), PW.into())),
        ..Default::default()
    });
    upload_chart(
        &museum,
        &format!("keeper:{PW}"),
        &site.chart_tgz("demo", "0.2.0"),
    );
    let host = site.reg.host();
    let w = site.dir();
    std::fs::write(
        w.join("museum.yaml"),
        format!(
            "source:\n  intermediateBundlesPath: bundles\ntarget:\n  containerRegistry: {host}\n  repo:\n    kind: CHARTMUSEUM\n    url: {}\n    auth: {{username: keeper, password: {PW}}}\n",
            museum.url()
        ),
    )
    .unwrap();
    SyncState::record(
        &w.join("museum.yaml"),
        vec![SyncedChart {
            name: "demo".into(),
            version: "0.2.0".into(),
            kind: "CHARTMUSEUM".into(),
            chart_ref: museum.url(),
            repo_url: None,
            registry: host.clone(),
            release: Some(ReleaseInfo {
                name: "web".into(),
                namespace: None,
            }),
            synced_at: "2024-01-02T00:00:00Z".into(),
        }],
    )
    .unwrap();
    let out = site.bundler(&["-vv", "upgrade", "web", "-c", "museum.yaml"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(!all.contains(PW), "the password leaked: {all}");
    assert!(
        all.contains("repo update bundler-target --repository-config"),
        "{all}"
    );
    assert!(
        all.contains("upgrade web bundler-target/demo -n shop"),
        "{all}"
    );
    let h = history_of(&site, "web", "shop");
    assert_eq!(h[2], (3, "deployed".into(), "demo-0.2.0".into()), "{h:?}");
    assert!(
        museum
            .log()
            .iter()
            .any(|l| l.contains("/charts/demo-0.2.0.tgz")),
        "{:?}",
        museum.log()
    );
}

#[test]
fn chartmuseum_with_credentials_v4() {
    chartmuseum_with_credentials(4);
}

#[test]
fn chartmuseum_with_credentials_v3() {
    chartmuseum_with_credentials(3);
}

/// The API stand-in is as strict as the real API where helm could notice.
#[test]
fn api_standin_is_strict() {
    let api = KubeApi::start();
    let dep = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}}"#;
    let base = "/apis/apps/v1/namespaces/default/deployments";
    // unknown kinds and groups
    assert_eq!(
        api.request("GET", "/apis/example.com/v1/namespaces/default/gadgets", "")
            .0,
        404
    );
    assert_eq!(
        api.request("GET", "/api/v1/namespaces/default/gadgets", "")
            .0,
        404
    );
    // a namespace that does not exist
    assert_eq!(
        api.request("POST", "/apis/apps/v1/namespaces/nowhere/deployments", dep)
            .0,
        404
    );
    // kind and URL disagree; selector not matching the template
    assert_eq!(
        api.request("POST", "/api/v1/namespaces/default/configmaps", dep)
            .0,
        400
    );
    let bad = dep.replace(r#""labels":{"a":"b"}}"#, r#""labels":{"a":"x"}}"#);
    assert_eq!(api.request("POST", base, &bad).0, 422);
    assert_eq!(api.request("POST", base, dep).0, 201);
    assert_eq!(api.request("POST", base, dep).0, 409, "already exists");
    // unknown top-level fields under fieldValidation=Strict
    let typo = dep.replace(r#""name":"d"}"#, r#""name":"e"},"sepc":{}"#);
    let (code, body) = api.request("POST", &format!("{base}?fieldValidation=Strict"), &typo);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains(r#"unknown field \"sepc\""#), "{body}");
    // a stale resourceVersion
    let stale = dep.replace(r#""name":"d"}"#, r#""name":"d","resourceVersion":"1"}"#);
    assert_eq!(api.request("PUT", &format!("{base}/d"), &stale).0, 409);
    // patches: malformed, unknown type, inapplicable
    let patch = |ct: &str, body: &str| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", api.port)).unwrap();
        use std::io::{Read as _, Write as _};
        write!(
            s,
            "PATCH {base}/d HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        r.split_whitespace().nth(1).unwrap().parse::<u16>().unwrap()
    };
    assert_eq!(
        patch("application/strategic-merge-patch+json", "{not json"),
        422
    );
    assert_eq!(patch("application/merge-patch+json", "[1]"), 422);
    assert_eq!(patch("text/plain", "{}"), 415);
    assert_eq!(
        patch(
            "application/strategic-merge-patch+json",
            r#"{"spec":{"template":{"spec":{"containers":[{"image":"no-name"}]}}}}"#
        ),
        422,
        "a list element without its merge key"
    );
    assert_eq!(
        patch(
            "application/strategic-merge-patch+json",
            r#"{"spec":{"template":{"spec":{"containers":[{"name":"c","image":"new"}]}}}}"#
        ),
        200
    );
    let (_, body) = api.request("GET", &format!("{base}/d"), "");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["spec"]["template"]["spec"]["containers"][0]["image"],
        "new"
    );
    assert_eq!(v["metadata"]["generation"], 2);
    // apply needs a field manager
    assert_eq!(patch("application/apply-patch+yaml", dep), 400);
}

/// ChartMuseum's `POST /api/charts` (multipart field `chart`) with basic auth.
fn upload_chart(museum: &support::chart_server::ChartServer, user_pass: &str, tgz: &str) {
    use base64::Engine;
    use std::io::{Read as _, Write as _};
    let data = std::fs::read(tgz).unwrap();
    let boundary = "bundler-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"chart\"; filename=\"chart.tgz\"\r\nContent-Type: application/gzip\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(&data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let auth = base64::engine::general_purpose::STANDARD.encode(user_pass);
    let mut s = std::net::TcpStream::connect(museum.host()).unwrap();
    write!(
        s,
        "POST /api/charts HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {auth}\r\nConnection: close\r\nContent-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        museum.host(),
        body.len()
    )
    .unwrap();
    s.write_all(&body).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 201"), "upload: {resp}");
}

/// Seed 002: skoala on the global service cluster, skoala-init on a worker
/// cluster, upgraded together (`NAME@CONTEXT`); the worker's fails, so both
/// clusters end where they started, each asked only about its own release.
fn two_clusters(major: u32) {
    let site = Site::new(major, &[]);
    let worker = KubeApi::start();
    let tgz = site.chart_tgz("side", "0.1.0");
    let values = site.dir().join("current-values.yaml");
    let wait = site.wait();
    worker.helm(
        major,
        &[
            "install",
            "side",
            &tgz,
            "-n",
            "shop",
            "--create-namespace",
            wait,
        ],
    );
    worker.helm(
        major,
        &[
            "upgrade",
            "side",
            &tgz,
            "-n",
            "shop",
            "-f",
            &values.display().to_string(),
            wait,
        ],
    );
    worker.never_ready("helm.sh/chart=side-0.2.0");
    let kubeconfig = site.dir().join("two-clusters.kubeconfig");
    std::fs::write(
        &kubeconfig,
        support::kube_api::kubeconfig(&[("global", &site.api), ("worker", &worker)], "global"),
    )
    .unwrap();
    let kc = kubeconfig.display().to_string();
    let out = site.bundler(&[
        "upgrade",
        "web@global",
        "side@worker",
        "--kubeconfig",
        &kc,
        "--timeout",
        "3s",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let stdout = support::stdout(&out);
    assert!(stdout.contains("upgraded web in shop"), "{stdout}");
    assert!(stdout.contains("--kube-context worker"), "{stdout}");
    assert_eq!(
        site.api.history("web", "shop")[3],
        (4, "deployed".into(), "demo-0.1.0".into())
    );
    assert_eq!(
        worker.history("side", "shop")[3],
        (4, "deployed".into(), "side-0.1.0".into())
    );
    // each cluster was asked about its own release only
    assert!(
        !site
            .api
            .requests()
            .iter()
            .any(|r| r.contains("name%3Dside")),
        "{:?}",
        site.api.requests()
    );
    assert!(
        !worker.requests().iter().any(|r| r.contains("name%3Dweb")),
        "{:?}",
        worker.requests()
    );
}

#[test]
fn two_clusters_one_product_v4() {
    two_clusters(4);
}

#[test]
fn two_clusters_one_product_v3() {
    two_clusters(3);
}

/// What sync would have recorded for demo 0.2.0, except that its bundle
/// does not carry demo/cron (the chart's template writes that image
/// itself, `{{ .Values.global.imageRegistry }}/demo/cron:1.0`).
fn carried_without_cron(site: &Site) {
    use bundler::carried::{CarriedChart, CarriedImage};
    let host = site.reg.host();
    let img = |r: &str| CarriedImage {
        source: format!("docker.io/{r}"),
        image: format!("{host}/{r}"),
        digest: bundler::oci::Digest::of(&site.reg.raw_manifest(r).unwrap()).to_string(),
    };
    CarriedChart {
        name: "demo".into(),
        version: "0.2.0".into(),
        bundle: "demo_0.2.0.bundle.tar".into(),
        images: vec![img("demo/web:1.0"), img("demo/init:1.0")],
        ..Default::default()
    }
    .record(&site.dir().join("load-image.yaml"))
    .unwrap();
}

/// helm says done, but the release runs an image the package does not
/// carry: the post-upgrade check fails the upgrade, which is rolled back
/// (exit 4), naming the image, where it is, and that no value put it there;
/// with --no-rollback it stays as helm left it (exit 3).
#[test]
fn an_image_the_package_does_not_carry_fails_the_upgrade() {
    let site = Site::new(4, &[]);
    carried_without_cron(&site);
    let host = site.reg.host();
    let out = site.bundler(&["upgrade", "web", "--json"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let err = support::stderr(&out);
    assert!(err.contains("post-upgrade check of web failed"), "{err}");
    assert!(
        err.contains(&format!(
            "not-carried {host}/demo/cron:1.0 at CronJob/web-cron containers[0]"
        )),
        "{err}"
    );
    assert!(
        err.contains("put there by no value: the chart's templates write it"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = v["releases"][0]["imageChecks"].as_array().unwrap();
    let result_of = |img: &str| {
        checks
            .iter()
            .find(|c| c["image"] == format!("{host}/{img}"))
            .map(|c| c["result"].as_str().unwrap().to_string())
    };
    assert_eq!(result_of("demo/web:1.0").as_deref(), Some("ok"), "{v}");
    assert_eq!(
        result_of("demo/cron:1.0").as_deref(),
        Some("not-carried"),
        "{v}"
    );
    assert_eq!(v["error"]["exitStatus"], 4, "{v}");
    let h = history_of(&site, "web", "shop");
    assert_eq!(h[2], (3, "superseded".into(), "demo-0.2.0".into()), "{h:?}");
    assert_eq!(h[3], (4, "deployed".into(), "demo-0.1.0".into()), "{h:?}");

    let out = site.bundler(&["upgrade", "web", "--no-rollback"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        support::stderr(&out).contains("not rolled back (--no-rollback)"),
        "{}",
        text(&out)
    );
    assert_eq!(
        history_of(&site, "web", "shop")[4],
        (5, "deployed".into(), "demo-0.2.0".into())
    );
}

/// The upgrade fails and so does the rollback (the old revision never
/// becomes ready either): exit 3, the real commands to restore by hand (the
/// old chart's .tgz beside the new one, not a placeholder). And "release not
/// found" says which kubeconfig was asked.
#[test]
fn a_failed_rollback_exits_3_with_the_commands_to_restore() {
    let site = Site::new(4, &[]);
    site.api.never_ready("helm.sh/chart");
    let out = site.bundler(&["upgrade", "web", "--timeout", "2s"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let err = support::stderr(&out);
    assert!(err.contains("rolling back failed too"), "{err}");
    assert!(err.contains("To restore by hand"), "{err}");
    assert!(!err.contains("<repo>"), "{err}");
    assert!(err.contains(&site.chart_tgz("demo", "0.1.0")), "{err}");

    let out = site.bundler(&["upgrade", "nope"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let kubeconfig = site.api.kubeconfig().display().to_string();
    assert!(
        support::stderr(&out).contains(&format!(
            "not found in any namespace of the current context of kubeconfig {kubeconfig}"
        )),
        "{}",
        text(&out)
    );
}
