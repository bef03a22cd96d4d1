//! Fashion-MNIST with the Keras tutorial's CNN:
//! Conv2D(32, 3, relu) MaxPool Conv2D(64, 3, relu) MaxPool Flatten
//! Dense(128, relu) Dense(10, softmax); adam, sparse categorical
//! cross-entropy, batch 64, 5 epochs, inputs scaled to [0, 1].
//!
//! Data: `apt-get install -y dataset-fashion-mnist` (files under
//! `/usr/share/datasets/fashion-mnist/`), or `--data DIR` with the four IDX
//! files. Run: `cargo run --release --example fashion_mnist`

use std::path::PathBuf;

use convnet::data::idx::load_mnist_dir;
use convnet::nn::layers::*;
use convnet::nn::optimizers::Adam;
use convnet::nn::Activation::*;
use convnet::nn::{set_random_seed, FitOptions, Loss, Metric, Sequential};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut data = PathBuf::from("/usr/share/datasets/fashion-mnist");
    let mut epochs = 5;
    let mut limit = None;
    let mut seed = 1u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--data" => data = args.next().ok_or("--data needs a folder")?.into(),
            "--epochs" => epochs = args.next().ok_or("--epochs needs a number")?.parse()?,
            "--seed" => seed = args.next().ok_or("--seed needs a number")?.parse()?,
            "--limit" => {
                limit = Some(
                    args.next()
                        .ok_or("--limit needs a number")?
                        .parse::<usize>()?,
                )
            }
            "--help" | "-h" => {
                println!("fashion_mnist [--data DIR] [--epochs N] [--seed N] [--limit N (training images)]");
                return Ok(());
            }
            other => return Err(format!("unknown argument {other} (try --help)").into()),
        }
    }
    let (mut x_train, mut y_train) = load_mnist_dir(&data, "train")?;
    let (x_test, y_test) = load_mnist_dir(&data, "t10k")?;
    if let Some(n) = limit {
        x_train = x_train.slice_batch(0, n.min(x_train.shape()[0]))?;
        y_train = y_train.slice_batch(0, n.min(y_train.shape()[0]))?;
    }
    let (x_train, x_test) = (
        x_train.mul_scalar(1.0 / 255.0),
        x_test.mul_scalar(1.0 / 255.0),
    );

    set_random_seed(seed);
    let mut model = Sequential::new(&[28, 28, 1]);
    model.add(Conv2D::new(32, (3, 3)).activation(Relu))?;
    model.add(MaxPooling2D::new((2, 2)))?;
    model.add(Conv2D::new(64, (3, 3)).activation(Relu))?;
    model.add(MaxPooling2D::new((2, 2)))?;
    model.add(Flatten::new())?;
    model.add(Dense::new(128).activation(Relu))?;
    model.add(Dense::new(10).activation(Softmax))?;
    model.summary();
    model.compile(
        Adam::default(),
        Loss::SparseCategoricalCrossentropy,
        &[Metric::Accuracy],
    )?;
    let options = FitOptions {
        epochs,
        verbose: 2,
        seed,
        ..Default::default()
    };
    model.fit_arrays(&x_train, &y_train, 64, None, &options, &mut [])?;
    let logs = model.evaluate_arrays(&x_test, &y_test, 256)?;
    println!("test accuracy: {:.4}", logs["accuracy"]);
    Ok(())
}
