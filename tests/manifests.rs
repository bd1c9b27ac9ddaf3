//! Raw manifests and kustomize trees (issue 24, seed 004): every tree of
//! ../shared/fixtures/manifests packs with stand-in images named as the
//! manifests reference them, syncs to a LOCAL directory and to an OCI
//! registry (the real docker-registry), and the relocated copy builds with
//! the real `kubectl kustomize` and names only images that are in the
//! target registry; a diff against the originals touches only image
//! references. `bundler apply` runs the real kubectl (`--server-side`)
//! against the Kubernetes API stand-in.
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use support::images::{image, layer, write_layout, AMD64, OCI_MANIFEST};
use support::registry::{Mode, Registry};
use support::{bundler, stderr, stdout};

fn cube_studio(rel: &str) -> PathBuf {
    support::fixtures()
        .join("manifests/cube-studio/install/kubernetes")
        .join(rel)
}

/// Images each tree uses, as the fixture README lists them (not as bundler
/// finds them).
fn expected_images() -> BTreeMap<&'static str, Vec<String>> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let dashboard = s(&[
        "kubernetesui/dashboard:v2.2.0",
        "kubernetesui/metrics-scraper:v1.0.6",
    ]);
    let ccr = "ccr.ccs.tencentyun.com/cube-studio";
    let mut cube = vec![
        format!("{ccr}/kubeflow-dashboard:2022.09.01"),
        format!("{ccr}/kubeflow-dashboard-frontend:2022.09.01"),
        format!("{ccr}/automl"),
        format!("{ccr}/docker"),
        format!("{ccr}/nni:20211003"),
        "gcr.io/kubeflow-ci/tf-mnist-with-summaries:1.0".into(),
        "gcr.io/kubeflow-ci/pytorch-dist-mnist-test:v1.0".into(),
    ];
    for t in [
        "vscode-ubuntu-cpu-base",
        "vscode-ubuntu-gpu-base",
        "jupyter-ubuntu-cpu-base",
        "jupyter-ubuntu-gpu-base",
        "jupyter-ubuntu-bigdata",
        "jupyter-ubuntu-machinelearning",
        "jupyter-ubuntu-deeplearning",
    ] {
        cube.push(format!("{ccr}/notebook:{t}"));
    }
    for v in [
        "1.14.0", "2.0.0", "2.1.4", "2.2.3", "2.3.4", "2.4.3", "2.5.2", "2.6.0",
    ] {
        cube.push(format!("{ccr}/tfserving:{v}"));
        cube.push(format!("{ccr}/tfserving:{v}-gpu"));
    }
    for v in ["0.6.0", "0.5.3", "0.4.2"] {
        cube.push(format!("{ccr}/torchserve:{v}-cpu"));
        cube.push(format!("{ccr}/torchserve:{v}-gpu"));
    }
    cube.push(format!("{ccr}/onnxruntime:latest"));
    cube.push(format!("{ccr}/onnxruntime:latest-cuda"));
    for v in ["22.07-py3", "21.12-py3", "21.09-py3"] {
        cube.push(format!("{ccr}/tritonserver:{v}"));
    }
    let mlp = "gcr.io/ml-pipeline";
    let mut kfp: Vec<String> = [
        "metadata-envoy",
        "metadata-writer",
        "api-server",
        "persistenceagent",
        "frontend",
        "viewer-crd-controller",
        "visualization-server",
    ]
    .iter()
    .map(|n| format!("{mlp}/{n}:1.6.0"))
    .collect();
    kfp.extend(s(&[
        "gcr.io/tfx-oss-public/ml_metadata_store_server:0.30.0",
        "gcr.io/ml-pipeline/minio:RELEASE.2019-08-14T20-37-41Z-license-compliance",
        "gcr.io/ml-pipeline/workflow-controller:v2.12.9-license-compliance",
        "gcr.io/ml-pipeline/argoexec:v2.12.9-license-compliance",
        "gcr.io/google-containers/busybox",
    ]));
    BTreeMap::from([
        ("dashboard", dashboard.clone()),
        ("dashboard-user", dashboard),
        ("kube-batch", s(&["kubesigs/kube-batch:v0.5"])),
        ("kube-batch-demo", s(&["busybox"])),
        (
            "volcano",
            s(&[
                "volcanosh/vc-webhook-manager:v1.4.0",
                "volcanosh/vc-controller-manager:v1.4.0",
                "volcanosh/vc-scheduler:v1.4.0",
            ]),
        ),
        ("volcano-demo", s(&["nginx"])),
        ("cube", cube),
        (
            "training-operator",
            vec![format!("{ccr}/kubeflow:training-operator")],
        ),
        (
            "training-operator-kubeflow",
            s(&["public.ecr.aws/j1r0q0g6/training/training-operator:174e8813666951ded505daf334a37f60fd50c18d"]),
        ),
        ("kfp-cluster", Vec::new()),
        ("kfp", kfp),
        (
            "metrics-server",
            s(&["registry.k8s.io/metrics-server/metrics-server:v0.9.0"]),
        ),
        (
            "metrics-server-test",
            s(&["gcr.io/k8s-staging-metrics-server/metrics-server:master"]),
        ),
    ])
}

/// One OCI layout holding every image of `refs`, all the same tiny image
/// (one shared layer), named as the manifests reference them.
fn standin_archive(dir: &Path, refs: &BTreeSet<String>) -> (PathBuf, String) {
    let (m, blobs) = image(&AMD64, &[layer("standin", b"stand-in image\n")]);
    let roots: Vec<(&str, &support::images::Blob, &str)> = refs
        .iter()
        .map(|r| (r.as_str(), &m, OCI_MANIFEST))
        .collect();
    let path = dir.join("standins.oci");
    write_layout(&path, &roots, &blobs.iter().collect::<Vec<_>>());
    (path, m.digest.clone())
}

/// (name, version, path, kustomize dir) of every tree that packs.
fn trees() -> Vec<(&'static str, &'static str, PathBuf, Option<&'static str>)> {
    let ms = support::fixtures().join("manifests/metrics-server/manifests");
    vec![
        (
            "dashboard",
            "v2.2.0",
            cube_studio("dashboard/v2.2.0-cluster.yaml"),
            None,
        ),
        (
            "dashboard-user",
            "v2.2.0",
            cube_studio("dashboard/v2.2.0-user.yaml"),
            None,
        ),
        (
            "kube-batch",
            "v0.5",
            cube_studio("kube-batch/deploy.yaml"),
            None,
        ),
        (
            "kube-batch-demo",
            "v0.5",
            cube_studio("kube-batch/demo.yaml"),
            None,
        ),
        (
            "volcano",
            "v1.4.0",
            cube_studio("volcano/volcano-development.yaml"),
            None,
        ),
        (
            "volcano-demo",
            "v1.4.0",
            cube_studio("volcano/demo.yaml"),
            None,
        ),
        ("cube", "2022.09.01", cube_studio("cube"), Some("overlays")),
        (
            "training-operator",
            "1.3.0",
            cube_studio("kubeflow/train-operator/manifests"),
            Some("overlays/standalone"),
        ),
        (
            "training-operator-kubeflow",
            "1.3.0",
            cube_studio("kubeflow/train-operator/manifests"),
            Some("overlays/kubeflow"),
        ),
        (
            "kfp-cluster",
            "1.6.0",
            cube_studio("kubeflow/pipeline/1.6.0/kustomize"),
            Some("cluster-scoped-resources"),
        ),
        (
            "kfp",
            "1.6.0",
            cube_studio("kubeflow/pipeline/1.6.0/kustomize"),
            Some("env/platform-agnostic"),
        ),
        (
            "metrics-server",
            "v0.9.0",
            ms.clone(),
            Some("overlays/release"),
        ),
        ("metrics-server-test", "v0.9.0", ms, Some("overlays/test")),
    ]
}

fn write_bundle_manifest(dir: &Path, archive: &Path, names: &[&str]) -> PathBuf {
    let mut y = String::from(
        "apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {name: manifests-fixtures, version: \"1\"}\nspec:\n  manifests:\n",
    );
    for (name, version, path, k) in trees().into_iter().filter(|t| names.contains(&t.0)) {
        y.push_str(&format!(
            "    - name: {name}\n      version: \"{version}\"\n      path: {}\n",
            path.display()
        ));
        if let Some(k) = k {
            y.push_str(&format!("      kustomize: {k}\n"));
        }
        y.push_str(&format!(
            "      images: [{{archive: {}}}]\n",
            archive.display()
        ));
    }
    let p = dir.join("bundle-manifest.yaml");
    std::fs::write(&p, y).unwrap();
    p
}

fn sync_config(dir: &Path, bundles: &Path, reg: &Registry, repo_block: &str) -> PathBuf {
    let cfg = dir.join("load-image.yaml");
    std::fs::write(
        &cfg,
        format!(
            "source:\n  intermediateBundlesPath: {}\ntarget:\n  containerPrefixRegistry: {}\n  repo:\n{repo_block}\n",
            bundles.display(),
            reg.host()
        ),
    )
    .unwrap();
    cfg
}

/// `docker.io/library/` normalisation, to name where sync put an image
/// (containerPrefixRegistry: HOST/<original registry>/<repository>); an
/// untagged image is pinned to the digest it was pushed by.
fn target_of(host: &str, original: &str, digest: &str) -> String {
    let (name, rest) = match original.find('@') {
        Some(i) => (&original[..i], &original[i..]),
        None => (original, ""),
    };
    let (name, tag) = match (name.rfind(':'), name.rfind('/')) {
        (Some(c), s) if s.is_none_or(|s| c > s) => (&name[..c], &name[c..]),
        _ => (name, ""),
    };
    let first = name.split('/').next().unwrap();
    let full = if name.contains('/') && (first.contains('.') || first.contains(':')) {
        name.to_string()
    } else if name.contains('/') {
        format!("docker.io/{name}")
    } else {
        format!("docker.io/library/{name}")
    };
    if tag.is_empty() && rest.is_empty() {
        return format!("{host}/{full}@{digest}");
    }
    format!("{host}/{full}{tag}{rest}")
}

fn kubectl() -> Command {
    Command::new("kubectl")
}

/// What kubectl applies from a relocated tree: `kubectl kustomize` output,
/// or the files themselves.
fn rendered(dir: &Path, kustomize: Option<&str>, file: Option<&str>) -> String {
    match (kustomize, file) {
        (Some(k), _) => {
            let o = kubectl()
                .arg("kustomize")
                .arg(dir.join(k))
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "kubectl kustomize {}: {}",
                dir.join(k).display(),
                stderr(&o)
            );
            stdout(&o)
        }
        (None, Some(f)) => std::fs::read_to_string(dir.join(f)).unwrap(),
        _ => unreachable!(),
    }
}

/// Every maximal run of reference characters.
fn words(line: &str) -> Vec<(usize, &str)> {
    let tok = |c: char| c.is_ascii_alphanumeric() || "._-/:@".contains(c);
    let mut out = Vec::new();
    let mut start = None;
    for (i, c) in line.char_indices() {
        match (tok(c), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push((s, &line[s..i]));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push((s, &line[s..]));
    }
    out
}

/// The relocated copy differs from the original only in image references:
/// changed lines differ only in words that are an original image and its
/// target; a kustomization may only gain `images:` override lines.
fn assert_only_images_changed(
    orig_dir: &Path,
    new_dir: &Path,
    host: &str,
    images: &[String],
    digest: &str,
) {
    let expected: BTreeMap<String, String> = images
        .iter()
        .map(|i| (i.clone(), target_of(host, i, digest)))
        .collect();
    let mut files = Vec::new();
    let mut stack = vec![new_dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p)
            } else {
                files.push(p)
            }
        }
    }
    let mut changed_words = 0;
    for new in files {
        let rel = new.strip_prefix(new_dir).unwrap();
        let orig = orig_dir.join(rel);
        let (a, b) = (std::fs::read(&orig).unwrap(), std::fs::read(&new).unwrap());
        if a == b {
            continue;
        }
        let (a, b) = (String::from_utf8(a).unwrap(), String::from_utf8(b).unwrap());
        let name = rel.file_name().unwrap().to_str().unwrap();
        if name.starts_with("kustomization") || name == "Kustomization" {
            // Every original line is kept, in order.
            let mut it = b.lines();
            for l in a.lines() {
                assert!(
                    it.any(|m| m == l),
                    "{}: original line {l:?} not kept",
                    rel.display()
                );
            }
            let before: Vec<&str> = a.lines().collect();
            for l in b.lines() {
                if before.contains(&l) {
                    continue;
                }
                let t = l.trim_start();
                assert!(
                    t.starts_with("- name: ")
                        || t.starts_with("newName: ")
                        || t.starts_with("digest: sha256:")
                        || t == "images:"
                        || t.starts_with('#'),
                    "{}: unexpected new line {l:?}",
                    rel.display()
                );
            }
            continue;
        }
        let (la, lb): (Vec<&str>, Vec<&str>) = (a.split('\n').collect(), b.split('\n').collect());
        assert_eq!(la.len(), lb.len(), "{}: line count changed", rel.display());
        for (x, y) in la.iter().zip(&lb) {
            if x == y {
                continue;
            }
            let (wx, wy) = (words(x), words(y));
            assert_eq!(wx.len(), wy.len(), "{}: {x:?} -> {y:?}", rel.display());
            let mut shift: isize = 0;
            for ((px, a), (py, b)) in wx.iter().zip(&wy) {
                assert_eq!(
                    *py as isize,
                    *px as isize + shift,
                    "{}: {x:?} -> {y:?}: punctuation moved",
                    rel.display()
                );
                if a != b {
                    assert_eq!(
                        expected.get(*a),
                        Some(&b.to_string()),
                        "{}: {a} -> {b} is not an image relocation",
                        rel.display()
                    );
                    changed_words += 1;
                }
                shift += b.len() as isize - a.len() as isize;
            }
        }
    }
    let _ = changed_words;
}

fn pack_json(dir: &Path, manifest: &Path, out: &Path) -> serde_json::Value {
    let o = bundler(
        dir,
        &[
            "pack",
            manifest.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(
        o.status.success(),
        "pack failed: {}\n{}",
        stderr(&o),
        stdout(&o)
    );
    serde_json::from_str(&stdout(&o)).unwrap()
}

/// The seed-004 entries (bundle-manifests/cube-studio-install.yaml); the
/// other trees are covered by `other_fixture_trees_...`.
const SEED: [&str; 5] = [
    "dashboard",
    "kube-batch",
    "volcano",
    "cube",
    "training-operator",
];

/// Each relocated copy sync wrote under `local`: built (`kubectl
/// kustomize`) or read as kubectl reads it, it names only target images,
/// each of which is in the registry, and it differs from the original only
/// in image references.
fn check_local_copies(names: &[&str], local: &Path, reg: &Registry, digest: &str, work: &Path) {
    let host = reg.host();
    let expected = expected_images();
    for (name, version, path, k) in trees().into_iter().filter(|t| names.contains(&t.0)) {
        let dir = local.join(format!("{name}-{version}"));
        let file = k
            .is_none()
            .then(|| path.file_name().unwrap().to_str().unwrap().to_string());
        // Comments are not applied (kube-batch's demo names busybox in a
        // commented-out Job); they are left as they were.
        let text: String = rendered(&dir, k, file.as_deref())
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        // Every image field names the target registry.
        for l in text.lines() {
            let t = l.trim_start().trim_start_matches("- ");
            if let Some(img) = t.strip_prefix("image: ") {
                let img = img.trim().trim_matches('"');
                assert!(img.starts_with(&format!("{host}/")), "{name}: {l:?}");
            }
        }
        for img in &expected[name] {
            // No original reference is left standing alone (short Docker
            // Hub names such as `nginx` are also object names: for those
            // the image-field check above is the one that holds)...
            for (i, _) in text
                .match_indices(img.as_str())
                .filter(|_| img.contains('/'))
            {
                let before = text[..i].chars().next_back().unwrap_or(' ');
                let after = text[i + img.len()..].chars().next().unwrap_or(' ');
                let longer = after.is_ascii_alphanumeric() || "._-/:@".contains(after);
                assert!(before == '/' || longer, "{name}: {img} not relocated");
            }
            // ...and its target is in the registry.
            let t = target_of(&host, img, digest);
            assert!(text.contains(&t), "{name}: {t} not in the relocated copy");
            let repo_ref = t.strip_prefix(&format!("{host}/")).unwrap();
            assert!(
                reg.raw_manifest(repo_ref).is_some(),
                "{name}: {repo_ref} not in the registry"
            );
        }
        let orig_root = if k.is_some() {
            path.clone()
        } else {
            path.parent().unwrap().to_path_buf()
        };
        if k.is_some() {
            assert_only_images_changed(&orig_root, &dir, &host, &expected[name], digest);
        } else {
            // A file entry: its one file.
            let tmp = work.join(format!("orig-{name}"));
            std::fs::create_dir_all(&tmp).unwrap();
            std::fs::copy(&path, tmp.join(file.as_deref().unwrap())).unwrap();
            assert_only_images_changed(&tmp, &dir, &host, &expected[name], digest);
        }
    }
}

/// Each tree is in the registry as an OCI artifact of bundler's own type.
fn check_oci_artifacts(names: &[&str], reg: &Registry) {
    for (name, version, _, _) in trees().into_iter().filter(|t| names.contains(&t.0)) {
        let raw = reg
            .raw_manifest(&format!("manifests/{name}:{version}"))
            .unwrap_or_else(|| panic!("{name} not pushed"));
        let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(
            m["artifactType"], "application/vnd.bundler.manifests.v1",
            "{m}"
        );
        assert_eq!(
            m["layers"][0]["mediaType"],
            "application/vnd.bundler.manifests.tree.v1.tar"
        );
    }
}

fn sync_ok(site: &Path, cfg: &Path) {
    let o = bundler(
        site,
        &["sync", "--config", cfg.to_str().unwrap(), "--insecure"],
    );
    assert!(
        o.status.success(),
        "sync failed: {}\n{}",
        stderr(&o),
        stdout(&o)
    );
}

#[test]
fn other_fixture_trees_pack_sync_to_local_and_oci_and_relocate_only_images() {
    let work = tempfile::tempdir().unwrap();
    let expected = expected_images();
    let names: Vec<&str> = trees()
        .iter()
        .map(|t| t.0)
        .filter(|n| !SEED.contains(n))
        .collect();
    let all: BTreeSet<String> = names.iter().flat_map(|n| expected[n].clone()).collect();
    let (archive, digest) = standin_archive(work.path(), &all);
    let manifest = write_bundle_manifest(work.path(), &archive, &names);
    let out = work.path().join("out");
    let started = std::time::Instant::now();
    let v = pack_json(work.path(), &manifest, &out);
    eprintln!(
        "pack of {} trees: {:.2} s",
        names.len(),
        started.elapsed().as_secs_f64()
    );
    for m in v["manifests"].as_array().unwrap() {
        let name = m["name"].as_str().unwrap();
        eprintln!(
            "  {name}: {} images in {} places, {} relocated, {:.2} s",
            m["images"], m["places"], m["relocated"], m["seconds"]
        );
        assert_eq!(m["images"], expected[name].len(), "{name}: {m}");
        assert_eq!(m["places"], m["relocated"], "{name}: {m}");
    }

    // Deterministic: a second pack writes the same bytes (two trees, to
    // keep the test short: a kustomize tree and a plain file).
    let out2 = work.path().join("out2");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let keep: String = text
        .split("    - name: ")
        .enumerate()
        .filter(|(i, e)| {
            *i == 0 || e.starts_with("metrics-server\n") || e.starts_with("dashboard-user\n")
        })
        .map(|(i, e)| {
            if i == 0 {
                e.to_string()
            } else {
                format!("    - name: {e}")
            }
        })
        .collect();
    let small = work.path().join("small.yaml");
    std::fs::write(&small, keep).unwrap();
    pack_json(work.path(), &small, &out2);
    for (name, version) in [("metrics-server", "v0.9.0"), ("dashboard-user", "v2.2.0")] {
        let f = format!("{name}_{version}.bundle.tar");
        assert!(
            std::fs::read(out.join(&f)).unwrap() == std::fs::read(out2.join(&f)).unwrap(),
            "{f} differs between two packs"
        );
    }

    let reg = Registry::start(Mode::Plain);
    let site = work.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    let local = site.join("manifests");
    let cfg = sync_config(
        &site,
        &out,
        &reg,
        &format!("    kind: LOCAL\n    path: {}", local.display()),
    );
    sync_ok(&site, &cfg);
    check_local_copies(&names, &local, &reg, &digest, work.path());

    let site2 = work.path().join("site2");
    std::fs::create_dir_all(&site2).unwrap();
    let cfg = sync_config(
        &site2,
        &out,
        &reg,
        &format!("    kind: OCI\n    url: oci://{}/manifests", reg.host()),
    );
    sync_ok(&site2, &cfg);
    check_oci_artifacts(&names, &reg);
}

#[test]
fn ingress_nginx_digest_pins_are_kept_and_checked() {
    // The real digests cannot match a stand-in: pack must say so rather
    // than carry an image under a pin it does not have.
    let work = tempfile::tempdir().unwrap();
    let refs: BTreeSet<String> = [
        "registry.k8s.io/ingress-nginx/controller:v1.15.1",
        "registry.k8s.io/ingress-nginx/kube-webhook-certgen:v1.6.9",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (archive, _) = standin_archive(work.path(), &refs);
    let path = support::fixtures().join("manifests/ingress-nginx/deploy/static/provider/baremetal");
    let m = work.path().join("m.yaml");
    std::fs::write(
        &m,
        format!(
            "apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {{name: ingress, version: \"1\"}}\nspec:\n  manifests:\n    - name: ingress-nginx\n      version: v1.15.1\n      path: {}\n      images: [{{archive: {}}}]\n",
            path.display(),
            archive.display()
        ),
    )
    .unwrap();
    let o = bundler(
        work.path(),
        &["pack", m.to_str().unwrap(), "--print-images"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("registry.k8s.io/ingress-nginx/controller:v1.15.1@sha256:594ceea76b01c592858f803f9ff4d2cb40542cae2060410b2c95f75907d659e1"), "{}", stdout(&o));
    let o = bundler(
        work.path(),
        &["pack", m.to_str().unwrap(), "--output", "out"],
    );
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("pins sha256:594ceea76b01c592858f803f9ff4d2cb40542cae2060410b2c95f75907d659e1"),
        "{e}"
    );
    assert!(!work
        .path()
        .join("out/ingress-nginx_v1.15.1.bundle.tar")
        .exists());
}

/// A minimal istio VirtualService CRD: cube-studio's install assumes istio
/// is there (its guide installs it first); istio is not in the fixtures.
const ISTIO_VIRTUALSERVICE_CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: virtualservices.networking.istio.io
spec:
  group: networking.istio.io
  names: {kind: VirtualService, plural: virtualservices, singular: virtualservice, listKind: VirtualServiceList}
  scope: Namespaced
  versions:
  - name: v1alpha3
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
";

fn kubectl_env(api: &support::kube_api::KubeApi, args: &[&str]) -> std::process::Output {
    kubectl()
        .env("KUBECONFIG", api.kubeconfig())
        .env("KUBECACHEDIR", api.dir.path().join("kube-cache"))
        .args(args)
        .output()
        .unwrap()
}

fn deployment_images(api: &support::kube_api::KubeApi, ns: &str) -> Vec<String> {
    let o = kubectl_env(
        api,
        &[
            "get",
            "deployments",
            "-n",
            ns,
            "-o",
            "jsonpath={.items[*].spec.template.spec.containers[*].image}",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    stdout(&o).split_whitespace().map(str::to_string).collect()
}

#[test]
fn seed_004_install_packs_syncs_and_applies_server_side() {
    let work = tempfile::tempdir().unwrap();
    let expected = expected_images();
    let names = SEED;
    let all: BTreeSet<String> = names.iter().flat_map(|n| expected[n].clone()).collect();
    let (archive, _) = standin_archive(work.path(), &all);
    // bundle-manifests/cube-studio-install.yaml, with the fixtures' absolute
    // path and a stand-in archive for every entry.
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("bundle-manifests/cube-studio-install.yaml");
    let text = std::fs::read_to_string(src).unwrap();
    let fixtures = support::fixtures().canonicalize().unwrap();
    let mut y = String::new();
    for l in text.lines() {
        y.push_str(&l.replace("../../shared/fixtures", fixtures.to_str().unwrap()));
        y.push('\n');
        if l.starts_with("      version: ") {
            y.push_str(&format!(
                "      images: [{{archive: {}}}]\n",
                archive.display()
            ));
        }
    }
    let manifest = work.path().join("cube-studio-install.yaml");
    std::fs::write(&manifest, y).unwrap();
    let out = work.path().join("out");
    let v = pack_json(work.path(), &manifest, &out);
    let found: BTreeMap<String, u64> = v["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_string(),
                m["images"].as_u64().unwrap(),
            )
        })
        .collect();
    for n in names {
        assert_eq!(found[n], expected[n].len() as u64, "{n}: {v}");
    }
    // The cube bundle: original files under original-manifests/, hashed.
    let b = out.join("cube_2022.09.01.bundle.tar");
    let listing = Command::new("tar").arg("tf").arg(&b).output().unwrap();
    let names = stdout(&listing);
    assert!(
        names.contains("original-manifests/overlays/config/config.py"),
        "{names}"
    );
    assert!(
        names.contains("original-manifests/base/deploy.yaml"),
        "{names}"
    );
    let bj = Command::new("tar")
        .arg("xOf")
        .arg(&b)
        .arg("bundle.json")
        .output()
        .unwrap();
    let bj: serde_json::Value = serde_json::from_slice(&bj.stdout).unwrap();
    assert_eq!(bj["formatVersion"], "manifests-1.0");
    assert!(
        bj["files"]["original-manifests/overlays/kustomization.yml"].is_string(),
        "{bj}"
    );
    assert!(bj["files"]["manifests.json"].is_string(), "{bj}");
    assert_eq!(
        bj["images"].as_array().unwrap().len(),
        expected["cube"].len()
    );

    let reg = Registry::start(Mode::Plain);
    let host = reg.host();
    let site = work.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    let local = site.join("manifests");
    let cfg = sync_config(
        &site,
        &out,
        &reg,
        &format!("    kind: LOCAL\n    path: {}", local.display()),
    );
    sync_ok(&site, &cfg);
    let digest = {
        let (_, d) = standin_archive(&work.path().join("digest"), &BTreeSet::new());
        d
    };
    check_local_copies(&SEED, &local, &reg, &digest, work.path());

    let api = support::kube_api::KubeApi::start();
    // What the guide does before applying: namespaces, istio.
    let crd = work.path().join("istio-crd.yaml");
    std::fs::write(
        &crd,
        format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: infra}}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {{name: kubeflow}}\n---\n{ISTIO_VIRTUALSERVICE_CRD}"),
    )
    .unwrap();
    let o = kubectl_env(
        &api,
        &["apply", "--server-side", "-f", crd.to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));

    let apply = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "apply",
            name,
            "--config",
            cfg.to_str().unwrap(),
            "--insecure",
            "--json",
        ];
        args.extend_from_slice(extra);
        std::process::Command::new(support::bundler_bin())
            .current_dir(&site)
            .env("KUBECONFIG", api.kubeconfig())
            .env("KUBECACHEDIR", api.dir.path().join("kube-cache"))
            .args(&args)
            .output()
            .unwrap()
    };
    // --dry-run: kubectl diff says what would change, nothing is applied.
    let o = apply("dashboard", &["--dry-run"]);
    assert!(o.status.success(), "{}\n{}", stderr(&o), stdout(&o));
    let d: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let changed: Vec<&str> = d["changed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(
        changed.contains(&"apps.v1.Deployment.kube-system.kubernetes-dashboard-cluster"),
        "{d}"
    );
    assert!(deployment_images(&api, "kube-system").is_empty());

    for (name, ns) in [
        ("dashboard", "kube-system"),
        ("volcano", "kubeflow"),
        ("cube", "infra"),
        ("training-operator", "kubeflow"),
    ] {
        let o = apply(name, &[]);
        assert!(
            o.status.success(),
            "apply {name}: {}\n{}",
            stderr(&o),
            stdout(&o)
        );
        let s: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert!(!s["applied"].as_array().unwrap().is_empty(), "{s}");
        let imgs = deployment_images(&api, ns);
        assert!(!imgs.is_empty(), "{name}: no Deployment in {ns}");
        for i in &imgs {
            assert!(
                i.starts_with(&format!("{host}/")),
                "{name}: {i} is not relocated"
            );
        }
    }
    // What the cluster holds names every relocated image; the generated
    // ConfigMap (new hash suffix) carries the relocated config.py.
    let o = kubectl_env(&api, &["get", "configmaps", "-n", "infra", "-o", "yaml"]);
    let cms = stdout(&o);
    assert!(
        cms.contains(&format!(
            "{host}/ccr.ccs.tencentyun.com/cube-studio/tfserving:2.6.0-gpu"
        )),
        "{cms}"
    );
    assert!(
        !cms.contains("'ccr.ccs.tencentyun.com/cube-studio/tfserving"),
        "config.py not relocated"
    );

    // Applied again: nothing changes.
    let o = apply("cube", &["--dry-run"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let d: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(d["changed"], serde_json::json!([]), "{d}");

    // kube-batch's CRDs are apiextensions.k8s.io/v1beta1: refused, as by
    // any Kubernetes since 1.22.
    let o = apply("kube-batch", &[]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("v1beta1"), "{}", stderr(&o));

    // The relocated copies also pass a client-side dry run.
    for (flag, f) in [
        ("-f", "dashboard-v2.2.0/v2.2.0-cluster.yaml"),
        ("-f", "volcano-v1.4.0/volcano-development.yaml"),
        ("-k", "cube-2022.09.01/overlays"),
    ] {
        let o = kubectl_env(
            &api,
            &[
                "apply",
                "--dry-run=client",
                flag,
                local.join(f).to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{f}: {}", stderr(&o));
    }

    // OCI target: pushed as an artifact, pulled back by apply.
    let site2 = work.path().join("site2");
    std::fs::create_dir_all(&site2).unwrap();
    let cfg2 = sync_config(
        &site2,
        &out,
        &reg,
        &format!("    kind: OCI\n    url: oci://{host}/manifests"),
    );
    sync_ok(&site2, &cfg2);
    check_oci_artifacts(&SEED, &reg);
    let o = std::process::Command::new(support::bundler_bin())
        .current_dir(&site2)
        .env("KUBECONFIG", api.kubeconfig())
        .env("KUBECACHEDIR", api.dir.path().join("kube-cache"))
        .args([
            "apply",
            "training-operator",
            "--config",
            cfg2.to_str().unwrap(),
            "--insecure",
            "--dry-run",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let d: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(d["changed"], serde_json::json!([]), "{d}");
    assert!(site2
        .join(".bundler/manifests/training-operator-1.3.0/overlays/standalone/kustomization.yaml")
        .exists());
}

/// An image no reader can see (a Docker Hub short name in a script in a
/// ConfigMap) is carried and relocated through a hint addressed by file and
/// YAML path; every other byte of the multi-document file stays.
#[test]
fn hints_reach_an_image_inside_a_configmap_script() {
    let work = tempfile::tempdir().unwrap();
    let tree = work.path().join("tree");
    std::fs::create_dir_all(&tree).unwrap();
    let original = "# the loader\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: loader\ndata:\n  run.sh: |\n    #!/bin/sh\n    docker pull busybox:1.36   # the tool image\n    docker run --rm busybox:1.36 true\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\nspec:\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: a}}\n    spec:\n      containers:\n      - name: a\n        image: 'example.com/team/app:1.0'   # quoted on purpose\n";
    std::fs::write(tree.join("app.yaml"), original).unwrap();
    let refs: BTreeSet<String> = ["busybox:1.36", "example.com/team/app:1.0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let (archive, _) = standin_archive(work.path(), &refs);
    let hints = work.path().join("hints.yaml");
    let write_manifest = |hints_line: &str| {
        let m = work.path().join("m.yaml");
        std::fs::write(
            &m,
            format!(
                "apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {{name: h, version: \"1\"}}\nspec:\n  manifests:\n    - name: app\n      version: \"1.0\"\n      path: {}\n{hints_line}      images: [{{archive: {}}}]\n",
                tree.display(),
                archive.display()
            ),
        )
        .unwrap();
        m
    };
    // Without the hint the script's image is invisible.
    let m = write_manifest("");
    let o = bundler(
        work.path(),
        &["pack", m.to_str().unwrap(), "--print-images"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stdout(&o).contains("busybox"), "{}", stdout(&o));
    // A hint that does not hold is refused, naming the file and path.
    std::fs::write(
        &hints,
        "- file: app.yaml\n  path: data.run\\.sh\n  image: busybox:1.35\n",
    )
    .unwrap();
    let m = write_manifest(&format!("      hints: {}\n", hints.display()));
    let o = bundler(
        work.path(),
        &["pack", m.to_str().unwrap(), "--output", "out"],
    );
    assert!(!o.status.success());
    assert!(
        stderr(&o)
            .contains("app.yaml does not contain busybox:1.35 at data.run.sh as a whole reference"),
        "{}",
        stderr(&o)
    );
    // The right hint: carried, pushed, relocated where it points.
    std::fs::write(
        &hints,
        "- file: app.yaml\n  path: [data, run.sh]\n  image: busybox:1.36\n",
    )
    .unwrap();
    let out = work.path().join("out");
    let v = pack_json(work.path(), &m, &out);
    assert_eq!(v["manifests"][0]["images"], 2, "{v}");
    let reg = Registry::start(Mode::Plain);
    let host = reg.host();
    let site = work.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    let cfg = sync_config(
        &site,
        &out,
        &reg,
        &format!("    kind: LOCAL\n    path: {}", site.join("m").display()),
    );
    sync_ok(&site, &cfg);
    let got = std::fs::read_to_string(site.join("m/app-1.0/app.yaml")).unwrap();
    let want = original
        .replace(
            "busybox:1.36",
            &format!("{host}/docker.io/library/busybox:1.36"),
        )
        .replace(
            "'example.com/team/app:1.0'",
            &format!("'{host}/example.com/team/app:1.0'"),
        );
    assert_eq!(got, want);
    assert!(reg.raw_manifest("docker.io/library/busybox:1.36").is_some());
    // A second sync finds the same copy there and leaves it.
    let o = bundler(
        &site,
        &[
            "sync",
            "--config",
            cfg.to_str().unwrap(),
            "--insecure",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["manifests"][0]["outcome"], "unchanged", "{v}");

    // Pre-flight: an image the copy needs is gone from the registry, so
    // apply refuses and the cluster is left alone.
    let digest = {
        let raw = reg.raw_manifest("docker.io/library/busybox:1.36").unwrap();
        support::images::blob(raw).digest
    };
    let del = Command::new("curl")
        .args(["-sf", "-X", "DELETE"])
        .arg(format!(
            "http://{host}/v2/docker.io/library/busybox/manifests/{digest}"
        ))
        .output()
        .unwrap();
    assert!(del.status.success(), "{}", stderr(&del));
    let api = support::kube_api::KubeApi::start();
    let o = Command::new(support::bundler_bin())
        .current_dir(&site)
        .env("KUBECONFIG", api.kubeconfig())
        .env("KUBECACHEDIR", api.dir.path().join("kube-cache"))
        .args([
            "apply",
            "app",
            "--config",
            cfg.to_str().unwrap(),
            "--insecure",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = stderr(&o);
    assert!(
        e.contains("pre-flight") && e.contains("docker.io/library/busybox:1.36"),
        "{e}"
    );
    assert!(deployment_images(&api, "default").is_empty());
    assert!(
        !api.requests().iter().any(|r| r.starts_with("PATCH")),
        "{:?}",
        api.requests()
    );
}

/// Bad entries fail at load, naming the key and what to write.
#[test]
fn bad_manifests_entries_are_refused_with_the_key() {
    let work = tempfile::tempdir().unwrap();
    let file = cube_studio("dashboard/v2.2.0-cluster.yaml");
    let cases = [
        ("    - {name: a, version: \"1\"}\n".to_string(), "spec.manifests[0].path"),
        (format!("    - {{name: a/b, version: \"1\", path: {}}}\n", file.display()), "spec.manifests[0].name"),
        (format!("    - {{name: a, version: \"1\", path: {}, kustomize: overlays}}\n", file.display()), "kustomize: is set but path"),
        (format!("    - {{name: a, version: \"1\", path: {}, kustomize: ../x}}\n", file.display()), "spec.manifests[0].kustomize"),
        (format!("    - {{name: a, version: \"1\", path: {f}}}\n    - {{name: a, version: \"2\", path: {f}}}\n", f = file.display()), "already used"),
        (format!("    - {{name: a, version: \"1\", path: {}}}\n", support::fixtures().join("manifests/cube-studio/install/kubernetes/kubeflow/train-operator/manifests/overlays").display()), "no .yaml, .yml or .json file"),
    ];
    for (entries, want) in cases {
        let m = work.path().join("m.yaml");
        std::fs::write(
            &m,
            format!("apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {{name: p, version: \"1\"}}\nspec:\n  manifests:\n{entries}"),
        )
        .unwrap();
        let o = bundler(
            work.path(),
            &["pack", m.to_str().unwrap(), "--print-images"],
        );
        assert!(!o.status.success(), "{entries}");
        assert!(stderr(&o).contains(want), "{entries}: {}", stderr(&o));
    }
}
