//! A direct forward kernel for layers with few input channels (the first
//! layer of an image model: `c = 3`, `k = kh*kw*c = 27`), where a packed
//! GEMM's inner dimension is too small to pay for its packing and for its
//! loads and stores of the output.
//!
//! Register blocks of up to [`ForwardBlocks::PIXELS`] output pixels by up
//! to [`ForwardBlocks::VECS`] vectors of filters (12 x 32 with AVX-512, 4
//! x 32 with AVX2): for each patch position the block's weights are
//! loaded once and each pixel's input value is broadcast against them.
//! The output rows of a tile are cut into [`Run`]s of consecutive pixels of
//! one output row: pixels whose window lies inside the input read the
//! patch values in place (the pixels of a run are `sw * c` floats apart);
//! pixels whose window touches the padding are gathered into a small
//! zero-padded patch first. Bias and activation are applied to the
//! registers before they are stored.
//!
//! The kernel is written once over [`Lanes`] and compiled three times:
//! for AVX-512F and for AVX2+FMA (chosen at run time, the widest the CPU
//! has) and portably (plain multiply and add, any CPU). Every lane does
//! the same operations in the same order in the two vector builds, so
//! their results are bitwise equal; tests run all three. The filter
//! gradient's direct kernel (`direct_filter.rs`) shares the runs.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use super::simd::Avx2;
#[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
use super::simd::Avx512;
use super::simd::{unrolled, with_const, Isa, Lanes, Portable};
use super::{im2col::im2col_tile, ConvGeometry, Epilogue, Tuning};

/// Whether the build may use 32 vector registers (AVX-512 enabled at
/// compile time, e.g. `target-cpu=native` on such a CPU): the AVX2
/// register blocks are sized for 32 registers then, for 16 otherwise.
pub(super) const WIDE_REGS: bool = cfg!(target_feature = "avx512f");
/// Most input channels the direct kernels take.
const MAX_C: usize = 4;

/// Whether the direct kernels handle `g`: few input channels.
pub(super) fn applies(g: &ConvGeometry) -> bool {
    g.c <= MAX_C
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

/// The forward register blocks of one build of the kernel.
trait ForwardBlocks: Lanes {
    /// Most output pixels per block.
    const PIXELS: usize;
    /// Most vectors of filters per block.
    const VECS: usize;
    /// [`forward_block`] for `r` pixels (`1..=PIXELS`) and `nv` vectors
    /// (`1..=VECS`), in a function of its own.
    fn block(r: usize, nv: usize, b: &mut Block);
}

#[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
impl ForwardBlocks for Avx512 {
    /// 8 x 2 accumulators (32 filters), the two weight vectors and the
    /// eight broadcasts (LLVM loads them all before the FMAs): 26 of the
    /// 32 registers; with 12 pixels it spilled. Two FMA units of four
    /// cycles' latency need at least eight independent sums.
    const PIXELS: usize = 12;
    const VECS: usize = 2;
    fn block(r: usize, nv: usize, b: &mut Block) {
        with_const!(nv, [1 2], |NV| match (r, b.step) {
            (12, 3) => Self::isolated(|| forward_block::<Self, 12, NV, 3>(b)),
            (12, 6) => Self::isolated(|| forward_block::<Self, 12, NV, 6>(b)),
            _ => with_const!(r, [1 2 3 4 5 6 7 8 9 10 11 12], |R| {
                Self::isolated(|| forward_block::<Self, R, NV, 0>(b))
            }),
        })
    }
}

/// `MR x 4` accumulators, the four weight vectors and the broadcasts in
/// registers, twice over: LLVM unrolls the loop over patch positions by
/// two, and with six pixels it spilled accumulators (measured on a Zen 4).
const MR: usize = if WIDE_REGS { 4 } else { 2 };

#[cfg(target_arch = "x86_64")]
impl ForwardBlocks for Avx2 {
    const PIXELS: usize = MR;
    const VECS: usize = 4;
    fn block(r: usize, nv: usize, b: &mut Block) {
        with_const!(nv, [1 2 3 4], |NV| with_const!(r, [1 2 3 4], |R| {
            Self::isolated(|| forward_block::<Self, R, NV, 0>(b))
        }))
    }
}

impl ForwardBlocks for Portable {
    const PIXELS: usize = MR;
    const VECS: usize = 4;
    fn block(r: usize, nv: usize, b: &mut Block) {
        with_const!(nv, [1 2 3 4], |NV| with_const!(r, [1 2 3 4], |R| {
            Self::isolated(|| forward_block::<Self, R, NV, 0>(b))
        }))
    }
}

/// What every forward tile shares.
struct Forward<'a> {
    g: &'a ConvGeometry,
    input: &'a [f32],
    /// The kernel matrix `k x fp`, filters padded with zeros to `fp`.
    wp: Vec<f32>,
    /// `f` rounded up to whole vectors.
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
    let isa = Isa::detect(tuning.simd);
    forward_with(g, input, kernel, bias, epilogue, out, tuning.tile_rows, isa);
}

/// [`forward`] by the build `isa` (which the CPU must run), in tiles of
/// `tile` output rows.
#[allow(clippy::too_many_arguments)]
fn forward_with(
    g: &ConvGeometry,
    input: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
    tile: usize,
    isa: Isa,
) {
    let (k, f) = (g.patch_len(), g.f);
    let lanes = isa.lanes();
    let fp = f.div_ceil(lanes) * lanes;
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
    let tile = tile.max(1);
    out.par_chunks_mut(tile * f).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(patch, runs): &mut (Vec<f32>, Vec<Run>), (t, out_tile)| {
            let r0 = t * tile;
            match isa {
                // SAFETY: `isa` is a build the CPU runs (`Isa::detect`).
                #[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
                Isa::Avx512 => unsafe { forward_tile_avx512(&ctx, r0, out_tile, patch, runs) },
                // SAFETY: as above.
                #[cfg(target_arch = "x86_64")]
                Isa::Avx2 => unsafe { forward_tile_avx2(&ctx, r0, out_tile, patch, runs) },
                Isa::Portable => forward_tile::<Portable>(&ctx, r0, out_tile, patch, runs),
            }
        },
    );
}

/// # Safety
/// The CPU must have AVX-512F.
#[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
#[target_feature(enable = "avx512f")]
unsafe fn forward_tile_avx512(
    ctx: &Forward,
    r0: usize,
    out: &mut [f32],
    patch: &mut Vec<f32>,
    runs: &mut Vec<Run>,
) {
    forward_tile::<Avx512>(ctx, r0, out, patch, runs);
}

/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn forward_tile_avx2(
    ctx: &Forward,
    r0: usize,
    out: &mut [f32],
    patch: &mut Vec<f32>,
    runs: &mut Vec<Run>,
) {
    forward_tile::<Avx2>(ctx, r0, out, patch, runs);
}

/// The data of consecutive register blocks of `R` output pixels each
/// (`dst`, `blocks * R` rows of `f`), filters `c0..c0 + NV * lanes`:
/// pixel `p`'s patch value at position `j` is `src[p * step + offsets[j]]`.
struct Block<'a, 'b> {
    ctx: &'a Forward<'a>,
    src: &'b [f32],
    step: usize,
    offsets: &'a [usize],
    c0: usize,
    dst: &'b mut [f32],
}

/// Output rows `r0..` of one tile (`out`, `rows x f`).
#[inline(always)]
fn forward_tile<V: ForwardBlocks>(
    ctx: &Forward,
    r0: usize,
    out: &mut [f32],
    patch: &mut Vec<f32>,
    tile_runs: &mut Vec<Run>,
) {
    let g = ctx.g;
    let (k, f) = (g.patch_len(), g.f);
    let rows = out.len() / f;
    let step = g.sw * g.c;
    patch.resize(V::PIXELS * k, 0.0);
    tile_runs.clear();
    runs(g, r0, rows, tile_runs);
    for run in tile_runs.iter() {
        let mut i = 0;
        while i < run.len {
            // Pixels `i..i + n` in blocks of `m`: as many whole blocks as
            // the run holds when read in place, else one block.
            let m = V::PIXELS.min(run.len - i);
            let (n, src, base, step, offsets, span): (
                usize,
                &[f32],
                usize,
                usize,
                &[usize],
                usize,
            ) = match run.inside {
                Some(base) => {
                    let n = (run.len - i) / m * m;
                    (n, ctx.input, base + i * step, step, &ctx.offsets, ctx.span)
                }
                None => {
                    im2col_tile(g, ctx.input, r0 + run.row + i, m, patch);
                    (m, patch, 0, k, &ctx.contiguous, k)
                }
            };
            let dst = &mut out[(run.row + i) * f..(run.row + i + n) * f];
            forward_pixels::<V>(ctx, m, &src[base..], step, offsets, span, dst);
            i += n;
        }
    }
}

/// Output pixels `dst` (`rows x f`, `rows` a multiple of `m`) in blocks of
/// `m`, all filters: pixel `p`'s patch value at position `j` is `src[p *
/// step + offsets[j]]`, every offset below `span`.
#[inline(always)]
fn forward_pixels<V: ForwardBlocks>(
    ctx: &Forward,
    m: usize,
    src: &[f32],
    step: usize,
    offsets: &[usize],
    span: usize,
    dst: &mut [f32],
) {
    let (f, fp) = (ctx.g.f, ctx.fp);
    let rows = dst.len() / f;
    // Every read of the blocks is `src[p * step + offsets[j]]` with `p <
    // rows` and `offsets[j] < span`, of the weights `wp[j * fp + c0
    // ..][..NV lanes]` with `j < offsets.len()` and `c0 + NV lanes <=
    // fp`, of the bias `bias[c0..][..NV lanes]`, and every write `dst[p *
    // f + c0..][..NV lanes]` or less: one check here instead of one per
    // access.
    assert!(rows > 0 && rows % m == 0 && dst.len() == rows * f);
    assert!((rows - 1) * step + span <= src.len());
    assert!(offsets.iter().all(|&o| o < span));
    assert!(offsets.len() * fp <= ctx.wp.len() && ctx.bias.len() == fp);
    let mut c0 = 0;
    while c0 < fp {
        let nv = ((fp - c0) / V::N).min(V::VECS);
        let mut b = Block {
            ctx,
            src,
            step,
            offsets,
            c0,
            dst: &mut *dst,
        };
        V::block(m, nv, &mut b);
        c0 += nv * V::N;
    }
}

/// Filters `c0..c0 + NV * lanes` of consecutive blocks of `R` pixels (see
/// [`Block`]; the checks of [`forward_pixels`] make the accesses in
/// bounds). `S`: the pixels' step when it is known at compile time
/// (`b.step`, which it must equal), 0 otherwise; a constant step makes
/// every read's address a register and a constant.
#[inline(always)]
fn forward_block<V: Lanes, const R: usize, const NV: usize, const S: usize>(b: &mut Block) {
    let ctx = b.ctx;
    debug_assert!(S == 0 || S == b.step);
    let step = if S == 0 { b.step } else { S };
    let (f, fp, c0, relu) = (ctx.g.f, ctx.fp, b.c0, ctx.relu);
    let w = &ctx.wp[c0..];
    // SAFETY: `c0 + NV lanes <= fp = bias.len()` (checked by
    // `forward_pixels`).
    let bias: [V; NV] = std::array::from_fn(|v| unsafe { V::load(&ctx.bias, c0 + v * V::N) });
    let cols = (NV * V::N).min(f - c0);
    let blocks = b.dst.len() / (R * f);
    for blk in 0..blocks {
        let src = &b.src[blk * R * step..];
        let dst = &mut b.dst[blk * R * f..];
        let mut acc = [[V::zero(); NV]; R];
        for (j, &o) in b.offsets.iter().enumerate() {
            // SAFETY: `j * fp + c0 + NV lanes <= offsets.len() * fp <=
            // wp.len()` (checked by `forward_pixels`; `c0 + NV lanes <=
            // fp`).
            let wv: [V; NV] = std::array::from_fn(|v| unsafe { V::load(w, j * fp + v * V::N) });
            unrolled!(R, |m| {
                // SAFETY: `m * step + o < (R - 1) * step + span`, within
                // `src` (checked by `forward_pixels`).
                let a = V::splat(unsafe { *src.get_unchecked(m * step + o) });
                for v in 0..NV {
                    acc[m][v] = a.mul_add(wv[v], acc[m][v]);
                }
            });
        }
        unrolled!(R, |m| {
            for v in 0..NV {
                let mut x = acc[m][v].add(bias[v]);
                if relu {
                    x = x.relu();
                }
                let at = m * f + c0 + v * V::N;
                if cols == NV * V::N {
                    // SAFETY: `at + lanes <= (m + 1) * f`, within the
                    // block's rows of `dst` (checked by `forward_pixels`).
                    unsafe { x.store_at(dst, at) };
                } else {
                    let mut tmp = [0.0f32; 16];
                    x.store(&mut tmp);
                    let n = cols.saturating_sub(v * V::N).min(V::N);
                    dst[at..at + n].copy_from_slice(&tmp[..n]);
                }
            }
        });
    }
}

#[cfg(test)]
pub(super) mod tests {
    //! The builds of the forward kernel against each other: the AVX-512
    //! and AVX2 builds do the same operations in every lane, so their
    //! results must be bitwise equal; the portable build (no FMA) close.
    //! (`tests/conv_direct.rs` checks the default build and the portable
    //! one against textbook loops.)

    use super::*;
    use crate::Padding;

    /// Deterministic values in [-1, 1).
    pub(in crate::conv) fn values(len: usize, seed: u64) -> Vec<f32> {
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

    /// Shapes reaching every block size and step: rows of 1 to 62 output
    /// pixels (whole blocks of 12, 8 and 4 and every remainder), strides 1
    /// and 2 on 3 channels (the constant steps) and others, windows
    /// touching the padding, filter counts around the vectors of 8 and 16
    /// and the blocks of 32: `(input, kernel (kh, kw, f), strides,
    /// padding)`.
    pub(in crate::conv) fn shapes() -> Vec<ConvGeometry> {
        let explicit = Padding::Explicit {
            top: 1,
            bottom: 0,
            left: 2,
            right: 1,
        };
        let mut out = Vec::new();
        let mut add = |input: [usize; 4], k: [usize; 3], s: (usize, usize), p: Padding| {
            let g = ConvGeometry::new(input, [k[0], k[1], input[3], k[2]], s, p).unwrap();
            out.push(g);
        };
        for w in [3, 13, 14, 27, 64] {
            add([1, 4, w, 3], [3, 3, 32], (1, 1), Padding::Valid);
        }
        for f in [1, 8, 16, 24, 33, 48, 64] {
            add([2, 5, 30, 3], [3, 3, f], (1, 1), Padding::Same);
        }
        add([2, 9, 61, 3], [3, 3, 32], (2, 2), Padding::Valid);
        add([1, 8, 40, 3], [3, 3, 32], (2, 2), Padding::Same);
        add([1, 6, 33, 3], [3, 3, 20], (1, 2), explicit);
        for c in [1, 2, 4] {
            add([1, 5, 29, c], [3, 3, 32], (1, 1), Padding::Same);
            add([1, 7, 31, c], [3, 3, 16], (2, 2), Padding::Valid);
        }
        add([1, 9, 26, 3], [5, 5, 24], (1, 1), Padding::Same);
        add([1, 9, 26, 3], [7, 7, 32], (2, 2), Padding::Same);
        add([1, 4, 17, 3], [1, 1, 32], (1, 1), Padding::Valid);
        out
    }

    #[track_caller]
    pub(in crate::conv) fn assert_bitwise(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: length");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert_eq!(x.to_bits(), y.to_bits(), "{what}[{i}]: {x} vs {y}");
        }
    }

    #[track_caller]
    pub(in crate::conv) fn assert_close(a: &[f32], b: &[f32], tol: f32, what: &str) {
        assert_eq!(a.len(), b.len(), "{what}: length");
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tol * (1.0 + y.abs()),
                "{what}[{i}]: {x} vs {y}"
            );
        }
    }

    #[test]
    fn every_build_of_the_forward_kernel_agrees() {
        let isas = Isa::available();
        for (s, g) in shapes().iter().enumerate() {
            let x = values(g.input_shape().iter().product(), 3 * s as u64);
            let w = values(g.kernel_shape().iter().product(), 3 * s as u64 + 1);
            let b = values(g.f, 3 * s as u64 + 2);
            let len: usize = g.output_shape().iter().product();
            for tile in [1, 7, 50, len] {
                let run = |isa: Isa| {
                    let mut y = vec![f32::NAN; len];
                    forward_with(g, &x, &w, Some(&b), Epilogue::Relu, &mut y, tile, isa);
                    y
                };
                let portable = run(Isa::Portable);
                let vector: Vec<(Isa, Vec<f32>)> = isas
                    .iter()
                    .filter(|&&i| i != Isa::Portable)
                    .map(|&i| (i, run(i)))
                    .collect();
                for (isa, y) in &vector {
                    let what = format!("{isa:?} {g:?} tile {tile}");
                    assert_close(y, &portable, 1e-5, &what);
                    assert_bitwise(y, &vector[0].1, &what);
                }
            }
        }
    }
}
