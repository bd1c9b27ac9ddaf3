//! Raw manifests and kustomize trees (issue 24, seed 004): every tree of
//! ../shared/fixtures/manifests packs with stand-in images named as the
//! manifests reference them, syncs to a LOCAL directory and to an OCI
//! registry (the real docker-registry), and the relocated copy builds with
//! the real `kubectl kustomize` and names only images that are in the
//! target registry; a diff against the originals touches only image
//! references. `bundler apply` runs the real kubectl (`--server-side`)
//! against the Kubernetes API stand-in.
mod manifests_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use manifests_support::*;
use support::registry::{Mode, Registry};
use support::{bundler, stderr, stdout};

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
