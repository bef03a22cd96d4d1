//! The IDX reader (gzip or raw, by magic) on arbitrary bytes.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = convnet_data::idx::parse_idx(data, Path::new("fuzz-idx3-ubyte"));
});
