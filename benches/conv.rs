//! The three convolutions of the basic Cats-vs-Dogs CNN at batch 32 (3x3,
//! stride 1, valid padding, bias, fused ReLU):
//!
//! | layer | input          | output          |
//! |-------|----------------|-----------------|
//! | conv1 | 150x150x3      | 148x148x32      |
//! | conv2 | 74x74x32       | 72x72x64        |
//! | conv3 | 36x36x64       | 34x34x128       |
//!
//! Groups `conv_forward` (the forward pass) and `conv_forward_backward`
//! (forward, input gradient, filter and bias gradients). Throughput is
//! declared as `Throughput::Elements(FLOPs)`, so criterion's "elements/s"
//! read as FLOP/s (Gelem/s = GFLOP/s): `2*N*OH*OW*KH*KW*C*F` for the
//! forward pass, three times that for forward+backward.
//!
//! `cargo bench --bench conv` (a couple of minutes; `RAYON_NUM_THREADS`
//! sets the threads). For a one-line-per-figure summary use
//! `cargo xtask bench conv`.

use std::time::Duration;

use convnet_kernels::conv::{
    conv2d_backward_filter, conv2d_backward_input, conv2d_forward, ConvGeometry, Epilogue,
};
use convnet_kernels::Padding;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// `(name, input (n, h, w, c), filters)`.
const LAYERS: [(&str, [usize; 4], usize); 3] = [
    ("conv1", [32, 150, 150, 3], 32),
    ("conv2", [32, 74, 74, 32], 64),
    ("conv3", [32, 36, 36, 64], 128),
];

/// Deterministic values in [-1, 1).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Buffers of one layer.
struct Layer {
    g: ConvGeometry,
    x: Vec<f32>,
    w: Vec<f32>,
    b: Vec<f32>,
    dy: Vec<f32>,
    y: Vec<f32>,
    dx: Vec<f32>,
    dw: Vec<f32>,
    db: Vec<f32>,
}

impl Layer {
    fn new(input: [usize; 4], f: usize) -> Self {
        let g = ConvGeometry::new(input, [3, 3, input[3], f], (1, 1), Padding::Valid)
            .expect("valid geometry");
        let x = values(g.input_shape().iter().product(), 1);
        let w: Vec<f32> = values(g.kernel_shape().iter().product(), 2)
            .iter()
            .map(|v| v * 0.1)
            .collect();
        let dy = values(g.output_shape().iter().product(), 4);
        Layer {
            b: values(f, 3),
            y: vec![0.0; dy.len()],
            dx: vec![0.0; x.len()],
            dw: vec![0.0; w.len()],
            db: vec![0.0; f],
            g,
            x,
            w,
            dy,
        }
    }

    fn forward(&mut self) {
        conv2d_forward(
            &self.g,
            &self.x,
            &self.w,
            Some(&self.b),
            Epilogue::Relu,
            &mut self.y,
        )
        .unwrap();
    }

    fn backward(&mut self) {
        conv2d_backward_input(&self.g, &self.dy, &self.w, &mut self.dx).unwrap();
        conv2d_backward_filter(&self.g, &self.x, &self.dy, &mut self.dw, Some(&mut self.db))
            .unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let mut layers: Vec<(&str, Layer)> = LAYERS
        .iter()
        .map(|&(name, input, f)| (name, Layer::new(input, f)))
        .collect();

    let mut group = c.benchmark_group("conv_forward");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for (name, layer) in &mut layers {
        group.throughput(Throughput::Elements(layer.g.flops()));
        group.bench_function(BenchmarkId::from_parameter(*name), |b| {
            b.iter(|| layer.forward())
        });
    }
    group.finish();

    let mut group = c.benchmark_group("conv_forward_backward");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4));
    for (name, layer) in &mut layers {
        group.throughput(Throughput::Elements(3 * layer.g.flops()));
        group.bench_function(BenchmarkId::from_parameter(*name), |b| {
            b.iter(|| {
                layer.forward();
                layer.backward();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
