//! The sync engine under load and trouble (issue 25, issue 22 item 2),
//! through the `bundler` binary against real `docker-registry` instances:
//! concurrent syncs of one product into one registry, a registry whose
//! answer to a blob's final PUT comes after the client gave up on it, a
//! chunked upload killed mid-chunk, and fan-out to several registries.
mod reliability_support;
mod support;

use std::path::Path;
use std::process::{Command, Stdio};

use reliability_support::*;
use support::registry::{Mode, Registry};
use support::{bundler_bin, stderr};

fn sync_cmd(dir: &Path, cfg: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(bundler_bin());
    c.current_dir(dir)
        .args(["sync", "--config", cfg.to_str().unwrap(), "--insecure"])
        .args(extra)
        .env("BUNDLER_STATE_DIR", dir.join(".upload-state"))
        .env_remove("BUNDLER_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Issue 22 item 2: several syncs of the same product at once into one
/// registry, round after round into fresh repositories (so every run
/// uploads or mounts the same blobs while the others push manifests that
/// need them). distribution rewrites a blob's repository link in place on
/// every upload or mount of it, and a manifest PUT that reads the link
/// mid-rewrite is refused (`DIGEST_INVALID`, `MANIFEST_BLOB_UNKNOWN`): every
/// run must still succeed, and the registry must hold every image whole.
#[test]
fn concurrent_syncs_of_one_product_all_succeed() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let product = make_product(d, "conc", 8, 3, 48 << 10, 25);
    let out = pack_ok(d, &product.manifest, &d.join("bundles"));
    let reg = Registry::start(Mode::Plain);
    let http = Http::new(&reg);
    // More rounds to hunt the race by hand: SYNC_ENGINE_ROUNDS=50.
    let rounds: usize = std::env::var("SYNC_ENGINE_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    const RUNS: usize = 4;
    for round in 0..rounds {
        let prefix = format!("{}/round{round}", reg.host());
        let children: Vec<_> = (0..RUNS)
            .map(|run| {
                let dir = d.join(format!("r{round}-{run}"));
                std::fs::create_dir_all(&dir).unwrap();
                let cfg = sync_config(&dir, &out, &prefix, None);
                sync_cmd(&dir, &cfg, &[]).spawn().unwrap()
            })
            .collect();
        for (run, c) in children.into_iter().enumerate() {
            let o = c.wait_with_output().unwrap();
            assert!(
                o.status.success(),
                "round {round}, run {run} of {RUNS} concurrent syncs failed:\n{}",
                stderr(&o)
            );
        }
        let tags = http.audit();
        for img in &product.images {
            let key = format!("round{round}/{}:{}", target_repo(img), img.tag);
            assert_eq!(tags.get(&key), Some(&img.digest), "{key}: {tags:?}");
        }
    }
}

/// Bytes of every blob and manifest of a product's layout: what one sync
/// of it must send, each byte once.
fn layout_bytes(p: &Product) -> u64 {
    std::fs::read_dir(p.layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

/// Issue 25 item 3: the proxy forwards the request that completes the
/// largest layer's upload, the registry commits it, and the answer is held
/// back past the client's commit timeout (then the connection closes).
/// The sync must find the blob in place instead of uploading it again:
/// every byte crosses the proxy exactly once.
fn slow_commit_is_waited_for(env: &[(&str, &str)]) {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let product = make_product(d, "slow", 1, 1, 3 << 20, 31);
    let out = pack_ok(d, &product.manifest, &d.join("bundles"));
    let reg = Registry::start(Mode::Plain);
    let proxy =
        support::faulty_proxy::FaultyProxy::start(reg.port, support::faulty_proxy::Faults::none());
    let layer = largest_layer(&product);
    let hex = layer.trim_start_matches("sha256:");
    proxy.hold_answer_next_of("PUT", hex, 1, std::time::Duration::from_secs(4));
    let cfg = sync_config(d, &out, &proxy.host(), None);
    let mut cmd = sync_cmd(d, &cfg, &[]);
    cmd.env("BUNDLER_STALL_TIMEOUT", "1");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().unwrap();
    assert!(o.status.success(), "sync: {}", stderr(&o));
    assert_eq!(proxy.held(), 1, "the completing PUT was not held");
    assert_eq!(
        proxy.stats().bytes_up,
        layout_bytes(&product),
        "a blob went up twice: {}",
        stderr(&o)
    );
    let err = stderr(&o);
    assert!(err.contains("the commit was slow"), "{err}");
    let http = Http::new(&reg);
    assert_synced(&http, &product.images);
}

#[test]
fn slow_commit_of_a_monolithic_put_is_waited_for_not_uploaded_again() {
    slow_commit_is_waited_for(&[]);
}

#[test]
fn slow_commit_of_a_chunked_upload_is_waited_for_not_uploaded_again() {
    slow_commit_is_waited_for(&[
        ("BUNDLER_CHUNK_THRESHOLD", "1048576"),
        ("BUNDLER_CHUNK_SIZE", "1048576"),
    ]);
}

/// Issue 25 item 4: SIGTERM while a PATCH of a chunked upload is on its
/// way. docker-registry keeps a session's offset in the signed state of
/// the URL each PATCH answers with, so a PATCH cut off mid-body leaves the
/// saved URL stale and the blob had to start over; now the chunk in flight
/// is let finish (its URL saved) before the process exits 143, and the
/// next run resumes mid-blob: every byte crosses the proxy once.
#[test]
fn a_sync_stopped_mid_chunk_finishes_that_chunk_and_the_rerun_resumes_mid_blob() {
    use std::time::{Duration, Instant};
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let product = make_product(d, "resume", 1, 1, 3 << 20, 37);
    let out = pack_ok(d, &product.manifest, &d.join("bundles"));
    let reg = Registry::start(Mode::Plain);
    let proxy = support::faulty_proxy::FaultyProxy::start(
        reg.port,
        support::faulty_proxy::Faults {
            latency: Duration::from_millis(600),
            ..support::faulty_proxy::Faults::none()
        },
    );
    let cfg = sync_config(d, &out, &proxy.host(), None);
    // The 3 MiB layer goes up in 256 KiB PATCHes, each held 0.6 s.
    let chunked = [
        ("BUNDLER_CHUNK_THRESHOLD", "1048576"),
        ("BUNDLER_CHUNK_SIZE", "262144"),
        ("BUNDLER_LOG", "bundler=info"),
    ];
    let mut cmd = sync_cmd(d, &cfg, &[]);
    cmd.envs(chunked);
    let child = cmd.spawn().unwrap();
    // Once a chunk is in (its session saved), the next PATCH is waiting in
    // the proxy's latency: stop the run then.
    let state_dir = d.join(".upload-state");
    let started = Instant::now();
    while std::fs::read_dir(&state_dir).map_or(true, |mut r| r.next().is_none()) {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no chunk went up"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let o = child.wait_with_output().unwrap();
    let stopped = stderr(&o);
    assert_eq!(o.status.code(), Some(143), "{stopped}");

    proxy.set_faults(support::faulty_proxy::Faults::none());
    let mut cmd = sync_cmd(d, &cfg, &[]);
    cmd.envs(chunked);
    let o = cmd.output().unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    let resumed = err
        .lines()
        .find(|l| l.contains("resuming upload"))
        .unwrap_or_else(|| panic!("the rerun did not resume: {err}"));
    let at: u64 = resumed
        .split(" at ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{resumed}"));
    assert!(at > 0 && at < 3 << 20, "{resumed}");
    assert_eq!(
        proxy.stats().bytes_up,
        layout_bytes(&product),
        "bytes went up twice: {err}"
    );
    assert_synced(&Http::new(&reg), &product.images);
    assert!(
        stopped.contains("finishing the upload chunks in flight"),
        "{stopped}"
    );
}

/// A load-image.yaml sending images to `main` and to each of `mirrors`
/// (`(registry, credentials)`).
fn fanout_config(
    dir: &Path,
    bundles: &Path,
    main: &str,
    mirrors: &[(String, Option<(&str, &str)>)],
) -> std::path::PathBuf {
    let mut s = format!(
        "source:\n  intermediateBundlesPath: {}\ntarget:\n  containerPrefixRegistry: {main}\n  repo:\n    kind: LOCAL\n    path: ./local-repo\n  mirrors:\n",
        bundles.display()
    );
    for (reg, auth) in mirrors {
        s.push_str(&format!("    - containerPrefixRegistry: {reg}\n"));
        if let Some((u, p)) = auth {
            s.push_str(&format!(
                "      containers:\n        auth: {{username: \"{u}\", password: \"{p}\"}}\n"
            ));
        }
    }
    let cfg = dir.join("load-fanout.yaml");
    std::fs::write(&cfg, s).unwrap();
    cfg
}

fn json_of(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", support::stdout(o), stderr(o)))
}

/// Issue 25 item 5: `target.mirrors` sends every image to three
/// registries (one with its own credentials) from one read of the bundle:
/// the bytes read stay those of a sync to one registry.
#[test]
fn fan_out_to_three_registries_reads_each_byte_once() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let product = make_product(d, "fan", 3, 1, 2 << 20, 41);
    let out = pack_ok(d, &product.manifest, &d.join("bundles"));
    // One registry alone: the bytes read of a plain sync.
    let single = Registry::start(Mode::Plain);
    let one = d.join("one");
    std::fs::create_dir_all(&one).unwrap();
    let cfg = sync_config(&one, &out, &single.host(), None);
    let o = sync_cmd(&one, &cfg, &["--json"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let read_one = json_of(&o)["bytesRead"].as_u64().unwrap();

    let (a, b) = (Registry::start(Mode::Plain), Registry::start(Mode::Plain));
    let c = Registry::start(Mode::BasicAuth);
    let three = d.join("three");
    std::fs::create_dir_all(&three).unwrap();
    let creds = (support::registry::USER, support::registry::PASSWORD);
    let cfg = fanout_config(
        &three,
        &out,
        &a.host(),
        &[(b.host(), None), (c.host(), Some(creds))],
    );
    let o = sync_cmd(&three, &cfg, &["--json"]).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let v = json_of(&o);
    for reg in [&a, &b, &c] {
        assert_synced(&Http::new(reg), &product.images);
    }
    let targets = v["targets"].as_array().unwrap();
    assert_eq!(targets.len(), 3, "{v}");
    assert!(
        targets
            .iter()
            .all(|t| t["ok"] == true && t["imagesPushed"] == 3),
        "{v}"
    );
    let read_three = v["bytesRead"].as_u64().unwrap();
    let unique = layout_bytes(&product);
    eprintln!("bytes read: 1 target {read_one}, 3 targets {read_three}; unique {unique}");
    assert!(
        (read_three as f64) < read_one as f64 + 0.1 * unique as f64,
        "3 targets read {read_three} bytes, 1 target {read_one} (unique {unique})"
    );
}

/// A mirror that is down fails alone: the main target and the other
/// mirror get every image, the run fails naming the one that is down, and
/// the per-target summary says which.
#[test]
fn a_mirror_that_is_down_fails_alone() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let product = make_product(d, "half", 2, 1, 256 << 10, 43);
    let out = pack_ok(d, &product.manifest, &d.join("bundles"));
    let (a, b) = (Registry::start(Mode::Plain), Registry::start(Mode::Plain));
    let down = format!("127.0.0.1:{}", support::registry::free_port());
    let cfg = fanout_config(
        d,
        &out,
        &a.host(),
        &[(down.clone(), None), (b.host(), None)],
    );
    let o = sync_cmd(d, &cfg, &["--json"]).output().unwrap();
    let err = stderr(&o);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains(&format!("1 target failed: {down}")), "{err}");
    for reg in [&a, &b] {
        assert_synced(&Http::new(reg), &product.images);
    }
    let v = json_of(&o);
    let targets = v["targets"].as_array().unwrap();
    let line = |r: &str| targets.iter().find(|t| t["registry"] == r).unwrap();
    assert_eq!(line(&down)["ok"], false, "{v}");
    assert_eq!(line(&a.host())["ok"], true, "{v}");
    assert_eq!(line(&b.host())["imagesPushed"], 2, "{v}");
}
