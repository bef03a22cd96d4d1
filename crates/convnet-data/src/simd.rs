//! The AVX2 kernel of the fused resampling (x86-64, detected at run time),
//! equal value for value to the scalar code it replaces (tested there):
//!
//! [`resample_rgb`]: eight pixels at a time of the fixed-point
//! bilinear resampling of `fast::resample`, for RGB points whose four
//! neighbours are inside the image; [`resample_ycbcr`] the same from a
//! YCbCr image, converting each output pixel to RGB.

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

/// Whether the fixed-point coordinate `v` (32 fractional bits) may be
/// given to [`resample_rgb`]: `v >> 20` fits an `i32` with room to spare
/// (coordinates within 2^18 pixels of the origin).
#[inline]
pub(crate) fn coordinate_fits(v: i64) -> bool {
    v.unsigned_abs() < 1 << 50
}

/// Bilinear samples of an interleaved RGB `u8` image (`stride` bytes a
/// row) into `out` (`3 * n` values, `n` a multiple of 8): pixel `j` at the
/// fixed-point point `(y + j dy, x + j dx)` (32 fractional bits), weights
/// of 12 bits, `out = sum as f32 * k`: the scalar loop of
/// `fast::resample`, value for value.
///
/// Each coordinate is carried as `v >> 20` (integer part and 12-bit
/// fraction, an `i32`) and the low 20 bits, added with carry: exactly the
/// bits of the `i64` sums. The horizontal step is one `vpmaddwd` per
/// channel (both neighbours' bytes as 16-bit pairs against the pair of
/// weights `(1 - fx, fx)`), the vertical one is in 32 bits.
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
/// every point's coordinates must pass [`coordinate_fits`] (checking the
/// first and the last point does: they are linear); with `edges`, the
/// image has at least 2 rows and 2 columns and `edges` are its own;
/// without, every point must be inside (`0 <= y < (rows - 1) << 32`, `0 <=
/// x < (columns - 1) << 32`: its four neighbours in `src`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn resample_rgb(
    src: &[u8],
    stride: usize,
    point: (i64, i64),
    step: (i64, i64),
    k: f32,
    out: &mut [std::mem::MaybeUninit<f32>],
    edges: Option<(i64, i64)>,
) {
    resample3::<false>(src, stride, point, step, k, out, edges);
}

/// [`resample_rgb`] of a YCbCr image: the same sums, of Y, Cb and Cr,
/// converted to RGB as `fast::ycbcr_sums_to_rgb` does (the same `f32`
/// operations in the same order: value for value).
///
/// # Safety
/// As [`resample_rgb`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn resample_ycbcr(
    src: &[u8],
    stride: usize,
    point: (i64, i64),
    step: (i64, i64),
    k: f32,
    out: &mut [std::mem::MaybeUninit<f32>],
    edges: Option<(i64, i64)>,
) {
    resample3::<true>(src, stride, point, step, k, out, edges);
}

/// [`resample_rgb`] (`YCC` false) and [`resample_ycbcr`] (`YCC` true).
///
/// # Safety
/// As [`resample_rgb`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn resample3<const YCC: bool>(
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
    const LOW: i64 = (1 << 20) - 1;
    // Lanes j = 0..8 of a coordinate `v + j d`: (v >> 20, v & LOW) each,
    // and the step 8 d split the same way.
    let lanes = |v: i64, d: i64| {
        let at = |j: i64| v + j * d;
        let hi = |j: i64| (at(j) >> 20) as i32;
        let lo = |j: i64| (at(j) & LOW) as i32;
        (
            _mm256_setr_epi32(hi(0), hi(1), hi(2), hi(3), hi(4), hi(5), hi(6), hi(7)),
            _mm256_setr_epi32(lo(0), lo(1), lo(2), lo(3), lo(4), lo(5), lo(6), lo(7)),
            _mm256_set1_epi32(((8 * d) >> 20) as i32),
            _mm256_set1_epi32(((8 * d) & LOW) as i32),
        )
    };
    let (mut yh, mut yl, yh_step, yl_step) = lanes(y, dy);
    let (mut xh, mut xl, xh_step, xl_step) = lanes(x, dx);
    let low = _mm256_set1_epi32(LOW as i32);
    let frac = _mm256_set1_epi32(0xFFF);
    let one = _mm256_set1_epi32(1 << 12);
    let lo16 = _mm256_set1_epi32(0xFFFF);
    let vstride = _mm256_set1_epi32(stride as i32);
    let two = _mm256_set1_epi32(2);
    let k = _mm256_set1_ps(k);
    let f65536 = _mm256_set1_ps(65536.0);
    let base = src.as_ptr() as *const i32;
    let i0 = _mm256_setr_epi32(0, 0, 0, 1, 1, 1, 2, 2);
    let i1 = _mm256_setr_epi32(2, 3, 3, 3, 4, 4, 4, 5);
    let i2 = _mm256_setr_epi32(5, 5, 6, 6, 6, 7, 7, 7);
    // Byte pairs of each 4-byte group, as two 16-bit values: (byte 0,
    // byte 3), byte 1 alone low, byte 2 alone high.
    let z = -128i8; // 0x80: a zero byte
    let pair03 = _mm256_setr_epi8(
        0, z, 3, z, 4, z, 7, z, 8, z, 11, z, 12, z, 15, z, 0, z, 3, z, 4, z, 7, z, 8, z, 11, z, 12,
        z, 15, z,
    );
    let first1 = _mm256_setr_epi8(
        1, z, z, z, 5, z, z, z, 9, z, z, z, 13, z, z, z, 1, z, z, z, 5, z, z, z, 9, z, z, z, 13, z,
        z, z,
    );
    let second2 = _mm256_setr_epi8(
        z, z, 2, z, z, z, 6, z, z, z, 10, z, z, z, 14, z, z, z, 2, z, z, z, 6, z, z, z, 10, z, z,
        z, 14, z,
    );
    let (clamp, ymax, xmax) = match edges {
        Some((ymax, xmax)) => (true, ymax, xmax),
        None => (false, 1 << 32, 1 << 32),
    };
    let zero = _mm256_setzero_si256();
    // The conversion's constants (`YCC`).
    let sign = _mm256_set1_epi32(i32::MIN);
    let zero_ps = _mm256_setzero_ps();
    let top = _mm256_set1_ps((255u32 << 24) as f32);
    let (cr_r, cb_g, cr_g, cb_b) = (
        _mm256_set1_ps(crate::fast::CR_R),
        _mm256_set1_ps(crate::fast::CB_G),
        _mm256_set1_ps(crate::fast::CR_G),
        _mm256_set1_ps(crate::fast::CB_B),
    );
    // In units of `v >> 20`: the last row (column) and the one before it.
    let (ytop, xtop) = (
        _mm256_set1_epi32((ymax >> 20) as i32),
        _mm256_set1_epi32((xmax >> 20) as i32),
    );
    let (ylast, xlast) = (
        _mm256_set1_epi32(((ymax >> 32) - 1) as i32),
        _mm256_set1_epi32(((xmax >> 32) - 1) as i32),
    );
    // (integer part, fraction) of `h` (`v >> 20`), clamped as described
    // above: into [0, top], then a point on the last row (column) read as
    // the one before it with the fraction 1 << 12.
    macro_rules! split {
        ($h:expr, $top:expr, $last:expr) => {{
            let mut h = $h;
            if clamp {
                h = _mm256_min_epi32(_mm256_max_epi32(h, zero), $top);
                let int = _mm256_min_epi32(_mm256_srai_epi32::<12>(h), $last);
                (int, _mm256_sub_epi32(h, _mm256_slli_epi32::<12>(int)))
            } else {
                (_mm256_srai_epi32::<12>(h), _mm256_and_si256(h, frac))
            }
        }};
    }
    // `h, l` advanced by the step: the low bits' carry into the high.
    macro_rules! advance {
        ($h:ident, $l:ident, $hs:expr, $ls:expr) => {{
            $l = _mm256_add_epi32($l, $ls);
            let carry = _mm256_cmpgt_epi32($l, low);
            $l = _mm256_and_si256($l, low);
            $h = _mm256_sub_epi32(_mm256_add_epi32($h, $hs), carry);
        }};
    }
    for o in out.chunks_exact_mut(24) {
        let (yi, fy) = split!(yh, ytop, ylast);
        let (xi, fx) = split!(xh, xtop, xlast);
        advance!(yh, yl, yh_step, yl_step);
        advance!(xh, xl, xh_step, xl_step);
        let p = _mm256_add_epi32(
            _mm256_mullo_epi32(yi, vstride),
            _mm256_add_epi32(xi, _mm256_add_epi32(xi, xi)),
        );
        // Four bytes at p (R G B of the left pixel, R of the right one) and
        // at p + 2 (B of the left, R G B of the right): in bounds, as the
        // right pixel ends at p + 6.
        let pb = _mm256_add_epi32(p, vstride);
        let tl = _mm256_i32gather_epi32::<1>(base, p);
        let tr = _mm256_i32gather_epi32::<1>(base, _mm256_add_epi32(p, two));
        let bl = _mm256_i32gather_epi32::<1>(base, pb);
        let br = _mm256_i32gather_epi32::<1>(base, _mm256_add_epi32(pb, two));
        let fy1 = _mm256_sub_epi32(one, fy);
        // The weights (1 - fx, fx) as a 16-bit pair (1 << 12 fits an i16).
        let wx = _mm256_or_si256(_mm256_sub_epi32(one, fx), _mm256_slli_epi32::<16>(fx));
        // fy1 ((1 - fx) left + fx right) of the top row + fy (...) of the
        // bottom one: the scalar sum of the four weighted values, exactly
        // (< 2^32).
        macro_rules! channel {
            ($top:expr, $bot:expr) => {{
                let top = _mm256_madd_epi16($top, wx);
                let bot = _mm256_madd_epi16($bot, wx);
                _mm256_add_epi32(_mm256_mullo_epi32(top, fy1), _mm256_mullo_epi32(bot, fy))
            }};
        }
        // `s as f32` for a u32: the high half times 65536 is exact, so the
        // one rounding is the sum's.
        let to_f32 = |s: __m256i| {
            let hi = _mm256_cvtepi32_ps(_mm256_srli_epi32::<16>(s));
            let lo = _mm256_cvtepi32_ps(_mm256_and_si256(s, lo16));
            _mm256_add_ps(_mm256_mul_ps(hi, f65536), lo)
        };
        // R: bytes 0 and 3 at p; G: byte 1 at p, byte 2 at p + 2; B: bytes
        // 0 and 3 at p + 2.
        let g_pair = |l: __m256i, r: __m256i| {
            _mm256_or_si256(
                _mm256_shuffle_epi8(l, first1),
                _mm256_shuffle_epi8(r, second2),
            )
        };
        let s0 = channel!(
            _mm256_shuffle_epi8(tl, pair03),
            _mm256_shuffle_epi8(bl, pair03)
        );
        let s1 = channel!(g_pair(tl, tr), g_pair(bl, br));
        let s2 = channel!(
            _mm256_shuffle_epi8(tr, pair03),
            _mm256_shuffle_epi8(br, pair03)
        );
        let (r, g, b) = if YCC {
            // `fast::ycbcr_sums_to_rgb`: Cb, Cr less 128 << 24 (the sign
            // bit flipped) as i32, then the coefficients, the clamp, `k`.
            let y = to_f32(s0);
            let cb = _mm256_cvtepi32_ps(_mm256_xor_si256(s1, sign));
            let cr = _mm256_cvtepi32_ps(_mm256_xor_si256(s2, sign));
            let c = |v: __m256| _mm256_mul_ps(_mm256_min_ps(_mm256_max_ps(v, zero_ps), top), k);
            (
                c(_mm256_add_ps(y, _mm256_mul_ps(cr, cr_r))),
                c(_mm256_add_ps(
                    _mm256_add_ps(y, _mm256_mul_ps(cb, cb_g)),
                    _mm256_mul_ps(cr, cr_g),
                )),
                c(_mm256_add_ps(y, _mm256_mul_ps(cb, cb_b))),
            )
        } else {
            (
                _mm256_mul_ps(to_f32(s0), k),
                _mm256_mul_ps(to_f32(s1), k),
                _mm256_mul_ps(to_f32(s2), k),
            )
        };
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

/// One row of the nearest resize from YCbCr (`fast::resize_nearest_ycbcr`)
/// for pixels `cols` (byte offsets from `src[start..]`, `cols.len()` a
/// multiple of 8), eight at a time: each pixel's Y, Cb, Cr read as one
/// 4-byte group, converted by zune-jpeg's integer formula
/// (`fast::ycbcr_to_rgb`: the chroma terms with `vpmaddwd`, the same
/// 32-bit sums), times `scale`, into `out` (`3 * cols.len()`, RGB order).
///
/// # Safety
/// AVX2 must be available ([`rgb_available`]); for every offset `c` of
/// `cols`, `0 <= c` and `start + c + 4 <= src.len()` (one byte past the
/// pixel is read).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn ycbcr_row_rgb(
    src: &[u8],
    start: usize,
    cols: &[i32],
    scale: f32,
    out: &mut [std::mem::MaybeUninit<f32>],
) {
    use std::arch::x86_64::*;
    debug_assert_eq!(cols.len() % 8, 0);
    debug_assert_eq!(out.len(), 3 * cols.len());
    let base = src.as_ptr().add(start) as *const i32;
    let z = -128i8;
    // (Cb, Cr) of each group as two 16-bit values.
    let chroma = _mm256_setr_epi8(
        1, z, 2, z, 5, z, 6, z, 9, z, 10, z, 13, z, 14, z, 1, z, 2, z, 5, z, 6, z, 9, z, 10, z, 13,
        z, 14, z,
    );
    let c128 = _mm256_set1_epi16(128);
    // (Cb, Cr) weight pairs of R, G, B (`ycbcr_to_rgb_i32`'s constants).
    let pair = |cb: i16, cr: i16| _mm256_set1_epi32(i32::from(cb as u16) | (i32::from(cr) << 16));
    let (wr, wg, wb) = (pair(0, 22970), pair(-5638, -11700), pair(29032, 0));
    let byte = _mm256_set1_epi32(0xFF);
    let rnd = _mm256_set1_epi32((1 << 13) - 1);
    let max = _mm256_set1_epi32(255);
    let zero = _mm256_setzero_si256();
    let k = _mm256_set1_ps(scale);
    let i0 = _mm256_setr_epi32(0, 0, 0, 1, 1, 1, 2, 2);
    let i1 = _mm256_setr_epi32(2, 3, 3, 3, 4, 4, 4, 5);
    let i2 = _mm256_setr_epi32(5, 5, 6, 6, 6, 7, 7, 7);
    for (c, o) in cols.chunks_exact(8).zip(out.chunks_exact_mut(24)) {
        let idx = _mm256_loadu_si256(c.as_ptr().cast());
        let p = _mm256_i32gather_epi32::<1>(base, idx);
        let y0 = _mm256_add_epi32(_mm256_slli_epi32::<14>(_mm256_and_si256(p, byte)), rnd);
        let cbcr = _mm256_sub_epi16(_mm256_shuffle_epi8(p, chroma), c128);
        let channel = |w: __m256i| {
            let v = _mm256_srai_epi32::<14>(_mm256_add_epi32(y0, _mm256_madd_epi16(cbcr, w)));
            let v = _mm256_min_epi32(_mm256_max_epi32(v, zero), max);
            _mm256_mul_ps(_mm256_cvtepi32_ps(v), k)
        };
        let (r, g, b) = (channel(wr), channel(wg), channel(wb));
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
        let op = o.as_mut_ptr().cast::<f32>();
        _mm256_storeu_ps(op, mix!(i0, 0x92, 0x24));
        _mm256_storeu_ps(op.add(8), mix!(i1, 0x24, 0x49));
        _mm256_storeu_ps(op.add(16), mix!(i2, 0x49, 0x92));
    }
}

/// Never called off x86-64 ([`rgb_available`] is false there).
///
/// # Safety
/// None needed; it panics.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn ycbcr_row_rgb(
    _src: &[u8],
    _start: usize,
    _cols: &[i32],
    _scale: f32,
    _out: &mut [std::mem::MaybeUninit<f32>],
) {
    unreachable!("ycbcr_row_rgb without AVX2")
}

/// Never called off x86-64 ([`rgb_available`] is false there).
///
/// # Safety
/// None needed; it panics.
#[cfg(not(target_arch = "x86_64"))]
pub(crate) unsafe fn resample_ycbcr(
    _src: &[u8],
    _stride: usize,
    _point: (i64, i64),
    _step: (i64, i64),
    _k: f32,
    _out: &mut [std::mem::MaybeUninit<f32>],
    _edges: Option<(i64, i64)>,
) {
    unreachable!("resample_ycbcr without AVX2")
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
