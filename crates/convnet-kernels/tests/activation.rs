//! Activations and softmax against f64 references, stability at extreme
//! inputs, the parallel paths, and error messages.

use convnet_kernels::activation::{
    relu_backward, relu_forward, sigmoid_backward, sigmoid_forward, softmax_backward,
    softmax_forward, tanh_backward, tanh_forward,
};
use proptest::prelude::*;

fn values(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0) * scale
        })
        .collect()
}

fn sigmoid64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

// Tolerances. Sigmoid and tanh outputs lie in [-1, 1]; f32 `exp`/`tanh` are
// within a few ulps and the few extra operations add a few half-ulps, so an
// absolute 1e-6 (~16 ulps at 1) is ample yet far below any formula error.
// Backward rules are two or three f32 products of values bounded by
// |dy| <= 4: relative error ~3u of the exact value, checked with 1e-6
// absolute plus 1e-6 relative. Softmax outputs are probabilities: the row
// sum (f32, <= 64 terms) and exp are each within ~64u ~ 4e-6 relative, so
// 1e-5 absolute.
const TOL: f64 = 1e-6;

fn assert_close(got: &[f32], want: impl IntoIterator<Item = f64>, tol: f64, what: &str) {
    for (i, (&g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn elementwise_match_reference(len in 0usize..300, scale in 0.1f32..50.0, seed in any::<u64>()) {
        let x = values(len, seed, scale);
        let dy = values(len, seed ^ 1, 4.0);
        let (mut y, mut dx) = (vec![f32::NAN; len], vec![f32::NAN; len]);

        relu_forward(&x, &mut y).unwrap();
        prop_assert!(y.iter().zip(&x).all(|(&y, &x)| y == x.max(0.0)));
        relu_backward(&y, &dy, &mut dx).unwrap();
        let relu_grad_ok = dx
            .iter()
            .zip(&x)
            .zip(&dy)
            .all(|((&g, &x), &d)| g == if x > 0.0 { d } else { 0.0 });
        prop_assert!(relu_grad_ok);

        sigmoid_forward(&x, &mut y).unwrap();
        assert_close(&y, x.iter().map(|&v| sigmoid64(v as f64)), TOL, "sigmoid");
        sigmoid_backward(&y, &dy, &mut dx).unwrap();
        let want = y.iter().zip(&dy).map(|(&y, &d)| d as f64 * y as f64 * (1.0 - y as f64));
        assert_close(&dx, want, TOL, "sigmoid backward");

        tanh_forward(&x, &mut y).unwrap();
        assert_close(&y, x.iter().map(|&v| (v as f64).tanh()), TOL, "tanh");
        tanh_backward(&y, &dy, &mut dx).unwrap();
        let want = y.iter().zip(&dy).map(|(&y, &d)| d as f64 * (1.0 - y as f64 * y as f64));
        assert_close(&dx, want, TOL, "tanh backward");
    }

    #[test]
    fn softmax_matches_reference(
        rows in 1usize..12, cols in 1usize..64, scale in 0.1f32..100.0, seed in any::<u64>()
    ) {
        let x = values(rows * cols, seed, scale);
        let mut y = vec![f32::NAN; x.len()];
        softmax_forward(rows, cols, &x, &mut y).unwrap();
        let mut want = vec![0.0f64; x.len()];
        for (xr, wr) in x.chunks(cols).zip(want.chunks_mut(cols)) {
            let m = xr.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
            let s: f64 = xr.iter().map(|&v| (v as f64 - m).exp()).sum();
            for (w, &v) in wr.iter_mut().zip(xr) {
                *w = (v as f64 - m).exp() / s;
            }
        }
        assert_close(&y, want.iter().copied(), 1e-5, "softmax");

        let dy = values(x.len(), seed ^ 1, 4.0);
        let mut dx = vec![f32::NAN; x.len()];
        softmax_backward(rows, cols, &y, &dy, &mut dx).unwrap();
        let mut want = vec![0.0f64; x.len()];
        for ((yr, dr), wr) in y.chunks(cols).zip(dy.chunks(cols)).zip(want.chunks_mut(cols)) {
            let dot: f64 = yr.iter().zip(dr).map(|(&a, &b)| a as f64 * b as f64).sum();
            for ((w, &y), &d) in wr.iter_mut().zip(yr).zip(dr) {
                *w = y as f64 * (d as f64 - dot);
            }
        }
        // |dy| <= 4, so the f32 dot is within ~cols u * 4 of exact: 1e-5 * 4.
        assert_close(&dx, want.iter().copied(), 4e-5, "softmax backward");
    }
}

#[test]
fn sigmoid_is_stable_at_extremes() {
    let x = [
        -1000.0,
        -100.0,
        -88.0,
        -20.0,
        0.0,
        20.0,
        88.0,
        100.0,
        1000.0,
        f32::MAX,
        f32::MIN,
    ];
    let mut y = [f32::NAN; 11];
    sigmoid_forward(&x, &mut y).unwrap();
    assert!(
        y.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)),
        "{y:?}"
    );
    assert_eq!(y[0], 0.0);
    assert_eq!(y[4], 0.5);
    assert_eq!(y[8], 1.0);
    assert_eq!(y[9], 1.0);
    assert_eq!(y[10], 0.0);
    assert!(y[2] > 0.0 && y[2] < 1e-38, "{}", y[2]); // subnormal-range tail, not 0/0
    let mut dx = [f32::NAN; 11];
    sigmoid_backward(&y, &[1.0; 11], &mut dx).unwrap();
    assert!(dx.iter().all(|v| v.is_finite()), "{dx:?}");
    tanh_forward(&x, &mut y).unwrap();
    assert_eq!((y[0], y[8]), (-1.0, 1.0));
}

#[test]
fn softmax_is_stable_for_large_logits() {
    let x = [1000.0, 999.0, -1000.0, 88.0, 89.0, 90.0];
    let mut y = [0.0; 6];
    softmax_forward(2, 3, &x, &mut y).unwrap();
    assert!(y.iter().all(|v| v.is_finite()), "{y:?}");
    let e1 = (-1.0f64).exp();
    assert!((y[0] as f64 - 1.0 / (1.0 + e1)).abs() < 1e-6);
    assert_eq!(y[2], 0.0);
    for row in y.chunks(3) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }
}

/// Inputs large enough for the parallel chunks give exactly the per-element
/// results, whatever the thread count.
#[test]
fn large_inputs_parallel_and_deterministic() {
    let len = 5 * 65536 + 17;
    let x = values(len, 3, 6.0);
    let dy = values(len, 4, 2.0);
    let (rows, cols) = (len / 17, 17);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut out = Vec::new();
            let mut y = vec![0.0; len];
            let mut dx = vec![0.0; len];
            relu_forward(&x, &mut y).unwrap();
            relu_backward(&y, &dy, &mut dx).unwrap();
            out.push(y.clone());
            out.push(dx.clone());
            sigmoid_forward(&x, &mut y).unwrap();
            sigmoid_backward(&y, &dy, &mut dx).unwrap();
            out.push(y.clone());
            out.push(dx.clone());
            tanh_forward(&x, &mut y).unwrap();
            tanh_backward(&y, &dy, &mut dx).unwrap();
            out.push(y.clone());
            out.push(dx.clone());
            softmax_forward(rows, cols, &x[..rows * cols], &mut y[..rows * cols]).unwrap();
            softmax_backward(
                rows,
                cols,
                &y[..rows * cols],
                &dy[..rows * cols],
                &mut dx[..rows * cols],
            )
            .unwrap();
            out.push(y);
            out.push(dx);
            out
        })
    };
    let (one, two) = (run(1), run(2));
    assert!(one == two, "activations differ between 1 and 2 threads");
    // Spot-check against the per-element formula on the parallel result.
    assert!(two[0].iter().zip(&x).all(|(&y, &x)| y == x.max(0.0)));
    assert_close(
        &two[2],
        x.iter().map(|&v| sigmoid64(v as f64)),
        TOL,
        "sigmoid",
    );
    assert_close(&two[4], x.iter().map(|&v| (v as f64).tanh()), TOL, "tanh");
    for row in two[6][..rows * cols].chunks(cols) {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }
}

#[test]
fn wrong_lengths_are_errors_naming_op_and_buffer() {
    let (x, mut y) = (vec![0.0; 8], vec![0.0; 8]);
    let err = |r: convnet_kernels::Result<()>| r.unwrap_err().to_string();
    let e = err(relu_forward(&x, &mut y[1..]));
    assert!(e.contains("relu") && e.contains("y"), "{e}");
    let e = err(relu_backward(&x, &x[1..], &mut y));
    assert!(e.contains("relu backward") && e.contains("dy"), "{e}");
    let e = err(sigmoid_forward(&x, &mut y[..2]));
    assert!(e.contains("sigmoid"), "{e}");
    let e = err(sigmoid_backward(&x, &x, &mut y[..2]));
    assert!(e.contains("sigmoid backward") && e.contains("dx"), "{e}");
    let e = err(tanh_forward(&x[..3], &mut y));
    assert!(e.contains("tanh"), "{e}");
    let e = err(tanh_backward(&x, &x, &mut y[1..]));
    assert!(e.contains("tanh backward") && e.contains("dx"), "{e}");
    let e = err(softmax_forward(3, 3, &x, &mut y));
    assert!(e.contains("softmax") && e.contains("x"), "{e}");
    let e = err(softmax_forward(2, 4, &x, &mut y[1..]));
    assert!(e.contains("softmax") && e.contains("y"), "{e}");
    let e = err(softmax_backward(2, 4, &x, &x[1..], &mut y));
    assert!(e.contains("softmax backward") && e.contains("dy"), "{e}");
}
