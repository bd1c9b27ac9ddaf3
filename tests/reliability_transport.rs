//! Transport hardening through the `bundler` binary against real
//! `docker-registry` instances: a peer that goes silent mid-sync (the stall
//! is shown, retried, and the sync completes), and a real nginx in front
//! of the registry with a `client_max_body_size` limit (uploads switch to
//! chunks small enough to pass).
mod reliability_support;
mod support;

use std::time::{Duration, Instant};

use reliability_support::*;
use support::faulty_proxy::{Faults, FaultyProxy};
use support::nginx::Nginx;
use support::registry::{Mode, Registry};
use support::{stderr, stdout};

/// The registry goes silent on the first blob upload (takes the request,
/// answers nothing). With `BUNDLER_STALL_TIMEOUT=1` the attempt is called
/// stalled after a second, the stall is shown, the upload is retried and
/// the sync completes with every image intact; before, the upload waited
/// out a 60 s read timeout with nothing printed.
#[test]
fn sync_through_a_peer_that_goes_silent_shows_the_stall_and_completes() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let p = make_product(d, "silent", 3, 2, 256 << 10, 7);
    let out = pack_ok(d, &p.manifest, &d.join("out"));
    let reg = Registry::start(Mode::Plain);
    let proxy = FaultyProxy::start(reg.port, Faults::none());
    proxy.silence_next_of(Some("PUT"), 1);
    let cfg = sync_config(d, &out, &proxy.host(), None);
    let started = Instant::now();
    let o = run(
        d,
        &["sync", "--config", cfg.to_str().unwrap(), "--insecure"],
        &[("BUNDLER_STALL_TIMEOUT", "1")],
    );
    let took = started.elapsed();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}\n{}", stdout(&o));
    assert_eq!(proxy.silenced(), 1);
    assert!(took < Duration::from_secs(40), "took {took:?}: {err}");
    assert!(
        err.contains("stalled") && err.contains("retrying"),
        "the stall must be shown: {err}"
    );
    assert_synced(&Http::new(&reg), &p.images);
}

/// A real nginx with `client_max_body_size 1m` in front of the registry,
/// and layers of 2–3 MiB: the first upload meets the 413, the sync says
/// once that it switches that registry to chunks, and completes with every
/// image intact (it used to re-send each blob whole and fail quoting 413).
#[test]
fn sync_through_nginx_with_a_body_size_limit_switches_to_chunks_once() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let p = make_product(d, "limited", 3, 2, (2 << 20) + 12345, 11);
    let out = pack_ok(d, &p.manifest, &d.join("out"));
    let reg = Registry::start(Mode::Plain);
    let nginx = Nginx::start(reg.port, "1m");
    let cfg = sync_config(d, &out, &nginx.host(), None);
    let o = run(
        d,
        &["sync", "--config", cfg.to_str().unwrap(), "--insecure"],
        &[],
    );
    let err = stderr(&o);
    assert!(o.status.success(), "{err}\n{}\n{}", stdout(&o), nginx.log());
    assert!(nginx.refused_413() >= 1, "{}", nginx.access_log());
    assert_eq!(
        err.matches("refused a request body").count(),
        1,
        "the switch is said once: {err}"
    );
    assert!(err.contains("BUNDLER_CHUNK_SIZE"), "{err}");
    assert_synced(&Http::new(&reg), &p.images);
}
