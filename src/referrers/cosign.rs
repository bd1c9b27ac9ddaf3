//! Offline, key-based cosign signature checks (`sync --require-signature
//! --key cosign.pub`), against the bundle's own copy of each signature.
//!
//! What is checked, as `cosign verify --key --insecure-ignore-tlog` does for
//! the `.sig` layout (and its OCI 1.1 referrer form): each layer of type
//! `application/vnd.dev.cosign.simplesigning.v1+json` is a payload; its
//! `dev.cosignproject.cosign/signature` annotation is a base64 ASN.1 DER
//! ECDSA P-256 / SHA-256 signature over the payload bytes; the payload's
//! `critical.image.docker-manifest-digest` must be the image's digest.
//! No network, no transparency log, no certificates: key-based only.
//!
//! Why `p256` (RustCrypto) and not the `sigstore` crate: `sigstore` 0.15's
//! cosign verification works on signature layers it pulls from a registry
//! itself (through `oci-client`), not on bytes read from a file, and its
//! `cosign` feature brings the `verify` one, hence the Fulcio and Rekor
//! clients, OpenID Connect, TUF and OpenSSL (or aws-lc) with them: well
//! over a hundred crates for one ECDSA check over bytes we already hold,
//! offline. `p256` is the maintained pure-Rust P-256 implementation (the
//! one `sigstore` itself uses for ECDSA), with PEM/SPKI key parsing, on the
//! `sha2` 0.10 this project already uses (about twenty small crates).
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use p256::pkcs8::DecodePublicKey;

use super::carried::{self, BundleReferrers};
use super::{Kind, COSIGN_SIGNATURE_ANNOTATION, SIMPLESIGNING_MEDIA_TYPE};
use crate::bundle::reader::BundleReader;
use crate::oci::Digest;

/// A cosign public key (`cosign.pub`: PEM `PUBLIC KEY`, ECDSA P-256).
#[derive(Clone, Debug)]
pub struct PublicKey {
    key: VerifyingKey,
    /// `sha256:<hex>` of the key's DER SubjectPublicKeyInfo (what
    /// `openssl pkey -pubin -outform DER | sha256sum` prints).
    pub fingerprint: String,
    pub path: PathBuf,
}

impl PublicKey {
    pub fn load(path: &Path) -> anyhow::Result<PublicKey> {
        let pem = std::fs::read_to_string(path).map_err(|e| {
            crate::error::input_error(format!(
                "--key {}: cannot read it ({e}); give the cosign public key (cosign.pub)",
                path.display()
            ))
        })?;
        Self::from_pem(&pem, path)
    }

    pub fn from_pem(pem: &str, path: &Path) -> anyhow::Result<PublicKey> {
        let key = VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| {
            crate::error::input_error(format!(
                "--key {}: not a PEM ECDSA P-256 public key ({e}); give the cosign.pub \
                 that `cosign generate-key-pair` wrote",
                path.display()
            ))
        })?;
        let body: String = pem
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .map(str::trim)
            .collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .with_context(|| format!("--key {}: PEM body is not base64", path.display()))?;
        Ok(PublicKey {
            key,
            fingerprint: Digest::of(&der).to_string(),
            path: path.to_path_buf(),
        })
    }

    /// Whether `signature` (base64 DER, or base64 raw r||s) signs `payload`.
    pub fn verifies(&self, payload: &[u8], signature_b64: &str) -> bool {
        let Ok(raw) = base64::engine::general_purpose::STANDARD.decode(signature_b64.trim()) else {
            return false;
        };
        let sig = Signature::from_der(&raw).or_else(|_| Signature::from_slice(&raw));
        match sig {
            Ok(s) => self.key.verify(payload, &s).is_ok(),
            Err(_) => false,
        }
    }
}

/// The digest a simple-signing payload signs
/// (`critical.image.docker-manifest-digest`), when it is one.
pub fn payload_subject(payload: &[u8]) -> Option<Digest> {
    let v: serde_json::Value = serde_json::from_slice(payload).ok()?;
    v.pointer("/critical/image/docker-manifest-digest")?
        .as_str()?
        .parse()
        .ok()
}

/// Why an image has no valid signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unsigned {
    /// No signature refers to it.
    NoSignature,
    /// Signatures exist, none by this key (how many were tried).
    OtherKey(usize),
    /// A signature by this key signs another digest.
    WrongSubject(Digest),
}

impl std::fmt::Display for Unsigned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unsigned::NoSignature => f.write_str("no cosign signature in the bundle"),
            Unsigned::OtherKey(n) => write!(
                f,
                "{n} signature{} in the bundle, none valid for this key",
                if *n == 1 { "" } else { "s" }
            ),
            Unsigned::WrongSubject(d) => {
                write!(f, "signed by this key, but the payload names {d}")
            }
        }
    }
}

/// Check the signatures the bundle carries for `subject` (the digest
/// that is pushed): `Ok` when one verifies with `key` and signs `subject`.
/// Both of cosign's forms are read: the `.sig` layout (simple-signing
/// payload, signature in the layer annotation) and a Sigstore bundle
/// (v0.3, a DSSE envelope of an in-toto statement whose subject is the
/// image; the signature is over the DSSE pre-authentication encoding).
pub fn check_signed(
    reader: &BundleReader,
    referrers: &BundleReferrers,
    subject: &Digest,
    key: &PublicKey,
) -> anyhow::Result<Result<(), Unsigned>> {
    let mut tried = 0usize;
    let mut wrong: Option<Digest> = None;
    for rec in referrers.of(subject).filter(|r| r.kind == Kind::Signature) {
        let view = carried::view(reader, rec)?;
        for layer in &view.layers {
            let read = || {
                reader.read_blob(&layer.digest).with_context(|| {
                    format!(
                        "bundle {}: signature {} layer {}",
                        reader.label, rec.digest, layer.digest
                    )
                })
            };
            let signed = if let Some(sig) = layer
                .annotations
                .as_ref()
                .and_then(|a| a.get(COSIGN_SIGNATURE_ANNOTATION))
                .filter(|_| layer.media_type == SIMPLESIGNING_MEDIA_TYPE)
            {
                tried += 1;
                let payload = read()?;
                key.verifies(&payload, sig)
                    .then(|| payload_subject(&payload))
                    .flatten()
            } else if layer.media_type.contains("sigstore.bundle") {
                tried += 1;
                dsse_subject(&read()?, key)
            } else {
                None
            };
            match signed {
                Some(d) if &d == subject => return Ok(Ok(())),
                Some(d) => wrong = Some(d),
                None => {}
            }
        }
    }
    Ok(Err(match (wrong, tried) {
        (Some(d), _) => Unsigned::WrongSubject(d),
        (None, 0) => Unsigned::NoSignature,
        (None, n) => Unsigned::OtherKey(n),
    }))
}

/// A Sigstore bundle whose DSSE envelope verifies with `key`: the image
/// digest its in-toto statement names.
fn dsse_subject(bundle: &[u8], key: &PublicKey) -> Option<Digest> {
    let v: serde_json::Value = serde_json::from_slice(bundle).ok()?;
    let env = v.get("dsseEnvelope")?;
    let payload_type = env.get("payloadType")?.as_str()?;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(env.get("payload")?.as_str()?)
        .ok()?;
    let pae = [
        format!(
            "DSSEv1 {} {payload_type} {} ",
            payload_type.len(),
            payload.len()
        )
        .into_bytes(),
        payload.clone(),
    ]
    .concat();
    let ok = env
        .get("signatures")?
        .as_array()?
        .iter()
        .filter_map(|s| s.get("sig")?.as_str())
        .any(|sig| key.verifies(&pae, sig));
    if !ok {
        return None;
    }
    let st: serde_json::Value = serde_json::from_slice(&payload).ok()?;
    let hex = st.pointer("/subject/0/digest/sha256")?.as_str()?;
    Digest::from_hex(hex).ok()
}

/// One image `--require-signature` checks: its reference, the digest that
/// is pushed, the index it was picked from (`sync --platform`), its bundle.
pub struct Gated<'a> {
    pub reference: String,
    pub digest: Digest,
    pub picked_from: Option<Digest>,
    pub reader: &'a BundleReader,
    pub referrers: &'a BundleReferrers,
}

/// `--require-signature`: every image has a valid signature by `key` over
/// the digest that is pushed (what the site's admission policy checks), or
/// the run stops naming each image that has none. Nothing is pushed yet.
pub fn require(images: &[Gated<'_>], key: &PublicKey) -> anyhow::Result<()> {
    let mut failures = Vec::new();
    for g in images {
        if let Err(why) = check_signed(g.reader, g.referrers, &g.digest, key)? {
            let mut line = format!("  - {} ({}): {why}", g.reference, g.digest);
            if let Some(index) = &g.picked_from {
                if check_signed(g.reader, g.referrers, index, key)?.is_ok() {
                    line.push_str(&format!(
                        " (its index {index} is signed, but --platform pushes this platform's \
                         manifest alone: drop --platform to push the signed index)"
                    ));
                }
            }
            failures.push(line);
        }
    }
    if failures.is_empty() {
        return Ok(());
    }
    Err(crate::error::input_error(format!(
        "--require-signature: {} image{} without a valid cosign signature for key {} ({}); \
         nothing was pushed:\n{}",
        failures.len(),
        if failures.len() == 1 { "" } else { "s" },
        key.path.display(),
        key.fingerprint,
        failures.join("\n")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_subject_reads_the_signed_digest() {
        let d = Digest::of(b"x");
        let p = format!(
            r#"{{"critical":{{"identity":{{"docker-reference":"r"}},"image":{{"docker-manifest-digest":"{d}"}},"type":"cosign container image signature"}},"optional":null}}"#
        );
        assert_eq!(payload_subject(p.as_bytes()), Some(d));
        assert_eq!(payload_subject(b"{}"), None);
    }

    #[test]
    fn a_key_that_is_not_p256_pem_is_refused_clearly() {
        let e = PublicKey::from_pem("not a key", Path::new("k.pub")).unwrap_err();
        assert!(format!("{e:#}").contains("k.pub"), "{e:#}");
    }
}
