//! `load_weights`: what loads, what is refused, and how the refusal reads.

use std::collections::BTreeMap;
use std::path::Path;

use convnet_nn::{clear_session, unique_name, Model};
use convnet_tensor::{safetensors, Tensor};
use convnet_zoo::inception_v3::{load_weights, InceptionV3};
use convnet_zoo::ZooError;

fn small_notop() -> Model {
    InceptionV3::new()
        .include_top(false)
        .input_shape(75, 75, 3)
        .build()
        .unwrap()
}

/// The model's weights with every value made distinct per tensor, so a
/// weight loaded into the wrong place shows.
fn marked_weights(model: &Model) -> Vec<(String, Tensor)> {
    model
        .get_weights()
        .into_iter()
        .enumerate()
        .map(|(i, (k, v))| {
            let t = Tensor::from_fn(v.shape(), |j| i as f32 + 1e-3 * (j % 97) as f32);
            (k, t)
        })
        .collect()
}

fn save(path: &Path, tensors: &[(String, Tensor)]) {
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    safetensors::save(path, &refs, &BTreeMap::new()).unwrap();
}

#[test]
fn loads_a_fresh_session_file_into_offset_names_by_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.safetensors");
    clear_session();
    let fresh = small_notop();
    let file = marked_weights(&fresh);
    assert_eq!(file[0].0, "conv2d/kernel");
    save(&path, &file);

    // Same names: loads as is.
    let mut same = fresh;
    load_weights(&mut same, &path).unwrap();
    assert_eq!(same.get_weights(), file);

    // Built after other layers: conv2d_3 ..., batch_normalization_2 ...
    clear_session();
    for _ in 0..3 {
        unique_name("conv2d");
    }
    for _ in 0..2 {
        unique_name("batch_normalization");
    }
    let mut offset = small_notop();
    assert_eq!(offset.get_weights()[0].0, "conv2d_3/kernel");
    load_weights(&mut offset, &path).unwrap();
    let loaded = offset.get_weights();
    assert_eq!(loaded.len(), file.len());
    for ((ours, a), (theirs, b)) in loaded.iter().zip(&file) {
        assert_eq!(a, b, "{ours} did not get {theirs}");
    }

    // A mismatch found through that mapping names both sides.
    let mut bad = file.clone();
    bad[0].1 = Tensor::zeros(&[3, 3, 3, 31]);
    save(&path, &bad);
    let msg = load_weights(&mut offset, &path).unwrap_err().to_string();
    assert!(
        msg.contains(
            "\"conv2d/kernel\" (for the model's \"conv2d_3/kernel\") has shape (3, 3, 3, 31) \
             in the file, the model needs (3, 3, 3, 32)"
        ),
        "{msg}"
    );
}

#[test]
fn names_every_offender_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.safetensors");
    clear_session();
    let mut model = small_notop();
    let before = model.get_weights();
    let mut file = marked_weights(&model);
    file.retain(|(k, _)| k != "conv2d_5/kernel");
    for (k, v) in file.iter_mut() {
        if k == "batch_normalization_3/beta" {
            *v = Tensor::zeros(&[7]);
        }
    }
    file.push(("extra/kernel".into(), Tensor::zeros(&[2, 2])));
    save(&path, &file);
    let err = load_weights(&mut model, &path).unwrap_err();
    let ZooError::Weights {
        path: shown,
        problems,
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(shown, &path.display().to_string());
    assert_eq!(problems.len(), 3, "{problems:?}");
    let msg = err.to_string();
    for needle in [
        "broken.safetensors",
        "missing \"conv2d_5/kernel\", shape (1, 1, 192, 64)",
        "\"batch_normalization_3/beta\" has shape (7,) in the file, the model needs (80,)",
        "unexpected \"extra/kernel\"",
    ] {
        assert!(msg.contains(needle), "no `{needle}` in: {msg}");
    }
    // Nothing was loaded.
    assert_eq!(model.get_weights(), before);
}

/// A safetensors file written by hand, with any dtype.
fn raw_safetensors(path: &Path, entries: &[(&str, &str, &[usize], Vec<u8>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in entries {
        let begin = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [begin, data.len()]}),
        );
    }
    let header = serde_json::Value::Object(header).to_string();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&data);
    std::fs::write(path, out).unwrap();
}

#[test]
fn refuses_integer_tensors_and_unreadable_files() {
    let dir = tempfile::tempdir().unwrap();
    clear_session();
    let mut model = small_notop();
    let weights = model.get_weights();
    // Every weight present; one stored as I32.
    let path = dir.path().join("ints.safetensors");
    let mut entries: Vec<(&str, &str, &[usize], Vec<u8>)> = Vec::new();
    for (k, v) in &weights {
        let bytes: Vec<u8> = v.to_vec().iter().flat_map(|x| x.to_le_bytes()).collect();
        let dtype = if k == "batch_normalization/moving_mean" {
            "I32"
        } else {
            "F32"
        };
        entries.push((k.as_str(), dtype, v.shape(), bytes));
    }
    raw_safetensors(&path, &entries);
    let msg = load_weights(&mut model, &path).unwrap_err().to_string();
    assert!(
        msg.contains("\"batch_normalization/moving_mean\" has dtype I32"),
        "{msg}"
    );
    assert!(msg.contains("1 problem(s)"), "{msg}");

    let missing = dir.path().join("nowhere.safetensors");
    let msg = load_weights(&mut model, &missing).unwrap_err().to_string();
    assert!(msg.contains("nowhere.safetensors"), "{msg}");

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"not a safetensors file at all").unwrap();
    let msg = load_weights(&mut model, &garbage).unwrap_err().to_string();
    assert!(msg.contains("garbage.safetensors"), "{msg}");
}
