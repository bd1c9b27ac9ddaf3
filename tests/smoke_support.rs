//! The test support itself works against the real programs: a registry in
//! every mode accepts an image from skopeo and serves it back byte for byte.
mod support;
use support::registry::{Mode, Registry};

#[test]
fn registries_in_every_mode_round_trip_an_image() {
    for mode in [Mode::Plain, Mode::BasicAuth, Mode::Tls, Mode::TlsBasicAuth] {
        let reg = Registry::start(mode);
        let work = tempfile::tempdir().unwrap();
        let digest = support::images::push_simple(&reg, work.path(), "smoke/app:1", &[b"hello"]);
        let raw = reg.raw_manifest("smoke/app:1").expect("manifest served");
        assert_eq!(support::images::blob(raw).digest, digest, "mode {mode:?}");
    }
}

#[test]
fn multiarch_index_round_trips() {
    let reg = Registry::start(Mode::Plain);
    let work = tempfile::tempdir().unwrap();
    let (idx, _, _) =
        support::images::push_multiarch(&reg, work.path(), "smoke/multi:1", b"shared base");
    let raw = reg.raw_manifest("smoke/multi:1").unwrap();
    assert_eq!(support::images::blob(raw).digest, idx);
}
