//! Fuzz target: a ListSnapshots/ListVolumes starting_token and the cursor it carries, through snapcsi::fuzzing::page_token.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = snapcsi::fuzzing::page_token(data);
});
