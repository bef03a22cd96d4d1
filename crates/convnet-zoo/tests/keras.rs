//! Our InceptionV3 against TensorFlow/Keras's on the same weights and
//! inputs: `fixtures/make_inception.py` builds Keras's model, sets every
//! weight from the formula recomputed here by `fill`, and stores the input
//! and the activations at mixed0, mixed2, mixed7 and the output.

use std::path::{Path, PathBuf};

use convnet_nn::{clear_session, Model};
use convnet_tensor::{safetensors, Tensor};
use convnet_zoo::inception_v3::InceptionV3;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// `n` values in [-1, 1) from a 64-bit hash of (seed, index): the same
/// integers as `fill` in make_inception.py, then the same f64 arithmetic.
fn fill(seed: u64, n: usize) -> Vec<f64> {
    (0..n as u64)
        .map(|i| {
            let mut x = i
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                .wrapping_add(seed.wrapping_mul(0xD1B5_4A32_D192_ED03));
            x ^= x >> 32;
            x = x.wrapping_mul(0xD6E8_FEB8_6659_FD93);
            x ^= x >> 32;
            x = x.wrapping_mul(0xD6E8_FEB8_6659_FD93);
            x ^= x >> 32;
            let u = (x >> 40) as f64 / (1u64 << 24) as f64;
            2.0 * u - 1.0
        })
        .collect()
}

fn tensor(shape: &[usize], values: impl Iterator<Item = f64>) -> Tensor {
    Tensor::from_vec(shape, values.map(|v| v as f32).collect()).unwrap()
}

/// 5 for `conv2d_5`, 0 for `conv2d` or `predictions`, as make_inception.py
/// numbers layers.
fn name_number(name: &str) -> u64 {
    match name.rsplit_once('_') {
        Some((base, n))
            if !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) =>
        {
            n.parse().unwrap()
        }
        _ => 0,
    }
}

/// Set every weight of `model` as make_inception.py does.
fn set_formula_weights(model: &Model) {
    for name in model.layer_names() {
        let layer = model.get_layer(&name).unwrap();
        let weights = layer.weights();
        if weights.is_empty() {
            continue;
        }
        let class = layer.class_name();
        let k = name_number(&name);
        let values = weights
            .iter()
            .map(|w| {
                let shape = w.value.shape().to_vec();
                let n = w.value.len();
                match (class, w.name) {
                    ("Conv2D", "kernel") => {
                        let fan_in = (shape[0] * shape[1] * shape[2]) as f64;
                        let s = (6.0 / fan_in).sqrt();
                        tensor(&shape, fill(1000 + k, n).into_iter().map(|v| v * s))
                    }
                    ("BatchNormalization", "beta") => {
                        tensor(&shape, fill(2000 + k, n).into_iter().map(|v| v * 0.2))
                    }
                    ("BatchNormalization", "moving_mean") => {
                        tensor(&shape, fill(3000 + k, n).into_iter().map(|v| v * 0.2))
                    }
                    ("BatchNormalization", "moving_variance") => {
                        tensor(&shape, fill(4000 + k, n).into_iter().map(|v| 1.0 + v * 0.2))
                    }
                    ("Dense", "kernel") => {
                        let s = (300.0 / shape[0] as f64).sqrt();
                        tensor(&shape, fill(5000 + k, n).into_iter().map(|v| v * s))
                    }
                    ("Dense", "bias") => {
                        tensor(&shape, fill(6000 + k, n).into_iter().map(|v| v * 0.1))
                    }
                    other => panic!("no formula for {name}/{other:?}"),
                }
            })
            .collect();
        layer.set_weights(values).unwrap();
    }
}

/// Keras's layer names (the input layer left out), from the fixture,
/// sorted: Keras 3 lists `model.layers` in a topological order, we list
/// them in the order they were made.
fn keras_layer_names(file: &safetensors::SafeTensors) -> Vec<String> {
    let mut names: Vec<String> = serde_json::from_str(&file.metadata["layer_names"]).unwrap();
    assert_eq!(names[0], "input_layer");
    names.remove(0);
    names.sort();
    names
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}

/// Largest difference relative to the reference's largest magnitude.
fn rel_err(ours: &Tensor, keras: &Tensor) -> f32 {
    assert_eq!(ours.shape(), keras.shape());
    ours.max_abs_diff(keras).unwrap() / keras.max_abs()
}

#[test]
fn notop_matches_keras_at_mixed0_mixed2_mixed7_and_output() {
    let file = safetensors::load(&fixture("inception_notop.safetensors")).unwrap();
    clear_session();
    let model = InceptionV3::new()
        .include_top(false)
        .input_shape(99, 99, 3)
        .build()
        .unwrap();
    assert_eq!(sorted(model.layer_names()), keras_layer_names(&file));
    set_formula_weights(&model);
    let x = file.get("input").unwrap();
    let formula = tensor(x.shape(), fill(7, x.len()).into_iter());
    assert_eq!(x, &formula, "the fixture's input is fill(7)");
    for tap in ["mixed0", "mixed2", "mixed7"] {
        let out = model.get_layer(tap).unwrap().output();
        let cut = Model::new(&model.input(), &out).unwrap();
        let ours = cut.predict(x, 2).unwrap();
        let err = rel_err(&ours, file.get(tap).unwrap());
        eprintln!("{tap}: relative error {err:e}");
        assert!(err < 1e-4, "{tap}: relative error {err:e}");
    }
    let ours = model.predict(x, 2).unwrap();
    let err = rel_err(&ours, file.get("output").unwrap());
    eprintln!("output: relative error {err:e}");
    assert!(err < 1e-4, "output: relative error {err:e}");
}

/// At the mission's 150x150 input mixed4 to mixed7 run on 7x7 maps, where
/// the 1x7 and 7x1 layers take Winograd F(7, 7) (at 99x99 their 4x4 maps
/// take F(4, 7)).
#[test]
fn notop_matches_keras_at_150x150() {
    let file = safetensors::load(&fixture("inception_notop_150.safetensors")).unwrap();
    clear_session();
    let model = InceptionV3::new()
        .include_top(false)
        .input_shape(150, 150, 3)
        .build()
        .unwrap();
    assert_eq!(sorted(model.layer_names()), keras_layer_names(&file));
    set_formula_weights(&model);
    let x = file.get("input").unwrap();
    let formula = tensor(x.shape(), fill(7, x.len()).into_iter());
    assert_eq!(x, &formula, "the fixture's input is fill(7)");
    let out = model.get_layer("mixed7").unwrap().output();
    let cut = Model::new(&model.input(), &out).unwrap();
    let ours = cut.predict(x, 1).unwrap();
    let err = rel_err(&ours, file.get("mixed7").unwrap());
    eprintln!("mixed7 at 150x150: relative error {err:e}");
    assert!(err < 1e-4, "mixed7 at 150x150: relative error {err:e}");
    let ours = model.predict(x, 1).unwrap();
    let err = rel_err(&ours, file.get("output").unwrap());
    eprintln!("output at 150x150: relative error {err:e}");
    assert!(err < 1e-4, "output at 150x150: relative error {err:e}");
}

#[test]
fn top_matches_keras() {
    let file = safetensors::load(&fixture("inception_top.safetensors")).unwrap();
    clear_session();
    let model = InceptionV3::new()
        .input_shape(75, 75, 3)
        .classes(10)
        .build()
        .unwrap();
    assert_eq!(sorted(model.layer_names()), keras_layer_names(&file));
    set_formula_weights(&model);
    let ours = model.predict(file.get("input").unwrap(), 1).unwrap();
    let err = rel_err(&ours, file.get("output").unwrap());
    eprintln!("predictions: relative error {err:e}");
    assert!(err < 1e-4, "predictions: relative error {err:e}");
}

#[test]
fn formula_weights_change_the_output() {
    // The comparison above is meaningful only if the weights matter: the
    // same model with its initial weights gives a different output.
    let file = safetensors::load(&fixture("inception_top.safetensors")).unwrap();
    clear_session();
    let model = InceptionV3::new()
        .input_shape(75, 75, 3)
        .classes(10)
        .build()
        .unwrap();
    let ours = model.predict(file.get("input").unwrap(), 1).unwrap();
    assert!(rel_err(&ours, file.get("output").unwrap()) > 1e-2);
}
