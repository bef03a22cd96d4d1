//! A direct filter-gradient kernel for layers with few input channels (the
//! first layer of an image model: `k = kh*kw*c = 27`, `f = 32`), where
//! `dW = im2col(x)^T dY` is a GEMM with a tiny `k x f` result and a huge
//! summed dimension (every output pixel), a shape a general GEMM handles
//! badly.
//!
//! `dW` is computed in register blocks of [`JR`] patch positions by up to
//! [`NF`] filters (6 x 32 with 32 vector registers), each block accumulated over all the
//! pixels of a tile: per pixel, the block's row of `dY` is loaded once as
//! vectors and each patch value is broadcast against it. Patch values are
//! read in place for windows inside the input (the [`Run`]s of
//! `direct.rs`) and from an im2col copy for windows touching the padding.
//! The order of the sums depends only on the tile, never on the threads,
//! so the caller's fixed grouping of tiles keeps the result reproducible.
//!
//! Written once over [`F32x8`] lanes, compiled for AVX2+FMA and portably.

#[cfg(target_arch = "x86_64")]
use super::simd::Avx2;
use super::simd::{unrolled, F32x8, Portable};
use super::{
    direct::{load, patch_offsets, runs, use_avx2, Run, NR, WIDE_REGS},
    im2col::im2col_tile,
    ConvGeometry, Tuning,
};

/// Patch positions per register block (`JR x NF / 8` accumulators, a row
/// of `dY` and a broadcast in registers). With 16 registers (AVX2 without
/// AVX-512), blocks of 3 x 32 and 6 x 16 spilled and ran slower than
/// im2col + GEMM; 4 x 16 and 2 x 32 about 1.4x faster than those (measured
/// on this Zen 4 with an `x86-64-v3` build).
const JR: usize = if WIDE_REGS { 6 } else { 4 };
/// Most filters per register block.
const NF: usize = if WIDE_REGS { NR } else { 16 };

/// What every tile of one filter-gradient call shares.
pub(super) struct FilterGradient<'a> {
    g: &'a ConvGeometry,
    input: &'a [f32],
    /// Input offset of each patch position from the window's top-left value.
    offsets: Vec<usize>,
    avx2: bool,
}

/// Per-task buffers, reused from tile to tile.
#[derive(Default)]
pub(super) struct Scratch {
    runs: Vec<Run>,
    /// Row of each run's first pixel in `cols` (windows touching the
    /// padding; unused for the others).
    pos: Vec<usize>,
    /// im2col of the pixels whose windows touch the padding.
    cols: Vec<f32>,
    /// `dY` rows padded to a multiple of eight filters (when `f` is not).
    dyp: Vec<f32>,
}

impl<'a> FilterGradient<'a> {
    pub(super) fn new(g: &'a ConvGeometry, input: &'a [f32], tuning: Tuning) -> Self {
        FilterGradient {
            g,
            input,
            offsets: patch_offsets(g),
            avx2: use_avx2(tuning),
        }
    }

    /// Adds the filter gradient of output rows `r0..` (`dy`, `rows x f`)
    /// to `dw` (`k x f`).
    pub(super) fn add_tile(&self, r0: usize, dy: &[f32], dw: &mut [f32], s: &mut Scratch) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: `use_avx2` checked that the CPU has AVX2 and FMA.
            unsafe { add_tile_avx2(self, r0, dy, dw, s) };
            return;
        }
        add_tile::<Portable>(self, r0, dy, dw, s);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn add_tile_avx2(
    ctx: &FilterGradient,
    r0: usize,
    dy: &[f32],
    dw: &mut [f32],
    s: &mut Scratch,
) {
    add_tile::<Avx2>(ctx, r0, dy, dw, s);
}

#[inline(always)]
fn add_tile<V: F32x8>(
    ctx: &FilterGradient,
    r0: usize,
    dy: &[f32],
    dw: &mut [f32],
    s: &mut Scratch,
) {
    let g = ctx.g;
    let (k, f) = (g.patch_len(), g.f);
    let rows = dy.len() / f;
    assert_eq!(dw.len(), k * f);
    s.runs.clear();
    runs(g, r0, rows, &mut s.runs);
    // Windows touching the padding: their patches, one after the other.
    s.pos.clear();
    let mut n = 0;
    for run in &s.runs {
        s.pos.push(n);
        if run.inside.is_none() {
            n += run.len;
        }
    }
    s.cols.resize(n * k, 0.0);
    for (run, &p) in s.runs.iter().zip(&s.pos) {
        if run.inside.is_none() {
            im2col_tile(g, ctx.input, r0 + run.row, run.len, &mut s.cols[p * k..]);
        }
    }
    // `dY` with whole vectors of filters.
    let fp = f.div_ceil(8) * 8;
    let dy: &[f32] = if fp == f {
        dy
    } else {
        s.dyp.clear();
        s.dyp.resize(rows * fp, 0.0);
        for (d, src) in s.dyp.chunks_exact_mut(fp).zip(dy.chunks_exact(f)) {
            d[..f].copy_from_slice(src);
        }
        &s.dyp
    };
    let p = Pass {
        g,
        input: ctx.input,
        offsets: &ctx.offsets,
        cols: &s.cols,
        runs: &s.runs,
        pos: &s.pos,
        dy,
        fp,
    };
    for c0 in (0..fp).step_by(NF) {
        for j0 in (0..k).step_by(JR) {
            match ((k - j0).min(JR), (fp - c0).min(NF) / 8) {
                (6, 4) => V::isolated(|| p.block::<V, 6, 4>(j0, c0, dw)),
                (6, 3) => V::isolated(|| p.block::<V, 6, 3>(j0, c0, dw)),
                (6, 2) => V::isolated(|| p.block::<V, 6, 2>(j0, c0, dw)),
                (6, _) => V::isolated(|| p.block::<V, 6, 1>(j0, c0, dw)),
                (5, 4) => V::isolated(|| p.block::<V, 5, 4>(j0, c0, dw)),
                (5, 3) => V::isolated(|| p.block::<V, 5, 3>(j0, c0, dw)),
                (5, 2) => V::isolated(|| p.block::<V, 5, 2>(j0, c0, dw)),
                (5, _) => V::isolated(|| p.block::<V, 5, 1>(j0, c0, dw)),
                (4, 4) => V::isolated(|| p.block::<V, 4, 4>(j0, c0, dw)),
                (4, 3) => V::isolated(|| p.block::<V, 4, 3>(j0, c0, dw)),
                (4, 2) => V::isolated(|| p.block::<V, 4, 2>(j0, c0, dw)),
                (4, _) => V::isolated(|| p.block::<V, 4, 1>(j0, c0, dw)),
                (3, 4) => V::isolated(|| p.block::<V, 3, 4>(j0, c0, dw)),
                (3, 3) => V::isolated(|| p.block::<V, 3, 3>(j0, c0, dw)),
                (3, 2) => V::isolated(|| p.block::<V, 3, 2>(j0, c0, dw)),
                (3, _) => V::isolated(|| p.block::<V, 3, 1>(j0, c0, dw)),
                (2, 4) => V::isolated(|| p.block::<V, 2, 4>(j0, c0, dw)),
                (2, 3) => V::isolated(|| p.block::<V, 2, 3>(j0, c0, dw)),
                (2, 2) => V::isolated(|| p.block::<V, 2, 2>(j0, c0, dw)),
                (2, _) => V::isolated(|| p.block::<V, 2, 1>(j0, c0, dw)),
                (_, 4) => V::isolated(|| p.block::<V, 1, 4>(j0, c0, dw)),
                (_, 3) => V::isolated(|| p.block::<V, 1, 3>(j0, c0, dw)),
                (_, 2) => V::isolated(|| p.block::<V, 1, 2>(j0, c0, dw)),
                (_, _) => V::isolated(|| p.block::<V, 1, 1>(j0, c0, dw)),
            }
        }
    }
}

/// One tile's data, as the register blocks read it.
struct Pass<'a> {
    g: &'a ConvGeometry,
    input: &'a [f32],
    offsets: &'a [usize],
    cols: &'a [f32],
    runs: &'a [Run],
    pos: &'a [usize],
    /// `rows x fp`.
    dy: &'a [f32],
    fp: usize,
}

impl Pass<'_> {
    /// Adds `dW[j0..j0 + J][c0..c0 + 8 NV]` (the filters below `f`) of the
    /// tile to `dw`.
    #[inline(always)]
    fn block<V: F32x8, const J: usize, const NV: usize>(
        &self,
        j0: usize,
        c0: usize,
        dw: &mut [f32],
    ) {
        let (k, f, fp) = (self.g.patch_len(), self.g.f, self.fp);
        let step = self.g.sw * self.g.c;
        let inside: [usize; J] = std::array::from_fn(|j| self.offsets[j0 + j]);
        let gathered: [usize; J] = std::array::from_fn(|j| j0 + j);
        let mut acc = [[V::zero(); NV]; J];
        assert!(c0 + 8 * NV <= fp);
        for (run, &p) in self.runs.iter().zip(self.pos) {
            let (src, base, step, offs) = match run.inside {
                Some(base) => (self.input, base, step, &inside),
                None => (self.cols, p * k, k, &gathered),
            };
            if run.len == 0 {
                continue;
            }
            // One check per run for every read below: pixel `i < len`
            // reads `src[base + i * step + offs[j]]` and
            // `dy[(row + i) * fp + c0 ..][..8 NV]`.
            let span = offs.iter().max().map_or(0, |&o| o + 1);
            assert!(base + (run.len - 1) * step + span <= src.len());
            assert!((run.row + run.len) * fp <= self.dy.len());
            let src = &src[base..];
            let dy = &self.dy[run.row * fp + c0..];
            for i in 0..run.len {
                // SAFETY: `i * fp + 8 NV <= (len - 1) * fp + fp - c0`,
                // within `dy` (checked above).
                let d: [V; NV] = std::array::from_fn(|v| unsafe { load(dy, i * fp + v * 8) });
                unrolled!(J, |j| {
                    // SAFETY: `i * step + offs[j] < (len - 1) * step + span`,
                    // within `src` (checked above).
                    let a = V::splat(unsafe { *src.get_unchecked(i * step + offs[j]) });
                    for v in 0..NV {
                        acc[j][v] = a.mul_add(d[v], acc[j][v]);
                    }
                });
            }
        }
        let cols = (8 * NV).min(f - c0);
        for (j, acc) in acc.iter().enumerate() {
            let row = &mut dw[(j0 + j) * f + c0..(j0 + j) * f + c0 + cols];
            for (v, a) in acc.iter().enumerate() {
                let mut tmp = [0.0f32; 8];
                a.store(&mut tmp);
                let n = cols.saturating_sub(v * 8).min(8);
                row[v * 8..v * 8 + n]
                    .iter_mut()
                    .zip(&tmp)
                    .for_each(|(d, &t)| *d += t);
            }
        }
    }
}
