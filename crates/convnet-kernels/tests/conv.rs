//! Convolution kernels against textbook nested loops (f64 accumulation).
//!
//! Tolerance: each output is a sum of `K` products (`K = kh*kw*c` for the
//! forward pass and the input gradient's per-pixel sums, `n*oh*ow` for the
//! filter gradient). Computed in f32 in any order, the error of such a sum
//! is bounded by about `K * eps * sum |terms|` (eps = 2^-24 ~ 6e-8), and in
//! practice grows like `sqrt(K) * eps * sum |terms|`. The references carry
//! the magnitude `sum |terms|` of every output beside its value; we allow
//! `1e-5 * magnitude + 1e-6`, i.e. ~170 eps per unit of magnitude: far
//! above rounding for every K here (K <= 2000 in these tests, the direct
//! kernels and GEMM use fused multiply-adds with blocked sums), far below any
//! indexing mistake (which moves a value by the size of one whole term).

use convnet_kernels::conv::{
    conv2d_backward_filter, conv2d_backward_filter_tuned, conv2d_backward_input,
    conv2d_backward_input_tuned, conv2d_forward, conv2d_forward_tuned, conv2d_forward_uninit,
    ConvGeometry, Epilogue, Tuning,
};
use convnet_kernels::{Padding, TensorError};
use proptest::prelude::*;

/// Reference outputs: value and the sum of |terms| behind it.
struct Reference {
    value: Vec<f64>,
    magnitude: Vec<f64>,
}

impl Reference {
    fn zeros(len: usize) -> Self {
        Reference {
            value: vec![0.0; len],
            magnitude: vec![0.0; len],
        }
    }

    fn add(&mut self, i: usize, term: f64) {
        self.value[i] += term;
        self.magnitude[i] += term.abs();
    }

    #[track_caller]
    fn assert_close(&self, got: &[f32], what: &str) {
        self.assert_close_winograd(got, what, false)
    }

    /// As `assert_close`; with `winograd`, also allows 3e-5 of the largest
    /// magnitude in the tensor: Winograd's rounding error scales with the
    /// whole tile's values (its transforms mix them, with factors up to 25
    /// for F(4x4, 3x3)), not with one output's own terms, so an output
    /// that happens to be small (an image corner reached by one tap) gets
    /// the tile's absolute error. A wrong index or transform gives errors
    /// of the size of the values themselves.
    #[track_caller]
    fn assert_close_winograd(&self, got: &[f32], what: &str, winograd: bool) {
        assert_eq!(got.len(), self.value.len(), "{what}: length");
        let largest = self.magnitude.iter().fold(0.0f64, |a, &m| a.max(m));
        let global = if winograd { 3e-5 * largest } else { 0.0 };
        for (i, ((&g, &v), &m)) in got.iter().zip(&self.value).zip(&self.magnitude).enumerate() {
            let tol = 1e-5 * m + 1e-6 + global;
            assert!(
                (g as f64 - v).abs() <= tol,
                "{what}[{i}]: got {g}, want {v} (magnitude {m}, tolerance {tol})"
            );
        }
    }
}

/// Calls `f(img, oy, ox, ky, kx, iy, ix)` for every in-bounds tap.
fn for_each_tap(
    g: &ConvGeometry,
    mut f: impl FnMut(usize, usize, usize, usize, usize, usize, usize),
) {
    for img in 0..g.n {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let iy = (oy * g.sh + ky) as isize - g.pads.top as isize;
                        let ix = (ox * g.sw + kx) as isize - g.pads.left as isize;
                        if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                            continue;
                        }
                        f(img, oy, ox, ky, kx, iy as usize, ix as usize);
                    }
                }
            }
        }
    }
}

fn x_at(g: &ConvGeometry, x: &[f32], img: usize, iy: usize, ix: usize, ci: usize) -> f64 {
    x[((img * g.h + iy) * g.w + ix) * g.c + ci] as f64
}
fn w_at(g: &ConvGeometry, w: &[f32], ky: usize, kx: usize, ci: usize, fi: usize) -> f64 {
    w[((ky * g.kw + kx) * g.c + ci) * g.f + fi] as f64
}
fn y_index(g: &ConvGeometry, img: usize, oy: usize, ox: usize, fi: usize) -> usize {
    ((img * g.oh + oy) * g.ow + ox) * g.f + fi
}

fn naive_forward(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    epilogue: Epilogue,
) -> Reference {
    let mut r = Reference::zeros(g.output_shape().iter().product());
    if let Some(b) = b {
        for i in 0..r.value.len() {
            r.add(i, b[i % g.f] as f64);
        }
    }
    for_each_tap(g, |img, oy, ox, ky, kx, iy, ix| {
        for fi in 0..g.f {
            for ci in 0..g.c {
                let t = x_at(g, x, img, iy, ix, ci) * w_at(g, w, ky, kx, ci, fi);
                r.add(y_index(g, img, oy, ox, fi), t);
            }
        }
    });
    if epilogue == Epilogue::Relu {
        r.value.iter_mut().for_each(|v| *v = v.max(0.0));
    }
    r
}

fn naive_backward_input(g: &ConvGeometry, dy: &[f32], w: &[f32]) -> Reference {
    let mut r = Reference::zeros(g.input_shape().iter().product());
    for_each_tap(g, |img, oy, ox, ky, kx, iy, ix| {
        for ci in 0..g.c {
            for fi in 0..g.f {
                let t = dy[y_index(g, img, oy, ox, fi)] as f64 * w_at(g, w, ky, kx, ci, fi);
                r.add(((img * g.h + iy) * g.w + ix) * g.c + ci, t);
            }
        }
    });
    r
}

fn naive_backward_filter(g: &ConvGeometry, x: &[f32], dy: &[f32]) -> (Reference, Reference) {
    let mut dw = Reference::zeros(g.kernel_shape().iter().product());
    let mut db = Reference::zeros(g.f);
    for_each_tap(g, |img, oy, ox, ky, kx, iy, ix| {
        for ci in 0..g.c {
            for fi in 0..g.f {
                let t = x_at(g, x, img, iy, ix, ci) * dy[y_index(g, img, oy, ox, fi)] as f64;
                dw.add(((ky * g.kw + kx) * g.c + ci) * g.f + fi, t);
            }
        }
    });
    for (i, &d) in dy.iter().enumerate() {
        db.add(i % g.f, d as f64);
    }
    (dw, db)
}

/// Deterministic values in [-1, 1).
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

/// Every tuning worth checking for `g`: the default, tiny tiles (several
/// tiles per image, tiles straddling images), each with the direct and
/// SIMD paths off, the generic path with and without the packed-weights
/// GEMM, and Winograd forced on.
fn tunings(g: &ConvGeometry) -> Vec<Tuning> {
    let d = Tuning::for_geometry(g);
    let mut out = vec![d];
    for tile_rows in [1, 7, 64] {
        for (direct, simd, packed) in [
            (true, true, true),
            (true, false, true),
            (false, false, true),
            (false, false, false),
        ] {
            out.push(Tuning {
                tile_rows,
                direct,
                simd,
                winograd: false,
                winograd_input: false,
                winograd_filter: false,
                winograd_tile: 0,
                winograd_1d: false,
                taps: false,
                half: false,
                packed,
            });
        }
    }
    // The 1xk / kx1 path wherever it applies, before the direct kernels.
    out.push(Tuning {
        direct: false,
        winograd_1d: false,
        taps: true,
        ..d
    });
    // Winograd wherever it applies (3x3 stride 1), whatever the sizes,
    // with each output tile size.
    for winograd_tile in [0, 2, 4, 6] {
        out.push(Tuning {
            winograd: true,
            winograd_input: true,
            winograd_filter: true,
            winograd_tile,
            ..d
        });
    }
    out
}

/// Checks all three kernels on `g` against the references, under every
/// tuning.
fn check_all(g: &ConvGeometry, bias: bool, epilogue: Epilogue, seed: u64) {
    let x = values(g.input_shape().iter().product(), seed);
    let w = values(g.kernel_shape().iter().product(), seed + 1);
    let b = bias.then(|| values(g.f, seed + 2));
    let dy = values(g.output_shape().iter().product(), seed + 3);
    let want_y = naive_forward(g, &x, &w, b.as_deref(), epilogue);
    let want_dx = naive_backward_input(g, &dy, &w);
    let (want_dw, want_db) = naive_backward_filter(g, &x, &dy);
    for t in tunings(g) {
        let ctx = format!("{g:?} {t:?}");
        let mut y = vec![f32::NAN; dy.len()];
        conv2d_forward_tuned(g, &x, &w, b.as_deref(), epilogue, &mut y, t).unwrap();
        let wino = t.winograd || t.winograd_input || t.winograd_filter || t.winograd_1d;
        want_y.assert_close_winograd(&y, &format!("forward {ctx}"), wino);
        let mut dx = vec![f32::NAN; x.len()];
        conv2d_backward_input_tuned(g, &dy, &w, &mut dx, t).unwrap();
        want_dx.assert_close_winograd(&dx, &format!("input gradient {ctx}"), wino);
        let mut dw = vec![f32::NAN; w.len()];
        let mut db = vec![f32::NAN; g.f];
        conv2d_backward_filter_tuned(g, &x, &dy, &mut dw, Some(&mut db), t).unwrap();
        want_dw.assert_close_winograd(&dw, &format!("filter gradient {ctx}"), wino);
        want_db.assert_close(&db, &format!("bias gradient {ctx}"));
        // Without the bias gradient, the filter gradient is the same.
        let mut dw2 = vec![f32::NAN; w.len()];
        conv2d_backward_filter_tuned(g, &x, &dy, &mut dw2, None, t).unwrap();
        assert_eq!(dw, dw2, "filter gradient without bias {ctx}");
    }
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn matches_naive_on_random_shapes(
        n in 1usize..=3, h in 1usize..=12, w in 1usize..=12, c in 1usize..=5, f in 1usize..=6,
        kh in 1usize..=4, kw in 1usize..=4, sh in 1usize..=3, sw in 1usize..=3,
        padding in padding_strategy(), bias: bool, relu: bool, seed in 0u64..1000,
    ) {
        // Shapes the geometry refuses (window larger than the padded input)
        // are not convolutions; skip them.
        let Ok(g) = ConvGeometry::new([n, h, w, c], [kh, kw, c, f], (sh, sw), padding) else {
            return Ok(());
        };
        let epilogue = if relu { Epilogue::Relu } else { Epilogue::None };
        check_all(&g, bias, epilogue, seed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// 3x3 stride 1, the Winograd path's shapes: odd and even sizes (tiles
    /// past the edges), every padding, channel counts on both sides of
    /// the size where the default tuning switches to Winograd.
    #[test]
    fn winograd_shapes_match_naive(
        n in 1usize..=2, h in 3usize..=11, w in 3usize..=11, c in 1usize..=20,
        f in 1usize..=20, padding in padding_strategy(), bias: bool, relu: bool,
        seed in 0u64..1000,
    ) {
        let Ok(g) = ConvGeometry::new([n, h, w, c], [3, 3, c, f], (1, 1), padding) else {
            return Ok(());
        };
        let epilogue = if relu { Epilogue::Relu } else { Epilogue::None };
        check_all(&g, bias, epilogue, seed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// 1xk and kx1 stride 1 on small maps with many images, the shapes of
    /// the path that skips taps on padding: maps narrower than the kernel,
    /// every padding (padding across the kernel's axis rules the path out).
    #[test]
    fn one_axis_kernels_match_naive(
        n in 8usize..=24, h in 1usize..=8, w in 1usize..=8, c in 1usize..=6,
        f in 1usize..=6, k in 2usize..=8, vertical: bool, padding in padding_strategy(),
        bias: bool, relu: bool, seed in 0u64..1000,
    ) {
        let (kh, kw) = if vertical { (k, 1) } else { (1, k) };
        let Ok(g) = ConvGeometry::new([n, h, w, c], [kh, kw, c, f], (1, 1), padding) else {
            return Ok(());
        };
        let epilogue = if relu { Epilogue::Relu } else { Epilogue::None };
        check_all(&g, bias, epilogue, seed);
    }
}

#[test]
fn winograd_is_the_default_for_wide_3x3_layers() {
    let g = geometry([1, 8, 8, 16], [3, 3, 16], (1, 1), Padding::Same);
    assert!(Tuning::for_geometry(&g).winograd);
    let g = geometry([1, 8, 8, 64], [3, 3, 128], (1, 1), Padding::Valid);
    assert!(Tuning::for_geometry(&g).winograd_filter);
    let g = geometry([1, 8, 8, 3], [3, 3, 32], (1, 1), Padding::Same);
    assert!(!Tuning::for_geometry(&g).winograd);
    let g = geometry([1, 8, 8, 16], [3, 3, 16], (2, 2), Padding::Same);
    assert!(!Tuning::for_geometry(&g).winograd);
}

fn geometry(
    input: [usize; 4],
    kernel: [usize; 3],
    strides: (usize, usize),
    p: Padding,
) -> ConvGeometry {
    let [kh, kw, f] = kernel;
    ConvGeometry::new(input, [kh, kw, input[3], f], strides, p).unwrap()
}

#[test]
fn first_layer_shapes() {
    // Few input channels and many filters, as in an image model's first
    // layer (the direct-kernel path), with partial vector widths.
    for (c, f) in [(3, 32), (3, 8), (1, 16), (3, 20), (4, 33), (2, 5)] {
        for p in [Padding::Valid, Padding::Same] {
            let g = geometry([2, 13, 11, c], [3, 3, f], (1, 1), p);
            check_all(&g, true, Epilogue::Relu, c as u64 * 100 + f as u64);
        }
        let g = geometry([1, 15, 16, c], [5, 5, f], (2, 2), Padding::Same);
        check_all(&g, true, Epilogue::None, 7);
    }
}

#[test]
fn larger_channel_counts() {
    // Inner dimensions beyond the direct kernel's range, several default
    // tiles (the default tile of k = 3*3*40 is ~180 rows).
    let g = geometry([2, 17, 19, 40], [3, 3, 24], (1, 1), Padding::Same);
    check_all(&g, true, Epilogue::Relu, 11);
}

#[test]
fn inception_1x7_and_7x1_layers() {
    // InceptionV3's 7x7 maps (Winograd F(4, 7) by default: two tiles per
    // line, the second one's last output dropped), and a longer line.
    for (input, kernel, p) in [
        ([2, 7, 7, 32], [1, 7, 24], Padding::Same),
        ([2, 7, 7, 24], [7, 1, 32], Padding::Same),
        ([1, 5, 17, 16], [1, 7, 17], Padding::Valid),
        ([1, 17, 3, 17], [7, 1, 16], Padding::Same),
    ] {
        let g = geometry(input, kernel, (1, 1), p);
        assert!(Tuning::for_geometry(&g).winograd_1d, "{g:?}");
        check_all(&g, true, Epilogue::Relu, input[1] as u64);
    }
}

#[test]
fn inception_5x5_layers() {
    // F(2x2, 5x5) by default for the forward pass of 5x5 stride-1 layers
    // with 16 or more channels and filters (the gradients stay on im2col).
    for (input, f, p) in [
        ([2, 8, 8, 24], 32, Padding::Same),
        ([1, 9, 11, 16], 17, Padding::Valid),
    ] {
        let g = geometry(input, [5, 5, f], (1, 1), p);
        let t = Tuning::for_geometry(&g);
        assert!(
            t.winograd && !t.winograd_input && !t.winograd_filter,
            "{g:?}"
        );
        check_all(&g, true, Epilogue::Relu, input[1] as u64);
    }
}

#[test]
fn kernel_transform_buffers_are_reused_across_layers() {
    // Each thread keeps the buffer of a layer's Winograd kernel transforms
    // between calls, its contents left as they were: a smaller layer after
    // a larger one, and each Winograd variant after another, on one
    // thread, must each see only their own transforms.
    for (input, [kh, kw, f]) in [
        ([2, 9, 9, 40], [3, 3, 48]),
        ([1, 7, 7, 16], [3, 3, 16]),
        ([2, 7, 7, 24], [1, 7, 20]),
        ([1, 8, 8, 16], [5, 5, 17]),
        ([1, 7, 7, 16], [7, 1, 16]),
        ([1, 6, 6, 16], [3, 3, 16]),
    ] {
        let g = geometry(input, [kh, kw, f], (1, 1), Padding::Same);
        check_all(&g, true, Epilogue::Relu, input[3] as u64 + f as u64);
    }
}

#[test]
fn pointwise_fast_path() {
    let g = geometry([3, 9, 7, 12], [1, 1, 10], (1, 1), Padding::Valid);
    assert!(g.is_pointwise());
    check_all(&g, true, Epilogue::Relu, 3);
    // Same padding of a 1x1 kernel is no padding: still pointwise.
    let g = geometry([2, 5, 6, 3], [1, 1, 4], (1, 1), Padding::Same);
    assert!(g.is_pointwise());
    check_all(&g, false, Epilogue::None, 4);
    // Strided and padded 1x1 convolutions go the general way.
    let g = geometry([2, 9, 7, 5], [1, 1, 4], (2, 2), Padding::Valid);
    assert!(!g.is_pointwise());
    check_all(&g, true, Epilogue::None, 5);
    let g = geometry(
        [1, 4, 4, 2],
        [1, 1, 3],
        (1, 1),
        Padding::Explicit {
            top: 1,
            bottom: 0,
            left: 0,
            right: 2,
        },
    );
    assert!(!g.is_pointwise());
    check_all(&g, true, Epilogue::Relu, 6);
}

#[test]
fn defaults_match_the_public_functions() {
    let g = geometry([2, 10, 9, 3], [3, 3, 16], (1, 1), Padding::Same);
    let x = values(g.input_shape().iter().product(), 1);
    let w = values(g.kernel_shape().iter().product(), 2);
    let b = values(g.f, 3);
    let dy = values(g.output_shape().iter().product(), 4);
    let t = Tuning::for_geometry(&g);
    let mut y1 = vec![0.0; dy.len()];
    let mut y2 = vec![1.0; dy.len()];
    conv2d_forward(&g, &x, &w, Some(&b), Epilogue::Relu, &mut y1).unwrap();
    conv2d_forward_tuned(&g, &x, &w, Some(&b), Epilogue::Relu, &mut y2, t).unwrap();
    assert_eq!(y1, y2);
    let mut dx1 = vec![0.0; x.len()];
    let mut dx2 = vec![1.0; x.len()];
    conv2d_backward_input(&g, &dy, &w, &mut dx1).unwrap();
    conv2d_backward_input_tuned(&g, &dy, &w, &mut dx2, t).unwrap();
    assert_eq!(dx1, dx2);
}

/// The forward pass into an uninitialised buffer (here full of NaN)
/// writes every element, on each default path: direct (few channels),
/// Winograd (3x3, 16+ channels), im2col + GEMM (stride 2, 5x5) and the
/// pointwise GEMM, with a ReLU epilogue or none.
#[test]
fn uninit_forward_writes_every_output() {
    for (input, kernel, strides, padding) in [
        ([2, 10, 9, 3], [3, 3, 16], (1, 1), Padding::Same),
        ([2, 11, 10, 16], [3, 3, 20], (1, 1), Padding::Valid),
        ([2, 11, 10, 8], [3, 3, 12], (2, 2), Padding::Same),
        ([3, 9, 9, 6], [5, 5, 7], (1, 1), Padding::Same),
        ([2, 5, 6, 24], [1, 1, 18], (1, 1), Padding::Valid),
    ] {
        let g = geometry(input, kernel, strides, padding);
        let x = values(g.input_shape().iter().product(), 5);
        let w = values(g.kernel_shape().iter().product(), 6);
        let b = values(g.f, 7);
        let len: usize = g.output_shape().iter().product();
        for epilogue in [Epilogue::Relu, Epilogue::None] {
            let mut want = vec![0.0; len];
            conv2d_forward(&g, &x, &w, Some(&b), epilogue, &mut want).unwrap();
            let mut got = vec![std::mem::MaybeUninit::new(f32::NAN); len];
            conv2d_forward_uninit(&g, &x, &w, Some(&b), epilogue, &mut got).unwrap();
            // SAFETY: initialised (NaN) when made, possibly overwritten.
            let got: Vec<f32> = got.iter().map(|v| unsafe { v.assume_init() }).collect();
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{g:?} {epilogue:?}"
            );
        }
    }
}

/// Filter and bias gradients at a given thread count.
fn filter_gradient(
    threads: usize,
    g: &ConvGeometry,
    x: &[f32],
    dy: &[f32],
    t: Tuning,
) -> (Vec<f32>, Vec<f32>) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut dw = vec![0.0; g.kernel_shape().iter().product()];
        let mut db = vec![0.0; g.f];
        conv2d_backward_filter_tuned(g, x, dy, &mut dw, Some(&mut db), t).unwrap();
        (dw, db)
    })
}

#[test]
fn filter_gradient_is_bitwise_reproducible_across_thread_counts() {
    for (g, tile) in [
        // Direct path (few channels), many tiles.
        (
            geometry([4, 30, 30, 3], [3, 3, 32], (1, 1), Padding::Valid),
            None,
        ),
        (
            geometry([4, 30, 30, 3], [3, 3, 32], (1, 1), Padding::Valid),
            Some(50),
        ),
        // GEMM path, default and small tiles.
        (
            geometry([3, 20, 20, 16], [3, 3, 24], (1, 1), Padding::Same),
            None,
        ),
        (
            geometry([3, 20, 20, 16], [3, 3, 24], (1, 1), Padding::Same),
            Some(37),
        ),
        // Pointwise.
        (
            geometry([3, 20, 20, 16], [1, 1, 8], (1, 1), Padding::Valid),
            Some(64),
        ),
    ] {
        let x = values(g.input_shape().iter().product(), 21);
        let dy = values(g.output_shape().iter().product(), 22);
        let mut t = Tuning::for_geometry(&g);
        if let Some(rows) = tile {
            t.tile_rows = rows;
        }
        let one = filter_gradient(1, &g, &x, &dy, t);
        for threads in [2, 3] {
            let many = filter_gradient(threads, &g, &x, &dy, t);
            assert!(
                one.0
                    .iter()
                    .zip(&many.0)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{g:?} {t:?}: filter gradient differs at {threads} threads"
            );
            assert!(
                one.1
                    .iter()
                    .zip(&many.1)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{g:?} {t:?}: bias gradient differs at {threads} threads"
            );
        }
    }
}

#[test]
fn outputs_are_overwritten_not_accumulated() {
    let g = geometry([2, 8, 8, 3], [3, 3, 8], (1, 1), Padding::Same);
    let x = values(g.input_shape().iter().product(), 1);
    let w = values(g.kernel_shape().iter().product(), 2);
    let dy = values(g.output_shape().iter().product(), 3);
    let run = |init: f32| {
        let mut y = vec![init; dy.len()];
        let mut dx = vec![init; x.len()];
        let mut dw = vec![init; w.len()];
        let mut db = vec![init; g.f];
        conv2d_forward(&g, &x, &w, None, Epilogue::None, &mut y).unwrap();
        conv2d_backward_input(&g, &dy, &w, &mut dx).unwrap();
        conv2d_backward_filter(&g, &x, &dy, &mut dw, Some(&mut db)).unwrap();
        (y, dx, dw, db)
    };
    assert_eq!(run(0.0), run(123.0));
}

fn assert_names(r: convnet_kernels::Result<()>, what: &str) {
    match r {
        Err(e @ TensorError::LengthMismatch { .. }) => {
            let TensorError::LengthMismatch { what: got, .. } = &e else {
                unreachable!()
            };
            assert_eq!(got, what, "{e}");
            assert!(e.to_string().contains(what), "{e}");
        }
        other => panic!("expected a length error naming {what}, got {other:?}"),
    }
}

#[test]
fn wrong_lengths_are_refused_naming_the_buffer() {
    let g = geometry([2, 6, 5, 3], [3, 3, 4], (1, 1), Padding::Valid);
    let x = vec![0.0; g.input_shape().iter().product()];
    let w = vec![0.0; g.kernel_shape().iter().product()];
    let b = vec![0.0; g.f];
    let dy = vec![0.0; g.output_shape().iter().product()];
    let mut y = dy.clone();
    let mut dx = x.clone();
    let mut dw = w.clone();
    let mut db = b.clone();
    let e = Epilogue::None;

    assert_names(
        conv2d_forward(&g, &x[1..], &w, Some(&b), e, &mut y),
        "input",
    );
    assert_names(
        conv2d_forward(&g, &x, &w[1..], Some(&b), e, &mut y),
        "kernel",
    );
    assert_names(conv2d_forward(&g, &x, &w, Some(&b[1..]), e, &mut y), "bias");
    assert_names(
        conv2d_forward(&g, &x, &w, Some(&b), e, &mut y[1..]),
        "output",
    );
    let mut long = vec![0.0; y.len() + 1];
    assert_names(conv2d_forward(&g, &x, &w, None, e, &mut long), "output");

    assert_names(
        conv2d_backward_input(&g, &dy[1..], &w, &mut dx),
        "output gradient",
    );
    assert_names(conv2d_backward_input(&g, &dy, &w[1..], &mut dx), "kernel");
    assert_names(
        conv2d_backward_input(&g, &dy, &w, &mut dx[1..]),
        "input gradient",
    );

    assert_names(
        conv2d_backward_filter(&g, &x[1..], &dy, &mut dw, None),
        "input",
    );
    assert_names(
        conv2d_backward_filter(&g, &x, &dy[1..], &mut dw, None),
        "output gradient",
    );
    assert_names(
        conv2d_backward_filter(&g, &x, &dy, &mut dw[1..], None),
        "kernel gradient",
    );
    assert_names(
        conv2d_backward_filter(&g, &x, &dy, &mut dw, Some(&mut db[1..])),
        "bias gradient",
    );
}

#[test]
fn inconsistent_geometry_is_refused() {
    // The fields are public: a hand-made geometry whose output size does not
    // follow from the input, kernel, strides and padding is an error, not a
    // panic or an out-of-bounds read.
    let mut g = geometry([1, 6, 6, 3], [3, 3, 4], (1, 1), Padding::Valid);
    g.oh = 5;
    let x = vec![0.0; g.input_shape().iter().product()];
    let w = vec![0.0; g.kernel_shape().iter().product()];
    let mut y = vec![0.0; g.output_shape().iter().product()];
    let mut dx = x.clone();
    let mut dw = w.clone();
    assert!(conv2d_forward(&g, &x, &w, None, Epilogue::None, &mut y).is_err());
    assert!(conv2d_backward_input(&g, &y, &w, &mut dx).is_err());
    assert!(conv2d_backward_filter(&g, &x, &y, &mut dw, None).is_err());
}
