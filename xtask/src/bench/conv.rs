//! The three convolutions of the basic Cats-vs-Dogs CNN at batch 32 (3x3,
//! stride 1, valid, bias, ReLU): forward, and forward+backward (forward,
//! input gradient, filter and bias gradients; counted as 3x the forward
//! FLOPs).

use convnet_kernels::conv::{
    conv2d_backward_filter, conv2d_backward_input, conv2d_forward, ConvGeometry, Epilogue,
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
    if let Some(o) = opts.first() {
        return Err(format!("unknown option `{o}`"));
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
