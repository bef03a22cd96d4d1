//! `Model::set_frozen_precision(Precision::Half)`: the convolutions with
//! constant weights (folded with their batch normalisation) run in half
//! precision where the CPU has AVX512-FP16, close to single precision's
//! outputs; trainable layers and gradients are untouched.

use convnet_kernels::Padding;
use convnet_nn::layers::{
    ActivationLayer, AveragePooling2D, BatchNormalization, Conv2D, Dense, Flatten,
};
use convnet_nn::optimizers::SGD;
use convnet_nn::{clear_session, Activation, Apply, Input, Loss, Model, Precision};
use convnet_tensor::{Rng, Tensor};

fn half_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512fp16")
            && std::arch::is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Conv 1x1 -> BN -> ReLU -> Conv 1x7 -> BN -> ReLU -> AvgPool 3x3 ->
/// Conv 1x1 -> BN -> ReLU -> Flatten -> Dense, with weights far from the
/// initial ones.
fn model() -> Model {
    clear_session();
    let input = Input::new(&[7, 7, 40]);
    let block = |x, f, k: (usize, usize)| {
        let x = Conv2D::new(f, k)
            .padding(Padding::Same)
            .use_bias(false)
            .apply(&x)
            .unwrap();
        let x = BatchNormalization::new().apply(&x).unwrap();
        ActivationLayer::new(Activation::Relu).apply(&x).unwrap()
    };
    let x = block(input.clone(), 48, (1, 1));
    let x = block(x, 32, (1, 7));
    let x = AveragePooling2D::new((3, 3))
        .strides((1, 1))
        .padding(Padding::Same)
        .apply(&x)
        .unwrap();
    let x = block(x, 16, (1, 1));
    let x = Flatten::new().apply(&x).unwrap();
    let x = Dense::new(2)
        .activation(Activation::Sigmoid)
        .apply(&x)
        .unwrap();
    let m = Model::new(&input, &x).unwrap();
    let mut rng = Rng::new(3);
    let weights: Vec<(String, Tensor)> = m
        .get_weights()
        .into_iter()
        .map(|(k, v)| {
            let shape = v.shape().to_vec();
            let t = if k.ends_with("moving_variance") {
                Tensor::rand_uniform(&shape, 0.3, 2.0, &mut rng)
            } else {
                Tensor::rand_uniform(&shape, -0.5, 0.5, &mut rng)
            };
            (k, t)
        })
        .collect();
    m.set_weights(&weights).unwrap();
    m
}

fn input(n: usize) -> Tensor {
    Tensor::rand_uniform(&[n, 7, 7, 40], 0.0, 1.0, &mut Rng::new(9))
}

fn relative_rms(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let s: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (d / s).sqrt()
}

#[test]
fn predict_in_half_precision_is_close_to_single() {
    let mut m = model();
    assert_eq!(m.frozen_precision(), Precision::Single);
    let x = input(5);
    let single = m.predict(&x, 5).unwrap();
    m.set_frozen_precision(Precision::Half);
    let half = m.predict(&x, 5).unwrap();
    let (s, h) = (single.values(), half.values());
    if half_hardware() {
        let e = relative_rms(&h, &s);
        // Three layers at about 1e-3 each.
        assert!(e > 0.0 && e < 5e-3, "relative rms difference {e}");
    } else {
        assert_eq!(h, s, "without AVX512-FP16, Half is Single");
    }
    m.set_frozen_precision(Precision::Single);
    assert_eq!(m.predict(&x, 5).unwrap().values(), s);
}

#[test]
fn trainable_layers_and_gradients_stay_in_single_precision() {
    let x = input(4);
    let y = Tensor::from_vec(&[4, 2], vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]).unwrap();
    // Everything trainable: the half setting changes nothing, bit for bit.
    let losses: Vec<Vec<f32>> = [Precision::Single, Precision::Half]
        .into_iter()
        .map(|p| {
            let mut m = model();
            m.set_frozen_precision(p);
            m.compile(SGD::new(0.1, 0.0, false), Loss::BinaryCrossentropy, &[])
                .unwrap();
            (0..3)
                .map(|_| m.train_on_batch(&x, &y).unwrap()["loss"] as f32)
                .collect()
        })
        .collect();
    assert_eq!(losses[0], losses[1]);
    // A frozen base: its forward pass in half precision, the head trained
    // on it, losses close to single precision's and going down.
    let losses: Vec<Vec<f32>> = [Precision::Single, Precision::Half]
        .into_iter()
        .map(|p| {
            let mut m = model();
            for name in m.layer_names() {
                if !name.starts_with("dense") {
                    m.get_layer(&name).unwrap().set_trainable(false);
                }
            }
            m.set_frozen_precision(p);
            m.compile(SGD::new(0.05, 0.0, false), Loss::BinaryCrossentropy, &[])
                .unwrap();
            (0..4)
                .map(|_| m.train_on_batch(&x, &y).unwrap()["loss"] as f32)
                .collect()
        })
        .collect();
    for (s, h) in losses[0].iter().zip(&losses[1]) {
        assert!((s - h).abs() <= 1e-2 * s.abs(), "{s} against {h}");
    }
    assert!(losses[1][3] < losses[1][0], "{:?}", losses[1]);
}
