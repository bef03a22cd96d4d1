//! A direct forward kernel for layers with few input channels (the first
//! layer of an image model: `c = 3`, `k = kh*kw*c = 27`), where a packed
//! GEMM's inner dimension is too small to pay for its packing and for its
//! loads and stores of the output.
//!
//! Register blocks of `MR` output pixels by `NR` filters; the patch values
//! are read straight from the input through a table of offsets (no im2col),
//! except for pixels whose window touches the padding, which are gathered
//! into a small zero-padded patch first. Bias and activation are applied to
//! the registers before they are stored.
//!
//! The kernel is written once over [`F32x8`] lanes and compiled twice: for
//! AVX2+FMA (chosen at run time when the CPU has it) and portably (plain
//! multiply and add, any CPU). Tests run both.
//!
//! Tried and dropped (slower than im2col + GEMM here, measured): direct
//! input and filter gradients for few channels, a gathered dot product per
//! input pixel and an im2col-block outer product with `6 x 16` register
//! blocks: both spent their time on per-tap overhead and im2col copies.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::simd::Avx2;
use super::simd::{F32x8, Portable};
use super::{im2col::im2col_tile, ConvGeometry, Epilogue, Tuning};

/// Output pixels per register block of the forward kernel (`MR x NV`
/// accumulators; with six, LLVM's scheduling spilled registers).
const MR: usize = 4;
/// Filters per register block: `NV` vectors of eight.
const NR: usize = 16;
const NV: usize = NR / 8;
/// Most input channels the direct kernel takes.
const MAX_C: usize = 4;

/// Whether the direct kernel handles `g`: few input channels.
pub(super) fn applies(g: &ConvGeometry) -> bool {
    g.c <= MAX_C
}

/// Whether to run the AVX2+FMA build of the kernels.
fn use_avx2(tuning: Tuning) -> bool {
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

/// `f` rounded up to whole register blocks.
fn padded(f: usize, block: usize) -> usize {
    f.div_ceil(block) * block
}

/// Walks output pixels `(img, oy, ox)` in row order without divisions.
#[derive(Clone, Copy)]
struct Cursor {
    img: usize,
    y: usize,
    x: usize,
}

impl Cursor {
    fn at(row: usize, height: usize, width: usize) -> Self {
        let per_img = height * width;
        let rem = row % per_img;
        Cursor {
            img: row / per_img,
            y: rem / width,
            x: rem % width,
        }
    }

    #[inline(always)]
    fn advance(&mut self, height: usize, width: usize) {
        self.x += 1;
        if self.x == width {
            self.x = 0;
            self.y += 1;
            if self.y == height {
                self.y = 0;
                self.img += 1;
            }
        }
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
    /// top-left pixel.
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
    let (k, f, c) = (g.patch_len(), g.f, g.c);
    let fp = padded(f, NR);
    let mut wp = vec![0.0; k * fp];
    for (dst, src) in wp.chunks_exact_mut(fp).zip(kernel.chunks_exact(f)) {
        dst[..f].copy_from_slice(src);
    }
    let mut bp = vec![0.0; fp];
    if let Some(b) = bias {
        bp[..f].copy_from_slice(b);
    }
    let mut offsets = Vec::with_capacity(k);
    for ky in 0..g.kh {
        for kx in 0..g.kw {
            for ci in 0..c {
                offsets.push((ky * g.w + kx) * c + ci);
            }
        }
    }
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
        Vec::new,
        |patch: &mut Vec<f32>, (t, out_tile)| {
            patch.resize(MR * k, 0.0);
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: `use_avx2` checked that the CPU has AVX2 and FMA.
                unsafe { forward_tile_avx2(&ctx, t * tile, out_tile, patch) };
                return;
            }
            let _ = avx2;
            forward_tile::<Portable>(&ctx, t * tile, out_tile, patch);
        },
    );
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_tile_avx2(ctx: &Forward, r0: usize, out: &mut [f32], patch: &mut [f32]) {
    forward_tile::<Avx2>(ctx, r0, out, patch);
}

/// Output rows `r0..` of one tile (`out`, `rows x f`).
#[inline(always)]
fn forward_tile<V: F32x8>(ctx: &Forward, r0: usize, out: &mut [f32], patch: &mut [f32]) {
    let g = ctx.g;
    let (k, f) = (g.patch_len(), g.f);
    let rows = out.len() / f;
    let mut cur = Cursor::at(r0, g.oh, g.ow);
    // The input index of the window's top-left pixel of the current row, if
    // the whole window lies inside the input.
    let inside = |cur: &Cursor| -> Option<usize> {
        let iy = (cur.y * g.sh).checked_sub(g.pads.top)?;
        let ix = (cur.x * g.sw).checked_sub(g.pads.left)?;
        (iy + g.kh <= g.h && ix + g.kw <= g.w).then(|| ((cur.img * g.h + iy) * g.w + ix) * g.c)
    };
    let mut i = 0;
    while i < rows {
        // Gather up to MR consecutive rows of the same kind: windows inside
        // the input (read in place) or touching the padding (gathered).
        let mut bases = [0usize; MR];
        let first = inside(&cur);
        let mut m = 0;
        while m < MR && i + m < rows {
            match (first, inside(&cur)) {
                (Some(_), Some(base)) => bases[m] = base,
                (None, None) => {
                    im2col_tile(g, ctx.input, r0 + i + m, 1, &mut patch[m * k..]);
                    bases[m] = m * k;
                }
                _ => break,
            }
            cur.advance(g.oh, g.ow);
            m += 1;
        }
        let (src, offsets, span): (&[f32], &[usize], usize) = match first {
            Some(_) => (ctx.input, &ctx.offsets, ctx.span),
            None => (patch, &ctx.contiguous, k),
        };
        let dst = &mut out[i * f..(i + m) * f];
        match m {
            4 => forward_block::<V, 4>(ctx, src, offsets, span, &bases, dst),
            3 => forward_block::<V, 3>(ctx, src, offsets, span, &bases, dst),
            2 => forward_block::<V, 2>(ctx, src, offsets, span, &bases, dst),
            _ => forward_block::<V, 1>(ctx, src, offsets, span, &bases, dst),
        }
        i += m;
    }
}

/// `R` output rows (`dst`, `R x f`): row `m`'s patch value at position `j`
/// is `src[bases[m] + offsets[j]]`.
#[inline(always)]
fn forward_block<V: F32x8, const R: usize>(
    ctx: &Forward,
    src: &[f32],
    offsets: &[usize],
    span: usize,
    bases: &[usize; MR],
    dst: &mut [f32],
) {
    let f = ctx.g.f;
    // Every read below is `src[bases[m] + offsets[j]]` with
    // `offsets[j] < span`: one check here instead of one per read.
    for &base in &bases[..R] {
        assert!(base + span <= src.len());
    }
    assert!(offsets.iter().all(|&o| o < span));
    for c0 in (0..ctx.fp).step_by(NR) {
        let mut acc = [[V::zero(); NV]; R];
        for (&o, wrow) in offsets.iter().zip(ctx.wp.chunks_exact(ctx.fp)) {
            let wv: [V; NV] = load_row(&wrow[c0..c0 + NR]);
            for (m, acc) in acc.iter_mut().enumerate() {
                // SAFETY: `bases[m] + o < bases[m] + span <= src.len()`
                // (asserted above).
                let a = V::splat(unsafe { *src.get_unchecked(bases[m] + o) });
                for v in 0..NV {
                    acc[v] = a.mul_add(wv[v], acc[v]);
                }
            }
        }
        let bias: [V; NV] = load_row(&ctx.bias[c0..c0 + NR]);
        let cols = NR.min(f - c0);
        for (m, acc) in acc.iter().enumerate() {
            let mut row = [0.0f32; NR];
            for v in 0..NV {
                let mut x = acc[v].add(bias[v]);
                if ctx.relu {
                    x = x.relu();
                }
                x.store((&mut row[v * 8..v * 8 + 8]).try_into().unwrap());
            }
            dst[m * f + c0..m * f + c0 + cols].copy_from_slice(&row[..cols]);
        }
    }
}

/// `N` vectors from `s` (`8 N` values).
#[inline(always)]
fn load_row<V: F32x8, const N: usize>(s: &[f32]) -> [V; N] {
    let s = &s[..8 * N];
    std::array::from_fn(|v| V::load(s[v * 8..v * 8 + 8].try_into().unwrap()))
}
