//! The streamed forward and the block-wise kernel gradient against the GEMM
//! path and a naive f64 product: shapes with leftover rows and columns,
//! several blocks of the reduction, and independence from the thread count
//! and from how the rows are cut into blocks.

use convnet_kernels::dense::{dense_backward, dense_forward_streamed, outer_product, outer_rows};
use convnet_kernels::gemm::{sgemm, Layout, Parallelism};

fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `got` within `(terms + 2) 2^-23 sum|a b|` of the exact f64 product (the
/// bound of any f32 summation order, doubled), and of the GEMM's result by
/// twice that.
fn assert_close(got: &[f32], want: &[f64], scale: &[f64], terms: usize, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let tol = (terms + 2) as f64 * f64::from(f32::EPSILON) * (s + w.abs()) + 1e-30;
        assert!(
            (g as f64 - w).abs() <= tol,
            "{what}[{i}]: {g} vs {w} (tol {tol})"
        );
    }
}

fn naive(
    m: usize,
    k: usize,
    n: usize,
    a: impl Fn(usize, usize) -> f32,
    b: impl Fn(usize, usize) -> f32,
) -> (Vec<f64>, Vec<f64>) {
    let (mut c, mut scale) = (vec![0.0; m * n], vec![0.0; m * n]);
    for i in 0..m {
        for j in 0..n {
            for p in 0..k {
                let t = a(i, p) as f64 * b(p, j) as f64;
                c[i * n + j] += t;
                scale[i * n + j] += t.abs();
            }
        }
    }
    (c, scale)
}

/// Shapes: leftover rows of the 4-row tile (8 rows on AVX-512 builds:
/// every remainder from 1 to 7), leftover columns of the 32-column tile,
/// narrow outputs (scalar loop only), reductions over several 512-row
/// blocks and 64-row steps.
const SHAPES: [(usize, usize, usize); 10] = [
    (6, 98, 40),
    (15, 303, 64),
    (1, 1, 1),
    (3, 5, 7),
    (4, 64, 32),
    (5, 70, 33),
    (7, 1100, 45),
    (32, 1537, 96),
    (33, 600, 130),
    (2, 3000, 31),
];

#[test]
fn streamed_forward_matches_naive_and_gemm() {
    for (m, k, n) in SHAPES {
        let (x, w, b) = (values(m * k, 1), values(k * n, 2), values(n, 3));
        for bias in [None, Some(&b[..])] {
            let mut y = vec![f32::NAN; m * n];
            dense_forward_streamed(m, k, n, &x, &w, bias, &mut y).unwrap();
            let (mut want, mut scale) = naive(m, k, n, |i, p| x[i * k + p], |p, j| w[p * n + j]);
            if let Some(b) = bias {
                for (i, (v, s)) in want.iter_mut().zip(&mut scale).enumerate() {
                    *v += b[i % n] as f64;
                    *s += (b[i % n] as f64).abs();
                }
            }
            assert_close(&y, &want, &scale, k, &format!("y ({m},{k},{n})"));
            let mut g = vec![0.0f32; m * n];
            sgemm(
                m,
                k,
                n,
                &x,
                Layout::RowMajor,
                &w,
                Layout::RowMajor,
                &mut g,
                false,
                Parallelism::Rayon,
            );
            if let Some(b) = bias {
                for (i, v) in g.iter_mut().enumerate() {
                    *v += b[i % n];
                }
            }
            let g64: Vec<f64> = g.iter().map(|&v| v as f64).collect();
            assert_close(&y, &g64, &scale, 2 * k, &format!("y vs gemm ({m},{k},{n})"));
        }
    }
}

#[test]
fn block_gradient_matches_naive_and_gemm() {
    for (m, k, n) in SHAPES {
        let (x, dy) = (values(m * k, 4), values(m * n, 5));
        let mut dw = vec![f32::NAN; k * n];
        outer_product(m, k, n, &x, &dy, &mut dw).unwrap();
        let (want, scale) = naive(k, m, n, |p, i| x[i * k + p], |i, j| dy[i * n + j]);
        assert_close(&dw, &want, &scale, m, &format!("dw ({m},{k},{n})"));
        let mut g = vec![0.0f32; k * n];
        dense_backward(
            m,
            k,
            n,
            &x,
            &values(k * n, 6),
            &dy,
            None,
            Some(&mut g),
            None,
        )
        .unwrap();
        let g64: Vec<f64> = g.iter().map(|&v| v as f64).collect();
        assert_close(
            &dw,
            &g64,
            &scale,
            2 * m,
            &format!("dw vs gemm ({m},{k},{n})"),
        );
        // Any cut into whole rows gives the same bits.
        for rows in [1, 3, 64] {
            let mut blocks = vec![f32::NAN; k * n];
            for (b, out) in blocks.chunks_mut(rows * n).enumerate() {
                outer_rows(m, k, n, &x, &dy, b * rows, out).unwrap();
            }
            assert!(blocks == dw, "({m},{k},{n}) in blocks of {rows} rows");
        }
    }
}

#[test]
fn results_do_not_depend_on_thread_count() {
    for (m, k, n) in [(32, 5000, 200), (9, 700, 1000)] {
        let (x, w, dy) = (values(m * k, 7), values(k * n, 8), values(m * n, 9));
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut y = vec![0.0; m * n];
                dense_forward_streamed(m, k, n, &x, &w, None, &mut y).unwrap();
                let mut dw = vec![0.0; k * n];
                outer_product(m, k, n, &x, &dy, &mut dw).unwrap();
                (y, dw)
            })
        };
        let (one, three) = (run(1), run(3));
        assert!(one.0 == three.0, "({m},{k},{n}): y differs");
        assert!(one.1 == three.1, "({m},{k},{n}): dw differs");
    }
}

#[test]
fn bad_blocks_are_errors() {
    let (m, k, n) = (2, 5, 4);
    let (x, dy) = (values(m * k, 1), values(m * n, 2));
    let mut out = vec![0.0; 3];
    assert!(outer_rows(m, k, n, &x, &dy, 0, &mut out).is_err());
    let mut out = vec![0.0; 2 * n];
    assert!(outer_rows(m, k, n, &x, &dy, 4, &mut out).is_err());
    assert!(outer_rows(m, k, n, &x, &dy, 3, &mut out).is_ok());
    assert!(outer_rows(m, k, n, &x[1..], &dy, 0, &mut out).is_err());
    let mut y = vec![0.0; m * n];
    assert!(dense_forward_streamed(m, k, n, &x, &values(k * n, 3)[1..], None, &mut y).is_err());
}
