//! `SyncConfig::load` (load-image.yaml) and `BundleManifest::load` on an
//! arbitrary file: errors are fine, panics are not.
#![no_main]
use std::path::PathBuf;
use std::sync::OnceLock;

use bundler::config::{BundleManifest, SyncConfig};
use libfuzzer_sys::fuzz_target;

fn workdir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("bundler-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let path = workdir().join("input.yaml");
    std::fs::write(&path, data).expect("write input");
    let _ = SyncConfig::load(&path);
    let _ = BundleManifest::load(&path);
});
