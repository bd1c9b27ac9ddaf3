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
