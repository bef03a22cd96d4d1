//! The Keras legacy HDF5 reader on arbitrary bytes: an error or whole
//! layers, never a panic, and no allocation of what a length in the file
//! claims before it is checked against the bytes there.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(layers) = convnet_zoo::keras_h5::read_layers(data) {
        // Whatever was read is whole: each weight's values fill its shape.
        for l in &layers {
            for w in &l.weights {
                assert_eq!(w.values.len(), w.shape.iter().product::<usize>());
            }
        }
        // Convert with the file's own names (the mapping always fits).
        let names: Vec<String> = layers
            .iter()
            .filter(|l| !l.weights.is_empty())
            .map(|l| l.name.clone())
            .collect();
        if let Ok(bytes) = convnet_zoo::keras_h5::to_safetensors(layers, &names) {
            convnet_tensor::safetensors::load_bytes(&bytes, "fuzz.safetensors")
                .expect("the converter writes readable safetensors");
        }
    }
});
