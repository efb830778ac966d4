//! Fuzz target: a config file (TOML) and every instance section in it, through snapcsi::fuzzing::config.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = snapcsi::fuzzing::config(data);
});
