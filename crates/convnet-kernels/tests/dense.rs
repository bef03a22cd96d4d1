//! Dense forward/backward against naive f64 matrix products, determinism of
//! the gradients across thread counts, and error messages.

use convnet_kernels::dense::{dense_backward, dense_forward};
use proptest::prelude::*;

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

/// `C = A B` in f64 with `A` `(m, k)` read through `a(i, p)` and `B`
/// `(k, n)` through `b(p, j)`; also returns `sum_p |a(i,p) b(p,j)|`, the
/// scale of each entry's rounding error.
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

/// An f32 dot product of length k (any summation order, FMA or not) is
/// within `k u sum|a_p b_p|` (u = 2^-24) of the exact value, and the f64
/// reference is exact to ~1e-16 relative. We allow `(k + 2) * 2^-23 * scale`
/// (twice the bound, plus room for the final rounding and an added bias).
fn assert_close(got: &[f32], want: &[f64], scale: &[f64], k: usize, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        let tol = (k + 2) as f64 * f64::from(f32::EPSILON) * (s + w.abs()) + 1e-30;
        assert!(
            (g as f64 - w).abs() <= tol,
            "{what}[{i}]: {g} vs {w} (tol {tol})"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn forward_matches_naive(
        m in 1usize..40, k in 1usize..40, n in 1usize..40,
        with_bias in any::<bool>(), seed in any::<u64>(),
    ) {
        let (x, w, b) = (values(m * k, seed), values(k * n, seed ^ 1), values(n, seed ^ 2));
        let mut y = vec![f32::NAN; m * n];
        dense_forward(m, k, n, &x, &w, with_bias.then_some(&b[..]), &mut y).unwrap();
        let (mut want, mut scale) = naive(m, k, n, |i, p| x[i * k + p], |p, j| w[p * n + j]);
        if with_bias {
            for (i, (v, s)) in want.iter_mut().zip(&mut scale).enumerate() {
                *v += b[i % n] as f64;
                *s += (b[i % n] as f64).abs();
            }
        }
        assert_close(&y, &want, &scale, k, "y");
    }

    #[test]
    fn backward_matches_naive(
        m in 1usize..40, k in 1usize..40, n in 1usize..40,
        which in 1u8..8, seed in any::<u64>(),
    ) {
        let (x, w, dy) = (values(m * k, seed), values(k * n, seed ^ 1), values(m * n, seed ^ 2));
        let (mut dx, mut dw, mut db) =
            (vec![f32::NAN; m * k], vec![f32::NAN; k * n], vec![f32::NAN; n]);
        dense_backward(
            m, k, n, &x, &w, &dy,
            (which & 1 != 0).then_some(&mut dx[..]),
            (which & 2 != 0).then_some(&mut dw[..]),
            (which & 4 != 0).then_some(&mut db[..]),
        )
        .unwrap();
        if which & 1 != 0 {
            // dx = dy w^T: (m, n) x (n, k).
            let (want, scale) = naive(m, n, k, |i, j| dy[i * n + j], |j, p| w[p * n + j]);
            assert_close(&dx, &want, &scale, n, "dx");
        } else {
            prop_assert!(dx.iter().all(|v| v.is_nan()));
        }
        if which & 2 != 0 {
            // dw = x^T dy: (k, m) x (m, n).
            let (want, scale) = naive(k, m, n, |p, i| x[i * k + p], |i, j| dy[i * n + j]);
            assert_close(&dw, &want, &scale, m, "dw");
        }
        if which & 4 != 0 {
            let (want, scale) = naive(1, m, n, |_, _| 1.0, |i, j| dy[i * n + j]);
            assert_close(&db, &want, &scale, m, "db");
        }
    }
}

/// Forward and every gradient are bitwise identical on 1 and 2 threads, on
/// products big enough for the threaded GEMM (well above its threshold)
/// with a long reduction (`m` = 700 for `dw` and `db`).
#[test]
fn results_do_not_depend_on_thread_count() {
    for (m, k, n) in [(700, 300, 130), (257, 1000, 33), (64, 2048, 10)] {
        let (x, w, b) = (values(m * k, 1), values(k * n, 2), values(n, 3));
        let dy = values(m * n, 4);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| {
                let mut y = vec![0.0; m * n];
                dense_forward(m, k, n, &x, &w, Some(&b), &mut y).unwrap();
                let (mut dx, mut dw, mut db) = (vec![0.0; m * k], vec![0.0; k * n], vec![0.0; n]);
                dense_backward(
                    m,
                    k,
                    n,
                    &x,
                    &w,
                    &dy,
                    Some(&mut dx),
                    Some(&mut dw),
                    Some(&mut db),
                )
                .unwrap();
                (y, dx, dw, db)
            })
        };
        let (one, two) = (run(1), run(2));
        assert!(one.0 == two.0, "({m},{k},{n}): y differs");
        assert!(one.1 == two.1, "({m},{k},{n}): dx differs");
        assert!(one.2 == two.2, "({m},{k},{n}): dw differs");
        assert!(one.3 == two.3, "({m},{k},{n}): db differs");
        // And the big products are still right.
        let (want, scale) = naive(k, m, n, |p, i| x[i * k + p], |i, j| dy[i * n + j]);
        assert_close(&two.2, &want, &scale, m, "dw");
    }
}

#[test]
fn wrong_lengths_are_errors_naming_op_and_buffer() {
    let (m, k, n) = (3, 4, 5);
    let (x, w, b) = (vec![0.0; m * k], vec![0.0; k * n], vec![0.0; n]);
    let mut y = vec![0.0; m * n];
    let err = |r: convnet_kernels::Result<()>| r.unwrap_err().to_string();
    let e = err(dense_forward(m, k, n, &x[1..], &w, None, &mut y));
    assert!(e.contains("Dense") && e.contains("input"), "{e}");
    let e = err(dense_forward(m, k, n, &x, &w[1..], None, &mut y));
    assert!(e.contains("Dense") && e.contains("kernel"), "{e}");
    let e = err(dense_forward(m, k, n, &x, &w, Some(&b[1..]), &mut y));
    assert!(e.contains("Dense") && e.contains("bias"), "{e}");
    let e = err(dense_forward(m, k, n, &x, &w, None, &mut y[1..]));
    assert!(e.contains("Dense") && e.contains("output"), "{e}");

    let dy = vec![1.0; m * n];
    let e = err(dense_backward(m, k, n, &x, &w, &dy[1..], None, None, None));
    assert!(
        e.contains("Dense backward") && e.contains("output gradient"),
        "{e}"
    );
    // A bad gradient buffer is refused before anything is written.
    let (mut dx, mut dw, mut db) = (vec![7.0; m * k], vec![7.0; k * n], vec![7.0; n + 1]);
    let e = err(dense_backward(
        m,
        k,
        n,
        &x,
        &w,
        &dy,
        Some(&mut dx),
        Some(&mut dw),
        Some(&mut db),
    ));
    assert!(
        e.contains("Dense backward") && e.contains("bias gradient"),
        "{e}"
    );
    assert!(dx.iter().chain(&dw).all(|&v| v == 7.0));
    let e = err(dense_backward(
        m,
        k,
        n,
        &x,
        &w,
        &dy,
        Some(&mut dx[1..]),
        None,
        None,
    ));
    assert!(
        e.contains("Dense backward") && e.contains("input gradient"),
        "{e}"
    );
    let e = err(dense_backward(
        m,
        k,
        n,
        &x,
        &w,
        &dy,
        None,
        Some(&mut dw[1..]),
        None,
    ));
    assert!(
        e.contains("Dense backward") && e.contains("kernel gradient"),
        "{e}"
    );
}

/// Empty products are fine: `k = 0` gives the bias alone, zero-sized
/// gradients stay empty and `dw` of an empty batch is zero.
#[test]
fn degenerate_sizes() {
    let mut y = vec![9.0; 6];
    dense_forward(2, 0, 3, &[], &[], Some(&[1.0, 2.0, 3.0]), &mut y).unwrap();
    assert_eq!(y, [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    let (mut dw, mut db) = (vec![9.0; 6], vec![9.0; 3]);
    dense_backward(
        0,
        2,
        3,
        &[],
        &[0.0; 6],
        &[],
        Some(&mut []),
        Some(&mut dw),
        Some(&mut db),
    )
    .unwrap();
    assert_eq!(dw, [0.0; 6]);
    assert_eq!(db, [0.0; 3]);
}
