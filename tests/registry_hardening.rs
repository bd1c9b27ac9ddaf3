//! The registry client against registries that misbehave the way real
//! sites do: one that comes up after the run started, peers that go silent
//! or trickle, and a proxy with a body-size limit. Every registry here is
//! a real `docker-registry`; the faults come from the test's faulty proxy
//! (silent, trickling, late) or a real nginx with `client_max_body_size`.
mod support;

use std::time::{Duration, Instant};

use bundler::oci::auth::CredentialStore;
use bundler::oci::registry::{BlobSource, ClientOptions, PushOutcome, RegistryClient};
use bundler::oci::Digest;
use support::faulty_proxy::{Faults, FaultyProxy};
use support::images;
use support::nginx::Nginx;
use support::registry::{free_port, Mode, Registry};

fn insecure(opts: ClientOptions) -> RegistryClient {
    RegistryClient::new(
        ClientOptions {
            insecure: true,
            ..opts
        },
        CredentialStore::default(),
    )
    .unwrap()
}

/// `--insecure` against a plain-HTTP registry that starts listening 0.3 s
/// after the client's first request: the scheme probe itself is retried
/// with backoff, finds http, and the push lands (it used to settle on
/// https and fail every retry with "received corrupt message").
#[tokio::test]
async fn insecure_scheme_probe_waits_for_a_registry_that_comes_up_late() {
    let reg = Registry::start(Mode::Plain);
    let port = free_port();
    let upstream = reg.port;
    let late = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        FaultyProxy::start_on(port, upstream, Faults::none())
    });
    let host = format!("127.0.0.1:{port}");
    let c = insecure(ClientOptions::default());
    let blob = images::pseudo_random(31, 100_000);
    let d = Digest::of(&blob);
    let res = c
        .push_blob(
            &host,
            "late/app",
            &d,
            BlobSource::Bytes(blob.into()),
            None,
            None,
        )
        .await;
    let proxy = late.join().unwrap();
    assert_eq!(res.map_err(|e| format!("{e:#}")), Ok(PushOutcome::Uploaded));
    // Really in the registry, over plain http.
    let direct = insecure(ClientOptions::default());
    assert_eq!(
        direct
            .blob_exists(&reg.host(), "late/app", &d)
            .await
            .unwrap(),
        Some(100_000)
    );
    assert!(proxy.stats().completed > 0);
}

/// Nothing ever listens: the probe's retries are bounded and the error
/// names the host and both schemes tried.
#[tokio::test]
async fn insecure_scheme_probe_gives_up_clearly_when_nothing_listens() {
    let host = format!("127.0.0.1:{}", free_port());
    let c = insecure(ClientOptions {
        max_attempts: 3,
        ..Default::default()
    });
    let started = Instant::now();
    let err = c.head_manifest(&host, "none/app", "1.0").await.unwrap_err();
    let msg = format!("{err:#}");
    assert!(started.elapsed() < Duration::from_secs(20), "{msg}");
    assert!(msg.contains(&host), "{msg}");
    assert!(
        msg.contains("https") && msg.contains("http://") && msg.contains("3 attempts"),
        "{msg}"
    );
}

// ----- silent and slow peers ------------------------------------------------

/// A client for `proxy` whose transfers stall after `stall`, with the
/// scheme probe already done (so the faults meet the requests under test).
async fn stall_client(proxy: &FaultyProxy, stall: Duration, attempts: u32) -> RegistryClient {
    let c = insecure(ClientOptions {
        stall_timeout: Some(stall),
        max_attempts: attempts,
        ..Default::default()
    });
    c.blob_exists(&proxy.host(), "warm/up", &Digest::of(b"x"))
        .await
        .unwrap();
    c
}

/// A peer that takes the connection and the request head, then reads and
/// says nothing: the probe, a manifest GET and an upload whose body it
/// stops reading each fail their attempt after the stall timeout, are
/// retried, and succeed (they used to wait out a 60 s read timeout each).
#[tokio::test]
async fn a_silent_peer_fails_the_attempt_after_the_stall_timeout_and_the_retry_succeeds() {
    let reg = Registry::start(Mode::Plain);
    let work = tempfile::tempdir().unwrap();
    let digest = images::push_simple(&reg, work.path(), "quiet/app:1.0", &[b"layer"]);
    let proxy = FaultyProxy::start(reg.port, Faults::none());
    let stall = Duration::from_secs(1);

    // The very first request (the scheme probe) meets the silence.
    proxy.silence_next(1);
    let c = insecure(ClientOptions {
        stall_timeout: Some(stall),
        ..Default::default()
    });
    let started = Instant::now();
    let m = c
        .get_manifest(&proxy.host(), "quiet/app", "1.0")
        .await
        .unwrap();
    assert_eq!(m.digest.to_string(), digest);
    assert_eq!(proxy.silenced(), 1);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // A manifest GET.
    proxy.silence_next_of(Some("GET"), 1);
    let started = Instant::now();
    let m = c
        .get_manifest(&proxy.host(), "quiet/app", "1.0")
        .await
        .unwrap();
    assert_eq!(m.digest.to_string(), digest);
    assert_eq!(proxy.silenced(), 2);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // An upload whose body the peer stops reading (larger than the socket
    // buffers, so the sender really blocks).
    let blob = images::pseudo_random(41, 24 << 20);
    let d = Digest::of(&blob);
    proxy.silence_next_of(Some("PUT"), 1);
    let started = Instant::now();
    let out = c
        .push_blob(
            &proxy.host(),
            "quiet/app",
            &d,
            BlobSource::Bytes(blob.into()),
            None,
            None,
        )
        .await
        .map_err(|e| format!("{e:#}"));
    assert_eq!(out, Ok(PushOutcome::Uploaded));
    assert_eq!(proxy.silenced(), 3);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(c.stats().retries >= 3, "{:?}", c.stats());
    assert_eq!(
        insecure(ClientOptions::default())
            .blob_exists(&reg.host(), "quiet/app", &d)
            .await
            .unwrap(),
        Some(24 << 20)
    );
}

/// A peer that trickles a blob's body a byte at a time is a stall too:
/// the attempt fails after the stall timeout, the retry gets the blob
/// whole and verified (it used to be never timed out).
#[tokio::test]
async fn a_trickling_peer_is_a_stall_and_the_retry_gets_the_blob() {
    let reg = Registry::start(Mode::Plain);
    let proxy = FaultyProxy::start(reg.port, Faults::none());
    let blob = images::pseudo_random(43, 200_000);
    let d = Digest::of(&blob);
    let c = stall_client(&proxy, Duration::from_secs(1), 3).await;
    c.push_blob(
        &proxy.host(),
        "slow/app",
        &d,
        BlobSource::Bytes(blob.clone().into()),
        None,
        None,
    )
    .await
    .unwrap();
    proxy.trickle_next_of(Some("GET"), 1, Duration::from_millis(100));
    let desc = bundler::oci::media::Descriptor {
        media_type: bundler::oci::media::OCI_LAYER_GZIP.into(),
        digest: d.clone(),
        size: blob.len() as u64,
        platform: None,
        annotations: None,
    };
    let started = Instant::now();
    let got = tokio::time::timeout(
        Duration::from_secs(60),
        c.pull_blob_bytes(&proxy.host(), "slow/app", &desc),
    )
    .await
    .expect("a trickling peer must be timed out, not waited for")
    .unwrap();
    assert_eq!(got.as_ref(), blob.as_slice());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(c.stats().retries >= 1);
}

/// A peer that never answers: every attempt stalls, and the error says so
/// (which request, how many attempts, what stalled and the knob that waits
/// longer) in bounded time.
#[tokio::test]
async fn a_peer_that_never_answers_gives_up_with_a_clear_message() {
    let reg = Registry::start(Mode::Plain);
    let proxy = FaultyProxy::start(reg.port, Faults::none());
    let c = stall_client(&proxy, Duration::from_millis(500), 3).await;
    proxy.silence_next(1000);
    let started = Instant::now();
    let err = c
        .head_manifest(&proxy.host(), "dead/app", "1.0")
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(started.elapsed() < Duration::from_secs(15), "{msg}");
    assert!(
        err.chain()
            .any(|e| e.is::<bundler::oci::registry::Stalled>()),
        "{msg}"
    );
    for want in [
        "dead/app",
        "3 attempts",
        "no response for 0.5 s",
        "BUNDLER_STALL_TIMEOUT",
    ] {
        assert!(msg.contains(want), "missing {want:?}: {msg}");
    }
    assert_eq!(proxy.silenced(), 3);
}

// ----- body-size limits (a real nginx with client_max_body_size) -----------

/// `blob` written into a file between unrelated bytes, as a bundle holds
/// it: the source of a streamed upload.
fn file_source(dir: &std::path::Path, name: &str, blob: &[u8]) -> BlobSource {
    let path = dir.join(name);
    let mut bytes = images::pseudo_random(7, 1000);
    bytes.extend_from_slice(blob);
    bytes.extend_from_slice(&images::pseudo_random(8, 333));
    std::fs::write(&path, bytes).unwrap();
    BlobSource::FileRange {
        path,
        offset: 1000,
        len: blob.len() as u64,
    }
}

/// nginx in front of the registry refuses request bodies over 1 MiB. The
/// first blob larger than that meets the 413, the client switches that
/// registry to chunked uploads and halves the chunk until one passes;
/// later blobs go straight up in chunks that pass (no more 413s), small
/// ones still in one PUT. Every blob lands whole. (It used to re-send the
/// whole blob three times and fail quoting 413.)
#[tokio::test]
async fn a_body_size_limit_switches_the_registry_to_chunks_that_pass() {
    let reg = Registry::start(Mode::Plain);
    let nginx = Nginx::start(reg.port, "1m");
    let work = tempfile::tempdir().unwrap();
    let c = insecure(ClientOptions::default());
    let direct = insecure(ClientOptions::default());
    let mut refused = Vec::new();
    for (i, size) in [3 << 20, 5 << 20, 300 << 10, (1 << 20) + 1]
        .into_iter()
        .enumerate()
    {
        let blob = images::pseudo_random(50 + i as u64, size);
        let d = Digest::of(&blob);
        let src = file_source(work.path(), &format!("b{i}"), &blob);
        let out = c
            .push_blob(&nginx.host(), "limited/app", &d, src, None, None)
            .await
            .map_err(|e| format!("{e:#}\n{}", nginx.log()));
        assert_eq!(out, Ok(PushOutcome::Uploaded), "blob {i} of {size} bytes");
        assert_eq!(
            direct
                .blob_exists(&reg.host(), "limited/app", &d)
                .await
                .unwrap(),
            Some(size as u64),
            "blob {i}"
        );
        refused.push(nginx.refused_413());
    }
    eprintln!("413s after each blob: {refused:?}");
    assert!(
        refused[0] >= 1,
        "the first large blob met the limit: {refused:?}"
    );
    assert!(
        refused.iter().all(|&n| n == refused[0]),
        "once switched, no upload meets the limit again: {refused:?}"
    );
}

/// A limit below the smallest chunk the client tries: the upload fails
/// in a few requests with an error that quotes the 413 and names
/// `BUNDLER_CHUNK_SIZE`; with a chunk size under the limit (what that
/// variable sets) the same upload passes.
#[tokio::test]
async fn a_body_size_limit_below_the_chunk_floor_names_bundler_chunk_size() {
    let reg = Registry::start(Mode::Plain);
    let nginx = Nginx::start(reg.port, "100k");
    let work = tempfile::tempdir().unwrap();
    let blob = images::pseudo_random(60, 1 << 20);
    let d = Digest::of(&blob);
    let src = file_source(work.path(), "b", &blob);
    let c = insecure(ClientOptions::default());
    let err = c
        .push_blob(&nginx.host(), "tiny/app", &d, src.clone(), None, None)
        .await
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("BUNDLER_CHUNK_SIZE") && msg.contains("413") && msg.contains(&d.to_string()),
        "{msg}"
    );
    eprintln!("{} refusals: {msg}", nginx.refused_413());
    assert!(nginx.refused_413() <= 4, "{} refusals", nginx.refused_413());
    let small_chunks = insecure(ClientOptions {
        chunk_size: 64 << 10,
        ..Default::default()
    });
    assert_eq!(
        small_chunks
            .push_blob(&nginx.host(), "tiny/app", &d, src, None, None)
            .await
            .map_err(|e| format!("{e:#}")),
        Ok(PushOutcome::Uploaded)
    );
}
