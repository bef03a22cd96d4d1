//! Tile-size and path sweep for the convolution kernels on the basic CNN's
//! layers: `cargo bench -p convnet-kernels --bench conv_tiles [-- LAYER...]`.
//!
//! Prints GFLOP/s of the forward pass, the input gradient and the filter
//! gradient for each tile size and path, to choose `Tuning::for_geometry`'s
//! defaults. Variants run interleaved (every repetition times each variant
//! once), so that other jobs on the machine disturb them alike.
//!
//! Environment: `TILES=256,1024` tile sizes (default: a sweep), `REPS`
//! repetitions (default 5), `BATCH` batch size (default 32), `CPU=1` to
//! time CPU time of the process instead of wall time (Linux), `MIN=1` to
//! report the fastest repetition instead of the median, `ONLY=forward`
//! (or `input`, `filter`) for one kernel. Not a criterion bench: a table.

use std::time::Instant;

use convnet_kernels::conv::{
    conv2d_backward_filter_tuned, conv2d_backward_input_tuned, conv2d_forward_tuned, ConvGeometry,
    Epilogue, Tuning,
};
use convnet_kernels::Padding;

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

/// CPU time of all the process's threads, in seconds (Linux; 0 elsewhere).
fn cpu_secs() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        / 1e9
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v == "1")
}

fn main() {
    let layers = [
        ("conv1", [32, 150, 150, 3], 32),
        ("conv2", [32, 74, 74, 32], 64),
        ("conv3", [32, 36, 36, 64], 128),
    ];
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let reps: usize = std::env::var("REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let (cpu, min) = (env_flag("CPU"), env_flag("MIN"));
    let only = std::env::var("ONLY").unwrap_or_default();
    let kernels: Vec<&str> = ["forward", "input", "filter"]
        .into_iter()
        .filter(|k| only.is_empty() || only == *k)
        .collect();
    for (name, mut input, f) in layers {
        if !args.is_empty() && !args.iter().any(|a| a == name) {
            continue;
        }
        if let Some(n) = std::env::var("BATCH").ok().and_then(|s| s.parse().ok()) {
            input[0] = n;
        }
        let g = ConvGeometry::new(input, [3, 3, input[3], f], (1, 1), Padding::Valid).unwrap();
        let x = values(g.input_shape().iter().product(), 1);
        let w: Vec<f32> = values(g.kernel_shape().iter().product(), 2);
        let b = values(f, 3);
        let dy = values(g.output_shape().iter().product(), 4);
        let (mut y, mut dx, mut dw, mut db) = (
            vec![0.0; dy.len()],
            vec![0.0; x.len()],
            vec![0.0; w.len()],
            vec![0.0; f],
        );
        let gf = g.flops() as f64 / 1e9;
        let d = Tuning::for_geometry(&g);
        println!("{name} {input:?}: default {d:?}");
        let mut tunings = vec![d];
        let sizes: Vec<usize> = std::env::var("TILES")
            .ok()
            .map(|s| s.split(',').filter_map(|v| v.parse().ok()).collect())
            .unwrap_or_else(|| vec![64, 128, 256, 512, 1024, 2048, 4096]);
        let directs: &[bool] = if g.c <= 4 { &[true, false] } else { &[false] };
        for rows in sizes {
            for &direct in directs {
                tunings.push(Tuning {
                    tile_rows: rows,
                    direct,
                    simd: true,
                    ..d
                });
            }
        }
        // times[variant][kernel][rep]
        let mut times = vec![vec![Vec::new(); kernels.len()]; tunings.len()];
        for rep in 0..=reps {
            for (v, &t) in tunings.iter().enumerate() {
                for (ki, &kernel) in kernels.iter().enumerate() {
                    let (start, c0) = (Instant::now(), cpu_secs());
                    match kernel {
                        "forward" => {
                            conv2d_forward_tuned(&g, &x, &w, Some(&b), Epilogue::Relu, &mut y, t)
                        }
                        "input" => conv2d_backward_input_tuned(&g, &dy, &w, &mut dx, t),
                        _ => conv2d_backward_filter_tuned(&g, &x, &dy, &mut dw, Some(&mut db), t),
                    }
                    .unwrap();
                    let secs = if cpu {
                        cpu_secs() - c0
                    } else {
                        start.elapsed().as_secs_f64()
                    };
                    if rep > 0 {
                        times[v][ki].push(secs); // rep 0 warms up
                    }
                }
            }
        }
        for (t, per_kernel) in tunings.iter().zip(&mut times) {
            let mut line = format!("  tile {:5} direct {:5}:", t.tile_rows, t.direct);
            let mut total = 0.0;
            for (kernel, ts) in kernels.iter().zip(per_kernel.iter_mut()) {
                ts.sort_by(f64::total_cmp);
                let s = if min { ts[0] } else { ts[ts.len() / 2] };
                total += s;
                line += &format!("  {kernel} {:6.1}", gf / s);
            }
            if kernels.len() == 3 {
                line += &format!("  fwd+bwd {:6.1}", 3.0 * gf / total);
            }
            println!("{line} GFLOP/s");
        }
    }
}
