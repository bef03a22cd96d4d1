//! Conv2D -> BatchNormalization (inference) -> ReLU runs as one convolution
//! with the normalisation folded in, when the weights are constants
//! (`predict`, frozen layers). Checked against the three ops applied one
//! after the other.

use convnet_autograd::ops::Epilogue;
use convnet_autograd::Var;
use convnet_kernels::Padding;
use convnet_nn::layers::{ActivationLayer, BatchNormalization, Conv2D, Dense, Flatten};
use convnet_nn::optimizers::SGD;
use convnet_nn::{clear_session, Activation, Apply, Input, Loss, Metric, Model};
use convnet_tensor::{Rng, Tensor};

fn model() -> Model {
    clear_session();
    let input = Input::new(&[9, 9, 3]);
    let x = Conv2D::new(5, (3, 3)).apply(&input).unwrap();
    let x = BatchNormalization::new().apply(&x).unwrap();
    let x = ActivationLayer::new(Activation::Relu).apply(&x).unwrap();
    let x = Conv2D::new(4, (1, 1))
        .strides((2, 2))
        .padding(Padding::Same)
        .use_bias(false)
        .apply(&x)
        .unwrap();
    let x = BatchNormalization::new().scale(false).apply(&x).unwrap();
    let x = Flatten::new().apply(&x).unwrap();
    let x = Dense::new(2).apply(&x).unwrap();
    let m = Model::new(&input, &x).unwrap();
    // Batch-norm statistics far from the identity, so a wrong fold shows.
    let mut rng = Rng::new(3);
    let weights: Vec<(String, Tensor)> = m
        .get_weights()
        .into_iter()
        .map(|(k, v)| {
            let shape = v.shape().to_vec();
            let t = if k.ends_with("moving_variance") {
                Tensor::rand_uniform(&shape, 0.3, 2.0, &mut rng)
            } else {
                Tensor::rand_uniform(&shape, -0.7, 0.7, &mut rng)
            };
            (k, t)
        })
        .collect();
    m.set_weights(&weights).unwrap();
    m
}

fn w(m: &Model, key: &str) -> Tensor {
    m.get_weights()
        .into_iter()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no weight {key}"))
        .1
}

/// The model's output by its layers' ops, one after the other.
fn reference(m: &Model, x: &Tensor) -> Tensor {
    let c = |k: &str| Var::constant(w(m, k));
    let x = Var::constant(x.clone());
    let y = x
        .conv2d(
            &c("conv2d/kernel"),
            Some(&c("conv2d/bias")),
            (1, 1),
            Padding::Valid,
            Epilogue::None,
        )
        .unwrap();
    let y = y
        .batch_norm_inference(
            Some(&c("batch_normalization/gamma")),
            Some(&c("batch_normalization/beta")),
            &w(m, "batch_normalization/moving_mean"),
            &w(m, "batch_normalization/moving_variance"),
            1e-3,
        )
        .unwrap()
        .relu()
        .unwrap();
    let y = y
        .conv2d(
            &c("conv2d_1/kernel"),
            None,
            (2, 2),
            Padding::Same,
            Epilogue::None,
        )
        .unwrap();
    let y = y
        .batch_norm_inference(
            None,
            Some(&c("batch_normalization_1/beta")),
            &w(m, "batch_normalization_1/moving_mean"),
            &w(m, "batch_normalization_1/moving_variance"),
            1e-3,
        )
        .unwrap();
    let n = y.shape()[0];
    let y = y.reshape(&[n, 4 * 4 * 4]).unwrap();
    y.dense(&c("dense/kernel"), Some(&c("dense/bias")))
        .unwrap()
        .value()
        .clone()
}

fn assert_close(a: &Tensor, b: &Tensor) {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.values(), b.values());
    let max = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    for (x, y) in a.iter().zip(b.iter()) {
        assert!((x - y).abs() <= 1e-5 * max.max(1.0), "{x} vs {y}");
    }
}

#[test]
fn predict_folds_batch_norm_into_the_convolution() {
    let m = model();
    let x = Tensor::rand_normal(&[3, 9, 9, 3], 0.0, 1.0, &mut Rng::new(8));
    let want = reference(&m, &x);
    // The profile (global: this test must be alone in its process, hence
    // the environment variable set by the test below) names the fused
    // sections.
    let profiling = std::env::var_os("CONVNET_FUSION_PROFILE_CHILD").is_some();
    if profiling {
        convnet_autograd::profile::set_enabled(true);
    }
    assert_close(&m.predict(&x, 3).unwrap(), &want);
    if profiling {
        let report = convnet_autograd::profile::report();
        assert!(
            report.contains("forward conv2d+batch_normalization+activation "),
            "{report}"
        );
        assert!(
            report.contains("forward conv2d_1+batch_normalization_1 "),
            "{report}"
        );
        assert!(!report.contains("forward batch_normalization "), "{report}");
        assert!(!report.contains("forward conv2d "), "{report}");
    }
    // And in a frozen model during training (inference-mode BN, constants).
    let mut frozen = m;
    frozen.set_trainable(false);
    frozen
        .compile(
            SGD::new(0.1, 0.0, false),
            Loss::CategoricalCrossentropy,
            &[Metric::Accuracy],
        )
        .unwrap();
    assert_close(&frozen.predict(&x, 2).unwrap(), &want);
}

#[test]
fn folded_weights_follow_weight_changes() {
    // The folded kernels are kept between calls while nothing changes;
    // new weights, new normalisation statistics and an optimizer step
    // must each show in the next prediction.
    let mut m = model();
    let x = Tensor::rand_normal(&[3, 9, 9, 3], 0.0, 1.0, &mut Rng::new(8));
    assert_close(&m.predict(&x, 3).unwrap(), &reference(&m, &x));
    assert_close(&m.predict(&x, 3).unwrap(), &reference(&m, &x));
    let mut rng = Rng::new(11);
    for key in [
        "conv2d/kernel",
        "conv2d/bias",
        "batch_normalization/moving_mean",
        "batch_normalization_1/moving_variance",
    ] {
        let before = m.predict(&x, 3).unwrap();
        let shape = w(&m, key).shape().to_vec();
        let lo = if key.ends_with("variance") { 0.3 } else { -0.7 };
        let new = Tensor::rand_uniform(&shape, lo, 2.0, &mut rng);
        m.set_weights(&[(key.to_string(), new)]).unwrap();
        let after = m.predict(&x, 3).unwrap();
        assert!(after.max_abs_diff(&before).unwrap() > 1e-3, "{key}");
        assert_close(&after, &reference(&m, &x));
    }
    // A training step updates the kernels in place (and the statistics).
    m.compile(
        SGD::new(0.1, 0.0, false),
        Loss::CategoricalCrossentropy,
        &[],
    )
    .unwrap();
    let y = Tensor::from_fn(&[3, 2], |i| (i % 2) as f32);
    let before = m.predict(&x, 3).unwrap();
    m.train_on_batch(&x, &y).unwrap();
    let after = m.predict(&x, 3).unwrap();
    assert!(after.max_abs_diff(&before).unwrap() > 1e-4);
    assert_close(&after, &reference(&m, &x));
}

#[test]
fn a_training_batch_norm_is_not_folded() {
    // With trainable layers, a training step uses batch statistics: its loss
    // differs from the inference-mode loss of the same batch before the step
    // (no fusion took the inference path by mistake), and with a frozen base
    // the training loss equals the inference loss.
    let x = Tensor::rand_normal(&[4, 9, 9, 3], 0.0, 1.0, &mut Rng::new(9));
    let y = Tensor::from_fn(&[4, 2], |i| (i % 2) as f32);
    for frozen in [false, true] {
        let mut m = model();
        if frozen {
            // A frozen base under a trainable head.
            m.set_trainable(false);
            m.get_layer("dense").unwrap().set_trainable(true);
        }
        m.compile(SGD::new(0.0, 0.0, false), Loss::BinaryCrossentropy, &[])
            .unwrap();
        let infer = m.evaluate_arrays(&x, &y, 4).unwrap()["loss"];
        let train = m.train_on_batch(&x, &y).unwrap()["loss"];
        if frozen {
            assert!((train - infer).abs() < 1e-5, "{train} vs {infer}");
        } else {
            assert!((train - infer).abs() > 1e-3, "{train} vs {infer}");
        }
    }
}

/// Runs the test above alone in a child process with profiling on, so that
/// the (process-wide) profile shows only its own sections.
#[test]
fn the_fused_sections_are_the_ones_that_ran() {
    if std::env::var_os("CONVNET_FUSION_PROFILE_CHILD").is_some() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "predict_folds_batch_norm_into_the_convolution",
            "--test-threads=1",
        ])
        .env("CONVNET_FUSION_PROFILE_CHILD", "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}
