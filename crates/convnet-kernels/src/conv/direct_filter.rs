//! A direct filter-gradient kernel for layers with few input channels (the
//! first layer of an image model: `k = kh*kw*c = 27`, `f = 32`), where
//! `dW = im2col(x)^T dY` is a GEMM with a tiny `k x f` result and a huge
//! summed dimension (every output pixel), a shape a general GEMM handles
//! badly.
//!
//! `dW` is computed in register blocks of up to
//! [`FilterBlocks::POSITIONS`] patch positions by up to
//! [`FilterBlocks::VECS`] vectors of filters, each block accumulated over
//! all the pixels of a tile: per pixel, the block's row of `dY` is loaded
//! once as vectors and each patch value is broadcast against it. A block's
//! positions lie in one row of the kernel window, so they are consecutive
//! values of the input (`kw * c` of them per window row): one pointer per
//! pixel reaches them all. Patch values are read in place for windows
//! inside the input (the [`Run`]s of `direct.rs`) and from an im2col copy
//! for windows touching the padding. The order of the sums depends only
//! on the tile, never on the threads or the block shapes, so the caller's
//! fixed grouping of tiles keeps the result reproducible, and the AVX-512
//! and AVX2 builds give bitwise equal results.
//!
//! Written once over [`Lanes`], compiled for AVX-512F, for AVX2+FMA and
//! portably.

#[cfg(target_arch = "x86_64")]
use super::simd::Avx2;
#[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
use super::simd::Avx512;
use super::simd::{unrolled, with_const, Isa, Lanes, Portable};
use super::{
    direct::{runs, Run, WIDE_REGS},
    im2col::im2col_tile,
    ConvGeometry, Tuning,
};

/// The register blocks of one build of the kernel.
trait FilterBlocks: Lanes {
    /// Most patch positions per block.
    const POSITIONS: usize;
    /// Most vectors of filters per block.
    const VECS: usize;
    /// [`Pass::block`] for `j` positions (`1..=POSITIONS`) and `nv`
    /// vectors (`1..=VECS`), in a function of its own.
    fn block(j: usize, nv: usize, p: &Pass, at: Positions, c0: usize, dw: &mut [f32]);
}

#[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
impl FilterBlocks for Avx512 {
    /// Up to 12 x 2 accumulators (32 filters), the two vectors of `dY` and
    /// a broadcast: 27 of the 32 registers. (A 3x3 kernel on 3 channels
    /// takes three blocks of 9 x 2.)
    const POSITIONS: usize = 12;
    const VECS: usize = 2;
    fn block(j: usize, nv: usize, p: &Pass, at: Positions, c0: usize, dw: &mut [f32]) {
        with_const!(nv, [1 2], |NV| with_const!(
            j,
            [1 2 3 4 5 6 7 8 9 10 11 12],
            |J| Self::isolated(|| p.block::<Self, J, NV>(at, c0, dw))
        ))
    }
}

/// Patch positions per AVX2 or portable block (`JR x NF / 8`
/// accumulators, a row of `dY` and a broadcast in registers). With 16
/// registers (AVX2 without AVX-512), blocks of 3 x 32 and 6 x 16 spilled
/// and ran slower than im2col + GEMM; 4 x 16 and 2 x 32 about 1.4x faster
/// than those (measured on a Zen 4 with an `x86-64-v3` build).
const JR: usize = if WIDE_REGS { 6 } else { 4 };
/// Vectors of eight filters per AVX2 or portable block.
const NV8: usize = if WIDE_REGS { 4 } else { 2 };

#[cfg(target_arch = "x86_64")]
impl FilterBlocks for Avx2 {
    const POSITIONS: usize = JR;
    const VECS: usize = NV8;
    fn block(j: usize, nv: usize, p: &Pass, at: Positions, c0: usize, dw: &mut [f32]) {
        with_const!(nv, [1 2 3 4], |NV| with_const!(j, [1 2 3 4 5 6], |J| {
            Self::isolated(|| p.block::<Self, J, NV>(at, c0, dw))
        }))
    }
}

impl FilterBlocks for Portable {
    const POSITIONS: usize = JR;
    const VECS: usize = NV8;
    fn block(j: usize, nv: usize, p: &Pass, at: Positions, c0: usize, dw: &mut [f32]) {
        with_const!(nv, [1 2 3 4], |NV| with_const!(j, [1 2 3 4 5 6], |J| {
            Self::isolated(|| p.block::<Self, J, NV>(at, c0, dw))
        }))
    }
}

/// Consecutive patch positions of one window row.
#[derive(Clone, Copy, Debug)]
struct Positions {
    /// The first position (row-major `ky, kx, ci`).
    j0: usize,
    /// Its input offset from the window's top-left value.
    offset: usize,
}

/// What every tile of one filter-gradient call shares.
pub(super) struct FilterGradient<'a> {
    g: &'a ConvGeometry,
    input: &'a [f32],
    /// The register blocks' positions: `(first, count)`.
    blocks: Vec<(Positions, usize)>,
    isa: Isa,
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
    /// `dY` rows padded to whole vectors of filters (when `f` is not).
    dyp: Vec<f32>,
}

impl<'a> FilterGradient<'a> {
    pub(super) fn new(g: &'a ConvGeometry, input: &'a [f32], tuning: Tuning) -> Self {
        Self::with_isa(g, input, Isa::detect(tuning.simd))
    }

    /// The kernel built for `isa`, which the CPU must run.
    fn with_isa(g: &'a ConvGeometry, input: &'a [f32], isa: Isa) -> Self {
        let most = match isa {
            #[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
            Isa::Avx512 => Avx512::POSITIONS,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => Avx2::POSITIONS,
            Isa::Portable => Portable::POSITIONS,
        };
        // Each window row's `kw * c` positions, in as few blocks as
        // fit, of sizes differing by at most one.
        let row = g.kw * g.c;
        let parts = row.div_ceil(most);
        let mut blocks = Vec::new();
        for ky in 0..g.kh {
            for b in 0..parts {
                let (lo, hi) = (b * row / parts, (b + 1) * row / parts);
                let at = Positions {
                    j0: ky * row + lo,
                    offset: ky * g.w * g.c + lo,
                };
                blocks.push((at, hi - lo));
            }
        }
        FilterGradient {
            g,
            input,
            blocks,
            isa,
        }
    }

    /// Adds the filter gradient of output rows `r0..` (`dy`, `rows x f`)
    /// to `dw` (`k x f`).
    pub(super) fn add_tile(&self, r0: usize, dy: &[f32], dw: &mut [f32], s: &mut Scratch) {
        match self.isa {
            // SAFETY: `isa` is a build the CPU runs (`Isa::detect`).
            #[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
            Isa::Avx512 => unsafe { add_tile_avx512(self, r0, dy, dw, s) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { add_tile_avx2(self, r0, dy, dw, s) },
            Isa::Portable => add_tile::<Portable>(self, r0, dy, dw, s),
        }
    }
}

/// # Safety
/// The CPU must have AVX-512F.
#[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
#[target_feature(enable = "avx512f")]
unsafe fn add_tile_avx512(
    ctx: &FilterGradient,
    r0: usize,
    dy: &[f32],
    dw: &mut [f32],
    s: &mut Scratch,
) {
    add_tile::<Avx512>(ctx, r0, dy, dw, s);
}

/// # Safety
/// The CPU must have AVX2 and FMA.
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
fn add_tile<V: FilterBlocks>(
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
    let fp = f.div_ceil(V::N) * V::N;
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
        cols: &s.cols,
        runs: &s.runs,
        pos: &s.pos,
        dy,
        fp,
    };
    let mut c0 = 0;
    while c0 < fp {
        let nv = ((fp - c0) / V::N).min(V::VECS);
        for &(at, j) in &ctx.blocks {
            V::block(j, nv, &p, at, c0, dw);
        }
        c0 += nv * V::N;
    }
}

/// One tile's data, as the register blocks read it.
struct Pass<'a> {
    g: &'a ConvGeometry,
    input: &'a [f32],
    cols: &'a [f32],
    runs: &'a [Run],
    pos: &'a [usize],
    /// `rows x fp`.
    dy: &'a [f32],
    fp: usize,
}

impl Pass<'_> {
    /// Adds `dW[j0..j0 + J][c0..c0 + NV lanes]` (the filters below `f`)
    /// of the tile to `dw`, `at` giving `j0`.
    #[inline(always)]
    fn block<V: Lanes, const J: usize, const NV: usize>(
        &self,
        at: Positions,
        c0: usize,
        dw: &mut [f32],
    ) {
        let (k, f, fp) = (self.g.patch_len(), self.g.f, self.fp);
        let step = self.g.sw * self.g.c;
        let mut acc = [[V::zero(); NV]; J];
        assert!(c0 + NV * V::N <= fp);
        for (run, &p) in self.runs.iter().zip(self.pos) {
            let (src, base, step) = match run.inside {
                Some(base) => (self.input, base + at.offset, step),
                None => (self.cols, p * k + at.j0, k),
            };
            if run.len == 0 {
                continue;
            }
            // One check per run for every read below: pixel `i < len`
            // reads `src[base + i * step + j]` (`j < J`) and
            // `dy[(row + i) * fp + c0 ..][..NV lanes]`.
            assert!(base + (run.len - 1) * step + J <= src.len());
            assert!((run.row + run.len) * fp <= self.dy.len());
            let src = &src[base..];
            let dy = &self.dy[run.row * fp + c0..];
            // A function of its own per run: with the loop over runs
            // around it, LLVM copied every accumulator between registers
            // once per pixel.
            V::isolated(|| run_sums::<V, J, NV>(&mut acc, src, step, dy, fp, run.len));
        }
        let cols = (NV * V::N).min(f - c0);
        for (j, acc) in acc.iter().enumerate() {
            let row = &mut dw[(at.j0 + j) * f + c0..(at.j0 + j) * f + c0 + cols];
            for (v, a) in acc.iter().enumerate() {
                let mut tmp = [0.0f32; 16];
                a.store(&mut tmp);
                let n = cols.saturating_sub(v * V::N).min(V::N);
                row[v * V::N..v * V::N + n]
                    .iter_mut()
                    .zip(&tmp)
                    .for_each(|(d, &t)| *d += t);
            }
        }
    }
}

/// Adds to `acc[j]` the sum over pixels `i < len` of `src[i * step + j]`
/// times `dy[i * fp..][..NV lanes]`; the caller has checked that these
/// reads are in bounds.
#[inline(always)]
fn run_sums<V: Lanes, const J: usize, const NV: usize>(
    acc: &mut [[V; NV]; J],
    src: &[f32],
    step: usize,
    dy: &[f32],
    fp: usize,
    len: usize,
) {
    let mut sums = *acc;
    for i in 0..len {
        // SAFETY: `i * fp + NV lanes <= (len - 1) * fp + fp - c0`, within
        // `dy` (checked by `Pass::block`).
        let d: [V; NV] = std::array::from_fn(|v| unsafe { V::load(dy, i * fp + v * V::N) });
        unrolled!(J, |j| {
            // SAFETY: `i * step + j < (len - 1) * step + J`, within `src`
            // (checked by `Pass::block`).
            let a = V::splat(unsafe { *src.get_unchecked(i * step + j) });
            for v in 0..NV {
                sums[j][v] = a.mul_add(d[v], sums[j][v]);
            }
        });
    }
    *acc = sums;
}

#[cfg(test)]
mod tests {
    //! The builds of the filter-gradient kernel against each other, on the
    //! shapes of `direct.rs`'s tests: the AVX-512 and AVX2 builds sum every
    //! value in the same order whatever their block shapes, so their
    //! results must be bitwise equal; the portable build (no FMA) close.

    use super::super::direct::tests::{assert_bitwise, assert_close, shapes, values};
    use super::*;

    /// `dW` by `isa`, tile by tile in order.
    fn filter_gradient(g: &ConvGeometry, x: &[f32], dy: &[f32], tile: usize, isa: Isa) -> Vec<f32> {
        let d = FilterGradient::with_isa(g, x, isa);
        let mut dw = vec![0.0; g.patch_len() * g.f];
        let mut scratch = Scratch::default();
        for (t, dy) in dy.chunks(tile * g.f).enumerate() {
            d.add_tile(t * tile, dy, &mut dw, &mut scratch);
        }
        dw
    }

    #[test]
    fn every_build_of_the_filter_gradient_kernel_agrees() {
        let isas = Isa::available();
        for (s, g) in shapes().iter().enumerate() {
            let x = values(g.input_shape().iter().product(), 3 * s as u64);
            let dy = values(g.output_shape().iter().product(), 3 * s as u64 + 1);
            for tile in [1, 7, 50, g.rows()] {
                let portable = filter_gradient(g, &x, &dy, tile, Isa::Portable);
                let vector: Vec<(Isa, Vec<f32>)> = isas
                    .iter()
                    .filter(|&&i| i != Isa::Portable)
                    .map(|&i| (i, filter_gradient(g, &x, &dy, tile, i)))
                    .collect();
                for (isa, dw) in &vector {
                    let what = format!("{isa:?} {g:?} tile {tile}");
                    assert_close(dw, &portable, 1e-4, &what);
                    assert_bitwise(dw, &vector[0].1, &what);
                }
            }
        }
    }
}
