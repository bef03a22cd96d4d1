//! Batch normalisation against an f64 reference: forward in both modes, the
//! full training-mode gradient (closed form and finite differences of the
//! f64 forward), determinism across thread counts and error messages.

use convnet_kernels::batchnorm::{
    batch_norm_backward_inference, batch_norm_backward_train, batch_norm_forward_inference,
    batch_norm_forward_train,
};
use proptest::prelude::*;

fn values(len: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            lo + (hi - lo) * ((s >> 40) as f32 / (1u64 << 24) as f32)
        })
        .collect()
}

/// Batch statistics in f64: per-channel mean and biased variance.
fn stats(rows: usize, c: usize, x: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for ch in 0..c {
        mean[ch] = (0..rows).map(|r| x[r * c + ch]).sum::<f64>() / rows as f64;
        var[ch] = (0..rows)
            .map(|r| (x[r * c + ch] - mean[ch]).powi(2))
            .sum::<f64>()
            / rows as f64;
    }
    (mean, var)
}

/// `y = gamma (x - mean) / sqrt(var + eps) + beta` in f64.
fn normalise(
    c: usize,
    x: &[f64],
    gamma: &[f64],
    beta: &[f64],
    mean: &[f64],
    var: &[f64],
    eps: f64,
) -> Vec<f64> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| {
            let ch = i % c;
            gamma[ch] * (v - mean[ch]) / (var[ch] + eps).sqrt() + beta[ch]
        })
        .collect()
}

/// The training-mode forward entirely in f64.
fn forward64(rows: usize, c: usize, x: &[f64], gamma: &[f64], beta: &[f64], eps: f64) -> Vec<f64> {
    let (mean, var) = stats(rows, c, x);
    normalise(c, x, gamma, beta, &mean, &var, eps)
}

fn to64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&v| v as f64).collect()
}

/// Per-element tolerance `tol * (1 + scale)` around an f64 reference.
fn assert_close(got: &[f32], want: &[f64], scale: &[f64], tol: f64, what: &str) {
    for (i, ((&g, &w), &s)) in got.iter().zip(want).zip(scale).enumerate() {
        assert!(
            (g as f64 - w).abs() <= tol * (1.0 + s),
            "{what}[{i}]: {g} vs {w} (scale {s})"
        );
    }
}

#[derive(Debug, Clone)]
struct Case {
    rows: usize,
    c: usize,
    x: Vec<f32>,
    dy: Vec<f32>,
    gamma: Option<Vec<f32>>,
    beta: Option<Vec<f32>>,
    eps: f32,
}

impl Case {
    fn gamma64(&self) -> Vec<f64> {
        self.gamma.as_deref().map_or(vec![1.0; self.c], to64)
    }
    fn beta64(&self) -> Vec<f64> {
        self.beta.as_deref().map_or(vec![0.0; self.c], to64)
    }
}

/// Random cases: odd sizes, channel offsets up to 10 times the spread (the
/// two-pass variance must cope), optional gamma/beta, Keras's eps values.
fn case_strategy() -> impl Strategy<Value = Case> {
    (
        1usize..40,
        1usize..7,
        any::<u64>(),
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(1e-3f32), Just(1e-5f32)],
    )
        .prop_map(|(rows, c, seed, with_gamma, with_beta, eps)| {
            let offsets = values(c, seed ^ 9, -10.0, 10.0);
            let x = values(rows * c, seed, -1.0, 1.0)
                .iter()
                .enumerate()
                .map(|(i, &v)| v + offsets[i % c])
                .collect();
            Case {
                rows,
                c,
                x,
                dy: values(rows * c, seed ^ 1, -1.0, 1.0),
                gamma: with_gamma.then(|| values(c, seed ^ 2, -2.0, 2.0)),
                beta: with_beta.then(|| values(c, seed ^ 3, -2.0, 2.0)),
                eps,
            }
        })
}

/// Runs the training forward; returns `(y, mean, var)`.
fn forward_train(t: &Case) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (mut y, mut mean, mut var) = (
        vec![f32::NAN; t.x.len()],
        vec![f32::NAN; t.c],
        vec![f32::NAN; t.c],
    );
    batch_norm_forward_train(
        t.rows,
        t.c,
        &t.x,
        t.gamma.as_deref(),
        t.beta.as_deref(),
        t.eps,
        &mut y,
        &mut mean,
        &mut var,
    )
    .unwrap();
    (y, mean, var)
}

/// Runs the training backward; returns `(dx, dgamma, dbeta)`.
fn backward_train(t: &Case, mean: &[f32], var: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let (mut dx, mut dg, mut db) = (
        vec![f32::NAN; t.x.len()],
        vec![f32::NAN; t.c],
        vec![f32::NAN; t.c],
    );
    batch_norm_backward_train(
        t.rows,
        t.c,
        &t.x,
        &t.dy,
        t.gamma.as_deref(),
        mean,
        var,
        t.eps,
        &mut dx,
        t.gamma.is_some().then_some(&mut dg[..]),
        t.beta.is_some().then_some(&mut db[..]),
    )
    .unwrap();
    (dx, dg, db)
}

// Tolerances (u = 2^-24 ~ 6e-8 is the f32 rounding unit).
// - mean/var are f64 results rounded once to f32: relative 1e-6 (16u).
// - y = x*scale + shift in f32 with scale, shift rounded from f64: the error
//   is a few u times |x*scale| + |shift|, which exceeds |y| when the channel
//   offset is large next to its spread (offset 10, spread 1e-3 -> ~1e4 in
//   the terms); we allow 1e-6 (16u) times those terms.
// - dx = k1 dy + k2 x + k3: the same cancellation; the terms are bounded by
//   |g| inv (|dy| + |xhat| mean|dy xhat| + mean|dy|) + |k2| |mean| and the
//   f32 mean/var passed in shift inv and xhat by ~u relative: 1e-5 (160u) of
//   the terms leaves margin, while a missing term of the gradient is O(1).
// - dgamma/dbeta are f64 sums rounded once: 1e-6 of sum|dy xhat|, sum|dy|.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn forward_train_matches_f64(t in case_strategy()) {
        let (y, mean, var) = forward_train(&t);
        let x64 = to64(&t.x);
        let (wm, wv) = stats(t.rows, t.c, &x64);
        assert_close(&mean, &wm, &wm.iter().map(|m| m.abs()).collect::<Vec<_>>(), 1e-6, "mean");
        assert_close(&var, &wv, &wv, 1e-6, "var");
        let (g, b) = (t.gamma64(), t.beta64());
        let want = normalise(t.c, &x64, &g, &b, &wm, &wv, t.eps as f64);
        let scale: Vec<f64> = x64
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let ch = i % t.c;
                let s = (g[ch] / (wv[ch] + t.eps as f64).sqrt()).abs();
                s * (v.abs() + wm[ch].abs()) + b[ch].abs()
            })
            .collect();
        assert_close(&y, &want, &scale, 1e-6, "y");
    }

    #[test]
    fn backward_train_matches_f64_formula(t in case_strategy()) {
        let (_, mean, var) = forward_train(&t);
        let (dx, dg, db) = backward_train(&t, &mean, &var);
        let (x64, dy64, g) = (to64(&t.x), to64(&t.dy), t.gamma64());
        // The gradient for the statistics the kernel is given (f32, as a
        // caller stores them); finite differences check the f64 forward.
        let (wm, wv) = (to64(&mean), to64(&var));
        let n = t.rows as f64;
        let (mut sdy, mut sdyx, mut sabs, mut sabsx) =
            (vec![0.0; t.c], vec![0.0; t.c], vec![0.0; t.c], vec![0.0; t.c]);
        let inv: Vec<f64> = wv.iter().map(|v| 1.0 / (v + t.eps as f64).sqrt()).collect();
        let xhat: Vec<f64> = x64.iter().enumerate().map(|(i, v)| (v - wm[i % t.c]) * inv[i % t.c]).collect();
        for i in 0..x64.len() {
            let ch = i % t.c;
            sdy[ch] += dy64[i];
            sdyx[ch] += dy64[i] * xhat[i];
            sabs[ch] += dy64[i].abs();
            sabsx[ch] += (dy64[i] * xhat[i]).abs();
        }
        let mut want = vec![0.0; x64.len()];
        let mut scale = vec![0.0; x64.len()];
        for i in 0..x64.len() {
            let ch = i % t.c;
            let a = g[ch] * inv[ch];
            want[i] = a / n * (n * dy64[i] - sdy[ch] - xhat[i] * sdyx[ch]);
            scale[i] = a.abs()
                * (dy64[i].abs()
                    + (xhat[i].abs() + wm[ch].abs() * inv[ch]) * sabsx[ch] / n
                    + sabs[ch] / n);
        }
        assert_close(&dx, &want, &scale, 1e-5, "dx");
        if t.gamma.is_some() {
            assert_close(&dg, &sdyx, &sabsx, 1e-6, "dgamma");
        }
        if t.beta.is_some() {
            assert_close(&db, &sdy, &sabs, 1e-6, "dbeta");
        }
    }

    #[test]
    fn inference_matches_f64(t in case_strategy(), seed in any::<u64>()) {
        let mean = values(t.c, seed, -10.0, 10.0);
        let var = values(t.c, seed ^ 1, 0.0, 4.0);
        let mut y = vec![f32::NAN; t.x.len()];
        batch_norm_forward_inference(
            t.rows, t.c, &t.x, t.gamma.as_deref(), t.beta.as_deref(), &mean, &var, t.eps, &mut y,
        ).unwrap();
        let (x64, g, b, m64, v64) = (to64(&t.x), t.gamma64(), t.beta64(), to64(&mean), to64(&var));
        let want = normalise(t.c, &x64, &g, &b, &m64, &v64, t.eps as f64);
        let inv: Vec<f64> = v64.iter().map(|v| 1.0 / (v + t.eps as f64).sqrt()).collect();
        let scale: Vec<f64> = x64.iter().enumerate().map(|(i, &v)| {
            let ch = i % t.c;
            (g[ch] * inv[ch]).abs() * (v.abs() + m64[ch].abs()) + b[ch].abs()
        }).collect();
        assert_close(&y, &want, &scale, 1e-6, "y");

        // Statistics are constants: dx = dy gamma inv, dgamma = sum(dy xhat).
        let (mut dx, mut dg, mut db) = (vec![f32::NAN; t.x.len()], vec![f32::NAN; t.c], vec![f32::NAN; t.c]);
        batch_norm_backward_inference(
            t.rows, t.c, &t.x, &t.dy, t.gamma.as_deref(), &mean, &var, t.eps, &mut dx,
            Some(&mut dg), Some(&mut db),
        ).unwrap();
        let dy64 = to64(&t.dy);
        let want: Vec<f64> = dy64.iter().enumerate().map(|(i, d)| d * g[i % t.c] * inv[i % t.c]).collect();
        let scale: Vec<f64> = want.iter().map(|w| w.abs()).collect();
        assert_close(&dx, &want, &scale, 1e-6, "inference dx");
        let (mut sdy, mut sdyx, mut sabs, mut sabsx) = (vec![0.0; t.c], vec![0.0; t.c], vec![0.0; t.c], vec![0.0; t.c]);
        for i in 0..x64.len() {
            let ch = i % t.c;
            let xhat = (x64[i] - m64[ch]) * inv[ch];
            sdy[ch] += dy64[i];
            sdyx[ch] += dy64[i] * xhat;
            sabs[ch] += dy64[i].abs();
            sabsx[ch] += (dy64[i] * xhat).abs();
        }
        assert_close(&dg, &sdyx, &sabsx, 1e-6, "inference dgamma");
        assert_close(&db, &sdy, &sabs, 1e-6, "inference dbeta");
    }
}

/// The closed-form gradient agrees with central differences of the f64
/// forward of `L = sum(dy * y)` with respect to x, gamma and beta. In f64
/// the difference quotient with h = 1e-5 is exact to ~h^2 |L'''| + 1e-16 |L| / h,
/// about 1e-9 here, so the f32 kernel error (~1e-6 relative) dominates; we
/// allow 1e-4 of the gradient's scale.
#[test]
fn backward_train_matches_finite_differences() {
    for (rows, c, seed) in [(1, 2, 1), (2, 3, 2), (7, 3, 3), (33, 5, 4)] {
        let t = Case {
            rows,
            c,
            x: values(rows * c, seed, -3.0, 3.0),
            dy: values(rows * c, seed ^ 1, -1.0, 1.0),
            gamma: Some(values(c, seed ^ 2, 0.5, 2.0)),
            beta: Some(values(c, seed ^ 3, -1.0, 1.0)),
            eps: 1e-3,
        };
        let (_, mean, var) = forward_train(&t);
        let (dx, dg, db) = backward_train(&t, &mean, &var);
        let (x, g, b, dy) = (to64(&t.x), t.gamma64(), t.beta64(), to64(&t.dy));
        let eps = t.eps as f64;
        let loss = |x: &[f64], g: &[f64], b: &[f64]| -> f64 {
            forward64(rows, c, x, g, b, eps)
                .iter()
                .zip(&dy)
                .map(|(y, d)| y * d)
                .sum()
        };
        let h = 1e-5;
        let diff = |f: &dyn Fn(f64) -> f64| (f(h) - f(-h)) / (2.0 * h);
        let gscale = dx.iter().map(|v| v.abs()).fold(1.0f32, f32::max) as f64;
        for i in 0..x.len() {
            let fd = diff(&|d| {
                let mut xp = x.clone();
                xp[i] += d;
                loss(&xp, &g, &b)
            });
            assert!(
                (dx[i] as f64 - fd).abs() <= 1e-4 * gscale,
                "dx[{i}] ({rows}x{c}): {} vs {fd}",
                dx[i]
            );
        }
        for ch in 0..c {
            let fd = diff(&|d| {
                let mut gp = g.clone();
                gp[ch] += d;
                loss(&x, &gp, &b)
            });
            assert!(
                (dg[ch] as f64 - fd).abs() <= 1e-4 * (1.0 + fd.abs()),
                "dgamma[{ch}]: {} vs {fd}",
                dg[ch]
            );
            let fd = diff(&|d| {
                let mut bp = b.clone();
                bp[ch] += d;
                loss(&x, &g, &bp)
            });
            assert!(
                (db[ch] as f64 - fd).abs() <= 1e-4 * (1.0 + fd.abs()),
                "dbeta[{ch}]: {} vs {fd}",
                db[ch]
            );
        }
    }
}

/// A large channel offset next to a small spread: the two-pass variance
/// stays accurate where E[x^2] - E[x]^2 in f32 would lose every digit.
#[test]
fn variance_is_accurate_with_large_mean() {
    let rows = 1000;
    let x: Vec<f32> = values(rows, 5, -1.0, 1.0).iter().map(|v| 1e4 + v).collect();
    let t = Case {
        rows,
        c: 1,
        x,
        dy: vec![0.0; rows],
        gamma: None,
        beta: None,
        eps: 1e-3,
    };
    let (y, mean, var) = forward_train(&t);
    let (wm, wv) = stats(rows, 1, &to64(&t.x));
    assert!(
        (var[0] as f64 - wv[0]).abs() <= 1e-6 * wv[0],
        "{} vs {}",
        var[0],
        wv[0]
    );
    assert!((mean[0] as f64 - wm[0]).abs() <= 1e-6 * wm[0]);
    // y = x * scale + shift in f32 cancels terms of size |mean| / std ~ 2e4,
    // so each y carries an absolute error ~ulp(2e4) ~ 2e-3: check the
    // normalised batch's mean and spread at that resolution.
    let ym = y.iter().map(|&v| v as f64).sum::<f64>() / rows as f64;
    let yv = y.iter().map(|&v| (v as f64 - ym).powi(2)).sum::<f64>() / rows as f64;
    assert!(ym.abs() < 1e-2 && (yv - 1.0).abs() < 1e-2, "{ym} {yv}");
}

/// Without gamma and beta the kernels behave as gamma = 1, beta = 0.
#[test]
fn absent_gamma_beta_mean_one_and_zero() {
    let (rows, c) = (9, 4);
    let x = values(rows * c, 6, -2.0, 2.0);
    let dy = values(rows * c, 7, -1.0, 1.0);
    let none = Case {
        rows,
        c,
        x: x.clone(),
        dy: dy.clone(),
        gamma: None,
        beta: None,
        eps: 1e-3,
    };
    let ones = Case {
        gamma: Some(vec![1.0; c]),
        beta: Some(vec![0.0; c]),
        ..none.clone()
    };
    let (y0, m0, v0) = forward_train(&none);
    let (y1, m1, v1) = forward_train(&ones);
    assert_eq!((&y0, &m0, &v0), (&y1, &m1, &v1));
    let mut dx0 = vec![0.0; x.len()];
    batch_norm_backward_train(rows, c, &x, &dy, None, &m0, &v0, 1e-3, &mut dx0, None, None)
        .unwrap();
    let (dx1, _, _) = backward_train(&ones, &m1, &v1);
    assert_eq!(dx0, dx1);
}

/// Forward and backward statistics are reduced over fixed row blocks in a
/// fixed order: bitwise the same on 1 and 2 threads, on a batch large
/// enough for the parallel paths (70 000 rows x 5 channels).
#[test]
fn results_do_not_depend_on_thread_count() {
    let (rows, c) = (70_001, 5);
    let t = Case {
        rows,
        c,
        x: values(rows * c, 8, -3.0, 5.0),
        dy: values(rows * c, 9, -1.0, 1.0),
        gamma: Some(values(c, 10, 0.5, 2.0)),
        beta: Some(values(c, 11, -1.0, 1.0)),
        eps: 1e-3,
    };
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let (y, mean, var) = forward_train(&t);
            let (dx, dg, db) = backward_train(&t, &mean, &var);
            let mut yi = vec![0.0; t.x.len()];
            batch_norm_forward_inference(
                rows,
                c,
                &t.x,
                t.gamma.as_deref(),
                t.beta.as_deref(),
                &mean,
                &var,
                t.eps,
                &mut yi,
            )
            .unwrap();
            let (mut dxi, mut dgi, mut dbi) = (vec![0.0; t.x.len()], vec![0.0; c], vec![0.0; c]);
            batch_norm_backward_inference(
                rows,
                c,
                &t.x,
                &t.dy,
                t.gamma.as_deref(),
                &mean,
                &var,
                t.eps,
                &mut dxi,
                Some(&mut dgi),
                Some(&mut dbi),
            )
            .unwrap();
            (y, mean, var, dx, dg, db, yi, dxi, dgi, dbi)
        })
    };
    let (one, two) = (run(1), run(2));
    assert!(one == two, "batch norm differs between 1 and 2 threads");
    let (wm, wv) = stats(rows, c, &to64(&t.x));
    assert_close(&two.1, &wm, &wm, 1e-6, "mean");
    assert_close(&two.2, &wv, &wv, 1e-6, "var");
}

#[test]
fn wrong_lengths_and_arguments_are_errors() {
    let (rows, c) = (4, 3);
    let x = vec![1.0; rows * c];
    let (mut y, mut mean, mut var) = (vec![0.0; rows * c], vec![0.0; c], vec![1.0; c]);
    let err = |r: convnet_kernels::Result<()>| r.unwrap_err().to_string();
    let e = err(batch_norm_forward_train(
        rows,
        c,
        &x[1..],
        None,
        None,
        1e-3,
        &mut y,
        &mut mean,
        &mut var,
    ));
    assert!(
        e.contains("BatchNormalization") && e.contains("input"),
        "{e}"
    );
    let e = err(batch_norm_forward_train(
        rows,
        c,
        &x,
        Some(&[1.0; 2]),
        None,
        1e-3,
        &mut y,
        &mut mean,
        &mut var,
    ));
    assert!(
        e.contains("BatchNormalization") && e.contains("gamma"),
        "{e}"
    );
    let e = err(batch_norm_forward_train(
        rows,
        c,
        &x,
        None,
        Some(&[0.0; 4]),
        1e-3,
        &mut y,
        &mut mean,
        &mut var,
    ));
    assert!(e.contains("beta"), "{e}");
    let e = err(batch_norm_forward_train(
        rows,
        c,
        &x,
        None,
        None,
        1e-3,
        &mut y,
        &mut mean[..1],
        &mut var,
    ));
    assert!(e.contains("mean"), "{e}");
    for bad_eps in [-1e-3, f32::NAN, f32::INFINITY] {
        let e = err(batch_norm_forward_train(
            rows, c, &x, None, None, bad_eps, &mut y, &mut mean, &mut var,
        ));
        assert!(e.contains("BatchNormalization") && e.contains("eps"), "{e}");
    }
    let e = err(batch_norm_forward_inference(
        rows,
        c,
        &x,
        None,
        None,
        &mean,
        &var[1..],
        1e-3,
        &mut y,
    ));
    assert!(
        e.contains("BatchNormalization") && e.contains("variance"),
        "{e}"
    );
    let e = err(batch_norm_forward_inference(
        rows, c, &x, None, None, &mean, &var, -1.0, &mut y,
    ));
    assert!(e.contains("eps"), "{e}");

    // Backward: a bad gradient buffer is refused before dx is written.
    let (mut dx, mut dg) = (vec![7.0; rows * c], vec![7.0; c + 1]);
    let e = err(batch_norm_backward_train(
        rows,
        c,
        &x,
        &x,
        None,
        &mean,
        &var,
        1e-3,
        &mut dx,
        Some(&mut dg),
        None,
    ));
    assert!(
        e.contains("BatchNormalization backward") && e.contains("gamma gradient"),
        "{e}"
    );
    assert!(dx.iter().all(|&v| v == 7.0));
    let e = err(batch_norm_backward_inference(
        rows,
        c,
        &x,
        &x,
        None,
        &mean,
        &var,
        1e-3,
        &mut dx,
        None,
        Some(&mut dg),
    ));
    assert!(
        e.contains("BatchNormalization backward") && e.contains("beta gradient"),
        "{e}"
    );
    assert!(dx.iter().all(|&v| v == 7.0));
    let e = err(batch_norm_backward_train(
        rows,
        c,
        &x,
        &x[2..],
        None,
        &mean,
        &var,
        1e-3,
        &mut dx,
        None,
        None,
    ));
    assert!(e.contains("output gradient"), "{e}");
}
