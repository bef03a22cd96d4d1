//! Times the dense kernels on the InceptionV3 transfer head's shape
//! (batch 32, 37632 -> 1024): the GEMM against the streamed forward, and
//! the GEMM kernel gradient against [`outer_product`]. Prints the minimum
//! and median of several runs (the machine is shared).
//!
//! `cargo run --release -p convnet-kernels --example dense_head`

use std::time::Instant;

use convnet_kernels::dense::{dense_forward_streamed, outer_product, outer_rows};
use convnet_kernels::gemm::{sgemm, Layout, Parallelism};

/// CPU time of all the process's threads, in ms (from
/// `/proc/self/task/*/schedstat`): on a shared machine, wall-clock time
/// counts the other processes too.
fn cpu_ms() -> f64 {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        if let Ok(s) = std::fs::read_to_string(task.path().join("schedstat")) {
            ns += s
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
    }
    ns as f64 * 1e-6
}

fn time(name: &str, reps: usize, mut f: impl FnMut()) {
    let mut t: Vec<(f64, f64)> = (0..reps)
        .map(|_| {
            let (s, c) = (Instant::now(), cpu_ms());
            f();
            (cpu_ms() - c, s.elapsed().as_secs_f64() * 1e3)
        })
        .collect();
    t.sort_by(|a, b| a.0.total_cmp(&b.0));
    println!(
        "{name}: cpu min {:.1} ms, median {:.1} ms (wall median {:.1})",
        t[0].0,
        t[reps / 2].0,
        t[reps / 2].1
    );
}

fn main() {
    let (m, k, n) = (32, 37632, 1024);
    let x: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.01).collect();
    let w: Vec<f32> = (0..k * n).map(|i| (i % 13) as f32 * 0.01).collect();
    let dy: Vec<f32> = (0..m * n).map(|i| (i % 7) as f32 * 0.01).collect();
    let mut y = vec![0.0f32; m * n];
    let mut dw = vec![0.0f32; k * n];
    let reps = 9;
    for _ in 0..2 {
        time("forward gemm", reps, || {
            sgemm(
                m,
                k,
                n,
                &x,
                Layout::RowMajor,
                &w,
                Layout::RowMajor,
                &mut y,
                false,
                Parallelism::Rayon,
            )
        });
        time("forward streamed", reps, || {
            dense_forward_streamed(m, k, n, &x, &w, None, &mut y).unwrap()
        });
        time("dw gemm", reps, || {
            sgemm(
                k,
                m,
                n,
                &x,
                Layout::Transposed,
                &dy,
                Layout::RowMajor,
                &mut dw,
                false,
                Parallelism::Rayon,
            )
        });
        time("dw outer_product", reps, || {
            outer_product(m, k, n, &x, &dy, &mut dw).unwrap()
        });
        let mut block = vec![0.0f32; 64 * n];
        time("dw outer_rows into one L2 block", reps, || {
            for k0 in (0..k).step_by(64) {
                outer_rows(m, k, n, &x, &dy, k0, &mut block).unwrap();
            }
        });
        time("forward streamed, kernel in L2 (x74)", reps, || {
            for _ in 0..k / 512 {
                dense_forward_streamed(m, 512, n, &x[..m * 512], &w[..512 * n], None, &mut y)
                    .unwrap()
            }
        });
        let mut total = 0.0f32;
        time("read the kernel once (sum)", reps, || {
            total += w.iter().fold(0.0f32, |a, &b| a + b)
        });
        println!("{total}");
    }
}
