//! Signing `package.json` (which pins every member by sha256, so it pins
//! the whole package) with keys in the formats users already have, and
//! checking the signature offline.
//!
//! - PEM ECDSA P-256 keys as `openssl` makes them (`PRIVATE KEY`, PKCS#8,
//!   from `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`;
//!   `EC PRIVATE KEY`, SEC1, from `openssl ecparam -genkey`): the signature
//!   is ECDSA over SHA-256 of `package.json`, DER-encoded.
//! - PEM Ed25519 keys (`openssl genpkey -algorithm ed25519`): a plain
//!   64-byte Ed25519 signature of `package.json`.
//! - cosign key pairs: `cosign.key` (`ENCRYPTED SIGSTORE|COSIGN PRIVATE
//!   KEY`: a JSON envelope of scrypt parameters and a NaCl secretbox around
//!   a PKCS#8 P-256 key), its password from the environment
//!   ([`PASSWORD_ENVS`]), never from the command line; `cosign.pub` is a
//!   PEM public key like openssl's.
//!
//! Every signature verifies with `openssl pkeyutl -verify` (README: "The
//! offline package"), so a site can check a package without bundler.
//!
//! The `sigstore` crate reads cosign keys too, but it brings a second HTTP,
//! TUF and OIDC stack for what is two primitives here (scrypt and
//! secretbox), so the envelope is read with the small RustCrypto crates.
use anyhow::{bail, Context};
use base64::Engine as _;
use serde::Deserialize;

/// Where the password of an encrypted key comes from, first set wins
/// (`COSIGN_PASSWORD` is what cosign itself reads).
pub const PASSWORD_ENVS: [&str; 2] = ["BUNDLER_SIGN_KEY_PASSWORD", "COSIGN_PASSWORD"];
/// Largest key file read.
const MAX_KEY_FILE: u64 = 64 << 10;
/// Largest scrypt cost accepted from a key file (cosign writes 2^15;
/// 2^16 needs 64 MiB, a hostile 2^30 would need a terabyte).
const MAX_SCRYPT_LOG_N: u32 = 16;

/// A private key that signs packages.
pub enum SigningKey {
    P256(p256::ecdsa::SigningKey),
    Ed25519(ed25519_dalek::SigningKey),
}

/// A public key that checks package signatures.
#[derive(Clone, Debug)]
pub enum VerifyKey {
    P256(p256::ecdsa::VerifyingKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

impl SigningKey {
    /// Sign `msg` (the bytes of `package.json`).
    pub fn sign(&self, msg: &[u8]) -> Vec<u8> {
        match self {
            SigningKey::P256(k) => {
                use p256::ecdsa::signature::Signer;
                let sig: p256::ecdsa::Signature = k.sign(msg);
                sig.to_der().as_bytes().to_vec()
            }
            SigningKey::Ed25519(k) => {
                use ed25519_dalek::Signer;
                k.sign(msg).to_bytes().to_vec()
            }
        }
    }

    pub fn verify_key(&self) -> VerifyKey {
        match self {
            SigningKey::P256(k) => VerifyKey::P256(*k.verifying_key()),
            SigningKey::Ed25519(k) => VerifyKey::Ed25519(k.verifying_key()),
        }
    }
}

impl VerifyKey {
    /// Check `sig` over `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> anyhow::Result<()> {
        match self {
            VerifyKey::P256(k) => {
                use p256::ecdsa::signature::Verifier;
                let sig = p256::ecdsa::Signature::from_der(sig)
                    .context("the signature is not an ECDSA P-256 signature (DER)")?;
                k.verify(msg, &sig)
                    .map_err(|_| anyhow::anyhow!("the signature does not match"))
            }
            VerifyKey::Ed25519(k) => {
                let sig = ed25519_dalek::Signature::from_slice(sig)
                    .map_err(|_| anyhow::anyhow!("the signature is not an Ed25519 signature"))?;
                k.verify_strict(msg, &sig)
                    .map_err(|_| anyhow::anyhow!("the signature does not match"))
            }
        }
    }

    /// `ecdsa-p256` or `ed25519`.
    pub fn kind(&self) -> &'static str {
        match self {
            VerifyKey::P256(_) => "ecdsa-p256",
            VerifyKey::Ed25519(_) => "ed25519",
        }
    }

    /// SPKI DER of the key (what `openssl pkey -pubout -outform DER` prints).
    pub fn spki_der(&self) -> anyhow::Result<Vec<u8>> {
        use p256::pkcs8::EncodePublicKey;
        Ok(match self {
            VerifyKey::P256(k) => k.to_public_key_der()?.into_vec(),
            VerifyKey::Ed25519(k) => k.to_public_key_der()?.into_vec(),
        })
    }

    /// PEM `PUBLIC KEY` (for `openssl pkeyutl -verify -pubin -inkey`).
    pub fn to_pem(&self) -> anyhow::Result<String> {
        use p256::pkcs8::EncodePublicKey;
        let le = p256::pkcs8::LineEnding::LF;
        Ok(match self {
            VerifyKey::P256(k) => k.to_public_key_pem(le)?,
            VerifyKey::Ed25519(k) => k.to_public_key_pem(le)?,
        })
    }

    /// `sha256:` of the SPKI DER, first 16 hex digits: names the key in
    /// messages without printing it.
    pub fn fingerprint(&self) -> String {
        let der = self.spki_der().unwrap_or_default();
        let d = crate::oci::Digest::of(&der);
        format!("sha256:{}", &d.hex()[..16])
    }
}

fn read_key_file(path: &std::path::Path, what: &str) -> anyhow::Result<(String, Vec<u8>)> {
    let meta = std::fs::metadata(path)
        .with_context(|| format!("{what} {}: cannot read it", path.display()))?;
    crate::file_kind::require_file(path, &meta, what, false)?;
    if meta.len() > MAX_KEY_FILE {
        bail!(
            "{what} {}: {} bytes is not a key file (PEM keys are a few hundred bytes)",
            path.display(),
            meta.len()
        );
    }
    let raw = std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))?;
    let text = std::str::from_utf8(&raw)
        .ok()
        .filter(|t| t.contains("-----BEGIN "))
        .with_context(|| {
            format!(
                "{what} {}: not a PEM file (expected -----BEGIN ... KEY-----): give a PEM key as openssl or cosign write it",
                path.display()
            )
        })?;
    // Only the first PEM block: a file with a key and a certificate, say.
    let start = text.find("-----BEGIN ").unwrap_or(0);
    let (label, der) = p256::pkcs8::der::pem::decode_vec(&text.as_bytes()[start..])
        .map_err(|e| anyhow::anyhow!("{what} {}: malformed PEM: {e}", path.display()))?;
    Ok((label.to_string(), der))
}

/// Read a private key (`pack --sign-key`).
pub fn load_signing_key(path: &std::path::Path) -> anyhow::Result<SigningKey> {
    let shown = path.display();
    let (label, der) = read_key_file(path, "--sign-key")?;
    match label.as_str() {
        "PRIVATE KEY" => from_pkcs8(&der).with_context(|| format!("--sign-key {shown}")),
        "EC PRIVATE KEY" => {
            let sk = p256::SecretKey::from_sec1_der(&der).map_err(|_| {
                anyhow::anyhow!(
                    "--sign-key {shown}: an EC key on another curve than P-256: use a P-256 (prime256v1) or Ed25519 key"
                )
            })?;
            Ok(SigningKey::P256(sk.into()))
        }
        "ENCRYPTED SIGSTORE PRIVATE KEY" | "ENCRYPTED COSIGN PRIVATE KEY" => {
            let (password, var) = password_from_env().with_context(|| {
                format!("--sign-key {shown} is an encrypted cosign key")
            })?;
            let pkcs8 = decrypt_cosign(&der, password.as_bytes())
                .with_context(|| format!("--sign-key {shown} (password from ${var})"))?;
            from_pkcs8(&pkcs8).with_context(|| format!("--sign-key {shown}"))
        }
        "ENCRYPTED PRIVATE KEY" => bail!(
            "--sign-key {shown}: an encrypted PKCS#8 key is not read by bundler; \
             decrypt it (`openssl pkey -in KEY -out plain.pem`, kept on the signing host) or use a cosign key pair"
        ),
        "PUBLIC KEY" => bail!(
            "--sign-key {shown} is a public key: signing needs the private key (give the public key to verify --key)"
        ),
        other => bail!(
            "--sign-key {shown}: a PEM {other:?} is not a supported key: use PEM ECDSA P-256 or Ed25519 (openssl) or a cosign key pair"
        ),
    }
}

/// Read a public key (`verify --key`, `sync --key`, `source.signatureKey`):
/// a PEM public key, or a private key (its public half is used).
pub fn load_verify_key(path: &std::path::Path, what: &str) -> anyhow::Result<VerifyKey> {
    let shown = path.display();
    let (label, der) = read_key_file(path, what)?;
    if label != "PUBLIC KEY" {
        if label.contains("ENCRYPTED") {
            bail!("{what} {shown} is an encrypted private key: give the public key (cosign.pub, or `openssl pkey -pubout`)");
        }
        return load_signing_key(path).map(|k| k.verify_key());
    }
    use p256::pkcs8::DecodePublicKey;
    if let Ok(k) = p256::PublicKey::from_public_key_der(&der) {
        return Ok(VerifyKey::P256(k.into()));
    }
    if let Ok(k) = ed25519_dalek::VerifyingKey::from_public_key_der(&der) {
        return Ok(VerifyKey::Ed25519(k));
    }
    bail!("{what} {shown}: neither an ECDSA P-256 nor an Ed25519 public key (RSA and other curves are not supported)")
}

fn from_pkcs8(der: &[u8]) -> anyhow::Result<SigningKey> {
    use p256::pkcs8::DecodePrivateKey;
    if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_der(der) {
        return Ok(SigningKey::P256(k));
    }
    if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_der(der) {
        return Ok(SigningKey::Ed25519(k));
    }
    bail!("neither an ECDSA P-256 nor an Ed25519 private key (RSA and other curves are not supported)")
}

/// The password of an encrypted key and the variable it came from.
fn password_from_env() -> anyhow::Result<(String, &'static str)> {
    for var in PASSWORD_ENVS {
        if let Ok(v) = std::env::var(var) {
            return Ok((v, var));
        }
    }
    bail!(
        "set its password in the environment ({}); bundler never takes a password on the command line",
        PASSWORD_ENVS.join(" or ")
    )
}

#[derive(Deserialize)]
struct CosignEnvelope {
    kdf: CosignKdf,
    cipher: CosignCipher,
    ciphertext: String,
}

#[derive(Deserialize)]
struct CosignKdf {
    name: String,
    params: ScryptParams,
    salt: String,
}

#[derive(Deserialize)]
#[allow(non_snake_case)]
struct ScryptParams {
    N: u64,
    r: u32,
    p: u32,
}

#[derive(Deserialize)]
struct CosignCipher {
    name: String,
    nonce: String,
}

/// Open cosign's envelope: scrypt(password, salt) is the secretbox key.
fn decrypt_cosign(envelope: &[u8], password: &[u8]) -> anyhow::Result<Vec<u8>> {
    use crypto_secretbox::aead::{Aead, KeyInit};
    let env: CosignEnvelope =
        serde_json::from_slice(envelope).context("not a cosign key envelope (JSON)")?;
    if env.kdf.name != "scrypt" || env.cipher.name != "nacl/secretbox" {
        bail!(
            "unsupported cosign key encryption {}/{} (expected scrypt/nacl/secretbox)",
            env.kdf.name,
            env.cipher.name
        );
    }
    let n = env.kdf.params.N;
    if !n.is_power_of_two() || n < 2 || n.trailing_zeros() > MAX_SCRYPT_LOG_N {
        bail!("scrypt N={n} refused (a power of two up to 2^{MAX_SCRYPT_LOG_N})");
    }
    if env.kdf.params.r == 0
        || env.kdf.params.r > 32
        || env.kdf.params.p == 0
        || env.kdf.params.p > 16
    {
        bail!(
            "scrypt r={} p={} refused",
            env.kdf.params.r,
            env.kdf.params.p
        );
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let salt = b64.decode(&env.kdf.salt).context("salt is not base64")?;
    let nonce = b64
        .decode(&env.cipher.nonce)
        .context("nonce is not base64")?;
    let ciphertext = b64
        .decode(&env.ciphertext)
        .context("ciphertext is not base64")?;
    if nonce.len() != 24 {
        bail!("secretbox nonce of {} bytes (expected 24)", nonce.len());
    }
    let params = scrypt::Params::new(
        n.trailing_zeros() as u8,
        env.kdf.params.r,
        env.kdf.params.p,
        32,
    )
    .map_err(|e| anyhow::anyhow!("scrypt parameters: {e}"))?;
    let mut key = [0u8; 32];
    scrypt::scrypt(password, &salt, &params, &mut key)
        .map_err(|e| anyhow::anyhow!("scrypt: {e}"))?;
    let cipher = crypto_secretbox::XSalsa20Poly1305::new((&key).into());
    cipher
        .decrypt(nonce.as_slice().into(), ciphertext.as_slice())
        .map_err(|_| anyhow::anyhow!("cannot decrypt the key: wrong password"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p256_and_ed25519_sign_and_verify_and_other_keys_fail() {
        let p = SigningKey::P256(p256::ecdsa::SigningKey::from_slice(&[7u8; 32]).unwrap());
        let e = SigningKey::Ed25519(ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]));
        for k in [&p, &e] {
            let sig = k.sign(b"package");
            k.verify_key().verify(b"package", &sig).unwrap();
            assert!(k.verify_key().verify(b"packagf", &sig).is_err());
        }
        let sig = p.sign(b"x");
        assert!(e.verify_key().verify(b"x", &sig).is_err());
    }
}

#[cfg(test)]
mod cosign_fixture {
    use super::*;

    /// cosign's encrypted key format, with the key pair sigstore-rs
    /// publishes as test data (tests/fixtures/keys).
    #[test]
    fn the_published_cosign_test_key_decrypts_and_matches_its_public_key() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys");
        let (label, der) = read_key_file(&dir.join("cosign-test.key"), "key").unwrap();
        assert_eq!(label, "ENCRYPTED COSIGN PRIVATE KEY");
        assert!(decrypt_cosign(&der, b"124").is_err());
        let key = from_pkcs8(&decrypt_cosign(&der, b"123").unwrap()).unwrap();
        let pem = key.verify_key().to_pem().unwrap();
        let expected = std::fs::read_to_string(dir.join("cosign-test.pub")).unwrap_or_default();
        assert_eq!(pem, expected, "cosign-test.pub:\n{pem}");
    }
}
