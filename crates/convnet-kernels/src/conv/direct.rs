//! A direct forward kernel for layers with few input channels (the first
//! layer of an image model: `c = 3`, `k = kh*kw*c = 27`), where a packed
//! GEMM's inner dimension is too small to pay for its packing and for its
//! loads and stores of the output.
//!
//! Register blocks of [`MR`] output pixels by up to 32 filters (four
//! vectors of eight): for each patch position the block's weights are
//! loaded once and each pixel's input value is broadcast against them.
//! The output rows of a tile are cut into [`Run`]s of consecutive pixels of
//! one output row: pixels whose window lies inside the input read the
//! patch values in place (the pixels of a run are `sw * c` floats apart);
//! pixels whose window touches the padding are gathered into a small
//! zero-padded patch first. Bias and activation are applied to the
//! registers before they are stored.
//!
//! The kernel is written once over [`F32x8`] lanes and compiled twice: for
//! AVX2+FMA (chosen at run time when the CPU has it) and portably (plain
//! multiply and add, any CPU). Tests run both. The filter gradient's
//! direct kernel (`direct_filter.rs`) shares the runs.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::simd::Avx2;
use super::simd::{unrolled, F32x8, Portable};
use super::{im2col::im2col_tile, ConvGeometry, Epilogue, Tuning};

/// Whether the build may use 32 vector registers (AVX-512 enabled at
/// compile time, e.g. `target-cpu=native` on such a CPU): the register
/// blocks are sized for 32 registers then, for 16 otherwise.
pub(super) const WIDE_REGS: bool = cfg!(target_feature = "avx512f");
/// Output pixels per register block of the forward kernel (`MR x 4`
/// accumulators, the four weight vectors and the broadcasts in registers,
/// twice over: LLVM unrolls the loop over patch positions by two, and with
/// six pixels it spilled accumulators).
const MR: usize = if WIDE_REGS { 4 } else { 2 };
/// Most filters per register block: four vectors of eight.
pub(super) const NR: usize = 32;
/// Most input channels the direct kernels take.
const MAX_C: usize = 4;

/// Whether the direct kernels handle `g`: few input channels.
pub(super) fn applies(g: &ConvGeometry) -> bool {
    g.c <= MAX_C
}

/// Whether to run the AVX2+FMA build of the kernels.
pub(super) fn use_avx2(tuning: Tuning) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        tuning.simd && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = tuning;
        false
    }
}

/// The input offset of each patch position (row-major `ky, kx, ci`) from
/// the window's top-left value.
pub(super) fn patch_offsets(g: &ConvGeometry) -> Vec<usize> {
    let mut offsets = Vec::with_capacity(g.patch_len());
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            for ci in 0..g.c {
                offsets.push((ky * g.w + kx) * g.c + ci);
            }
        }
    }
    offsets
}

/// Consecutive output pixels of one output row, all of one kind.
#[derive(Clone, Copy, Debug)]
pub(super) struct Run {
    /// First pixel, as an index into the tile's rows.
    pub row: usize,
    /// Number of pixels.
    pub len: usize,
    /// `Some(base)`: every window lies inside the input and the first one's
    /// top-left value is `input[base]` (the next ones are `sw * c` further
    /// on); `None`: the windows touch the padding.
    pub inside: Option<usize>,
}

/// Cuts output rows `r0..r0 + rows` into [`Run`]s (appended to `runs`).
pub(super) fn runs(g: &ConvGeometry, r0: usize, rows: usize, runs: &mut Vec<Run>) {
    let per_img = g.oh * g.ow;
    // Output columns whose window lies inside horizontally: `lo..hi`.
    let lo = g.pads.left.div_ceil(g.sw).min(g.ow);
    let hi = if g.w + g.pads.left >= g.kw {
        ((g.w + g.pads.left - g.kw) / g.sw + 1).min(g.ow)
    } else {
        0
    };
    let end = r0 + rows;
    let mut r = r0;
    while r < end {
        let (img, rem) = (r / per_img, r % per_img);
        let (oy, ox) = (rem / g.ow, rem % g.ow);
        let stop = g.ow.min(ox + (end - r));
        let iy = (oy * g.sh)
            .checked_sub(g.pads.top)
            .filter(|&iy| iy + g.kh <= g.h);
        let mut push = |a: usize, b: usize, inside: Option<usize>| {
            if a < b {
                runs.push(Run {
                    row: r - r0 + (a - ox),
                    len: b - a,
                    inside,
                });
            }
        };
        match iy {
            Some(iy) if lo < hi => {
                let (a, b) = (ox.max(lo), stop.min(hi));
                push(ox, stop.min(lo), None);
                if a < b {
                    let base = ((img * g.h + iy) * g.w + a * g.sw - g.pads.left) * g.c;
                    push(a, b, Some(base));
                }
                push(ox.max(hi), stop, None);
            }
            _ => push(ox, stop, None),
        }
        r += stop - ox;
    }
}

// ---------------------------------------------------------------- forward

/// What every forward tile shares.
struct Forward<'a> {
    g: &'a ConvGeometry,
    input: &'a [f32],
    /// The kernel matrix `k x fp`, filters padded with zeros to `fp`.
    wp: Vec<f32>,
    fp: usize,
    /// The bias padded to `fp` (zeros without one).
    bias: Vec<f32>,
    relu: bool,
    /// Offset in the input of each patch position from the window's
    /// top-left value.
    offsets: Vec<usize>,
    /// Offsets of a contiguous patch: `0..k`.
    contiguous: Vec<usize>,
    /// One past the largest offset.
    span: usize,
}

/// Forward convolution by the direct kernel; lengths already checked.
pub(super) fn forward(
    g: &ConvGeometry,
    input: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
    tuning: Tuning,
) {
    let (k, f) = (g.patch_len(), g.f);
    let fp = f.div_ceil(8) * 8;
    let mut wp = vec![0.0; k * fp];
    for (dst, src) in wp.chunks_exact_mut(fp).zip(kernel.chunks_exact(f)) {
        dst[..f].copy_from_slice(src);
    }
    let mut bp = vec![0.0; fp];
    if let Some(b) = bias {
        bp[..f].copy_from_slice(b);
    }
    let offsets = patch_offsets(g);
    // Every offset is below its span (the kernels rely on it).
    let span = offsets.iter().max().map_or(0, |&o| o + 1);
    let ctx = Forward {
        g,
        input,
        wp,
        fp,
        bias: bp,
        relu: epilogue == Epilogue::Relu,
        offsets,
        contiguous: (0..k).collect(),
        span,
    };
    let tile = tuning.tile_rows.max(1);
    let avx2 = use_avx2(tuning);
    out.par_chunks_mut(tile * f).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(patch, runs): &mut (Vec<f32>, Vec<Run>), (t, out_tile)| {
            patch.resize(MR * k, 0.0);
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: `use_avx2` checked that the CPU has AVX2 and FMA.
                unsafe { forward_tile_avx2(&ctx, t * tile, out_tile, patch, runs) };
                return;
            }
            let _ = avx2;
            forward_tile::<Portable>(&ctx, t * tile, out_tile, patch, runs);
        },
    );
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_tile_avx2(
    ctx: &Forward,
    r0: usize,
    out: &mut [f32],
    patch: &mut [f32],
    runs: &mut Vec<Run>,
) {
    forward_tile::<Avx2>(ctx, r0, out, patch, runs);
}

/// Output rows `r0..` of one tile (`out`, `rows x f`).
#[inline(always)]
fn forward_tile<V: F32x8>(
    ctx: &Forward,
    r0: usize,
    out: &mut [f32],
    patch: &mut [f32],
    tile_runs: &mut Vec<Run>,
) {
    let g = ctx.g;
    let (k, f) = (g.patch_len(), g.f);
    let rows = out.len() / f;
    let step = g.sw * g.c;
    tile_runs.clear();
    runs(g, r0, rows, tile_runs);
    for run in tile_runs.iter() {
        let mut i = 0;
        while i < run.len {
            let m = MR.min(run.len - i);
            let (src, base, step, offsets, span): (&[f32], usize, usize, &[usize], usize) =
                match run.inside {
                    Some(base) => (ctx.input, base + i * step, step, &ctx.offsets, ctx.span),
                    None => {
                        im2col_tile(g, ctx.input, r0 + run.row + i, m, patch);
                        (patch, 0, k, &ctx.contiguous, k)
                    }
                };
            let dst = &mut out[(run.row + i) * f..(run.row + i + m) * f];
            match m {
                6 => forward_pixels::<V, 6>(ctx, src, base, step, offsets, span, dst),
                5 => forward_pixels::<V, 5>(ctx, src, base, step, offsets, span, dst),
                4 => forward_pixels::<V, 4>(ctx, src, base, step, offsets, span, dst),
                3 => forward_pixels::<V, 3>(ctx, src, base, step, offsets, span, dst),
                2 => forward_pixels::<V, 2>(ctx, src, base, step, offsets, span, dst),
                _ => forward_pixels::<V, 1>(ctx, src, base, step, offsets, span, dst),
            }
            i += m;
        }
    }
}

/// `R` output pixels (`dst`, `R x f`), all filters: pixel `m`'s patch
/// value at position `j` is `src[base + m * step + offsets[j]]`.
#[inline(always)]
fn forward_pixels<V: F32x8, const R: usize>(
    ctx: &Forward,
    src: &[f32],
    base: usize,
    step: usize,
    offsets: &[usize],
    span: usize,
    dst: &mut [f32],
) {
    // Every read below is `src[base + m * step + offsets[j]]` with
    // `m < R` and `offsets[j] < span`: one check here instead of one per
    // read.
    assert!(base + (R - 1) * step + span <= src.len());
    // (`offsets[j] < span` holds by construction: see `forward`.)
    assert!(offsets.len() * ctx.fp <= ctx.wp.len() && dst.len() == R * ctx.g.f);
    let src = &src[base..];
    let mut c0 = 0;
    while c0 < ctx.fp {
        match (ctx.fp - c0).min(NR) / 8 {
            4 => V::isolated(|| forward_block::<V, R, 4>(ctx, src, step, offsets, c0, dst)),
            3 => V::isolated(|| forward_block::<V, R, 3>(ctx, src, step, offsets, c0, dst)),
            2 => V::isolated(|| forward_block::<V, R, 2>(ctx, src, step, offsets, c0, dst)),
            _ => V::isolated(|| forward_block::<V, R, 1>(ctx, src, step, offsets, c0, dst)),
        }
        c0 += NR;
    }
}

/// Filters `c0..c0 + 8 NV` of `R` pixels (see [`forward_pixels`], whose
/// checks make the reads in bounds).
#[inline(always)]
fn forward_block<V: F32x8, const R: usize, const NV: usize>(
    ctx: &Forward,
    src: &[f32],
    step: usize,
    offsets: &[usize],
    c0: usize,
    dst: &mut [f32],
) {
    let (f, fp) = (ctx.g.f, ctx.fp);
    let mut acc = [[V::zero(); NV]; R];
    let w = &ctx.wp[c0..];
    for (j, &o) in offsets.iter().enumerate() {
        // SAFETY: `j * fp + c0 + 8 NV <= offsets.len() * fp <= wp.len()`
        // (checked by `forward_pixels`; `c0 + 8 NV <= fp`).
        let wv: [V; NV] = std::array::from_fn(|v| unsafe { load(w, j * fp + v * 8) });
        unrolled!(R, |m| {
            // SAFETY: `m * step + o < (R - 1) * step + span`, within `src`
            // (checked by `forward_pixels`).
            let a = V::splat(unsafe { *src.get_unchecked(m * step + o) });
            for v in 0..NV {
                acc[m][v] = a.mul_add(wv[v], acc[m][v]);
            }
        });
    }
    let bias: [V; NV] =
        std::array::from_fn(|v| V::load(ctx.bias[c0 + 8 * v..][..8].try_into().unwrap()));
    let cols = (8 * NV).min(f - c0);
    for (m, acc) in acc.iter().enumerate() {
        let row = &mut dst[m * f + c0..m * f + c0 + cols];
        for v in 0..NV {
            let mut x = acc[v].add(bias[v]);
            if ctx.relu {
                x = x.relu();
            }
            if cols == 8 * NV {
                x.store((&mut row[v * 8..v * 8 + 8]).try_into().unwrap());
            } else {
                let mut tmp = [0.0f32; 8];
                x.store(&mut tmp);
                let n = cols.saturating_sub(v * 8).min(8);
                row[v * 8..v * 8 + n].copy_from_slice(&tmp[..n]);
            }
        }
    }
}

/// Eight values of `s` from `at`.
///
/// # Safety
/// `at + 8 <= s.len()`.
#[inline(always)]
pub(super) unsafe fn load<V: F32x8>(s: &[f32], at: usize) -> V {
    debug_assert!(at + 8 <= s.len());
    // SAFETY: the caller guarantees the eight values are in `s`.
    V::load(unsafe { &*(s.as_ptr().add(at) as *const [f32; 8]) })
}
