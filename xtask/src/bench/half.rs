//! `cargo xtask bench half`: what [`Precision::Half`] costs in accuracy on
//! a trained network. ImageNet's InceptionV3 weights cannot be fetched on
//! every machine, so this trains (in single precision, on Fashion-MNIST)
//! a small network made of the layers the half path computes in
//! InceptionV3: Conv2D (no bias) + BatchNormalization + ReLU blocks with
//! 1x1, 1x7, 7x1, 5x5 and 3x3 stride-2 kernels, and an average-pooling
//! branch into a 1x1 convolution. Then it predicts the 10,000 test images
//! with every convolution in single precision and in half precision
//! (`predict` runs with constant weights, as a frozen base does), and
//! prints, one line each:
//!
//! `half test accuracy single: A`, `half test accuracy half: A`,
//! `half predictions changed: N of 10000`, `half largest probability
//! difference: D`. Not part of a plain `cargo xtask bench`: name it.
//!
//! Options: `--data DIR` (the four IDX files; default
//! `/usr/share/datasets/fashion-mnist`, from `apt-get install -y
//! dataset-fashion-mnist`), `--epochs N` (default 1).

use std::path::PathBuf;

use convnet_data::idx::load_mnist_dir;
use convnet_kernels::Padding;
use convnet_nn::layers::{
    ActivationLayer, AveragePooling2D, BatchNormalization, Conv2D, Dense, Flatten,
};
use convnet_nn::optimizers::Adam;
use convnet_nn::{
    clear_session, set_random_seed, Activation, Apply, FitOptions, Input, Loss, Metric, Model,
    Precision, SymbolicTensor,
};

/// Conv2D (no bias) -> BatchNormalization -> ReLU.
fn block(
    x: &SymbolicTensor,
    filters: usize,
    kernel: (usize, usize),
    strides: usize,
    padding: Padding,
) -> Result<SymbolicTensor, String> {
    let e = |e: convnet_nn::NnError| e.to_string();
    let x = Conv2D::new(filters, kernel)
        .strides((strides, strides))
        .padding(padding)
        .use_bias(false)
        .apply(x)
        .map_err(e)?;
    let x = BatchNormalization::new().apply(&x).map_err(e)?;
    ActivationLayer::new(Activation::Relu).apply(&x).map_err(e)
}

/// The network: 28x28x1 -> 3x3/2 (32) -> 1x1 (48) -> 1x7 (48) -> 7x1
/// (48) -> 5x5 (64) -> 3x3/2 (96) -> avg pool 3x3 -> 1x1 (64) -> Dense 10.
fn network() -> Result<Model, String> {
    let e = |e: convnet_nn::NnError| e.to_string();
    clear_session();
    set_random_seed(7);
    let input = Input::new(&[28, 28, 1]);
    let x = block(&input, 32, (3, 3), 2, Padding::Valid)?;
    let x = block(&x, 48, (1, 1), 1, Padding::Same)?;
    let x = block(&x, 48, (1, 7), 1, Padding::Same)?;
    let x = block(&x, 48, (7, 1), 1, Padding::Same)?;
    let x = block(&x, 64, (5, 5), 1, Padding::Same)?;
    let x = block(&x, 96, (3, 3), 2, Padding::Valid)?;
    let x = AveragePooling2D::new((3, 3))
        .strides((1, 1))
        .padding(Padding::Same)
        .apply(&x)
        .map_err(e)?;
    let x = block(&x, 64, (1, 1), 1, Padding::Same)?;
    let x = Flatten::new().apply(&x).map_err(e)?;
    let x = Dense::new(10)
        .activation(Activation::Softmax)
        .apply(&x)
        .map_err(e)?;
    Model::new(&input, &x).map_err(e)
}

pub fn run(opts: &[String]) -> Result<(), String> {
    let mut data = PathBuf::from("/usr/share/datasets/fashion-mnist");
    let mut epochs = 1;
    let mut it = opts.iter();
    while let Some(o) = it.next() {
        match o.as_str() {
            "--data" => data = it.next().ok_or("--data needs a folder")?.into(),
            "--epochs" => {
                epochs = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or("--epochs needs a number")?
            }
            o => return Err(format!("unknown option `{o}`")),
        }
    }
    let e = |e: convnet_nn::NnError| e.to_string();
    let load = |kind: &str| {
        load_mnist_dir(&data, kind)
            .map_err(|e| format!("{e} (apt-get install -y dataset-fashion-mnist, or --data DIR)"))
    };
    let (x_train, y_train) = load("train")?;
    let (x_test, y_test) = load("t10k")?;
    let (x_train, x_test) = (
        x_train.mul_scalar(1.0 / 255.0),
        x_test.mul_scalar(1.0 / 255.0),
    );
    let mut model = network()?;
    model
        .compile(
            Adam::default(),
            Loss::SparseCategoricalCrossentropy,
            &[Metric::Accuracy],
        )
        .map_err(e)?;
    let options = FitOptions {
        epochs,
        verbose: 0,
        seed: 7,
        ..Default::default()
    };
    eprintln!(
        "training {epochs} epoch(s) on {} images",
        x_train.shape()[0]
    );
    model
        .fit_arrays(&x_train, &y_train, 64, None, &options, &mut [])
        .map_err(e)?;
    let single = model.predict(&x_test, 256).map_err(e)?;
    model.set_frozen_precision(Precision::Half);
    let half = model.predict(&x_test, 256).map_err(e)?;
    let labels = y_test.values();
    let (s, h) = (single.values(), half.values());
    let argmax = |row: &[f32]| {
        row.iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
            .0
    };
    let n = labels.len();
    let (mut right_s, mut right_h, mut changed) = (0, 0, 0);
    let mut largest = 0.0f32;
    for ((rs, rh), &l) in s.chunks(10).zip(h.chunks(10)).zip(labels.iter()) {
        let (ps, ph) = (argmax(rs), argmax(rh));
        right_s += usize::from(ps == l as usize);
        right_h += usize::from(ph == l as usize);
        changed += usize::from(ps != ph);
        for (a, b) in rs.iter().zip(rh) {
            largest = largest.max((a - b).abs());
        }
    }
    println!(
        "half test accuracy single: {:.4}",
        right_s as f64 / n as f64
    );
    println!("half test accuracy half: {:.4}", right_h as f64 / n as f64);
    println!("half predictions changed: {changed} of {n}");
    println!("half largest probability difference: {largest:.2e}");
    Ok(())
}
