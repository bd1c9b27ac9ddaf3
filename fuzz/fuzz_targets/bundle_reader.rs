//! `BundleReader::open` on arbitrary bytes as a bundle file, then every
//! accessor (and `verify` with the `verify` feature): errors are fine,
//! panics, hangs and huge allocations are not.
#![no_main]
use std::path::PathBuf;
use std::sync::OnceLock;

use bundler::bundle::reader::BundleReader;
use libfuzzer_sys::fuzz_target;

fn workdir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("bundler-fuzz-bundle-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    })
}

fuzz_target!(|data: &[u8]| {
    let path = workdir().join("input.bundle.tar");
    std::fs::write(&path, data).expect("write input");
    let Ok(reader) = BundleReader::open(&path) else {
        return;
    };
    let _ = reader.hints();
    let _ = reader.chart_files();
    let _ = reader.chart_name_version();
    let _ = reader.read_file("bundle.json");
    let _ = reader.read_file("hints.yaml");
    for img in &reader.images {
        for b in &img.blobs {
            if let Some(ext) = reader.blob(&b.digest) {
                assert!(
                    ext.offset.saturating_add(ext.size) <= data.len() as u64,
                    "blob {} extent {ext:?} lies past the end of a {}-byte file",
                    b.digest,
                    data.len()
                );
            }
        }
    }
    #[cfg(feature = "verify")]
    {
        let progress = bundler::progress::Progress::new(bundler::progress::Mode::Quiet);
        let _ = bundler::bundle::verify::verify(&reader, &progress);
    }
});
