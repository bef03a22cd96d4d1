//! `fit_arrays` with a frozen base: the base's output is computed once per
//! sample and the layers after it train from those values. The training
//! must be the one that runs the whole model every step: same losses,
//! same metrics, same weights (up to rounding: the base's kernels see
//! differently composed batches), dropout masks included.

use convnet_kernels::Padding;
use convnet_nn::layers::{
    ActivationLayer, BatchNormalization, Conv2D, Dense, Dropout, Flatten, MaxPooling2D,
};
use convnet_nn::optimizers::RMSprop;
use convnet_nn::{clear_session, Activation, Apply, FitOptions, Input, Loss, Metric, Model};
use convnet_tensor::{Rng, Tensor};

/// A Conv + BN + ReLU base (frozen with `freeze`), max pooling, a 1x1
/// convolution, then Flatten, Dense, Dropout, Dense.
fn model(freeze: bool) -> Model {
    clear_session();
    convnet_nn::set_random_seed(11);
    let input = Input::new(&[10, 10, 3]);
    let x = Conv2D::new(8, (3, 3))
        .padding(Padding::Same)
        .use_bias(false)
        .apply(&input)
        .unwrap();
    let x = BatchNormalization::new().apply(&x).unwrap();
    let x = ActivationLayer::new(Activation::Relu).apply(&x).unwrap();
    let x = MaxPooling2D::new((2, 2)).apply(&x).unwrap();
    let x = Conv2D::new(6, (1, 1)).apply(&x).unwrap();
    let x = Flatten::new().apply(&x).unwrap();
    let x = Dense::new(16)
        .activation(Activation::Relu)
        .apply(&x)
        .unwrap();
    let x = Dropout::new(0.3).apply(&x).unwrap();
    let x = Dense::new(1)
        .activation(Activation::Sigmoid)
        .apply(&x)
        .unwrap();
    let mut m = Model::new(&input, &x).unwrap();
    if freeze {
        for name in m.layer_names() {
            if name.starts_with("conv2d") || name.starts_with("batch_normalization") {
                m.get_layer(&name).unwrap().set_trainable(false);
            }
        }
    }
    m.compile(
        RMSprop::new(1e-3),
        Loss::BinaryCrossentropy,
        &[Metric::Accuracy],
    )
    .unwrap();
    m
}

fn data(n: usize, seed: u64) -> (Tensor, Tensor) {
    let mut rng = Rng::new(seed);
    let x = Tensor::rand_uniform(&[n, 10, 10, 3], 0.0, 1.0, &mut rng);
    let y: Vec<f32> = (0..n)
        .map(|i| {
            let v = x.values();
            let s: f32 = v[i * 300..i * 300 + 150].iter().sum();
            f32::from(s > 75.0)
        })
        .collect();
    (x, Tensor::from_vec(&[n, 1], y).unwrap())
}

fn train(freeze: bool, cache: bool) -> (Vec<f64>, Vec<f64>, Vec<(String, Tensor)>) {
    let mut m = model(freeze);
    let cut = m.frozen_base_output();
    assert_eq!(cut.as_deref(), freeze.then_some("flatten"));
    let (x, y) = data(37, 1);
    let (vx, vy) = data(13, 2);
    let options = FitOptions {
        epochs: 3,
        verbose: 0,
        seed: 5,
        cache_frozen_base: cache,
        ..Default::default()
    };
    let h = m
        .fit_arrays(&x, &y, 8, Some((&vx, &vy)), &options, &mut [])
        .unwrap();
    let series = |k: &str| {
        h.get(k)
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect::<Vec<f64>>()
    };
    (series("loss"), series("val_accuracy"), m.get_weights())
}

#[test]
fn training_from_the_cached_base_is_training_the_whole_model() {
    let (loss_c, acc_c, w_c) = train(true, true);
    let (loss_w, acc_w, w_w) = train(true, false);
    for (a, b) in loss_c.iter().zip(&loss_w) {
        assert!(
            (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
            "loss {a} against {b}"
        );
    }
    assert_eq!(acc_c, acc_w);
    for ((k, a), (_, b)) in w_c.iter().zip(&w_w) {
        for (p, q) in a.values().iter().zip(b.values().iter()) {
            assert!(
                (p - q).abs() <= 1e-4 * (1.0 + q.abs()),
                "{k}: {p} against {q}"
            );
        }
    }
    // The frozen weights did not move, and the head did.
    let (_, _, w0) = {
        let m = model(true);
        (0, 0, m.get_weights())
    };
    for ((k, a), (_, b)) in w_c.iter().zip(&w0) {
        let same = a.values() == b.values();
        assert_eq!(same, !k.starts_with("dense"), "{k}");
    }
}

#[test]
fn a_trainable_base_is_not_cached() {
    // With nothing frozen the option changes nothing, bit for bit.
    let (loss_a, acc_a, w_a) = train(false, true);
    let (loss_b, acc_b, w_b) = train(false, false);
    assert_eq!(loss_a, loss_b);
    assert_eq!(acc_a, acc_b);
    for ((_, a), (_, b)) in w_a.iter().zip(&w_b) {
        assert_eq!(a.values(), b.values());
    }
}

#[test]
fn the_cut_is_where_every_path_meets() {
    use convnet_nn::layers::Concatenate;
    clear_session();
    let input = Input::new(&[6, 6, 2]);
    let a = Conv2D::new(3, (1, 1)).apply(&input).unwrap();
    let b = Conv2D::new(3, (3, 3))
        .padding(Padding::Same)
        .apply(&input)
        .unwrap();
    let joined = Concatenate::new().apply_many(&[&a, &b]).unwrap();
    let x = Flatten::new().apply(&joined).unwrap();
    let x = Dense::new(1).apply(&x).unwrap();
    let mut m = Model::new(&input, &x).unwrap();
    // Nothing frozen: no base.
    assert_eq!(m.frozen_base_output(), None);
    m.get_layer("conv2d").unwrap().set_trainable(false);
    // One branch trains: still none.
    assert_eq!(m.frozen_base_output(), None);
    m.get_layer("conv2d_1").unwrap().set_trainable(false);
    // Both frozen: the base ends where they meet, or after (Flatten).
    assert_eq!(m.frozen_base_output().as_deref(), Some("flatten"));
    // Everything frozen: nothing would train.
    m.set_trainable(false);
    assert_eq!(m.frozen_base_output(), None);
    // The input joined to a frozen layer's output: the base ends at the
    // join (the input takes no weights).
    clear_session();
    let input = Input::new(&[4]);
    let a = Dense::new(4).apply(&input).unwrap();
    let joined = Concatenate::new().apply_many(&[&a, &input]).unwrap();
    let x = Dense::new(1).apply(&joined).unwrap();
    let m = Model::new(&input, &x).unwrap();
    m.get_layer("dense").unwrap().set_trainable(false);
    assert_eq!(m.frozen_base_output().as_deref(), Some("concatenate"));
    // A trainable layer beside the frozen one, on the input: no base.
    clear_session();
    let input = Input::new(&[4]);
    let a = Dense::new(4).apply(&input).unwrap();
    let b = Dense::new(4).apply(&input).unwrap();
    let joined = Concatenate::new().apply_many(&[&a, &b]).unwrap();
    let x = Dense::new(1).apply(&joined).unwrap();
    let m = Model::new(&input, &x).unwrap();
    m.get_layer("dense").unwrap().set_trainable(false);
    assert_eq!(m.frozen_base_output(), None);
}
