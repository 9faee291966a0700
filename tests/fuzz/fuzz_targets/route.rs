#![no_main]
//! Fuzz the route parser: any path routes to a valid name or a clean error.
libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice::fuzzing::route_bytes(data));
