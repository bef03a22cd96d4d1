//! The AVX2 kernel of the fused resampling (x86-64, detected at run time),
//! equal value for value to the scalar code it replaces (tested there):
//!
//! [`resample_rgb`]: eight pixels at a time of the fixed-point
//! bilinear resampling of `fast::resample`, for RGB points whose four
//! neighbours are inside the image.

/// Sources at least this long (bytes) are left to the scalar code: the
/// kernels address them with `i32` offsets.
pub(crate) const MAX_SOURCE: usize = (i32::MAX as usize) / 2;

/// Whether `resample_rgb` may be called (AVX2 at run time).
#[inline]
pub(crate) fn rgb_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Bilinear samples of an interleaved RGB `u8` image (`stride` bytes a
/// row) into `out` (`3 * n` values, `n` a multiple of 8): pixel `j` at the
/// fixed-point point `(y + j dy, x + j dx)` (32 fractional bits), weights
/// of 12 bits, `out = sum as f32 * k`: the scalar loop of
/// `fast::resample`, value for value.
///
/// With `edges = Some((ymax, xmax))` (`(rows - 1) << 32`, `(columns - 1)
/// << 32`) points outside are sampled as [`FillMode::Nearest`] has it (the
/// edge rows and columns repeated): a coordinate below 0 becomes 0, one at
/// or past the last row (column) becomes the row before it with the whole
/// weight on the last: the same four values and the same integer sum as
/// the scalar code's clamped indices. With `None` every point is inside.
///
/// [`FillMode::Nearest`]: crate::augment::FillMode::Nearest
///
/// # Safety
/// AVX2 must be available ([`rgb_available`]); `src.len() < MAX_SOURCE`;
/// with `edges`, the image has at least 2 rows and 2 columns and `edges`
/// are its own; without, every point must be inside (`0 <= y < (rows - 1)
/// << 32`, `0 <= x < (columns - 1) << 32`: its four neighbours in `src`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn resample_rgb(
    src: &[u8],
    stride: usize,
    (y, x): (i64, i64),
    (dy, dx): (i64, i64),
    k: f32,
    out: &mut [std::mem::MaybeUninit<f32>],
    edges: Option<(i64, i64)>,
) {
    use std::arch::x86_64::*;
    debug_assert_eq!(out.len() % 24, 0);
    // The low 32 bits of each 64-bit lane of `lo` then `hi`, in order.
    #[inline(always)]
    unsafe fn low_halves(lo: __m256i, hi: __m256i) -> __m256i {
        let s =
            _mm256_shuffle_ps::<0b10_00_10_00>(_mm256_castsi256_ps(lo), _mm256_castsi256_ps(hi));
        _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_castps_si256(s))
    }
    let mut ylo = _mm256_setr_epi64x(y, y + dy, y + 2 * dy, y + 3 * dy);
    let mut xlo = _mm256_setr_epi64x(x, x + dx, x + 2 * dx, x + 3 * dx);
    let (step_y, step_x) = (_mm256_set1_epi64x(4 * dy), _mm256_set1_epi64x(4 * dx));
    let mut yhi = _mm256_add_epi64(ylo, step_y);
    let mut xhi = _mm256_add_epi64(xlo, step_x);
    let (step_y, step_x) = (
        _mm256_add_epi64(step_y, step_y),
        _mm256_add_epi64(step_x, step_x),
    );
    let frac = _mm256_set1_epi32(0xFFF);
    let one = _mm256_set1_epi32(1 << 12);
    let byte = _mm256_set1_epi32(0xFF);
    let lo16 = _mm256_set1_epi32(0xFFFF);
    let vstride = _mm256_set1_epi32(stride as i32);
    let three = _mm256_set1_epi32(3);
    let two = _mm256_set1_epi32(2);
    let k = _mm256_set1_ps(k);
    let f65536 = _mm256_set1_ps(65536.0);
    let base = src.as_ptr() as *const i32;
    let i0 = _mm256_setr_epi32(0, 0, 0, 1, 1, 1, 2, 2);
    let i1 = _mm256_setr_epi32(2, 3, 3, 3, 4, 4, 4, 5);
    let i2 = _mm256_setr_epi32(5, 5, 6, 6, 6, 7, 7, 7);
    let (clamp, ymax, xmax) = match edges {
        Some((ymax, xmax)) => (true, ymax, xmax),
        None => (false, 0, 0),
    };
    let zero = _mm256_setzero_si256();
    let (ylast, xlast) = (
        _mm256_set1_epi64x(ymax - (1 << 32)),
        _mm256_set1_epi64x(xmax - (1 << 32)),
    );
    let (ytop, xtop) = (_mm256_set1_epi64x(ymax - 1), _mm256_set1_epi64x(xmax - 1));
    // Clamps the 4 + 4 coordinates of `lo`, `hi` as described above:
    // (integer parts, fractions) of the 8 lanes.
    macro_rules! split {
        ($lo:expr, $hi:expr, $last:expr, $top:expr) => {{
            let (mut lo, mut hi) = ($lo, $hi);
            let mut full = zero;
            if clamp {
                lo = _mm256_andnot_si256(_mm256_cmpgt_epi64(zero, lo), lo);
                hi = _mm256_andnot_si256(_mm256_cmpgt_epi64(zero, hi), hi);
                let (over_lo, over_hi) =
                    (_mm256_cmpgt_epi64(lo, $top), _mm256_cmpgt_epi64(hi, $top));
                lo = _mm256_blendv_epi8(lo, $last, over_lo);
                hi = _mm256_blendv_epi8(hi, $last, over_hi);
                full = _mm256_and_si256(low_halves(over_lo, over_hi), one);
            }
            // Non-negative now: logical shifts do.
            let int = low_halves(_mm256_srli_epi64::<32>(lo), _mm256_srli_epi64::<32>(hi));
            let f = _mm256_and_si256(
                low_halves(_mm256_srli_epi64::<20>(lo), _mm256_srli_epi64::<20>(hi)),
                frac,
            );
            (int, _mm256_or_si256(f, full))
        }};
    }
    for o in out.chunks_exact_mut(24) {
        let (yi, fy) = split!(ylo, yhi, ylast, ytop);
        let (xi, fx) = split!(xlo, xhi, xlast, xtop);
        ylo = _mm256_add_epi64(ylo, step_y);
        yhi = _mm256_add_epi64(yhi, step_y);
        xlo = _mm256_add_epi64(xlo, step_x);
        xhi = _mm256_add_epi64(xhi, step_x);
        let p = _mm256_add_epi32(
            _mm256_mullo_epi32(yi, vstride),
            _mm256_mullo_epi32(xi, three),
        );
        // Four bytes at p (R G B of the left pixel, R of the right one) and
        // at p + 2 (B of the left, R G B of the right): in bounds, as the
        // right pixel ends at p + 6.
        let pb = _mm256_add_epi32(p, vstride);
        let tl = _mm256_i32gather_epi32::<1>(base, p);
        let tr = _mm256_i32gather_epi32::<1>(base, _mm256_add_epi32(p, two));
        let bl = _mm256_i32gather_epi32::<1>(base, pb);
        let br = _mm256_i32gather_epi32::<1>(base, _mm256_add_epi32(pb, two));
        let (fx1, fy1) = (_mm256_sub_epi32(one, fx), _mm256_sub_epi32(one, fy));
        // (1 - fy) ((1 - fx) tl + fx tr) + fy ((1 - fx) bl + fx br): the
        // scalar sum of the four weighted values, exactly (< 2^32).
        macro_rules! channel {
            ($left:literal, $right:literal) => {{
                let t0 = _mm256_and_si256(_mm256_srli_epi32::<$left>(tl), byte);
                let t1 = _mm256_and_si256(_mm256_srli_epi32::<$right>(tr), byte);
                let b0 = _mm256_and_si256(_mm256_srli_epi32::<$left>(bl), byte);
                let b1 = _mm256_and_si256(_mm256_srli_epi32::<$right>(br), byte);
                let top = _mm256_add_epi32(_mm256_mullo_epi32(t0, fx1), _mm256_mullo_epi32(t1, fx));
                let bot = _mm256_add_epi32(_mm256_mullo_epi32(b0, fx1), _mm256_mullo_epi32(b1, fx));
                let s = _mm256_add_epi32(_mm256_mullo_epi32(top, fy1), _mm256_mullo_epi32(bot, fy));
                // `s as f32` for a u32: the high half times 65536 is exact,
                // so the one rounding is the sum's.
                let hi = _mm256_cvtepi32_ps(_mm256_srli_epi32::<16>(s));
                let lo = _mm256_cvtepi32_ps(_mm256_and_si256(s, lo16));
                _mm256_mul_ps(_mm256_add_ps(_mm256_mul_ps(hi, f65536), lo), k)
            }};
        }
        let r = channel!(0, 8);
        let g = channel!(8, 16);
        let b = channel!(16, 24);
        // Interleave: r0 g0 b0 r1 g1 b1 r2 g2 | b2 r3 ... | ... b7.
        macro_rules! mix {
            ($i:expr, $g:literal, $b:literal) => {{
                let i = $i;
                let rgb = _mm256_blend_ps::<$g>(
                    _mm256_permutevar8x32_ps(r, i),
                    _mm256_permutevar8x32_ps(g, i),
                );
                _mm256_blend_ps::<$b>(rgb, _mm256_permutevar8x32_ps(b, i))
            }};
        }
        let v0 = mix!(i0, 0x92, 0x24);
        let v1 = mix!(i1, 0x24, 0x49);
        let v2 = mix!(i2, 0x49, 0x92);
        let op = o.as_mut_ptr().cast::<f32>();
        _mm256_storeu_ps(op, v0);
        _mm256_storeu_ps(op.add(8), v1);
        _mm256_storeu_ps(op.add(16), v2);
    }
}

/// Never called off x86-64 ([`rgb_available`] is false there).
///
/// # Safety
/// None needed; it panics.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn resample_rgb(
    _src: &[u8],
    _stride: usize,
    _point: (i64, i64),
    _step: (i64, i64),
    _k: f32,
    _out: &mut [std::mem::MaybeUninit<f32>],
    _edges: Option<(i64, i64)>,
) {
    unreachable!("resample_rgb without AVX2")
}
