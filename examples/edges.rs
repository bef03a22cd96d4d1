//! A first CNN, trained from scratch with convnet's autograd: tell images
//! with a vertical bar from images with a horizontal bar.
//!
//! The network is Conv2D(4, 3x3, relu) -> MaxPooling2D(2) ->
//! GlobalAveragePooling2D -> Dense(1, sigmoid), trained with plain gradient
//! descent on binary cross-entropy. Its first-layer filters start random and
//! end up as edge detectors, like the hand-made Sobel filters the CNN
//! tutorials start from; the example prints them.
//!
//! Run: `cargo run --release --example edges`

use convnet::autograd::ops::{Epilogue, Padding};
use convnet::prelude::*;

const SIZE: usize = 16;

/// A batch of `n` noisy 16x16 grayscale images with one bar each, and their
/// labels (1 = vertical, 0 = horizontal).
fn batch(n: usize, rng: &mut Rng) -> (Tensor, Tensor) {
    let mut images = vec![0.0f32; n * SIZE * SIZE];
    let mut labels = vec![0.0f32; n];
    for (i, label) in labels.iter_mut().enumerate() {
        let vertical = rng.uniform() < 0.5;
        *label = if vertical { 1.0 } else { 0.0 };
        let at = 2 + rng.below(SIZE - 4);
        let img = &mut images[i * SIZE * SIZE..(i + 1) * SIZE * SIZE];
        for (p, px) in img.iter_mut().enumerate() {
            let (y, x) = (p / SIZE, p % SIZE);
            let on = if vertical { x == at } else { y == at };
            *px = if on { 1.0 } else { 0.0 } + 0.1 * rng.normal();
        }
    }
    (
        Tensor::from_vec(&[n, SIZE, SIZE, 1], images).expect("sizes agree"),
        Tensor::from_vec(&[n, 1], labels).expect("sizes agree"),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = Rng::new(42);
    let mut kernel = Tensor::glorot_uniform(&[3, 3, 1, 4], &mut rng);
    let mut bias = Tensor::zeros(&[4]);
    let mut dense_w = Tensor::glorot_uniform(&[4, 1], &mut rng);
    let mut dense_b = Tensor::zeros(&[1]);
    let learning_rate = 0.5;
    let (test_x, test_y) = batch(256, &mut rng);

    println!(
        "Conv2D(4, 3x3, relu) -> MaxPooling2D(2) -> GlobalAveragePooling2D -> Dense(1, sigmoid)"
    );
    for epoch in 1..=15 {
        let mut total = 0.0;
        let steps = 20;
        for _ in 0..steps {
            let (x, y) = batch(32, &mut rng);
            let tape = Tape::new();
            let (k, b, w, c) = (
                tape.var(kernel.clone()),
                tape.var(bias.clone()),
                tape.var(dense_w.clone()),
                tape.var(dense_b.clone()),
            );
            let prob = Var::constant(x)
                .conv2d(&k, Some(&b), (1, 1), Padding::Valid, Epilogue::Relu)?
                .max_pool2d((2, 2), (2, 2), Padding::Valid)?
                .global_avg_pool2d()?
                .dense(&w, Some(&c))?
                .sigmoid()?;
            let loss = prob.binary_crossentropy(&y)?;
            total += loss.value().item()?;
            let grads = tape.backward(&loss)?;
            for (param, var) in [
                (&mut kernel, &k),
                (&mut bias, &b),
                (&mut dense_w, &w),
                (&mut dense_b, &c),
            ] {
                if let Some(g) = grads.get(var) {
                    *param = param.sub(&g.mul_scalar(learning_rate))?;
                }
            }
        }
        // Evaluate without recording anything.
        let accuracy = no_grad(|| -> Result<f32, TensorError> {
            let prob = Var::constant(test_x.clone())
                .conv2d(
                    &Var::constant(kernel.clone()),
                    Some(&Var::constant(bias.clone())),
                    (1, 1),
                    Padding::Valid,
                    Epilogue::Relu,
                )?
                .max_pool2d((2, 2), (2, 2), Padding::Valid)?
                .global_avg_pool2d()?
                .dense(
                    &Var::constant(dense_w.clone()),
                    Some(&Var::constant(dense_b.clone())),
                )?
                .sigmoid()?;
            let hits = prob
                .value()
                .values()
                .iter()
                .zip(test_y.values().iter())
                .filter(|(p, t)| (**p > 0.5) == (**t > 0.5))
                .count();
            Ok(hits as f32 / test_y.len() as f32)
        })?;
        println!(
            "Epoch {epoch:2}/15 - loss: {:.4} - test accuracy: {accuracy:.4}",
            total / steps as f32
        );
    }

    println!("\nLearned 3x3 filters (compare with Sobel's [-1 0 1; -2 0 2; -1 0 1]):");
    let k = kernel.values();
    for f in 0..4 {
        println!("filter {f}:");
        for r in 0..3 {
            let row: Vec<String> = (0..3)
                .map(|c| format!("{:6.2}", k[(r * 3 + c) * 4 + f]))
                .collect();
            println!("  [{}]", row.join(" "));
        }
    }
    Ok(())
}
