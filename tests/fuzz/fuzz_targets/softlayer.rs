//! Fuzz target: a SoftLayer answer body (JSON), through snapcsi::fuzzing::softlayer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = snapcsi::fuzzing::softlayer(data);
});
