//! The image-folder decoder path on arbitrary bytes (written to a file
//! under each extension the folders accept): an error naming the file or
//! an image, never a panic, never an allocation past the pixel limit.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = std::env::temp_dir().join(format!("convnet-fuzz-{}", std::process::id()));
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    for ext in ["jpg", "png", "bmp", "tif"] {
        let path = dir.join(format!("input.{ext}"));
        if std::fs::write(&path, data).is_ok() {
            let _ = convnet_data::directory::decode_image(&path, 4_000_000);
        }
    }
});
