//! Fuzz target: a Deltacloud answer body (XML or JSON), through snapcsi::fuzzing::deltacloud.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = snapcsi::fuzzing::deltacloud(data);
});
