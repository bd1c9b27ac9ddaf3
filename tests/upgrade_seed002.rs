//! Seed 002 end to end, as the product's own guide does it and bundler
//! must finish it: skoala installed online with pinned tags (`--set
//! hive.image.tag=… --set ui.image.tag=…`) on the global cluster and
//! skoala-init on a worker cluster; the next version packed (real `bundler
//! pack` from a real source registry), synced into the private registry,
//! and `bundler upgrade skoala@global skoala-init@worker` — which must end
//! with every release running exactly the package's images (proven by the
//! post-upgrade check and by `bundler status`), not the pinned old ones.
//! Real helm v3 and v4, the Kubernetes API stand-in below them, real
//! registries, real kubectl for bundler's deploy record.
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use support::images;
use support::kube_api::{real_helm, KubeApi};
use support::registry::{Mode, Registry};

const OLD: &str = "0.28.1";
const NEW: &str = "0.28.2";
const UI_OLD: &str = "v0.19.0";
const UI_NEW: &str = "v0.19.1";

/// skoala VERSION: Deployments hive and skoala-ui, images from
/// `<component>.image.{registry,repository,tag}` (global.imageRegistry wins).
fn write_skoala(dir: &Path, src: &str, version: &str, ui_tag: &str) -> PathBuf {
    let c = dir.join(format!("charts-src/skoala-{version}"));
    std::fs::create_dir_all(c.join("templates")).unwrap();
    std::fs::write(
        c.join("Chart.yaml"),
        format!("apiVersion: v2\nname: skoala\nversion: {version}\nappVersion: \"{version}\"\n"),
    )
    .unwrap();
    std::fs::write(
        c.join("values.yaml"),
        format!(
            "global:\n  imageRegistry: \"\"\nhive:\n  image:\n    registry: {src}\n    repository: skoala/hive\n    tag: \"{version}\"\nui:\n  image:\n    registry: {src}\n    repository: skoala/ui\n    tag: {ui_tag}\n"
        ),
    )
    .unwrap();
    let deploy = |name: &str, key: &str| {
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: NAME
  labels: {helm.sh/chart: "{{ .Chart.Name }}-{{ .Chart.Version }}"}
spec:
  selector: {matchLabels: {app: NAME}}
  template:
    metadata: {labels: {app: NAME}}
    spec:
      containers:
        - name: NAME
          image: "{{ .Values.global.imageRegistry | default .Values.KEY.image.registry }}/{{ .Values.KEY.image.repository }}:{{ .Values.KEY.image.tag }}"
"#
        .replace("NAME", name)
        .replace("KEY", key)
    };
    std::fs::write(
        c.join("templates/workloads.yaml"),
        format!(
            "{}---\n{}",
            deploy("hive", "hive"),
            deploy("skoala-ui", "ui")
        ),
    )
    .unwrap();
    c
}

/// skoala-init VERSION: one Deployment, image from `image.*`.
fn write_skoala_init(dir: &Path, src: &str, version: &str) -> PathBuf {
    let c = dir.join(format!("charts-src/skoala-init-{version}"));
    std::fs::create_dir_all(c.join("templates")).unwrap();
    std::fs::write(
        c.join("Chart.yaml"),
        format!("apiVersion: v2\nname: skoala-init\nversion: {version}\n"),
    )
    .unwrap();
    std::fs::write(
        c.join("values.yaml"),
        format!("global:\n  imageRegistry: \"\"\nimage:\n  registry: {src}\n  repository: skoala/skoala-init\n  tag: \"{version}\"\n"),
    )
    .unwrap();
    // the database migration runs as a hook: its image is checked too
    std::fs::write(
        c.join("templates/migrate.yaml"),
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: skoala-init-migrate\n  annotations: {helm.sh/hook: \"post-install,post-upgrade\", helm.sh/hook-delete-policy: before-hook-creation}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: migrate\n          image: \"{{ .Values.global.imageRegistry | default .Values.image.registry }}/{{ .Values.image.repository }}:{{ .Values.image.tag }}\"\n",
    )
    .unwrap();
    std::fs::write(
        c.join("templates/init.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: skoala-init\n  labels: {helm.sh/chart: \"{{ .Chart.Name }}-{{ .Chart.Version }}\"}\nspec:\n  selector: {matchLabels: {app: skoala-init}}\n  template:\n    metadata: {labels: {app: skoala-init}}\n    spec:\n      containers:\n        - name: init\n          image: \"{{ .Values.global.imageRegistry | default .Values.image.registry }}/{{ .Values.image.repository }}:{{ .Values.image.tag }}\"\n",
    )
    .unwrap();
    c
}

struct Seed002 {
    work: tempfile::TempDir,
    _src: Registry,
    target: Registry,
    global: KubeApi,
    worker: KubeApi,
    major: u32,
    kubeconfig: PathBuf,
    /// digest of each image of the package (NEW), by `repo:tag`
    digests: Vec<(String, String)>,
}

impl Seed002 {
    /// Installed online at OLD with pinned tags; NEW packed and synced.
    fn new(major: u32) -> Seed002 {
        let src = Registry::start(Mode::Plain);
        let target = Registry::start(Mode::Plain);
        let global = KubeApi::start();
        let worker = KubeApi::start();
        let work = tempfile::tempdir().unwrap();
        let w = work.path().to_path_buf();
        let w = w.as_path();
        let mut digests = Vec::new();
        for (i, repo_tag) in [
            format!("skoala/hive:{OLD}"),
            format!("skoala/hive:{NEW}"),
            format!("skoala/ui:{UI_OLD}"),
            format!("skoala/ui:{UI_NEW}"),
            format!("skoala/skoala-init:{OLD}"),
            format!("skoala/skoala-init:{NEW}"),
        ]
        .iter()
        .enumerate()
        {
            let d = images::push_simple(&src, w, repo_tag, &[repo_tag.as_bytes(), &[i as u8]]);
            digests.push((repo_tag.clone(), d));
        }
        let host = src.host();
        let old = write_skoala(w, &host, OLD, UI_OLD);
        let new = write_skoala(w, &host, NEW, UI_NEW);
        let init_old = write_skoala_init(w, &host, OLD);
        let init_new = write_skoala_init(w, &host, NEW);
        let kubeconfig = w.join("site.kubeconfig");
        std::fs::write(
            &kubeconfig,
            support::kube_api::kubeconfig(&[("global", &global), ("worker", &worker)], "global"),
        )
        .unwrap();
        let site = Seed002 {
            work,
            _src: src,
            target,
            global,
            worker,
            major,
            kubeconfig,
            digests,
        };

        // the guide's install: online, tags pinned with --set
        let wait = if major >= 4 {
            "--wait=watcher"
        } else {
            "--wait"
        };
        site.global.helm(
            major,
            &[
                "upgrade",
                "--install",
                "skoala",
                old.to_str().unwrap(),
                "--create-namespace",
                "-n",
                "skoala-system",
                wait,
                "--timeout",
                "60s",
                "--set",
                &format!("hive.image.tag={OLD}"),
                "--set",
                &format!("ui.image.tag={UI_OLD}"),
            ],
        );
        site.worker.helm(
            major,
            &[
                "upgrade",
                "--install",
                "skoala-init",
                init_old.to_str().unwrap(),
                "--create-namespace",
                "-n",
                "skoala-system",
                wait,
                "--timeout",
                "60s",
                "--set",
                &format!("image.tag={OLD}"),
            ],
        );

        // the next version: hints, pack, sync
        for (name, hint) in [
            ("skoala", "- \"{{ .hive.image.registry }}/{{ .hive.image.repository }}:{{ .hive.image.tag }}\"\n- \"{{ .ui.image.registry }}/{{ .ui.image.repository }}:{{ .ui.image.tag }}\"\n"),
            ("skoala-init", "- \"{{ .image.registry }}/{{ .image.repository }}:{{ .image.tag }}\"\n"),
        ] {
            std::fs::write(w.join(format!("{name}.hints.yaml")), hint).unwrap();
        }
        let manifest = w.join("skoala.yaml");
        std::fs::write(
            &manifest,
            format!(
                "apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {{name: skoala, version: {NEW}}}\nspec:\n  platforms: [linux/amd64]\n  charts:\n    - name: skoala\n      version: {NEW}\n      path: {}\n      hints: skoala.hints.yaml\n      release: {{name: skoala, namespace: skoala-system}}\n    - name: skoala-init\n      version: {NEW}\n      path: {}\n      hints: skoala-init.hints.yaml\n      release: {{name: skoala-init, namespace: skoala-system}}\n",
                new.display(),
                init_new.display()
            ),
        )
        .unwrap();
        let out = site.bundler(&["pack", "skoala.yaml", "--output", "out", "--insecure"]);
        assert!(out.status.success(), "pack: {}", text(&out));
        std::fs::write(
            w.join("load-image.yaml"),
            format!(
                "source:\n  intermediateBundlesPath: out/skoala_{NEW}_amd64.tar\ntarget:\n  containerRegistry: {}\n  repo:\n    kind: LOCAL\n    path: ./local-repo\n",
                site.target.host()
            ),
        )
        .unwrap();
        let out = site.bundler(&["sync", "--config", "load-image.yaml", "--insecure"]);
        assert!(out.status.success(), "sync: {}", text(&out));
        site
    }

    fn dir(&self) -> &Path {
        self.work.path()
    }

    fn bundler(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(support::bundler_bin());
        cmd.current_dir(self.dir()).args(args);
        for (k, v) in self.global.env() {
            cmd.env(k, v);
        }
        cmd.env("KUBECONFIG", &self.kubeconfig);
        cmd.env("BUNDLER_HELM", real_helm(self.major));
        cmd.env_remove("BUNDLER_LOG");
        cmd.output().expect("run bundler")
    }

    fn digest_of(&self, repo_tag: &str) -> String {
        self.digests
            .iter()
            .find(|(r, _)| r == repo_tag)
            .map(|(_, d)| d.clone())
            .unwrap()
    }

    /// The container images the API server holds for a Deployment.
    fn running(&self, api: &KubeApi, name: &str) -> String {
        let (code, body) = api.request(
            "GET",
            &format!("/apis/apps/v1/namespaces/skoala-system/deployments/{name}"),
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

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

/// Files under backups/ (a dry run adds none).
fn backup_files(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir.join("backups")) else {
        return 0;
    };
    rd.map(|e| std::fs::read_dir(e.unwrap().path()).unwrap().count())
        .sum()
}

/// The flow; with `keep_pinned_first`, skoala is first upgraded with
/// `--keep-pinned-images` (one revision more before the real upgrade).
fn seed002_flow(major: u32, keep_pinned_first: bool) {
    let site = Seed002::new(major);
    let base = if keep_pinned_first {
        keep_pinned_images_replays_the_pins_and_says_so(&site);
        1
    } else {
        0
    };
    let t = site.target.host();
    let kc = site.kubeconfig.display().to_string();
    let upgrade = |extra: &[&str]| {
        let mut a = vec![
            "upgrade",
            "skoala@global",
            "skoala-init@worker",
            "--kubeconfig",
            &kc,
            "--insecure",
            "--timeout",
            "60s",
        ];
        a.extend_from_slice(extra);
        site.bundler(&a)
    };

    // a plain --set with two releases is refused; nothing was asked of the clusters
    let out = upgrade(&["--set", "replicas=2"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        support::stderr(&out).contains("--set RELEASE:replicas=2"),
        "{}",
        text(&out)
    );

    // a dry run: the pins show, nothing is written (no backup, no temp path)
    let backups = backup_files(site.dir());
    let out = upgrade(&["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = support::stdout(&out);
    assert!(
        stdout.contains(&format!(
            "~ ui.image.tag: \"{UI_OLD}\" -> \"{UI_NEW}\" (pinned at install; the bundle carries {UI_NEW})"
        )),
        "{stdout}"
    );
    assert_eq!(
        backup_files(site.dir()),
        backups,
        "a dry run writes no backup"
    );
    assert!(stdout.contains("-f '<the values backup>'"), "{stdout}");
    assert_eq!(
        site.global.revision("skoala", "skoala-system"),
        Some(1 + base)
    );

    let status = |extra: &[&str]| {
        let mut a = vec![
            "status",
            "skoala@global",
            "skoala-init@worker",
            "--kubeconfig",
            &kc,
            "--insecure",
        ];
        a.extend_from_slice(extra);
        site.bundler(&a)
    };
    // a value this run sets itself is not a stale pin: it wins (helm applies
    // --set-string after --set, so bundler does not pin that path)
    let out = upgrade(&["--dry-run", "--force", "--set", "skoala:ui.image.tag=v9"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = support::stdout(&out);
    assert!(
        stdout.contains(&format!("~ ui.image.tag: \"{UI_OLD}\" -> \"v9\"\n")),
        "{stdout}"
    );
    assert!(!stdout.contains("--set-string ui.image.tag"), "{stdout}");
    assert!(stdout.contains("--set-string hive.image.tag"), "{stdout}");

    // before bundler's upgrade: the site does not run the package
    let out = status(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = support::stdout(&out);
    assert!(
        said.contains(&format!(
            "runs chart skoala-init-{OLD}, the package carries skoala-init-{NEW}"
        )) && said.contains("no bundler deploy record in the cluster"),
        "{said}"
    );

    // the upgrade, with a value meant for skoala-init only
    // (the helm v3 run says the same with an upgrade plan file)
    let out = if keep_pinned_first {
        let plan = site.dir().join("upgrade-plan.yaml");
        std::fs::write(
            &plan,
            "releases:\n  - name: skoala\n    context: global\n  - name: skoala-init\n    context: worker\n    set: [note=init-only]\n",
        )
        .unwrap();
        site.bundler(&[
            "upgrade",
            "--plan",
            plan.to_str().unwrap(),
            "--kubeconfig",
            &kc,
            "--insecure",
            "--timeout",
            "60s",
            "--json",
        ])
    } else {
        upgrade(&["--set", "skoala-init:note=init-only", "--json"])
    };
    println!("== bundler upgrade\n{}", text(&out)); // the run, for `--nocapture`
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let log = support::stderr(&out);
    for pin in [
        format!("~ hive.image.tag: \"{OLD}\" -> \"{NEW}\" (pinned at install; the bundle carries {NEW})"),
        format!("~ ui.image.tag: \"{UI_OLD}\" -> \"{UI_NEW}\" (pinned at install; the bundle carries {UI_NEW})"),
        format!("~ image.tag: \"{OLD}\" -> \"{NEW}\" (pinned at install; the bundle carries {NEW})"),
    ] {
        assert!(log.contains(&pin), "{pin}\n{log}");
    }
    assert!(
        log.contains("post-upgrade check of skoala (helm get manifest): 2 image(s)"),
        "{log}"
    );
    let summary = json(&out);
    assert_eq!(summary["outcome"], "upgraded");
    let mut checked = 0;
    for r in summary["releases"].as_array().unwrap() {
        for c in r["imageChecks"].as_array().unwrap() {
            let image = c["image"].as_str().unwrap();
            let repo_tag = image.strip_prefix(&format!("{t}/")).unwrap();
            assert_eq!(c["result"], "ok", "{c}");
            assert_eq!(
                c["expectedDigest"],
                site.digest_of(repo_tag).as_str(),
                "{c}"
            );
            assert_eq!(c["registryDigest"], c["expectedDigest"], "{c}");
            checked += 1;
        }
    }
    assert_eq!(checked, 3, "{summary}");
    let init_checks = &summary["releases"][1]["imageChecks"][0]["locations"];
    assert_eq!(
        init_checks,
        &serde_json::json!([
            "Deployment/skoala-init containers[0]",
            "Job/skoala-init-migrate containers[0]"
        ]),
        "the hook's image is checked: {summary}"
    );

    // the end state: each cluster runs exactly the package's images
    assert_eq!(
        site.running(&site.global, "hive"),
        format!("{t}/skoala/hive:{NEW}")
    );
    assert_eq!(
        site.running(&site.global, "skoala-ui"),
        format!("{t}/skoala/ui:{UI_NEW}")
    );
    assert_eq!(
        site.running(&site.worker, "skoala-init"),
        format!("{t}/skoala/skoala-init:{NEW}")
    );
    let skoala_values = site.global.values("skoala", "skoala-system", 2 + base);
    assert!(!skoala_values.contains("init-only"), "{skoala_values}");
    assert!(site
        .worker
        .values("skoala-init", "skoala-system", 2)
        .contains("note: init-only"));

    // status, from the record in the clusters: exit 0
    println!("== bundler status\n{}", text(&status(&[])));
    let out = status(&["--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let report = json(&out);
    assert_eq!(report["matches"], true, "{report}");
    let rec = &report["releases"][0]["record"];
    assert_eq!(rec["revision"], (2 + base).to_string(), "{report}");
    assert_eq!(rec["product"]["version"], NEW, "{report}");
    assert!(
        rec["packageDigest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:"),
        "{report}"
    );
    // and from a directory with no local record at all: the cluster says it
    let elsewhere = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(support::bundler_bin());
    cmd.current_dir(elsewhere.path())
        .args([
            "status",
            "skoala@global",
            "skoala-init@worker",
            "--kubeconfig",
            &kc,
            "--insecure",
        ])
        .env("BUNDLER_HELM", real_helm(major));
    for (k, v) in site.global.env() {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    // a hand change (the guide's way: --reuse-values --set) is drift, and the old image is named
    let tgz = site.dir().join(format!("local-repo/skoala-{NEW}.tgz"));
    site.global.helm(
        major,
        &[
            "upgrade",
            "skoala",
            tgz.to_str().unwrap(),
            "-n",
            "skoala-system",
            "--reuse-values",
            "--set",
            &format!("ui.image.tag={UI_OLD}"),
        ],
    );
    let out = status(&[]);
    println!("== bundler status after a hand change\n{}", text(&out));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = support::stdout(&out);
    assert!(
        said.contains(&format!(
            "changed outside bundler: revision {} was written after bundler's revision {}",
            3 + base,
            2 + base
        )),
        "{said}"
    );
    assert!(
        said.contains(&format!("not-carried     {t}/skoala/ui:{UI_OLD}")),
        "{said}"
    );
    assert!(
        said.contains(&format!("ui.image.tag=\"{UI_OLD}\" (user-supplied)")),
        "{said}"
    );
    assert!(
        said.contains("skoala-init@worker in skoala-system: revision 2"),
        "{said}"
    );
}

#[test]
fn seed002_pinned_tags_are_upgraded_and_proven_helm_v4() {
    seed002_flow(4, false);
}

#[test]
fn seed002_pinned_tags_are_upgraded_and_proven_helm_v3() {
    seed002_flow(3, true);
}

/// (helm v3 run) `--keep-pinned-images` replays the install's pins: refused by the
/// pre-flight with advice about the pin (not "sync the images first") while
/// the pinned images are not in the registry; once they are, the release
/// keeps them and the post-upgrade check lets exactly those through.
fn keep_pinned_images_replays_the_pins_and_says_so(site: &Seed002) {
    let t = site.target.host();
    let kc = site.kubeconfig.display().to_string();
    let upgrade = || {
        site.bundler(&[
            "upgrade",
            "skoala@global",
            "--kubeconfig",
            &kc,
            "--insecure",
            "--timeout",
            "60s",
            "--keep-pinned-images",
        ])
    };
    let out = upgrade();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = support::stderr(&out);
    assert!(err.contains(&format!("{t}/skoala/ui:{UI_OLD}")), "{err}");
    assert!(
        err.contains(&format!(
            "ui.image.tag=\"{UI_OLD}\" (the bundle carries \"{UI_NEW}\")"
        )),
        "{err}"
    );
    assert!(err.contains("drop --keep-pinned-images"), "{err}");
    assert!(!err.contains("sync the images first"), "{err}");
    assert!(
        support::stdout(&out).contains(&format!(
            "= ui.image.tag: \"{UI_OLD}\" kept (pinned at install; the bundle carries {UI_NEW}; --keep-pinned-images)"
        )),
        "{}",
        text(&out)
    );
    assert_eq!(site.global.revision("skoala", "skoala-system"), Some(1));

    // the pinned images reach the registry (an earlier package carried them)
    for repo_tag in [format!("skoala/ui:{UI_OLD}"), format!("skoala/hive:{OLD}")] {
        let layout = site
            .dir()
            .join(format!("layout-{}", repo_tag.replace(['/', ':'], "_")));
        site.target
            .skopeo_copy_in(&format!("oci:{}:t", layout.display()), &repo_tag);
    }
    let out = upgrade();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = support::stdout(&out);
    assert!(
        stdout.contains(&format!("pinned          {t}/skoala/ui:{UI_OLD} (Deployment/skoala-ui containers[0]): kept by --keep-pinned-images")),
        "{stdout}"
    );
    assert_eq!(
        site.running(&site.global, "skoala-ui"),
        format!("{t}/skoala/ui:{UI_OLD}")
    );
    assert_eq!(
        site.running(&site.global, "hive"),
        format!("{t}/skoala/hive:{OLD}")
    );
    // and status says the site does not run the package
    let out = site.bundler(&["status", "skoala@global", "--kubeconfig", &kc, "--insecure"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}
