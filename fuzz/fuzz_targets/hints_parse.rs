//! `Hints::parse` on arbitrary text: never panics; what it accepts
//! serialises to YAML that parses to the same hints.
#![no_main]
use bundler::chart::hints::Hints;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(h) = Hints::parse(s) {
        let yaml = h.to_yaml();
        if let Ok(again) = Hints::parse(&yaml) {
            assert_eq!(again, h, "to_yaml of {s:?} does not round-trip: {yaml:?}");
        }
    }
});
