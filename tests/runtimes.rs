//! A bundle's `images.tar` loads into the real container runtimes a site
//! falls back to when it has no registry: containerd (`ctr image import`)
//! and docker (`docker load`), each started here as root in a temp dir
//! (containerd without its CRI plugin; dockerd without iptables or a
//! bridge, on the vfs storage driver). Every image must come out under its
//! name; in containerd also with the digest `bundle.json` records (so
//! digest-pinned charts keep working), for single- and multi-platform
//! bundles. Where a daemon cannot start (not root, not installed, no
//! permission for mounts), the test says so and is skipped.
mod support;

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use bundler::bundle::format::IMAGES_TAR;
use bundler::bundle::BundleReader;
use bundler::oci::media::Parsed;
use support::images::{self, AMD64, ARM64, OCI_INDEX, OCI_MANIFEST};
use support::runtimes::{ctr, docker, run, start_containerd, start_dockerd, Daemon};
use support::{bundler, stderr, stdout};

/// Copy the bundle's nested `images.tar` out (what a site hands to
/// `ctr import` / `docker load`; e.g. `tar xf B images.tar`).
fn extract_images_tar(bundle: &Path, dest: &Path) -> BundleReader {
    let reader = BundleReader::open(bundle).unwrap();
    let ext = reader.entries[IMAGES_TAR];
    let mut f = std::fs::File::open(bundle).unwrap();
    f.seek(SeekFrom::Start(ext.offset)).unwrap();
    let mut out = std::fs::File::create(dest).unwrap();
    let copied = std::io::copy(&mut f.take(ext.size), &mut out).unwrap();
    assert_eq!(copied, ext.size);
    reader
}

/// The example product's chart bundle: three single-platform images, from
/// an OCI layout tar, an OCI layout dir and a `docker save` tar.
fn single_platform_bundle(work: &Path) -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("bundle-manifests/example.yaml");
    let out = work.join("single");
    let o = bundler(
        work,
        &[
            "pack",
            manifest.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    out.join("demo_1.0.0.bundle.tar")
}

/// An image-only bundle with every platform kept: a two-platform index and
/// a plain manifest, from an OCI layout.
fn multi_platform_bundle(work: &Path) -> PathBuf {
    let shared = images::layer("base", &images::pseudo_random(7, 50_000));
    let clone = |l: &(images::Blob, String)| {
        (
            images::Blob {
                digest: l.0.digest.clone(),
                bytes: l.0.bytes.clone(),
            },
            l.1.clone(),
        )
    };
    let (amd, amd_blobs) = images::image(&AMD64, &[clone(&shared), images::layer("a", b"amd64")]);
    let (arm, arm_blobs) = images::image(&ARM64, &[clone(&shared), images::layer("b", b"arm64")]);
    let idx = images::index(&[(&AMD64, &amd), (&ARM64, &arm)]);
    let (tool, tool_blobs) = images::image(&AMD64, &[images::layer("t", b"tool")]);
    let pinned_tag = format!("registry.example.com/multi/pinned:1.0@{}", tool.digest);
    let pinned = format!("registry.example.com/multi/digest-only@{}", tool.digest);
    let layout = work.join("layout");
    let mut blobs: Vec<&images::Blob> = amd_blobs
        .iter()
        .chain(&arm_blobs)
        .chain(&tool_blobs)
        .collect();
    blobs.push(&amd);
    blobs.push(&arm);
    images::write_layout(
        &layout,
        &[
            ("registry.example.com/multi/app:2.0", &idx, OCI_INDEX),
            ("registry.example.com/multi/tool:1.0", &tool, OCI_MANIFEST),
            (&pinned_tag, &tool, OCI_MANIFEST),
            (&pinned, &tool, OCI_MANIFEST),
        ],
        &blobs,
    );
    let manifest = work.join("multi.yaml");
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {{name: multi, version: 2.0.0}}\nspec:\n  platforms: all\n  images:\n    - archive: {}\n",
            layout.display()
        ),
    )
    .unwrap();
    let out = work.join("multi");
    let o = bundler(
        work,
        &[
            "pack",
            manifest.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let bundle = out.join("multi-images_2.0.0.bundle.tar");
    let reader = BundleReader::open(&bundle).unwrap();
    let app = reader
        .images
        .iter()
        .find(|i| i.reference.to_string().ends_with("multi/app:2.0"))
        .expect("app in the bundle");
    assert_eq!(app.root.digest.to_string(), idx.digest, "the index is kept");
    assert_eq!(app.children.len(), 2, "both platforms are kept");
    bundle
}

/// (reference, digest) of every image `bundle.json` records.
fn recorded(reader: &BundleReader) -> Vec<(String, String)> {
    let meta = reader.meta.as_ref().expect("bundle.json");
    assert!(!meta.images.is_empty());
    meta.images
        .iter()
        .map(|i| (i.reference.clone(), i.digest.to_string()))
        .collect()
}

fn check_containerd(d: &Daemon, bundle: &Path, work: &Path) {
    let tar = work.join(format!(
        "{}.images.tar",
        bundle.file_stem().unwrap().to_string_lossy()
    ));
    let reader = extract_images_tar(bundle, &tar);
    run(ctr(d).args(["image", "import"]).arg(&tar));
    let listed = stdout(&run(ctr(d).args(["image", "ls"])));
    // REF TYPE DIGEST SIZE PLATFORMS LABELS
    let images: Vec<(String, String)> = listed
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 3).then(|| (f[0].to_string(), f[2].to_string()))
        })
        .collect();
    for (reference, digest) in recorded(&reader) {
        assert!(
            images
                .iter()
                .any(|(r, dg)| r == &reference && dg == &digest),
            "containerd lacks {reference} at {digest} (bundle.json's digest); it has:\n{listed}"
        );
    }
}

/// The config digest docker's classic store uses as the image ID: the
/// image's manifest's config, for an index the linux/amd64 manifest's.
fn docker_image_id(img: &bundler::bundle::BundleImage) -> String {
    let manifest = match img.root.parse().unwrap() {
        Parsed::Manifest { .. } => img.root.clone(),
        Parsed::Index { manifests, .. } => {
            let amd = manifests
                .iter()
                .find(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| p.os == "linux" && p.architecture == "amd64")
                })
                .expect("a linux/amd64 manifest");
            img.children
                .iter()
                .find(|c| c.digest == amd.digest)
                .expect("kept")
                .clone()
        }
    };
    match manifest.parse().unwrap() {
        Parsed::Manifest { config, .. } => config.digest.to_string(),
        Parsed::Index { .. } => panic!("nested index"),
    }
}

fn check_docker(d: &Daemon, bundle: &Path, work: &Path) {
    let tar = work.join(format!(
        "{}.docker.tar",
        bundle.file_stem().unwrap().to_string_lossy()
    ));
    let reader = extract_images_tar(bundle, &tar);
    let loaded = stdout(&run(docker(d).arg("load").arg("-i").arg(&tar)));
    for img in &reader.images {
        // The classic store names images by tag only: `name:tag@digest`
        // comes out as `name:tag`, and a digest-only reference has no name
        // to load under (only its image ID).
        let id = docker_image_id(img);
        let lookup = match &img.reference.tag {
            Some(t) => format!("{}:{t}", img.reference.name()),
            None => id.clone(),
        };
        let o = docker(d)
            .args(["image", "inspect", "--format", "{{.Id}}"])
            .arg(&lookup)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "docker has no image {lookup} after load: {}\nload said: {loaded}",
            stderr(&o)
        );
        assert_eq!(
            stdout(&o).trim(),
            id,
            "{lookup}: docker loaded another image than the bundle's"
        );
        if img.reference.tag.is_some() {
            assert!(
                loaded.contains(&format!("Loaded image: {}", docker_name(&lookup))),
                "{lookup} not reported by docker load: {loaded}"
            );
        }
    }
}

/// How docker prints a name: `docker.io/library/` and `docker.io/` dropped.
fn docker_name(name: &str) -> &str {
    name.strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name)
}

#[test]
fn containerd_imports_every_image_under_its_name_and_digest() {
    let d = match start_containerd() {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED containerd_imports_every_image_under_its_name_and_digest: {why}");
            return;
        }
    };
    let work = tempfile::tempdir().unwrap();
    check_containerd(&d, &single_platform_bundle(work.path()), work.path());
    check_containerd(&d, &multi_platform_bundle(work.path()), work.path());
}

#[test]
fn docker_loads_every_image_under_its_name() {
    let d = match start_dockerd(&[]) {
        Ok(d) => d,
        Err(why) => {
            eprintln!("SKIPPED docker_loads_every_image_under_its_name: {why}");
            return;
        }
    };
    let work = tempfile::tempdir().unwrap();
    check_docker(&d, &single_platform_bundle(work.path()), work.path());
    check_docker(&d, &multi_platform_bundle(work.path()), work.path());
}
