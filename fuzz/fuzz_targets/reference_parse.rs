//! `Reference::parse` on arbitrary strings: never panics; what it accepts
//! prints back to a string that parses to the same reference.
#![no_main]
use bundler::oci::reference::Reference;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = Reference::parse(s) {
        let _ = r.tag_or_latest();
        let _ = r.manifest_reference();
        let _ = r.last_segment();
        let _ = r.registry_as_path();
        let printed = r.to_string();
        let again = Reference::parse(&printed).unwrap_or_else(|e| {
            panic!("{s:?} parsed, but its display {printed:?} does not: {e:#}")
        });
        assert_eq!(again, r, "display of {s:?} does not round-trip");
    }
});
