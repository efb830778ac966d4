//! Fuzz target: a Cinder answer body (JSON), through snapcsi::fuzzing::cinder.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = snapcsi::fuzzing::cinder(data);
});
