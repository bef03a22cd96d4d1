//! Winograd F(m x m, 3x3) for 3x3 stride-1 convolutions, with output tiles
//! of m = 2, 4 or 6: each m x m block of outputs costs (m+2)^2
//! multiplications per (input channel, filter) pair instead of 9 m^2, a
//! 2.25x cut in the GEMM work for F(2x2, 3x3), 4x for F(4x4, 3x3) and 5.1x
//! for F(6x6, 3x3), which is where these layers spend their time (F(6x6,
//! 3x3) serves the forward pass and the input gradient; the filter
//! gradient stays on F(4x4, 3x3)). The forward pass of 5x5 stride-1
//! convolutions runs the same way as F(2x2, 5x5) (6x6 input tiles on the
//! points of F(4x4, 3x3), 36 multiplications per 2x2 outputs instead of
//! 100: measured 1.8-1.9x im2col + GEMM in `f32` and 1.4-1.5x its
//! half-precision GEMM on InceptionV3's 16x16 48 -> 64 layer, batch 32,
//! both cores) or, on maps large enough, F(4x4, 5x5) (8x8 input tiles on
//! the points of F(6x6, 3x3), 64 multiplications per 4x4 outputs instead
//! of 400).
//!
//! With `d` a (m+2)x(m+2) input tile, `g` a 3x3 filter and `Y` the m x m
//! output tile: `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`, summed over input channels.
//! Per band of tiles, the input transforms `V = Bᵀ d B` are laid out as
//! `P = (m+2)^2` matrices (tiles x c), the filter transforms `U = G g Gᵀ` as
//! P matrices (c x f), and P GEMMs give `M = V U`; the output transform
//! `Aᵀ M A` adds the bias and the activation while the band is in cache.
//!
//! The two backward equations follow from the same algebra:
//! - input gradient: a stride-1 convolution of `dy` with the kernel rotated
//!   by 180 degrees and its channel axes swapped, padded so the output is
//!   the input's size; it runs through the forward path above.
//! - filter gradient: `Y` is bilinear in `U` and `V`, so
//!   `dU = sum over tiles of V ⊙ (A dY Aᵀ)` (P GEMMs `Vᵀ dM` with the tiles
//!   as the inner dimension) and `dg = Gᵀ dU G`. The tiles are summed in a
//!   fixed number of groups added in order, so the result does not depend
//!   on the thread count.
//!
//! Tiles reaching past the input read zeros (that is the padding); outputs
//! of a tile past the output's edge are dropped in the forward pass and
//! count as zero gradient in the backward pass.
//!
//! The transforms are Lavin and Gray's ("Fast Algorithms for Convolutional
//! Neural Networks", 2016), with interpolation points 0, ±1, ±2 for m = 4,
//! and 0, ±1, ±2, ±1/2 for the 8x8 tiles (F(6x6, 3x3) and F(4x4, 5x5)).
//! Every transform works on 16 channels (or filters) at once, one vector
//! per transform point ([`Wide`]: AVX-512 intrinsics where the CPU has
//! them, pairs of AVX2 registers where it has AVX2 and FMA, arrays the
//! compiler vectorises elsewhere), the last block of a
//! channel count that is not a multiple of 16 through masked loads and
//! stores. Tiles wholly inside the input (or output) load without
//! per-pixel checks; only edge tiles test each pixel. The output
//! transform adds the bias and applies the ReLU before its stores, and the
//! filter gradient's `dY` transform sums the bias gradient on the way.

// The small transform matrices read best written out with indices.
#![allow(clippy::needless_range_loop)]

use rayon::prelude::*;

use super::{BandSink, ConvGeometry, Epilogue, FILTER_PARTIALS};
use crate::gemm::{sgemm, Layout, Parallelism};
use crate::gemm_packed::{self, PackedB};
use crate::Pads;

/// Whether `g` has the shape Winograd F(2x2, 3x3) handles: 3x3, stride
/// 1, padding of at most 2 on each side.
pub(super) fn fits(g: &ConvGeometry) -> bool {
    let p = g.pads;
    g.kh == 3
        && g.kw == 3
        && g.sh == 1
        && g.sw == 1
        && p.top.max(p.bottom).max(p.left).max(p.right) <= 2
}

/// Whether `g` has the shape F(2x2, 5x5) handles: 5x5, stride 1, padding
/// of at most 4 on each side.
fn fits_five(g: &ConvGeometry) -> bool {
    let p = g.pads;
    g.kh == 5
        && g.kw == 5
        && g.sh == 1
        && g.sw == 1
        && p.top.max(p.bottom).max(p.left).max(p.right) <= 4
}

/// Whether the forward pass of `g` has a Winograd variant: 3x3 ([`fits`],
/// all three passes) or 5x5 (F(2x2, 5x5), the forward pass only).
pub(super) fn fits_forward(g: &ConvGeometry) -> bool {
    fits(g) || fits_five(g)
}

/// The default choice of each pass: Winograd for all three when both
/// channel counts are at least 16 (below that the transforms cost about as
/// much as the GEMM work they save). Measured against im2col + GEMM with
/// F(4x4, 3x3), one thread, CPU time (`cargo xtask bench conv --compare`
/// gives the same comparison on both cores), on a loaded Zen 4: the basic
/// CNN's conv2 (32 -> 64) 1.25x forward, 1.16x input gradient, 1.04x
/// filter gradient; conv3 (64 -> 128) 1.55x, 1.77x, 1.12x; InceptionV3's
/// 35x35 64 -> 96 1.76x, 1.98x, 1.45x; its 17x17 192 -> 192 1.27x, 1.43x,
/// 1.04x.
///
/// 5x5 stride-1 layers with as many channels take F(4x4, 5x5) (or F(2x2,
/// 5x5) on small maps) for their forward pass (InceptionV3's 48 -> 64 5x5
/// layers in a frozen base); their gradients stay on im2col + GEMM.
pub(super) fn default_passes(g: &ConvGeometry) -> (bool, bool, bool) {
    let enough = g.c >= 16 && g.f >= 16;
    let wide = fits(g) && enough;
    (wide || (fits_five(g) && enough), wide, wide)
}

/// The output tile side `m` used by default for `g`: 4 (F(4x4, 3x3), 1.8x
/// fewer multiplications than m = 2) unless the output is so small that
/// the tiles past its edge waste more than they save, and 6 (F(6x6, 3x3))
/// where that needs at least 10% fewer multiplications again, tiles past
/// the edge counted (72x72 and 33x33 maps: 21% fewer; 16x16 and 7x7 ones
/// stay on 4). 5x5 layers: 4 (F(4x4, 5x5)) or 2 by the same rule as 3x3.
///
/// Measured on Zen 3 (AVX2, both cores, alternated in one process, 20-300
/// pairs): F(6x6, 3x3) against F(4x4, 3x3) 1.08x on InceptionV3's 74x74
/// 32 -> 32 layer, 1.11-1.14x on 72x72 32 -> 64, 1.12-1.17x on 35x35
/// 80 -> 192; F(4x4, 5x5) against F(2x2, 5x5) 1.69x on 16x16 48 -> 64.
pub(super) fn default_tile(g: &ConvGeometry) -> usize {
    // Multiplications for tiles of side m, counting those past the edge.
    let work = |m: usize| {
        let t = m + g.kh - 1;
        t * t * g.oh.div_ceil(m) * g.ow.div_ceil(m)
    };
    if g.kh == 5 {
        return if 10 * work(4) <= 8 * work(2) { 4 } else { 2 };
    }
    let m = if 10 * work(4) <= 8 * work(2) { 4 } else { 2 };
    if m == 4 && 10 * work(6) <= 9 * work(4) {
        6
    } else {
        m
    }
}

/// Channels (or filters) per step of the transforms: 16 floats, one
/// AVX-512 register (or what the portable build makes of `[f32; 16]`).
pub(super) const LANES: usize = 16;

/// A vector of [`LANES`] `f32`s, the unit the transforms work on: one
/// channel block of one transform point. Loads and stores take a mask
/// (the first `n` lanes), so the last block of a channel count that is not
/// a multiple of 16 goes through the same code.
pub(super) trait Wide: Copy {
    /// Which lanes a load or store touches.
    type Mask: Copy;
    /// The first `n` lanes (`1 <= n <= 16`).
    fn mask(n: usize) -> Self::Mask;
    /// The masked lanes from `p`, zero elsewhere.
    ///
    /// # Safety
    /// The masked lanes of `p` must be readable.
    unsafe fn load(p: *const f32, m: Self::Mask) -> Self;
    /// Stores the masked lanes to `p`.
    ///
    /// # Safety
    /// The masked lanes of `p` must be writable.
    unsafe fn store(self, p: *mut f32, m: Self::Mask);
    /// All lanes zero.
    fn zero() -> Self;
    /// `self + b`.
    fn add(self, b: Self) -> Self;
    /// `self - b`.
    fn sub(self, b: Self) -> Self;
    /// `self * k + b` (fused where the CPU has FMA).
    fn madd(self, k: f32, b: Self) -> Self;
    /// `max(self, 0)`, zero for NaN as `f32::max(x, 0.0)`.
    fn relu(self) -> Self;
}

/// The portable [`Wide`]: plain arrays, which the compiler vectorises for
/// whatever the target has.
#[derive(Clone, Copy)]
pub(super) struct Portable([f32; LANES]);

impl Wide for Portable {
    type Mask = usize;
    #[inline(always)]
    fn mask(n: usize) -> usize {
        n.min(LANES)
    }
    #[inline(always)]
    unsafe fn load(p: *const f32, n: usize) -> Self {
        let mut out = [0.0f32; LANES];
        if n == LANES {
            // SAFETY: the caller guarantees the 16 values are readable.
            out = unsafe { *(p as *const [f32; LANES]) };
        } else {
            for (l, o) in out.iter_mut().enumerate().take(n) {
                // SAFETY: lane `l < n` is readable (caller).
                *o = unsafe { *p.add(l) };
            }
        }
        Portable(out)
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32, n: usize) {
        if n == LANES {
            // SAFETY: the caller guarantees the 16 values are writable.
            unsafe { *(p as *mut [f32; LANES]) = self.0 };
        } else {
            for (l, &v) in self.0.iter().enumerate().take(n) {
                // SAFETY: lane `l < n` is writable (caller).
                unsafe { *p.add(l) = v };
            }
        }
    }
    #[inline(always)]
    fn zero() -> Self {
        Portable([0.0; LANES])
    }
    #[inline(always)]
    fn add(self, b: Self) -> Self {
        Portable(std::array::from_fn(|l| self.0[l] + b.0[l]))
    }
    #[inline(always)]
    fn sub(self, b: Self) -> Self {
        Portable(std::array::from_fn(|l| self.0[l] - b.0[l]))
    }
    #[inline(always)]
    fn madd(self, k: f32, b: Self) -> Self {
        Portable(std::array::from_fn(|l| self.0[l] * k + b.0[l]))
    }
    #[inline(always)]
    fn relu(self) -> Self {
        Portable(self.0.map(|v| v.max(0.0)))
    }
}

#[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
pub(super) use avx512::Zmm;

/// The AVX-512 [`Wide`], in a module of its own: the intrinsics are stable
/// since Rust 1.89, newer than the workspace's `rust-version`, and only
/// compiled when `build.rs` found such a compiler.
#[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
#[allow(clippy::incompatible_msrv)]
mod avx512 {
    use std::arch::x86_64::*;

    use super::Wide;

    /// One AVX-512 register of lanes.
    ///
    /// Only code reached through a `#[target_feature(enable = "avx512f")]`
    /// function, itself called only after `is_x86_feature_detected!` found
    /// the feature, may use this type: that is what makes the intrinsics
    /// below sound (see [`super::Path`]).
    #[derive(Clone, Copy)]
    pub(in crate::conv) struct Zmm(__m512);

    // SAFETY (every `unsafe` block below): the CPU has AVX-512F (see the
    // type's documentation); masked lanes are not touched, and the caller
    // of `load`/`store` guarantees the others are in bounds.
    impl Wide for Zmm {
        type Mask = __mmask16;
        #[inline(always)]
        fn mask(n: usize) -> __mmask16 {
            if n >= 16 {
                0xffff
            } else {
                ((1u32 << n) - 1) as __mmask16
            }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32, m: __mmask16) -> Self {
            Zmm(unsafe { _mm512_maskz_loadu_ps(m, p) })
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32, m: __mmask16) {
            unsafe { _mm512_mask_storeu_ps(p, m, self.0) }
        }
        #[inline(always)]
        fn zero() -> Self {
            Zmm(unsafe { _mm512_setzero_ps() })
        }
        #[inline(always)]
        fn add(self, b: Self) -> Self {
            Zmm(unsafe { _mm512_add_ps(self.0, b.0) })
        }
        #[inline(always)]
        fn sub(self, b: Self) -> Self {
            Zmm(unsafe { _mm512_sub_ps(self.0, b.0) })
        }
        #[inline(always)]
        fn madd(self, k: f32, b: Self) -> Self {
            Zmm(unsafe { _mm512_fmadd_ps(self.0, _mm512_set1_ps(k), b.0) })
        }
        #[inline(always)]
        fn relu(self) -> Self {
            // vmaxps returns the second operand when either is NaN.
            Zmm(unsafe { _mm512_max_ps(self.0, _mm512_setzero_ps()) })
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use avx2::Ymm2;

/// The AVX2 + FMA [`Wide`]: two 256-bit registers per 16 lanes. Written
/// with intrinsics because the portable arrays, on an AVX2 CPU, left the
/// compiler copying whole transform rows through `memcpy` (15% of a
/// 72x72 32 -> 64 layer's time on Zen 3) and the transforms at half the
/// layer's time.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::Wide;

    /// Two AVX registers of lanes (0-7, 8-15).
    ///
    /// Only code reached through a `#[target_feature(enable =
    /// "avx2,fma")]` function, itself called only after
    /// `is_x86_feature_detected!` found both features, may use this type:
    /// that is what makes the intrinsics below sound (see [`super::Path`]).
    #[derive(Clone, Copy)]
    pub(in crate::conv) struct Ymm2(__m256, __m256);

    /// The lanes a [`Ymm2`] load or store touches: all 16 (plain loads and
    /// stores), or the first few (masked ones; AVX has no cheap masked
    /// store, so full blocks avoid it).
    #[derive(Clone, Copy)]
    pub(in crate::conv) struct Mask2 {
        full: bool,
        lo: __m256i,
        hi: __m256i,
    }

    /// Sixteen set lanes then sixteen clear ones: lanes `16 - n ..` start
    /// with `n` set.
    static MASKS: [i32; 32] = [
        -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0,
    ];

    // SAFETY (every `unsafe` block below): the CPU has AVX2 and FMA (see
    // the type's documentation); masked lanes are not touched, and the
    // caller of `load`/`store` guarantees the others are in bounds.
    impl Wide for Ymm2 {
        type Mask = Mask2;
        #[inline(always)]
        fn mask(n: usize) -> Mask2 {
            let n = n.min(16);
            let at = MASKS[16 - n..].as_ptr();
            unsafe {
                Mask2 {
                    full: n == 16,
                    lo: _mm256_loadu_si256(at as *const __m256i),
                    hi: _mm256_loadu_si256(at.add(8) as *const __m256i),
                }
            }
        }
        #[inline(always)]
        unsafe fn load(p: *const f32, m: Mask2) -> Self {
            unsafe {
                if m.full {
                    Ymm2(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)))
                } else {
                    Ymm2(
                        _mm256_maskload_ps(p, m.lo),
                        _mm256_maskload_ps(p.add(8), m.hi),
                    )
                }
            }
        }
        #[inline(always)]
        unsafe fn store(self, p: *mut f32, m: Mask2) {
            unsafe {
                if m.full {
                    _mm256_storeu_ps(p, self.0);
                    _mm256_storeu_ps(p.add(8), self.1);
                } else {
                    _mm256_maskstore_ps(p, m.lo, self.0);
                    _mm256_maskstore_ps(p.add(8), m.hi, self.1);
                }
            }
        }
        #[inline(always)]
        fn zero() -> Self {
            unsafe { Ymm2(_mm256_setzero_ps(), _mm256_setzero_ps()) }
        }
        #[inline(always)]
        fn add(self, b: Self) -> Self {
            unsafe { Ymm2(_mm256_add_ps(self.0, b.0), _mm256_add_ps(self.1, b.1)) }
        }
        #[inline(always)]
        fn sub(self, b: Self) -> Self {
            unsafe { Ymm2(_mm256_sub_ps(self.0, b.0), _mm256_sub_ps(self.1, b.1)) }
        }
        #[inline(always)]
        fn madd(self, k: f32, b: Self) -> Self {
            unsafe {
                let k = _mm256_set1_ps(k);
                Ymm2(
                    _mm256_fmadd_ps(self.0, k, b.0),
                    _mm256_fmadd_ps(self.1, k, b.1),
                )
            }
        }
        #[inline(always)]
        fn relu(self) -> Self {
            // vmaxps returns the second operand when either is NaN.
            unsafe {
                let z = _mm256_setzero_ps();
                Ymm2(_mm256_max_ps(self.0, z), _mm256_max_ps(self.1, z))
            }
        }
    }
}

/// Which build of the transforms runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Path {
    /// [`Zmm`] (with Rust 1.89 or newer, on a CPU with AVX-512F).
    #[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
    Avx512,
    /// [`Ymm2`] (on a CPU with AVX2 and FMA but not AVX-512F).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// [`Portable`].
    Portable,
}

impl Path {
    /// The widest build this CPU runs.
    pub(super) fn detect() -> Self {
        #[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
        if is_x86_feature_detected!("avx512f") {
            return Path::Avx512;
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Path::Avx2;
        }
        Path::Portable
    }

    /// Every build this CPU runs (the tests compare them).
    #[cfg(test)]
    pub(super) fn available() -> Vec<Self> {
        let mut out = vec![Path::Portable];
        #[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
        if is_x86_feature_detected!("avx512f") {
            out.push(Path::Avx512);
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            out.push(Path::Avx2);
        }
        out
    }
}

/// One Winograd variant F(M x M, R x R): input tiles `T x T` (`T` is
/// `M + R - 1`), `P = T * T` transform points. The 1-D maps work on
/// vectors of channels; the 2-D transforms apply them along the rows, then
/// down the columns.
trait Variant<const M: usize, const T: usize, const P: usize> {
    /// `G`, `T` rows of `R`: the filter transform `U = G g Gᵀ`.
    const G: &'static [&'static [f64]];
    /// `Bᵀ x`: `T` values to `T`.
    fn bt<W: Wide>(x: [W; T]) -> [W; T];
    /// `Aᵀ x`: `T` values to `M`.
    fn at<W: Wide>(x: [W; T]) -> [W; M];
    /// `A x`: `M` values to `T`.
    fn a<W: Wide>(x: [W; M]) -> [W; T];
}

/// F(2x2, 3x3).
struct F2;

impl Variant<2, 4, 16> for F2 {
    const G: &'static [&'static [f64]] = &[
        &[1.0, 0.0, 0.0],
        &[0.5, 0.5, 0.5],
        &[0.5, -0.5, 0.5],
        &[0.0, 0.0, 1.0],
    ];

    #[inline(always)]
    fn bt<W: Wide>(x: [W; 4]) -> [W; 4] {
        [
            x[0].sub(x[2]),
            x[1].add(x[2]),
            x[2].sub(x[1]),
            x[1].sub(x[3]),
        ]
    }

    #[inline(always)]
    fn at<W: Wide>(x: [W; 4]) -> [W; 2] {
        [x[0].add(x[1]).add(x[2]), x[1].sub(x[2]).sub(x[3])]
    }

    #[inline(always)]
    fn a<W: Wide>(x: [W; 2]) -> [W; 4] {
        [x[0], x[0].add(x[1]), x[0].sub(x[1]), W::zero().sub(x[1])]
    }
}

/// F(4x4, 3x3), interpolation points 0, 1, -1, 2, -2 and infinity.
struct F4;

impl Variant<4, 6, 36> for F4 {
    const G: &'static [&'static [f64]] = &[
        &[1.0 / 4.0, 0.0, 0.0],
        &[-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        &[-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        &[1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        &[1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        &[0.0, 0.0, 1.0],
    ];

    #[inline(always)]
    fn bt<W: Wide>(x: [W; 6]) -> [W; 6] {
        // Bᵀ rows: [4 0 -5 0 1 0], [0 -4 -4 1 1 0], [0 4 -4 -1 1 0],
        // [0 -2 -1 2 1 0], [0 2 -1 -2 1 0], [0 4 0 -5 0 1].
        let x42 = x[4].sub(x[2]);
        let x31 = x[3].sub(x[1]);
        let x31 = x31.add(x31);
        [
            x[0].madd(4.0, x[2].madd(-5.0, x[4])),
            x[1].add(x[2]).madd(-4.0, x[3].add(x[4])),
            x[1].sub(x[2]).madd(4.0, x[4].sub(x[3])),
            x42.add(x31),
            x42.sub(x31),
            x[1].madd(4.0, x[3].madd(-5.0, x[5])),
        ]
    }

    #[inline(always)]
    fn at<W: Wide>(x: [W; 6]) -> [W; 4] {
        // Aᵀ rows: [1 1 1 1 1 0], [0 1 -1 2 -2 0], [0 1 1 4 4 0],
        // [0 1 -1 8 -8 1].
        let (s12, d12) = (x[1].add(x[2]), x[1].sub(x[2]));
        let (s34, d34) = (x[3].add(x[4]), x[3].sub(x[4]));
        [
            x[0].add(s12).add(s34),
            d34.madd(2.0, d12),
            s34.madd(4.0, s12),
            d34.madd(8.0, d12).add(x[5]),
        ]
    }

    #[inline(always)]
    fn a<W: Wide>(x: [W; 4]) -> [W; 6] {
        // A = (Aᵀ)ᵀ: the columns of Aᵀ are its rows.
        let (e, o) = (x[0].add(x[2]), x[1].add(x[3]));
        let e4 = x[2].madd(4.0, x[0]);
        let o4 = x[3].madd(8.0, x[1].add(x[1]));
        [x[0], e.add(o), e.sub(o), e4.add(o4), e4.sub(o4), x[3]]
    }
}

/// F(2x2, 5x5), for the forward pass of 5x5 stride-1 layers: the points
/// of [`F4`] (so the same `Bᵀ`, and errors of the same size), 36
/// multiplications per 4 outputs instead of 100.
struct F5;

impl Variant<2, 6, 36> for F5 {
    const G: &'static [&'static [f64]] = &[
        &[1.0 / 4.0, 0.0, 0.0, 0.0, 0.0],
        &[-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        &[-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        &[1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0, 1.0 / 3.0, 2.0 / 3.0],
        &[1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0, -1.0 / 3.0, 2.0 / 3.0],
        &[0.0, 0.0, 0.0, 0.0, 1.0],
    ];

    #[inline(always)]
    fn bt<W: Wide>(x: [W; 6]) -> [W; 6] {
        F4::bt(x)
    }

    #[inline(always)]
    fn at<W: Wide>(x: [W; 6]) -> [W; 2] {
        // Aᵀ rows: [1 1 1 1 1 0], [0 1 -1 2 -2 1].
        let (s12, d12) = (x[1].add(x[2]), x[1].sub(x[2]));
        let (s34, d34) = (x[3].add(x[4]), x[3].sub(x[4]));
        [x[0].add(s12).add(s34), d34.madd(2.0, d12).add(x[5])]
    }

    #[inline(always)]
    fn a<W: Wide>(x: [W; 2]) -> [W; 6] {
        let d = x[1].add(x[1]);
        [
            x[0],
            x[0].add(x[1]),
            x[0].sub(x[1]),
            x[0].add(d),
            x[0].sub(d),
            x[1],
        ]
    }
}

/// `Bᵀ x` for the eight points 0, ±1, ±2, ±1/2 and infinity, shared by
/// [`F6`] and [`F45`]: the rows of `Bᵀ` are
/// `[1 0 -21/4 0 21/4 0 -1 0]`, `[0 ±1 1 ∓17/4 -17/4 ±1 1 0]`,
/// `[0 ±1/2 1/4 ∓5/2 -5/4 ±2 1 0]`, `[0 ±2 4 ∓5/2 -5 ±1/2 1 0]` and
/// `[0 -1 0 21/4 0 -21/4 0 1]`, paired so each pair shares its even and
/// odd halves.
#[inline(always)]
fn bt8<W: Wide>(x: [W; 8]) -> [W; 8] {
    let e1 = x[4].madd(-4.25, x[2].add(x[6]));
    let o1 = x[3].madd(-4.25, x[1].add(x[5]));
    let e2 = x[4].madd(-1.25, x[2].madd(0.25, x[6]));
    let o2 = x[3].madd(-2.5, x[5].madd(2.0, x[1].madd(0.5, W::zero())));
    let e3 = x[4].madd(-5.0, x[2].madd(4.0, x[6]));
    let o3 = x[3].madd(-2.5, x[1].madd(2.0, x[5].madd(0.5, W::zero())));
    [
        x[4].sub(x[2]).madd(5.25, x[0].sub(x[6])),
        e1.add(o1),
        e1.sub(o1),
        e2.add(o2),
        e2.sub(o2),
        e3.add(o3),
        e3.sub(o3),
        x[3].sub(x[5]).madd(5.25, x[7].sub(x[1])),
    ]
}

/// F(6x6, 3x3), for the forward pass (and the input gradient) of 3x3
/// layers on larger maps: 64 multiplications per 36 outputs, 1.27x fewer
/// than F(4x4, 3x3) where the map divides into 6x6 tiles as well as into
/// 4x4 ones (72x72, 33x33). In single precision its error on a 3x3 layer
/// of 32-80 channels measured about twice F(4x4, 3x3)'s (8.5e-6 against
/// 4.8e-6 of the output's largest value, from ReLU inputs).
struct F6;

impl Variant<6, 8, 64> for F6 {
    const G: &'static [&'static [f64]] = &[
        &[1.0, 0.0, 0.0],
        &[-2.0 / 9.0, -2.0 / 9.0, -2.0 / 9.0],
        &[-2.0 / 9.0, 2.0 / 9.0, -2.0 / 9.0],
        &[1.0 / 90.0, 2.0 / 90.0, 4.0 / 90.0],
        &[1.0 / 90.0, -2.0 / 90.0, 4.0 / 90.0],
        &[32.0 / 45.0, 16.0 / 45.0, 8.0 / 45.0],
        &[32.0 / 45.0, -16.0 / 45.0, 8.0 / 45.0],
        &[0.0, 0.0, 1.0],
    ];

    #[inline(always)]
    fn bt<W: Wide>(x: [W; 8]) -> [W; 8] {
        bt8(x)
    }

    #[inline(always)]
    fn at<W: Wide>(x: [W; 8]) -> [W; 6] {
        // Aᵀ row i: [0^i, 1, (-1)^i, 2^i, (-2)^i, 2^-i, (-2)^-i, i == 5].
        let (s1, d1) = (x[1].add(x[2]), x[1].sub(x[2]));
        let (s2, d2) = (x[3].add(x[4]), x[3].sub(x[4]));
        let (s3, d3) = (x[5].add(x[6]), x[5].sub(x[6]));
        [
            x[0].add(s1).add(s2).add(s3),
            d3.madd(0.5, d2.madd(2.0, d1)),
            s3.madd(0.25, s2.madd(4.0, s1)),
            d3.madd(0.125, d2.madd(8.0, d1)),
            s3.madd(0.0625, s2.madd(16.0, s1)),
            d3.madd(0.03125, d2.madd(32.0, d1)).add(x[7]),
        ]
    }

    #[inline(always)]
    fn a<W: Wide>(x: [W; 6]) -> [W; 8] {
        // A = (Aᵀ)ᵀ: at each point p, the even and odd powers of p.
        let at = |p: f32| {
            let (p2, p3) = (p * p, p * p * p);
            let e = x[4].madd(p2 * p2, x[2].madd(p2, x[0]));
            let o = x[5].madd(p3 * p2, x[3].madd(p3, x[1].madd(p, W::zero())));
            (e, o)
        };
        let (e1, o1) = at(1.0);
        let (e2, o2) = at(2.0);
        let (e3, o3) = at(0.5);
        [
            x[0],
            e1.add(o1),
            e1.sub(o1),
            e2.add(o2),
            e2.sub(o2),
            e3.add(o3),
            e3.sub(o3),
            x[5],
        ]
    }
}

/// F(4x4, 5x5), for the forward pass of 5x5 stride-1 layers: the points
/// of [`F6`] (the same `Bᵀ`), 64 multiplications per 16 outputs, 2.25x
/// fewer than F(2x2, 5x5) on InceptionV3's 16x16 maps (error 6.5e-6 of
/// the output's largest value against F(2x2, 5x5)'s 3.5e-6, 48
/// channels).
struct F45;

impl Variant<4, 8, 64> for F45 {
    const G: &'static [&'static [f64]] = &[
        &[1.0, 0.0, 0.0, 0.0, 0.0],
        &[-2.0 / 9.0, -2.0 / 9.0, -2.0 / 9.0, -2.0 / 9.0, -2.0 / 9.0],
        &[-2.0 / 9.0, 2.0 / 9.0, -2.0 / 9.0, 2.0 / 9.0, -2.0 / 9.0],
        &[1.0 / 90.0, 2.0 / 90.0, 4.0 / 90.0, 8.0 / 90.0, 16.0 / 90.0],
        &[
            1.0 / 90.0,
            -2.0 / 90.0,
            4.0 / 90.0,
            -8.0 / 90.0,
            16.0 / 90.0,
        ],
        &[32.0 / 45.0, 16.0 / 45.0, 8.0 / 45.0, 4.0 / 45.0, 2.0 / 45.0],
        &[
            32.0 / 45.0,
            -16.0 / 45.0,
            8.0 / 45.0,
            -4.0 / 45.0,
            2.0 / 45.0,
        ],
        &[0.0, 0.0, 0.0, 0.0, 1.0],
    ];

    #[inline(always)]
    fn bt<W: Wide>(x: [W; 8]) -> [W; 8] {
        bt8(x)
    }

    #[inline(always)]
    fn at<W: Wide>(x: [W; 8]) -> [W; 4] {
        let (s1, d1) = (x[1].add(x[2]), x[1].sub(x[2]));
        let (s2, d2) = (x[3].add(x[4]), x[3].sub(x[4]));
        let (s3, d3) = (x[5].add(x[6]), x[5].sub(x[6]));
        [
            x[0].add(s1).add(s2).add(s3),
            d3.madd(0.5, d2.madd(2.0, d1)),
            s3.madd(0.25, s2.madd(4.0, s1)),
            d3.madd(0.125, d2.madd(8.0, d1)).add(x[7]),
        ]
    }

    #[inline(always)]
    fn a<W: Wide>(x: [W; 4]) -> [W; 8] {
        let at = |p: f32| {
            let e = x[2].madd(p * p, x[0]);
            let o = x[3].madd(p * p * p, x[1].madd(p, W::zero()));
            (e, o)
        };
        let (e1, o1) = at(1.0);
        let (e2, o2) = at(2.0);
        let (e3, o3) = at(0.5);
        [
            x[0],
            e1.add(o1),
            e1.sub(o1),
            e2.add(o2),
            e2.sub(o2),
            e3.add(o3),
            e3.sub(o3),
            x[3],
        ]
    }
}

/// Tiles: `ty x tx` per image, each `m x m` outputs. Tile rows are
/// numbered through the whole batch (`img * ty + tr`), and a band (the unit
/// of work) is a range of them that may span images: small images (17x17,
/// 7x7) would otherwise give GEMMs of a handful of rows.
#[derive(Clone, Copy)]
struct Tiling {
    m: usize,
    ty: usize,
    tx: usize,
    /// Tile rows in the batch.
    rows: usize,
    /// Tile rows per band.
    band_rows: usize,
}

impl Tiling {
    /// Bands of about `bytes` of transformed tiles (V and M together),
    /// balanced so the last band is not a sliver.
    fn new(g: &ConvGeometry, m: usize, points: usize, bytes: usize) -> Self {
        let (ty, tx) = (g.oh.div_ceil(m), g.ow.div_ceil(m));
        let rows = g.n * ty;
        let target = (bytes / (points * 4 * (g.c + g.f))).clamp(16, 2048);
        let band_rows = target.div_ceil(tx.max(1)).clamp(1, rows.max(1));
        let bands = rows.div_ceil(band_rows).max(1);
        Tiling {
            m,
            ty,
            tx,
            rows,
            band_rows: rows.div_ceil(bands).max(1),
        }
    }

    fn bands(&self) -> usize {
        self.rows.div_ceil(self.band_rows)
    }

    /// Global tile rows `[r0, r1)` of band `b`.
    fn band(&self, b: usize) -> (usize, usize) {
        let r0 = b * self.band_rows;
        (r0, (r0 + self.band_rows).min(self.rows))
    }

    /// Offset (in pixels) of the first output pixel of global tile row `r`
    /// in an `(n, oh, ow)` output; `r = rows` gives the end.
    fn pixel_offset(&self, g: &ConvGeometry, r: usize) -> usize {
        let (img, tr) = (r / self.ty.max(1), r % self.ty.max(1));
        (img * g.oh + self.m * tr) * g.ow
    }

    /// The tiles of global tile rows `[r0, r1)`, numbered from 0, as
    /// `(n, image, tile row, tile column)`.
    fn tiles(
        &self,
        (r0, r1): (usize, usize),
    ) -> impl Iterator<Item = (usize, usize, usize, usize)> {
        let (tx, ty) = (self.tx, self.ty.max(1));
        (r0..r1)
            .flat_map(move |r| (0..tx).map(move |tc| (r / ty, r % ty, tc)))
            .enumerate()
            .map(|(n, (img, tr, tc))| (n, img, tr, tc))
    }
}

/// Elements of a `c x f` matrix per step of the kernel transforms: their
/// f64 sums (4 KiB) stay in L1 (summing whole 64 x 128 matrices went
/// through L2 and took longer than the scalar transform it replaced).
const KERNEL_CHUNK: usize = 512;

/// `U = G g Gᵀ` for every (channel, filter): `T * T` matrices `c x f`.
/// Point `(i, j)` is `sum over taps (a, b) of G[i][a] G[j][b] g[a][b]`,
/// nine multiply-adds per element of a `c x f` matrix, in f64, one point
/// per task.
/// Every element of `u` (`T * T * c * f` values) is written.
fn transform_kernel<const T: usize>(
    g: &ConvGeometry,
    gm: &[&[f64]],
    kernel: &[f32],
    u: &mut [f32],
) {
    let (cf, r) = (g.c * g.f, g.kh);
    assert!(gm.len() == T && gm.iter().all(|row| row.len() == r) && g.kw == r);
    assert_eq!(u.len(), T * T * cf, "Winograd: kernel transform buffer");
    u.par_chunks_mut(cf.max(1)).enumerate().for_each(|(p, up)| {
        let (i, j) = (p / T, p % T);
        // In chunks whose sums stay in L1.
        let mut acc = [0.0f64; KERNEL_CHUNK];
        for (e, out) in up.chunks_mut(KERNEL_CHUNK).enumerate() {
            let (e0, acc) = (e * KERNEL_CHUNK, &mut acc[..out.len()]);
            acc.fill(0.0);
            for a in 0..r {
                for b in 0..r {
                    let k = gm[i][a] * gm[j][b];
                    if k != 0.0 {
                        let tap = &kernel[(a * r + b) * cf + e0..];
                        acc.iter_mut()
                            .zip(tap)
                            .for_each(|(s, &w)| *s += k * w as f64);
                    }
                }
            }
            out.iter_mut().zip(&*acc).for_each(|(o, &v)| *o = v as f32);
        }
    });
}

thread_local! {
    /// The calling thread's buffer for a layer's kernel transforms, kept
    /// between calls: a fresh one per forward pass was zeroed (and its
    /// pages faulted in) on the calling thread while the pool waited.
    static KERNEL_BUF: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Runs `body` with a buffer of `len` floats whose contents are
/// unspecified (the kernel transforms overwrite all of it): this
/// thread's, or a new one when a caller up the stack holds it.
pub(super) fn with_kernel_buffer<R>(len: usize, body: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = KERNEL_BUF.with(|b| b.take());
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let r = body(&mut buf[..len]);
    KERNEL_BUF.with(|b| b.set(buf));
    r
}

/// `dg = Gᵀ dU G` for every (channel, filter), into HWIO `dkernel`: tap
/// `(a, b)` is `sum over points (i, j) of G[i][a] G[j][b] dU[i][j]`, in
/// f64, one tap per task.
fn untransform_kernel<const T: usize>(
    g: &ConvGeometry,
    gm: &[&[f64]],
    du: &[f32],
    dkernel: &mut [f32],
) {
    let (cf, r) = (g.c * g.f, g.kh);
    assert!(gm.len() == T && gm.iter().all(|row| row.len() == r) && g.kw == r);
    dkernel[..r * r * cf]
        .par_chunks_mut(cf.max(1))
        .enumerate()
        .for_each(|(tap, out)| {
            let (a, b) = (tap / r, tap % r);
            // In chunks whose sums stay in L1.
            let mut acc = [0.0f64; KERNEL_CHUNK];
            for (e, out) in out.chunks_mut(KERNEL_CHUNK).enumerate() {
                let (e0, acc) = (e * KERNEL_CHUNK, &mut acc[..out.len()]);
                acc.fill(0.0);
                for i in 0..T {
                    for j in 0..T {
                        let k = gm[i][a] * gm[j][b];
                        if k != 0.0 {
                            let p = i * T + j;
                            acc.iter_mut()
                                .zip(&du[p * cf + e0..])
                                .for_each(|(s, &v)| *s += k * v as f64);
                        }
                    }
                }
                out.iter_mut().zip(&*acc).for_each(|(o, &v)| *o = v as f32);
            }
        });
}

/// Channel blocks of `c` channels: `(first channel, lanes)`, 16 lanes but
/// for the last.
pub(super) fn blocks(c: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..c)
        .step_by(LANES)
        .map(move |ch| (ch, (c - ch).min(LANES)))
}

/// `[f(0), f(1), ...]`, always inlined: `std::array::from_fn` (through
/// its `try_from_fn` chain) was left out of line in builds without
/// `-C target-cpu`, and code outside a `#[target_feature]` function cannot
/// inline the intrinsics: every add became a call, and a user's build ran
/// the Winograd transforms 3.6x slower than this workspace's.
#[inline(always)]
pub(super) fn lanes<W: Wide, const N: usize>(mut f: impl FnMut(usize) -> W) -> [W; N] {
    let mut out = [W::zero(); N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = f(i);
    }
    out
}

/// Fills `out` with `R` rows made by `f(i)` and returns it, neither
/// zeroing it first nor moving it: zeroing a 6x6 table of vectors cost a
/// `memset` call per tile and channel block (6% of a 72x72 32 -> 64
/// layer's time), and returning it by value a `memcpy`; the compiler
/// removed neither.
#[inline(always)]
fn table<W: Copy, const R: usize, const C: usize>(
    out: &mut std::mem::MaybeUninit<[[W; C]; R]>,
    mut f: impl FnMut(usize) -> [W; C],
) -> &[[W; C]; R] {
    let rows = out.as_mut_ptr() as *mut [W; C];
    for i in 0..R {
        // SAFETY: row i < R lies in `out`.
        unsafe { rows.add(i).write(f(i)) };
    }
    // SAFETY: all R rows were written above.
    unsafe { out.assume_init_ref() }
}

/// `V = Bᵀ d B` of one tile and channel block: `ld(i, j)` gives the input
/// at tile row `i`, column `j`; point `p` goes to `dst + p * stride`.
///
/// # Safety
/// The masked lanes at every `dst + p * stride` must be writable.
#[inline(always)]
unsafe fn input_tile<W: Wide, const M: usize, const T: usize, const P: usize, V>(
    ld: impl Fn(usize, usize) -> W,
    dst: *mut f32,
    stride: usize,
    mask: W::Mask,
) where
    V: Variant<M, T, P>,
{
    // Along each row, then down each column.
    let mut rows = std::mem::MaybeUninit::uninit();
    let rows: &[[W; T]; T] = table(&mut rows, |i| V::bt(lanes(|j| ld(i, j))));
    for k in 0..T {
        let col = V::bt(lanes(|i| rows[i][k]));
        for (i, v) in col.into_iter().enumerate() {
            // SAFETY: the caller guarantees point i * T + k is writable.
            unsafe { v.store(dst.add((i * T + k) * stride), mask) };
        }
    }
}

/// `V = Bᵀ d B` for the tiles of global tile rows `[r0, r1)`, into `v`
/// (`P` matrices `tiles x c`, `tiles = (r1 - r0) * tx`). Tiles wholly
/// inside the input load without checks; the others read zeros outside.
///
/// # Safety
/// `W` must run on this CPU (see [`Path`]).
#[inline(always)]
unsafe fn input_band<W: Wide, const M: usize, const T: usize, const P: usize, V>(
    g: &ConvGeometry,
    t: &Tiling,
    input: &[f32],
    rows: (usize, usize),
    v: &mut [f32],
) where
    V: Variant<M, T, P>,
{
    let c = g.c;
    let tiles = (rows.1 - rows.0) * t.tx;
    let stride = tiles * c;
    assert!(v.len() >= P * stride && input.len() >= g.n * g.h * g.w * c);
    let (h, w) = (g.h as isize, g.w as isize);
    let (src, dst) = (input.as_ptr(), v.as_mut_ptr());
    for (n, img, tr, tc) in t.tiles(rows) {
        let y0 = (M * tr) as isize - g.pads.top as isize;
        let x0 = (M * tc) as isize - g.pads.left as isize;
        let inside = y0 >= 0 && x0 >= 0 && y0 + T as isize <= h && x0 + T as isize <= w;
        // Pixel (y, x) of this image, which may lie outside it.
        let pixel = |y: isize, x: isize| ((img as isize * h + y) * w + x) * c as isize;
        let corner = pixel(y0, x0);
        for (ch, lanes) in blocks(c) {
            let mask = W::mask(lanes);
            // SAFETY: tile n's points lie in v (asserted above, n < tiles,
            // ch + lanes <= c); every load is of a pixel inside the image
            // (checked per tile, or per pixel at the edges), ch + lanes <= c.
            unsafe {
                let out = dst.add(n * c + ch);
                if inside {
                    let at = src.offset(corner).add(ch);
                    input_tile::<W, M, T, P, V>(
                        |i, j| W::load(at.add((i * g.w + j) * c), mask),
                        out,
                        stride,
                        mask,
                    );
                } else {
                    input_tile::<W, M, T, P, V>(
                        |i, j| {
                            let (y, x) = (y0 + i as isize, x0 + j as isize);
                            if y >= 0 && x >= 0 && y < h && x < w {
                                W::load(src.offset(pixel(y, x)).add(ch), mask)
                            } else {
                                W::zero()
                            }
                        },
                        out,
                        stride,
                        mask,
                    );
                }
            }
        }
    }
}

/// `Y = Aᵀ M A` of one tile and filter block, plus `bias` and the ReLU
/// when `relu`: point `p` at `src + p * stride`; output `(i, j)` goes to
/// `st(i, j, y)`.
///
/// # Safety
/// The masked lanes at every `src + p * stride` must be readable.
#[inline(always)]
unsafe fn output_tile<W: Wide, const M: usize, const T: usize, const P: usize, V>(
    src: *const f32,
    stride: usize,
    mask: W::Mask,
    bias: W,
    relu: bool,
    mut st: impl FnMut(usize, usize, W),
) where
    V: Variant<M, T, P>,
{
    let mut rows = std::mem::MaybeUninit::uninit();
    let rows: &[[W; M]; T] = table(&mut rows, |i| {
        // SAFETY: the caller guarantees every point is readable.
        V::at(lanes(|j| unsafe {
            W::load(src.add((i * T + j) * stride), mask)
        }))
    });
    for j in 0..M {
        let col = V::at(lanes(|i| rows[i][j]));
        for (i, y) in col.into_iter().enumerate() {
            let y = y.add(bias);
            st(i, j, if relu { y.relu() } else { y });
        }
    }
}

/// The output transform of a band: `Y = Aᵀ M A` for the tiles of global
/// tile rows `[r0, r1)` from `m` (`P` matrices `tiles x f`), with the bias
/// and the ReLU, into `out` (the band's output pixels, from pixel `base`).
/// Tiles past the output's edge drop their outside outputs.
///
/// # Safety
/// `W` must run on this CPU (see [`Path`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn output_band<W: Wide, const M: usize, const T: usize, const P: usize, V>(
    g: &ConvGeometry,
    t: &Tiling,
    rows: (usize, usize),
    m: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
    base: usize,
) where
    V: Variant<M, T, P>,
{
    let f = g.f;
    let tiles = (rows.1 - rows.0) * t.tx;
    let stride = tiles * f;
    assert!(m.len() >= P * stride);
    assert!(out.len() >= (t.pixel_offset(g, rows.1) - base) * f);
    assert!(bias.is_none_or(|b| b.len() >= f));
    let (src, dst) = (m.as_ptr(), out.as_mut_ptr());
    for (n, img, tr, tc) in t.tiles(rows) {
        let nr = (g.oh - M * tr).min(M);
        let nc = (g.ow - M * tc).min(M);
        let corner = ((img * g.oh + M * tr) * g.ow + M * tc - base) * f;
        for (fl, lanes) in blocks(f) {
            let mask = W::mask(lanes);
            // SAFETY: tile n's points lie in m (asserted), fl + lanes <= f;
            // the outputs stored, rows < nr and columns < nc, are pixels of
            // this band (asserted: the band ends at pixel_offset(r1)).
            unsafe {
                let b = bias.map_or(W::zero(), |b| W::load(b.as_ptr().add(fl), mask));
                let (from, to) = (src.add(n * f + fl), dst.add(corner + fl));
                let at = |i: usize, j: usize| to.add((i * g.ow + j) * f);
                if nr == M && nc == M {
                    output_tile::<W, M, T, P, V>(from, stride, mask, b, relu, |i, j, y| {
                        y.store(at(i, j), mask)
                    });
                } else {
                    output_tile::<W, M, T, P, V>(from, stride, mask, b, relu, |i, j, y| {
                        if i < nr && j < nc {
                            y.store(at(i, j), mask)
                        }
                    });
                }
            }
        }
    }
}

/// `dM = A dY Aᵀ` of one tile and filter block: `ld(i, j)` gives the
/// output gradient at tile row `i`, column `j`; point `p` goes to
/// `dst + p * stride`. Returns the sum of the tile's `dY` (for the bias
/// gradient).
///
/// # Safety
/// The masked lanes at every `dst + p * stride` must be writable.
#[inline(always)]
unsafe fn gradient_tile<W: Wide, const M: usize, const T: usize, const P: usize, V>(
    ld: impl Fn(usize, usize) -> W,
    dst: *mut f32,
    stride: usize,
    mask: W::Mask,
) -> W
where
    V: Variant<M, T, P>,
{
    let mut sum = W::zero();
    let mut rows = std::mem::MaybeUninit::uninit();
    let rows: &[[W; T]; M] = table(&mut rows, |i| {
        let x: [W; M] = lanes(|j| ld(i, j));
        let mut s = W::zero();
        for v in x {
            s = s.add(v);
        }
        sum = sum.add(s);
        V::a(x)
    });
    for k in 0..T {
        let col = V::a(lanes(|i| rows[i][k]));
        for (i, v) in col.into_iter().enumerate() {
            // SAFETY: the caller guarantees point i * T + k is writable.
            unsafe { v.store(dst.add((i * T + k) * stride), mask) };
        }
    }
    sum
}

/// `dM = A dY Aᵀ` for the tiles of global tile rows `[r0, r1)` into `dm`
/// (`P` matrices `tiles x f`); outputs past the edge count as 0. Adds
/// the band's `dY`, summed over its pixels, to `db` (`f` values).
///
/// # Safety
/// `W` must run on this CPU (see [`Path`]).
#[inline(always)]
unsafe fn gradient_band<W: Wide, const M: usize, const T: usize, const P: usize, V>(
    g: &ConvGeometry,
    t: &Tiling,
    dy: &[f32],
    rows: (usize, usize),
    dm: &mut [f32],
    db: &mut [f32],
) where
    V: Variant<M, T, P>,
{
    let f = g.f;
    let tiles = (rows.1 - rows.0) * t.tx;
    let stride = tiles * f;
    assert!(dm.len() >= P * stride && dy.len() >= g.n * g.oh * g.ow * f && db.len() >= f);
    let (src, dst, sums) = (dy.as_ptr(), dm.as_mut_ptr(), db.as_mut_ptr());
    for (n, img, tr, tc) in t.tiles(rows) {
        let nr = (g.oh - M * tr).min(M);
        let nc = (g.ow - M * tc).min(M);
        let corner = ((img * g.oh + M * tr) * g.ow + M * tc) * f;
        for (fl, lanes) in blocks(f) {
            let mask = W::mask(lanes);
            // SAFETY: tile n's points lie in dm (asserted), fl + lanes <= f;
            // the loads, rows < nr and columns < nc, are pixels of dy.
            unsafe {
                let (from, to) = (src.add(corner + fl), dst.add(n * f + fl));
                let at = |i: usize, j: usize| from.add((i * g.ow + j) * f);
                let sum = if nr == M && nc == M {
                    gradient_tile::<W, M, T, P, V>(|i, j| W::load(at(i, j), mask), to, stride, mask)
                } else {
                    gradient_tile::<W, M, T, P, V>(
                        |i, j| {
                            if i < nr && j < nc {
                                W::load(at(i, j), mask)
                            } else {
                                W::zero()
                            }
                        },
                        to,
                        stride,
                        mask,
                    )
                };
                // db has f values (asserted), fl + lanes <= f.
                W::load(sums.add(fl), mask)
                    .add(sum)
                    .store(sums.add(fl), mask);
            }
        }
    }
}

/// The band transforms built for each [`Path`]: a `#[target_feature]`
/// function per transform for AVX-512 (the intrinsics inline only there),
/// the portable one otherwise.
struct Transforms<const M: usize, const T: usize, const P: usize, V>(std::marker::PhantomData<V>);

#[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
#[allow(clippy::incompatible_msrv)]
impl<const M: usize, const T: usize, const P: usize, V: Variant<M, T, P>> Transforms<M, T, P, V> {
    /// [`input_band`] with AVX-512.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn input_avx512(
        g: &ConvGeometry,
        t: &Tiling,
        input: &[f32],
        rows: (usize, usize),
        v: &mut [f32],
    ) {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { input_band::<Zmm, M, T, P, V>(g, t, input, rows, v) }
    }

    /// [`output_band`] with AVX-512.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    unsafe fn output_avx512(
        g: &ConvGeometry,
        t: &Tiling,
        rows: (usize, usize),
        m: &[f32],
        bias: Option<&[f32]>,
        relu: bool,
        out: &mut [f32],
        base: usize,
    ) {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { output_band::<Zmm, M, T, P, V>(g, t, rows, m, bias, relu, out, base) }
    }

    /// [`gradient_band`] with AVX-512.
    ///
    /// # Safety
    /// The CPU must have AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn gradient_avx512(
        g: &ConvGeometry,
        t: &Tiling,
        dy: &[f32],
        rows: (usize, usize),
        dm: &mut [f32],
        db: &mut [f32],
    ) {
        // SAFETY: the caller guarantees AVX-512F.
        unsafe { gradient_band::<Zmm, M, T, P, V>(g, t, dy, rows, dm, db) }
    }
}

#[cfg(target_arch = "x86_64")]
impl<const M: usize, const T: usize, const P: usize, V: Variant<M, T, P>> Transforms<M, T, P, V> {
    /// [`input_band`] with AVX2 and FMA.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn input_avx2(
        g: &ConvGeometry,
        t: &Tiling,
        input: &[f32],
        rows: (usize, usize),
        v: &mut [f32],
    ) {
        // SAFETY: the caller guarantees AVX2 and FMA.
        unsafe { input_band::<Ymm2, M, T, P, V>(g, t, input, rows, v) }
    }

    /// [`output_band`] with AVX2 and FMA.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn output_avx2(
        g: &ConvGeometry,
        t: &Tiling,
        rows: (usize, usize),
        m: &[f32],
        bias: Option<&[f32]>,
        relu: bool,
        out: &mut [f32],
        base: usize,
    ) {
        // SAFETY: the caller guarantees AVX2 and FMA.
        unsafe { output_band::<Ymm2, M, T, P, V>(g, t, rows, m, bias, relu, out, base) }
    }

    /// [`gradient_band`] with AVX2 and FMA.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn gradient_avx2(
        g: &ConvGeometry,
        t: &Tiling,
        dy: &[f32],
        rows: (usize, usize),
        dm: &mut [f32],
        db: &mut [f32],
    ) {
        // SAFETY: the caller guarantees AVX2 and FMA.
        unsafe { gradient_band::<Ymm2, M, T, P, V>(g, t, dy, rows, dm, db) }
    }
}

impl<const M: usize, const T: usize, const P: usize, V: Variant<M, T, P>> Transforms<M, T, P, V> {
    /// [`input_band`] on `path`.
    fn input(
        path: Path,
        g: &ConvGeometry,
        t: &Tiling,
        input: &[f32],
        rows: (usize, usize),
        v: &mut [f32],
    ) {
        match path {
            // SAFETY: Path::Avx512 is only chosen on a CPU with AVX-512F.
            #[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
            Path::Avx512 => unsafe { Self::input_avx512(g, t, input, rows, v) },
            // SAFETY: Path::Avx2 is only chosen on a CPU with AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => unsafe { Self::input_avx2(g, t, input, rows, v) },
            // SAFETY: the portable lanes run anywhere.
            Path::Portable => unsafe { input_band::<Portable, M, T, P, V>(g, t, input, rows, v) },
        }
    }

    /// [`output_band`] on `path`.
    #[allow(clippy::too_many_arguments)]
    fn output(
        path: Path,
        g: &ConvGeometry,
        t: &Tiling,
        rows: (usize, usize),
        m: &[f32],
        bias: Option<&[f32]>,
        relu: bool,
        out: &mut [f32],
        base: usize,
    ) {
        match path {
            // SAFETY: Path::Avx512 is only chosen on a CPU with AVX-512F.
            #[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
            Path::Avx512 => unsafe { Self::output_avx512(g, t, rows, m, bias, relu, out, base) },
            // SAFETY: Path::Avx2 is only chosen on a CPU with AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => unsafe { Self::output_avx2(g, t, rows, m, bias, relu, out, base) },
            // SAFETY: the portable lanes run anywhere.
            Path::Portable => unsafe {
                output_band::<Portable, M, T, P, V>(g, t, rows, m, bias, relu, out, base)
            },
        }
    }

    /// [`gradient_band`] on `path`.
    fn gradient(
        path: Path,
        g: &ConvGeometry,
        t: &Tiling,
        dy: &[f32],
        rows: (usize, usize),
        dm: &mut [f32],
        db: &mut [f32],
    ) {
        match path {
            // SAFETY: Path::Avx512 is only chosen on a CPU with AVX-512F.
            #[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
            Path::Avx512 => unsafe { Self::gradient_avx512(g, t, dy, rows, dm, db) },
            // SAFETY: Path::Avx2 is only chosen on a CPU with AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => unsafe { Self::gradient_avx2(g, t, dy, rows, dm, db) },
            // SAFETY: the portable lanes run anywhere.
            Path::Portable => unsafe {
                gradient_band::<Portable, M, T, P, V>(g, t, dy, rows, dm, db)
            },
        }
    }
}

/// One cache line of `f32`s: the scratch buffers are made of these, so
/// that with channel counts that are multiples of 16 every vector load
/// and store of the transformed tiles is aligned.
#[repr(C, align(64))]
#[derive(Clone, Copy)]
pub(super) struct Line([f32; LANES]);

/// `v` as `len` values: grown (zero-filled) when too short, never shrunk,
/// so a thread's scratch is allocated once per run.
pub(super) fn scratch(v: &mut Vec<Line>, len: usize) -> &mut [f32] {
    let lines = len.div_ceil(LANES);
    if v.len() < lines {
        v.resize(lines, Line([0.0; LANES]));
    }
    // SAFETY: `Line` is `repr(C)` around 16 `f32`s with no padding, so
    // `lines` of them are `16 * lines >= len` initialised, contiguous
    // `f32`s, borrowed mutably from `v` for the slice's lifetime.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr() as *mut f32, len) }
}

/// Forward convolution with output tiles of side `m` (2 or 4).
#[allow(clippy::too_many_arguments)]
fn forward_with_tile(
    g: &ConvGeometry,
    input: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
    m: usize,
    path: Path,
) {
    // Each band's rows of the output, contiguous even across images.
    let t = forward_tiling(g, m);
    let mut bands = Vec::with_capacity(t.bands());
    let mut rest = out;
    for b in 0..t.bands() {
        let (r0, r1) = t.band(b);
        let len = (t.pixel_offset(g, r1) - t.pixel_offset(g, r0)) * g.f;
        let (band, tail) = std::mem::take(&mut rest).split_at_mut(len);
        bands.push(BandOut::Rows(band));
        rest = tail;
    }
    let sink = &|(), _: (usize, usize), _: &[f32]| {};
    if g.kh == 5 && m == 4 {
        forward_impl::<4, 8, 64, F45, ()>(g, input, kernel, bias, epilogue, bands, sink, path)
    } else if g.kh == 5 {
        forward_impl::<2, 6, 36, F5, ()>(g, input, kernel, bias, epilogue, bands, sink, path)
    } else if m == 6 {
        forward_impl::<6, 8, 64, F6, ()>(g, input, kernel, bias, epilogue, bands, sink, path)
    } else if m == 4 {
        forward_impl::<4, 6, 36, F4, ()>(g, input, kernel, bias, epilogue, bands, sink, path)
    } else {
        forward_impl::<2, 4, 16, F2, ()>(g, input, kernel, bias, epilogue, bands, sink, path)
    }
}

/// Forward convolution; lengths already checked, `fits(g)` true. `m` is
/// the output tile side, 0 to choose by shape.
pub(super) fn forward(
    g: &ConvGeometry,
    input: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
    m: usize,
) {
    let m = match (m, g.kh) {
        (0, _) => default_tile(g),
        (4 | 6, 5) => 4,
        (_, 5) => 2,
        _ => m,
    };
    forward_with_tile(g, input, kernel, bias, epilogue, out, m, Path::detect())
}

thread_local! {
    /// Each thread's transformed tiles (V, then M or dM) and, for
    /// [`forward_bands`], its band of output, kept between calls:
    /// allocating and zeroing them per band cost page faults.
    static SCRATCH: std::cell::Cell<(Vec<Line>, Vec<Line>, Vec<Line>)> =
        const { std::cell::Cell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// Runs `body` with this thread's scratch buffers (empty ones when a
/// caller up the stack holds them).
pub(super) fn with_scratch<R>(
    body: impl FnOnce(&mut Vec<Line>, &mut Vec<Line>, &mut Vec<Line>) -> R,
) -> R {
    let (mut v, mut m, mut y) = SCRATCH.with(|s| s.take());
    let r = body(&mut v, &mut m, &mut y);
    SCRATCH.with(|s| s.set((v, m, y)));
    r
}

/// The forward pass's tiling of `g` with output tiles of side `m`: bands
/// of about 768 KiB of transformed tiles.
fn forward_tiling(g: &ConvGeometry, m: usize) -> Tiling {
    let t = m + g.kh - 1;
    Tiling::new(g, m, t * t, 768 << 10)
}

/// The bands [`forward_bands`] computes `g` in (default tile side), in
/// order: each band's output rows `[first, end)`, numbered through the
/// batch (`image * oh + row`). They cover every output row once.
pub(super) fn forward_band_rows(g: &ConvGeometry) -> Vec<(usize, usize)> {
    if g.ow == 0 || g.oh == 0 || g.n == 0 {
        return Vec::new();
    }
    let t = forward_tiling(g, default_tile(g));
    (0..t.bands())
        .map(|b| {
            let (r0, r1) = t.band(b);
            (t.pixel_offset(g, r0) / g.ow, t.pixel_offset(g, r1) / g.ow)
        })
        .collect()
}

/// Where the forward pass puts a band's output.
enum BandOut<'a, S> {
    /// Straight into the band's rows of the whole output.
    Rows(&'a mut [f32]),
    /// Into this thread's scratch, then handed to the sink with `S`.
    Sink(S),
}

/// The forward convolution (default tile side) band by band, as
/// [`forward_band_rows`] lists them: each band's output rows (`rows x ow x
/// f` values, bias and epilogue applied) are computed into the thread's
/// scratch and handed to `sink` with that band's item of `items` (one per
/// band) and its row range, while they are still in cache. Lengths already
/// checked, `fits(g)` true.
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_bands<S: Send>(
    g: &ConvGeometry,
    input: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    items: Vec<S>,
    sink: &BandSink<'_, S>,
) {
    let rows = forward_band_rows(g);
    assert_eq!(rows.len(), items.len(), "one item per band");
    let bands = items.into_iter().map(BandOut::Sink).collect();
    let path = Path::detect();
    let m = default_tile(g);
    if m == 6 {
        forward_impl::<6, 8, 64, F6, S>(g, input, kernel, bias, epilogue, bands, sink, path)
    } else if m == 4 {
        forward_impl::<4, 6, 36, F4, S>(g, input, kernel, bias, epilogue, bands, sink, path)
    } else {
        forward_impl::<2, 4, 16, F2, S>(g, input, kernel, bias, epilogue, bands, sink, path)
    }
}

#[allow(clippy::too_many_arguments)]
fn forward_impl<const M: usize, const T: usize, const P: usize, V: Variant<M, T, P>, S: Send>(
    g: &ConvGeometry,
    input: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    bands: Vec<BandOut<'_, S>>,
    sink: &BandSink<'_, S>,
    path: Path,
) {
    let (c, f) = (g.c, g.f);
    let t = forward_tiling(g, M);
    assert_eq!(bands.len(), t.bands(), "one output per band");
    with_kernel_buffer(P * c * f, |u| {
        transform_kernel::<T>(g, V::G, kernel, u);
        forward_bands_with::<M, T, P, V, S>(g, input, &t, u, bias, epilogue, bands, sink, path)
    })
}

/// [`forward_impl`]'s bands, with the kernel transforms `u`.
#[allow(clippy::too_many_arguments)]
fn forward_bands_with<
    const M: usize,
    const T: usize,
    const P: usize,
    V: Variant<M, T, P>,
    S: Send,
>(
    g: &ConvGeometry,
    input: &[f32],
    t: &Tiling,
    u: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    bands: Vec<BandOut<'_, S>>,
    sink: &BandSink<'_, S>,
    path: Path,
) {
    let (c, f) = (g.c, g.f);
    let relu = epilogue == Epilogue::Relu;
    let packed = pack_points(P, c, f, u);
    bands.into_par_iter().enumerate().for_each(|(b, out_band)| {
        with_scratch(|v, m, y| {
            let (r0, r1) = t.band(b);
            let base = t.pixel_offset(g, r0);
            let tiles = (r1 - r0) * t.tx;
            let v = scratch(v, P * tiles * c);
            let m = scratch(m, P * tiles * f);
            Transforms::<M, T, P, V>::input(path, g, t, input, (r0, r1), v);
            multiply(P, tiles, (c, f), v, u, packed.as_deref(), m);
            // Y = Aᵀ M A per tile, with the bias and activation, straight
            // into the band's rows (or the scratch the sink reads).
            match out_band {
                BandOut::Rows(out) => {
                    Transforms::<M, T, P, V>::output(path, g, t, (r0, r1), m, bias, relu, out, base)
                }
                BandOut::Sink(item) => {
                    let end = t.pixel_offset(g, r1);
                    let y = scratch(y, (end - base) * f);
                    Transforms::<M, T, P, V>::output(path, g, t, (r0, r1), m, bias, relu, y, base);
                    sink(item, (base / g.ow, end / g.ow), y);
                }
            }
        })
    });
}

/// The kernel transforms `u` (`points` matrices `c x f`) packed for
/// [`gemm_packed`], one task per point, where that kernel is the one in
/// use (`None` elsewhere: the `gemm` crate packs per call).
pub(super) fn pack_points(points: usize, c: usize, f: usize, u: &[f32]) -> Option<Vec<PackedB>> {
    gemm_packed::available().then(|| {
        (0..points)
            .into_par_iter()
            .map(|p| PackedB::pack_here(&u[p * c * f..(p + 1) * c * f], c, f))
            .collect()
    })
}

/// `m[p] = v[p] * u[p]` for each of the `points` transform points `p`: `v` holds the
/// points' `tiles x c` matrices, `u` (or `packed`, the same packed) their
/// `c x f` ones, `m` receives `tiles x f` each.
pub(super) fn multiply(
    points: usize,
    tiles: usize,
    (c, f): (usize, usize),
    v: &[f32],
    u: &[f32],
    packed: Option<&[PackedB]>,
    m: &mut [f32],
) {
    for p in 0..points {
        let (v, m) = (
            &v[p * tiles * c..(p + 1) * tiles * c],
            &mut m[p * tiles * f..(p + 1) * tiles * f],
        );
        match packed {
            Some(packed) => gemm_packed::gemm(tiles, v, c, &packed[p], m, None, Epilogue::None),
            None => sgemm(
                tiles,
                c,
                f,
                v,
                Layout::RowMajor,
                &u[p * c * f..(p + 1) * c * f],
                Layout::RowMajor,
                m,
                false,
                Parallelism::Sequential,
            ),
        }
    }
}

/// Input gradient as a forward Winograd convolution of `dy` with the
/// rotated, channel-swapped kernel; lengths already checked, `fits(g)`.
/// `m` is the output tile side, 0 to choose by shape.
pub(super) fn backward_input(
    g: &ConvGeometry,
    dy: &[f32],
    kernel: &[f32],
    dx: &mut [f32],
    m: usize,
) {
    let m = if m == 0 {
        default_tile(&input_gradient_geometry(g))
    } else {
        m
    };
    backward_input_with_tile(g, dy, kernel, dx, m, Path::detect())
}

/// The forward convolution whose output is the input gradient of `g`.
fn input_gradient_geometry(g: &ConvGeometry) -> ConvGeometry {
    // Output = the input's size: pads' = 2 - pads on the leading sides.
    let (top, left) = (2 - g.pads.top, 2 - g.pads.left);
    ConvGeometry {
        n: g.n,
        h: g.oh,
        w: g.ow,
        c: g.f,
        kh: 3,
        kw: 3,
        f: g.c,
        sh: 1,
        sw: 1,
        pads: Pads {
            top,
            left,
            bottom: g.h + 2 - g.oh - top,
            right: g.w + 2 - g.ow - left,
        },
        oh: g.h,
        ow: g.w,
    }
}

/// [`backward_input`] with output tiles of side `m` (2 or 4).
fn backward_input_with_tile(
    g: &ConvGeometry,
    dy: &[f32],
    kernel: &[f32],
    dx: &mut [f32],
    m: usize,
    path: Path,
) {
    let (c, f) = (g.c, g.f);
    // w'[a][b][f][c] = w[2-a][2-b][c][f].
    let mut rotated = vec![0.0f32; 9 * c * f];
    for a in 0..3 {
        for b in 0..3 {
            for ch in 0..c {
                for fl in 0..f {
                    rotated[((a * 3 + b) * f + fl) * c + ch] =
                        kernel[(((2 - a) * 3 + (2 - b)) * c + ch) * f + fl];
                }
            }
        }
    }
    let gt = input_gradient_geometry(g);
    forward_with_tile(&gt, dy, &rotated, None, Epilogue::None, dx, m, path);
}

/// Filter (and bias) gradient; lengths already checked, `fits(g)`. `m` is
/// the output tile side, 0 to choose by shape.
pub(super) fn backward_filter(
    g: &ConvGeometry,
    input: &[f32],
    dy: &[f32],
    dkernel: &mut [f32],
    dbias: Option<&mut [f32]>,
    m: usize,
) {
    let m = if m == 0 { default_tile(g) } else { m };
    backward_filter_with_tile(g, input, dy, dkernel, dbias, m, Path::detect())
}

/// [`backward_filter`] with output tiles of side `m` (2 or 4).
fn backward_filter_with_tile(
    g: &ConvGeometry,
    input: &[f32],
    dy: &[f32],
    dkernel: &mut [f32],
    dbias: Option<&mut [f32]>,
    m: usize,
    path: Path,
) {
    if m >= 4 {
        backward_filter_impl::<4, 6, 36, F4>(g, input, dy, dkernel, dbias, path)
    } else {
        backward_filter_impl::<2, 4, 16, F2>(g, input, dy, dkernel, dbias, path)
    }
}

fn backward_filter_impl<const M: usize, const T: usize, const P: usize, V: Variant<M, T, P>>(
    g: &ConvGeometry,
    input: &[f32],
    dy: &[f32],
    dkernel: &mut [f32],
    dbias: Option<&mut [f32]>,
    path: Path,
) {
    let (c, f) = (g.c, g.f);
    // Longer bands than the forward pass's (the tiles are the GEMMs' inner
    // dimension here), but not past L2 + a share of L3: 1.5 MiB against
    // 4 MiB measured 3% faster on conv2's filter gradient and 11% on
    // conv3's (alternated runs, F(4x4), batch 32).
    let t = Tiling::new(g, M, P, 1536 << 10);
    let bands = t.bands();
    let groups = FILTER_PARTIALS.min(bands.max(1));
    let want_bias = dbias.is_some();
    let partials: Vec<(Vec<f32>, Vec<f64>)> = (0..groups)
        .into_par_iter()
        .map(|grp| {
            let mut du = vec![0.0f32; P * c * f];
            let mut db = vec![0.0f64; if want_bias { f } else { 0 }];
            let mut band_db = vec![0.0f32; f];
            with_scratch(|v, dm, _| {
                for b in grp * bands / groups..(grp + 1) * bands / groups {
                    let (r0, r1) = t.band(b);
                    let tiles = (r1 - r0) * t.tx;
                    let v = scratch(v, P * tiles * c);
                    let dm = scratch(dm, P * tiles * f);
                    Transforms::<M, T, P, V>::input(path, g, &t, input, (r0, r1), v);
                    // dM = A dY Aᵀ per tile; outputs past the edge count as 0.
                    // The band's dY summed on the way, in f32, then added
                    // to the group's f64 sums.
                    band_db.fill(0.0);
                    Transforms::<M, T, P, V>::gradient(path, g, &t, dy, (r0, r1), dm, &mut band_db);
                    for p in 0..P {
                        // (c x tiles) x (tiles x f), V stored tiles x c.
                        sgemm(
                            c,
                            tiles,
                            f,
                            &v[p * tiles * c..(p + 1) * tiles * c],
                            Layout::Transposed,
                            &dm[p * tiles * f..(p + 1) * tiles * f],
                            Layout::RowMajor,
                            &mut du[p * c * f..(p + 1) * c * f],
                            true,
                            Parallelism::Sequential,
                        );
                    }
                    if want_bias {
                        db.iter_mut()
                            .zip(&band_db)
                            .for_each(|(a, &v)| *a += v as f64);
                    }
                }
            });
            (du, db)
        })
        .collect();
    // The partials summed in order, every element alike, on all threads
    // (one thread spent a millisecond on conv3's 8 x 1.2 MB).
    let mut du = vec![0.0f32; P * c * f];
    const CHUNK: usize = 4096;
    du.par_chunks_mut(CHUNK).enumerate().for_each(|(i, d)| {
        for (part, _) in &partials {
            d.iter_mut()
                .zip(&part[i * CHUNK..])
                .for_each(|(a, &v)| *a += v);
        }
    });
    untransform_kernel::<T>(g, V::G, &du, dkernel);
    if let Some(out) = dbias {
        let mut total = vec![0.0f64; f];
        for (_, db) in &partials {
            total.iter_mut().zip(db).for_each(|(a, &v)| *a += v);
        }
        out.iter_mut().zip(&total).for_each(|(o, &v)| *o = v as f32);
    }
}

#[cfg(test)]
mod tests {
    //! Every build of the transforms ([`Path`]) against f64 nested loops,
    //! on shapes with interior and edge tiles, tiles past the output's
    //! edge, padding on each side, and channel counts that are not
    //! multiples of 16 (the public tests only reach the widest build).

    use super::*;

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

    /// Forward, input gradient and filter gradient by nested loops:
    /// `(value, magnitude)` per element of each.
    #[allow(clippy::type_complexity)]
    fn naive(g: &ConvGeometry, x: &[f32], w: &[f32], dy: &[f32]) -> [(Vec<f64>, Vec<f64>); 3] {
        let zeros = |n: usize| (vec![0.0f64; n], vec![0.0f64; n]);
        let (mut y, mut dx, mut dw) = (
            zeros(g.n * g.oh * g.ow * g.f),
            zeros(x.len()),
            zeros(w.len()),
        );
        let add = |r: &mut (Vec<f64>, Vec<f64>), i: usize, t: f64| {
            r.0[i] += t;
            r.1[i] += t.abs();
        };
        for img in 0..g.n {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let iy = (oy + ky) as isize - g.pads.top as isize;
                            let ix = (ox + kx) as isize - g.pads.left as isize;
                            if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                continue;
                            }
                            let xi = ((img * g.h + iy as usize) * g.w + ix as usize) * g.c;
                            let yi = ((img * g.oh + oy) * g.ow + ox) * g.f;
                            for ch in 0..g.c {
                                for fl in 0..g.f {
                                    let wi = ((ky * g.kw + kx) * g.c + ch) * g.f + fl;
                                    let (xv, wv) = (x[xi + ch] as f64, w[wi] as f64);
                                    let dv = dy[yi + fl] as f64;
                                    add(&mut y, yi + fl, xv * wv);
                                    add(&mut dx, xi + ch, dv * wv);
                                    add(&mut dw, wi, dv * xv);
                                }
                            }
                        }
                    }
                }
            }
        }
        [y, dx, dw]
    }

    #[track_caller]
    fn assert_close(got: &[f32], want: &(Vec<f64>, Vec<f64>), what: &str) {
        let largest = want.1.iter().fold(0.0f64, |a, &m| a.max(m));
        for (i, ((&g, &v), &m)) in got.iter().zip(&want.0).zip(&want.1).enumerate() {
            let tol = 1e-5 * m + 1e-6 + 3e-5 * largest;
            assert!(
                (g as f64 - v).abs() <= tol,
                "{what}[{i}]: got {g}, want {v} (tolerance {tol})"
            );
        }
    }

    fn check(input: [usize; 4], f: usize, pads: [usize; 4], seed: u64) {
        let [n, h, w, c] = input;
        let [top, bottom, left, right] = pads;
        let padding = crate::Padding::Explicit {
            top,
            bottom,
            left,
            right,
        };
        let g = ConvGeometry::new(input, [3, 3, c, f], (1, 1), padding).unwrap();
        assert!(fits(&g));
        let x = values(n * h * w * c, seed);
        let k = values(9 * c * f, seed + 1);
        let bias = values(f, seed + 2);
        let dy = values(n * g.oh * g.ow * f, seed + 3);
        let [want_y, want_dx, want_dw] = naive(&g, &x, &k, &dy);
        let with_bias = |relu: bool| {
            let v = want_y
                .0
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    let v = v + bias[i % f] as f64;
                    if relu {
                        v.max(0.0)
                    } else {
                        v
                    }
                })
                .collect();
            (v, want_y.1.clone())
        };
        for path in Path::available() {
            for m in [2, 4, 6] {
                let ctx = format!("{path:?} m={m} {g:?}");
                let mut y = vec![f32::NAN; want_y.0.len()];
                forward_with_tile(&g, &x, &k, None, Epilogue::None, &mut y, m, path);
                assert_close(&y, &want_y, &format!("forward {ctx}"));
                for (relu, epilogue) in [(false, Epilogue::None), (true, Epilogue::Relu)] {
                    let mut y = vec![f32::NAN; want_y.0.len()];
                    forward_with_tile(&g, &x, &k, Some(&bias), epilogue, &mut y, m, path);
                    assert_close(&y, &with_bias(relu), &format!("forward {epilogue:?} {ctx}"));
                }
                let mut dx = vec![f32::NAN; x.len()];
                backward_input_with_tile(&g, &dy, &k, &mut dx, m, path);
                assert_close(&dx, &want_dx, &format!("input gradient {ctx}"));
                let mut dw = vec![f32::NAN; k.len()];
                let mut db = vec![f32::NAN; f];
                backward_filter_with_tile(&g, &x, &dy, &mut dw, Some(&mut db), m, path);
                assert_close(&dw, &want_dw, &format!("filter gradient {ctx}"));
                for (fl, &got) in db.iter().enumerate() {
                    let want: f64 = dy.iter().skip(fl).step_by(f).map(|&v| v as f64).sum();
                    assert!((got as f64 - want).abs() < 1e-4, "bias gradient {ctx}");
                }
            }
        }
    }

    /// F(2x2, 5x5)'s forward pass (the one it has) on every build.
    fn check_five(input: [usize; 4], f: usize, pads: [usize; 4], seed: u64) {
        let [n, h, w, c] = input;
        let [top, bottom, left, right] = pads;
        let padding = crate::Padding::Explicit {
            top,
            bottom,
            left,
            right,
        };
        let g = ConvGeometry::new(input, [5, 5, c, f], (1, 1), padding).unwrap();
        assert!(fits_forward(&g) && !fits(&g));
        let x = values(n * h * w * c, seed);
        let k = values(25 * c * f, seed + 1);
        let bias = values(f, seed + 2);
        let dy = values(n * g.oh * g.ow * f, seed + 3);
        let [want_y, _, _] = naive(&g, &x, &k, &dy);
        for (path, m) in Path::available().into_iter().flat_map(|p| [(p, 2), (p, 4)]) {
            let ctx = format!("{path:?} F({m}x{m}, 5x5) {g:?}");
            let mut y = vec![f32::NAN; want_y.0.len()];
            forward_with_tile(&g, &x, &k, None, Epilogue::None, &mut y, m, path);
            assert_close(&y, &want_y, &format!("forward {ctx}"));
            let mut y = vec![f32::NAN; want_y.0.len()];
            forward_with_tile(&g, &x, &k, Some(&bias), Epilogue::Relu, &mut y, m, path);
            let relu: Vec<f64> = want_y
                .0
                .iter()
                .enumerate()
                .map(|(i, &v)| (v + bias[i % f] as f64).max(0.0))
                .collect();
            assert_close(
                &y,
                &(relu, want_y.1.clone()),
                &format!("forward relu {ctx}"),
            );
        }
    }

    #[test]
    fn five_by_five_forward() {
        // InceptionV3's 5x5 layers ("same" padding of 2), channel
        // remainders, uneven padding, tiles past the edge (odd outputs).
        check_five([2, 8, 8, 48], 64, [2; 4], 11);
        check_five([1, 9, 7, 35], 19, [2, 1, 0, 4], 12);
        check_five([1, 6, 11, 3], 2, [0; 4], 13);
    }

    #[test]
    fn valid_with_channel_remainders() {
        // 35 channels: two full blocks and a 3-lane one; 19 filters.
        check([2, 13, 17, 35], 19, [0; 4], 1);
    }

    #[test]
    fn same_padding_full_blocks() {
        check([1, 10, 9, 16], 32, [1; 4], 2);
    }

    #[test]
    fn uneven_padding_and_few_channels() {
        check([1, 7, 6, 5], 17, [2, 0, 1, 2], 3);
        check([2, 5, 11, 1], 1, [0, 2, 2, 0], 4);
    }

    #[test]
    fn many_interior_tiles() {
        check([1, 22, 21, 48], 40, [0, 1, 1, 0], 5);
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_widest_build_is_chosen_where_the_cpu_has_it() {
        let avx512 = std::arch::is_x86_feature_detected!("avx512f");
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        let want = if cfg!(avx512_intrinsics) && avx512 {
            "Avx512"
        } else if avx2 {
            "Avx2"
        } else {
            "Portable"
        };
        assert_eq!(format!("{:?}", Path::detect()), want);
    }
}
