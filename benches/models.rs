//! The mission's basic Cats-vs-Dogs CNN as a whole (batch 32, 150x150x3):
//! one training step (`train_on_batch`: forward, loss, backward, Adam) and
//! one `predict` of a batch, for regressions. Throughput is declared as
//! `Throughput::Elements(images)`, so criterion's "elements/s" read as
//! images/s.
//!
//! `cargo bench --bench models` (about a minute). For one line per figure
//! with Keras beside it: `cargo xtask bench --against-keras basic_cnn`.

use std::time::Duration;

use convnet::nn::layers::{Conv2D, Dense, Flatten, MaxPooling2D};
use convnet::nn::optimizers::Adam;
use convnet::nn::Activation::{Relu, Sigmoid};
use convnet::nn::{set_random_seed, Loss, Metric, Model, Sequential};
use convnet::tensor::{Rng, Tensor};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const BATCH: usize = 32;

fn basic_cnn() -> Model {
    set_random_seed(1);
    let mut m = Sequential::new(&[150, 150, 3]);
    m.add(Conv2D::new(32, (3, 3)).activation(Relu)).unwrap();
    m.add(MaxPooling2D::new((2, 2))).unwrap();
    m.add(Conv2D::new(64, (3, 3)).activation(Relu)).unwrap();
    m.add(MaxPooling2D::new((2, 2))).unwrap();
    m.add(Conv2D::new(128, (3, 3)).activation(Relu)).unwrap();
    m.add(MaxPooling2D::new((2, 2))).unwrap();
    m.add(Flatten::new()).unwrap();
    m.add(Dense::new(128).activation(Relu)).unwrap();
    m.add(Dense::new(512).activation(Relu)).unwrap();
    m.add(Dense::new(1).activation(Sigmoid)).unwrap();
    m.compile(
        Adam::default(),
        Loss::BinaryCrossentropy,
        &[Metric::Accuracy],
    )
    .unwrap();
    m
}

fn bench_basic_cnn(c: &mut Criterion) {
    let mut model = basic_cnn();
    let mut rng = Rng::new(11);
    let x = Tensor::rand_uniform(&[BATCH, 150, 150, 3], 0.0, 1.0, &mut rng);
    let y = Tensor::from_vec(&[BATCH, 1], (0..BATCH).map(|i| (i % 2) as f32).collect()).unwrap();
    let mut group = c.benchmark_group("basic_cnn");
    group
        .throughput(Throughput::Elements(BATCH as u64))
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    group.bench_function("train_on_batch", |b| {
        b.iter(|| model.train_on_batch(&x, &y).unwrap())
    });
    group.bench_function("predict", |b| b.iter(|| model.predict(&x, BATCH).unwrap()));
    group.finish();
}

criterion_group!(benches, bench_basic_cnn);
criterion_main!(benches);
