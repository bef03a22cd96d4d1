//! The three convolutions of the basic Cats-vs-Dogs CNN at batch 32 (3x3,
//! stride 1, valid, bias, ReLU): forward, and forward+backward (forward,
//! input gradient, filter and bias gradients; counted as 3x the forward
//! FLOPs). Figures count direct-convolution FLOPs (`2*N*OH*OW*9*C*F`), so
//! a path that needs fewer operations (Winograd) shows as more GFLOP/s.
//!
//! `--inception [--half]`: the forward pass of each distinct InceptionV3
//! convolution up to mixed7 at 150x150, GFLOP/s and share of the time
//! (`--half`: in [`Precision::Half`], as a frozen base may run).
//!
//! `--fused`: each layer followed by 2x2 max pooling as one op
//! (`conv_pool`), forward and backward, beside the unfused convolution's
//! passes (same FLOP count, so the GFLOP/s compare directly; the pooling's
//! own work is not counted).
//!
//! `--compare`: each pass of each layer by its default path and by plain
//! im2col + GEMM, alternating, with the ratio (for a noisy machine).

use std::time::Instant;

use convnet_kernels::conv::{
    conv2d_backward_filter, conv2d_backward_filter_tuned, conv2d_backward_input,
    conv2d_backward_input_tuned, conv2d_forward, conv2d_forward_tuned, conv2d_forward_with,
    ConvGeometry, Epilogue, Precision, Tuning,
};
use convnet_kernels::conv_pool::{
    conv2d_max_pool_backward, conv2d_max_pool_forward, ConvPoolGeometry,
};
use convnet_kernels::Padding;
use std::mem::MaybeUninit;

use super::{fill, median_secs};

/// `(name, input (n, h, w, c), filters)`.
const LAYERS: [(&str, [usize; 4], usize); 3] = [
    ("conv1", [32, 150, 150, 3], 32),
    ("conv2", [32, 74, 74, 32], 64),
    ("conv3", [32, 36, 36, 64], 128),
];

pub fn run(opts: &[String]) -> Result<(), String> {
    match opts.first().map(String::as_str) {
        Some("--compare") => return compare(),
        Some("--inception") => {
            let half = match opts.get(1).map(String::as_str) {
                None => Precision::Single,
                Some("--half") => Precision::Half,
                Some(o) => return Err(format!("unknown option `{o}` after --inception")),
            };
            return inception(half);
        }
        Some("--fused") => return fused(),
        Some(o) => return Err(format!("unknown option `{o}`")),
        None => {}
    }
    for (name, input, f) in LAYERS {
        let g = ConvGeometry::new(input, [3, 3, input[3], f], (1, 1), Padding::Valid)
            .expect("valid geometry");
        let x = fill(g.input_shape().iter().product(), 1);
        let w: Vec<f32> = fill(g.kernel_shape().iter().product(), 2)
            .iter()
            .map(|v| v * 0.1)
            .collect();
        let b = fill(f, 3);
        let dy = fill(g.output_shape().iter().product(), 4);
        let mut y = vec![0.0; dy.len()];
        let mut dx = vec![0.0; x.len()];
        let mut dw = vec![0.0; w.len()];
        let mut db = vec![0.0; f];
        let flops = g.flops() as f64;
        // About 0.3 s per figure whatever the layer.
        let reps = 9;
        let fwd = median_secs(2, reps, || {
            conv2d_forward(&g, &x, &w, Some(&b), Epilogue::Relu, &mut y).unwrap();
        });
        println!("{name} forward: {:.1} GFLOP/s", flops / fwd / 1e9);
        let bf = median_secs(2, reps, || {
            conv2d_backward_filter(&g, &x, &dy, &mut dw, Some(&mut db)).unwrap();
        });
        println!("{name} backward filter: {:.1} GFLOP/s", flops / bf / 1e9);
        let bi = median_secs(2, reps, || {
            conv2d_backward_input(&g, &dy, &w, &mut dx).unwrap();
        });
        println!("{name} backward input: {:.1} GFLOP/s", flops / bi / 1e9);
        let both = median_secs(2, reps, || {
            conv2d_forward(&g, &x, &w, Some(&b), Epilogue::Relu, &mut y).unwrap();
            conv2d_backward_input(&g, &dy, &w, &mut dx).unwrap();
            conv2d_backward_filter(&g, &x, &dy, &mut dw, Some(&mut db)).unwrap();
        });
        println!(
            "{name} forward+backward: {:.1} GFLOP/s",
            3.0 * flops / both / 1e9
        );
    }
    Ok(())
}

/// The fused convolution + max pooling against the convolution alone,
/// forward and backward (input and filter gradients), alternating.
fn fused() -> Result<(), String> {
    for (name, input, f) in LAYERS {
        let e = |e: convnet_tensor::TensorError| e.to_string();
        let g = ConvGeometry::new(input, [3, 3, input[3], f], (1, 1), Padding::Valid).map_err(e)?;
        let pg = ConvPoolGeometry::new(g, (2, 2), (2, 2), Padding::Valid).map_err(e)?;
        let x = fill(g.input_shape().iter().product(), 1);
        let w: Vec<f32> = fill(g.kernel_shape().iter().product(), 2)
            .iter()
            .map(|v| v * 0.1)
            .collect();
        let b = fill(f, 3);
        let pooled: usize = pg.output_shape().iter().product();
        let dy = fill(g.output_shape().iter().product(), 4);
        let dp = fill(pooled, 5);
        let mut y = vec![0.0; dy.len()];
        let mut p = vec![MaybeUninit::<f32>::uninit(); pooled];
        let mut a = vec![MaybeUninit::<u32>::uninit(); pooled];
        let mut dx = (name != "conv1").then(|| vec![0.0; x.len()]);
        let mut dx2 = dx.clone();
        let (mut dw, mut dw2) = (vec![0.0; w.len()], vec![0.0; w.len()]);
        let (mut db, mut db2) = (vec![0.0; f], vec![0.0; f]);
        let flops = g.flops() as f64;
        let (tf, tc) = median_pair(
            9,
            || {
                conv2d_max_pool_forward(
                    &pg,
                    &x,
                    &w,
                    Some(&b),
                    Epilogue::Relu,
                    &mut p,
                    Some(&mut a),
                )
                .unwrap();
            },
            || conv2d_forward(&g, &x, &w, Some(&b), Epilogue::Relu, &mut y).unwrap(),
        );
        println!(
            "{name} forward: fused {:.1}, conv alone {:.1} GFLOP/s",
            flops / tf / 1e9,
            flops / tc / 1e9
        );
        // SAFETY: the forward pass above wrote every element of both.
        let p: Vec<f32> = p.iter().map(|v| unsafe { v.assume_init() }).collect();
        let a: Vec<u32> = a.iter().map(|v| unsafe { v.assume_init() }).collect();
        let passes = if dx.is_some() { 2.0 } else { 1.0 };
        let (tf, tc) = median_pair(
            9,
            || {
                conv2d_max_pool_backward(
                    &pg,
                    &x,
                    &w,
                    Epilogue::Relu,
                    &p,
                    &a,
                    &dp,
                    dx.as_deref_mut(),
                    Some(&mut dw),
                    Some(&mut db),
                )
                .unwrap();
            },
            || {
                if let Some(dx) = dx2.as_deref_mut() {
                    conv2d_backward_input(&g, &dy, &w, dx).unwrap();
                }
                conv2d_backward_filter(&g, &x, &dy, &mut dw2, Some(&mut db2)).unwrap();
            },
        );
        println!(
            "{name} backward: fused {:.1}, conv alone {:.1} GFLOP/s",
            passes * flops / tf / 1e9,
            passes * flops / tc / 1e9
        );
    }
    Ok(())
}

/// Median seconds of `a` and of `b`, run alternately.
fn median_pair(reps: usize, mut a: impl FnMut(), mut b: impl FnMut()) -> (f64, f64) {
    a();
    b();
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = Instant::now();
        a();
        ta.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        b();
        tb.push(t.elapsed().as_secs_f64());
    }
    ta.sort_by(f64::total_cmp);
    tb.sort_by(f64::total_cmp);
    (ta[reps / 2], tb[reps / 2])
}

/// Default path against im2col + GEMM, pass by pass.
fn compare() -> Result<(), String> {
    for (name, input, f) in LAYERS {
        let g = ConvGeometry::new(input, [3, 3, input[3], f], (1, 1), Padding::Valid)
            .map_err(|e| e.to_string())?;
        let d = Tuning::for_geometry(&g);
        let plain = Tuning {
            direct: false,
            winograd: false,
            winograd_input: false,
            winograd_filter: false,
            winograd_1d: false,
            taps: false,
            half: false,
            ..d
        };
        let x = fill(g.input_shape().iter().product(), 1);
        let w = fill(g.kernel_shape().iter().product(), 2);
        let dy = fill(g.output_shape().iter().product(), 4);
        let (mut y, mut y2) = (vec![0.0; dy.len()], vec![0.0; dy.len()]);
        let (mut dx, mut dw) = (vec![0.0; x.len()], vec![0.0; w.len()]);
        let flops = g.flops() as f64;
        let r = |label: &str, (a, b): (f64, f64)| {
            println!(
                "{name} {label}: {:.1} GFLOP/s default ({d:?}), {:.1} im2col, ratio {:.2}",
                flops / a / 1e9,
                flops / b / 1e9,
                b / a
            )
        };
        r(
            "forward",
            median_pair(
                7,
                || conv2d_forward_tuned(&g, &x, &w, None, Epilogue::None, &mut y, d).unwrap(),
                || conv2d_forward_tuned(&g, &x, &w, None, Epilogue::None, &mut y2, plain).unwrap(),
            ),
        );
        let mut dx2 = dx.clone();
        r(
            "backward input",
            median_pair(
                7,
                || conv2d_backward_input_tuned(&g, &dy, &w, &mut dx, d).unwrap(),
                || conv2d_backward_input_tuned(&g, &dy, &w, &mut dx2, plain).unwrap(),
            ),
        );
        let mut dw2 = dw.clone();
        r(
            "backward filter",
            median_pair(
                7,
                || conv2d_backward_filter_tuned(&g, &x, &dy, &mut dw, None, d).unwrap(),
                || conv2d_backward_filter_tuned(&g, &x, &dy, &mut dw2, None, plain).unwrap(),
            ),
        );
    }
    Ok(())
}

/// The distinct convolutions of InceptionV3 up to `mixed7` at 150x150
/// (batch 32): `(count, input (h, w, c), kernel (kh, kw), filters, stride,
/// padding)`, as Keras builds them.
type Shape = (usize, [usize; 3], [usize; 2], usize, usize, Padding);

#[rustfmt::skip]
const INCEPTION: [Shape; 30] = [
    (1, [150, 150, 3], [3, 3], 32, 2, Padding::Valid),
    (1, [74, 74, 32], [3, 3], 32, 1, Padding::Valid),
    (1, [72, 72, 32], [3, 3], 64, 1, Padding::Same),
    (1, [35, 35, 64], [1, 1], 80, 1, Padding::Valid),
    (1, [35, 35, 80], [3, 3], 192, 1, Padding::Valid),
    (2, [16, 16, 192], [1, 1], 64, 1, Padding::Same),
    (1, [16, 16, 192], [1, 1], 48, 1, Padding::Same),
    (4, [16, 16, 64], [3, 3], 96, 1, Padding::Same),
    (3, [16, 16, 48], [5, 5], 64, 1, Padding::Same),
    (3, [16, 16, 96], [3, 3], 96, 1, Padding::Same),
    (1, [16, 16, 192], [1, 1], 32, 1, Padding::Same),
    (3, [16, 16, 256], [1, 1], 64, 1, Padding::Same),
    (1, [16, 16, 256], [1, 1], 48, 1, Padding::Same),
    (4, [16, 16, 288], [1, 1], 64, 1, Padding::Same),
    (1, [16, 16, 288], [1, 1], 48, 1, Padding::Same),
    (1, [16, 16, 288], [3, 3], 384, 2, Padding::Valid),
    (1, [16, 16, 96], [3, 3], 96, 2, Padding::Valid),
    (2, [7, 7, 768], [1, 1], 128, 1, Padding::Same),
    (2, [7, 7, 128], [7, 1], 128, 1, Padding::Same),
    (2, [7, 7, 128], [1, 7], 128, 1, Padding::Same),
    (10, [7, 7, 768], [1, 1], 192, 1, Padding::Same),
    (1, [7, 7, 128], [7, 1], 192, 1, Padding::Same),
    (1, [7, 7, 128], [1, 7], 192, 1, Padding::Same),
    (4, [7, 7, 768], [1, 1], 160, 1, Padding::Same),
    (4, [7, 7, 160], [7, 1], 160, 1, Padding::Same),
    (4, [7, 7, 160], [1, 7], 160, 1, Padding::Same),
    (2, [7, 7, 160], [7, 1], 192, 1, Padding::Same),
    (2, [7, 7, 160], [1, 7], 192, 1, Padding::Same),
    (3, [7, 7, 192], [7, 1], 192, 1, Padding::Same),
    (3, [7, 7, 192], [1, 7], 192, 1, Padding::Same),
];

/// Forward pass of every InceptionV3 convolution to mixed7 (no bias, no
/// epilogue), per shape: GFLOP/s and share of the total time.
fn inception(precision: Precision) -> Result<(), String> {
    let mut rows = Vec::new();
    let (mut total_t, mut total_f) = (0.0, 0.0);
    for (count, [h, w, c], [kh, kw], f, s, pad) in INCEPTION {
        let g = ConvGeometry::new([32, h, w, c], [kh, kw, c, f], (s, s), pad)
            .map_err(|e| e.to_string())?;
        let x = fill(g.input_shape().iter().product(), 1);
        let k = fill(g.kernel_shape().iter().product(), 2);
        let mut y = vec![0.0; g.output_shape().iter().product()];
        let t = median_secs(1, 5, || {
            conv2d_forward_with(&g, &x, &k, None, Epilogue::None, &mut y, precision).unwrap();
        });
        let flops = g.flops() as f64;
        total_t += t * count as f64;
        total_f += flops * count as f64;
        rows.push((count, [h, w, c], [kh, kw], f, s, t, flops / t / 1e9));
    }
    for (count, i, k, f, s, t, gf) in rows {
        println!(
            "{count:>2} x {i:?} {}x{} s{s} -> {f:>3}: {gf:6.1} GFLOP/s, {:5.1}% of the time",
            k[0],
            k[1],
            100.0 * t * count as f64 / total_t
        );
    }
    println!(
        "inception convolutions to mixed7: {:.1} ms per batch of 32, {:.1} GFLOP/s",
        total_t * 1e3,
        total_f / total_t / 1e9
    );
    Ok(())
}
