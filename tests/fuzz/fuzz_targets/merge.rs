#![no_main]
//! Fuzz the packument merge: no panic, no lost version.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzzing::merge_bytes(data));
