//! The bundle format (SPEC §3) against real readers: bundles written from
//! OCI layouts and docker archives are read back by skopeo through both the
//! `docker-archive:` and `oci-archive:` transports with their digests
//! intact; writing is deterministic; verify catches a flipped byte; the
//! relok8s-written fixture is read; hostile and damaged tars are refused.
mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use bundler::bundle::format::BundleJson;
use bundler::bundle::reader::{index_tar_limited, BundleReader};
use bundler::bundle::verify::verify;
use bundler::bundle::writer::{begin, BundleSpec};
use bundler::oci::archive::{open_archive, ArchiveImage, BlobLocation};
use bundler::oci::{Digest, Reference};
use bundler::progress::{Mode, Progress};
use support::images::{self, Blob, AMD64, ARM64, OCI_INDEX, OCI_MANIFEST};

fn quiet() -> Progress {
    Progress::new(Mode::Quiet)
}

fn skopeo(args: &[&str]) -> std::process::Output {
    let out = Command::new("skopeo")
        .args(args)
        .output()
        .expect("skopeo is needed (apt-get install skopeo)");
    assert!(
        out.status.success(),
        "skopeo {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn sha(bytes: &[u8]) -> String {
    Digest::of(bytes).to_string()
}

/// A bundle spec from archive images (with the references to use), and
/// where each blob lives.
fn spec_from(
    images: &[(&ArchiveImage, &str)],
    chart_files: Vec<(String, Vec<u8>)>,
) -> (BundleSpec, BTreeMap<Digest, BlobLocation>) {
    let mut spec = BundleSpec {
        hints: "- \"{{ .image.repository }}:{{ .image.tag }}\"\n".into(),
        chart_files,
        ..Default::default()
    };
    let mut locs = BTreeMap::new();
    for (img, r) in images {
        spec.images
            .push(img.image_spec(Reference::parse(r).unwrap()).unwrap());
        for (d, loc) in &img.blobs {
            spec.blobs.insert(d.digest.clone(), d.size);
            locs.insert(d.digest.clone(), loc.clone());
        }
    }
    (spec, locs)
}

/// Write a bundle, filling every slot from the source files.
fn write_bundle(path: &Path, spec: &BundleSpec, locs: &BTreeMap<Digest, BlobLocation>) {
    let pending = begin(path, spec).unwrap();
    for slot in &pending.slots {
        let BlobLocation::File { path, offset, .. } = &locs[&slot.digest];
        pending.fill_from_file(slot, path, *offset).unwrap();
    }
    pending.commit().unwrap();
}

/// Copy the nested images.tar out of a bundle (tests only).
fn extract_images_tar(bundle: &Path, dest: &Path) -> PathBuf {
    let r = BundleReader::open(bundle).unwrap();
    let ext = r.entries["images.tar"];
    let data = std::fs::read(bundle).unwrap();
    let out = dest.join("images.tar");
    std::fs::write(
        &out,
        &data[ext.offset as usize..(ext.offset + ext.size) as usize],
    )
    .unwrap();
    out
}

fn tar_names(bytes: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(bytes);
    a.entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect()
}

struct Layout {
    dir: PathBuf,
    single: Blob,
    index: Blob,
    amd: Blob,
    shared_layer: String,
}

/// An OCI layout with a single-platform image (`app`) and a two-platform
/// index (`multi`), all three manifests sharing one base layer.
fn make_layout(root: &Path) -> Layout {
    let base = images::layer("base", &images::pseudo_random(7, 300_000));
    let base_digest = base.0.digest.clone();
    let clone = |b: &(Blob, String)| {
        (
            Blob {
                digest: b.0.digest.clone(),
                bytes: b.0.bytes.clone(),
            },
            b.1.clone(),
        )
    };
    let (single, b0) = images::image(&AMD64, &[clone(&base), images::layer("app", b"app")]);
    let (amd, b1) = images::image(&AMD64, &[clone(&base), images::layer("amd", b"amd64")]);
    let (arm, b2) = images::image(&ARM64, &[clone(&base), images::layer("arm", b"arm64")]);
    let index = images::index(&[(&AMD64, &amd), (&ARM64, &arm)]);
    let dir = root.join("layout");
    let mut all: Vec<&Blob> = b0.iter().chain(b1.iter()).chain(b2.iter()).collect();
    all.push(&amd);
    all.push(&arm);
    images::write_layout(
        &dir,
        &[("app", &single, OCI_MANIFEST), ("multi", &index, OCI_INDEX)],
        &all,
    );
    Layout {
        dir,
        single,
        index,
        amd,
        shared_layer: base_digest,
    }
}

const APP: &str = "127.0.0.1:5000/team/app:1.0";
const MULTI: &str = "registry.example.com/team/multi:2.0";

fn build(root: &Path, name: &str) -> (Layout, PathBuf) {
    let layout = make_layout(root);
    let imgs = open_archive(&layout.dir).unwrap();
    assert_eq!(imgs.len(), 2);
    let app = imgs
        .iter()
        .find(|i| i.root.digest.to_string() == layout.single.digest)
        .unwrap();
    let multi = imgs
        .iter()
        .find(|i| i.root.digest.to_string() == layout.index.digest)
        .unwrap();
    assert_eq!(multi.children.len(), 2);
    let long = format!(
        "templates/{}/deployment.yaml",
        "very-long-directory-name".repeat(6)
    );
    let chart_files = vec![
        ("values.yaml".to_string(), b"image:\n  tag: 1.0\n".to_vec()),
        (
            "Chart.yaml".to_string(),
            b"apiVersion: v2\nname: demo\nversion: 1.2.3\n".to_vec(),
        ),
        (long, b"kind: Deployment\n".to_vec()),
    ];
    let (spec, locs) = spec_from(&[(app, APP), (multi, MULTI)], chart_files);
    let out = root.join(name);
    write_bundle(&out, &spec, &locs);
    (layout, out)
}

#[test]
fn bundle_is_read_by_skopeo_through_both_transports_with_digests_intact() {
    let work = tempfile::tempdir().unwrap();
    let (layout, bundle) = build(work.path(), "demo_1.2.3.bundle.tar");

    // Outer entry order.
    let bytes = std::fs::read(&bundle).unwrap();
    let names = tar_names(&bytes);
    assert_eq!(names[0], "hints.yaml");
    assert_eq!(names[1], "original-chart/Chart.yaml");
    assert!(names[2].starts_with("original-chart/templates/very-long"));
    assert!(names[2].len() > 100, "long name kept: {}", names[2]);
    assert_eq!(names[3], "original-chart/values.yaml");
    assert_eq!(&names[4..], &["bundle.json", "images.tar"]);
    // Deterministic headers: mtime 0, uid/gid 0, mode 0644.
    let mut a = tar::Archive::new(&bytes[..]);
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        let h = e.header();
        assert_eq!(h.mtime().unwrap(), 0);
        assert_eq!(h.uid().unwrap(), 0);
        assert_eq!(h.gid().unwrap(), 0);
        assert_eq!(h.mode().unwrap(), 0o644);
    }

    // Our reader.
    let r = BundleReader::open(&bundle).unwrap();
    assert_eq!(r.images.len(), 2);
    assert_eq!(
        r.chart_name_version().unwrap(),
        Some(("demo".into(), "1.2.3".into()))
    );
    assert_eq!(r.chart_files().unwrap().len(), 3);
    assert!(r.hints().unwrap().unwrap().contains(".image.tag"));
    let app = r
        .images
        .iter()
        .find(|i| i.reference.to_string() == APP)
        .unwrap();
    assert_eq!(app.root.digest.to_string(), layout.single.digest);
    assert_eq!(&app.root.bytes[..], &layout.single.bytes[..]);
    let multi = r
        .images
        .iter()
        .find(|i| i.reference.to_string() == MULTI)
        .unwrap();
    assert_eq!(multi.root.digest.to_string(), layout.index.digest);
    assert_eq!(multi.children.len(), 2);
    assert!(!multi.synthesized);
    let meta = r.meta.clone().unwrap();
    assert!(meta.tool.starts_with("bundler "));
    for f in [
        "hints.yaml",
        "original-chart/Chart.yaml",
        "images.tar/index.json",
        "images.tar/manifest.json",
        "images.tar/oci-layout",
    ] {
        assert!(meta.files.contains_key(f), "bundle.json lists {f}");
    }
    let rep = verify(&r, &quiet()).unwrap();
    assert!(rep.blobs >= 9, "{rep:?}");

    // images.tar: inner order, dir entries, shared layer stored once.
    let dir = tempfile::tempdir().unwrap();
    let images_tar = extract_images_tar(&bundle, dir.path());
    let inner = tar_names(&std::fs::read(&images_tar).unwrap());
    assert_eq!(
        &inner[..5],
        &[
            "oci-layout",
            "index.json",
            "manifest.json",
            "blobs/",
            "blobs/sha256/"
        ]
    );
    let blob_names = &inner[5..];
    let mut sorted = blob_names.to_vec();
    sorted.sort();
    assert_eq!(blob_names, &sorted[..], "blobs sorted by digest");
    let shared = format!(
        "blobs/sha256/{}",
        layout.shared_layer.trim_start_matches("sha256:")
    );
    assert_eq!(
        inner.iter().filter(|n| **n == shared).count(),
        1,
        "shared layer once"
    );

    // skopeo, OCI view: raw manifests are byte-identical.
    let p = images_tar.display().to_string();
    for (r, want) in [(APP, &layout.single), (MULTI, &layout.index)] {
        let raw = skopeo(&["inspect", "--raw", &format!("oci-archive:{p}:{r}")]).stdout;
        assert_eq!(sha(&raw), want.digest, "{r} via oci-archive");
    }
    // skopeo, docker view: the docker archive names the same config.
    let raw = skopeo(&["inspect", "--raw", &format!("docker-archive:{p}:{APP}")]).stdout;
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let src: serde_json::Value = serde_json::from_slice(&layout.single.bytes).unwrap();
    assert_eq!(m["config"]["digest"], src["config"]["digest"]);
    let raw = skopeo(&["inspect", "--raw", &format!("docker-archive:{p}:{MULTI}")]).stdout;
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let amd: serde_json::Value = serde_json::from_slice(&layout.amd.bytes).unwrap();
    assert_eq!(m["config"]["digest"], amd["config"]["digest"]);
    // skopeo copy out of both views.
    let d1 = dir.path().join("copy-docker");
    skopeo(&[
        "copy",
        "-q",
        &format!("docker-archive:{p}:{APP}"),
        &format!("dir:{}", d1.display()),
    ]);
    assert!(d1.join("manifest.json").exists());
    let d2 = dir.path().join("copy-oci");
    skopeo(&[
        "copy",
        "-q",
        "--all",
        "--preserve-digests",
        &format!("oci-archive:{p}:{MULTI}"),
        &format!("dir:{}", d2.display()),
    ]);
    assert_eq!(
        sha(&std::fs::read(d2.join("manifest.json")).unwrap()),
        layout.index.digest
    );
}

#[test]
fn writing_twice_gives_identical_bytes() {
    let w1 = tempfile::tempdir().unwrap();
    let w2 = tempfile::tempdir().unwrap();
    let (_, b1) = build(w1.path(), "x.bundle.tar");
    let (_, b2) = build(w2.path(), "x.bundle.tar");
    let (a, b) = (std::fs::read(&b1).unwrap(), std::fs::read(&b2).unwrap());
    assert_eq!(a.len(), b.len());
    assert!(a == b, "same spec, different bytes");
    // No temp files left next to the bundle.
    let left: Vec<_> = std::fs::read_dir(w1.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_flipped_byte_is_caught_by_verify_naming_the_blob_and_bundle() {
    let work = tempfile::tempdir().unwrap();
    let (layout, bundle) = build(work.path(), "flip.bundle.tar");
    let r = BundleReader::open(&bundle).unwrap();
    let shared: Digest = layout.shared_layer.parse().unwrap();
    let ext = r.blob(&shared).unwrap();
    drop(r);
    let mut bytes = std::fs::read(&bundle).unwrap();
    bytes[(ext.offset + ext.size / 2) as usize] ^= 0x01;
    std::fs::write(&bundle, &bytes).unwrap();

    let r = BundleReader::open(&bundle).unwrap();
    let err = format!("{:#}", verify(&r, &quiet()).unwrap_err());
    assert!(err.contains(&layout.shared_layer), "{err}");
    assert!(err.contains(&bundle.display().to_string()), "{err}");

    let out = support::bundler(work.path(), &["verify", bundle.to_str().unwrap()]);
    assert!(!out.status.success());
    let text = support::stderr(&out);
    assert!(text.contains(&layout.shared_layer), "{text}");
    assert!(text.contains("flip.bundle.tar"), "{text}");
    // A chart file changed after packing is caught by the bundle.json checksums.
    let (_, bundle2) = build(work.path(), "edit.bundle.tar");
    let r = BundleReader::open(&bundle2).unwrap();
    let ext = r.entries["original-chart/values.yaml"];
    drop(r);
    let mut bytes = std::fs::read(&bundle2).unwrap();
    bytes[ext.offset as usize] = b'X';
    std::fs::write(&bundle2, &bytes).unwrap();
    let err = format!(
        "{:#}",
        verify(&BundleReader::open(&bundle2).unwrap(), &quiet()).unwrap_err()
    );
    assert!(err.contains("original-chart/values.yaml"), "{err}");

    // A good bundle verifies through the binary, with --json.
    let (_, good) = build(work.path(), "good.bundle.tar");
    let out = support::bundler(work.path(), &["verify", "--json", good.to_str().unwrap()]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["ok"], true);
}

fn relok8s_fixture() -> PathBuf {
    support::fixtures().join("relok8s/testchart-intermediate.tar")
}

#[test]
fn relok8s_bundle_is_read_verified_and_inspected() {
    let path = relok8s_fixture();
    let r = BundleReader::open(&path).unwrap();
    let refs: Vec<String> = r.images.iter().map(|i| i.reference.to_string()).collect();
    assert_eq!(
        refs,
        [
            "harbor-repo.vmware.com/dockerhub-proxy-cache/library/busybox:1.33.1",
            "harbor-repo.vmware.com/tanzu_isv_engineering/tiny:tiniest"
        ]
    );
    for img in &r.images {
        assert!(img.synthesized);
        assert_eq!(
            img.root.media_type,
            "application/vnd.docker.distribution.manifest.v2+json"
        );
        assert_eq!(Digest::of(&img.root.bytes), img.root.digest);
    }
    let busybox = &r.images[0];
    assert_eq!(busybox.blobs.len(), 2);
    assert_eq!(
        busybox.blobs[1].media_type,
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );
    assert_eq!(
        busybox.blobs[1].digest.to_string(),
        "sha256:24fb2886d6f6c5d16481dd7608b47e78a8e92a13d6e64d87d57cb16d5f766d63"
    );
    assert_eq!(
        r.chart_name_version().unwrap().unwrap().0,
        "testchart".to_string()
    );
    assert!(r.hints().unwrap().unwrap().contains(".image.repository"));
    let rep = verify(&r, &quiet()).unwrap();
    assert_eq!(rep.blobs, 3);

    let dir = tempfile::tempdir().unwrap();
    let out = support::bundler(dir.path(), &["inspect", "--json", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["chart"]["name"], "testchart");
    assert_eq!(v["images"].as_array().unwrap().len(), 2);
    assert_eq!(v["hints"], 4);
    let out = support::bundler(dir.path(), &["verify", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", support::stderr(&out));
    assert!(support::stdout(&out).starts_with("OK "));
    let out = support::bundler(dir.path(), &["inspect", path.to_str().unwrap()]);
    assert!(support::stdout(&out).contains("tiny:tiniest"));
}

#[test]
fn docker_archives_and_oci_archives_from_skopeo_are_image_sources() {
    let work = tempfile::tempdir().unwrap();
    let layout = make_layout(work.path());
    let l = layout.dir.display().to_string();
    // skopeo writes a docker archive (legacy layout) and an OCI archive (tar).
    let darch = work.path().join("app-docker.tar");
    skopeo(&[
        "copy",
        "-q",
        &format!("oci:{l}:app"),
        &format!("docker-archive:{}:example.com/team/app:3", darch.display()),
    ]);
    let oarch = work.path().join("multi-oci.tar");
    skopeo(&[
        "copy",
        "-q",
        "--all",
        &format!("oci:{l}:multi"),
        &format!("oci-archive:{}:multi", oarch.display()),
    ]);

    let d = open_archive(&darch).unwrap();
    assert_eq!(d.len(), 1);
    assert!(d[0].synthesized);
    assert_eq!(
        d[0].reference.as_ref().unwrap().to_string(),
        "example.com/team/app:3"
    );
    let o = open_archive(&oarch).unwrap();
    assert_eq!(o.len(), 1);
    assert_eq!(o[0].root.digest.to_string(), layout.index.digest);
    assert_eq!(o[0].children.len(), 2);

    let (spec, locs) = spec_from(&[(&d[0], "example.com/team/app:3"), (&o[0], MULTI)], vec![]);
    let bundle = work.path().join("mixed.bundle.tar");
    write_bundle(&bundle, &spec, &locs);
    let r = BundleReader::open(&bundle).unwrap();
    verify(&r, &quiet()).unwrap();
    assert_eq!(r.chart_name_version().unwrap(), None);
    let images_tar = extract_images_tar(&bundle, work.path());
    let p = images_tar.display().to_string();
    let raw = skopeo(&["inspect", "--raw", &format!("oci-archive:{p}:{MULTI}")]).stdout;
    assert_eq!(sha(&raw), layout.index.digest);
    // The docker-media-type manifest (synthesized from the docker archive)
    // is in index.json byte for byte too; skopeo 1.9's OCI transport only
    // looks at OCI media types there, so it is read through the docker view.
    let raw = skopeo(&[
        "inspect",
        "--raw",
        &format!("docker-archive:{p}:example.com/team/app:3"),
    ])
    .stdout;
    let m: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let src: serde_json::Value = serde_json::from_slice(&d[0].root.bytes).unwrap();
    assert_eq!(m["config"]["digest"], src["config"]["digest"]);
    let r = BundleReader::open(&bundle).unwrap();
    let app = r
        .images
        .iter()
        .find(|i| i.reference.to_string() == "example.com/team/app:3")
        .unwrap();
    assert_eq!(app.root.digest, d[0].root.digest);
    skopeo(&[
        "copy",
        "-q",
        &format!("docker-archive:{p}:example.com/team/app:3"),
        &format!("dir:{}", work.path().join("out").display()),
    ]);
}

#[test]
fn legacy_docker_save_layout_is_an_image_source() {
    // `<id>/layer.tar` + `<hex>.json`, as `docker save` wrote before 25.
    let work = tempfile::tempdir().unwrap();
    let mut layer = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    h.set_cksum();
    layer.append_data(&mut h, "hello", &b"hello"[..]).unwrap();
    let layer = layer.into_inner().unwrap();
    let layer_digest = sha(&layer);
    let config = format!(
        "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[\"{layer_digest}\"]}}}}"
    );
    let config_hex = Digest::of(config.as_bytes()).hex().to_string();
    let manifest = format!(
        "[{{\"Config\":\"{config_hex}.json\",\"RepoTags\":[\"mlab-gateway:1.0\"],\"Layers\":[\"abc123/layer.tar\"]}}]"
    );
    let mut t = tar::Builder::new(Vec::new());
    for (name, data) in [
        (format!("{config_hex}.json"), config.as_bytes().to_vec()),
        ("abc123/layer.tar".to_string(), layer.clone()),
        ("manifest.json".to_string(), manifest.into_bytes()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        t.append_data(&mut h, &name, &data[..]).unwrap();
    }
    let path = work.path().join("mlab-gateway.tar");
    std::fs::write(&path, t.into_inner().unwrap()).unwrap();
    let imgs = open_archive(&path).unwrap();
    assert_eq!(imgs.len(), 1);
    let img = &imgs[0];
    assert_eq!(
        img.reference.as_ref().unwrap().to_string(),
        "docker.io/library/mlab-gateway:1.0"
    );
    assert_eq!(img.blobs[1].0.digest.to_string(), layer_digest);
    assert_eq!(
        img.blobs[1].0.media_type,
        "application/vnd.docker.image.rootfs.diff.tar"
    );
    let (spec, locs) = spec_from(&[(img, "docker.io/library/mlab-gateway:1.0")], vec![]);
    assert_eq!(
        spec.images[0].platform.as_ref().unwrap().to_string(),
        "linux/amd64"
    );
    let bundle = work.path().join("mlab.bundle.tar");
    write_bundle(&bundle, &spec, &locs);
    verify(&BundleReader::open(&bundle).unwrap(), &quiet()).unwrap();
    let images_tar = extract_images_tar(&bundle, work.path());
    skopeo(&[
        "copy",
        "-q",
        &format!("docker-archive:{}:mlab-gateway:1.0", images_tar.display()),
        &format!("dir:{}", work.path().join("out").display()),
    ]);
}

// ---- hostile and damaged input ----

/// (name, data, type flag, link target)
type RawEntry = (Vec<u8>, Vec<u8>, u8, Vec<u8>);

/// A raw tar entry header with any name and type (bypassing the tar
/// crate's path checks).
fn raw_header(name: &[u8], size: u64, kind: u8, link: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.as_old_mut().linkflag = [kind];
    h.set_cksum();
    h.as_bytes().to_vec()
}

fn raw_tar(entries: &[RawEntry], end: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data, kind, link) in entries {
        out.extend(raw_header(name, data.len() as u64, *kind, link));
        out.extend(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    if end {
        out.extend([0u8; 1024]);
    }
    out
}

fn file(name: &str, data: &[u8]) -> RawEntry {
    (name.as_bytes().to_vec(), data.to_vec(), b'0', vec![])
}

fn refused(dir: &Path, label: &str, bytes: &[u8], expect: &[&str]) {
    let path = dir.join(format!("{label}.bundle.tar"));
    std::fs::write(&path, bytes).unwrap();
    let err = format!(
        "{:#}",
        BundleReader::open(&path).expect_err(&format!("{label} must be refused"))
    );
    assert!(err.contains(&path.display().to_string()), "{label}: {err}");
    for e in expect {
        assert!(err.contains(e), "{label}: expected {e:?} in {err}");
    }
    // And through the binary: exit non-zero, bundle named.
    let out = support::bundler(dir, &["verify", path.to_str().unwrap()]);
    assert!(!out.status.success(), "{label}");
    assert!(support::stderr(&out).contains(&format!("{label}.bundle.tar")));
}

#[test]
fn hostile_tars_are_refused_naming_the_bundle_and_entry() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let hints = file("hints.yaml", b"[]\n");
    refused(
        d,
        "dotdot",
        &raw_tar(
            &[hints.clone(), file("original-chart/../../evil", b"x")],
            true,
        ),
        &["original-chart/../../evil", ".."],
    );
    refused(
        d,
        "absolute",
        &raw_tar(&[file("/etc/passwd", b"x")], true),
        &["/etc/passwd", "absolute"],
    );
    refused(
        d,
        "symlink",
        &raw_tar(
            &[(
                b"original-chart/link".to_vec(),
                vec![],
                b'2',
                b"/etc/passwd".to_vec(),
            )],
            true,
        ),
        &["original-chart/link", "symbolic link"],
    );
    refused(
        d,
        "hardlink",
        &raw_tar(
            &[
                hints.clone(),
                (
                    b"original-chart/hl".to_vec(),
                    vec![],
                    b'1',
                    b"hints.yaml".to_vec(),
                ),
            ],
            true,
        ),
        &["original-chart/hl", "hard link"],
    );
    refused(
        d,
        "chardev",
        &raw_tar(&[(b"dev-null".to_vec(), vec![], b'3', vec![])], true),
        &["dev-null", "character device"],
    );
    refused(
        d,
        "fifo",
        &raw_tar(&[(b"pipe".to_vec(), vec![], b'6', vec![])], true),
        &["pipe", "fifo"],
    );
    refused(
        d,
        "duplicate",
        &raw_tar(&[hints.clone(), file("hints.yaml", b"evil")], true),
        &["hints.yaml", "duplicate"],
    );
    refused(
        d,
        "nonutf8",
        &raw_tar(&[(b"bad\xff\xfename".to_vec(), vec![], b'0', vec![])], true),
        &["UTF-8"],
    );
    // Absurd size: the header claims 8 GiB, the file is tiny.
    let mut absurd = raw_header(b"images.tar", 0, b'0', b"");
    {
        let mut h = tar::Header::new_ustar();
        h.as_mut_bytes().copy_from_slice(&absurd);
        h.set_size(8 << 30);
        h.set_cksum();
        absurd = h.as_bytes().to_vec();
    }
    absurd.extend([0u8; 2048]);
    refused(d, "absurd", &absurd, &["images.tar", "8589934592"]);
    // Truncated: data cut short.
    let mut trunc = raw_tar(&[hints.clone(), file("bundle.json", &[b' '; 3000])], false);
    trunc.truncate(trunc.len() - 1500);
    refused(d, "truncated", &trunc, &["bundle.json"]);
    // Hostile entry inside the nested images.tar.
    let inner = raw_tar(&[file("../../outside", b"x")], true);
    refused(
        d,
        "nested",
        &raw_tar(
            &[hints.clone(), (b"images.tar".to_vec(), inner, b'0', vec![])],
            true,
        ),
        &["images.tar", "../../outside"],
    );
    // Not a tar at all.
    refused(d, "garbage", &[7u8; 4096], &["not a tar archive"]);

    // Tar bomb: more entries than the limit (the real limit is 1,000,000;
    // the same code path is exercised with a small one).
    let many: Vec<_> = (0..1001).map(|i| file(&format!("f{i}"), b"")).collect();
    let bomb = d.join("bomb.tar");
    std::fs::write(&bomb, raw_tar(&many, true)).unwrap();
    let f = std::fs::File::open(&bomb).unwrap();
    let len = f.metadata().unwrap().len();
    let err = index_tar_limited(&f, 0, len, "bundle bomb.tar", 1000).unwrap_err();
    assert!(err.to_string().contains("more than 1000"), "{err}");
    assert!(index_tar_limited(&f, 0, len, "bundle bomb.tar", 1001).is_ok());
}

/// A bundle built by hand: outer files plus an images.tar from entries.
fn hand_bundle(outer: Vec<RawEntry>, inner: &[RawEntry]) -> Vec<u8> {
    let mut all = outer;
    all.push((b"images.tar".to_vec(), raw_tar(inner, true), b'0', vec![]));
    raw_tar(&all, true)
}

#[test]
fn damaged_bundles_are_refused() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let hints = file("hints.yaml", b"[]\n");
    // Malformed bundle.json.
    refused(
        d,
        "badjson",
        &hand_bundle(
            vec![
                hints.clone(),
                file("bundle.json", b"{\"formatVersion\": 1,"),
            ],
            &[],
        ),
        &["bundle.json", "malformed"],
    );
    // bundle.json of a newer major format.
    let newer = serde_json::to_vec(&BundleJson {
        format_version: "2.0".into(),
        tool: "bundler 9".into(),
        ..Default::default()
    })
    .unwrap();
    refused(
        d,
        "newer",
        &hand_bundle(vec![hints.clone(), file("bundle.json", &newer)], &[]),
        &["formatVersion"],
    );
    // index.json pointing at nothing.
    let missing = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    let index = format!(
        "{{\"schemaVersion\":2,\"manifests\":[{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{missing}\",\"size\":10,\"annotations\":{{\"org.opencontainers.image.ref.name\":\"example.com/a/b:1\"}}}}]}}"
    );
    refused(
        d,
        "dangling-index",
        &hand_bundle(
            vec![hints.clone()],
            &[
                file("oci-layout", b"{}"),
                file("index.json", index.as_bytes()),
            ],
        ),
        &[missing],
    );
    // manifest.json pointing at nothing.
    let manifest = "[{\"Config\":\"sha256:2222222222222222222222222222222222222222222222222222222222222222\",\"RepoTags\":[\"a/b:1\"],\"Layers\":[]}]";
    refused(
        d,
        "dangling-docker",
        &hand_bundle(
            vec![hints.clone()],
            &[file("manifest.json", manifest.as_bytes())],
        ),
        &["sha256:2222"],
    );
    // A manifest whose layer blob is missing.
    let cfg = b"{}".to_vec();
    let cfg_d = Digest::of(&cfg);
    let lost = "sha256:3333333333333333333333333333333333333333333333333333333333333333";
    let m = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{OCI_MANIFEST}\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{cfg_d}\",\"size\":2}},\"layers\":[{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"{lost}\",\"size\":5}}]}}"
    );
    let m_d = Digest::of(m.as_bytes());
    let index = format!(
        "{{\"schemaVersion\":2,\"manifests\":[{{\"mediaType\":\"{OCI_MANIFEST}\",\"digest\":\"{m_d}\",\"size\":{},\"annotations\":{{\"org.opencontainers.image.ref.name\":\"example.com/a/b:1\"}}}}]}}",
        m.len()
    );
    refused(
        d,
        "missing-blob",
        &hand_bundle(
            vec![hints.clone()],
            &[
                file("oci-layout", b"{}"),
                file("index.json", index.as_bytes()),
                file(&m_d.layout_path(), m.as_bytes()),
                file(&cfg_d.layout_path(), &cfg),
            ],
        ),
        &[lost],
    );
}

#[test]
fn an_unfinished_bundle_leaves_nothing_under_the_final_name() {
    let work = tempfile::tempdir().unwrap();
    let layout = make_layout(work.path());
    let imgs = open_archive(&layout.dir).unwrap();
    let (spec, _) = spec_from(&[(&imgs[0], APP)], vec![]);
    let out = work.path().join("half.bundle.tar");
    let pending = begin(&out, &spec).unwrap();
    assert!(!pending.slots.is_empty());
    let temp = pending.temp_path.clone();
    assert!(temp.exists());
    assert!(temp
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with(".half.bundle.tar.partial-"));
    // A slot filled with wrong bytes is refused.
    let mut w = pending.slot_writer(&pending.slots[0]);
    w.write_all(&vec![0u8; pending.slots[0].size as usize])
        .unwrap();
    assert!(w.finish().is_err());
    drop(pending);
    assert!(!temp.exists());
    assert!(!out.exists());
}

#[test]
fn image_archive_links_must_stay_inside_the_archive() {
    use bundler::bundle::reader::index_tar_with_links;
    let work = tempfile::tempdir().unwrap();
    let check = |label: &str, entries: &[RawEntry]| {
        let p = work.path().join(format!("{label}.tar"));
        std::fs::write(&p, raw_tar(entries, true)).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        let len = f.metadata().unwrap().len();
        index_tar_with_links(&f, 0, len, label)
    };
    let layer = file("abc.tar", b"layer bytes");
    let ok = check(
        "shared",
        &[
            layer.clone(),
            (
                b"id1/layer.tar".to_vec(),
                vec![],
                b'2',
                b"../abc.tar".to_vec(),
            ),
            (b"id2/layer.tar".to_vec(), vec![], b'1', b"abc.tar".to_vec()),
        ],
    )
    .unwrap();
    let exts: Vec<_> = ok.iter().map(|e| e.extent).collect();
    assert_eq!(ok.len(), 3);
    assert!(exts.iter().all(|e| *e == exts[0]));
    for (label, entries) in [
        (
            "escape",
            vec![(
                b"id/layer.tar".to_vec(),
                vec![],
                b'2',
                b"../../etc/passwd".to_vec(),
            )],
        ),
        (
            "absolute",
            vec![(
                b"id/layer.tar".to_vec(),
                vec![],
                b'2',
                b"/etc/passwd".to_vec(),
            )],
        ),
        (
            "dangling",
            vec![(
                b"id/layer.tar".to_vec(),
                vec![],
                b'2',
                b"../nope.tar".to_vec(),
            )],
        ),
        (
            "loop",
            vec![
                (b"a".to_vec(), vec![], b'2', b"b".to_vec()),
                (b"b".to_vec(), vec![], b'2', b"a".to_vec()),
            ],
        ),
    ] {
        let err = check(label, &entries).expect_err(label).to_string();
        assert!(err.contains("refused"), "{label}: {err}");
    }
}

#[test]
fn docker_25_style_archive_uses_its_index_json() {
    // `docker save` ≥ 25 writes an OCI layout plus manifest.json; the
    // reference comes from io.containerd.image.name with a tag-only ref.name.
    let work = tempfile::tempdir().unwrap();
    let layout = make_layout(work.path());
    let idx = std::fs::read_to_string(layout.dir.join("index.json")).unwrap();
    let idx = idx.replace(
        "\"org.opencontainers.image.ref.name\":\"app\"",
        "\"io.containerd.image.name\":\"docker.io/library/app:5\",\"org.opencontainers.image.ref.name\":\"5\"",
    );
    std::fs::write(layout.dir.join("index.json"), idx).unwrap();
    std::fs::write(layout.dir.join("manifest.json"), "[]").unwrap();
    let tarball = work.path().join("docker25.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&tarball).unwrap());
    b.append_dir_all(".", &layout.dir).unwrap();
    b.finish().unwrap();
    drop(b);
    let imgs = open_archive(&tarball).unwrap();
    let app = imgs
        .iter()
        .find(|i| i.root.digest.to_string() == layout.single.digest)
        .unwrap();
    assert_eq!(
        app.reference.as_ref().unwrap().to_string(),
        "docker.io/library/app:5"
    );
    assert!(!app.synthesized);
}

#[test]
fn platform_filtered_and_partial_index_images_record_the_digest_map() {
    let work = tempfile::tempdir().unwrap();
    let layout = make_layout(work.path());
    let imgs = open_archive(&layout.dir).unwrap();
    let multi = imgs
        .iter()
        .find(|i| i.root.digest.to_string() == layout.index.digest)
        .unwrap();
    let amd_digest: Digest = layout.amd.digest.parse().unwrap();
    let amd_doc = multi
        .children
        .iter()
        .find(|c| c.digest == amd_digest)
        .unwrap()
        .clone();
    let amd_blobs: Vec<Digest> = match amd_doc.parse().unwrap() {
        bundler::oci::media::Parsed::Manifest { config, layers, .. } => std::iter::once(config)
            .chain(layers)
            .map(|d| d.digest)
            .collect(),
        _ => unreachable!(),
    };
    let mut locs = BTreeMap::new();
    let mut spec = BundleSpec::default();
    for (d, loc) in &multi.blobs {
        if amd_blobs.contains(&d.digest) {
            spec.blobs.insert(d.digest.clone(), d.size);
            locs.insert(d.digest.clone(), loc.clone());
        }
    }
    // 1. one platform kept: the platform manifest is the root.
    let mut filtered = multi.image_spec(Reference::parse(MULTI).unwrap()).unwrap();
    filtered.root = amd_doc.clone();
    filtered.children.clear();
    filtered.platform = Some(bundler::oci::media::Platform::parse("linux/amd64").unwrap());
    filtered.source_index = Some(multi.root.digest.clone());
    // 2. the index kept with only the amd64 child.
    let mut partial = multi
        .image_spec(Reference::parse("example.com/team/partial:1").unwrap())
        .unwrap();
    partial.children.retain(|c| c.digest == amd_digest);
    spec.images = vec![filtered, partial];
    let bundle = work.path().join("filtered.bundle.tar");
    write_bundle(&bundle, &spec, &locs);

    let r = BundleReader::open(&bundle).unwrap();
    let meta = r.meta.clone().unwrap();
    assert_eq!(meta.images[0].digest, amd_digest);
    assert_eq!(
        meta.images[0].source_index.as_ref().unwrap().to_string(),
        layout.index.digest
    );
    assert_eq!(
        meta.images[0].platform.as_ref().unwrap().to_string(),
        "linux/amd64"
    );
    assert_eq!(
        meta.images[1].omitted.len(),
        1,
        "arm64 child recorded as omitted"
    );
    assert_eq!(r.images.len(), 2);
    assert_eq!(r.images[1].children.len(), 1);
    verify(&r, &quiet()).unwrap();
    let images_tar = extract_images_tar(&bundle, work.path());
    let raw = skopeo(&[
        "inspect",
        "--raw",
        &format!("oci-archive:{}:{MULTI}", images_tar.display()),
    ])
    .stdout;
    assert_eq!(sha(&raw), layout.amd.digest);
}
