//! The three convolutions of the basic Cats-vs-Dogs CNN at batch 32 (3x3,
//! stride 1, valid, bias, ReLU): forward, and forward+backward (forward,
//! input gradient, filter and bias gradients; counted as 3x the forward
//! FLOPs). Figures count direct-convolution FLOPs (`2*N*OH*OW*9*C*F`), so
//! a path that needs fewer operations (Winograd) shows as more GFLOP/s.
//!
//! `--compare`: each pass of each layer by its default path and by plain
//! im2col + GEMM, alternating, with the ratio (for a noisy machine).

use std::time::Instant;

use convnet_kernels::conv::{
    conv2d_backward_filter, conv2d_backward_filter_tuned, conv2d_backward_input,
    conv2d_backward_input_tuned, conv2d_forward, conv2d_forward_tuned, ConvGeometry, Epilogue,
    Tuning,
};
use convnet_kernels::Padding;

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
