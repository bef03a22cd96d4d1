//! Conv2D (linear or ReLU) -> MaxPooling2D runs as one op that never keeps
//! the convolution's output, in training as in predict, and Conv2D ->
//! BatchNormalization -> ReLU -> MaxPooling2D with constant weights as one
//! folded convolution pooled as it is computed. Checked against the same
//! models with a linear activation layer between the convolution and the
//! pooling, which keeps the layers apart.

use convnet_kernels::Padding;
use convnet_nn::layers::{
    ActivationLayer, BatchNormalization, Conv2D, Dense, Flatten, MaxPooling2D,
};
use convnet_nn::optimizers::SGD;
use convnet_nn::{clear_session, Activation, Apply, Input, Loss, Model, SymbolicTensor};
use convnet_tensor::{Rng, Tensor};

/// `x`, or `x` through a linear activation layer (no fusion across it).
fn gap(x: SymbolicTensor, split: bool) -> SymbolicTensor {
    if split {
        ActivationLayer::new(Activation::Linear).apply(&x).unwrap()
    } else {
        x
    }
}

/// Two conv/pool stages: ReLU + 2x2 pooling, then a linear `same`
/// convolution + overlapping, padded 3x3 stride-2 pooling.
fn trainable(split: bool) -> Model {
    clear_session();
    let input = Input::new(&[13, 12, 3]);
    let x = Conv2D::new(4, (3, 3))
        .activation(Activation::Relu)
        .apply(&input)
        .unwrap();
    let x = MaxPooling2D::new((2, 2)).apply(&gap(x, split)).unwrap();
    let x = Conv2D::new(5, (3, 3))
        .padding(Padding::Same)
        .apply(&x)
        .unwrap();
    let x = MaxPooling2D::new((3, 3))
        .strides((2, 2))
        .padding(Padding::Same)
        .apply(&gap(x, split))
        .unwrap();
    let x = Flatten::new().apply(&x).unwrap();
    let x = Dense::new(2)
        .activation(Activation::Sigmoid)
        .apply(&x)
        .unwrap();
    Model::new(&input, &x).unwrap()
}

fn folded(split: bool) -> Model {
    clear_session();
    let input = Input::new(&[11, 11, 3]);
    let x = Conv2D::new(6, (3, 3))
        .use_bias(false)
        .apply(&input)
        .unwrap();
    let x = BatchNormalization::new().apply(&x).unwrap();
    let x = ActivationLayer::new(Activation::Relu).apply(&x).unwrap();
    let x = MaxPooling2D::new((3, 3))
        .strides((2, 2))
        .apply(&gap(x, split))
        .unwrap();
    let x = Flatten::new().apply(&x).unwrap();
    let x = Dense::new(3).apply(&x).unwrap();
    Model::new(&input, &x).unwrap()
}

/// Random weights (variances positive), the same for both models.
fn randomize(m: &Model, seed: u64) -> Vec<(String, Tensor)> {
    let mut rng = Rng::new(seed);
    let w: Vec<(String, Tensor)> = m
        .get_weights()
        .into_iter()
        .map(|(k, v)| {
            let (lo, hi) = if k.ends_with("moving_variance") {
                (0.3, 2.0)
            } else {
                (-0.7, 0.7)
            };
            let t = Tensor::rand_uniform(v.shape(), lo, hi, &mut rng);
            (k, t)
        })
        .collect();
    m.set_weights(&w).unwrap();
    w
}

fn assert_close(what: &str, a: &Tensor, b: &Tensor) {
    assert_eq!(a.shape(), b.shape(), "{what}");
    let (a, b) = (a.values(), b.values());
    let max = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
        assert!(
            (x - y).abs() <= 1e-5 * max.max(1.0),
            "{what}[{i}]: {x} vs {y}"
        );
    }
}

#[test]
fn conv_then_max_pool_trains_as_the_separate_layers() {
    let x = Tensor::rand_normal(&[5, 13, 12, 3], 0.0, 1.0, &mut Rng::new(1));
    let y = Tensor::from_fn(&[5, 2], |i| (i % 2) as f32);
    let mut fused = trainable(false);
    let weights = randomize(&fused, 7);
    let mut apart = trainable(true);
    apart.set_weights(&weights).unwrap();
    assert_close(
        "predict",
        &fused.predict(&x, 5).unwrap(),
        &apart.predict(&x, 5).unwrap(),
    );
    for m in [&mut fused, &mut apart] {
        m.compile(SGD::new(0.1, 0.9, false), Loss::BinaryCrossentropy, &[])
            .unwrap();
    }
    for step in 0..3 {
        let lf = fused.train_on_batch(&x, &y).unwrap()["loss"];
        let la = apart.train_on_batch(&x, &y).unwrap()["loss"];
        assert!(
            (lf - la).abs() <= 1e-5 * la.abs().max(1.0),
            "step {step}: loss {lf} vs {la}"
        );
    }
    for ((k, a), (_, b)) in fused.get_weights().iter().zip(apart.get_weights().iter()) {
        assert_close(k, a, b);
    }
    // The weights moved: the comparison above is not of untouched weights.
    for ((k, a), (_, b)) in fused.get_weights().iter().zip(&weights) {
        let moved = a
            .values()
            .iter()
            .zip(b.values().iter())
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(moved > 1e-4, "{k} moved by {moved}");
    }
}

#[test]
fn folded_batch_norm_then_max_pool_predicts_as_the_separate_layers() {
    let x = Tensor::rand_normal(&[4, 11, 11, 3], 0.0, 1.0, &mut Rng::new(2));
    let fused = folded(false);
    let weights = randomize(&fused, 9);
    let apart = folded(true);
    apart.set_weights(&weights).unwrap();
    let profiling = std::env::var_os("CONVNET_POOL_FUSION_PROFILE_CHILD").is_some();
    if profiling {
        convnet_autograd::profile::set_enabled(true);
    }
    assert_close(
        "predict",
        &fused.predict(&x, 4).unwrap(),
        &apart.predict(&x, 4).unwrap(),
    );
    if profiling {
        let report = convnet_autograd::profile::report();
        assert!(
            report.contains("forward conv2d+batch_normalization+activation+max_pooling2d "),
            "{report}"
        );
        assert!(
            report.contains("forward conv2d+batch_normalization+activation "),
            "{report}"
        );
        assert!(report.contains("forward max_pooling2d "), "{report}");
    }
}

/// Runs the test above alone in a child process with profiling on (the
/// profile is process-wide), to check which fused sections ran: the fused
/// model's pooling inside its convolution, the split model's apart.
#[test]
fn the_pooled_sections_are_the_ones_that_ran() {
    if std::env::var_os("CONVNET_POOL_FUSION_PROFILE_CHILD").is_some() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "folded_batch_norm_then_max_pool_predicts_as_the_separate_layers",
            "--test-threads=1",
        ])
        .env("CONVNET_POOL_FUSION_PROFILE_CHILD", "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}
