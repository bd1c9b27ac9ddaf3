//! The registry client against a real `docker-registry` (plain, basic auth,
//! TLS with a CA), with skopeo as the independent writer/reader.
mod support;

use std::io::Write;
use std::path::{Path, PathBuf};

use bundler::error::CredentialError;
use bundler::oci::auth::{CredentialStore, Credentials};
use bundler::oci::media::{self, Descriptor};
use bundler::oci::registry::{BlobSource, ClientOptions, PushOutcome, RegistryClient};
use bundler::oci::Digest;
use bytes::Bytes;
use support::images;
use support::registry::{Mode, Registry, PASSWORD, USER};

fn creds(user: &str, pass: &str) -> CredentialStore {
    CredentialStore {
        default: Some(Credentials {
            username: user.into(),
            password: pass.into(),
        }),
        ..Default::default()
    }
}

/// Options that reach `reg`: its CA for TLS modes, `insecure` for plain.
fn opts_for(reg: &Registry) -> ClientOptions {
    ClientOptions {
        insecure: !reg.is_tls(),
        ca_file: reg.ca_file.clone(),
        max_attempts: 3,
        ..Default::default()
    }
}

fn client(reg: &Registry) -> RegistryClient {
    let store = if reg.has_auth() {
        creds(USER, PASSWORD)
    } else {
        CredentialStore::default()
    };
    RegistryClient::new(opts_for(reg), store).unwrap()
}

/// A file holding `blob` at `offset`, between unrelated bytes.
fn embed(dir: &Path, blob: &[u8], offset: usize) -> PathBuf {
    let path = dir.join("bundle.bin");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&images::pseudo_random(99, offset)).unwrap();
    f.write_all(blob).unwrap();
    f.write_all(&images::pseudo_random(98, 4321)).unwrap();
    path
}

fn desc(digest: &Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media::OCI_LAYER_GZIP.into(),
        digest: digest.clone(),
        size,
        platform: None,
        annotations: None,
    }
}

fn is_credential_error(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| c.downcast_ref::<CredentialError>().is_some())
}

#[tokio::test]
async fn manifests_are_served_byte_for_byte_and_copied_by_digest() {
    let reg = Registry::start(Mode::Plain);
    let work = tempfile::tempdir().unwrap();
    let simple = images::push_simple(&reg, work.path(), "app/one:1.0", &[b"layer-a", b"layer-b"]);
    let (idx, amd, _arm) =
        images::push_multiarch(&reg, work.path(), "app/multi:2.0", b"shared base layer");
    let c = client(&reg);
    let host = reg.host();

    let m = c.get_manifest(&host, "app/one", "1.0").await.unwrap();
    assert_eq!(m.digest.to_string(), simple);
    assert_eq!(
        m.bytes.as_ref(),
        reg.raw_manifest("app/one:1.0").unwrap().as_slice()
    );
    assert_eq!(m.media_type, media::OCI_MANIFEST);

    let i = c.get_manifest(&host, "app/multi", "2.0").await.unwrap();
    assert_eq!(i.digest.to_string(), idx);
    assert_eq!(i.media_type, media::OCI_INDEX);
    assert_eq!(
        i.bytes.as_ref(),
        reg.raw_manifest("app/multi:2.0").unwrap().as_slice()
    );
    // by digest
    let p = c.get_manifest(&host, "app/multi", &amd).await.unwrap();
    assert_eq!(p.digest.to_string(), amd);

    assert_eq!(
        c.head_manifest(&host, "app/multi", "2.0")
            .await
            .unwrap()
            .map(|d| d.to_string()),
        Some(idx.clone())
    );
    assert_eq!(
        c.head_manifest(&host, "app/multi", "nope").await.unwrap(),
        None
    );
    assert_eq!(
        c.head_manifest(&host, "app/absent", "1").await.unwrap(),
        None
    );
    let err = c.get_manifest(&host, "app/one", "nope").await.unwrap_err();
    assert!(format!("{err:#}").contains("app/one:nope"), "{err:#}");

    // Copy the single-platform image to another repo through our client
    // (pull each blob to a file, push it by range), then the manifest.
    let parsed = media::parse(&m.bytes, Some(&m.media_type)).unwrap();
    for b in parsed.blobs() {
        let path = work.path().join(b.digest.hex());
        let mut f = std::fs::File::create(&path).unwrap();
        let mut sink = |_off: u64, chunk: &[u8]| -> anyhow::Result<()> {
            f.write_all(chunk)?;
            Ok(())
        };
        c.pull_blob(&host, "app/one", b, &mut sink, None)
            .await
            .unwrap();
        drop(f);
        let out = c
            .push_blob(
                &host,
                "copy/one",
                &b.digest,
                BlobSource::FileRange {
                    path: path.clone(),
                    offset: 0,
                    len: b.size,
                },
                None,
                None,
            )
            .await
            .unwrap();
        assert_eq!(out, PushOutcome::Uploaded);
    }
    let d = c
        .put_manifest(&host, "copy/one", "1.0", &m.media_type, m.bytes.clone())
        .await
        .unwrap();
    assert_eq!(d, m.digest);
    assert_eq!(reg.raw_manifest("copy/one:1.0").unwrap(), m.bytes.to_vec());
    // a manifest pushed by digest under the wrong digest is refused locally
    let wrong = Digest::of(b"x").to_string();
    assert!(c
        .put_manifest(&host, "copy/one", &wrong, &m.media_type, m.bytes.clone())
        .await
        .is_err());

    let mut tags = c.list_tags(&host, "copy/one").await.unwrap();
    tags.sort();
    assert_eq!(tags, vec!["1.0".to_string()]);
    assert!(c.list_tags(&host, "never/pushed").await.unwrap().is_empty());
    assert_eq!(c.stats().retries, 0);
}

#[tokio::test]
async fn blob_from_a_file_range_round_trips_and_is_skipped_the_second_time() {
    let reg = Registry::start(Mode::Plain);
    let work = tempfile::tempdir().unwrap();
    let blob = images::pseudo_random(1, 3 * 1024 * 1024 + 17);
    let digest = Digest::of(&blob);
    let offset = 12_345;
    let path = embed(work.path(), &blob, offset);
    let c = client(&reg);
    let host = reg.host();
    let src = BlobSource::FileRange {
        path: path.clone(),
        offset: offset as u64,
        len: blob.len() as u64,
    };
    let progress = bundler::progress::Progress::new(bundler::progress::Mode::Quiet);
    let mut t = progress.transfer("blob", blob.len() as u64);
    let out = c
        .push_blob(
            &host,
            "range/blob",
            &digest,
            src.clone(),
            None,
            Some(&mut t),
        )
        .await
        .unwrap();
    assert_eq!(out, PushOutcome::Uploaded);
    assert_eq!(progress.done_bytes(), blob.len() as u64);
    assert_eq!(
        c.blob_exists(&host, "range/blob", &digest).await.unwrap(),
        Some(blob.len() as u64)
    );
    let back = c
        .pull_blob_bytes(&host, "range/blob", &desc(&digest, blob.len() as u64))
        .await
        .unwrap();
    assert!(back.as_ref() == blob.as_slice());
    let before = c.stats().bytes_uploaded;
    assert!(before >= blob.len() as u64);
    let out = c
        .push_blob(&host, "range/blob", &digest, src, None, None)
        .await
        .unwrap();
    assert_eq!(out, PushOutcome::Skipped);
    assert_eq!(c.stats().bytes_uploaded, before);

    // In-memory blobs too.
    let small = Bytes::from_static(b"{\"config\":true}");
    let sd = Digest::of(&small);
    let out = c
        .push_blob(
            &host,
            "range/blob",
            &sd,
            BlobSource::Bytes(small.clone()),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(out, PushOutcome::Uploaded);
    assert_eq!(
        c.pull_blob_bytes(&host, "range/blob", &desc(&sd, small.len() as u64))
            .await
            .unwrap(),
        small
    );
    // Pulling with a wrong size is refused, naming the blob.
    let err = c
        .pull_blob_bytes(&host, "range/blob", &desc(&sd, small.len() as u64 + 1))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains(&sd.to_string()), "{err:#}");
}

#[tokio::test]
async fn corrupt_source_is_refused_and_never_committed() {
    let reg = Registry::start(Mode::Plain);
    let work = tempfile::tempdir().unwrap();
    let blob = images::pseudo_random(2, 2 * 1024 * 1024 + 5);
    let digest = Digest::of(&blob);
    let mut damaged = blob.clone();
    damaged[1_000_000] ^= 0x40;
    let path = embed(work.path(), &damaged, 777);
    let c = client(&reg);
    let host = reg.host();
    let err = c
        .push_blob(
            &host,
            "bad/blob",
            &digest,
            BlobSource::FileRange {
                path,
                offset: 777,
                len: blob.len() as u64,
            },
            None,
            None,
        )
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains(&digest.to_string()), "{msg}");
    assert!(msg.contains("corrupt"), "{msg}");
    assert_eq!(
        c.blob_exists(&host, "bad/blob", &digest).await.unwrap(),
        None
    );
    // Not under the digest of the damaged bytes either.
    assert_eq!(
        c.blob_exists(&host, "bad/blob", &Digest::of(&damaged))
            .await
            .unwrap(),
        None
    );
    // A truncated file is refused too.
    let short = work.path().join("short.bin");
    std::fs::write(&short, &blob[..1000]).unwrap();
    let err = c
        .push_blob(
            &host,
            "bad/blob",
            &digest,
            BlobSource::FileRange {
                path: short,
                offset: 0,
                len: blob.len() as u64,
            },
            None,
            None,
        )
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("truncated"), "{err:#}");
    assert_eq!(
        c.blob_exists(&host, "bad/blob", &digest).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn mount_across_repositories_with_basic_auth() {
    let reg = Registry::start(Mode::BasicAuth);
    let c = client(&reg);
    let host = reg.host();
    let blob = Bytes::from(images::pseudo_random(3, 300_000));
    let digest = Digest::of(&blob);
    let out = c
        .push_blob(
            &host,
            "proj/a",
            &digest,
            BlobSource::Bytes(blob.clone()),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(out, PushOutcome::Uploaded);
    let up = c.stats().bytes_uploaded;
    let out = c
        .push_blob(
            &host,
            "proj/b",
            &digest,
            BlobSource::Bytes(blob.clone()),
            Some("proj/a"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(out, PushOutcome::Mounted);
    assert_eq!(c.stats().bytes_uploaded, up, "a mount moves no bytes");
    assert_eq!(
        c.blob_exists(&host, "proj/b", &digest).await.unwrap(),
        Some(blob.len() as u64)
    );
    // Mounting from a repo that lacks the blob falls back to an upload
    // (the registry answers 202 with a session that we use).
    let other = Bytes::from(images::pseudo_random(4, 1000));
    let od = Digest::of(&other);
    let out = c
        .push_blob(
            &host,
            "proj/c",
            &od,
            BlobSource::Bytes(other),
            Some("proj/a"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(out, PushOutcome::Uploaded);
}

#[tokio::test]
async fn wrong_or_missing_credentials_are_credential_errors_without_secrets() {
    let reg = Registry::start(Mode::BasicAuth);
    let host = reg.host();
    let wrong_pw = "Wr0ng-Pa55word-xyz";
    let c = RegistryClient::new(opts_for(&reg), creds(USER, wrong_pw)).unwrap();
    let err = c.get_manifest(&host, "x/y", "1").await.unwrap_err();
    assert!(is_credential_error(&err), "{err:#}");
    let msg = format!("{err:#} {err:?}");
    assert!(msg.contains("rejected"), "{msg}");
    assert!(!msg.contains(wrong_pw), "{msg}");
    assert!(!msg.to_lowercase().contains("basic "), "{msg}");
    let blob = Bytes::from_static(b"abc");
    let err = c
        .push_blob(
            &host,
            "x/y",
            &Digest::of(&blob),
            BlobSource::Bytes(blob),
            None,
            None,
        )
        .await
        .unwrap_err();
    assert!(is_credential_error(&err), "{err:#}");
    assert!(!format!("{err:#} {err:?}").contains(wrong_pw));

    let c = RegistryClient::new(opts_for(&reg), CredentialStore::default()).unwrap();
    let err = c.head_manifest(&host, "x/y", "1").await.unwrap_err();
    assert!(is_credential_error(&err), "{err:#}");
    assert!(format!("{err:#}").contains("missing"), "{err:#}");
}

#[tokio::test]
async fn tls_needs_the_ca_or_insecure() {
    let reg = Registry::start(Mode::TlsBasicAuth);
    let work = tempfile::tempdir().unwrap();
    let digest = images::push_simple(&reg, work.path(), "tls/app:1", &[b"tls layer"]);
    let host = reg.host();
    let store = creds(USER, PASSWORD);

    let plain = RegistryClient::new(ClientOptions::default(), store.clone()).unwrap();
    let err = plain.get_manifest(&host, "tls/app", "1").await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("not trusted"), "{msg}");
    assert!(
        msg.contains("--ca-file") && msg.contains("--insecure"),
        "{msg}"
    );
    assert!(!msg.contains(PASSWORD));
    assert!(!msg.contains("for url"), "{msg}");

    let with_ca = RegistryClient::new(
        ClientOptions {
            ca_file: reg.ca_file.clone(),
            ..Default::default()
        },
        store.clone(),
    )
    .unwrap();
    let m = with_ca.get_manifest(&host, "tls/app", "1").await.unwrap();
    assert_eq!(m.digest.to_string(), digest);

    let insecure = RegistryClient::new(
        ClientOptions {
            insecure: true,
            ..Default::default()
        },
        store,
    )
    .unwrap();
    let m = insecure.get_manifest(&host, "tls/app", "1").await.unwrap();
    assert_eq!(m.digest.to_string(), digest);

    // A CA file that is not PEM is refused up front.
    let bad = work.path().join("bad.pem");
    std::fs::write(&bad, "not a certificate").unwrap();
    assert!(RegistryClient::new(
        ClientOptions {
            ca_file: Some(bad),
            ..Default::default()
        },
        CredentialStore::default()
    )
    .is_err());
}

#[tokio::test]
async fn plain_http_registry_needs_insecure() {
    let reg = Registry::start(Mode::Plain);
    let c = RegistryClient::new(
        ClientOptions {
            max_attempts: 2,
            ..Default::default()
        },
        CredentialStore::default(),
    )
    .unwrap();
    let err = c.head_manifest(&reg.host(), "a/b", "1").await.unwrap_err();
    assert!(format!("{err:#}").contains("--insecure"), "{err:#}");
}

#[tokio::test]
async fn docker_config_json_credentials() {
    use base64::Engine as _;
    let reg = Registry::start(Mode::BasicAuth);
    let work = tempfile::tempdir().unwrap();
    let digest = images::push_simple(&reg, work.path(), "dc/app:1", &[b"dc"]);
    let cfg = work.path().join("docker");
    std::fs::create_dir_all(&cfg).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    std::fs::write(
        cfg.join("config.json"),
        format!(
            r#"{{"auths":{{"http://{}":{{"auth":"{auth}"}},"other.example.com":{{"auth":"eDp5"}}}}}}"#,
            reg.host()
        ),
    )
    .unwrap();
    let c = RegistryClient::new(
        opts_for(&reg),
        CredentialStore::with_docker_config_dir(&cfg),
    )
    .unwrap();
    let m = c.get_manifest(&reg.host(), "dc/app", "1").await.unwrap();
    assert_eq!(m.digest.to_string(), digest);

    // An empty docker config: credentials are missing.
    let empty = work.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("config.json"), "{}").unwrap();
    let c = RegistryClient::new(
        opts_for(&reg),
        CredentialStore::with_docker_config_dir(&empty),
    )
    .unwrap();
    let err = c
        .get_manifest(&reg.host(), "dc/app", "1")
        .await
        .unwrap_err();
    assert!(is_credential_error(&err), "{err:#}");
}

fn chunked_opts(reg: &Registry, state: &Path) -> ClientOptions {
    ClientOptions {
        chunk_threshold: 1024 * 1024,
        chunk_size: 1024 * 1024,
        upload_state_dir: Some(state.to_path_buf()),
        ..opts_for(reg)
    }
}

#[tokio::test]
async fn chunked_upload_resumes_after_an_interruption() {
    let reg = Registry::start(Mode::BasicAuth);
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let blob = images::pseudo_random(5, 3 * 1024 * 1024 + 300_000);
    let digest = Digest::of(&blob);
    let path = embed(work.path(), &blob, 4096);
    let src = BlobSource::FileRange {
        path,
        offset: 4096,
        len: blob.len() as u64,
    };
    let host = reg.host();

    // First run: stops after two chunks, leaving the session behind.
    let first = RegistryClient::new(
        ClientOptions {
            interrupt_after_chunks: Some(2),
            ..chunked_opts(&reg, &state)
        },
        creds(USER, PASSWORD),
    )
    .unwrap();
    let err = first
        .push_blob(&host, "big/blob", &digest, src.clone(), None, None)
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("interrupted"), "{err:#}");
    assert_eq!(
        first.blob_exists(&host, "big/blob", &digest).await.unwrap(),
        None
    );
    let state_file = first.upload_state_path(&host, "big/blob", &digest).unwrap();
    assert!(state_file.exists(), "the session must be remembered");
    drop(first);

    // Second run (a new client, as after a restart): resumes at 2 MiB.
    let second = RegistryClient::new(chunked_opts(&reg, &state), creds(USER, PASSWORD)).unwrap();
    let progress = bundler::progress::Progress::new(bundler::progress::Mode::Quiet);
    let mut t = progress.transfer("big", blob.len() as u64);
    let out = second
        .push_blob(&host, "big/blob", &digest, src.clone(), None, Some(&mut t))
        .await
        .unwrap();
    assert_eq!(out, PushOutcome::Uploaded);
    let sent = second.stats().bytes_uploaded;
    assert_eq!(
        sent,
        blob.len() as u64 - 2 * 1024 * 1024,
        "only the rest is sent"
    );
    assert_eq!(progress.done_bytes(), blob.len() as u64);
    assert!(!state_file.exists(), "state is removed when done");
    let back = second
        .pull_blob_bytes(&host, "big/blob", &desc(&digest, blob.len() as u64))
        .await
        .unwrap();
    assert_eq!(Digest::of(&back), digest);

    // A stale state file (session gone) starts over and still completes.
    let other = images::pseudo_random(6, 2 * 1024 * 1024 + 1);
    let od = Digest::of(&other);
    let opath = work.path().join("other.bin");
    std::fs::write(&opath, &other).unwrap();
    let sp = second.upload_state_path(&host, "big/other", &od).unwrap();
    std::fs::write(
        &sp,
        format!(
            r#"{{"registry":"{host}","repo":"big/other","digest":"{od}","url":"http://{host}/v2/big/other/blobs/uploads/00000000-dead-beef-0000-000000000000?_state=x","offset":1048576}}"#
        ),
    )
    .unwrap();
    let out = second
        .push_blob(
            &host,
            "big/other",
            &od,
            BlobSource::FileRange {
                path: opath,
                offset: 0,
                len: other.len() as u64,
            },
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(out, PushOutcome::Uploaded);
    assert_eq!(
        second.blob_exists(&host, "big/other", &od).await.unwrap(),
        Some(other.len() as u64)
    );
}

#[tokio::test]
async fn chunked_upload_of_a_corrupt_source_commits_nothing() {
    let reg = Registry::start(Mode::Plain);
    let work = tempfile::tempdir().unwrap();
    let blob = images::pseudo_random(7, 2 * 1024 * 1024 + 999);
    let digest = Digest::of(&blob);
    let mut damaged = blob.clone();
    damaged[100] ^= 1;
    let path = embed(work.path(), &damaged, 10);
    let c = RegistryClient::new(
        chunked_opts(&reg, &work.path().join("state")),
        CredentialStore::default(),
    )
    .unwrap();
    let err = c
        .push_blob(
            &reg.host(),
            "big/bad",
            &digest,
            BlobSource::FileRange {
                path,
                offset: 10,
                len: blob.len() as u64,
            },
            None,
            None,
        )
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains(&digest.to_string()) && msg.contains("corrupt"),
        "{msg}"
    );
    assert_eq!(
        c.blob_exists(&reg.host(), "big/bad", &digest)
            .await
            .unwrap(),
        None
    );
    assert!(!c
        .upload_state_path(&reg.host(), "big/bad", &digest)
        .unwrap()
        .exists());
}

/// A server that answers every request with 503 (Retry-After: 0), counting
/// them: the client gives up after its bounded attempts with a clear error.
#[tokio::test]
async fn a_registry_that_stays_down_fails_after_bounded_retries() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let h2 = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { break };
            let h = h2.clone();
            std::thread::spawn(move || {
                use std::io::Read;
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                    while let Some(end) = find(&got, b"\r\n\r\n") {
                        got.drain(..end + 4);
                        h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let _ = s.write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 0\r\nContent-Length: 0\r\n\r\n",
                        );
                    }
                    if got.first() == Some(&0x16) {
                        // A TLS ClientHello: not HTTP, hang up.
                        break;
                    }
                }
            });
        }
    });
    let c = RegistryClient::new(
        ClientOptions {
            insecure: true,
            max_attempts: 4,
            ..Default::default()
        },
        CredentialStore::default(),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let err = c
        .get_manifest(&format!("127.0.0.1:{port}"), "down/app", "1")
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("503"), "{msg}");
    assert!(
        msg.contains(&format!("127.0.0.1:{port}/v2/down/app/manifests/1")),
        "{msg}"
    );
    assert!(msg.contains("4 attempts"), "{msg}");
    assert_eq!(c.stats().retries, 3);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    // the probe + 4 attempts
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 5);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

// ----- Bearer token auth: docker-registry with `auth: token` and a token
// service (tests/support/token_registry.rs). ----------
use support::token_registry::TokenRegistry;

#[tokio::test]
async fn bearer_token_auth_with_scopes_and_cross_repo_mount() {
    let reg = TokenRegistry::start();
    let host = format!("127.0.0.1:{}", reg.port);
    let opts = ClientOptions {
        insecure: true,
        max_attempts: 2,
        ..Default::default()
    };
    let c = RegistryClient::new(opts.clone(), creds(USER, PASSWORD)).unwrap();
    let blob = Bytes::from(images::pseudo_random(8, 200_000));
    let digest = Digest::of(&blob);
    let out = c
        .push_blob(
            &host,
            "team/src",
            &digest,
            BlobSource::Bytes(blob.clone()),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(out, PushOutcome::Uploaded);
    let cfg = Bytes::from_static(b"{}");
    let cd = Digest::of(&cfg);
    c.push_blob(
        &host,
        "team/src",
        &cd,
        BlobSource::Bytes(cfg.clone()),
        None,
        None,
    )
    .await
    .unwrap();
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"{}\",\"config\":{{\"mediaType\":\"{}\",\"digest\":\"{cd}\",\"size\":2}},\"layers\":[{{\"mediaType\":\"{}\",\"digest\":\"{digest}\",\"size\":{}}}]}}",
        media::OCI_MANIFEST,
        media::OCI_CONFIG,
        media::OCI_LAYER_GZIP,
        blob.len()
    );
    let md = c
        .put_manifest(
            &host,
            "team/src",
            "v1",
            media::OCI_MANIFEST,
            Bytes::from(manifest.clone()),
        )
        .await
        .unwrap();
    assert_eq!(md, Digest::of(manifest.as_bytes()));
    let got = c.get_manifest(&host, "team/src", "v1").await.unwrap();
    assert_eq!(got.bytes.as_ref(), manifest.as_bytes());

    let tokens_before = reg.scopes_seen.lock().unwrap().len();
    let out = c
        .push_blob(
            &host,
            "team/dst",
            &digest,
            BlobSource::Bytes(blob.clone()),
            Some("team/src"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(out, PushOutcome::Mounted);
    let seen = reg.scopes_seen.lock().unwrap().clone();
    assert!(
        seen[tokens_before..]
            .iter()
            .any(|s| s.contains(&"repository:team/dst:pull,push".to_string())
                && s.contains(&"repository:team/src:pull".to_string())),
        "the mount's token request must carry both scopes: {seen:?}"
    );
    // Tokens are cached per scope set: the HEAD of the push already got a
    // pull token for team/dst, so pulling twice asks the service nothing.
    let n0 = reg.scopes_seen.lock().unwrap().len();
    let d = desc(&digest, blob.len() as u64);
    assert_eq!(
        c.pull_blob_bytes(&host, "team/dst", &d).await.unwrap(),
        blob
    );
    assert_eq!(
        c.pull_blob_bytes(&host, "team/dst", &d).await.unwrap(),
        blob
    );
    assert_eq!(reg.scopes_seen.lock().unwrap().len(), n0);

    // Wrong password: the token service refuses → a credential error.
    let bad = RegistryClient::new(opts.clone(), creds(USER, "not-the-password-123")).unwrap();
    let err = bad.get_manifest(&host, "team/src", "v1").await.unwrap_err();
    assert!(is_credential_error(&err), "{err:#}");
    assert!(!format!("{err:#} {err:?}").contains("not-the-password-123"));
    // No credentials: anonymous token without access → missing credentials.
    let anon = RegistryClient::new(opts, CredentialStore::default()).unwrap();
    let err = anon
        .get_manifest(&host, "team/src", "v1")
        .await
        .unwrap_err();
    assert!(is_credential_error(&err), "{err:#}");
    assert!(format!("{err:#}").contains("missing"), "{err:#}");
}

/// A TCP proxy in front of a registry: its first plain-HTTP connections
/// get a 503, then one is dropped mid-request, the rest are piped through.
fn flaky_proxy(upstream: u16) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut k = 0;
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { break };
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            let mut tls = false;
            while find(&head, b"\r\n\r\n").is_none() {
                match std::io::Read::read(&mut s, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
                if head.first() == Some(&0x16) {
                    tls = true;
                    break;
                }
            }
            if tls || head.is_empty() {
                continue; // drop
            }
            k += 1;
            match k {
                1 | 2 => {
                    let _ = s.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                }
                3 => {
                    let _ = s.shutdown(std::net::Shutdown::Both);
                }
                _ => {
                    let mut up = std::net::TcpStream::connect(("127.0.0.1", upstream)).unwrap();
                    up.write_all(&head).unwrap();
                    let (mut a, mut b) = (s.try_clone().unwrap(), up.try_clone().unwrap());
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut a, &mut b);
                        let _ = b.shutdown(std::net::Shutdown::Write);
                    });
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut up, &mut s);
                        let _ = s.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
        }
    });
    port
}

#[tokio::test]
async fn transient_503s_and_dropped_connections_are_retried() {
    let reg = Registry::start(Mode::Plain);
    let work = tempfile::tempdir().unwrap();
    let digest = images::push_simple(&reg, work.path(), "flaky/app:1", &[b"flaky"]);
    let proxy = flaky_proxy(reg.port);
    let host = format!("127.0.0.1:{proxy}");
    let c = RegistryClient::new(
        ClientOptions {
            insecure: true,
            max_attempts: 5,
            ..Default::default()
        },
        CredentialStore::default(),
    )
    .unwrap();
    let m = c.get_manifest(&host, "flaky/app", "1").await.unwrap();
    assert_eq!(m.digest.to_string(), digest);
    assert!(c.stats().retries >= 2, "{:?}", c.stats());
    let blob = Bytes::from(images::pseudo_random(9, 100_000));
    let d = Digest::of(&blob);
    let out = c
        .push_blob(
            &host,
            "flaky/app",
            &d,
            BlobSource::Bytes(blob.clone()),
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(out, PushOutcome::Uploaded);
    assert_eq!(
        reg_blob_size(&reg, "flaky/app", &d).await,
        Some(blob.len() as u64)
    );
}

async fn reg_blob_size(reg: &Registry, repo: &str, d: &Digest) -> Option<u64> {
    client(reg).blob_exists(&reg.host(), repo, d).await.unwrap()
}
