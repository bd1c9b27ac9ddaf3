//! `--tls-cert` / `--tls-key`: a rustls server config from PEM files
//! (the certificate file may hold the chain), HTTP/2 and HTTP/1.1 by ALPN.
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};

pub fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let certs: Vec<_> = rustls_pemfile::certs(&mut std::io::BufReader::new(
        std::fs::File::open(cert)
            .with_context(|| format!("opening --tls-cert {}", cert.display()))?,
    ))
    .collect::<Result<_, _>>()
    .with_context(|| format!("--tls-cert {}: not a PEM certificate file", cert.display()))?;
    if certs.is_empty() {
        bail!("--tls-cert {}: no certificate in it", cert.display());
    }
    let key_der = rustls_pemfile::private_key(&mut std::io::BufReader::new(
        std::fs::File::open(key).with_context(|| format!("opening --tls-key {}", key.display()))?,
    ))
    .with_context(|| format!("--tls-key {}: not a PEM private key file", key.display()))?
    .with_context(|| format!("--tls-key {}: no private key in it", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key_der)
        .with_context(|| {
            format!(
                "--tls-cert {} and --tls-key {} do not make a usable pair",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
