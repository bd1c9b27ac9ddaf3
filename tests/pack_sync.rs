//! End to end through the binary: `bundler pack` from a real source registry
//! into bundles, `bundler sync` into a real target registry, checked with
//! skopeo (digests, tags) and helm (pull + template of the relocated chart).
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::images;
use support::registry::{Mode, Registry, PASSWORD, USER};
use support::{bundler, stderr, stdout};

/// A chart whose values name images in `source` (registry/repository/tag map,
/// a whole-reference string, and a subchart), with a deployment rendering them.
fn write_chart(dir: &Path, source: &str) -> PathBuf {
    let c = dir.join("shop");
    std::fs::create_dir_all(c.join("templates")).unwrap();
    std::fs::create_dir_all(c.join("charts/cache/templates")).unwrap();
    std::fs::write(c.join("Chart.yaml"), "apiVersion: v2\nname: shop\nversion: 2.1.0\nappVersion: \"2.1.0\"\ndependencies:\n  - name: cache\n    version: 0.1.0\n").unwrap();
    std::fs::write(
        c.join("values.yaml"),
        format!(
            "# shop values: comments must survive\nglobal:\n  imageRegistry: \"\"\n\nfrontend:\n  image:\n    registry: {source}\n    repository: shop/frontend\n    tag: \"1.0\"   # pinned\n\nbackend:\n  image: {source}/shop/backend:2.0\n"
        ),
    )
    .unwrap();
    std::fs::write(
        c.join("templates/deploy.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: shop\nspec:\n  template:\n    spec:\n      containers:\n        - name: frontend\n          image: {{ .Values.global.imageRegistry | default .Values.frontend.image.registry }}/{{ .Values.frontend.image.repository }}:{{ .Values.frontend.image.tag }}\n        - name: backend\n          image: {{ .Values.backend.image }}\n",
    )
    .unwrap();
    std::fs::write(
        c.join("charts/cache/Chart.yaml"),
        "apiVersion: v2\nname: cache\nversion: 0.1.0\n",
    )
    .unwrap();
    std::fs::write(
        c.join("charts/cache/values.yaml"),
        format!("image:\n  registry: {source}\n  repository: shop/cache\n  tag: \"7\"\n"),
    )
    .unwrap();
    std::fs::write(
        c.join("charts/cache/templates/sts.yaml"),
        "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: cache\nspec:\n  template:\n    spec:\n      containers:\n        - name: cache\n          image: {{ .Values.image.registry }}/{{ .Values.image.repository }}:{{ .Values.image.tag }}\n",
    )
    .unwrap();
    c
}

struct Packed {
    _work: tempfile::TempDir,
    out: PathBuf,
    src: Registry,
    /// digests of frontend, backend (amd64 manifest), cache, the backend index,
    /// and the backend arm64 manifest
    digests: Vec<String>,
}

/// Source registry (basic auth) with the chart's images; pack them.
fn pack_shop(extra_pack_args: &[&str]) -> Packed {
    let src = Registry::start(Mode::BasicAuth);
    let work = tempfile::tempdir().unwrap();
    let shared = images::pseudo_random(1, 300_000);
    let fe = images::push_simple(
        &src,
        work.path(),
        "shop/frontend:1.0",
        &[&shared, b"frontend"],
    );
    let (idx, be_amd, be_arm) =
        images::push_multiarch(&src, work.path(), "shop/backend:2.0", &shared);
    let cache = images::push_simple(&src, work.path(), "shop/cache:7", &[&shared, b"cache"]);
    let chart = write_chart(work.path(), &src.host());
    let manifest = work.path().join("shop.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {{name: shop, version: 2.1.0}}\nspec:\n  platforms: [linux/amd64]\n  charts:\n    - name: shop\n      version: 2.1.0\n      path: {}\n      release: {{name: shop, namespace: shop-system}}\n",
            chart.display()
        ),
    )
    .unwrap();
    // Credentials for the source registry come from a docker config.json.
    let docker_cfg = work.path().join("docker");
    std::fs::create_dir_all(&docker_cfg).unwrap();
    let auth = base64(&format!("{USER}:{PASSWORD}"));
    std::fs::write(
        docker_cfg.join("config.json"),
        format!(
            "{{\"auths\":{{\"{}\":{{\"auth\":\"{auth}\"}}}}}}",
            src.host()
        ),
    )
    .unwrap();
    let out = work.path().join("out");
    let mut args = vec![
        "pack",
        manifest.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--insecure",
        "--json",
    ];
    args.extend_from_slice(extra_pack_args);
    let o = Command::new(support::bundler_bin())
        .args(&args)
        .env("DOCKER_CONFIG", &docker_cfg)
        .current_dir(work.path())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "pack failed: {}\n{}",
        stderr(&o),
        stdout(&o)
    );
    assert!(!stdout(&o).contains(PASSWORD) && !stderr(&o).contains(PASSWORD));
    Packed {
        _work: work,
        out,
        src,
        digests: vec![fe, be_amd, cache, idx, be_arm],
    }
}

fn base64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn write_sync_config(
    dir: &Path,
    source: &Path,
    target: &Registry,
    repo_block: &str,
    password: &str,
) -> PathBuf {
    let cfg = dir.join("load-image.yaml");
    std::fs::write(
        &cfg,
        format!(
            "source:\n  intermediateBundlesPath: {}\ntarget:\n  containerPrefixRegistry: {}\n  repo:\n{repo_block}\n  containers:\n    auth:\n      username: \"{USER}\"\n      password: \"{password}\"\n",
            source.display(),
            target.host()
        ),
    )
    .unwrap();
    cfg
}

fn sync_json(dir: &Path, cfg: &Path, extra: &[&str]) -> (serde_json::Value, std::process::Output) {
    let mut args = vec!["sync", "--config", cfg.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let o = bundler(dir, &args);
    let v = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (v, o)
}

#[test]
fn pack_writes_the_seed_layout_and_keeps_source_digests() {
    let p = pack_shop(&[]);
    let bundle = p.out.join("shop_2.1.0.bundle.tar");
    for f in [
        "shop_2.1.0.bundle.tar",
        "shop-2.1.0.tgz",
        "shop_2.1.0_amd64.tar",
    ] {
        assert!(
            p.out.join(f).is_file(),
            "{f} missing in {:?}",
            std::fs::read_dir(&p.out)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect::<Vec<_>>()
        );
    }
    // The outer package holds the bundle and the chart archive.
    let list = Command::new("tar")
        .arg("tf")
        .arg(p.out.join("shop_2.1.0_amd64.tar"))
        .output()
        .unwrap();
    let names = stdout(&list);
    assert!(
        names.contains("shop_2.1.0.bundle.tar") && names.contains("shop-2.1.0.tgz"),
        "{names}"
    );

    // inspect: the three images with the source digests (backend filtered to amd64).
    let o = bundler(&p.out, &["inspect", bundle.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for d in &p.digests[..3] {
        assert!(text.contains(d.as_str()), "inspect lacks {d}: {text}");
    }
    // bundle.json records index -> platform manifest for the filtered image.
    let bj = extract(&bundle, "bundle.json");
    let bj: serde_json::Value = serde_json::from_slice(&bj).unwrap();
    let backend = bj["images"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["reference"].as_str().unwrap().contains("shop/backend"))
        .unwrap();
    assert_eq!(backend["sourceIndex"], p.digests[3].as_str());
    assert_eq!(backend["digest"], p.digests[1].as_str());

    // images.tar is readable by skopeo as a docker archive and an OCI archive,
    // with the source's manifest digest.
    let inner = p._work.path().join("images.tar");
    std::fs::write(&inner, extract(&bundle, "images.tar")).unwrap();
    let fe_ref = format!("{}/shop/frontend:1.0", p.src.host());
    let raw = Command::new("skopeo")
        .args([
            "inspect",
            "--raw",
            &format!("oci-archive:{}:{fe_ref}", inner.display()),
        ])
        .output()
        .unwrap();
    assert!(raw.status.success(), "{}", stderr(&raw));
    assert_eq!(images::blob(raw.stdout).digest, p.digests[0]);
    let da = Command::new("skopeo")
        .args([
            "inspect",
            &format!("docker-archive:{}:{fe_ref}", inner.display()),
        ])
        .output()
        .unwrap();
    assert!(da.status.success(), "{}", stderr(&da));

    // The shared base layer is stored once.
    let tar_list = Command::new("tar").arg("tf").arg(&inner).output().unwrap();
    let blobs: Vec<String> = stdout(&tar_list)
        .lines()
        .filter(|l| l.starts_with("blobs/sha256/") && l.len() > 20)
        .map(str::to_string)
        .collect();
    let mut dedup = blobs.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(blobs.len(), dedup.len(), "a blob is stored twice");

    // verify passes.
    let v = bundler(&p.out, &["verify", bundle.to_str().unwrap()]);
    assert!(v.status.success(), "{}", stderr(&v));
}

#[test]
fn packing_twice_gives_identical_bytes() {
    let p = pack_shop(&[]);
    let first = std::fs::read(p.out.join("shop_2.1.0.bundle.tar")).unwrap();
    let again = p._work.path().join("again");
    let manifest = p._work.path().join("shop.yaml");
    let o = Command::new(support::bundler_bin())
        .args([
            "pack",
            manifest.to_str().unwrap(),
            "--output",
            again.to_str().unwrap(),
            "--insecure",
        ])
        .env("DOCKER_CONFIG", p._work.path().join("docker"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let second = std::fs::read(again.join("shop_2.1.0.bundle.tar")).unwrap();
    assert!(
        first == second,
        "bundles differ ({} vs {} bytes)",
        first.len(),
        second.len()
    );
    assert_eq!(
        std::fs::read(p.out.join("shop_2.1.0_amd64.tar")).unwrap(),
        std::fs::read(again.join("shop_2.1.0_amd64.tar")).unwrap()
    );
}

#[test]
fn sync_pushes_images_and_an_oci_chart_that_helm_renders_against_the_target() {
    let p = pack_shop(&[]);
    let target = Registry::start(Mode::TlsBasicAuth);
    let site = tempfile::tempdir().unwrap();
    let repo = format!("    kind: OCI\n    url: oci://{}/charts\n    auth:\n      username: \"{USER}\"\n      password: \"{PASSWORD}\"", target.host());
    // The outer package as shipped is the source.
    let cfg = write_sync_config(
        site.path(),
        &p.out.join("shop_2.1.0_amd64.tar"),
        &target,
        &repo,
        PASSWORD,
    );
    let ca = target.ca_file.clone().unwrap();
    let (v, o) = sync_json(site.path(), &cfg, &["--ca-file", ca.to_str().unwrap()]);
    assert!(
        o.status.success(),
        "sync failed: {}\n{}",
        stderr(&o),
        stdout(&o)
    );
    assert!(!stdout(&o).contains(PASSWORD) && !stderr(&o).contains(PASSWORD));
    assert_eq!(v["imagesPushed"], 3, "{v}");
    // frontend and cache share their base layer: it went up once and was
    // mounted into the other repository.
    assert_eq!(v["blobsMounted"], 1, "{v}");

    // Digests survived, under the rewritten references.
    let src_host = p.src.host().replace(':', "_");
    for (repo_tag, digest) in [
        ("shop/frontend:1.0", &p.digests[0]),
        ("shop/backend:2.0", &p.digests[1]),
        ("shop/cache:7", &p.digests[2]),
    ] {
        let raw = target
            .raw_manifest(&format!("{src_host}/{repo_tag}"))
            .unwrap_or_else(|| panic!("{repo_tag} not in target"));
        assert_eq!(&images::blob(raw).digest, digest, "{repo_tag}");
    }

    // helm pulls the relocated chart and renders only target images.
    let helm_home = site.path().join("helm");
    let helm = |args: &[&str]| {
        Command::new(support::helm())
            .args(args)
            .env("HELM_REGISTRY_CONFIG", helm_home.join("registry.json"))
            .env("HELM_CACHE_HOME", helm_home.join("cache"))
            .env("HELM_CONFIG_HOME", helm_home.join("config"))
            .current_dir(site.path())
            .output()
            .unwrap()
    };
    let login = helm(&[
        "registry",
        "login",
        &target.host(),
        "-u",
        USER,
        "-p",
        PASSWORD,
        "--ca-file",
        ca.to_str().unwrap(),
    ]);
    assert!(login.status.success(), "{}", stderr(&login));
    let pull = helm(&[
        "pull",
        &format!("oci://{}/charts/shop", target.host()),
        "--version",
        "2.1.0",
        "--ca-file",
        ca.to_str().unwrap(),
    ]);
    assert!(pull.status.success(), "helm pull: {}", stderr(&pull));
    let tpl = helm(&["template", "shop", "shop-2.1.0.tgz"]);
    assert!(tpl.status.success(), "{}", stderr(&tpl));
    let rendered = stdout(&tpl);
    let imgs: Vec<&str> = rendered
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image: "))
        .collect();
    assert_eq!(imgs.len(), 3, "{rendered}");
    for i in imgs {
        let i = i.trim_matches('"');
        assert!(
            i.starts_with(&format!("{}/", target.host())),
            "{i} is not in the target registry"
        );
        let path = i.split_once('/').unwrap().1;
        assert!(
            target.raw_manifest(path).is_some(),
            "rendered image {i} is not in the target registry"
        );
    }
    // The relocated values kept the comment.
    let values = Command::new("tar")
        .args(["xzOf", "shop-2.1.0.tgz", "shop/values.yaml"])
        .current_dir(site.path())
        .output()
        .unwrap();
    assert!(
        stdout(&values).contains("# shop values: comments must survive"),
        "{}",
        stdout(&values)
    );

    // Second run: nothing moves.
    let (v2, o2) = sync_json(site.path(), &cfg, &["--ca-file", ca.to_str().unwrap()]);
    assert!(o2.status.success(), "{}", stderr(&o2));
    assert_eq!(v2["blobsUploaded"], 0, "{v2}");
    assert_eq!(v2["bytesUploaded"], 0, "{v2}");
    assert_eq!(v2["imagesUnchanged"], 3, "{v2}");

    // upgrade finds what sync recorded.
    let state = std::fs::read_to_string(site.path().join(".bundler/synced.json")).unwrap();
    assert!(
        state.contains("shop-system")
            && state.contains(&format!("oci://{}/charts/shop", target.host())),
        "{state}"
    );
}

#[test]
fn sync_to_a_local_repo_gives_an_index_helm_can_use() {
    let p = pack_shop(&[]);
    let target = Registry::start(Mode::Plain);
    let site = tempfile::tempdir().unwrap();
    let cfg = write_sync_config(
        site.path(),
        &p.out,
        &target,
        "    kind: LOCAL\n    path: ./local-repo",
        "unused",
    );
    let (_, o) = sync_json(site.path(), &cfg, &["--insecure"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let tgz = site.path().join("local-repo/shop-2.1.0.tgz");
    assert!(tgz.is_file());
    let index = std::fs::read_to_string(site.path().join("local-repo/index.yaml")).unwrap();
    assert!(index.contains("shop") && index.contains("2.1.0"), "{index}");
    let tpl = Command::new(support::helm())
        .args(["template", "x"])
        .arg(&tgz)
        .output()
        .unwrap();
    assert!(tpl.status.success(), "{}", stderr(&tpl));
    for l in stdout(&tpl)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("image: "))
    {
        assert!(l.trim_matches('"').starts_with(&target.host()), "{l}");
    }
}

#[test]
fn dry_run_and_print_images_push_nothing() {
    let p = pack_shop(&[]);
    let target = Registry::start(Mode::Plain);
    let site = tempfile::tempdir().unwrap();
    let cfg = write_sync_config(
        site.path(),
        &p.out,
        &target,
        "    kind: LOCAL\n    path: ./local-repo",
        "unused",
    );
    let o = bundler(
        site.path(),
        &[
            "sync",
            "--config",
            cfg.to_str().unwrap(),
            "--insecure",
            "--dry-run",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let plan = stdout(&o);
    assert!(
        plan.contains(&format!(
            "{}/{}/shop/frontend:1.0",
            target.host(),
            p.src.host().replace(':', "_")
        )),
        "{plan}"
    );
    assert!(plan.contains("chart shop 2.1.0"), "{plan}");
    assert!(target
        .raw_manifest(&format!(
            "{}/shop/frontend:1.0",
            p.src.host().replace(':', "_")
        ))
        .is_none());
    assert!(!site.path().join("local-repo").exists());
    let o = bundler(
        site.path(),
        &["sync", "--config", cfg.to_str().unwrap(), "--print-images"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stdout(&o).lines().filter(|l| l.contains(" -> ")).count(),
        3,
        "{}",
        stdout(&o)
    );
}

#[test]
fn wrong_password_is_a_credentials_error_that_never_shows_the_password() {
    let p = pack_shop(&[]);
    let target = Registry::start(Mode::BasicAuth);
    let site = tempfile::tempdir().unwrap();
    let wrong = "Wr0ng-Secret-Value";
    let cfg = write_sync_config(
        site.path(),
        &p.out,
        &target,
        "    kind: LOCAL\n    path: ./local-repo",
        wrong,
    );
    let o = bundler(
        site.path(),
        &[
            "sync",
            "--config",
            cfg.to_str().unwrap(),
            "--insecure",
            "-vv",
        ],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(err.to_lowercase().contains("credential"), "{err}");
    assert!(
        !err.contains(wrong) && !stdout(&o).contains(wrong),
        "password leaked: {err}"
    );
    assert!(
        !site.path().join("local-repo").exists(),
        "charts published although images failed"
    );
}

#[test]
fn the_relok8s_fixture_bundle_syncs() {
    let target = Registry::start(Mode::Plain);
    let site = tempfile::tempdir().unwrap();
    let bundles = site.path().join("bundles");
    std::fs::create_dir_all(&bundles).unwrap();
    std::fs::copy(
        support::fixture("relok8s/testchart-intermediate.tar"),
        bundles.join("testchart-0.1.0.bundle.tar"),
    )
    .unwrap();
    let cfg = write_sync_config(
        site.path(),
        &bundles,
        &target,
        "    kind: LOCAL\n    path: ./local-repo",
        "unused",
    );
    // The chart's test pod (`helm.sh/hook: test`) names a literal
    // `busybox` no hint covers: install and upgrade do not deploy test
    // hooks, so sync publishes the chart and warns (issue 18).
    let (v, o) = sync_json(site.path(), &cfg, &["--insecure"]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), stdout(&o));
    assert!(v["unrelocated"].is_null(), "{v}");
    assert!(
        stderr(&o).contains("warning: chart testchart 0.1.0: busybox")
            && stderr(&o).contains("helm.sh/hook: test"),
        "{}",
        stderr(&o)
    );
    let busybox =
        target.raw_manifest("harbor-repo.vmware.com/dockerhub-proxy-cache/library/busybox:1.33.1");
    assert!(busybox.is_some(), "busybox not pushed");
    let index = std::fs::read_to_string(site.path().join("local-repo/index.yaml")).unwrap();
    assert!(index.contains("testchart"), "{index}");
}

/// Read one entry of a tar file.
fn extract(tar_path: &Path, name: &str) -> Vec<u8> {
    let mut ar = tar::Archive::new(std::fs::File::open(tar_path).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some(name) {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut v).unwrap();
            return v;
        }
    }
    panic!("{name} not in {}", tar_path.display())
}

#[test]
fn sync_into_harbor_creates_the_projects_and_pushes_images_and_chart() {
    use support::chart_server::{ChartServer, Config};
    let p = pack_shop(&[]);
    let backing = Registry::start(Mode::Plain);
    let harbor = ChartServer::start(Config {
        harbor_version: "v2.10.0-abcdef".into(),
        registry: Some(backing.host()),
        ..Config::default()
    });
    let site = tempfile::tempdir().unwrap();
    let cfg = site.path().join("load-image.yaml");
    // Seed 002's HARBOR example, pointed at the stand-in.
    std::fs::write(
        &cfg,
        format!(
            "source:\n  intermediateBundlesPath: {}\ntarget:\n  containerPrefixRegistry: {host}\n  repo:\n    kind: HARBOR\n    url: http://{host}/chartrepo/release\n    auth:\n      username: \"admin\"\n      password: \"Harbor12345\"\n  containers:\n    auth:\n      username: \"admin\"\n      password: \"Harbor12345\"\n",
            p.out.display(),
            host = harbor.host()
        ),
    )
    .unwrap();
    let (v, o) = sync_json(
        site.path(),
        &cfg,
        &["--insecure", "--auto-create-repository"],
    );
    assert!(o.status.success(), "{}\n{}", stderr(&o), stdout(&o));
    assert_eq!(v["imagesPushed"], 3, "{v}");
    let projects = harbor.projects();
    let image_project = p.src.host().replace(':', "_");
    assert!(
        projects.contains(&image_project),
        "image project not created: {projects:?}"
    );
    assert!(
        projects.contains(&"release".to_string()),
        "chart project not created: {projects:?}"
    );
    // The images are in the registry behind the Harbor, digests kept.
    let raw = backing
        .raw_manifest(&format!("{image_project}/shop/frontend:1.0"))
        .expect("frontend pushed");
    assert_eq!(images::blob(raw).digest, p.digests[0]);
    // The chart went up as an OCI artifact (Harbor >= 2.8): helm pulls it.
    let pull = Command::new(support::helm())
        .args([
            "pull",
            &format!("oci://{}/release/shop", harbor.host()),
            "--version",
            "2.1.0",
            "--plain-http",
        ])
        .env("HELM_REGISTRY_CONFIG", site.path().join("reg.json"))
        .current_dir(site.path())
        .output()
        .unwrap();
    assert!(pull.status.success(), "helm pull: {}", stderr(&pull));
}

#[test]
fn whole_indexes_survive_and_sync_platform_picks_one() {
    let p = pack_shop(&["--platform", "all"]);
    let target = Registry::start(Mode::Plain);
    let site = tempfile::tempdir().unwrap();
    let cfg = write_sync_config(
        site.path(),
        &p.out,
        &target,
        "    kind: LOCAL\n    path: ./local-repo",
        "unused",
    );
    let backend = format!("{}/shop/backend:2.0", p.src.host().replace(':', "_"));
    // Without --platform the whole index goes up: its digest survives.
    let (_, o) = sync_json(site.path(), &cfg, &["--insecure"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        images::blob(target.raw_manifest(&backend).unwrap()).digest,
        p.digests[3]
    );
    // With one --platform, only that platform's manifest, byte for byte.
    let target2 = Registry::start(Mode::Plain);
    let site2 = tempfile::tempdir().unwrap();
    let cfg2 = write_sync_config(
        site2.path(),
        &p.out,
        &target2,
        "    kind: LOCAL\n    path: ./local-repo",
        "unused",
    );
    let (_, o) = sync_json(
        site2.path(),
        &cfg2,
        &["--insecure", "--platform", "linux/arm64"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        images::blob(target2.raw_manifest(&backend).unwrap()).digest,
        p.digests[4]
    );
    // A platform the bundle does not hold is an error naming the image.
    let target3 = Registry::start(Mode::Plain);
    let cfg3 = write_sync_config(
        site2.path(),
        &p.out,
        &target3,
        "    kind: LOCAL\n    path: ./local-repo3",
        "unused",
    );
    let o = bundler(
        site2.path(),
        &[
            "sync",
            "--config",
            cfg3.to_str().unwrap(),
            "--insecure",
            "--platform",
            "linux/s390x",
        ],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("linux/s390x") && stderr(&o).contains("shop/backend"),
        "{}",
        stderr(&o)
    );
}

/// The shop images tagged in `target`.
fn target_tags(target: &Registry, p: &Packed) -> Vec<String> {
    let src = p.src.host().replace(':', "_");
    ["shop/frontend:1.0", "shop/backend:2.0", "shop/cache:7"]
        .iter()
        .filter(|r| target.raw_manifest(&format!("{src}/{r}")).is_some())
        .map(|r| r.to_string())
        .collect()
}

#[test]
fn sync_plans_first_reads_each_moving_byte_once_and_says_what_happens_to_each_blob() {
    let p = pack_shop(&[]);
    let target = Registry::start(Mode::Plain);
    let site = tempfile::tempdir().unwrap();
    let cfg = write_sync_config(
        site.path(),
        &p.out,
        &target,
        "    kind: LOCAL\n    path: ./local-repo",
        "unused",
    );
    // Without --json: the progress lines on stderr (not a terminal).
    let o = bundler(
        site.path(),
        &["sync", "--config", cfg.to_str().unwrap(), "--insecure"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    let summary = stdout(&o);
    // The plan comes before any blob moves, and names what will move.
    let plan_at = err.find("plan: 3 images (0 unchanged)").expect(&err);
    let first_blob = err.find("uploaded ").expect(&err);
    assert!(plan_at < first_blob, "{err}");
    // One line per blob of every image, saying upload or mount.
    let uploaded = err.lines().filter(|l| l.starts_with("uploaded ")).count();
    let mounted = err.lines().filter(|l| l.starts_with("mounted ")).count();
    assert!(
        summary.contains(&format!(
            "blobs: {uploaded} uploaded, {mounted} mounted, 0 already there"
        )),
        "{summary}\n{err}"
    );
    assert!(mounted >= 1 && uploaded >= 4, "{err}");
    // Manifests only after every blob: the first "pushed" line follows
    // the last blob line.
    let lines: Vec<&str> = err.lines().collect();
    let last_blob = lines
        .iter()
        .rposition(|l| l.starts_with("uploaded ") || l.starts_with("mounted "))
        .unwrap();
    let first_pushed = lines.iter().position(|l| l.starts_with("pushed ")).unwrap();
    assert!(last_blob < first_pushed, "{err}");

    // One read per byte: no verification pass before the uploads (a fresh
    // target, with --json for the byte counts).
    let target = Registry::start(Mode::Plain);
    let cfg = write_sync_config(
        site.path(),
        &p.out,
        &target,
        "    kind: LOCAL\n    path: ./local-repo2",
        "unused",
    );
    let (v, o) = sync_json(site.path(), &cfg, &["--insecure"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let read = v["bytesRead"].as_u64().expect("bytesRead");
    let pushed = v["bytesUploaded"].as_u64().unwrap();
    assert!(pushed > 300_000, "{v}");
    assert!(
        read <= pushed + pushed / 20 + (96 << 10),
        "read {read} bytes to push {pushed}: {v}"
    );

    // Re-sync: the plan's HEADs and nothing else; no blob is read.
    let (v2, o2) = sync_json(site.path(), &cfg, &["--insecure"]);
    assert!(o2.status.success(), "{}", stderr(&o2));
    assert_eq!(v2["imagesUnchanged"], 3, "{v2}");
    assert_eq!(v2["bytesUploaded"], 0, "{v2}");
    let read2 = v2["bytesRead"].as_u64().unwrap();
    assert!(read2 < 128 << 10, "a re-sync read {read2} bytes: {v2}");
    assert!(
        !stderr(&o2).contains("uploaded ") && !stderr(&o2).contains("mounted "),
        "{}",
        stderr(&o2)
    );

    // --verify reads every blob first: the full check is there on demand.
    let (v3, o3) = sync_json(site.path(), &cfg, &["--insecure", "--verify"]);
    assert!(o3.status.success(), "{}", stderr(&o3));
    assert!(v3["bytesRead"].as_u64().unwrap() > pushed, "{v3}");
}

#[test]
fn a_platform_the_bundles_do_not_hold_is_refused_and_nothing_is_pushed() {
    // Packed for linux/amd64 only.
    let p = pack_shop(&[]);
    let target = Registry::start(Mode::Plain);
    let site = tempfile::tempdir().unwrap();
    let cfg = write_sync_config(
        site.path(),
        &p.out,
        &target,
        "    kind: LOCAL\n    path: ./local-repo",
        "unused",
    );
    let (_, o) = sync_json(
        site.path(),
        &cfg,
        &["--insecure", "--platform", "linux/arm64"],
    );
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--platform linux/arm64") && err.contains("only linux/amd64"),
        "{err}"
    );
    assert!(err.contains("shop/frontend:1.0"), "{err}");
    assert!(!err.contains("unchanged"), "{err}");
    assert!(target_tags(&target, &p).is_empty());
    assert!(!site.path().join("local-repo").exists());
    // The platform it holds is fine.
    let (v, o) = sync_json(
        site.path(),
        &cfg,
        &["--insecure", "--platform", "linux/amd64"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(v["imagesPushed"], 3, "{v}");
}

#[test]
fn an_image_carried_by_two_bundles_counts_once_and_counts_add_up() {
    let p = pack_shop(&[]);
    // The chart bundle twice (as a site that received it in two packages).
    let dir = p.out.join("twice");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        p.out.join("shop_2.1.0.bundle.tar"),
        dir.join("shop_2.1.0.bundle.tar"),
    )
    .unwrap();
    std::fs::copy(
        p.out.join("shop_2.1.0.bundle.tar"),
        dir.join("shop-again_2.1.0.bundle.tar"),
    )
    .unwrap();
    let target = Registry::start(Mode::Plain);
    let site = tempfile::tempdir().unwrap();
    let cfg = write_sync_config(
        site.path(),
        &dir,
        &target,
        "    kind: LOCAL\n    path: ./local-repo",
        "unused",
    );
    let (v, o) = sync_json(site.path(), &cfg, &["--insecure"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(v["bundles"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["images"].as_array().unwrap().len(), 3, "{v}");
    assert_eq!(v["imagesPushed"], 3, "{v}");
    assert_eq!(v["charts"].as_array().unwrap().len(), 1, "{v}");
    // The text summary: counts add up, singular where one.
    let o = bundler(
        site.path(),
        &["sync", "--config", cfg.to_str().unwrap(), "--insecure"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let line = stdout(&o);
    assert!(
        line.starts_with("synced 3 images (0 pushed, 3 unchanged;")
            && line.contains(" and 1 chart in "),
        "{line}"
    );
}

#[test]
fn a_down_registry_is_one_cause_naming_every_image_and_json_says_so() {
    let p = pack_shop(&[]);
    let down = Registry::start(Mode::Plain);
    let site = tempfile::tempdir().unwrap();
    let cfg = write_sync_config(
        site.path(),
        &p.out,
        &down,
        "    kind: LOCAL\n    path: ./local-repo",
        "unused",
    );
    drop(down);
    let (v, o) = sync_json(site.path(), &cfg, &["--insecure"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    // One line for the cause, with the three images it hit.
    // (The line itself may say it twice: once per scheme the probe tried.)
    assert_eq!(
        err.lines()
            .filter(|l| l.contains("Connection refused"))
            .count(),
        1,
        "{err}"
    );
    assert!(err.contains("(3 images: "), "{err}");
    for r in ["shop/frontend:1.0", "shop/backend:2.0", "shop/cache:7"] {
        assert!(err.contains(r), "{r}: {err}");
    }
    assert!(err.contains("nothing was pushed"), "{err}");
    assert!(!err.contains("the others were pushed"), "{err}");
    // --json still prints an object on stdout: the error and what was done.
    let e = &v["error"];
    assert_eq!(e["exitStatus"], 1, "{v}");
    assert!(e["kind"].is_string(), "{v}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("Connection refused"),
        "{v}"
    );
    assert_eq!(v["imagesPushed"], 0, "{v}");
    assert_eq!(v["imagesFailed"], 3, "{v}");
    assert_eq!(v["images"].as_array().unwrap().len(), 3, "{v}");
    assert!(!site.path().join("local-repo").exists());
}
