//! Relocation planned by rendering (issue 18): one small chart per pattern
//! that real charts use and that guessing from values shapes got wrong.
//! Each goes the whole way with no hints file: `pack --print-images` says
//! what to carry, stand-ins named as the chart renders them are packed,
//! `sync` pushes them to a real registry and publishes the relocated chart,
//! and real `helm template` of the published `.tgz` must name every image
//! (image fields, args, env, ConfigMap data, custom resources) under the
//! target registry, each one present there.
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::registry::{Mode, Registry};
use support::standins::write_standin_layout;
use support::{bundler, stderr, stdout};

/// A chart directory with `values` and `templates` (file name, text).
fn chart(dir: &Path, name: &str, values: &str, templates: &[(&str, &str)]) -> PathBuf {
    let c = dir.join(name);
    std::fs::create_dir_all(c.join("templates")).unwrap();
    std::fs::write(
        c.join("Chart.yaml"),
        format!("apiVersion: v2\nname: {name}\nversion: 1.0.0\nappVersion: \"1.0\"\n"),
    )
    .unwrap();
    std::fs::write(c.join("values.yaml"), values).unwrap();
    for (f, t) in templates {
        std::fs::write(c.join("templates").join(f), t).unwrap();
    }
    c
}

/// A Deployment named `name` whose containers render `images`.
fn deployment(name: &str, images: &[&str]) -> String {
    let mut t = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  template:\n    spec:\n      containers:\n"
    );
    for (i, img) in images.iter().enumerate() {
        t.push_str(&format!(
            "        - name: c{i}\n          image: \"{img}\"\n"
        ));
    }
    t
}

fn manifest(dir: &Path, name: &str, chart: &Path, archive: Option<&Path>) -> PathBuf {
    let images = match archive {
        Some(a) => format!("      images:\n        - archive: {}\n", a.display()),
        None => String::new(),
    };
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {{name: {name}, version: 1.0.0}}\nspec:\n  platforms: [linux/amd64]\n  charts:\n    - name: {name}\n      path: {}\n      release: {{name: rel, namespace: apps}}\n{images}",
            chart.display()
        ),
    )
    .unwrap();
    p
}

struct Relocated {
    /// What `pack --print-images --json` says the bundle carries.
    carried: Vec<String>,
    /// `helm template` of the published chart (v4).
    rendered: String,
    /// The target registry, `host/`.
    prefix: String,
    target: Registry,
    pack_stderr: String,
    sync_stderr: String,
}

/// pack (no hints) -> sync -> helm template of the published chart.
fn relocate(work: &Path, name: &str, chart: &Path, pack_args: &[&str]) -> Relocated {
    let m = manifest(work, name, chart, None);
    let mut args = vec!["pack", m.to_str().unwrap(), "--print-images", "--json"];
    args.extend(pack_args);
    let o = bundler(work, &args);
    assert!(o.status.success(), "pack --print-images: {}", stderr(&o));
    let listing: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let carried: Vec<String> = listing["charts"][0]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reference"].as_str().unwrap().to_string())
        .collect();
    let layout = work.join("standins");
    write_standin_layout(&layout, &carried);
    let m = manifest(work, name, chart, Some(&layout));
    let out = work.join("out");
    let mut args = vec![
        "pack",
        m.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--json",
    ];
    args.extend(pack_args);
    let o = bundler(work, &args);
    assert!(o.status.success(), "pack: {}\n{}", stderr(&o), stdout(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        summary["relocation"][0]["misses"],
        serde_json::json!([]),
        "{summary:#}"
    );
    let pack_stderr = stderr(&o);

    let target = Registry::start(Mode::Plain);
    let site = work.join("site");
    std::fs::create_dir_all(&site).unwrap();
    let cfg = site.join("load-image.yaml");
    std::fs::write(
        &cfg,
        format!(
            "source:\n  intermediateBundlesPath: {}\ntarget:\n  containerPrefixRegistry: {}\n  repo:\n    kind: LOCAL\n    path: ./repo\n",
            out.display(),
            target.host()
        ),
    )
    .unwrap();
    let o = bundler(
        &site,
        &["sync", "--config", cfg.to_str().unwrap(), "--insecure"],
    );
    assert!(o.status.success(), "sync: {}\n{}", stderr(&o), stdout(&o));
    let sync_stderr = stderr(&o);
    let tgz = site.join(format!("repo/{name}-1.0.0.tgz"));
    let o = Command::new(support::helm())
        .args(["template", "rel"])
        .arg(&tgz)
        .args(["--namespace", "apps"])
        .output()
        .unwrap();
    assert!(o.status.success(), "helm template: {}", stderr(&o));
    Relocated {
        carried,
        rendered: stdout(&o),
        prefix: format!("{}/", target.host()),
        target,
        pack_stderr,
        sync_stderr,
    }
}

impl Relocated {
    /// `image` (as the relocated chart must render it, without the
    /// target) is rendered under the target and the target holds it.
    fn assert_rendered(&self, image: &str) {
        let full = format!("{}{image}", self.prefix);
        assert!(
            self.rendered.contains(&full),
            "{full} is not rendered:\n{}",
            self.rendered
        );
        let by = image.split_once('/').map(|(_, r)| r).unwrap_or(image);
        let _ = by;
        assert!(
            self.target.raw_manifest(image).is_some(),
            "{image} is rendered but not in the target registry"
        );
    }

    /// No rendered line names one of `originals` outside the target.
    fn assert_nothing_left(&self, originals: &[&str]) {
        for o in originals {
            for (i, _) in self.rendered.match_indices(o) {
                assert!(
                    self.rendered[..i].ends_with(&self.prefix),
                    "{o} is rendered outside {}: ...{}",
                    self.prefix,
                    &self.rendered[i.saturating_sub(60)..i + o.len()]
                );
            }
        }
    }
}

/// 1. The registry comes from somewhere else than the image map: a
///    precedence chain ending in `defaultRegistry`, and `coalesce` of a
///    global and another key with a literal default.
#[test]
fn registry_from_a_precedence_chain_or_coalesce_relocates() {
    let w = tempfile::tempdir().unwrap();
    let c = chart(
        w.path(),
        "chain",
        "global:\n  image:\n    registry: null\n  imageRegistry: null\ndefaultRegistry: registry.k8s.io\nimage:\n  repository: ingress-nginx/controller\n  tag: v1.10.0\nprivateRegistry:\n  registryUrl: null\napp:\n  image:\n    repository: bitnami/app\n    tag: \"2.0\"\n",
        &[(
            "deploy.yaml",
            &deployment(
                "chain",
                &[
                    "{{ .Values.image.registry | default .Values.global.image.registry | default .Values.defaultRegistry }}/{{ .Values.image.repository }}:{{ .Values.image.tag }}",
                    "{{ coalesce .Values.global.imageRegistry .Values.privateRegistry.registryUrl \"docker.io\" }}/{{ .Values.app.image.repository }}:{{ .Values.app.image.tag }}",
                ],
            ),
        )],
    );
    let r = relocate(w.path(), "chain", &c, &[]);
    r.assert_rendered("registry.k8s.io/ingress-nginx/controller:v1.10.0");
    r.assert_rendered("docker.io/bitnami/app:2.0");
}

/// 2. `hub` + `tag` + a bare image name in a sibling key.
#[test]
fn hub_tag_and_name_relocate() {
    let w = tempfile::tempdir().unwrap();
    let c = chart(
        w.path(),
        "hub",
        "hub: registry.example.io/team\ntag: 1.30.3\npilot:\n  image: pilot\n",
        &[(
            "deploy.yaml",
            &deployment(
                "hub",
                &["{{ .Values.hub }}/{{ .Values.pilot.image }}:{{ .Values.tag }}"],
            ),
        )],
    );
    let r = relocate(w.path(), "hub", &c, &[]);
    assert_eq!(r.carried, vec!["registry.example.io/team/pilot:1.30.3"]);
    r.assert_rendered("registry.example.io/team/pilot:1.30.3");
}

/// 3. Every part null in values, defaulted inside the template.
#[test]
fn all_null_image_maps_relocate() {
    let w = tempfile::tempdir().unwrap();
    let c = chart(
        w.path(),
        "nulls",
        "image:\n  registry: null\n  repository: null\n  tag: null\n",
        &[(
            "deploy.yaml",
            &deployment(
                "nulls",
                &["{{ .Values.image.registry | default \"docker.io\" }}/{{ .Values.image.repository | default \"acme/app\" }}:{{ .Values.image.tag | default .Chart.AppVersion }}"],
            ),
        )],
    );
    let r = relocate(w.path(), "nulls", &c, &[]);
    assert_eq!(r.carried, vec!["docker.io/acme/app:1.0"]);
    r.assert_rendered("docker.io/acme/app:1.0");
}

/// 4. `{repository, image, version}` triples copied into a custom resource,
///    and an `imageName:` field.
#[test]
fn triples_in_custom_resources_relocate() {
    let w = tempfile::tempdir().unwrap();
    let c = chart(
        w.path(),
        "policy",
        "driver:\n  repository: nvcr.io/nvidia\n  image: driver\n  version: v570\ntoolkit:\n  repository: nvcr.io/nvidia/k8s\n  image: container-toolkit\n  version: v1.17\n",
        &[(
            "policy.yaml",
            "apiVersion: nvidia.com/v1\nkind: ClusterPolicy\nmetadata:\n  name: policy\nspec:\n  driver:\n{{ toYaml .Values.driver | indent 4 }}\n  toolkit:\n    imageName: \"{{ .Values.toolkit.repository }}/{{ .Values.toolkit.image }}:{{ .Values.toolkit.version }}\"\n",
        )],
    );
    let r = relocate(w.path(), "policy", &c, &[]);
    assert!(
        r.carried
            .contains(&"nvcr.io/nvidia/driver:v570".to_string()),
        "{:?}",
        r.carried
    );
    r.assert_rendered("nvcr.io/nvidia/k8s/container-toolkit:v1.17");
    assert!(
        r.rendered
            .contains(&format!("repository: {}nvcr.io/nvidia\n", r.prefix)),
        "{}",
        r.rendered
    );
    assert!(r
        .target
        .raw_manifest("nvcr.io/nvidia/driver:v570")
        .is_some());
}

/// 5. Images in args, env (alone and as a multi-line `version=image`
///    list) and ConfigMap data.
#[test]
fn images_outside_image_fields_relocate() {
    let w = tempfile::tempdir().unwrap();
    let c = chart(
        w.path(),
        "operator",
        "image:\n  repository: ghcr.io/acme/operator\n  tag: \"1.0\"\ncollector:\n  repository: ghcr.io/acme/collector\n  tag: \"0.9\"\nagent:\n  registry: quay.io\n  repository: acme/agent\n  tag: \"2.1\"\nkafka:\n  repository: quay.io/acme/kafka\n  tagPrefix: \"1.0\"\n  versions: [\"4.2.0\", \"4.3.0\"]\ncsi:\n  repository: registry.k8s.io/sig-storage/csi-provisioner\n  tag: v6.2.0\n",
        &[
            (
                "deploy.yaml",
                "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: operator\nspec:\n  template:\n    spec:\n      containers:\n        - name: op\n          image: \"{{ .Values.image.repository }}:{{ .Values.image.tag }}\"\n          args:\n            - --collector-image={{ .Values.collector.repository }}:{{ .Values.collector.tag }}\n          env:\n            - name: RELATED_IMAGE_AGENT\n              value: \"{{ .Values.agent.registry }}/{{ .Values.agent.repository }}:{{ .Values.agent.tag }}\"\n            - name: KAFKA_IMAGES\n              value: |\n{{- range .Values.kafka.versions }}\n                {{ . }}={{ $.Values.kafka.repository }}:{{ $.Values.kafka.tagPrefix }}-kafka-{{ . }}\n{{- end }}\n",
            ),
            (
                "cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: images\ndata:\n  provisioner: \"{{ .Values.csi.repository }}:{{ .Values.csi.tag }}\"\n",
            ),
        ],
    );
    let r = relocate(w.path(), "operator", &c, &[]);
    for i in [
        "ghcr.io/acme/operator:1.0",
        "ghcr.io/acme/collector:0.9",
        "quay.io/acme/agent:2.1",
        "quay.io/acme/kafka:1.0-kafka-4.2.0",
        "quay.io/acme/kafka:1.0-kafka-4.3.0",
        "registry.k8s.io/sig-storage/csi-provisioner:v6.2.0",
    ] {
        assert!(r.carried.contains(&i.to_string()), "{i}: {:?}", r.carried);
        r.assert_rendered(i);
    }
    r.assert_nothing_left(&["ghcr.io/", "quay.io/", "registry.k8s.io/"]);
}

/// 6. A guard that refuses substituted images: relocation sets it, with a
///    comment saying why.
#[test]
fn guards_against_substituted_images_are_set_with_a_comment() {
    let w = tempfile::tempdir().unwrap();
    let c = chart(
        w.path(),
        "guarded",
        "global:\n  security:\n    allowInsecureImages: false\nimage:\n  registry: docker.io\n  repository: acme/app\n  tag: \"1.0\"\n",
        &[
            (
                "deploy.yaml",
                &deployment(
                    "guarded",
                    &["{{ .Values.image.registry }}/{{ .Values.image.repository }}:{{ .Values.image.tag }}"],
                ),
            ),
            (
                "check.yaml",
                "{{- if and (ne .Values.image.registry \"docker.io\") (not .Values.global.security.allowInsecureImages) }}\n{{- fail \"Original containers have been substituted for unrecognized ones. Set global.security.allowInsecureImages to true\" }}\n{{- end }}\n",
            ),
        ],
    );
    let r = relocate(w.path(), "guarded", &c, &[]);
    r.assert_rendered("docker.io/acme/app:1.0");
    // The published values say why the guard is set.
    let tgz = w.path().join("site/repo/guarded-1.0.0.tgz");
    let o = Command::new("tar")
        .args(["-xzOf"])
        .arg(&tgz)
        .arg("guarded/values.yaml")
        .output()
        .unwrap();
    let values = stdout(&o);
    assert!(
        values.contains("allowInsecureImages: true  # set by bundler"),
        "{values}"
    );
}

/// 7. A tag from a key the image map does not have (`global.tag`), and a
///    tag that follows the cluster version (`--kube-version`).
#[test]
fn tags_are_what_the_chart_renders() {
    let w = tempfile::tempdir().unwrap();
    let c = chart(
        w.path(),
        "tags",
        "global:\n  tag: \"2.0\"\nimage:\n  repository: acme/app\n",
        &[(
            "deploy.yaml",
            &deployment(
                "tags",
                &["{{ .Values.image.repository }}:{{ .Values.global.tag }}"],
            ),
        )],
    );
    let r = relocate(w.path(), "tags", &c, &[]);
    assert_eq!(r.carried, vec!["docker.io/acme/app:2.0"]);
    r.assert_rendered("docker.io/acme/app:2.0");

    // A kubectl image tagged with the cluster's version: what --kube-version
    // renders, never appVersion.
    let c = chart(
        w.path(),
        "kubectl",
        "kubectl:\n  repository: docker.io/bitnami/kubectl\n",
        &[(
            "job.yaml",
            &deployment(
                "kubectl",
                &["{{ .Values.kubectl.repository }}:{{ .Capabilities.KubeVersion.Major }}.{{ .Capabilities.KubeVersion.Minor }}"],
            ),
        )],
    );
    let m = manifest(w.path(), "kubectl", &c, None);
    let o = bundler(
        w.path(),
        &[
            "pack",
            m.to_str().unwrap(),
            "--print-images",
            "--kube-version",
            "1.29.4",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("docker.io/bitnami/kubectl:1.29\n"),
        "{}",
        stdout(&o)
    );
    assert!(!stdout(&o).contains("kubectl:1.0"), "{}", stdout(&o));
    // ... and says that the tag follows the cluster, and what to set.
    assert!(
        stdout(&o).contains("follows the cluster version")
            && stdout(&o).contains("kubectl:1.99")
            && stdout(&o).contains("--kube-version"),
        "{}",
        stdout(&o)
    );
}

/// 8. A `helm.sh/hook: test` pod with a literal image: pack and sync warn,
///    never refuse; the image is carried.
#[test]
fn test_hooks_with_literal_images_only_warn() {
    let w = tempfile::tempdir().unwrap();
    let c = chart(
        w.path(),
        "hooked",
        "image:\n  repository: ghcr.io/acme/app\n  tag: \"1.0\"\n",
        &[
            (
                "deploy.yaml",
                &deployment("hooked", &["{{ .Values.image.repository }}:{{ .Values.image.tag }}"]),
            ),
            (
                "test-connection.yaml",
                "apiVersion: v1\nkind: Pod\nmetadata:\n  name: test-connection\n  annotations:\n    \"helm.sh/hook\": test\nspec:\n  containers:\n    - name: wget\n      image: busybox\n      command: ['wget']\n",
            ),
        ],
    );
    let r = relocate(w.path(), "hooked", &c, &[]);
    r.assert_rendered("ghcr.io/acme/app:1.0");
    assert!(
        r.carried.contains(&"docker.io/library/busybox".to_string())
            || r.carried
                .contains(&"docker.io/library/busybox:latest".to_string()),
        "{:?}",
        r.carried
    );
    for (what, text) in [("pack", &r.pack_stderr), ("sync", &r.sync_stderr)] {
        assert!(
            text.contains("warning")
                && text.contains("busybox")
                && text.contains("helm.sh/hook: test"),
            "{what} does not warn about the test hook: {text}"
        );
    }
}
