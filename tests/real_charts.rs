//! Real public charts (`../shared/fixtures/real-charts/`, unmodified, no
//! hints file) through the binary: `pack --print-images` says what the
//! bundle will carry, stand-in images named as the chart renders them are
//! packed from an OCI layout (there is no internet here), `sync` pushes them
//! to a real registry and publishes the relocated chart into a LOCAL repo,
//! and real `helm template` (v4 and v3) of the published `.tgz` must name
//! only images that are in the target registry. The values diff may touch
//! only image lines, and the `.tgz` holds the files `helm package` takes.
mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::registry::{Mode, Registry};
use support::standins::write_standin_layout;
use support::{bundler, stderr, stdout};

fn real_chart(name: &str) -> PathBuf {
    support::fixtures().join("real-charts").join(name)
}

fn helm3() -> PathBuf {
    PathBuf::from("helm3")
}

fn write_manifest(dir: &Path, name: &str, chart: &Path, archive: Option<&Path>) -> PathBuf {
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

/// `helm template` output without CRDs (their descriptions quote example
/// images) and without `helm.sh/hook: test` resources (not deployed by
/// install or upgrade; bundler only warns about them).
fn rendered_text(helm: &Path, chart: &Path) -> String {
    rendered_text_with(helm, chart, true)
}

fn rendered_text_with(helm: &Path, chart: &Path, skip_tests: bool) -> String {
    let mut cmd = Command::new(helm);
    cmd.args(["template", "rel"])
        .arg(chart)
        .args(["--namespace", "apps"]);
    if skip_tests {
        cmd.arg("--skip-tests");
    }
    let o = cmd.output().expect("helm");
    assert!(
        o.status.success(),
        "{} template: {}",
        helm.display(),
        stderr(&o)
    );
    stdout(&o)
        .split("\n---")
        .filter(|d| !d.contains("\nkind: CustomResourceDefinition"))
        .collect::<Vec<_>>()
        .join("\n---")
}

/// Every carried image the original chart names anywhere (image fields,
/// args, env, ConfigMap data), and every `repository:` of a custom
/// resource, must be under `prefix` in the relocated chart's output.
fn assert_text_relocated(
    name: &str,
    original: &str,
    relocated: &str,
    carried: &[String],
    prefix: &str,
) {
    for r in carried {
        let mut forms = vec![r.clone()];
        if let Some(short) = r.strip_prefix("docker.io/") {
            forms.push(short.to_string());
            if let Some(lib) = short.strip_prefix("library/") {
                forms.push(lib.to_string());
            }
        }
        let Some(form) = forms.iter().rev().find(|f| original.contains(f.as_str())) else {
            continue;
        };
        let before = original.matches(form.as_str()).count();
        let mut after = 0;
        for (i, _) in relocated.match_indices(form.as_str()) {
            let head = &relocated[..i];
            let ok = head.ends_with(prefix)
                || forms.iter().any(|f| {
                    f != form && head.ends_with(&format!("{prefix}{}", &f[..f.len() - form.len()]))
                });
            assert!(
                ok,
                "{name}: {form} is rendered outside {prefix}: ...{}",
                &relocated[i.saturating_sub(80)..(i + form.len()).min(relocated.len())]
            );
            after += 1;
        }
        assert!(
            after >= before,
            "{name}: {form} rendered {before} times, {after} once relocated"
        );
    }
    for line in relocated.lines() {
        if let Some(v) = line.trim().strip_prefix("repository:") {
            let v = v.trim().trim_matches('"');
            assert!(
                v.starts_with(prefix),
                "{name}: a rendered repository is not relocated: {line}"
            );
        }
    }
}

/// `image:` values of `helm template` output (helm's own rendering).
fn rendered_images(helm: &Path, chart: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for line in rendered_text_with(helm, chart, false).lines() {
        let l = line.trim_start().trim_start_matches("- ").trim_start();
        if let Some(v) = l.strip_prefix("image:") {
            let v = v.trim().trim_matches('"').trim_matches('\'').to_string();
            if !v.is_empty() && !out.contains(&v) {
                out.push(v);
            }
        }
    }
    out
}

/// Docker Hub short names as a registry client sees them.
fn normalise(r: &str) -> String {
    let (name, rest) = match r.find(['@']) {
        Some(i) => (&r[..i], &r[i..]),
        None => match r.rfind(':').filter(|i| !r[*i..].contains('/')) {
            Some(i) => (&r[..i], &r[i..]),
            None => (r, ""),
        },
    };
    let first = name.split('/').next().unwrap();
    let name = if !name.contains('/') {
        format!("docker.io/library/{name}")
    } else if !(first.contains('.') || first.contains(':') || first == "localhost") {
        format!("docker.io/{name}")
    } else {
        name.to_string()
    };
    format!("{name}{rest}")
}

fn tgz_files(tgz: &Path) -> (BTreeSet<String>, Option<String>) {
    let f = std::fs::File::open(tgz).unwrap();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(f));
    let mut names = BTreeSet::new();
    let mut values = None;
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        if e.header().entry_type().is_dir() {
            continue;
        }
        if p.matches('/').count() == 1 && p.ends_with("/values.yaml") {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut e, &mut s).unwrap();
            values = Some(s);
        }
        // bundler keeps a vendored subchart archive byte for byte; helm
        // package writes it out as a directory. Same files either way.
        let parts: Vec<&str> = p.split('/').collect();
        if parts.len() == 3 && parts[1] == "charts" && p.ends_with(".tgz") {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
            let mut sub = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
            for se in sub.entries().unwrap() {
                let se = se.unwrap();
                if !se.header().entry_type().is_dir() {
                    names.insert(format!(
                        "{}/charts/{}",
                        parts[0],
                        se.path().unwrap().display()
                    ));
                }
            }
            continue;
        }
        names.insert(p);
    }
    (names, values)
}

struct Outcome {
    rendered: usize,
    relocated: usize,
    missed: usize,
    listing: String,
}

/// pack → sync → helm template of the relocated chart, with every check.
fn round_trip(name: &str) -> Outcome {
    round_trip_dir(&real_chart(name), name)
}

fn round_trip_dir(chart: &Path, name: &str) -> Outcome {
    let chart = chart.to_path_buf();
    let work = tempfile::tempdir().unwrap();

    // 1. What the bundle will carry, without moving a blob.
    let m = write_manifest(work.path(), name, &chart, None);
    let o = bundler(
        work.path(),
        &[
            "pack",
            m.to_str().unwrap(),
            "--print-images",
            "--json",
            "-o",
            "unused",
        ],
    );
    assert!(o.status.success(), "pack --print-images: {}", stderr(&o));
    assert!(
        !work.path().join("unused").exists(),
        "--print-images wrote output"
    );
    let listing: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let chart_listing = &listing["charts"][0];
    assert_eq!(chart_listing["hints"], "discovered", "{listing:#}");
    let carried: Vec<String> = chart_listing["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reference"].as_str().unwrap().to_string())
        .collect();
    // Everything helm renders at default values is carried, by its exact
    // rendered name and tag (e.g. `v` + appVersion for an empty tag).
    let by_helm = rendered_images(&support::helm(), &chart);
    assert!(!by_helm.is_empty());
    for img in &by_helm {
        assert!(
            carried.contains(&normalise(img)),
            "{name}: helm renders {img}, the bundle would carry {carried:?}"
        );
    }
    let text_listing = stdout(&bundler(
        work.path(),
        &["pack", m.to_str().unwrap(), "--print-images"],
    ));

    // 2. Pack from stand-ins named as the chart renders them.
    let layout = work.path().join("standins");
    write_standin_layout(&layout, &carried);
    let m = write_manifest(work.path(), name, &chart, Some(&layout));
    let out = work.path().join("out");
    let o = bundler(
        work.path(),
        &[
            "pack",
            m.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(o.status.success(), "pack: {}\n{}", stderr(&o), stdout(&o));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["bundles"][0]["hints"], "discovered", "{summary:#}");
    let proof = &summary["relocation"][0];
    assert!(proof["skipped"].is_null(), "{proof:#}");
    assert_eq!(proof["misses"], serde_json::json!([]), "{proof:#}");
    assert!(proof["rendered"].as_u64().unwrap() >= by_helm.len() as u64);

    // 3. Sync into a real registry and a LOCAL chart repo.
    let target = Registry::start(Mode::Plain);
    let site = tempfile::tempdir().unwrap();
    let cfg = site.path().join("load-image.yaml");
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
        site.path(),
        &["sync", "--config", cfg.to_str().unwrap(), "--insecure"],
    );
    assert!(o.status.success(), "sync: {}\n{}", stderr(&o), stdout(&o));
    assert!(
        stderr(&o).contains("0 missed") || stdout(&o).contains("0 missed"),
        "sync says nothing about the relocation check: {}",
        stderr(&o)
    );
    let version = listing["charts"][0]["chart"]
        .as_str()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .to_string();
    let tgz = site.path().join(format!("repo/{name}-{version}.tgz"));
    assert!(tgz.is_file(), "{} missing", tgz.display());

    // 4. Real helm (v4 and v3) renders only target images, all present.
    let prefix = format!("{}/", target.host());
    let mut rendered = 0;
    let mut distinct_rendered = Vec::new();
    for helm in [support::helm(), helm3()] {
        assert_text_relocated(
            name,
            &rendered_text(&helm, &chart),
            &rendered_text(&helm, &tgz),
            &carried,
            &prefix,
        );
        let imgs = rendered_images(&helm, &tgz);
        assert!(imgs.len() >= by_helm.len(), "{imgs:?} vs {by_helm:?}");
        for img in &imgs {
            let rest = img.strip_prefix(&prefix).unwrap_or_else(|| {
                panic!("{name}: {} renders {img}, not in {prefix}", helm.display())
            });
            // skopeo takes `name@digest`, not `name:tag@digest`.
            let by = match rest.split_once('@') {
                Some((name_tag, d)) => {
                    let name = match name_tag.rfind(':') {
                        Some(i) if !name_tag[i..].contains('/') => &name_tag[..i],
                        _ => name_tag,
                    };
                    format!("{name}@{d}")
                }
                None => rest.to_string(),
            };
            assert!(
                target.raw_manifest(&by).is_some(),
                "{name}: {img} is rendered but not in the target registry"
            );
        }
        rendered = imgs.len();
        distinct_rendered = imgs;
    }

    // 5. The values diff touches only image lines; comments are kept.
    let (files, values) = tgz_files(&tgz);
    let original_values = if chart.is_dir() {
        chart.join("values.yaml")
    } else {
        let p = work.path().join("original-values.yaml");
        std::fs::write(&p, tgz_files(&chart).1.unwrap()).unwrap();
        p
    };
    let after = work.path().join("relocated-values.yaml");
    std::fs::write(&after, values.expect("relocated values.yaml")).unwrap();
    let d = Command::new("diff")
        .arg(&original_values)
        .arg(&after)
        .output()
        .unwrap();
    let diff = stdout(&d);
    let mut changed = 0;
    for l in diff.lines() {
        let Some(line) = l.strip_prefix("> ").or_else(|| l.strip_prefix("< ")) else {
            continue;
        };
        changed += 1;
        let t = line.trim_start().trim_start_matches("- ");
        let key = t.split(':').next().unwrap();
        let lower = key.to_ascii_lowercase();
        let image_line = ["registry", "repository", "image", "name", "tag", "hub"]
            .iter()
            .any(|k| lower.contains(k))
            || (key == "allowInsecureImages");
        // Keys inserted to reach a subchart's default (`haproxy:`, `image:`).
        let parent_line = t.ends_with(':') && l.starts_with("> ");
        assert!(
            image_line || parent_line,
            "{name}: non-image line changed: {l:?}\n{diff}"
        );
        assert!(
            !t.starts_with('#'),
            "{name}: a comment changed: {l:?}\n{diff}"
        );
    }
    assert!(changed > 0, "{name}: nothing relocated");
    // Every comment of the original is still there, in order.
    let comments = |t: &str| -> Vec<String> {
        t.lines()
            .filter_map(|l| l.find('#').map(|i| l[i..].to_string()))
            .collect()
    };
    let relocated_text = std::fs::read_to_string(&after).unwrap();
    assert_eq!(
        comments(&std::fs::read_to_string(&original_values).unwrap()),
        comments(&relocated_text),
        "{name}: comments changed"
    );

    // 6. The same files as real `helm package` of the same directory.
    if chart.is_dir() {
        let pkg = tempfile::tempdir().unwrap();
        let o = Command::new(support::helm())
            .arg("package")
            .arg(&chart)
            .arg("-d")
            .arg(pkg.path())
            .output()
            .unwrap();
        assert!(o.status.success(), "helm package: {}", stderr(&o));
        let helm_tgz = std::fs::read_dir(pkg.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let (helm_files, _) = tgz_files(&helm_tgz);
        assert_eq!(
            files, helm_files,
            "{name}: file list differs from helm package"
        );
    }

    let relocated = proof["relocated"].as_u64().unwrap() as usize;
    let missed = proof["misses"].as_array().unwrap().len();
    eprintln!(
        "REAL-CHART {name}: image fields rendered {}, relocated {relocated}, missed {missed}; distinct images rendered {rendered}: {distinct_rendered:?}; carried {}",
        proof["rendered"],
        carried.len()
    );
    Outcome {
        rendered,
        relocated,
        missed,
        listing: text_listing,
    }
}

#[test]
fn grafana_relocates_with_no_misses() {
    let o = round_trip("grafana");
    assert_eq!((o.missed, o.rendered), (0, o.relocated));
    eprintln!("{}", o.listing);
}

#[test]
fn kube_state_metrics_relocates_with_v_prefixed_app_version() {
    let o = round_trip("kube-state-metrics");
    assert_eq!((o.missed, o.rendered), (0, o.relocated));
    assert!(
        o.listing.contains("kube-state-metrics:v2.20.0"),
        "{}",
        o.listing
    );
}

#[test]
fn prometheus_node_exporter_relocates_with_no_misses() {
    let o = round_trip("prometheus-node-exporter");
    assert_eq!((o.missed, o.rendered), (0, o.relocated));
}

#[test]
fn argo_cd_with_vendored_redis_ha_relocates_with_no_misses() {
    let o = round_trip("argo-cd");
    assert_eq!(o.missed, 0);
    // The vendored subchart's images are carried too (off by default).
    assert!(o.listing.contains("haproxy"), "{}", o.listing);
}

#[test]
fn cert_manager_leaves_out_what_helmignore_lists() {
    let o = round_trip("cert-manager");
    assert_eq!((o.missed, o.rendered), (0, o.relocated));
}

/// Cilium joins `repository:tag@digest`; its digests are real, so stand-ins
/// cannot have them: this copy takes the chart's own `useDigest: false`
/// path (the template then renders `repository:tag`), everything else as
/// released. The operator's `-generic` suffix is template text.
#[test]
fn cilium_relocates_with_no_misses() {
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("cilium");
    let o = Command::new("cp")
        .arg("-r")
        .arg(real_chart("cilium"))
        .arg(&copy)
        .output()
        .unwrap();
    assert!(o.status.success());
    let values = copy.join("values.yaml");
    let text = std::fs::read_to_string(&values).unwrap();
    // Off-by-default images keep a digest in values that bundler carries
    // as it is (it cannot know they would render without it): clear those
    // pins too, so every carried image can have a stand-in.
    let text: String = text
        .replace("useDigest: true", "useDigest: false")
        .lines()
        .map(|l| {
            match l
                .find("igest: \"sha256:")
                .or_else(|| l.find("igest: sha256:"))
            {
                Some(i) => format!("{}igest: \"\"\n", &l[..i]),
                None => format!("{l}\n"),
            }
        })
        .collect();
    std::fs::write(&values, text).unwrap();
    let o = round_trip_dir(&copy, "cilium");
    assert_eq!(o.missed, 0);
    assert!(
        o.listing
            .contains("quay.io/cilium/operator-generic:v1.20.0"),
        "{}",
        o.listing
    );
}

#[test]
fn rook_ceph_relocates_csi_images_in_a_config_map() {
    let o = round_trip("rook-ceph");
    assert_eq!(o.missed, 0);
    assert!(
        o.listing.contains("quay.io/cephcsi/cephcsi:v3.17.0"),
        "{}",
        o.listing
    );
}

#[test]
fn nginx_gateway_fabric_relocates_the_image_of_its_custom_resource() {
    let o = round_trip("nginx-gateway-fabric");
    assert_eq!(o.missed, 0);
    assert!(
        o.listing
            .contains("ghcr.io/nginx/nginx-gateway-fabric/nginx:2.6.7"),
        "{}",
        o.listing
    );
}

#[test]
fn opentelemetry_operator_relocates_the_image_in_args() {
    let o = round_trip("opentelemetry-operator");
    assert_eq!(o.missed, 0);
    assert!(
        o.listing.contains("opentelemetry-collector-k8s:0.158.0"),
        "{}",
        o.listing
    );
}

#[test]
fn strimzi_relocates_images_only_in_env() {
    let o = round_trip("strimzi-kafka-operator");
    assert_eq!(o.missed, 0);
    for i in [
        "kafka:1.2.0-kafka-4.3.1",
        "kafka-bridge:1.1.0",
        "maven-builder:1.2.0",
    ] {
        assert!(
            o.listing.contains(&format!("quay.io/strimzi/{i}")),
            "{i}: {}",
            o.listing
        );
    }
}

#[test]
fn dapr_relocates_through_its_global_registry() {
    let o = round_trip("dapr");
    assert_eq!(o.missed, 0);
    assert!(
        o.listing.contains("ghcr.io/dapr/daprd:1.18.3"),
        "{}",
        o.listing
    );
}

// ---------------------------------------------------------------------
// Small synthetic charts for the shapes the corpus does not have. Each is
// a defect of issue 9 that the code before it got wrong.

/// A chart `name` in `dir` with `values` and one Deployment whose
/// containers render `images` (template expressions).
fn synthetic_chart(
    dir: &Path,
    name: &str,
    app_version: &str,
    values: &str,
    images: &[&str],
) -> PathBuf {
    let c = dir.join(name);
    std::fs::create_dir_all(c.join("templates")).unwrap();
    std::fs::write(
        c.join("Chart.yaml"),
        format!("apiVersion: v2\nname: {name}\nversion: 1.0.0\nappVersion: \"{app_version}\"\n"),
    )
    .unwrap();
    std::fs::write(c.join("values.yaml"), values).unwrap();
    deployment(&c, name, images);
    c
}

fn deployment(chart: &Path, name: &str, images: &[&str]) {
    let mut t = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\nspec:\n  template:\n    spec:\n      containers:\n"
    );
    for (i, img) in images.iter().enumerate() {
        t.push_str(&format!(
            "        - name: c{i}\n          image: \"{img}\"\n"
        ));
    }
    std::fs::write(chart.join("templates/deploy.yaml"), t).unwrap();
}

fn listed(work: &Path, manifest: &Path) -> Vec<String> {
    let o = bundler(
        work,
        &[
            "pack",
            manifest.to_str().unwrap(),
            "--print-images",
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v["charts"][0]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["reference"].as_str().unwrap().to_string())
        .collect()
}

/// Defect 1: `{registry, image, tag, digest}` (ingress-nginx's shape) was
/// taken as a whole reference, and relocated to an unpullable name.
#[test]
fn image_maps_whose_repository_key_is_image_relocate() {
    let work = tempfile::tempdir().unwrap();
    let digest = write_standin_layout(
        &work.path().join("probe"),
        &["registry.k8s.io/ingress-nginx/controller:v1.15.1".to_string()],
    )
    .remove(0);
    let chart = synthetic_chart(
        work.path(),
        "ingress",
        "1.15.1",
        &format!("controller:\n  image:\n    # the controller\n    registry: registry.k8s.io\n    image: ingress-nginx/controller\n    tag: \"v1.15.1\"\n    digest: {digest}\n"),
        &["{{ .Values.controller.image.registry }}/{{ .Values.controller.image.image }}:{{ .Values.controller.image.tag }}@{{ .Values.controller.image.digest }}"],
    );
    let m = write_manifest(work.path(), "ingress", &chart, None);
    assert_eq!(
        listed(work.path(), &m),
        vec![format!(
            "registry.k8s.io/ingress-nginx/controller:v1.15.1@{digest}"
        )]
    );
    let o = round_trip_dir(&chart, "ingress");
    assert_eq!((o.missed, o.relocated), (0, 1));
}

/// Defect 2: `registry: ""` with the registry inside `repository` rendered
/// as `/quay.io/...` and was dropped: hints.yaml came out `[]`.
#[test]
fn empty_registry_with_the_registry_in_repository_relocates() {
    let work = tempfile::tempdir().unwrap();
    let chart = synthetic_chart(
        work.path(),
        "pushgateway",
        "1.11.0",
        "image:\n  registry: \"\"\n  repository: quay.io/prometheus/pushgateway\n  tag: \"\"\n",
        &["{{ with .Values.image.registry }}{{ . }}/{{ end }}{{ .Values.image.repository }}:{{ .Values.image.tag | default (printf \"v%s\" .Chart.AppVersion) }}"],
    );
    let m = write_manifest(work.path(), "pushgateway", &chart, None);
    assert_eq!(
        listed(work.path(), &m),
        vec!["quay.io/prometheus/pushgateway:v1.11.0".to_string()]
    );
    let o = round_trip_dir(&chart, "pushgateway");
    assert_eq!((o.missed, o.relocated), (0, 1));
}

/// Defect 3: an empty tag asked for `:latest`. It is what helm renders
/// (`v` + appVersion here), else the appVersion of the chart that owns the
/// value: a subchart's own, not the parent's.
#[test]
fn empty_tags_are_the_rendered_tag_or_the_owning_charts_app_version() {
    let work = tempfile::tempdir().unwrap();
    let chart = synthetic_chart(
        work.path(),
        "parent",
        "9.9.9",
        "image:\n  registry: docker.io\n  repository: acme/parent\n  tag: \"\"\n",
        &["{{ .Values.image.registry }}/{{ .Values.image.repository }}:{{ .Values.image.tag | default (printf \"v%s\" .Chart.AppVersion) }}"],
    );
    let sub = chart.join("charts/worker");
    std::fs::create_dir_all(sub.join("templates")).unwrap();
    std::fs::write(
        sub.join("Chart.yaml"),
        "apiVersion: v2\nname: worker\nversion: 0.3.0\nappVersion: 2.5.0\n",
    )
    .unwrap();
    std::fs::write(
        sub.join("values.yaml"),
        "image:\n  repository: ghcr.io/acme/worker\n  tag: \"\"\nhelper:\n  enabled: false\n  image:\n    repository: ghcr.io/acme/helper\n    tag: \"\"\n",
    )
    .unwrap();
    deployment(
        &sub,
        "worker",
        &["{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}"],
    );
    let m = write_manifest(work.path(), "parent", &chart, None);
    let mut got = listed(work.path(), &m);
    got.sort();
    assert_eq!(
        got,
        vec![
            "docker.io/acme/parent:v9.9.9".to_string(),
            "ghcr.io/acme/helper:2.5.0".to_string(),
            "ghcr.io/acme/worker:2.5.0".to_string(),
        ]
    );
    let o = round_trip_dir(&chart, "parent");
    assert_eq!((o.missed, o.relocated), (0, 2));
}

/// Images a chart renders that no value holds are found by the relocation
/// check: pack fails (exit 1) and lists them with --json, unless
/// --allow-unrelocated.
#[test]
fn pack_refuses_a_chart_that_renders_unrelocated_images() {
    let work = tempfile::tempdir().unwrap();
    let chart = synthetic_chart(
        work.path(),
        "leaky",
        "1.0.0",
        "image:\n  repository: docker.io/acme/app\n  tag: \"1.0\"\n",
        &[
            "{{ .Values.image.repository }}:{{ .Values.image.tag }}",
            "docker.io/library/busybox:1.36",
        ],
    );
    let layout = work.path().join("standins");
    write_standin_layout(
        &layout,
        &[
            "docker.io/acme/app:1.0".to_string(),
            "docker.io/library/busybox:1.36".to_string(),
        ],
    );
    let m = write_manifest(work.path(), "leaky", &chart, Some(&layout));
    let out = work.path().join("out");
    let o = bundler(
        work.path(),
        &[
            "pack",
            m.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["unrelocated"].as_array().unwrap().len(), 1, "{v:#}");
    assert_eq!(
        v["unrelocated"][0]["image"],
        "docker.io/library/busybox:1.36"
    );
    assert_eq!(
        v["unrelocated"][0]["location"],
        "Deployment/leaky containers[1], image field in leaky/templates/deploy.yaml"
    );
    assert!(stderr(&o).contains("--allow-unrelocated"), "{}", stderr(&o));
    assert!(!out.join("leaky_1.0.0.bundle.tar").exists());

    let o = bundler(
        work.path(),
        &[
            "pack",
            m.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--json",
            "--allow-unrelocated",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.join("leaky_1.0.0.bundle.tar").is_file());
}

/// Without helm, pack says that the relocation check was skipped.
#[test]
fn without_helm_the_check_is_said_to_be_skipped() {
    let work = tempfile::tempdir().unwrap();
    let chart = synthetic_chart(
        work.path(),
        "nohelm",
        "1.0.0",
        "image: docker.io/acme/app:1.0\n",
        &["{{ .Values.image }}"],
    );
    let layout = work.path().join("standins");
    write_standin_layout(&layout, &["docker.io/acme/app:1.0".to_string()]);
    let m = write_manifest(work.path(), "nohelm", &chart, Some(&layout));
    let o = Command::new(support::bundler_bin())
        .args(["pack", m.to_str().unwrap(), "-o", "out", "--json"])
        .current_dir(work.path())
        .env("PATH", "/nonexistent")
        .env_remove("BUNDLER_HELM")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        v["relocation"][0]["skipped"]
            .as_str()
            .is_some_and(|s| s.contains("helm was not found")),
        "{v:#}"
    );
    assert!(
        stderr(&o).contains("relocation check skipped"),
        "{}",
        stderr(&o)
    );
}

/// The other real charts of the shared fixtures (Bitnami's, packaged with
/// their subcharts and `global.imageRegistry`): the same round trip from
/// their `.tgz`, 0 misses.
#[test]
fn bitnami_fixture_charts_relocate_with_no_misses() {
    for (rel, name) in [
        ("charts/wordpress-11.0.4.tgz", "wordpress"),
        ("charts/kafka-14.7.0.tgz", "kafka"),
        ("charts/apache-7.3.15.tgz", "apache"),
        ("charts/etcd-4.8.0.tgz", "etcd"),
        ("charts/zookeeper-7.4.11.tgz", "zookeeper"),
    ] {
        let o = round_trip_dir(&support::fixtures().join(rel), name);
        assert_eq!(o.missed, 0, "{name}");
    }
}

/// --dry-run plans like --print-images and writes nothing.
#[test]
fn dry_run_lists_images_with_origins_and_writes_nothing() {
    let work = tempfile::tempdir().unwrap();
    let m = write_manifest(work.path(), "grafana", &real_chart("grafana"), None);
    let o = bundler(
        work.path(),
        &["pack", m.to_str().unwrap(), "--dry-run", "-o", "out"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("docker.io/grafana/grafana:12.3.1"), "{text}");
    assert!(
        text.contains(
            "learned by rendering with its values changed: {{ .image.registry }}/{{ .image.repository }}:{{ or .image.tag \"12.3.1\" }}"
        ),
        "{text}"
    );
    assert!(text.contains("rendered by helm template"), "{text}");
    assert!(!work.path().join("out").exists());
}
