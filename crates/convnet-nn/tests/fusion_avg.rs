//! AveragePooling2D -> 1x1 Conv2D -> BatchNormalization (inference)
//! (-> ReLU), all constant (`predict`, a frozen base: InceptionV3's pooling
//! branches), runs with the pooling after the convolution, on its fewer
//! channels. Checked against the four ops applied one after the other,
//! with same-padded 3x3 windows (edge windows average fewer cells) and
//! with 2x2 stride-2 windows, and in a child process against the profile,
//! which must show the fused section.

use convnet_autograd::ops::Epilogue;
use convnet_autograd::Var;
use convnet_kernels::Padding;
use convnet_nn::layers::{
    ActivationLayer, AveragePooling2D, BatchNormalization, Conv2D, Dense, Flatten,
};
use convnet_nn::{clear_session, Activation, Apply, Input, Model};
use convnet_tensor::{Rng, Tensor};

/// `(window, strides, padding)`, ReLU or not.
type Variant = ((usize, usize), (usize, usize), Padding, bool);

const VARIANTS: [Variant; 2] = [
    ((3, 3), (1, 1), Padding::Same, true),
    ((2, 2), (2, 2), Padding::Valid, false),
];

fn model(v: Variant) -> Model {
    clear_session();
    let input = Input::new(&[9, 9, 6]);
    let x = AveragePooling2D::new(v.0)
        .strides(v.1)
        .padding(v.2)
        .apply(&input)
        .unwrap();
    let x = Conv2D::new(4, (1, 1)).apply(&x).unwrap();
    let mut x = BatchNormalization::new().apply(&x).unwrap();
    if v.3 {
        x = ActivationLayer::new(Activation::Relu).apply(&x).unwrap();
    }
    let x = Flatten::new().apply(&x).unwrap();
    let x = Dense::new(2).apply(&x).unwrap();
    let m = Model::new(&input, &x).unwrap();
    // Statistics far from the identity, so that a wrong fold shows.
    let mut rng = Rng::new(5);
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
fn reference(m: &Model, v: Variant, x: &Tensor) -> Tensor {
    let c = |k: &str| Var::constant(w(m, k));
    let y = Var::constant(x.clone()).avg_pool2d(v.0, v.1, v.2).unwrap();
    let y = y
        .conv2d(
            &c("conv2d/kernel"),
            Some(&c("conv2d/bias")),
            (1, 1),
            Padding::Valid,
            Epilogue::None,
        )
        .unwrap();
    let mut y = y
        .batch_norm_inference(
            Some(&c("batch_normalization/gamma")),
            Some(&c("batch_normalization/beta")),
            &w(m, "batch_normalization/moving_mean"),
            &w(m, "batch_normalization/moving_variance"),
            1e-3,
        )
        .unwrap();
    if v.3 {
        y = y.relu().unwrap();
    }
    let n = y.shape()[0];
    let len = y.shape()[1..].iter().product();
    let y = y.reshape(&[n, len]).unwrap();
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
fn predict_pools_after_the_pointwise_convolution() {
    let profiling = std::env::var_os("CONVNET_FUSION_AVG_PROFILE_CHILD").is_some();
    if profiling {
        convnet_autograd::profile::set_enabled(true);
    }
    for v in VARIANTS {
        let mut m = model(v);
        let x = Tensor::rand_normal(&[3, 9, 9, 6], 0.0, 1.0, &mut Rng::new(8));
        let want = reference(&m, v, &x);
        assert_close(&m.predict(&x, 3).unwrap(), &want);
        // Frozen, the same.
        m.set_trainable(false);
        assert_close(&m.predict(&x, 2).unwrap(), &want);
    }
    if profiling {
        let report = convnet_autograd::profile::report();
        assert!(
            report.contains("forward average_pooling2d+conv2d+batch_normalization+activation "),
            "{report}"
        );
        assert!(
            report.contains("forward average_pooling2d+conv2d+batch_normalization "),
            "{report}"
        );
        assert!(!report.contains("forward average_pooling2d "), "{report}");
        assert!(!report.contains("forward conv2d "), "{report}");
    }
}

/// Runs the test above alone in a child process with profiling on, so that
/// the (process-wide) profile shows only its own sections.
#[test]
fn the_fused_section_is_the_one_that_ran() {
    if std::env::var_os("CONVNET_FUSION_AVG_PROFILE_CHILD").is_some() {
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "predict_pools_after_the_pointwise_convolution",
            "--test-threads=1",
        ])
        .env("CONVNET_FUSION_AVG_PROFILE_CHILD", "1")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
}
