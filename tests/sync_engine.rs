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
