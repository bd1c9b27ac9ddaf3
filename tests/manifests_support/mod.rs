//! Helpers of tests/manifests.rs: the fixture trees and the images their
//! README lists, stand-in image archives, and the checks of a relocated
//! copy (built, only target images, only image references changed).
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support;
use crate::support::images::{image, layer, write_layout, AMD64, OCI_MANIFEST};
use crate::support::registry::Registry;
use crate::support::{bundler, stderr, stdout};

pub fn cube_studio(rel: &str) -> PathBuf {
    support::fixtures()
        .join("manifests/cube-studio/install/kubernetes")
        .join(rel)
}

/// Images each tree uses, as the fixture README lists them (not as bundler
/// finds them).
pub fn expected_images() -> BTreeMap<&'static str, Vec<String>> {
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
pub fn standin_archive(dir: &Path, refs: &BTreeSet<String>) -> (PathBuf, String) {
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
pub fn trees() -> Vec<(&'static str, &'static str, PathBuf, Option<&'static str>)> {
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

pub fn write_bundle_manifest(dir: &Path, archive: &Path, names: &[&str]) -> PathBuf {
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

pub fn sync_config(dir: &Path, bundles: &Path, reg: &Registry, repo_block: &str) -> PathBuf {
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
pub fn target_of(host: &str, original: &str, digest: &str) -> String {
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

pub fn kubectl() -> Command {
    Command::new("kubectl")
}

/// What kubectl applies from a relocated tree: `kubectl kustomize` output,
/// or the files themselves.
pub fn rendered(dir: &Path, kustomize: Option<&str>, file: Option<&str>) -> String {
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
pub fn words(line: &str) -> Vec<(usize, &str)> {
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
pub fn assert_only_images_changed(
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

pub fn pack_json(dir: &Path, manifest: &Path, out: &Path) -> serde_json::Value {
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
pub const SEED: [&str; 5] = [
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
pub fn check_local_copies(names: &[&str], local: &Path, reg: &Registry, digest: &str, work: &Path) {
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
pub fn check_oci_artifacts(names: &[&str], reg: &Registry) {
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

pub fn sync_ok(site: &Path, cfg: &Path) {
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

/// A minimal istio VirtualService CRD: cube-studio's install assumes istio
/// is there (its guide installs it first); istio is not in the fixtures.
pub const ISTIO_VIRTUALSERVICE_CRD: &str = "apiVersion: apiextensions.k8s.io/v1
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

pub fn kubectl_env(api: &support::kube_api::KubeApi, args: &[&str]) -> std::process::Output {
    kubectl()
        .env("KUBECONFIG", api.kubeconfig())
        .env("KUBECACHEDIR", api.dir.path().join("kube-cache"))
        .args(args)
        .output()
        .unwrap()
}

pub fn deployment_images(api: &support::kube_api::KubeApi, ns: &str) -> Vec<String> {
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
