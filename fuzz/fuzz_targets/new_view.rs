//! libFuzzer entry point for `bft_fuzz::new_view` (see `fuzz/README.md`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| bft_fuzz::new_view(data));
