//! Fuzz target: an SCP answer body (JSON), through snapcsi::fuzzing::scp.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = snapcsi::fuzzing::scp(data);
});
