//! Dropout masks: values, rate, reproducibility, the sequential draw from
//! the given RNG, invalid rates and `apply_mask`.

use convnet_kernels::dropout::{apply_mask, dropout_mask};
use convnet_tensor::Rng;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Element i is 0 exactly when the i-th `uniform()` draw is below `rate`,
    /// so a mask is reproducible from the seed and the RNG advances by `len`.
    #[test]
    fn mask_is_the_sequential_draw(len in 0usize..2000, rate in 0.0f32..0.99, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let m = dropout_mask(len, rate, &mut rng).unwrap();
        let mut reference = Rng::new(seed);
        let keep = 1.0 / (1.0 - rate);
        for (i, &v) in m.iter().enumerate() {
            let want = if reference.uniform() < rate { 0.0 } else { keep };
            prop_assert_eq!(v, want, "element {}", i);
        }
        prop_assert_eq!(rng.next_u64(), reference.next_u64());
        prop_assert_eq!(&m, &dropout_mask(len, rate, &mut Rng::new(seed)).unwrap());
    }

    #[test]
    fn apply_mask_multiplies(len in 0usize..500, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x: Vec<f32> = (0..len).map(|_| rng.normal()).collect();
        let m = dropout_mask(len, 0.3, &mut rng).unwrap();
        let mut y = vec![f32::NAN; len];
        apply_mask(&x, &m, &mut y).unwrap();
        prop_assert!(y.iter().zip(&x).zip(&m).all(|((&y, &x), &m)| y == x * m));
    }
}

/// The fraction of zeros is `rate` within 5 standard deviations
/// (sqrt(rate (1 - rate) / len) ~ 1.3e-3 at len = 1e5), and kept values are
/// scaled so that the mask's mean is 1.
#[test]
fn mask_statistics() {
    let len = 100_000;
    for rate in [0.1f32, 0.25, 0.5, 0.9] {
        let m = dropout_mask(len, rate, &mut Rng::new(42)).unwrap();
        let keep = 1.0 / (1.0 - rate);
        assert!(m.iter().all(|&v| v == 0.0 || v == keep));
        let zeros = m.iter().filter(|&&v| v == 0.0).count() as f64 / len as f64;
        let sd = (rate as f64 * (1.0 - rate as f64) / len as f64).sqrt();
        assert!(
            (zeros - rate as f64).abs() < 5.0 * sd,
            "rate {rate}: {zeros}"
        );
        let mean = m.iter().map(|&v| v as f64).sum::<f64>() / len as f64;
        assert!(
            (mean - 1.0).abs() < 5.0 * sd * keep as f64,
            "rate {rate}: mean {mean}"
        );
    }
}

#[test]
fn rate_zero_keeps_everything() {
    let m = dropout_mask(1000, 0.0, &mut Rng::new(3)).unwrap();
    assert!(m.iter().all(|&v| v == 1.0));
    assert!(dropout_mask(0, 0.5, &mut Rng::new(3)).unwrap().is_empty());
}

#[test]
fn invalid_rates_are_errors() {
    for rate in [
        -0.1,
        -0.0 - f32::EPSILON,
        1.0,
        1.5,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ] {
        let e = dropout_mask(10, rate, &mut Rng::new(1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("Dropout") && e.contains("rate"), "{rate}: {e}");
    }
    // Just below 1 is allowed (and keeps almost nothing).
    let m = dropout_mask(10, 0.999_999, &mut Rng::new(1)).unwrap();
    assert!(m.iter().all(|&v| v == 0.0 || v.is_finite()));
}

/// Above the parallel threshold `apply_mask` is still elementwise exact,
/// whatever the thread count.
#[test]
fn apply_mask_large_is_exact_and_deterministic() {
    let len = 300_001;
    let mut rng = Rng::new(9);
    let x: Vec<f32> = (0..len).map(|_| rng.normal()).collect();
    let m = dropout_mask(len, 0.5, &mut rng).unwrap();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut y = vec![0.0; len];
            apply_mask(&x, &m, &mut y).unwrap();
            y
        })
    };
    let (one, two) = (run(1), run(2));
    assert!(one == two);
    assert!(two.iter().zip(&x).zip(&m).all(|((&y, &x), &m)| y == x * m));
}

#[test]
fn wrong_lengths_are_errors_naming_buffer() {
    let (x, m) = (vec![1.0; 8], vec![1.0; 8]);
    let mut y = vec![0.0; 8];
    let e = apply_mask(&x, &m[1..], &mut y).unwrap_err().to_string();
    assert!(e.contains("Dropout") && e.contains("mask"), "{e}");
    let e = apply_mask(&x, &m, &mut y[..7]).unwrap_err().to_string();
    assert!(e.contains("Dropout") && e.contains("output"), "{e}");
}
