//! Fuzz target: a volume or snapshot id from a request, through snapcsi::fuzzing::id.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = snapcsi::fuzzing::id(data);
});
