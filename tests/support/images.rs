//! Test images built from scratch: OCI image layouts on disk with the
//! layers, platforms and tags a test asks for (skopeo then pushes them to a
//! real registry). Layers are real gzip'd tars so every reader accepts them.
use std::io::Write;
use std::path::Path;

use sha2::{Digest as _, Sha256};

pub struct Blob {
    pub digest: String,
    pub bytes: Vec<u8>,
}

pub fn blob(bytes: Vec<u8>) -> Blob {
    Blob {
        digest: format!("sha256:{}", hex(&Sha256::digest(&bytes))),
        bytes,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A gzip'd tar layer holding one file `name` with `content`.
pub fn layer(name: &str, content: &[u8]) -> (Blob, String) {
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    tar.append_data(&mut h, name, content).unwrap();
    let raw = tar.into_inner().unwrap();
    let diff_id = format!("sha256:{}", hex(&Sha256::digest(&raw)));
    // Random test data does not compress: store it (level 0) to keep large
    // test images fast to build.
    let mut gz = flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::new(if content.len() > 1 << 20 { 0 } else { 6 }),
    );
    gz.write_all(&raw).unwrap();
    (blob(gz.finish().unwrap()), diff_id)
}

/// Deterministic pseudo-random bytes (xorshift), so tests can make unique
/// layers of any size quickly.
pub fn pseudo_random(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub struct Platform<'a> {
    pub os: &'a str,
    pub arch: &'a str,
}

pub const AMD64: Platform<'static> = Platform {
    os: "linux",
    arch: "amd64",
};
pub const ARM64: Platform<'static> = Platform {
    os: "linux",
    arch: "arm64",
};

/// One platform image: (manifest blob, all blobs incl. config and layers).
pub fn image(platform: &Platform, layers: &[(Blob, String)]) -> (Blob, Vec<Blob>) {
    let diff_ids: Vec<String> = layers.iter().map(|(_, d)| format!("\"{d}\"")).collect();
    let config = blob(
        format!(
            "{{\"architecture\":\"{}\",\"os\":\"{}\",\"config\":{{\"Env\":[\"PATH=/bin\"]}},\"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[{}]}}}}",
            platform.arch,
            platform.os,
            diff_ids.join(",")
        )
        .into_bytes(),
    );
    let layer_descs: Vec<String> = layers
        .iter()
        .map(|(b, _)| format!("{{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"{}\",\"size\":{}}}", b.digest, b.bytes.len()))
        .collect();
    let manifest = blob(
        format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"{}\",\"size\":{}}},\"layers\":[{}]}}",
            config.digest,
            config.bytes.len(),
            layer_descs.join(",")
        )
        .into_bytes(),
    );
    let mut blobs = vec![config];
    for (b, _) in layers {
        blobs.push(Blob {
            digest: b.digest.clone(),
            bytes: b.bytes.clone(),
        });
    }
    (manifest, blobs)
}

/// An index over platform manifests.
pub fn index(manifests: &[(&Platform, &Blob)]) -> Blob {
    let entries: Vec<String> = manifests
        .iter()
        .map(|(p, m)| {
            format!(
                "{{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"{}\",\"size\":{},\"platform\":{{\"architecture\":\"{}\",\"os\":\"{}\"}}}}",
                m.digest,
                m.bytes.len(),
                p.arch,
                p.os
            )
        })
        .collect();
    blob(format!("{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{}]}}", entries.join(",")).into_bytes())
}

/// Write an OCI layout at `dir` whose index.json has one entry per
/// (tag, root manifest/index blob, media type); `blobs` are all blobs.
pub fn write_layout(dir: &Path, roots: &[(&str, &Blob, &str)], blobs: &[&Blob]) {
    std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    std::fs::write(dir.join("oci-layout"), "{\"imageLayoutVersion\":\"1.0.0\"}").unwrap();
    for b in blobs
        .iter()
        .copied()
        .chain(roots.iter().map(|(_, b, _)| *b))
    {
        std::fs::write(
            dir.join("blobs/sha256")
                .join(b.digest.trim_start_matches("sha256:")),
            &b.bytes,
        )
        .unwrap();
    }
    let entries: Vec<String> = roots
        .iter()
        .map(|(tag, b, mt)| {
            format!("{{\"mediaType\":\"{mt}\",\"digest\":\"{}\",\"size\":{},\"annotations\":{{\"org.opencontainers.image.ref.name\":\"{tag}\"}}}}", b.digest, b.bytes.len())
        })
        .collect();
    std::fs::write(
        dir.join("index.json"),
        format!(
            "{{\"schemaVersion\":2,\"manifests\":[{}]}}",
            entries.join(",")
        ),
    )
    .unwrap();
}

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Build a single-platform image with the given layer contents, write it as
/// an OCI layout under `work/<name>` and push it to `reg` as `repo:tag`.
/// Returns the manifest digest.
pub fn push_simple(
    reg: &super::registry::Registry,
    work: &Path,
    repo_tag: &str,
    layer_contents: &[&[u8]],
) -> String {
    let layers: Vec<(Blob, String)> = layer_contents
        .iter()
        .enumerate()
        .map(|(i, c)| layer(&format!("file{i}"), c))
        .collect();
    let (manifest, blobs) = image(&AMD64, &layers);
    let dir = work.join(format!("layout-{}", repo_tag.replace(['/', ':'], "_")));
    write_layout(
        &dir,
        &[("t", &manifest, OCI_MANIFEST)],
        &blobs.iter().collect::<Vec<_>>(),
    );
    reg.skopeo_copy_in(&format!("oci:{}:t", dir.display()), repo_tag);
    manifest.digest
}

/// Build a two-platform (amd64, arm64) image sharing `shared` as first
/// layer, push it as `repo:tag`. Returns (index digest, amd64 manifest
/// digest, arm64 manifest digest).
pub fn push_multiarch(
    reg: &super::registry::Registry,
    work: &Path,
    repo_tag: &str,
    shared: &[u8],
) -> (String, String, String) {
    let base = layer("base", shared);
    let (m1, b1) = image(
        &AMD64,
        &[
            Blob {
                digest: base.0.digest.clone(),
                bytes: base.0.bytes.clone(),
            }
            .with(base.1.clone()),
            layer("amd", b"amd64 only"),
        ],
    );
    let (m2, b2) = image(
        &ARM64,
        &[
            Blob {
                digest: base.0.digest.clone(),
                bytes: base.0.bytes.clone(),
            }
            .with(base.1.clone()),
            layer("arm", b"arm64 only"),
        ],
    );
    let idx = index(&[(&AMD64, &m1), (&ARM64, &m2)]);
    let dir = work.join(format!("layout-{}", repo_tag.replace(['/', ':'], "_")));
    let mut all: Vec<&Blob> = b1.iter().chain(b2.iter()).collect();
    all.push(&m1);
    all.push(&m2);
    write_layout(&dir, &[("t", &idx, OCI_INDEX)], &all);
    reg.skopeo_copy_in(&format!("oci:{}:t", dir.display()), repo_tag);
    (idx.digest, m1.digest, m2.digest)
}

impl Blob {
    fn with(self, diff_id: String) -> (Blob, String) {
        (self, diff_id)
    }
}
