//! The half-precision forward pass ([`Precision::Half`]) against textbook
//! loops in f64.
//!
//! Tolerance: inputs and weights rounded to half precision (relative error
//! at most u = 2^-11 each) and each product added to a half-precision sum
//! of at most 64 terms (an error of at most u times that sum per addition)
//! give at most `(2 + 64) u * sum |terms|` per output: about 3% of the
//! terms' magnitude in the worst case, while an indexing mistake moves an
//! output by a whole term. The root mean square error must also stay below
//! 2e-3 of the root mean square magnitude, which only rounding of this size
//! does.

use convnet_kernels::conv::{
    conv2d_forward, conv2d_forward_with, ConvGeometry, Epilogue, Precision,
};
use convnet_kernels::Padding;
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
            ((s >> 33) % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// `(value, sum of |terms|)` of every output, bias and ReLU included.
fn naive(g: &ConvGeometry, x: &[f32], w: &[f32], b: Option<&[f32]>, relu: bool) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for img in 0..g.n {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                for fi in 0..g.f {
                    let (mut v, mut m) = (b.map_or(0.0, |b| b[fi] as f64), 0.0);
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let iy = (oy * g.sh + ky) as isize - g.pads.top as isize;
                            let ix = (ox * g.sw + kx) as isize - g.pads.left as isize;
                            if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                continue;
                            }
                            for ci in 0..g.c {
                                let xi = ((img * g.h + iy as usize) * g.w + ix as usize) * g.c + ci;
                                let wi = ((ky * g.kw + kx) * g.c + ci) * g.f + fi;
                                let t = x[xi] as f64 * w[wi] as f64;
                                v += t;
                                m += t.abs();
                            }
                        }
                    }
                    out.push((if relu { v.max(0.0) } else { v }, m));
                }
            }
        }
    }
    out
}

fn half_hardware() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512fp16")
            && std::arch::is_x86_feature_detected!("avx512bw")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

fn check(g: &ConvGeometry, bias: bool, relu: bool, seed: u64) {
    let x = values(g.input_shape().iter().product(), seed);
    let w = values(g.kernel_shape().iter().product(), seed + 1);
    let b = bias.then(|| values(g.f, seed + 2));
    let epilogue = if relu { Epilogue::Relu } else { Epilogue::None };
    let want = naive(g, &x, &w, b.as_deref(), relu);
    let mut y = vec![f32::NAN; want.len()];
    conv2d_forward_with(g, &x, &w, b.as_deref(), epilogue, &mut y, Precision::Half).unwrap();
    let u = 2f64.powi(-11);
    let (mut sq_err, mut sq_mag) = (0.0, 0.0);
    for (i, (&got, &(v, m))) in y.iter().zip(&want).enumerate() {
        let e = (got as f64 - v).abs();
        assert!(
            e <= 66.0 * u * m + 1e-6,
            "{g:?}: output {i}: {got} against {v} (terms {m})"
        );
        sq_err += e * e;
        sq_mag += m * m;
    }
    assert!(
        sq_err <= 4e-6 * sq_mag + 1e-12,
        "{g:?}: rms error {sq_err} of {sq_mag}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn half_matches_naive_on_random_shapes(
        n in 1usize..=3, h in 1usize..=9, w in 1usize..=9, c in 1usize..=40, f in 1usize..=70,
        kh in 1usize..=3, kw in 1usize..=7, sh in 1usize..=2, sw in 1usize..=2,
        same: bool, bias: bool, relu: bool, seed in 0u64..1000,
    ) {
        let padding = if same { Padding::Same } else { Padding::Valid };
        let Ok(g) = ConvGeometry::new([n, h, w, c], [kh, kw, c, f], (sh, sw), padding) else {
            return Ok(());
        };
        check(&g, bias, relu, seed);
    }
}

/// InceptionV3's shapes that take the half path, on fewer images.
#[test]
fn inception_like_layers() {
    for (input, kernel, strides, padding) in [
        ([2, 7, 7, 768], [1, 1, 768, 192], (1, 1), Padding::Same),
        ([2, 7, 7, 160], [1, 7, 160, 192], (1, 1), Padding::Same),
        ([2, 7, 7, 160], [7, 1, 160, 160], (1, 1), Padding::Same),
        ([1, 16, 16, 48], [5, 5, 48, 64], (1, 1), Padding::Same),
        ([1, 16, 16, 288], [3, 3, 288, 384], (2, 2), Padding::Valid),
    ] {
        let g = ConvGeometry::new(input, kernel, strides, padding).unwrap();
        check(&g, true, true, 7);
    }
}

/// Where the CPU has AVX512-FP16 the half path is really taken (its
/// rounding shows), and where it does not, `Half` is `Single` exactly.
#[test]
fn half_is_taken_where_the_cpu_has_it() {
    let g = ConvGeometry::new([2, 6, 6, 70], [1, 1, 70, 50], (1, 1), Padding::Valid).unwrap();
    let x = values(g.input_shape().iter().product(), 1);
    let w = values(g.kernel_shape().iter().product(), 2);
    let mut single = vec![0.0; g.output_shape().iter().product()];
    let mut half = single.clone();
    conv2d_forward(&g, &x, &w, None, Epilogue::None, &mut single).unwrap();
    conv2d_forward_with(&g, &x, &w, None, Epilogue::None, &mut half, Precision::Half).unwrap();
    assert_eq!(half != single, half_hardware());
}

/// Outputs past half precision's range, and weights past it, come out as
/// single precision gives them, not infinite.
#[test]
fn overflow_falls_back_to_single_precision() {
    let g = ConvGeometry::new([2, 5, 5, 20], [3, 3, 20, 30], (2, 2), Padding::Same).unwrap();
    let mut x = values(g.input_shape().iter().product(), 3);
    let mut w = values(g.kernel_shape().iter().product(), 4);
    x[77] = 3e5;
    let mut single = vec![0.0; g.output_shape().iter().product()];
    let mut half = single.clone();
    for _ in 0..2 {
        conv2d_forward(&g, &x, &w, None, Epilogue::None, &mut single).unwrap();
        conv2d_forward_with(&g, &x, &w, None, Epilogue::None, &mut half, Precision::Half).unwrap();
        assert!(half.iter().all(|v| v.is_finite()));
        for (h, s) in half.iter().zip(&single) {
            assert!((h - s).abs() <= 0.05 * (1.0 + s.abs()), "{h} against {s}");
        }
        // Then a weight too large for half precision: the whole layer in
        // single precision.
        x[77] = 0.5;
        w[5] = 1e6;
    }
    assert_eq!(half, single);
}
