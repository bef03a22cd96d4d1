//! The safetensors reader on arbitrary bytes: an error or a file, never a
//! panic, and no allocation of what a header claims before it is checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = convnet_tensor::safetensors::load_bytes(data, "fuzz.safetensors") {
        // Whatever loaded is whole: every tensor's values are readable.
        for (_, t) in &file.tensors {
            let _ = t.values().iter().sum::<f32>();
        }
    }
});
