//! Delta packages end to end through the binary, against real
//! docker-registry instances and checked with skopeo: pack a product of
//! twelve images, sync it, take the site's inventory, change one image (one
//! new layer), pack `--against` the inventory and `--against` the old
//! package; each delta carries the new layer plus manifests and configs;
//! the delta syncs into the site with every digest right, and into an empty
//! registry it is refused before anything is pushed.
mod support;

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use support::images;
use support::registry::{Mode, Registry};
use support::runtimes::{ctr, docker, run, start_containerd, start_dockerd};
use support::{bundler, stderr, stdout};

const IMAGES: usize = 12;
/// The one image that changes in version 1.1.
const CHANGED: usize = 7;
/// Images that go with the chart; the others are spec.images.
const CHART_IMAGES: usize = 4;
const NEW_LAYER: usize = 8 << 20;

struct Product {
    work: tempfile::TempDir,
    src: Registry,
    /// (repository:tag, manifest digest) of version 1.0.
    v1: Vec<(String, String)>,
    base: Vec<u8>,
}

fn unique_content(i: usize) -> Vec<u8> {
    images::pseudo_random(100 + i as u64, 256 << 10)
}

/// Twelve images sharing a 1 MiB base layer, each with its own 256 KiB
/// layer, in a real source registry; a chart to go with four of them.
fn product() -> Product {
    let src = Registry::start(Mode::Plain);
    let work = tempfile::tempdir().unwrap();
    let base = images::pseudo_random(1, 1 << 20);
    let mut v1 = Vec::new();
    for i in 0..IMAGES {
        let rt = format!("prod/app{i}:1.0");
        let d = images::push_simple(&src, work.path(), &rt, &[&base, &unique_content(i)]);
        v1.push((rt, d));
    }
    let chart = work.path().join("chart");
    std::fs::create_dir_all(chart.join("templates")).unwrap();
    std::fs::write(
        chart.join("Chart.yaml"),
        "apiVersion: v2\nname: prod\nversion: 1.0.0\n",
    )
    .unwrap();
    std::fs::write(chart.join("values.yaml"), "replicas: 1\n").unwrap();
    std::fs::write(work.path().join("hints.yaml"), "[]\n").unwrap();
    Product {
        work,
        src,
        v1,
        base,
    }
}

/// The bundle manifest of a product version: `refs` are repository:tag,
/// the first `chart_images` go with the chart, the others in spec.images.
fn write_manifest(p: &Product, version: &str, refs: &[String], chart_images: usize) -> PathBuf {
    let host = p.src.host();
    let list = |rs: &[String]| -> String {
        rs.iter()
            .map(|r| format!("\"{host}/{r}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let path = p.work.path().join(format!("prod-{version}.yaml"));
    std::fs::write(
        &path,
        format!(
            "apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {{name: prod, version: \"{version}\"}}\nspec:\n  charts:\n    - name: prod\n      path: {}\n      hints: {}\n      images: [{}]\n  images: [{}]\n",
            p.work.path().join("chart").display(),
            p.work.path().join("hints.yaml").display(),
            list(&refs[..chart_images]),
            list(&refs[chart_images..])
        ),
    )
    .unwrap();
    path
}

/// `bundler pack` into `out`; returns the offline package and seconds.
fn pack(p: &Product, manifest: &Path, out: &Path, against: &[&Path]) -> (PathBuf, f64) {
    let mut args = vec![
        "pack".to_string(),
        manifest.display().to_string(),
        "--output".into(),
        out.display().to_string(),
        "--insecure".into(),
    ];
    for a in against {
        args.push("--against".into());
        args.push(a.display().to_string());
    }
    let t = Instant::now();
    let o = bundler(
        p.work.path(),
        &args.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    );
    let secs = t.elapsed().as_secs_f64();
    assert!(
        o.status.success(),
        "pack failed: {}\n{}",
        stderr(&o),
        stdout(&o)
    );
    let pkg = std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|f| f.to_string_lossy().ends_with("_amd64.tar"))
        .expect("offline package");
    (pkg, secs)
}

fn write_sync_config(dir: &Path, source: &Path, target: &Registry) -> PathBuf {
    let cfg = dir.join("load-image.yaml");
    std::fs::write(
        &cfg,
        format!(
            "source:\n  intermediateBundlesPath: {}\ntarget:\n  containerPrefixRegistry: {}\n  repo:\n    kind: LOCAL\n    path: {}\n",
            source.display(),
            target.host(),
            dir.join("charts").display()
        ),
    )
    .unwrap();
    cfg
}

fn sync(dir: &Path, cfg: &Path) -> (std::process::Output, f64) {
    sync_with(dir, cfg, &[])
}

fn sync_with(dir: &Path, cfg: &Path, extra: &[&str]) -> (std::process::Output, f64) {
    let t = Instant::now();
    let mut args = vec![
        "sync",
        "--config",
        cfg.to_str().unwrap(),
        "--insecure",
        "--json",
    ];
    args.extend_from_slice(extra);
    let o = bundler(dir, &args);
    (o, t.elapsed().as_secs_f64())
}

/// Names of the blobs the bundles of a package carry, and the total bytes
/// of the bundles.
fn carried_blobs(package: &Path) -> (BTreeSet<String>, u64) {
    let mut names = BTreeSet::new();
    let mut bytes = 0;
    let mut outer = tar::Archive::new(std::fs::File::open(package).unwrap());
    for e in outer.entries().unwrap() {
        let e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        if !name.ends_with(".bundle.tar") {
            continue;
        }
        bytes += e.size();
        let mut bundle = tar::Archive::new(e);
        for be in bundle.entries().unwrap() {
            let be = be.unwrap();
            if be.path().unwrap().to_str() != Some("images.tar") {
                continue;
            }
            let mut inner = tar::Archive::new(be);
            for ie in inner.entries().unwrap() {
                let ie = ie.unwrap();
                let n = ie.path().unwrap().to_string_lossy().into_owned();
                if let Some(h) = n.strip_prefix("blobs/sha256/") {
                    if !h.is_empty() {
                        names.insert(format!("sha256:{h}"));
                    }
                } else if !n.ends_with('/') {
                    names.insert(n);
                }
            }
        }
    }
    (names, bytes)
}

/// Digests of the manifests and configs of the images of version 1.1 as
/// the source registry serves them.
fn manifests_and_configs(src: &Registry, refs: &[String]) -> (BTreeSet<String>, u64) {
    let mut set = BTreeSet::new();
    let mut bytes = 0u64;
    for r in refs {
        let raw = src.raw_manifest(r).expect("source manifest");
        set.insert(images::blob(raw.clone()).digest);
        bytes += raw.len() as u64;
        let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
        set.insert(m["config"]["digest"].as_str().unwrap().to_string());
        bytes += m["config"]["size"].as_u64().unwrap();
    }
    (set, bytes)
}

fn skopeo_digest(reg: &Registry, reference: &str) -> Option<String> {
    reg.raw_manifest(reference)
        .map(|raw| images::blob(raw).digest)
}

/// Nothing at all in a registry's storage: no repository, no blob.
fn registry_is_empty(reg: &Registry) -> bool {
    let v2 = reg.dir.path().join("data/docker/registry/v2");
    !v2.join("repositories").exists() && !v2.join("blobs").exists()
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).unwrap().len()
}

fn read_json(p: &Path) -> serde_json::Value {
    let mut s = String::new();
    std::fs::File::open(p)
        .unwrap()
        .read_to_string(&mut s)
        .unwrap();
    serde_json::from_str(&s).unwrap()
}

/// The nested `images.tar` of a bundle, copied out to the file `out`.
fn nested_images_tar(bundle: &Path, out: &Path) -> PathBuf {
    let out = out.to_path_buf();
    let mut ar = tar::Archive::new(std::fs::File::open(bundle).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("images.tar") {
            let mut f = std::fs::File::create(&out).unwrap();
            std::io::copy(&mut e, &mut f).unwrap();
            return out;
        }
    }
    panic!("no images.tar in {}", bundle.display())
}

/// `ctr image import` and `docker load` of a delta's images.tar fail and
/// leave no image; the full bundle's loads (so the refusal is the delta's).
fn runtimes_refuse_the_delta(delta_tar: &Path, full_tar: &Path, changed: &str) {
    match start_containerd() {
        Ok(d) => {
            let o = ctr(&d)
                .args(["images", "import"])
                .arg(delta_tar)
                .output()
                .unwrap();
            assert!(!o.status.success(), "ctr imported a delta: {}", stdout(&o));
            assert!(
                stderr(&o).contains("unrecognized image format"),
                "{}",
                stderr(&o)
            );
            let listed = stdout(&run(ctr(&d).args(["images", "ls", "-q"])));
            assert_eq!(listed.trim(), "", "ctr kept images of a delta");
            run(ctr(&d).args(["images", "import"]).arg(full_tar));
            let listed = stdout(&run(ctr(&d).args(["images", "ls", "-q"])));
            assert!(listed.contains(changed), "{listed}");
        }
        Err(why) => eprintln!("SKIPPED the ctr import check: {why}"),
    }
    match start_dockerd(&[]) {
        Ok(d) => {
            let o = docker(&d)
                .args(["load", "-i"])
                .arg(delta_tar)
                .output()
                .unwrap();
            assert!(!o.status.success(), "docker loaded a delta: {}", stdout(&o));
            let listed = stdout(&run(docker(&d).args(["images", "-q"])));
            assert_eq!(listed.trim(), "", "docker kept images of a delta");
            let o = run(docker(&d).args(["load", "-i"]).arg(full_tar));
            assert!(stdout(&o).contains(changed), "{}", stdout(&o));
        }
        Err(why) => eprintln!("SKIPPED the docker load check: {why}"),
    }
}

#[test]
fn delta_round_trip_carries_only_the_new_layer_and_fits_only_its_site() {
    let p = product();
    let site_reg = Registry::start(Mode::Plain);
    let w = p.work.path();

    // 1.0: pack, sync into the site.
    let refs_v1: Vec<String> = p.v1.iter().map(|(r, _)| r.clone()).collect();
    let m1 = write_manifest(&p, "1.0", &refs_v1, CHART_IMAGES);
    let (pkg1, t_pack1) = pack(&p, &m1, &w.join("out-1.0"), &[]);
    let site = w.join("site");
    std::fs::create_dir_all(&site).unwrap();
    let cfg1 = write_sync_config(&site, &pkg1, &site_reg);
    let (o, t_sync1) = sync(&site, &cfg1);
    assert!(
        o.status.success(),
        "sync 1.0: {}\n{}",
        stderr(&o),
        stdout(&o)
    );

    // sync left an inventory; `bundler inventory` reads the same images.
    let left = site.join(".bundler/inventory.json");
    let left = read_json(&left);
    let inv_path = site.join("site-inventory.json");
    let o = bundler(
        &site,
        &[
            "inventory",
            "--config",
            cfg1.to_str().unwrap(),
            "-o",
            inv_path.to_str().unwrap(),
            "--insecure",
        ],
    );
    assert!(o.status.success(), "inventory: {}", stderr(&o));
    let inv = read_json(&inv_path);
    let digests = |v: &serde_json::Value| -> BTreeSet<(String, String)> {
        v["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| {
                (
                    i["target"].as_str().unwrap().to_string(),
                    i["digest"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    let want: BTreeSet<(String, String)> =
        p.v1.iter()
            .map(|(r, d)| {
                (
                    format!("{}/{}/{r}", site_reg.host(), p.src.host().replace(':', "_")),
                    d.clone(),
                )
            })
            .collect();
    assert_eq!(digests(&inv), want, "inventory: {inv}");
    assert_eq!(digests(&left), want, ".bundler/inventory.json: {left}");
    assert_eq!(inv["charts"][0]["name"], "prod", "{inv}");
    // 12 images x (config, base, own layer).
    let blob_count: usize = inv["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["blobs"].as_array().unwrap().len())
        .sum();
    assert_eq!(blob_count, IMAGES * 3, "{inv}");

    // 1.1: one image gets one new 8 MiB layer.
    let new_layer = images::pseudo_random(999, NEW_LAYER);
    let changed = format!("prod/app{CHANGED}:1.1");
    let changed_digest = images::push_simple(
        &p.src,
        w,
        &changed,
        &[&p.base, &unique_content(CHANGED), &new_layer],
    );
    let mut refs_v2 = refs_v1.clone();
    refs_v2[CHANGED] = changed.clone();
    let m2 = write_manifest(&p, "1.1", &refs_v2, CHART_IMAGES);
    let (pkg_full, t_full) = pack(&p, &m2, &w.join("out-full"), &[]);
    let (pkg_inv, t_inv) = pack(&p, &m2, &w.join("out-inv"), &[&inv_path]);
    let (pkg_old, t_old) = pack(&p, &m2, &w.join("out-old"), &[&pkg1]);

    let new_layer_digest = images::layer("file2", &new_layer).0.digest;
    let new_layer_size = images::layer("file2", &new_layer).0.bytes.len() as u64;
    let (docs, docs_bytes) = manifests_and_configs(&p.src, &refs_v2);
    let mut expected: BTreeSet<String> = docs.clone();
    expected.insert(new_layer_digest.clone());
    expected.insert("delta-index.json".to_string());
    let expected_bytes = new_layer_size + docs_bytes;
    for (what, pkg) in [
        ("--against inventory", &pkg_inv),
        ("--against package", &pkg_old),
    ] {
        let (carried, bundle_bytes) = carried_blobs(pkg);
        assert_eq!(
            carried, expected,
            "{what}: the delta must carry the new layer, every manifest and config, and nothing else"
        );
        // The bundles as files (tar headers, bundle.json, chart) stay
        // within 1 % of the new layer plus manifests and configs.
        let pkg_bytes = file_size(pkg);
        assert!(
            bundle_bytes >= expected_bytes && (pkg_bytes as f64) <= expected_bytes as f64 * 1.01,
            "{what}: package {pkg_bytes} bytes, bundles {bundle_bytes}, new layer + manifests {expected_bytes}"
        );
    }
    eprintln!(
        "FIGURES: full 1.0 package {} B (pack {t_pack1:.2}s, sync {t_sync1:.2}s); full 1.1 package {} B (pack {t_full:.2}s); \
         delta vs inventory {} B (pack {t_inv:.2}s); delta vs old package {} B (pack {t_old:.2}s); new layer + manifests + configs {expected_bytes} B",
        file_size(&pkg1),
        file_size(&pkg_full),
        file_size(&pkg_inv),
        file_size(&pkg_old),
    );

    // inspect names the delta; verify passes; image tools find no archive.
    let images_bundle = w.join("out-inv/prod-images_1.1.bundle.tar");
    let o = bundler(w, &["inspect", images_bundle.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));

    // 8 images: 8 configs, the base, 8 own layers, the new layer; the
    // base and the 8 own layers are at the site.
    assert!(
        stdout(&o).contains("delta: 9 of 18 blobs external ("),
        "inspect: {}",
        stdout(&o)
    );
    let o = bundler(w, &["verify", images_bundle.to_str().unwrap()]);
    assert!(o.status.success(), "verify: {}", stderr(&o));
    let full_names = carried_blobs(&pkg_full).0;
    assert!(full_names.contains("manifest.json") && full_names.contains("index.json"));
    // The real runtimes load the full bundle's images.tar and refuse the
    // delta's, importing nothing.
    let full_tar = nested_images_tar(
        &w.join("out-full/prod-images_1.1.bundle.tar"),
        &w.join("full-images.tar"),
    );
    let delta_tar = nested_images_tar(&images_bundle, &w.join("delta-images.tar"));
    runtimes_refuse_the_delta(&delta_tar, &full_tar, &changed);

    // diff: one image changed, the bytes are the delta's.
    let o = bundler(
        w,
        &[
            "diff",
            inv_path.to_str().unwrap(),
            pkg_full.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(o.status.success(), "diff: {}", stderr(&o));
    let d: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(d["changed"].as_array().unwrap().len(), 1, "{d}");
    assert_eq!(d["changed"][0]["newDigest"], changed_digest.as_str(), "{d}");
    assert_eq!(d["added"].as_array().unwrap().len(), 0, "{d}");
    assert_eq!(d["removed"].as_array().unwrap().len(), 0, "{d}");
    assert_eq!(d["layersCarried"], 1, "{d}");
    // An inventory knows no manifest sizes: the delta bytes are the layer
    // and the configs.
    assert!(d["deltaBytes"].as_u64().unwrap() >= new_layer_size, "{d}");

    // Into an empty registry the delta is refused before anything moves.
    let empty = Registry::start(Mode::Plain);
    let elsewhere = w.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let cfg_e = write_sync_config(&elsewhere, &pkg_inv, &empty);
    let (o, _) = sync(&elsewhere, &cfg_e);
    assert!(!o.status.success(), "a delta synced into an empty registry");

    let base_digest = images::layer("file0", &p.base).0.digest;
    assert!(
        stderr(&o).contains(&base_digest) && stderr(&o).contains("nothing was pushed"),
        "the refusal must name a missing blob: {}",
        stderr(&o)
    );
    assert!(
        registry_is_empty(&empty),
        "something was pushed into the empty registry"
    );
    assert!(!elsewhere.join("charts").exists(), "a chart was published");

    // Into its site it syncs, every digest right.
    let cfg2 = write_sync_config(&site, &pkg_inv, &site_reg);
    let (o, t_sync_delta) = sync(&site, &cfg2);
    assert!(
        o.status.success(),
        "sync delta: {}\n{}",
        stderr(&o),
        stdout(&o)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    eprintln!(
        "FIGURES: delta sync {t_sync_delta:.2}s, {} bytes uploaded",
        v["bytesUploaded"]
    );
    assert!(
        v["bytesUploaded"].as_u64().unwrap() < expected_bytes + (64 << 10),
        "the delta sync moved more than the delta: {v}"
    );
    for (i, r) in refs_v2.iter().enumerate() {
        let want = if i == CHANGED {
            changed_digest.clone()
        } else {
            p.v1[i].1.clone()
        };
        let target = format!("{}/{r}", p.src.host().replace(':', "_"));
        assert_eq!(skopeo_digest(&site_reg, &target), Some(want), "{target}");
    }
    // Every blob of the changed image can be pulled from the site.
    let pulled = w.join("pulled");
    let o = Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false"])
        .arg(format!(
            "docker://{}/{}/{changed}",
            site_reg.host(),
            p.src.host().replace(':', "_")
        ))
        .arg(format!("oci:{}:x", pulled.display()))
        .output()
        .unwrap();
    assert!(o.status.success(), "skopeo copy: {}", stderr(&o));
    let hex = new_layer_digest.trim_start_matches("sha256:");
    assert_eq!(
        file_size(&pulled.join("blobs/sha256").join(hex)),
        new_layer_size
    );
    // The site's inventory now lists 1.1 of the changed image, and still 1.0.
    let left = read_json(&site.join(".bundler/inventory.json"));
    let ds = digests(&left);
    assert!(ds.iter().any(|(_, d)| d == &changed_digest), "{left}");
    assert_eq!(ds.len(), IMAGES + 1, "{left}");
}

/// A new image whose only shared layer sits in other repositories of the
/// site: sync mounts it from the repository the inventory names (delta
/// against the inventory sync left) or from where the old package's image
/// went (delta against the old package), and the image pulls whole.
#[test]
fn delta_external_blobs_are_mounted_from_the_repository_that_has_them() {
    let p = product();
    let w = p.work.path();
    let refs_v1: Vec<String> = p.v1[..2].iter().map(|(r, _)| r.clone()).collect();
    let m1 = write_manifest(&p, "1.0", &refs_v1, 1);
    let (pkg1, _) = pack(&p, &m1, &w.join("out-1.0"), &[]);
    let extra = "prod/extra:1.0".to_string();
    let extra_digest = images::push_simple(&p.src, w, &extra, &[&p.base, b"extra only"]);
    let mut refs_v2 = refs_v1.clone();
    refs_v2.push(extra.clone());
    let m2 = write_manifest(&p, "1.1", &refs_v2, 1);
    let base_digest = images::layer("file0", &p.base).0.digest;
    for against in ["inventory", "package"] {
        let reg = Registry::start(Mode::Plain);
        let site = w.join(format!("site-{against}"));
        std::fs::create_dir_all(&site).unwrap();
        let cfg = write_sync_config(&site, &pkg1, &reg);
        let (o, _) = sync(&site, &cfg);
        assert!(o.status.success(), "sync 1.0: {}", stderr(&o));
        if against == "inventory" {
            // --images: the listed images only; one the registry lacks is named.
            let list = site.join("images.txt");
            std::fs::write(
                &list,
                format!(
                    "# what runs here\n{0}/{1}\n{0}/prod/absent:9\n",
                    p.src.host(),
                    refs_v1[0]
                ),
            )
            .unwrap();
            let o = bundler(
                &site,
                &[
                    "inventory",
                    "-c",
                    cfg.to_str().unwrap(),
                    "--images",
                    list.to_str().unwrap(),
                    "--insecure",
                ],
            );
            assert!(o.status.success(), "inventory --images: {}", stderr(&o));
            let inv: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            assert_eq!(inv["images"].as_array().unwrap().len(), 1, "{inv}");
            assert_eq!(inv["images"][0]["digest"], p.v1[0].1.as_str(), "{inv}");
            let missing = inv["missing"].as_array().unwrap();
            assert!(
                missing.len() == 1 && missing[0].as_str().unwrap().ends_with("prod/absent:9"),
                "{inv}"
            );
        }
        let against_file = match against {
            "inventory" => site.join(".bundler/inventory.json"),
            _ => pkg1.clone(),
        };
        let out = w.join(format!("out-{against}"));
        let (pkg2, _) = pack(&p, &m2, &out, &[&against_file]);
        let bj = bundle_json(&out.join("prod-images_1.1.bundle.tar"));
        // The base layer is external and says where the site has it.
        let base = bj["delta"]["external"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["digest"] == base_digest.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("base layer not external: {bj}"));
        let from = if against == "inventory" {
            &base["repository"]
        } else {
            &base["image"]
        };
        assert!(
            from.as_str().is_some_and(|f| f.contains("prod/app")),
            "{base}"
        );
        let cfg2 = write_sync_config(&site, &pkg2, &reg);
        let (o, _) = sync(&site, &cfg2);
        assert!(
            o.status.success(),
            "{against}: sync delta: {}\n{}",
            stderr(&o),
            stdout(&o)
        );
        let target = format!("{}/{extra}", p.src.host().replace(':', "_"));
        assert_eq!(
            skopeo_digest(&reg, &target),
            Some(extra_digest.clone()),
            "{against}"
        );
        let pulled = w.join(format!("pulled-{against}"));
        let o = Command::new("skopeo")
            .args(["copy", "--quiet", "--src-tls-verify=false"])
            .arg(format!("docker://{}/{target}", reg.host()))
            .arg(format!("oci:{}:x", pulled.display()))
            .output()
            .unwrap();
        assert!(o.status.success(), "{against}: skopeo copy: {}", stderr(&o));
        let hex = base_digest.trim_start_matches("sha256:");
        let base_layer = images::layer("file0", &p.base).0.bytes;
        assert_eq!(
            std::fs::read(pulled.join("blobs/sha256").join(hex)).unwrap(),
            base_layer,
            "{against}: the mounted base layer"
        );
    }
}

fn bundle_json(bundle: &Path) -> serde_json::Value {
    let mut ar = tar::Archive::new(std::fs::File::open(bundle).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_str() == Some("bundle.json") {
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            return serde_json::from_slice(&v).unwrap();
        }
    }
    panic!("no bundle.json in {}", bundle.display())
}

/// `sync --platform` of a delta whose multi-platform image is pushed as one
/// platform's manifest: its external layers are checked in the target, not
/// looked for in the bundle.
#[test]
fn delta_of_a_multi_platform_image_syncs_one_platform() {
    let src = Registry::start(Mode::Plain);
    let site_reg = Registry::start(Mode::Plain);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let base = images::pseudo_random(5, 300_000);
    let (_, amd_v1, _) = images::push_multiarch(&src, w, "prod/multi:1.0", &base);
    // 1.1: the same platforms under a new tag (same digests).
    let (_, amd_v2, _) = images::push_multiarch(&src, w, "prod/multi:1.1", &base);
    assert_eq!(amd_v1, amd_v2);
    let manifest = |version: &str| {
        let m = w.join(format!("multi-{version}.yaml"));
        std::fs::write(
            &m,
            format!(
                "apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {{name: multi, version: \"{version}\"}}\nspec:\n  platforms: [all]\n  images: [\"{}/prod/multi:{version}\"]\n",
                src.host()
            ),
        )
        .unwrap();
        m
    };
    let pack_to = |m: &Path, out: &Path, against: &[&Path]| {
        let mut args = vec![
            "pack",
            m.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--insecure",
        ];
        for a in against {
            args.extend_from_slice(&["--against", a.to_str().unwrap()]);
        }
        let o = bundler(w, &args);
        assert!(o.status.success(), "pack: {}", stderr(&o));
        out.join(format!(
            "multi_{}_amd64.tar",
            m.file_stem()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("multi-")
        ))
    };
    let pkg1 = pack_to(&manifest("1.0"), &w.join("out-1.0"), &[]);
    let site = w.join("site");
    std::fs::create_dir_all(&site).unwrap();
    let cfg = write_sync_config(&site, &pkg1, &site_reg);
    let (o, _) = sync_with(&site, &cfg, &["--platform", "linux/amd64"]);
    assert!(o.status.success(), "sync 1.0: {}", stderr(&o));
    let inv = site.join(".bundler/inventory.json");
    let pkg2 = pack_to(&manifest("1.1"), &w.join("out-1.1"), &[&inv]);
    let o = bundler(w, &["inspect", pkg2.to_str().unwrap()]);
    assert!(
        stdout(&o).contains("delta: 2 of 5 blobs external"),
        "{}{}",
        stdout(&o),
        stderr(&o)
    );
    let cfg2 = write_sync_config(&site, &pkg2, &site_reg);
    let (o, _) = sync_with(&site, &cfg2, &["--platform", "linux/amd64"]);
    assert!(
        o.status.success(),
        "sync 1.1 --platform: {}\n{}",
        stderr(&o),
        stdout(&o)
    );
    let target = format!("{}/prod/multi:1.1", src.host().replace(':', "_"));
    assert_eq!(skopeo_digest(&site_reg, &target), Some(amd_v2));
}

/// The inventory travels back to the connected side: it holds names and
/// digests, never the registry's credentials (the target needs basic auth).
#[test]
fn inventory_of_an_authenticated_registry_holds_no_credentials() {
    use support::registry::{PASSWORD, USER};
    let src = Registry::start(Mode::Plain);
    let target = Registry::start(Mode::BasicAuth);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let digest = images::push_simple(&src, w, "prod/app:1", &[b"layer"]);
    let m = w.join("p.yaml");
    std::fs::write(
        &m,
        format!(
            "apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {{name: p, version: \"1\"}}\nspec:\n  images: [\"{}/prod/app:1\"]\n",
            src.host()
        ),
    )
    .unwrap();
    let out = w.join("out");
    let o = bundler(
        w,
        &[
            "pack",
            m.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--insecure",
        ],
    );
    assert!(o.status.success(), "pack: {}", stderr(&o));
    let cfg = w.join("load-image.yaml");
    std::fs::write(
        &cfg,
        format!(
            "source:\n  intermediateBundlesPath: {}\ntarget:\n  containerPrefixRegistry: {}\n  containers:\n    auth:\n      username: \"{USER}\"\n      password: \"{PASSWORD}\"\n",
            out.display(),
            target.host()
        ),
    )
    .unwrap();
    let (o, _) = sync(w, &cfg);
    assert!(o.status.success(), "sync: {}", stderr(&o));
    let inv = w.join("site.json");
    let o = bundler(
        w,
        &[
            "inventory",
            "-c",
            cfg.to_str().unwrap(),
            "-o",
            inv.to_str().unwrap(),
            "--insecure",
            "-vv",
        ],
    );
    assert!(o.status.success(), "inventory: {}", stderr(&o));
    for (what, text) in [
        ("inventory", std::fs::read_to_string(&inv).unwrap()),
        (
            ".bundler/inventory.json",
            std::fs::read_to_string(w.join(".bundler/inventory.json")).unwrap(),
        ),
        ("output", format!("{}{}", stdout(&o), stderr(&o))),
    ] {
        assert!(!text.contains(PASSWORD), "{what} holds the password");
        assert!(
            !text.contains(&format!("{USER}:")),
            "{what} holds credentials"
        );
    }
    let v = read_json(&inv);
    assert_eq!(v["images"][0]["digest"], digest.as_str(), "{v}");
}
