//! Reliability (issue 6), through the `bundler` binary against real
//! `docker-registry` instances: syncs killed with SIGKILL at random points
//! (monolithic and chunked uploads), sync and pack through a faulty network
//! (503s, dropped connections), a registry that stays down, and packs
//! killed mid-write.
mod reliability_support;
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reliability_support::*;
use support::faulty_proxy::{Faults, FaultyProxy};
use support::registry::{Mode, Registry};
use support::{bundler_bin, stderr, stdout};

/// splitmix64, for seeded kill delays.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Start `bundler args` in `dir` with its own upload-state dir; stdout
/// discarded, stderr as given.
fn spawn_bundler(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    stderr: Stdio,
) -> std::process::Child {
    let mut c = Command::new(bundler_bin());
    c.current_dir(dir)
        .args(args)
        .env("BUNDLER_STATE_DIR", dir.join(".upload-state"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr);
    for (k, v) in env {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

/// SIGKILL `child`; returns whether it was still running (and then checks
/// that the kill is what ended it).
fn sigkill(mut child: std::process::Child) -> bool {
    let running = child.try_wait().unwrap().is_none();
    // Child::kill is SIGKILL on Unix.
    let _ = child.kill();
    let status = child.wait().unwrap();
    if running {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(9), "{status:?}");
    }
    running
}

/// Start `bundler args` in `dir` (output discarded), SIGKILL it after
/// `delay`. Returns whether it was still running when killed.
fn kill_after(dir: &Path, args: &[&str], env: &[(&str, &str)], delay: Duration) -> bool {
    let child = spawn_bundler(dir, args, env, Stdio::null());
    std::thread::sleep(delay);
    sigkill(child)
}

/// Start `bundler sync` in `dir`, read its per-blob progress lines, and
/// SIGKILL it right after its `uploads`-th completed blob upload (plus a
/// seeded few milliseconds), so the kill lands while other blobs of the run
/// are still moving, whatever the machine's speed. Returns whether it was
/// still running when killed.
fn kill_after_uploads(
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    uploads: usize,
    extra: Duration,
) -> bool {
    use std::io::BufRead;
    let mut child = spawn_bundler(dir, args, env, Stdio::piped());
    let reader = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut seen = 0;
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if line.starts_with("uploaded ") {
            seen += 1;
            if seen >= uploads {
                std::thread::sleep(extra);
                break;
            }
        }
    }
    sigkill(child)
}

/// Kill `bundler sync` 4 times, each after a seeded number (1-5) of
/// completed blob uploads while others are in flight, auditing the target after each kill (no tag may point at a
/// manifest whose blobs are missing or damaged), then let a run complete.
fn kill_sync_repeatedly(seed: u64, env: &[(&str, &str)]) -> serde_json::Value {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    // 8 images x (3 x 4 MiB + a shared small layer): ~96 MiB to move.
    let p = make_product(d, "rel", 8, 3, 4 << 20, seed);
    let out = pack_ok(d, &p.manifest, &d.join("out"));
    let reg = Registry::start(Mode::Plain);
    let http = Http::new(&reg);
    let cfg = sync_config(d, &out, &reg.host(), None);
    let args = [
        "sync",
        "--config",
        cfg.to_str().unwrap(),
        "--insecure",
        "--concurrency",
        "3",
    ];
    let mut rng = Rng(seed);
    let mut killed_running = 0;
    for round in 0..4 {
        let uploads = rng.range(1, 5) as usize;
        let extra = Duration::from_millis(rng.range(0, 20));
        if kill_after_uploads(d, &args, env, uploads, extra) {
            killed_running += 1;
        }
        // After every kill: whatever is tagged is complete and readable.
        let tags = http.audit();
        for (t, digest) in &tags {
            assert!(
                p.images
                    .iter()
                    .any(|i| t == &format!("{}:{}", target_repo(i), i.tag) && &i.digest == digest),
                "round {round}: unexpected tag or digest {t} = {digest}"
            );
        }
        let sessions = std::fs::read_dir(d.join(".upload-state"))
            .map(|r| r.count())
            .unwrap_or(0);
        eprintln!(
            "round {round}: killed after {uploads} uploads (+{extra:?}), {} of {} images tagged, {sessions} upload sessions kept",
            tags.len(),
            p.images.len()
        );
    }
    assert!(
        killed_running >= 3,
        "the kills should land while sync runs (only {killed_running} did)"
    );
    let mut full = args.to_vec();
    full.push("--json");
    let mut env_v = env.to_vec();
    env_v.push(("BUNDLER_LOG", "bundler=info"));
    let o = run(d, &full, &env_v);
    assert!(
        o.status.success(),
        "final sync: {}\n{}",
        stderr(&o),
        stdout(&o)
    );
    // Informative: chunked sessions a kill left between two PATCHes are
    // resumed; one killed in the middle of a PATCH is cancelled by the
    // registry (its `_state` offset no longer matches) and starts over.
    for l in stderr(&o).lines().filter(|l| l.contains("resuming upload")) {
        eprintln!("{l}");
    }
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_synced(&http, &p.images);
    // A further run has nothing left to do.
    let o = run(d, &full, env);
    assert!(o.status.success(), "{}", stderr(&o));
    let again: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(again["imagesUnchanged"], 8, "{again}");
    assert_eq!(again["bytesUploaded"], 0, "{again}");
    v
}

#[test]
fn sync_killed_four_times_mid_transfer_then_completes_with_intact_images() {
    let v = kill_sync_repeatedly(11, &[]);
    eprintln!("final run: {v}");
}

#[test]
fn chunked_sync_killed_four_times_resumes_and_completes_with_intact_images() {
    // Every 4 MiB layer goes up as a resumable chunked upload of 512 KiB
    // PATCHes; killed runs leave sessions that the next run resumes.
    let v = kill_sync_repeatedly(
        23,
        &[
            ("BUNDLER_CHUNK_THRESHOLD", "1048576"),
            ("BUNDLER_CHUNK_SIZE", "524288"),
        ],
    );
    eprintln!("final run: {v}");
}

/// A docker config.json with the test registry's credentials for `host`.
fn docker_config(dir: &Path, host: &str) -> std::path::PathBuf {
    use base64::Engine;
    let d = dir.join("docker");
    std::fs::create_dir_all(&d).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        support::registry::USER,
        support::registry::PASSWORD
    ));
    std::fs::write(
        d.join("config.json"),
        format!("{{\"auths\":{{\"{host}\":{{\"auth\":\"{auth}\"}}}}}}"),
    )
    .unwrap();
    d
}

/// Sync 8 images (2 x 512 KiB layers each) into a basic-auth registry
/// behind a proxy answering ~10 % 503 and dropping ~3 % of connections.
fn sync_through_flaky_proxy(seed: u64, env: &[(&str, &str)]) {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let p = make_product(d, "flaky", 8, 2, 512 << 10, seed);
    let out = pack_ok(d, &p.manifest, &d.join("out"));
    let reg = Registry::start(Mode::BasicAuth);
    let proxy = FaultyProxy::start(reg.port, Faults::flaky(seed));
    // Whatever the odds give, the first requests certainly meet a 503 and a
    // dropped connection.
    proxy.fail_next_503(1);
    proxy.drop_next(1);
    let cfg = sync_config(
        d,
        &out,
        &proxy.host(),
        Some((support::registry::USER, support::registry::PASSWORD)),
    );
    let started = Instant::now();
    let o = run(
        d,
        &[
            "sync",
            "--config",
            cfg.to_str().unwrap(),
            "--insecure",
            "--json",
        ],
        env,
    );
    let stats = proxy.stats();
    assert!(
        o.status.success(),
        "sync through the flaky proxy failed ({stats:?}): {}\n{}",
        stderr(&o),
        stdout(&o)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    eprintln!(
        "flaky sync: {:?}, proxy {stats:?}, retries {}",
        started.elapsed(),
        v["retries"]
    );
    assert!(stats.injected() > 0, "{stats:?}");
    assert!(v["retries"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["imagesPushed"], 8, "{v}");
    assert_synced(&Http::new(&reg), &p.images);
}

#[test]
fn sync_through_a_flaky_network_completes_by_retrying() {
    sync_through_flaky_proxy(101, &[]);
}

#[test]
fn chunked_sync_through_a_flaky_network_completes_by_retrying() {
    sync_through_flaky_proxy(
        202,
        &[
            ("BUNDLER_CHUNK_THRESHOLD", "262144"),
            ("BUNDLER_CHUNK_SIZE", "131072"),
        ],
    );
}

/// A source registry (basic auth) holding the product's images under
/// `rel/appN:1.N`, pushed directly (not through any proxy).
fn source_with_images(d: &Path, seed: u64, n: usize) -> (Registry, Product) {
    let src = Registry::start(Mode::BasicAuth);
    let p = make_product(d, "rel", n, 2, 512 << 10, seed);
    for (i, img) in p.images.iter().enumerate() {
        src.skopeo_copy_in(
            &format!("oci:{}:{}", p.layout.display(), img.reference),
            &format!("rel/app{i}:{}", img.tag),
        );
    }
    (src, p)
}

#[test]
fn pack_through_a_flaky_network_completes_by_retrying() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    let (src, p) = source_with_images(d, 303, 8);
    let proxy = FaultyProxy::start(src.port, Faults::flaky(303));
    proxy.fail_next_503(1);
    proxy.drop_next(1);
    let refs: Vec<String> = (0..p.images.len())
        .map(|i| format!("{}/rel/app{i}:{}", proxy.host(), p.images[i].tag))
        .collect();
    let manifest = registry_manifest(d, "viaproxy", &refs);
    let docker = docker_config(d, &proxy.host());
    let out = d.join("out");
    let o = run(
        d,
        &[
            "pack",
            manifest.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "--insecure",
            "--json",
        ],
        &[("DOCKER_CONFIG", docker.to_str().unwrap())],
    );
    let stats = proxy.stats();
    assert!(
        o.status.success(),
        "pack through the flaky proxy failed ({stats:?}): {}\n{}",
        stderr(&o),
        stdout(&o)
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    eprintln!("flaky pack: proxy {stats:?}, retries {}", v["retries"]);
    assert!(stats.injected() > 0, "{stats:?}");
    assert!(v["retries"].as_u64().unwrap() > 0, "{v}");
    // The bundle holds every image with the source's digest, and verifies.
    let bundle = out.join("viaproxy-images_1.0.0.bundle.tar");
    let vo = run(d, &["verify", bundle.to_str().unwrap()], &[]);
    assert!(vo.status.success(), "{}", stderr(&vo));
    let io = run(d, &["inspect", bundle.to_str().unwrap(), "--json"], &[]);
    assert!(io.status.success(), "{}", stderr(&io));
    let text = stdout(&io);
    for img in &p.images {
        assert!(text.contains(&img.digest), "{} missing: {text}", img.digest);
    }
}

/// A registry that stays down: the verb fails with a clear error after its
/// bounded retries, well within `limit`, and exits non-zero.
fn assert_fails_fast_when_down(d: &Path, args: &[&str], env: &[(&str, &str)], host: &str) {
    let started = Instant::now();
    let o = run(d, args, env);
    let took = started.elapsed();
    let err = stderr(&o);
    eprintln!("{:?} against a down registry: {took:?}\n{err}", args[0]);
    assert!(!o.status.success(), "{err}");
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(took < Duration::from_secs(60), "took {took:?}: {err}");
    assert!(
        err.contains(host),
        "the error must name the registry: {err}"
    );
    assert!(
        err.contains("attempts"),
        "the error must say it gave up after retrying: {err}"
    );
}

#[test]
fn a_registry_that_stays_down_fails_sync_and_pack_clearly_in_bounded_time() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    // sync
    let p = make_product(d, "down", 2, 1, 64 << 10, 5);
    let out = pack_ok(d, &p.manifest, &d.join("out"));
    let reg = Registry::start(Mode::Plain);
    let proxy = FaultyProxy::start(reg.port, Faults::none());
    proxy.set_down(true);
    let cfg = sync_config(d, &out, &proxy.host(), None);
    assert_fails_fast_when_down(
        d,
        &["sync", "--config", cfg.to_str().unwrap(), "--insecure"],
        &[],
        &proxy.host(),
    );
    assert!(proxy.stats().refused > 0);
    assert_registry_empty(&Http::new(&reg), "sync against a down registry");
    // pack
    let manifest = registry_manifest(d, "fromdown", &[format!("{}/rel/app0:1.0", proxy.host())]);
    let pout = d.join("pack-out");
    assert_fails_fast_when_down(
        d,
        &[
            "pack",
            manifest.to_str().unwrap(),
            "--output",
            pout.to_str().unwrap(),
            "--insecure",
        ],
        &[],
        &proxy.host(),
    );
    assert_no_bundle_files(&pout);
    // Nothing listening at all (connection refused).
    drop(proxy);
    let gone = format!("127.0.0.1:{}", support::registry::free_port());
    let cfg = sync_config(d, &out, &gone, None);
    assert_fails_fast_when_down(
        d,
        &["sync", "--config", cfg.to_str().unwrap(), "--insecure"],
        &[],
        &gone,
    );
}

/// No bundle or package under a final name, and no temp file left.
fn assert_no_bundle_files(dir: &Path) {
    let names: Vec<String> = std::fs::read_dir(dir)
        .map(|r| {
            r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        names.is_empty(),
        "left behind in {}: {names:?}",
        dir.display()
    );
}

/// SIGKILL `bundler pack` at seeded random points: nothing incomplete is
/// ever found under a final name (every `*.bundle.tar` there verifies, the
/// package lists every bundle), and a later pack completes.
#[test]
fn pack_killed_mid_write_leaves_nothing_incomplete_under_a_final_name() {
    let work = tempfile::tempdir().unwrap();
    let d = work.path();
    // Two bundles (a chart-less image bundle per manifest entry kind is
    // enough): ~72 MiB copied from a local OCI layout.
    let p = make_product(d, "killpack", 6, 3, 4 << 20, 9);
    let out = d.join("out");
    let args = [
        "pack",
        p.manifest.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    // How long a whole pack takes here; kills land at random points of it.
    // (the faster of two runs: the first reads cold files).
    let mut whole = u64::MAX;
    for _ in 0..2 {
        let _ = std::fs::remove_dir_all(&out);
        let t = Instant::now();
        pack_ok(d, &p.manifest, &out);
        whole = whole.min(t.elapsed().as_millis() as u64);
    }
    let mut rng = Rng(9);
    let mut killed_running = 0;
    for round in 0..5 {
        let _ = std::fs::remove_dir_all(&out);
        let delay = Duration::from_millis(rng.range(5, (whole * 9 / 10).max(10)));
        if kill_after(d, &args, &[], delay) {
            killed_running += 1;
        }
        let mut finals = Vec::new();
        for e in std::fs::read_dir(&out).into_iter().flatten() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            if name.ends_with(".bundle.tar") && !name.starts_with('.') {
                let b = out.join(&name);
                let v = run(d, &["verify", b.to_str().unwrap()], &[]);
                assert!(
                    v.status.success(),
                    "round {round}: incomplete bundle under its final name {name}: {}",
                    stderr(&v)
                );
                finals.push(name);
            } else if name.ends_with("_amd64.tar") {
                let list = Command::new("tar")
                    .arg("tf")
                    .arg(out.join(&name))
                    .output()
                    .unwrap();
                assert!(
                    list.status.success(),
                    "round {round}: package {name} is not a whole tar"
                );
                assert!(
                    stdout(&list).contains(&p.bundle_name),
                    "round {round}: package {name} lacks the bundle"
                );
                finals.push(name);
            }
        }
        eprintln!("round {round}: killed after {delay:?} of ~{whole} ms: final files {finals:?}");
    }
    assert!(
        killed_running >= 2,
        "only {killed_running} kills landed mid-pack"
    );
    // A pack after the kills completes.
    let _ = std::fs::remove_dir_all(&out);
    pack_ok(d, &p.manifest, &out);
    assert!(out.join(&p.bundle_name).is_file());
}
