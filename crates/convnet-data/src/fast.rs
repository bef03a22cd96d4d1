//! The fast paths of `flow_from_directory`, from the decoded `u8` image
//! straight to the `f32` batch slot:
//!
//! - [`resize_nearest`]: Keras's (PIL's) nearest resize through index
//!   tables, with the rescale folded into a 256-entry lookup table; equal,
//!   value for value, to resizing then rescaling.
//! - [`resize_nearest_ycbcr`]: the same from a YCbCr image (a JPEG left
//!   unconverted), converting only the pixels picked, as zune-jpeg does.
//! - [`affine_resample`]: the augmentation's affine transform composed with
//!   the resize to the target size, in ONE bilinear pass from the full-size
//!   image (fixed-point coordinates and weights); within a fraction of a
//!   grey level of the same transform computed in `f64`.
//! - [`affine_resample_ycbcr`]: the same pass from a YCbCr image, the
//!   interpolated Y, Cb, Cr of each output pixel converted to RGB.

use std::mem::MaybeUninit;

use crate::augment::FillMode;
use crate::simd;

/// Source pixel of destination index `dst` for a nearest resize from
/// `n_src` to `n_dst`: PIL's `floor((dst + 0.5) * n_src / n_dst)`.
#[inline]
pub(crate) fn nearest_index(dst: usize, n_src: usize, n_dst: usize) -> usize {
    (((dst as f64 + 0.5) * n_src as f64 / n_dst as f64) as usize).min(n_src - 1)
}

/// `out` as possibly uninitialised values, for the functions here that
/// write every value of their output (and only initialised values).
pub(crate) fn as_uninit(out: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: same layout; only initialised values are written through it.
    unsafe { &mut *(out as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// The lookup table `v -> v * scale` for the 256 byte values.
pub(crate) fn scale_lut(scale: f32) -> [f32; 256] {
    std::array::from_fn(|v| f32::from(v as u8) * scale)
}

/// Nearest resize (PIL's rule) of `src` (`sh` x `sw` x `c`, `u8`) to `out`
/// (`th` x `tw` x `c`), each value mapped through `lut`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn resize_nearest(
    src: &[u8],
    sh: usize,
    sw: usize,
    c: usize,
    th: usize,
    tw: usize,
    lut: &[f32; 256],
    out: &mut [MaybeUninit<f32>],
) {
    assert_eq!(src.len(), sh * sw * c, "resize_nearest: source size");
    assert_eq!(out.len(), th * tw * c, "resize_nearest: output size");
    if (sh, sw) == (th, tw) {
        out.iter_mut()
            .zip(src)
            .for_each(|(o, &v)| *o = MaybeUninit::new(lut[v as usize]));
        return;
    }
    let cols: Vec<usize> = (0..tw).map(|x| nearest_index(x, sw, tw) * c).collect();
    let row_len = sw * c;
    // Each output row: its bytes picked into `picked`, then mapped by the
    // lookup table; for a table `v * s` (as `scale_lut` makes) the mapping
    // is that product, which vectorises: the same values.
    let scale = lut[1];
    let linear = lut
        .iter()
        .enumerate()
        .all(|(v, &l)| l.to_bits() == (f32::from(v as u8) * scale).to_bits());
    let mut picked = vec![0u8; tw * c];
    for (y, o) in out.chunks_exact_mut(tw * c).enumerate() {
        let sy = nearest_index(y, sh, th);
        let row = &src[sy * row_len..(sy + 1) * row_len];
        match c {
            3 => {
                for (p, &sx) in picked.chunks_exact_mut(3).zip(&cols) {
                    p.copy_from_slice(&row[sx..sx + 3]);
                }
            }
            _ => {
                for (p, &sx) in picked.chunks_exact_mut(c).zip(&cols) {
                    p.copy_from_slice(&row[sx..sx + c]);
                }
            }
        }
        if linear {
            o.iter_mut()
                .zip(&picked)
                .for_each(|(o, &v)| *o = MaybeUninit::new(f32::from(v) * scale));
        } else {
            o.iter_mut()
                .zip(&picked)
                .for_each(|(o, &v)| *o = MaybeUninit::new(lut[v as usize]));
        }
    }
}

/// zune-jpeg's YCbCr to RGB conversion (BT.601 full range, 14-bit fixed
/// point, its scalar and AVX2 code alike), value for value.
#[inline]
pub(crate) fn ycbcr_to_rgb(y: u8, cb: u8, cr: u8) -> [u8; 3] {
    ycbcr_to_rgb_i32(y.into(), cb.into(), cr.into()).map(|v| v as u8)
}

/// [`ycbcr_to_rgb`] on bytes held in `i32`s, the results `0..=255` too.
#[inline(always)]
fn ycbcr_to_rgb_i32(y: i32, cb: i32, cr: i32) -> [i32; 3] {
    const Y_CF: i32 = 16384;
    const CR_CF: i32 = 22970;
    const CB_CF: i32 = 29032;
    const G_CR: i32 = -11700;
    const G_CB: i32 = -5638;
    const RND: i32 = (1 << 13) - 1;
    let (cb, cr) = (cb - 128, cr - 128);
    let y0 = y * Y_CF + RND;
    let c = |v: i32| (v >> 14).clamp(0, 255);
    [
        c(y0 + cr * CR_CF),
        c(y0 + cr * G_CR + cb * G_CB),
        c(y0 + cb * CB_CF),
    ]
}

/// A whole YCbCr image (as zune-jpeg leaves it) converted to RGB by
/// [`ycbcr_to_rgb`]: the pixels zune-jpeg's RGB decoding gives.
pub(crate) fn ycbcr_image_to_rgb(src: &[u8]) -> Vec<u8> {
    src.chunks_exact(3)
        .flat_map(|p| ycbcr_to_rgb(p[0], p[1], p[2]))
        .collect()
}

/// [`resize_nearest`] of a YCbCr image (`sh` x `sw` x 3, as zune-jpeg
/// leaves it) to RGB values times `scale`: the pixels picked are converted
/// by [`ycbcr_to_rgb`], so the values are those of converting the whole
/// image first, then resizing with `scale_lut(scale)`.
#[inline(never)]
pub(crate) fn resize_nearest_ycbcr(
    src: &[u8],
    sh: usize,
    sw: usize,
    th: usize,
    tw: usize,
    scale: f32,
    out: &mut [MaybeUninit<f32>],
) {
    nearest_ycbcr(src, sh, sw, th, tw, scale, out, true);
}

/// [`resize_nearest_ycbcr`], with AVX2 rows (eight pixels at a time) where
/// `allow_simd` and the CPU has it: the same values.
#[allow(clippy::too_many_arguments)]
fn nearest_ycbcr(
    src: &[u8],
    sh: usize,
    sw: usize,
    th: usize,
    tw: usize,
    scale: f32,
    out: &mut [MaybeUninit<f32>],
    allow_simd: bool,
) {
    assert_eq!(src.len(), sh * sw * 3, "resize_nearest_ycbcr: source size");
    assert_eq!(out.len(), th * tw * 3, "resize_nearest_ycbcr: output size");
    let cols: Vec<usize> = (0..tw).map(|x| nearest_index(x, sw, tw) * 3).collect();
    let row_len = sw * 3;
    let simd = allow_simd && tw >= 8 && row_len <= i32::MAX as usize && simd::rgb_available();
    let cols32: Vec<i32> = if simd {
        cols.iter().map(|&c| c as i32).collect()
    } else {
        Vec::new()
    };
    // Each output row: the picked pixels' planes, then the conversion over
    // them (branch-free, vectorised), then the scale.
    let (mut py, mut pb, mut pr) = (vec![0i32; tw], vec![0i32; tw], vec![0i32; tw]);
    for (y, o) in out.chunks_exact_mut(tw * 3).enumerate() {
        let sy = nearest_index(y, sh, th);
        let start = sy * row_len;
        // The SIMD rows read 4 bytes a pixel: one past the last pixel of
        // the image (the last row's last column) stays with the scalar.
        if simd && start + cols[tw - 1] + 4 <= src.len() {
            let n8 = tw / 8 * 8;
            // SAFETY: AVX2 is available; every offset `c` of the columns
            // is at most the last one, so `start + c + 4 <= src.len()`.
            unsafe {
                simd::ycbcr_row_rgb(src, start, &cols32[..n8], scale, &mut o[..n8 * 3]);
                if n8 < tw {
                    // The last 8 pixels, overlapping: the same values again.
                    simd::ycbcr_row_rgb(
                        src,
                        start,
                        &cols32[tw - 8..],
                        scale,
                        &mut o[(tw - 8) * 3..],
                    );
                }
            }
            continue;
        }
        let row = &src[start..start + row_len];
        for (i, &sx) in cols.iter().enumerate() {
            let p = &row[sx..sx + 3];
            (py[i], pb[i], pr[i]) = (p[0].into(), p[1].into(), p[2].into());
        }
        for (((o, &y), &cb), &cr) in o.chunks_exact_mut(3).zip(&py).zip(&pb).zip(&pr) {
            let [r, g, b] = ycbcr_to_rgb_i32(y, cb, cr);
            o[0] = MaybeUninit::new(r as f32 * scale);
            o[1] = MaybeUninit::new(g as f32 * scale);
            o[2] = MaybeUninit::new(b as f32 * scale);
        }
    }
}

/// The 2x3 affine map from a destination pixel `(row, col)` of a `th` x
/// `tw` image to the source point `(y, x)` of an `sh` x `sw` image: `m`
/// (Keras's matrix, in destination coordinates) followed by the resize,
/// pixel centres aligned (`y_src = (y + 0.5) * sh / th - 0.5`).
pub(crate) fn compose_resize(
    m: &[[f64; 3]; 3],
    sh: usize,
    sw: usize,
    th: usize,
    tw: usize,
) -> [[f64; 3]; 2] {
    let sy = sh as f64 / th as f64;
    let sx = sw as f64 / tw as f64;
    [
        [m[0][0] * sy, m[0][1] * sy, m[0][2] * sy + 0.5 * sy - 0.5],
        [m[1][0] * sx, m[1][1] * sx, m[1][2] * sx + 0.5 * sx - 0.5],
    ]
}

/// Maps a possibly out-of-range index into `0..n` by the fill mode
/// (`Constant` clamps: the caller has already decided the point is inside).
#[inline]
pub(crate) fn map_index(i: i64, n: usize, mode: FillMode) -> usize {
    let n = n as i64;
    match mode {
        FillMode::Nearest | FillMode::Constant => i.clamp(0, n - 1) as usize,
        FillMode::Reflect => {
            let m = i.rem_euclid(2 * n);
            (if m >= n { 2 * n - 1 - m } else { m }) as usize
        }
        FillMode::Wrap => i.rem_euclid(n) as usize,
    }
}

/// Fractional bits of the fixed-point coordinates.
const FRAC: u32 = 32;
/// How far outside (1e-6 pixel, in fixed point) a point may be and still
/// count as inside for [`FillMode::Constant`], as in `affine_transform`.
const EPS: i64 = 4295;
/// Bits of each bilinear weight: the four products sum to `1 << 2 * WBITS`,
/// and 255 times that fits a `u32`.
const WBITS: u32 = 12;

/// Resamples `src` (`sh` x `sw` x `c`, `u8`) through `a` (destination pixel
/// to source point, see [`compose_resize`]) with bilinear interpolation
/// into `out` (`th` x `tw` x `c`), every value times `scale`; points outside
/// follow `fill_mode` (`cval` for `Constant`, times `scale` too). `None`
/// (nothing written) when `a` is not finite.
#[allow(clippy::too_many_arguments)]
pub(crate) fn affine_resample(
    src: &[u8],
    sh: usize,
    sw: usize,
    c: usize,
    a: &[[f64; 3]; 2],
    fill_mode: FillMode,
    cval: f32,
    scale: f32,
    th: usize,
    tw: usize,
    out: &mut [MaybeUninit<f32>],
) -> Option<()> {
    assert_eq!(src.len(), sh * sw * c, "affine_resample: source size");
    assert_eq!(out.len(), th * tw * c, "affine_resample: output size");
    if !resamplable(a, th, tw) {
        return None;
    }
    match c {
        1 => resample::<1, false>(src, sh, sw, a, fill_mode, cval, scale, th, tw, out, true),
        3 => resample::<3, false>(src, sh, sw, a, fill_mode, cval, scale, th, tw, out, true),
        4 => resample::<4, false>(src, sh, sw, a, fill_mode, cval, scale, th, tw, out, true),
        _ => resample_dyn(src, sh, sw, c, a, fill_mode, cval, scale, th, tw, out),
    }
    Some(())
}

/// [`affine_resample`] of a YCbCr image (`sh` x `sw` x 3, as zune-jpeg
/// leaves it) to RGB: Y, Cb and Cr are interpolated as the RGB channels
/// are there (the same fixed-point weights), and each output pixel's three
/// sums are converted to RGB by zune-jpeg's coefficients
/// ([`ycbcr_to_rgb`]'s, in `f32`, unrounded), clamped to `0..=255`, times
/// `scale`; `cval` (for [`FillMode::Constant`]) is RGB, as there. One
/// conversion per output pixel instead of one per source pixel (the
/// decoder converting the whole image).
///
/// Not value for value what converting the whole image first gives
/// (`affine_resample` of zune-jpeg's RGB decoding): there each source pixel
/// is rounded to an integer and clamped before the interpolation, here the
/// interpolated value is converted and clamped. The conversion being
/// linear, the two differ only by that rounding (at most half a level a
/// source pixel, unbiased: this path is the more exact one) and where a
/// neighbour's RGB value left `0..=255` (JPEG ringing at saturated
/// colours). Measured (`directory.rs`'s `ycbcr_difference_on_folder`) on
/// the folders of `cargo xtask bench data` (Pillow's 4:2:0 JPEGs, its
/// augmentation): mean absolute difference 0.23 level (keras-like, 1000
/// images) and 0.25 (photo-like, 500), at most 1.8 and 14.6 levels; the
/// tests' images (4:4:4, a saturated disc) reach 22. Acceptable: 0.001 on
/// average in the rescaled units the network sees, unbiased; Keras's own
/// decoder (libjpeg through PIL) and zune-jpeg, through the same pass,
/// differ less on average (0.05 and 0.03 level on those folders) but as
/// much at worst (3.4 and 12.0 levels), and Keras resizes with nearest
/// before its transform, which moves values by far more than either.
#[allow(clippy::too_many_arguments)]
pub(crate) fn affine_resample_ycbcr(
    src: &[u8],
    sh: usize,
    sw: usize,
    a: &[[f64; 3]; 2],
    fill_mode: FillMode,
    cval: f32,
    scale: f32,
    th: usize,
    tw: usize,
    out: &mut [MaybeUninit<f32>],
) -> Option<()> {
    assert_eq!(src.len(), sh * sw * 3, "affine_resample_ycbcr: source size");
    assert_eq!(out.len(), th * tw * 3, "affine_resample_ycbcr: output size");
    if !resamplable(a, th, tw) {
        return None;
    }
    resample::<3, true>(src, sh, sw, a, fill_mode, cval, scale, th, tw, out, true);
    Some(())
}

/// Whether the fixed-point resampling takes `a`: finite, and every
/// coordinate well inside `i64` in fixed point.
fn resamplable(a: &[[f64; 3]; 2], th: usize, tw: usize) -> bool {
    if !a.iter().flatten().all(|v| v.is_finite()) {
        return false;
    }
    let far = |v: f64| v.abs() > 1e9;
    let corners = [
        (0.0, 0.0),
        (0.0, tw as f64),
        (th as f64, 0.0),
        (th as f64, tw as f64),
    ];
    !corners.iter().any(|&(r, q)| {
        far(a[0][0] * r + a[0][1] * q + a[0][2]) || far(a[1][0] * r + a[1][1] * q + a[1][2])
    })
}

/// zune-jpeg's conversion coefficients ([`ycbcr_to_rgb`]) as `f32`
/// (exact: multiples of 2^-14): R = Y + `CR_R` Cr', G = Y + `CB_G` Cb' +
/// `CR_G` Cr', B = Y + `CB_B` Cb' (Cb' = Cb - 128, Cr' = Cr - 128).
pub(crate) const CR_R: f32 = 22970.0 / 16384.0;
pub(crate) const CB_G: f32 = -5638.0 / 16384.0;
pub(crate) const CR_G: f32 = -11700.0 / 16384.0;
pub(crate) const CB_B: f32 = 29032.0 / 16384.0;

/// The RGB values (times `k`) of bilinear sums of Y, Cb and Cr (each with
/// `2 * WBITS` fractional bits, `< 2^32`): Cb and Cr centred in `i32`
/// (`s - 128 << 24`), each sum to `f32` (one rounding), zune-jpeg's
/// coefficients, clamped to `[0, 255 << 24]`, times `k`. The AVX2 rows
/// (`simd::resample_ycbcr`) do the same operations in the same order.
#[inline(always)]
fn ycbcr_sums_to_rgb(sy: u32, scb: u32, scr: u32, k: f32) -> [f32; 3] {
    let y = sy as f32;
    let cb = scb.wrapping_sub(1 << 31) as i32 as f32;
    let cr = scr.wrapping_sub(1 << 31) as i32 as f32;
    let top = (255u32 << (2 * WBITS)) as f32;
    let c = |v: f32| v.max(0.0).min(top) * k;
    [
        c(y + cr * CR_R),
        c(y + cb * CB_G + cr * CR_G),
        c(y + cb * CB_B),
    ]
}

#[inline]
fn fixed(v: f64) -> i64 {
    (v * (1u64 << FRAC) as f64).round() as i64
}

/// The four bilinear weights of fractions `fy`, `fx` (each `WBITS` bits).
#[inline]
fn weights(fy: u32, fx: u32) -> [u32; 4] {
    let one = 1u32 << WBITS;
    [
        (one - fy) * (one - fx),
        (one - fy) * fx,
        fy * (one - fx),
        fy * fx,
    ]
}

/// The fixed-point resampling; with `YCC` (`C == 3`) the source is YCbCr
/// and each pixel's sums are converted by [`ycbcr_sums_to_rgb`].
#[allow(clippy::too_many_arguments)]
fn resample<const C: usize, const YCC: bool>(
    src: &[u8],
    sh: usize,
    sw: usize,
    a: &[[f64; 3]; 2],
    fill_mode: FillMode,
    cval: f32,
    scale: f32,
    th: usize,
    tw: usize,
    out: &mut [MaybeUninit<f32>],
    allow_simd: bool,
) {
    debug_assert_eq!(out.len(), th * tw * C);
    let k = scale / (1u64 << (2 * WBITS)) as f32;
    let (dy, dx) = (fixed(a[0][1]), fixed(a[1][1]));
    let (ymax, xmax) = ((sh as i64 - 1) << FRAC, (sw as i64 - 1) << FRAC);
    let stride = sw * C;
    let fill = cval * scale;
    let simd = allow_simd && C == 3 && simd::rgb_available() && src.len() < simd::MAX_SOURCE;
    // One pixel's bilinear sums to its output values.
    let put = |o: &mut [MaybeUninit<f32>], s: [u32; C]| {
        if YCC && C == 3 {
            let v = ycbcr_sums_to_rgb(s[0], s[1], s[2], k);
            o.iter_mut()
                .zip(v)
                .for_each(|(o, v)| *o = MaybeUninit::new(v));
        } else {
            o.iter_mut()
                .zip(s)
                .for_each(|(o, s)| *o = MaybeUninit::new(s as f32 * k));
        }
    };
    for (r, orow) in out.chunks_exact_mut(tw * C).enumerate() {
        let rf = r as f64;
        let y = fixed(a[0][0] * rf + a[0][2]);
        let x = fixed(a[1][0] * rf + a[1][2]);
        // Column q samples (y + q dy, x + q dx): the sum the scalar loop
        // accumulates, exactly (integers).
        let at = |q: usize| (y + q as i64 * dy, x + q as i64 * dx);
        let inside = |(yi, xi): (i64, i64)| yi >= 0 && yi < ymax && xi >= 0 && xi < xmax;
        // The columns [q0, q1) are sampled eight at a time with SIMD: with
        // fill mode nearest the whole row, else the run of inside points
        // (one run: each bound is linear in q). A run that is not a
        // multiple of 8 ends with 8 points overlapping the previous ones
        // (the same values written again).
        let (mut q0, mut q1) = (tw, tw);
        if simd {
            let edges = fill_mode == FillMode::Nearest && sh >= 2 && sw >= 2;
            if edges {
                q0 = 0;
            } else {
                q0 = (0..tw).find(|&q| inside(at(q))).unwrap_or(tw);
                q1 = tw;
                while q1 > q0 && !inside(at(q1 - 1)) {
                    q1 -= 1;
                }
            }
            let fits = |q: usize| {
                let (yi, xi) = at(q);
                simd::coordinate_fits(yi) && simd::coordinate_fits(xi)
            };
            if q1 - q0 >= 8 && fits(q0) && fits(q1 - 1) {
                let n8 = (q1 - q0) / 8 * 8;
                for start in [q0, q1 - 8] {
                    let n = if start == q0 { n8 } else { 8 };
                    if start != q0 && n8 == q1 - q0 {
                        break;
                    }
                    // SAFETY: AVX2 is available (`rgb_available`), C == 3,
                    // `src` is shorter than `MAX_SOURCE`, the coordinates
                    // of [q0, q1) fit (linear in q), and either the
                    // edges are the image's own (at least 2x2) or the
                    // points of [q0, q1) are inside.
                    unsafe {
                        let o = &mut orow[start * 3..(start + n) * 3];
                        let edges = edges.then_some((ymax, xmax));
                        if YCC {
                            simd::resample_ycbcr(src, stride, at(start), (dy, dx), k, o, edges);
                        } else {
                            simd::resample_rgb(src, stride, at(start), (dy, dx), k, o, edges);
                        }
                    }
                }
            } else {
                (q0, q1) = (tw, tw);
            }
        }
        // The columns left to the scalar code: before and after the SIMD
        // run (walking past the run cost 6% of an augmented image: perf).
        let rest = (0..q0).chain(q1.max(q0)..tw);
        for q in rest {
            let o = &mut orow[q * C..(q + 1) * C];
            let (yi, xi) = at(q);
            let (y0, x0) = (yi >> FRAC, xi >> FRAC);
            let fy = ((yi >> (FRAC - WBITS)) & ((1 << WBITS) - 1)) as u32;
            let fx = ((xi >> (FRAC - WBITS)) & ((1 << WBITS) - 1)) as u32;
            let w = weights(fy, fx);
            if yi >= 0 && yi < ymax && xi >= 0 && xi < xmax {
                // Inside: the four neighbours exist.
                let p = y0 as usize * stride + x0 as usize * C;
                let top = &src[p..p + 2 * C];
                let bot = &src[p + stride..p + stride + 2 * C];
                put(
                    o,
                    std::array::from_fn(|ch| {
                        u32::from(top[ch]) * w[0]
                            + u32::from(top[C + ch]) * w[1]
                            + u32::from(bot[ch]) * w[2]
                            + u32::from(bot[C + ch]) * w[3]
                    }),
                );
                continue;
            }
            if fill_mode == FillMode::Constant
                && (yi < -EPS || yi > ymax + EPS || xi < -EPS || xi > xmax + EPS)
            {
                o.fill(MaybeUninit::new(fill));
                continue;
            }
            let ya = map_index(y0, sh, fill_mode) * stride;
            let yb = map_index(y0 + 1, sh, fill_mode) * stride;
            let xa = map_index(x0, sw, fill_mode) * C;
            let xb = map_index(x0 + 1, sw, fill_mode) * C;
            put(
                o,
                std::array::from_fn(|ch| {
                    u32::from(src[ya + xa + ch]) * w[0]
                        + u32::from(src[ya + xb + ch]) * w[1]
                        + u32::from(src[yb + xa + ch]) * w[2]
                        + u32::from(src[yb + xb + ch]) * w[3]
                }),
            );
        }
    }
}

/// [`resample`] for any channel count (the rare case).
#[allow(clippy::too_many_arguments)]
fn resample_dyn(
    src: &[u8],
    sh: usize,
    sw: usize,
    c: usize,
    a: &[[f64; 3]; 2],
    fill_mode: FillMode,
    cval: f32,
    scale: f32,
    th: usize,
    tw: usize,
    out: &mut [MaybeUninit<f32>],
) {
    let k = scale / (1u64 << (2 * WBITS)) as f32;
    let (ymax, xmax) = ((sh as i64 - 1) << FRAC, (sw as i64 - 1) << FRAC);
    for r in 0..th {
        for q in 0..tw {
            let (rf, qf) = (r as f64, q as f64);
            let yi = fixed(a[0][0] * rf + a[0][1] * qf + a[0][2]);
            let xi = fixed(a[1][0] * rf + a[1][1] * qf + a[1][2]);
            let o = &mut out[(r * tw + q) * c..(r * tw + q + 1) * c];
            if fill_mode == FillMode::Constant
                && (yi < -EPS || yi > ymax + EPS || xi < -EPS || xi > xmax + EPS)
            {
                o.fill(MaybeUninit::new(cval * scale));
                continue;
            }
            let (y0, x0) = (yi >> FRAC, xi >> FRAC);
            let fy = ((yi >> (FRAC - WBITS)) & ((1 << WBITS) - 1)) as u32;
            let fx = ((xi >> (FRAC - WBITS)) & ((1 << WBITS) - 1)) as u32;
            let w = weights(fy, fx);
            let ya = map_index(y0, sh, fill_mode) * sw * c;
            let yb = map_index(y0 + 1, sh, fill_mode) * sw * c;
            let xa = map_index(x0, sw, fill_mode) * c;
            let xb = map_index(x0 + 1, sw, fill_mode) * c;
            for (ch, o) in o.iter_mut().enumerate() {
                let s = u32::from(src[ya + xa + ch]) * w[0]
                    + u32::from(src[ya + xb + ch]) * w[1]
                    + u32::from(src[yb + xa + ch]) * w[2]
                    + u32::from(src[yb + xb + ch]) * w[3];
                *o = MaybeUninit::new(s as f32 * k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::{affine_transform, TransformParams};

    fn image(h: usize, w: usize, c: usize, seed: u64) -> Vec<u8> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..h * w * c)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                // Smooth-ish with noise: edges of every contrast.
                ((i / c % w) as u64 * 3 + (s >> 60)) as u8 ^ (i / (w * c) * 5) as u8
            })
            .collect()
    }

    /// The plain nearest resize: one pixel at a time, PIL's rule.
    fn nearest_plain(src: &[u8], sh: usize, sw: usize, c: usize, th: usize, tw: usize) -> Vec<f32> {
        let mut out = Vec::new();
        for y in 0..th {
            for x in 0..tw {
                let sy = ((y as f64 + 0.5) * sh as f64 / th as f64).floor() as usize;
                let sx = ((x as f64 + 0.5) * sw as f64 / tw as f64).floor() as usize;
                for k in 0..c {
                    out.push(f32::from(
                        src[(sy.min(sh - 1) * sw + sx.min(sw - 1)) * c + k],
                    ));
                }
            }
        }
        out
    }

    #[test]
    fn nearest_table_equals_plain() {
        for (sh, sw, c, th, tw) in [
            (375, 500, 3, 150, 150),
            (300, 457, 3, 150, 150),
            (7, 5, 1, 13, 11),
            (150, 150, 3, 150, 150),
            (9, 8, 4, 4, 3),
        ] {
            let src = image(sh, sw, c, (sh * sw) as u64);
            for scale in [1.0f32, 1.0 / 255.0] {
                let mut out = vec![0.0; th * tw * c];
                resize_nearest(
                    &src,
                    sh,
                    sw,
                    c,
                    th,
                    tw,
                    &scale_lut(scale),
                    as_uninit(&mut out),
                );
                let want: Vec<f32> = nearest_plain(&src, sh, sw, c, th, tw)
                    .into_iter()
                    .map(|v| v * scale)
                    .collect();
                assert_eq!(out, want, "{sh}x{sw}x{c} -> {th}x{tw}");
            }
        }
    }

    /// The plain resampling: `f64` coordinates, `f64` bilinear, per pixel.
    #[allow(clippy::too_many_arguments)]
    fn resample_plain(
        src: &[u8],
        sh: usize,
        sw: usize,
        c: usize,
        a: &[[f64; 3]; 2],
        mode: FillMode,
        cval: f32,
        th: usize,
        tw: usize,
    ) -> Vec<f32> {
        let mut out = vec![0.0; th * tw * c];
        for r in 0..th {
            for q in 0..tw {
                let (rf, qf) = (r as f64, q as f64);
                let y = a[0][0] * rf + a[0][1] * qf + a[0][2];
                let x = a[1][0] * rf + a[1][1] * qf + a[1][2];
                let o = &mut out[(r * tw + q) * c..(r * tw + q + 1) * c];
                let e = 1e-6;
                if mode == FillMode::Constant
                    && (y < -e || y > (sh - 1) as f64 + e || x < -e || x > (sw - 1) as f64 + e)
                {
                    o.fill(cval);
                    continue;
                }
                let (y0, x0) = (y.floor(), x.floor());
                let (fy, fx) = (y - y0, x - x0);
                let (y0, x0) = (y0 as i64, x0 as i64);
                let ya = map_index(y0, sh, mode);
                let yb = map_index(y0 + 1, sh, mode);
                let xa = map_index(x0, sw, mode);
                let xb = map_index(x0 + 1, sw, mode);
                for (k, v) in o.iter_mut().enumerate() {
                    let p = |yy: usize, xx: usize| f64::from(src[(yy * sw + xx) * c + k]);
                    *v = ((1.0 - fy) * (1.0 - fx) * p(ya, xa)
                        + (1.0 - fy) * fx * p(ya, xb)
                        + fy * (1.0 - fx) * p(yb, xa)
                        + fy * fx * p(yb, xb)) as f32;
                }
            }
        }
        out
    }

    fn params(i: u64) -> TransformParams {
        let f = |k: u64| ((i * 7919 + k * 104_729) % 1000) as f64 / 1000.0 - 0.5;
        TransformParams {
            theta: 40.0 * f(1),
            tx: 60.0 * f(2),
            ty: 60.0 * f(3),
            shear: 20.0 * f(4),
            zx: 1.0 + 0.4 * f(5),
            zy: 1.0 + 0.4 * f(6),
            flip_horizontal: i % 2 == 0,
            flip_vertical: i % 3 == 0,
            ..TransformParams::default()
        }
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0, f32::max)
    }

    /// The AVX2 rows of the nearest resize from YCbCr equal the scalar
    /// conversion: widths below, at and past 8, not multiples of 8, the
    /// last pixel of the image picked (same size), every byte value.
    #[test]
    fn nearest_ycbcr_simd_equals_scalar() {
        for (sh, sw, th, tw) in [
            (375, 500, 150, 150),
            (37, 29, 37, 29),
            (9, 8, 9, 8),
            (5, 40, 3, 7),
            (64, 64, 16, 16),
            (3, 300, 2, 257),
        ] {
            let src = image(sh, sw, 3, (sh * sw + tw) as u64);
            for scale in [1.0f32, 1.0 / 255.0] {
                let mut want = vec![0.0; th * tw * 3];
                let mut got = vec![1.0; th * tw * 3];
                nearest_ycbcr(&src, sh, sw, th, tw, scale, as_uninit(&mut want), false);
                nearest_ycbcr(&src, sh, sw, th, tw, scale, as_uninit(&mut got), true);
                let same = want
                    .iter()
                    .zip(&got)
                    .all(|(p, q)| p.to_bits() == q.to_bits());
                assert!(same, "{sh}x{sw} -> {th}x{tw}");
            }
        }
        // Every (Cb, Cr) pair with Y at its ends and between: 256 rows
        // (Cr) of 4 x 256 pixels (Y, then Cb).
        let (h, w) = (256, 4 * 256);
        let src: Vec<u8> = (0..h * w)
            .flat_map(|i| {
                [
                    [0, 1, 128, 255][i % w / 256],
                    (i % 256) as u8,
                    (i / w) as u8,
                ]
            })
            .collect();
        let mut want = vec![0.0; h * w * 3];
        let mut got = vec![0.0; h * w * 3];
        nearest_ycbcr(&src, h, w, h, w, 1.0, as_uninit(&mut want), false);
        nearest_ycbcr(&src, h, w, h, w, 1.0, as_uninit(&mut got), true);
        assert!(want == got, "every (Cb, Cr) pair");
        // The scalar path is zune-jpeg's conversion, pixel by pixel.
        let direct: Vec<f32> = src
            .chunks_exact(3)
            .flat_map(|p| ycbcr_to_rgb(p[0], p[1], p[2]))
            .map(f32::from)
            .collect();
        assert_eq!(want, direct);
    }

    #[test]
    fn fused_resample_matches_plain_f64() {
        let modes = [
            FillMode::Nearest,
            FillMode::Constant,
            FillMode::Reflect,
            FillMode::Wrap,
        ];
        for (sh, sw, c) in [
            (375, 500, 3),
            (311, 457, 3),
            (40, 30, 1),
            (33, 47, 4),
            (20, 20, 2),
        ] {
            let src = image(sh, sw, c, (sh + sw) as u64);
            for (i, mode) in modes.iter().enumerate() {
                let (th, tw) = (150, 150);
                let m = params(i as u64 + sh as u64).matrix(th, tw).unwrap();
                let a = compose_resize(&m, sh, sw, th, tw);
                let mut out = vec![0.0; th * tw * c];
                affine_resample(
                    &src,
                    sh,
                    sw,
                    c,
                    &a,
                    *mode,
                    17.0,
                    1.0,
                    th,
                    tw,
                    as_uninit(&mut out),
                )
                .unwrap();
                let want = resample_plain(&src, sh, sw, c, &a, *mode, 17.0, th, tw);
                let d = max_diff(&out, &want);
                assert!(d <= 0.25, "{sh}x{sw}x{c} {mode:?}: max difference {d}");
                // The rescale folded in.
                let mut scaled = vec![0.0; th * tw * c];
                affine_resample(
                    &src,
                    sh,
                    sw,
                    c,
                    &a,
                    *mode,
                    17.0,
                    0.5,
                    th,
                    tw,
                    as_uninit(&mut scaled),
                )
                .unwrap();
                let d = out
                    .iter()
                    .zip(&scaled)
                    .map(|(p, q)| (p * 0.5 - q).abs())
                    .fold(0.0, f32::max);
                assert!(d <= 1e-3, "scale: {d}");
            }
        }
    }

    /// The AVX2 rows (RGB, and YCbCr to RGB) equal the scalar loop value
    /// for value: sizes,
    /// fill modes, matrices with every kind of row (all inside, partly,
    /// none, runs not a multiple of 8), the last row and column of the
    /// image sampled.
    #[test]
    fn simd_rows_equal_scalar() {
        let modes = [
            FillMode::Nearest,
            FillMode::Constant,
            FillMode::Reflect,
            FillMode::Wrap,
        ];
        let mut checked = 0;
        for (sh, sw) in [(375, 500), (311, 457), (2, 2), (3, 17), (150, 150), (40, 9)] {
            let src = image(sh, sw, 3, (sh * 31 + sw) as u64);
            for i in 0..12u64 {
                let (th, tw) = [(150, 150), (37, 29), (1, 8), (9, 1)][i as usize % 4];
                let m = params(i + sh as u64).matrix(th, tw).unwrap();
                let mut mats = vec![compose_resize(&m, sh, sw, th, tw)];
                // Exactly onto the image: the last row and column inside.
                mats.push([
                    [0.0, 0.0, (sh - 1) as f64 * 0.999_999],
                    [0.0, (sw - 1) as f64 / tw as f64, 0.0],
                ]);
                // Far outside (coordinates past what the SIMD rows carry
                // in 32 bits), and a row that crosses that limit.
                mats.push([[1.0, 0.0, 3e5], [0.0, 1.0, -4e5]]);
                mats.push([[0.0, 0.0, 2.0], [0.0, 3e3, 262_000.0]]);
                for a in &mats {
                    let mode = modes[i as usize % 4];
                    for (scale, ycc) in [
                        (1.0f32, false),
                        (1.0 / 255.0, false),
                        (1.0, true),
                        (0.5, true),
                    ] {
                        let run = |out: &mut [f32], simd: bool| {
                            let out = as_uninit(out);
                            if ycc {
                                resample::<3, true>(
                                    &src, sh, sw, a, mode, 5.0, scale, th, tw, out, simd,
                                );
                            } else {
                                resample::<3, false>(
                                    &src, sh, sw, a, mode, 5.0, scale, th, tw, out, simd,
                                );
                            }
                        };
                        let mut want = vec![0.0; th * tw * 3];
                        let mut got = vec![1.0; th * tw * 3];
                        run(&mut want, false);
                        run(&mut got, true);
                        let same = want
                            .iter()
                            .zip(&got)
                            .all(|(p, q)| p.to_bits() == q.to_bits());
                        assert!(same, "{sh}x{sw} -> {th}x{tw} {mode:?} {a:?} ycc {ycc}");
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 100);
    }

    /// The YCbCr resampling at integer points (each output pixel one source
    /// pixel) is zune-jpeg's conversion before its rounding: within half a
    /// level of [`ycbcr_to_rgb`] for every (Cb, Cr) pair with Y at its ends
    /// and between (the clamps included); SIMD rows and scalar alike.
    #[test]
    fn ycbcr_resample_converts_as_zune() {
        let (h, w) = (256, 4 * 256);
        let src: Vec<u8> = (0..h * w)
            .flat_map(|i| {
                [
                    [0, 1, 128, 255][i % w / 256],
                    (i % 256) as u8,
                    (i / w) as u8,
                ]
            })
            .collect();
        let a = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]];
        let want: Vec<f32> = src
            .chunks_exact(3)
            .flat_map(|p| ycbcr_to_rgb(p[0], p[1], p[2]))
            .map(f32::from)
            .collect();
        for simd in [false, true] {
            let mut got = vec![0.0; h * w * 3];
            resample::<3, true>(
                &src,
                h,
                w,
                &a,
                FillMode::Nearest,
                0.0,
                1.0,
                h,
                w,
                as_uninit(&mut got),
                simd,
            );
            let d = max_diff(&got, &want);
            assert!(d <= 0.5 + 1e-3, "simd {simd}: max difference {d}");
            assert!(got.iter().all(|v| (0.0..=255.0).contains(v)));
        }
    }

    #[test]
    fn same_size_matches_affine_transform() {
        // No resize: the fused pass is the augmentation's own affine pass.
        let (h, w, c) = (64, 48, 3);
        let src = image(h, w, c, 3);
        let srcf: Vec<f32> = src.iter().map(|&v| f32::from(v)).collect();
        for (i, mode) in [
            FillMode::Nearest,
            FillMode::Constant,
            FillMode::Reflect,
            FillMode::Wrap,
        ]
        .into_iter()
        .enumerate()
        {
            let m = params(i as u64).matrix(h, w).unwrap();
            let mut want = vec![0.0; h * w * c];
            affine_transform(&srcf, h, w, c, &m, mode, 9.0, &mut want);
            let a = compose_resize(&m, h, w, h, w);
            let mut out = vec![0.0; h * w * c];
            affine_resample(&src, h, w, c, &a, mode, 9.0, 1.0, h, w, as_uninit(&mut out)).unwrap();
            let d = max_diff(&out, &want);
            assert!(d <= 0.25, "{mode:?}: max difference {d}");
        }
    }

    #[test]
    fn not_finite_is_refused() {
        let src = image(4, 4, 3, 1);
        let mut out = vec![0.0; 2 * 2 * 3];
        let a = [[f64::NAN, 0.0, 0.0], [0.0, 1.0, 0.0]];
        assert!(affine_resample(
            &src,
            4,
            4,
            3,
            &a,
            FillMode::Nearest,
            0.0,
            1.0,
            2,
            2,
            as_uninit(&mut out)
        )
        .is_none());
        let a = [[1e300, 0.0, 0.0], [0.0, 1.0, 0.0]];
        assert!(affine_resample(
            &src,
            4,
            4,
            3,
            &a,
            FillMode::Nearest,
            0.0,
            1.0,
            2,
            2,
            as_uninit(&mut out)
        )
        .is_none());
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    use crate::augment::TransformParams;

    /// `cargo test --release -p convnet-data --lib -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn resample_ns_per_pixel() {
        let (sh, sw, c, th, tw) = (400, 400, 3, 150, 150);
        let src: Vec<u8> = (0..sh * sw * c).map(|i| (i * 7 % 251) as u8).collect();
        let p = TransformParams {
            tx: 12.0,
            ty: -9.0,
            shear: 8.0,
            zx: 1.1,
            zy: 0.9,
            ..TransformParams::default()
        };
        let a = compose_resize(&p.matrix(th, tw).unwrap(), sh, sw, th, tw);
        let mut out = vec![0.0; th * tw * c];
        // The best of 200 rounds of 10 images: the figure least disturbed
        // by other processes (short rounds: some run undisturbed).
        let best = |f: &mut dyn FnMut()| {
            (0..200)
                .map(|_| {
                    let t = std::time::Instant::now();
                    for _ in 0..10 {
                        f();
                    }
                    t.elapsed().as_nanos() as f64 / (10 * th * tw) as f64
                })
                .fold(f64::INFINITY, f64::min)
        };
        for simd in [false, true] {
            let ns = best(&mut || {
                resample::<3, true>(
                    &src,
                    sh,
                    sw,
                    &a,
                    FillMode::Nearest,
                    0.0,
                    1.0 / 255.0,
                    th,
                    tw,
                    as_uninit(&mut out),
                    simd,
                )
            });
            eprintln!(
                "affine_resample_ycbcr (simd {simd}): {ns:.2} ns/pixel, {:.0} us/image",
                ns * (th * tw) as f64 / 1e3
            );
        }
        for simd in [false, true] {
            let ns = best(&mut || {
                resample::<3, false>(
                    &src,
                    sh,
                    sw,
                    &a,
                    FillMode::Nearest,
                    0.0,
                    1.0 / 255.0,
                    th,
                    tw,
                    as_uninit(&mut out),
                    simd,
                )
            });
            eprintln!(
                "affine_resample (simd {simd}): {ns:.2} ns/pixel, {:.0} us/image",
                ns * (th * tw) as f64 / 1e3
            );
        }
        let lut = scale_lut(1.0 / 255.0);
        let ns = best(&mut || resize_nearest(&src, sh, sw, c, th, tw, &lut, as_uninit(&mut out)));
        eprintln!(
            "resize_nearest: {ns:.2} ns/pixel, {:.0} us/image",
            ns * (th * tw) as f64 / 1e3
        );
        for simd in [false, true] {
            let ns = best(&mut || {
                nearest_ycbcr(&src, sh, sw, th, tw, 1.0 / 255.0, as_uninit(&mut out), simd)
            });
            eprintln!(
                "resize_nearest_ycbcr (simd {simd}): {ns:.2} ns/pixel, {:.0} us/image",
                ns * (th * tw) as f64 / 1e3
            );
        }
    }
}
