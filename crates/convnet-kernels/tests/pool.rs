//! Pooling kernels against naive references (plain loops over the padded
//! window, f64 accumulation), on random small shapes with Valid, Same and
//! explicit (asymmetric) padding, plus the TensorFlow border rules, the
//! backward scatter, determinism and error messages.

use convnet_kernels::pool::{
    avg_pool2d_backward, avg_pool2d_forward, global_avg_pool2d_backward, global_avg_pool2d_forward,
    max_pool2d_backward, max_pool2d_forward, PoolGeometry,
};
use convnet_kernels::Padding;
use proptest::prelude::*;

/// Deterministic pseudo-random values in `[-1, 1)` (a small LCG, so tests
/// need no RNG crate and every value is distinct enough for max pooling).
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

/// The input cells of the window of output `(oy, ox)`, in row-major window
/// order, skipping padded cells: `(iy, ix)`.
fn window_cells(g: &PoolGeometry, oy: usize, ox: usize) -> Vec<(usize, usize)> {
    let mut cells = Vec::new();
    for ky in 0..g.ph {
        for kx in 0..g.pw {
            let iy = (oy * g.sh + ky) as isize - g.pads.top as isize;
            let ix = (ox * g.sw + kx) as isize - g.pads.left as isize;
            if iy >= 0 && ix >= 0 && (iy as usize) < g.h && (ix as usize) < g.w {
                cells.push((iy as usize, ix as usize));
            }
        }
    }
    cells
}

fn xi(g: &PoolGeometry, n: usize, iy: usize, ix: usize, ch: usize) -> usize {
    ((n * g.h + iy) * g.w + ix) * g.c + ch
}

fn yi(g: &PoolGeometry, n: usize, oy: usize, ox: usize, ch: usize) -> usize {
    ((n * g.oh + oy) * g.ow + ox) * g.c + ch
}

/// Naive max pooling: padded cells never win (they are skipped, i.e. -inf);
/// the first maximum in row-major window order wins; a window with no input
/// cell gives 0 and `u32::MAX`.
fn naive_max(g: &PoolGeometry, x: &[f32]) -> (Vec<f32>, Vec<u32>) {
    let len = g.n * g.oh * g.ow * g.c;
    let (mut y, mut arg) = (vec![0.0; len], vec![u32::MAX; len]);
    for n in 0..g.n {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let cells = window_cells(g, oy, ox);
                for ch in 0..g.c {
                    let mut best: Option<(f32, usize)> = None;
                    for &(iy, ix) in &cells {
                        let i = xi(g, n, iy, ix, ch);
                        if !matches!(best, Some((b, _)) if x[i] <= b) {
                            best = Some((x[i], i));
                        }
                    }
                    if let Some((v, i)) = best {
                        y[yi(g, n, oy, ox, ch)] = v;
                        arg[yi(g, n, oy, ox, ch)] = i as u32;
                    }
                }
            }
        }
    }
    (y, arg)
}

/// Naive average pooling: f64 sum over the non-padded cells divided by their
/// count (TensorFlow's rule); 0 for a window with no input cell.
fn naive_avg(g: &PoolGeometry, x: &[f32]) -> Vec<f32> {
    let mut y = vec![0.0; g.n * g.oh * g.ow * g.c];
    for n in 0..g.n {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let cells = window_cells(g, oy, ox);
                for ch in 0..g.c {
                    let s: f64 = cells
                        .iter()
                        .map(|&(iy, ix)| x[xi(g, n, iy, ix, ch)] as f64)
                        .sum();
                    y[yi(g, n, oy, ox, ch)] = (s / cells.len().max(1) as f64) as f32;
                }
            }
        }
    }
    y
}

/// The transpose of the naive average-pooling operator applied to `dy`, in
/// f64: each output spreads `dy / count` over its non-padded cells.
fn naive_avg_backward(g: &PoolGeometry, dy: &[f32]) -> Vec<f64> {
    let mut dx = vec![0.0f64; g.n * g.h * g.w * g.c];
    for n in 0..g.n {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let cells = window_cells(g, oy, ox);
                for ch in 0..g.c {
                    let d = dy[yi(g, n, oy, ox, ch)] as f64 / cells.len().max(1) as f64;
                    for &(iy, ix) in &cells {
                        dx[xi(g, n, iy, ix, ch)] += d;
                    }
                }
            }
        }
    }
    dx
}

/// The transpose of max pooling, in f64: each `dy` lands on its argmax.
fn naive_max_backward(g: &PoolGeometry, arg: &[u32], dy: &[f32]) -> Vec<f64> {
    let mut dx = vec![0.0f64; g.n * g.h * g.w * g.c];
    for (&a, &d) in arg.iter().zip(dy) {
        if a != u32::MAX {
            dx[a as usize] += d as f64;
        }
    }
    dx
}

fn padding_strategy() -> impl Strategy<Value = Padding> {
    prop_oneof![
        Just(Padding::Valid),
        Just(Padding::Same),
        (0usize..3, 0usize..3, 0usize..3, 0usize..3).prop_map(|(top, bottom, left, right)| {
            Padding::Explicit {
                top,
                bottom,
                left,
                right,
            }
        }),
    ]
}

/// Random geometries that resolve (windows 1-4, strides 1-3, odd sizes).
fn geometry_strategy() -> impl Strategy<Value = PoolGeometry> {
    (
        1usize..3,
        1usize..9,
        1usize..9,
        1usize..5,
        (1usize..5, 1usize..5),
        (1usize..4, 1usize..4),
        padding_strategy(),
    )
        .prop_filter_map(
            "window larger than the padded input",
            |(n, h, w, c, k, s, p)| PoolGeometry::new([n, h, w, c], k, s, p).ok(),
        )
}

// Tolerances. Max pooling selects values, so forward outputs and argmax are
// compared exactly. An average of at most 16 cells summed in f32 and divided
// once is within about 17 rounding errors (u = 2^-24 ~ 6e-8) of
// max|x| <= 1, i.e. ~1e-6; backward adds at most ceil(4/1)^2 = 16
// contributions of |dy/count| <= 1 each, the same order. 1e-5 leaves a 10x
// margin yet catches any wrong count (an error of at least 1/16 of a value
// ~ 1e-2 on random data).
const TOL: f64 = 1e-5;

fn assert_close(got: &[f32], want: impl IntoIterator<Item = f64>, what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((*g as f64 - w).abs() <= TOL, "{what}[{i}]: {g} vs {w}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn max_pool_matches_naive(g in geometry_strategy(), seed in any::<u64>()) {
        let x = values(g.n * g.h * g.w * g.c, seed);
        let len = g.n * g.oh * g.ow * g.c;
        let (mut y, mut arg) = (vec![f32::NAN; len], vec![7u32; len]);
        max_pool2d_forward(&g, &x, &mut y, &mut arg).unwrap();
        let (wy, warg) = naive_max(&g, &x);
        prop_assert_eq!(&y, &wy, "{:?}", g);
        prop_assert_eq!(&arg, &warg, "{:?}", g);

        let dy = values(len, seed ^ 1);
        let mut dx = vec![f32::NAN; x.len()];
        max_pool2d_backward(&g, &dy, &arg, &mut dx).unwrap();
        assert_close(&dx, naive_max_backward(&g, &warg, &dy), "max dx");
    }

    #[test]
    fn avg_pool_matches_naive(g in geometry_strategy(), seed in any::<u64>()) {
        let x = values(g.n * g.h * g.w * g.c, seed);
        let len = g.n * g.oh * g.ow * g.c;
        let mut y = vec![f32::NAN; len];
        avg_pool2d_forward(&g, &x, &mut y).unwrap();
        assert_close(&y, naive_avg(&g, &x).into_iter().map(f64::from), "avg y");

        let dy = values(len, seed ^ 1);
        let mut dx = vec![f32::NAN; x.len()];
        avg_pool2d_backward(&g, &dy, &mut dx).unwrap();
        assert_close(&dx, naive_avg_backward(&g, &dy), "avg dx");
    }

    /// The backward is the adjoint of the forward: <avg(x), dy> = <x, avg^T(dy)>.
    #[test]
    fn avg_pool_backward_is_adjoint(g in geometry_strategy(), seed in any::<u64>()) {
        let x = values(g.n * g.h * g.w * g.c, seed);
        let dy = values(g.n * g.oh * g.ow * g.c, seed ^ 2);
        let mut y = vec![0.0; dy.len()];
        let mut dx = vec![0.0; x.len()];
        avg_pool2d_forward(&g, &x, &mut y).unwrap();
        avg_pool2d_backward(&g, &dy, &mut dx).unwrap();
        let lhs: f64 = y.iter().zip(&dy).map(|(&a, &b)| a as f64 * b as f64).sum();
        let rhs: f64 = x.iter().zip(&dx).map(|(&a, &b)| a as f64 * b as f64).sum();
        // Each of the <= 2 * len products carries a relative error ~1e-6 of a value <= 1.
        prop_assert!((lhs - rhs).abs() <= 1e-5 * (1 + x.len() + dy.len()) as f64, "{} vs {}", lhs, rhs);
    }

    #[test]
    fn global_avg_pool_matches_naive(
        n in 1usize..4, hw in 1usize..40, c in 1usize..9, seed in any::<u64>()
    ) {
        let x = values(n * hw * c, seed);
        let mut y = vec![f32::NAN; n * c];
        global_avg_pool2d_forward(n, hw, c, &x, &mut y).unwrap();
        let want = (0..n * c).map(|i| {
            let (img, ch) = (i / c, i % c);
            (0..hw).map(|p| x[(img * hw + p) * c + ch] as f64).sum::<f64>() / hw as f64
        });
        assert_close(&y, want, "gap y");
        let dy = values(n * c, seed ^ 3);
        let mut dx = vec![f32::NAN; x.len()];
        global_avg_pool2d_backward(n, hw, c, &dy, &mut dx).unwrap();
        let want = (0..x.len()).map(|i| dy[(i / (hw * c)) * c + i % c] as f64 / hw as f64);
        assert_close(&dx, want, "gap dx");
    }
}

/// InceptionV3's 3x3 stride-1 SAME average pooling on a 4x4 image: the
/// corner averages its 4 real cells, an edge its 6, the interior its 9.
#[test]
fn same_avg_pool_excludes_padding_at_borders() {
    let g = PoolGeometry::new([1, 4, 4, 1], (3, 3), (1, 1), Padding::Same).unwrap();
    assert_eq!(g.output_shape(), [1, 4, 4, 1]);
    let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
    let mut y = vec![0.0; 16];
    avg_pool2d_forward(&g, &x, &mut y).unwrap();
    assert_eq!(y[0], (0.0 + 1.0 + 4.0 + 5.0) / 4.0);
    assert_eq!(y[1], (0.0 + 1.0 + 2.0 + 4.0 + 5.0 + 6.0) / 6.0);
    assert_eq!(
        y[5],
        (0.0 + 1.0 + 2.0 + 4.0 + 5.0 + 6.0 + 8.0 + 9.0 + 10.0) / 9.0
    );
    assert_eq!(y[15], (10.0 + 11.0 + 14.0 + 15.0) / 4.0);
    // Backward: dy = 1 everywhere; the corner cell (0, 0) is in the windows of
    // outputs (0,0) [4 cells], (0,1) [6], (1,0) [6] and (1,1) [9].
    let mut dx = vec![0.0; 16];
    avg_pool2d_backward(&g, &[1.0; 16], &mut dx).unwrap();
    let want = 1.0 / 4.0 + 2.0 / 6.0 + 1.0 / 9.0;
    assert!((dx[0] - want).abs() < 1e-6, "{} vs {want}", dx[0]);
    assert!((dx.iter().sum::<f32>() - 16.0).abs() < 1e-5);
}

/// SAME max pooling over negative values: padded cells must never win (a
/// zero-padded implementation would output 0 at the borders).
#[test]
fn same_max_pool_never_picks_padding() {
    let g = PoolGeometry::new([1, 5, 4, 2], (3, 3), (2, 2), Padding::Same).unwrap();
    let x: Vec<f32> = (0..40).map(|v| -1.0 - v as f32).collect();
    let mut y = vec![0.0; 3 * 2 * 2];
    let mut arg = vec![0; y.len()];
    max_pool2d_forward(&g, &x, &mut y, &mut arg).unwrap();
    assert!(y.iter().all(|&v| v < 0.0), "{y:?}");
    for (&v, &a) in y.iter().zip(&arg) {
        assert_eq!(x[a as usize], v);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The 2x2 stride-2 forward fast path and the backward (odd sizes leave
    /// a row or column no window covers) against the naive references.
    #[test]
    fn max_pool_2x2_stride_2_matches_naive(
        n in 1usize..3, h in 2usize..12, w in 2usize..12, c in 1usize..19, seed in any::<u64>()
    ) {
        let g = PoolGeometry::new([n, h, w, c], (2, 2), (2, 2), Padding::Valid).unwrap();
        let x = values(n * h * w * c, seed);
        let len = g.n * g.oh * g.ow * g.c;
        let (mut y, mut arg) = (vec![f32::NAN; len], vec![7u32; len]);
        max_pool2d_forward(&g, &x, &mut y, &mut arg).unwrap();
        let (wy, warg) = naive_max(&g, &x);
        prop_assert_eq!(&y, &wy);
        prop_assert_eq!(&arg, &warg);
        let dy = values(len, seed ^ 1);
        let mut dx = vec![f32::NAN; x.len()];
        max_pool2d_backward(&g, &dy, &arg, &mut dx).unwrap();
        assert_close(&dx, naive_max_backward(&g, &warg, &dy), "max dx");
    }
}

/// Overlapping windows send several gradients to one input: they add up.
#[test]
fn max_pool_backward_accumulates_overlaps() {
    // 3x3 stride 1 SAME on 3x3: every window holds the centre.
    let g = PoolGeometry::new([1, 3, 3, 1], (3, 3), (1, 1), Padding::Same).unwrap();
    let mut x = vec![0.0; 9];
    x[4] = 10.0;
    let (mut y, mut arg) = (vec![0.0; 9], vec![0; 9]);
    max_pool2d_forward(&g, &x, &mut y, &mut arg).unwrap();
    assert!(arg.iter().all(|&a| a == 4), "{arg:?}");
    let dy: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let mut dx = vec![f32::NAN; 9];
    max_pool2d_backward(&g, &dy, &arg, &mut dx).unwrap();
    assert_eq!(dx, [0.0, 0.0, 0.0, 0.0, 45.0, 0.0, 0.0, 0.0, 0.0]);

    // 3x3 stride 2 VALID on 5x5, two images: the centre (2, 2) is shared by
    // all four windows of each image; argmax indices are batch-flat.
    let g = PoolGeometry::new([2, 5, 5, 1], (3, 3), (2, 2), Padding::Valid).unwrap();
    let mut x = vec![0.0; 50];
    x[12] = 3.0;
    x[25 + 12] = 4.0;
    let (mut y, mut arg) = (vec![0.0; 8], vec![0; 8]);
    max_pool2d_forward(&g, &x, &mut y, &mut arg).unwrap();
    assert_eq!(arg, [12, 12, 12, 12, 37, 37, 37, 37]);
    let dy = [1.0, 2.0, 3.0, 4.0, 0.5, 0.5, 0.5, 0.5];
    let mut dx = vec![f32::NAN; 50];
    max_pool2d_backward(&g, &dy, &arg, &mut dx).unwrap();
    assert_eq!(dx[12], 10.0);
    assert_eq!(dx[37], 2.0);
    assert_eq!(dx.iter().filter(|&&v| v != 0.0).count(), 2);
}

/// Inputs large enough for the parallel paths still match the references,
/// and give bitwise the same results on 1 and 2 threads.
#[test]
fn large_inputs_parallel_and_deterministic() {
    let g = PoolGeometry::new([3, 33, 31, 16], (3, 3), (2, 2), Padding::Same).unwrap();
    let x = values(g.n * g.h * g.w * g.c, 11);
    let len = g.n * g.oh * g.ow * g.c;
    let dy = values(len, 12);
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let (mut my, mut arg, mut ay) = (vec![0.0; len], vec![0; len], vec![0.0; len]);
            let (mut mdx, mut adx) = (vec![0.0; x.len()], vec![0.0; x.len()]);
            max_pool2d_forward(&g, &x, &mut my, &mut arg).unwrap();
            max_pool2d_backward(&g, &dy, &arg, &mut mdx).unwrap();
            avg_pool2d_forward(&g, &x, &mut ay).unwrap();
            avg_pool2d_backward(&g, &dy, &mut adx).unwrap();
            let (hw, c) = (g.h * g.w, g.c);
            let (mut gy, mut gdx) = (vec![0.0; g.n * c], vec![0.0; x.len()]);
            global_avg_pool2d_forward(g.n, hw, c, &x, &mut gy).unwrap();
            global_avg_pool2d_backward(g.n, hw, c, &dy[..g.n * c], &mut gdx).unwrap();
            (my, arg, mdx, ay, adx, gy, gdx)
        })
    };
    let one = run(1);
    let two = run(2);
    assert!(one == two, "pooling differs between 1 and 2 threads");
    let (wy, warg) = naive_max(&g, &x);
    assert_eq!(two.0, wy);
    assert_eq!(two.1, warg);
    assert_close(&two.2, naive_max_backward(&g, &warg, &dy), "max dx");
    assert_close(
        &two.3,
        naive_avg(&g, &x).into_iter().map(f64::from),
        "avg y",
    );
    assert_close(&two.4, naive_avg_backward(&g, &dy), "avg dx");
    let (hw, c) = (g.h * g.w, g.c);
    let gap = (0..g.n * c).map(|i| {
        let (img, ch) = (i / c, i % c);
        (0..hw)
            .map(|p| x[(img * hw + p) * c + ch] as f64)
            .sum::<f64>()
            / hw as f64
    });
    assert_close(&two.5, gap, "gap y");
    let gap_dx = (0..x.len()).map(|i| dy[(i / (hw * c)) * c + i % c] as f64 / hw as f64);
    assert_close(&two.6, gap_dx, "gap dx");
}

/// A window wholly inside explicit padding outputs 0 (index `u32::MAX`),
/// and its gradient goes nowhere.
#[test]
fn window_entirely_in_padding() {
    let p = Padding::Explicit {
        top: 2,
        bottom: 0,
        left: 0,
        right: 0,
    };
    let g = PoolGeometry::new([1, 2, 2, 1], (1, 2), (1, 1), p).unwrap();
    assert_eq!(g.output_shape(), [1, 4, 1, 1]);
    let x = [1.0, -2.0, -3.0, -4.0];
    let (mut y, mut arg) = (vec![9.0; 4], vec![0; 4]);
    max_pool2d_forward(&g, &x, &mut y, &mut arg).unwrap();
    assert_eq!(y, [0.0, 0.0, 1.0, -3.0]);
    assert_eq!(arg, [u32::MAX, u32::MAX, 0, 2]);
    let mut dx = vec![9.0; 4];
    max_pool2d_backward(&g, &[1.0; 4], &arg, &mut dx).unwrap();
    assert_eq!(dx, [1.0, 0.0, 1.0, 0.0]);
    avg_pool2d_forward(&g, &x, &mut y).unwrap();
    assert_eq!(y, [0.0, 0.0, -0.5, -3.5]);
}

#[test]
fn wrong_lengths_are_errors_naming_op_and_buffer() {
    let g = PoolGeometry::new([2, 4, 4, 3], (2, 2), (2, 2), Padding::Valid).unwrap();
    let (x, mut y, mut arg) = (vec![0.0; 96], vec![0.0; 24], vec![0u32; 24]);
    let e = max_pool2d_forward(&g, &x[..95], &mut y, &mut arg)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("MaxPooling2D") && e.contains("input") && e.contains("95"),
        "{e}"
    );
    let e = max_pool2d_forward(&g, &x, &mut y[..23], &mut arg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("MaxPooling2D") && e.contains("output"), "{e}");
    let e = max_pool2d_forward(&g, &x, &mut y, &mut arg[..1])
        .unwrap_err()
        .to_string();
    assert!(e.contains("MaxPooling2D") && e.contains("argmax"), "{e}");
    let mut dx = vec![0.0; 96];
    let e = max_pool2d_backward(&g, &y[..5], &arg, &mut dx)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("MaxPooling2D backward") && e.contains("output gradient"),
        "{e}"
    );
    let e = max_pool2d_backward(&g, &y, &arg, &mut dx[..3])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("MaxPooling2D backward") && e.contains("input gradient"),
        "{e}"
    );
    let bad = vec![96u32; 24];
    let e = max_pool2d_backward(&g, &y, &bad, &mut dx)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("MaxPooling2D backward") && e.contains("argmax"),
        "{e}"
    );
    let e = avg_pool2d_forward(&g, &x, &mut y[..2])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("AveragePooling2D") && e.contains("output"),
        "{e}"
    );
    let e = avg_pool2d_backward(&g, &y, &mut dx[..2])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("AveragePooling2D backward") && e.contains("input gradient"),
        "{e}"
    );
    let e = global_avg_pool2d_forward(2, 16, 3, &x[..90], &mut y[..6])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("GlobalAveragePooling2D") && e.contains("input"),
        "{e}"
    );
    let e = global_avg_pool2d_backward(2, 16, 3, &y[..5], &mut dx)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("GlobalAveragePooling2D backward") && e.contains("output gradient"),
        "{e}"
    );
    // Bad geometries are refused by name.
    let e = PoolGeometry::new([1, 2, 2, 1], (3, 3), (1, 1), Padding::Valid).unwrap_err();
    assert!(e.to_string().contains("Pooling2D"), "{e}");
    assert!(PoolGeometry::new([1, 4, 4, 1], (2, 2), (0, 1), Padding::Valid).is_err());
    assert!(PoolGeometry::new([0, 4, 4, 1], (2, 2), (1, 1), Padding::Valid).is_err());
}

/// More than `u32::MAX` input elements cannot be indexed by `argmax`: an
/// error, not a wrapped index. The buffers are zeroed allocations the kernel
/// refuses before reading, so the OS never backs them with memory; if the
/// allocation itself is refused the test has nothing to check.
#[test]
fn max_pool_refuses_inputs_beyond_u32_indices() {
    fn zeroed<T: Copy>(len: usize) -> Option<Vec<T>> {
        let layout = std::alloc::Layout::array::<T>(len).ok()?;
        // SAFETY: a non-zero layout; a zeroed f32/u32 is a valid value; the
        // Vec takes ownership with the same layout.
        unsafe {
            let p = std::alloc::alloc_zeroed(layout) as *mut T;
            (!p.is_null()).then(|| Vec::from_raw_parts(p, len, len))
        }
    }
    let (h, w) = (1 << 16, (1 << 16) + 4);
    let g = PoolGeometry::new([1, h, w, 1], (8, 8), (8, 8), Padding::Valid).unwrap();
    let out = g.oh * g.ow;
    let (Some(x), Some(mut y), Some(mut arg)) = (zeroed::<f32>(h * w), zeroed(out), zeroed(out))
    else {
        eprintln!("skipped: could not reserve the address space");
        return;
    };
    let e = max_pool2d_forward(&g, &x, &mut y, &mut arg)
        .unwrap_err()
        .to_string();
    assert!(e.contains("MaxPooling2D"), "{e}");
}

#[test]
fn max_pool_backward_refuses_an_argmax_from_another_image() {
    let g = PoolGeometry::new([2, 2, 2, 1], (2, 2), (2, 2), Padding::Valid).unwrap();
    let dy = [1.0f32, 2.0];
    let mut dx = [0.0f32; 8];
    // Image 0's output points into image 1's pixels.
    let err = max_pool2d_backward(&g, &dy, &[5, 6], &mut dx).unwrap_err();
    assert!(err.to_string().contains("argmax index 5"), "{err}");
    // In-range indices, summed into their cells.
    max_pool2d_backward(&g, &dy, &[3, 4], &mut dx).unwrap();
    assert_eq!(dx, [0.0, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0]);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// The 2x2 stride-2 fast path (odd sizes drop the last row/column, as
    /// Keras's valid pooling does), with ties to test the first-wins rule.
    #[test]
    fn two_by_two_matches_naive(
        n in 1usize..3, h in 2usize..9, w in 2usize..9, c in 1usize..20, ties: bool,
        seed in 0u64..1000,
    ) {
        let g = PoolGeometry::new([n, h, w, c], (2, 2), (2, 2), Padding::Valid).unwrap();
        let mut x = values(n * h * w * c, seed);
        if ties {
            x.iter_mut().for_each(|v| *v = (*v * 2.0).round());
        }
        let (want_y, want_arg) = naive_max(&g, &x);
        let mut y = vec![f32::NAN; want_y.len()];
        let mut arg = vec![0u32; want_y.len()];
        max_pool2d_forward(&g, &x, &mut y, &mut arg).unwrap();
        prop_assert_eq!(y, want_y);
        prop_assert_eq!(arg, want_arg);
    }
}
