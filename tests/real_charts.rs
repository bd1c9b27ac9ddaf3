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

/// `image:` values of `helm template` output (helm's own rendering).
fn rendered_images(helm: &Path, chart: &Path) -> Vec<String> {
    let o = Command::new(helm)
        .args(["template", "rel"])
        .arg(chart)
        .args(["--namespace", "apps"])
        .output()
        .expect("helm");
    assert!(
        o.status.success(),
        "{} template: {}",
        helm.display(),
        stderr(&o)
    );
    let mut out = Vec::new();
    for line in stdout(&o).lines() {
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
    let chart = real_chart(name);
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
    for helm in [support::helm(), helm3()] {
        let imgs = rendered_images(&helm, &tgz);
        assert!(imgs.len() >= by_helm.len(), "{imgs:?} vs {by_helm:?}");
        for img in &imgs {
            let rest = img.strip_prefix(&prefix).unwrap_or_else(|| {
                panic!("{name}: {} renders {img}, not in {prefix}", helm.display())
            });
            assert!(
                target.raw_manifest(rest).is_some(),
                "{name}: {img} is rendered but not in the target registry"
            );
        }
        rendered = imgs.len();
    }

    // 5. The values diff touches only image lines; comments are kept.
    let (files, values) = tgz_files(&tgz);
    let after = work.path().join("relocated-values.yaml");
    std::fs::write(&after, values.expect("relocated values.yaml")).unwrap();
    let d = Command::new("diff")
        .arg(chart.join("values.yaml"))
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
        let image_line = [
            "registry",
            "repository",
            "image",
            "name",
            "imageRegistry",
            "tag",
        ]
        .contains(&key);
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
        comments(&std::fs::read_to_string(chart.join("values.yaml")).unwrap()),
        comments(&relocated_text),
        "{name}: comments changed"
    );

    // 6. The same files as real `helm package` of the same directory.
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

    let relocated = proof["relocated"].as_u64().unwrap() as usize;
    let missed = proof["misses"].as_array().unwrap().len();
    eprintln!(
        "REAL-CHART {name}: rendered {rendered}, relocated {relocated}, missed {missed}; carried {}",
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
