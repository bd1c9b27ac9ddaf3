//! Helpers shared by the reliability suite (`tests/reliability*.rs`, issue
//! 6): test products packed offline from OCI layouts, sync configs, a
//! small registry API client that audits a target registry (catalog, tags,
//! manifests, every referenced blob hashed), and hand-rolled tar rewriting
//! to damage bundles.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest as _, Sha256};

use crate::support::images::{self, Blob};
use crate::support::registry::Registry;
use crate::support::{bundler_bin, stderr, stdout};

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

pub fn digest_of(b: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(b))
}

/// One image of a test product.
#[derive(Clone, Debug)]
pub struct TestImage {
    /// Full original reference, e.g. `example.com/rel/app0:1.0`.
    pub reference: String,
    /// `example.com/rel/app0` (repository with its registry).
    pub path: String,
    pub tag: String,
    /// Manifest digest.
    pub digest: String,
}

/// An image-only product: `n_images` single-platform images of `layers`
/// layers of `layer_size` random bytes each (every layer unique, plus one
/// small layer shared by all images), written as one OCI layout directory
/// with a bundle manifest that packs it offline.
pub struct Product {
    pub dir: PathBuf,
    pub layout: PathBuf,
    pub manifest: PathBuf,
    pub images: Vec<TestImage>,
    /// name_version of the image-only bundle.
    pub bundle_name: String,
}

pub fn make_product(
    dir: &Path,
    name: &str,
    n_images: usize,
    layers: usize,
    layer_size: usize,
    seed: u64,
) -> Product {
    make_product_with_refs(dir, name, n_images, layers, layer_size, seed, "example.com")
}

pub fn make_product_with_refs(
    dir: &Path,
    name: &str,
    n_images: usize,
    layers: usize,
    layer_size: usize,
    seed: u64,
    registry: &str,
) -> Product {
    let layout = dir.join(format!("{name}-layout"));
    let shared = images::layer("shared", format!("shared base {seed}").as_bytes());
    let mut all: Vec<Blob> = Vec::new();
    let mut roots: Vec<(String, Blob)> = Vec::new();
    let mut out = Vec::new();
    for i in 0..n_images {
        let mut ls = vec![(
            Blob {
                digest: shared.0.digest.clone(),
                bytes: shared.0.bytes.clone(),
            },
            shared.1.clone(),
        )];
        for l in 0..layers {
            let content =
                images::pseudo_random(seed * 1_000_003 + (i * 131 + l) as u64 + 1, layer_size);
            ls.push(images::layer(&format!("f{i}_{l}"), &content));
        }
        let (manifest, blobs) = images::image(&images::AMD64, &ls);
        let path = format!("{registry}/{name}/app{i}");
        let reference = format!("{path}:1.{i}");
        out.push(TestImage {
            reference: reference.clone(),
            path,
            tag: format!("1.{i}"),
            digest: manifest.digest.clone(),
        });
        all.extend(blobs);
        roots.push((reference, manifest));
    }
    let mut seen = BTreeSet::new();
    all.retain(|b| seen.insert(b.digest.clone()));
    let root_refs: Vec<(&str, &Blob, &str)> = roots
        .iter()
        .map(|(r, b)| (r.as_str(), b, images::OCI_MANIFEST))
        .collect();
    images::write_layout(&layout, &root_refs, &all.iter().collect::<Vec<_>>());
    let manifest = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &manifest,
        format!(
            "apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {{name: {name}, version: 1.0.0}}\nspec:\n  images:\n    - archive: {}\n",
            layout.display()
        ),
    )
    .unwrap();
    Product {
        dir: dir.to_path_buf(),
        layout,
        manifest,
        images: out,
        bundle_name: format!("{name}-images_1.0.0.bundle.tar"),
    }
}

/// A bundle manifest whose images come from a registry (`refs`).
pub fn registry_manifest(dir: &Path, name: &str, refs: &[String]) -> PathBuf {
    let p = dir.join(format!("{name}.yaml"));
    let mut s = format!(
        "apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {{name: {name}, version: 1.0.0}}\nspec:\n  images:\n"
    );
    for r in refs {
        s.push_str(&format!("    - {r}\n"));
    }
    std::fs::write(&p, s).unwrap();
    p
}

/// Run bundler with args and extra env in `dir`.
pub fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(bundler_bin());
    c.current_dir(dir).args(args);
    // Chunked-upload state stays inside the test's directory.
    c.env("BUNDLER_STATE_DIR", dir.join(".upload-state"));
    c.env_remove("BUNDLER_LOG");
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().expect("run bundler")
}

/// `bundler pack MANIFEST -o OUT`; panics on failure.
pub fn pack_ok(dir: &Path, manifest: &Path, out: &Path) -> PathBuf {
    let o = run(
        dir,
        &[
            "pack",
            manifest.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ],
        &[],
    );
    assert!(o.status.success(), "pack: {}\n{}", stderr(&o), stdout(&o));
    out.to_path_buf()
}

/// A load-image.yaml pushing images under `containerPrefixRegistry: prefix`
/// (no auth unless given) and charts to a LOCAL repo.
pub fn sync_config(dir: &Path, source: &Path, prefix: &str, auth: Option<(&str, &str)>) -> PathBuf {
    let cfg = dir.join("load-image.yaml");
    let mut s = format!(
        "source:\n  intermediateBundlesPath: {}\ntarget:\n  containerPrefixRegistry: {prefix}\n  repo:\n    kind: LOCAL\n    path: ./local-repo\n",
        source.display()
    );
    if let Some((u, p)) = auth {
        s.push_str(&format!(
            "  containers:\n    auth:\n      username: \"{u}\"\n      password: \"{p}\"\n"
        ));
    }
    std::fs::write(&cfg, s).unwrap();
    cfg
}

// ---- a small registry API client for auditing the target ----

pub struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
    auth: Option<(String, String)>,
}

pub const ACCEPT_ALL: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";

pub struct Resp {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Http {
    /// A client for `reg` (talks to it directly, never through a proxy).
    pub fn new(reg: &Registry) -> Http {
        let mut b = reqwest::Client::builder();
        if let Some(ca) = &reg.ca_file {
            let pem = std::fs::read(ca).unwrap();
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        Http {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            client: b.build().unwrap(),
            base: reg.url(),
            auth: reg.has_auth().then(|| {
                (
                    crate::support::registry::USER.to_string(),
                    crate::support::registry::PASSWORD.to_string(),
                )
            }),
        }
    }

    pub fn get(&self, path: &str, accept: Option<&str>) -> Resp {
        self.rt.block_on(async {
            let mut rb = self.client.get(format!("{}{path}", self.base));
            if let Some(a) = accept {
                rb = rb.header("accept", a);
            }
            if let Some((u, p)) = &self.auth {
                rb = rb.basic_auth(u, Some(p));
            }
            let r = rb.send().await.expect("registry request");
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            let body = r.bytes().await.expect("registry body").to_vec();
            Resp {
                status,
                headers,
                body,
            }
        })
    }

    pub fn json(&self, path: &str) -> serde_json::Value {
        let r = self.get(path, None);
        assert_eq!(
            r.status,
            200,
            "GET {path}: {}",
            String::from_utf8_lossy(&r.body)
        );
        serde_json::from_slice(&r.body).unwrap()
    }

    /// Every repository of the registry.
    pub fn catalog(&self) -> Vec<String> {
        let v = self.json("/v2/_catalog?n=1000");
        v["repositories"]
            .as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }

    pub fn tags(&self, repo: &str) -> Vec<String> {
        let r = self.get(&format!("/v2/{repo}/tags/list"), None);
        if r.status == 404 {
            return Vec::new();
        }
        assert_eq!(r.status, 200, "tags of {repo}");
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        v["tags"]
            .as_array()
            .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
            .unwrap_or_default()
    }

    /// The raw manifest of `repo:reference` (tag or digest); None on 404.
    pub fn manifest(&self, repo: &str, reference: &str) -> Option<Vec<u8>> {
        let r = self.get(
            &format!("/v2/{repo}/manifests/{reference}"),
            Some(ACCEPT_ALL),
        );
        match r.status {
            200 => Some(r.body),
            404 => None,
            s => panic!("GET manifest {repo}:{reference}: {s}"),
        }
    }

    /// Audit the whole registry: for every repository and tag, the manifest
    /// (and each child of an index) can be read, and every blob it
    /// references can be read whole with the right sha256. Returns
    /// `repo:tag -> digest` of every tag. Panics naming what is broken.
    pub fn audit(&self) -> BTreeMap<String, String> {
        let mut tags_out = BTreeMap::new();
        let mut checked: BTreeSet<(String, String)> = BTreeSet::new();
        for repo in self.catalog() {
            for tag in self.tags(&repo) {
                // Right after a client is killed, the registry may still be
                // finishing that client's last request: distribution creates
                // a tag's directory (listed) just before its `current` link.
                // Such a tag settles within moments; one that stays without
                // a manifest is a failure.
                let mut raw = self.manifest(&repo, &tag);
                for _ in 0..20 {
                    if raw.is_some() {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(100));
                    raw = self.manifest(&repo, &tag);
                }
                let raw = raw
                    .unwrap_or_else(|| panic!("{repo}:{tag} is listed but its manifest is gone"));
                let d = digest_of(&raw);
                self.audit_manifest(&repo, &raw, &mut checked);
                tags_out.insert(format!("{repo}:{tag}"), d);
            }
        }
        tags_out
    }

    fn audit_manifest(&self, repo: &str, raw: &[u8], checked: &mut BTreeSet<(String, String)>) {
        let v: serde_json::Value = serde_json::from_slice(raw).unwrap();
        if let Some(children) = v["manifests"].as_array() {
            for c in children {
                let d = c["digest"].as_str().unwrap();
                let child = self
                    .manifest(repo, d)
                    .unwrap_or_else(|| panic!("{repo}: index child {d} is missing"));
                assert_eq!(digest_of(&child), d, "{repo}: child manifest {d} damaged");
                self.audit_manifest(repo, &child, checked);
            }
            return;
        }
        let mut blobs = vec![v["config"]["digest"].as_str().unwrap().to_string()];
        for l in v["layers"].as_array().unwrap() {
            blobs.push(l["digest"].as_str().unwrap().to_string());
        }
        for b in blobs {
            if !checked.insert((repo.to_string(), b.clone())) {
                continue;
            }
            let r = self.get(&format!("/v2/{repo}/blobs/{b}"), None);
            assert_eq!(
                r.status, 200,
                "{repo}: blob {b} referenced by a manifest is not readable"
            );
            assert_eq!(digest_of(&r.body), b, "{repo}: blob {b} has wrong content");
        }
    }
}

/// The target repository path of a product image synced with
/// `containerPrefixRegistry` (`oR/oP`, `:` in a host becomes `_`).
pub fn target_repo(img: &TestImage) -> String {
    img.path.replacen(':', "_", 1)
}

/// Assert every image of `product` is in the registry under its rewritten
/// name with its original digest, and the registry is consistent.
pub fn assert_synced(http: &Http, imgs: &[TestImage]) {
    let tags = http.audit();
    for i in imgs {
        let key = format!("{}:{}", target_repo(i), i.tag);
        assert_eq!(
            tags.get(&key),
            Some(&i.digest),
            "{key} missing or wrong digest; registry has {tags:?}"
        );
    }
}

// ---- tar surgery for damaged bundles ----

/// (name, data) of a tar's regular entries, in order (directories kept as
/// names ending in `/` with no data).
pub fn read_tar(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut ar = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).unwrap();
        let name = if e.header().entry_type().is_dir() && !name.ends_with('/') {
            format!("{name}/")
        } else {
            name
        };
        out.push((name, data));
    }
    out
}

pub fn write_tar(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_mtime(0);
        if name.ends_with('/') {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            h.set_mode(0o755);
            b.append_data(&mut h, name, &[][..]).unwrap();
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
    }
    b.into_inner().unwrap()
}

/// Rewrite a bundle: `f` edits the outer entries and the nested
/// `images.tar` entries; bundle.json's checksums of the files `f` changed
/// are updated when `fix_checksums` (so the reader meets the damage itself,
/// not a checksum mismatch first).
pub fn rewrite_bundle(
    src: &Path,
    dst: &Path,
    fix_checksums: bool,
    f: impl FnOnce(&mut Vec<(String, Vec<u8>)>, &mut Vec<(String, Vec<u8>)>),
) {
    let mut outer = read_tar(&std::fs::read(src).unwrap());
    let pos = outer.iter().position(|(n, _)| n == "images.tar").unwrap();
    let mut inner = read_tar(&outer[pos].1);
    f(&mut outer, &mut inner);
    if fix_checksums {
        if let Some(bj) = outer.iter().position(|(n, _)| n == "bundle.json") {
            if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&outer[bj].1) {
                if let Some(files) = v["files"].as_object_mut() {
                    for (name, d) in files.iter_mut() {
                        let data = match name.strip_prefix("images.tar/") {
                            Some(n) => inner.iter().find(|(x, _)| x == n),
                            None => outer.iter().find(|(x, _)| x == name),
                        };
                        if let Some((_, data)) = data {
                            *d = serde_json::Value::String(digest_of(data));
                        }
                    }
                }
                outer[bj].1 = serde_json::to_vec_pretty(&v).unwrap();
            }
        }
    }
    if let Some(p) = outer.iter().position(|(n, _)| n == "images.tar") {
        outer[p].1 = write_tar(&inner);
    }
    std::fs::write(dst, write_tar(&outer)).unwrap();
}

/// Offset and size of entry `inner` of the nested images.tar in a bundle.
pub fn inner_extent(bundle: &Path, inner: &str) -> (u64, u64) {
    let f = std::fs::File::open(bundle).unwrap();
    let mut ar = tar::Archive::new(&f);
    for e in ar.entries_with_seek().unwrap() {
        let e = e.unwrap();
        if e.path().unwrap().to_str() == Some("images.tar") {
            let base = e.raw_file_position();
            let data = {
                let mut buf = vec![0u8; e.size() as usize];
                use std::os::unix::fs::FileExt;
                f.read_exact_at(&mut buf, base).unwrap();
                buf
            };
            let mut ia = tar::Archive::new(&data[..]);
            for ie in ia.entries().unwrap() {
                let ie = ie.unwrap();
                if ie.path().unwrap().to_str() == Some(inner) {
                    return (base + ie.raw_file_position(), ie.size());
                }
            }
        }
    }
    panic!("{inner} not in {}", bundle.display())
}

/// Assert nothing at all was pushed to `reg`.
pub fn assert_registry_empty(http: &Http, what: &str) {
    let c = http.catalog();
    assert!(c.is_empty(), "{what}: something was pushed: {c:?}");
}

/// Assert no image is visible in `reg`: no repository has a tag. Blobs
/// without a manifest may be there (a run that found a damaged blob while
/// streaming it had uploaded others); registry garbage collection takes them.
pub fn assert_nothing_visible(http: &Http, what: &str) {
    for repo in http.catalog() {
        let tags = http.tags(&repo);
        assert!(tags.is_empty(), "{what}: {repo} has tags {tags:?}");
    }
}

/// The largest layer blob of a product image in the layout (to damage).
pub fn largest_layer(p: &Product) -> String {
    let mut best = (0u64, String::new());
    for e in std::fs::read_dir(p.layout.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let len = e.metadata().unwrap().len();
        if len > best.0 {
            best = (len, e.file_name().to_string_lossy().into_owned());
        }
    }
    format!("sha256:{}", best.1)
}

/// Like [`make_product`], but the images belong to a chart `name` 1.0.0
/// (values naming `example.com/<name>/app0:1.0`, relok8s hints), packed
/// into `<name>_1.0.0.bundle.tar`.
pub fn make_chart_product(
    dir: &Path,
    name: &str,
    n_images: usize,
    layers: usize,
    layer_size: usize,
    seed: u64,
) -> Product {
    let mut p = make_product(dir, name, n_images, layers, layer_size, seed);
    let c = dir.join(format!("{name}-chart"));
    std::fs::create_dir_all(c.join("templates")).unwrap();
    std::fs::write(
        c.join("Chart.yaml"),
        format!("apiVersion: v2\nname: {name}\nversion: 1.0.0\n"),
    )
    .unwrap();
    std::fs::write(
        c.join("values.yaml"),
        format!("# values\nimage:\n  registry: example.com\n  repository: {name}/app0\n  tag: \"1.0\"\n"),
    )
    .unwrap();
    std::fs::write(
        c.join("templates/deploy.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\nspec:\n  template:\n    spec:\n      containers:\n        - name: app\n          image: {{ .Values.image.registry }}/{{ .Values.image.repository }}:{{ .Values.image.tag }}\n",
    )
    .unwrap();
    let hints = dir.join(format!("{name}-hints.yaml"));
    std::fs::write(
        &hints,
        "- \"{{ .image.registry }}/{{ .image.repository }}:{{ .image.tag }}\"\n",
    )
    .unwrap();
    std::fs::write(
        &p.manifest,
        format!(
            "apiVersion: bundler/v1\nkind: BundleManifest\nmetadata: {{name: {name}, version: 1.0.0}}\nspec:\n  charts:\n    - name: {name}\n      version: 1.0.0\n      path: {}\n      hints: {}\n      images:\n        - archive: {}\n",
            c.display(),
            hints.display(),
            p.layout.display()
        ),
    )
    .unwrap();
    p.bundle_name = format!("{name}_1.0.0.bundle.tar");
    p
}

/// Every path under `dir` (recursive, relative), sorted.
pub fn tree(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).into_iter().flatten() {
            let e = e.unwrap();
            let p = e.path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
