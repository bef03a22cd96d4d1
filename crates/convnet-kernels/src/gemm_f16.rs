//! Half-precision GEMM for constant weights: `C = A B (+ bias, ReLU)`
//! with `A` and `B` rounded to IEEE half precision (11 significant bits)
//! and the products summed in half precision over [`KCH`] terms at a time,
//! those partial sums then added in single precision.
//!
//! On CPUs with AVX512-FP16 (Intel Sapphire Rapids and later) a half
//! precision FMA does 32 multiply-adds where a single precision one does
//! 16, at the same rate: this machine's register-only loop measured 378
//! against 170 GFLOP/s per core. (AVX512-BF16's `vdpbf16ps`, which sums in
//! single precision, measured 86 here.) Convolutions of frozen layers use
//! it when the model asks for it ([`crate::conv::Precision::Half`]); the
//! cost is accuracy: about 1e-3 of a value's size per layer (see the tests).
//!
//! Layout: `B` (the layer's weights, `k x n`) is packed once per call into
//! panels of 64 columns (a last one of 32 when 32 or fewer are left), `k`
//! rounded up to [`KCH`] rows with zeros, one task per panel. A `B` larger
//! than [`B_BLOCK_BYTES`] is used in slices of `k`, one pass over `A`'s
//! rows each, so that the slice stays in L2 (1.04-1.06x on InceptionV3's
//! 3x3 stride-2 288 -> 384 layer, alternated in one process). `A` (an im2col tile, or the input
//! itself for a 1x1 convolution) is converted tile by tile into blocks of
//! [`MR`] rows, each in chunks of [`KCH`] columns, a chunk the block's rows
//! one after the other: the register block (12 rows x 64 columns, 24
//! accumulators) reads its row values at constant offsets from one
//! pointer, each broadcast by the FMA itself (a separate `vpbroadcastw`
//! takes a slot on one of the two FMA ports, which cost a fifth of the
//! speed).

// The AVX-512 intrinsics are stable since Rust 1.89, newer than the
// workspace's `rust-version`: this kernel is compiled only when `build.rs`
// found such a compiler (elsewhere `Half` is `Single`).
#![allow(clippy::incompatible_msrv)]
#![cfg_attr(
    not(all(target_arch = "x86_64", avx512_intrinsics)),
    allow(dead_code, unused_variables)
)]

#[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
use std::arch::x86_64::*;

#[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
use rayon::prelude::*;

use crate::conv::Epilogue;

/// Rows per register block.
pub(crate) const MR: usize = 12;
/// Products summed in half precision before their sum is added to the
/// single-precision one: 64 measured 1.1x the speed of 32 (fewer
/// conversions) with errors 1.4x larger.
pub(crate) const KCH: usize = 64;

/// Whether this CPU runs the half-precision kernel.
pub(crate) fn available() -> bool {
    #[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx512fp16")
    }
    #[cfg(not(all(target_arch = "x86_64", avx512_intrinsics)))]
    {
        false
    }
}

/// The largest finite half-precision value.
const HALF_MAX: f32 = 65504.0;

/// Columns of the panel starting with `left` columns still to pack.
fn panel_width(left: usize) -> usize {
    if left > 32 {
        64
    } else {
        32
    }
}

/// `B` (`k x n`) in half precision, packed for [`gemm`].
#[derive(Debug)]
pub(crate) struct PackedB16 {
    k: usize,
    n: usize,
    data: Vec<u16>,
}

impl PackedB16 {
    /// Packs `b` (`k x n`, row-major), or `None` where the kernel cannot
    /// take it: a CPU without AVX512-FP16, or a weight that is not finite
    /// or too large for half precision (the single-precision path then
    /// computes the layer).
    ///
    /// # Panics
    /// If `b` is shorter than `k * n`.
    pub(crate) fn new(b: &[f32], k: usize, n: usize) -> Option<Self> {
        assert!(
            b.len() >= k * n,
            "PackedB16: B has {} elements, needs {k}x{n}",
            b.len()
        );
        if !available() {
            return None;
        }
        let kp = k.div_ceil(KCH) * KCH;
        let starts: Vec<usize> = (0..n).step_by(64).collect();
        let len: usize = starts.iter().map(|&j0| kp * panel_width(n - j0)).sum();
        let mut data: Vec<u16> = Vec::with_capacity(len);
        // The panels, each packed by its own task (a layer's weights are
        // packed in every forward pass, and the pool would otherwise wait).
        let mut panels = Vec::with_capacity(starts.len());
        let mut rest = &mut data.spare_capacity_mut()[..len];
        for &j0 in &starts {
            let (panel, tail) = std::mem::take(&mut rest).split_at_mut(kp * panel_width(n - j0));
            panels.push((j0, panel));
            rest = tail;
        }
        #[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
        let ok = panels.into_par_iter().all(|(j0, panel)| {
            // SAFETY: AVX-512F is present (`available`); `pack_panel`
            // reads `k x n` values of `b` (checked above) and writes
            // every one of the panel's `kp x width` halves.
            unsafe { pack_panel(b, k, n, j0, panel) }
        });
        #[cfg(not(all(target_arch = "x86_64", avx512_intrinsics)))]
        let ok = {
            drop(panels);
            false
        };
        if !ok {
            return None;
        }
        // SAFETY: the panels cover `data`'s first `len` elements, and each
        // was written in full (`ok`: every task ran to its end).
        unsafe { data.set_len(len) };
        Some(PackedB16 { k, n, data })
    }
}

/// Packs columns `j0..` of `b` (`k x n`) into `out`, the panel of
/// [`PackedB16`] that starts there (`kp` rows of its width, every element
/// written); `false` if a value is not finite or too large for half
/// precision.
#[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
#[target_feature(enable = "avx512f")]
unsafe fn pack_panel(
    b: &[f32],
    k: usize,
    n: usize,
    j0: usize,
    out: &mut [std::mem::MaybeUninit<u16>],
) -> bool {
    let kp = k.div_ceil(KCH) * KCH;
    let width = panel_width(n - j0);
    let cols = (n - j0).min(64);
    assert!(out.len() >= kp * width, "PackedB16: panel too short");
    let limit = _mm512_set1_ps(HALF_MAX);
    let mut bad: __mmask16 = 0;
    let mut o = out.as_mut_ptr() as *mut __m256i;
    for p in 0..kp {
        for q in 0..width / 16 {
            let j = 16 * q;
            let v = if p < k && j < cols {
                let mask: __mmask16 = if cols - j >= 16 {
                    0xffff
                } else {
                    (1u16 << (cols - j)) - 1
                };
                let v = _mm512_maskz_loadu_ps(mask, b.as_ptr().add(p * n + j0 + j));
                // Not (|v| <= max): too large, or NaN.
                bad |= _mm512_cmp_ps_mask::<_CMP_NLE_UQ>(_mm512_abs_ps(v), limit);
                v
            } else {
                _mm512_setzero_ps()
            };
            _mm256_storeu_si256(o, _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v));
            o = o.add(1);
        }
    }
    bad == 0
}

/// `C = A B`, plus `bias`, then the epilogue, on the calling thread: `A`
/// is `m x k` with rows `lda` apart, `C` is `m x n` row-major, `scratch`
/// holds `A` in half precision. Returns `false` when some value of `C`
/// came out infinite or NaN (an overflow of half precision, or such an
/// input): `C` is then unspecified and the caller computes it in single
/// precision.
///
/// # Panics
/// If a slice is shorter than its matrix or `lda < k` (a bug in the
/// calling kernel, which checks user shapes first).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &PackedB16,
    scratch: &mut Vec<u16>,
    c: &mut [f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
) -> bool {
    let (k, n) = (b.k, b.n);
    assert!(
        lda >= k && (m == 0 || k == 0 || a.len() >= (m - 1) * lda + k),
        "gemm_f16: A has {} elements, needs {m}x{k} with rows {lda} apart",
        a.len()
    );
    assert!(
        c.len() >= m * n,
        "gemm_f16: C has {} elements, needs {m}x{n}",
        c.len()
    );
    assert!(
        bias.is_none_or(|b| b.len() >= n),
        "gemm_f16: bias too short"
    );
    if m == 0 || n == 0 {
        return true;
    }
    #[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
    // SAFETY: a `PackedB16` exists only where `available()` said yes;
    // the asserts above keep row `i < m`, column `p < k` of A, C's `m x n`
    // and the bias's `n` inside their slices, and `pack_a` sizes `scratch`
    // for the blocks `run` reads.
    unsafe {
        let kp = k.div_ceil(KCH) * KCH;
        if scratch.len() < MR * kp {
            scratch.resize(MR * kp, 0);
        }
        run(
            m,
            k,
            n,
            a,
            lda,
            scratch,
            &b.data,
            c.as_mut_ptr(),
            bias,
            epilogue == Epilogue::Relu,
        )
    }
    #[cfg(not(all(target_arch = "x86_64", avx512_intrinsics)))]
    {
        let _ = (scratch, epilogue);
        unreachable!("a PackedB16 exists only on x86_64 with AVX512-FP16")
    }
}

/// Rows `i0..i0 + MR` of `A` (`m x k`, rows `lda` apart), chunks
/// `chunks` of [`KCH`] columns, into `out` as [`gemm`]'s layout describes
/// (the first chunk at `out`), zeros past `m` and `k`.
#[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
#[target_feature(enable = "avx512f")]
unsafe fn pack_block(
    m: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    i0: usize,
    chunks: std::ops::Range<usize>,
    out: *mut u16,
) {
    for r in 0..MR {
        let i = i0 + r;
        let dst = out.add(r * KCH);
        for ch in chunks.clone() {
            let dst = dst.add((ch - chunks.start) * MR * KCH) as *mut __m256i;
            for h in 0..KCH / 16 {
                let p0 = ch * KCH + h * 16;
                let v = if i >= m || p0 >= k {
                    _mm512_setzero_ps()
                } else {
                    let row = a.as_ptr().add(i * lda + p0);
                    if p0 + 16 <= k {
                        _mm512_loadu_ps(row)
                    } else {
                        _mm512_maskz_loadu_ps((1u16 << (k - p0)) - 1, row)
                    }
                };
                let hv = _mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
                _mm256_storeu_si256(dst.add(h), hv);
            }
        }
    }
}

/// Every panel and block of the product; `false` if an output is not
/// finite.
#[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512fp16")]
unsafe fn run(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    lda: usize,
    scratch: &mut [u16],
    packed: &[u16],
    c: *mut f32,
    bias: Option<&[f32]>,
    relu: bool,
) -> bool {
    let kp = k.div_ceil(KCH) * KCH;
    let chunks = kp / KCH;
    let step = pass_chunks(k, n);
    let mut finite = true;
    // Pass by pass over `k` (one pass unless B is large: InceptionV3's 3x3
    // stride-2 288 -> 384 layer has 2 MB of halves), then block by block
    // (its rows of A, converted to 12 x (the pass's k) halves, stay in
    // L1), every panel of B (the pass's slice of B stays in L2): A is read
    // once. Passes after the first start from the sums the previous one
    // stored in C; the last adds the bias and the epilogue.
    for c0 in (0..chunks).step_by(step) {
        let c1 = (c0 + step).min(chunks);
        let (first, last) = (c0 == 0, c1 == chunks);
        for blk in 0..m.div_ceil(MR) {
            let rows = MR.min(m - blk * MR);
            let ab = scratch.as_mut_ptr();
            pack_block(m, k, a, lda, blk * MR, c0..c1, ab);
            let ab = ab as *const u16;
            let mut panel = packed.as_ptr();
            for j0 in (0..n).step_by(64) {
                let width = panel_width(n - j0);
                let cols = (n - j0).min(64);
                let bias = bias.map(|b| b.as_ptr().add(j0));
                let cb = c.add(blk * MR * n + j0);
                let part = Part {
                    chunks: c1 - c0,
                    first,
                    last,
                };
                let from = panel.add(c0 * KCH * width);
                finite &= if width == 64 {
                    block::<2>(part, ab, from, cb, n, rows, cols, bias, relu)
                } else {
                    block::<1>(part, ab, from, cb, n, rows, cols, bias, relu)
                };
                panel = panel.add(kp * width);
            }
        }
    }
    finite
}

/// One chunk of [`KCH`] steps of a 12 x 32 block: `acc[i] += a[i][p] *
/// b[p]` in half precision (the accumulators hold 32 halves, typed as
/// `__m512`), each `a` broadcast from memory by the FMA.
#[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512fp16")]
unsafe fn chunk1(acc: &mut [[__m512; 1]; MR], a: *const u16, b: *const u16) {
    std::arch::asm!(
        "2:",
        "vmovups zmm30, zmmword ptr [{b} + 0]",
        "vfmadd231ph {c0_0:z}, zmm30, word ptr [{a} + 0]{{1to32}}",
        "vfmadd231ph {c1_0:z}, zmm30, word ptr [{a} + 128]{{1to32}}",
        "vfmadd231ph {c2_0:z}, zmm30, word ptr [{a} + 256]{{1to32}}",
        "vfmadd231ph {c3_0:z}, zmm30, word ptr [{a} + 384]{{1to32}}",
        "vfmadd231ph {c4_0:z}, zmm30, word ptr [{a} + 512]{{1to32}}",
        "vfmadd231ph {c5_0:z}, zmm30, word ptr [{a} + 640]{{1to32}}",
        "vfmadd231ph {c6_0:z}, zmm30, word ptr [{a} + 768]{{1to32}}",
        "vfmadd231ph {c7_0:z}, zmm30, word ptr [{a} + 896]{{1to32}}",
        "vfmadd231ph {c8_0:z}, zmm30, word ptr [{a} + 1024]{{1to32}}",
        "vfmadd231ph {c9_0:z}, zmm30, word ptr [{a} + 1152]{{1to32}}",
        "vfmadd231ph {c10_0:z}, zmm30, word ptr [{a} + 1280]{{1to32}}",
        "vfmadd231ph {c11_0:z}, zmm30, word ptr [{a} + 1408]{{1to32}}",
        "add {a}, 2",
        "add {b}, 64",
        "dec {n}",
        "jnz 2b",
        a = inout(reg) a => _,
        b = inout(reg) b => _,
        n = inout(reg) KCH => _,
        out("zmm30") _,
        c0_0 = inout(zmm_reg) acc[0][0],
        c1_0 = inout(zmm_reg) acc[1][0],
        c2_0 = inout(zmm_reg) acc[2][0],
        c3_0 = inout(zmm_reg) acc[3][0],
        c4_0 = inout(zmm_reg) acc[4][0],
        c5_0 = inout(zmm_reg) acc[5][0],
        c6_0 = inout(zmm_reg) acc[6][0],
        c7_0 = inout(zmm_reg) acc[7][0],
        c8_0 = inout(zmm_reg) acc[8][0],
        c9_0 = inout(zmm_reg) acc[9][0],
        c10_0 = inout(zmm_reg) acc[10][0],
        c11_0 = inout(zmm_reg) acc[11][0],
        options(nostack, readonly),
    );
}

/// As [`chunk1`], 12 x 64.
#[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512fp16")]
unsafe fn chunk2(acc: &mut [[__m512; 2]; MR], a: *const u16, b: *const u16) {
    std::arch::asm!(
        "2:",
        "vmovups zmm30, zmmword ptr [{b} + 0]",
        "vmovups zmm31, zmmword ptr [{b} + 64]",
        "vfmadd231ph {c0_0:z}, zmm30, word ptr [{a} + 0]{{1to32}}",
        "vfmadd231ph {c0_1:z}, zmm31, word ptr [{a} + 0]{{1to32}}",
        "vfmadd231ph {c1_0:z}, zmm30, word ptr [{a} + 128]{{1to32}}",
        "vfmadd231ph {c1_1:z}, zmm31, word ptr [{a} + 128]{{1to32}}",
        "vfmadd231ph {c2_0:z}, zmm30, word ptr [{a} + 256]{{1to32}}",
        "vfmadd231ph {c2_1:z}, zmm31, word ptr [{a} + 256]{{1to32}}",
        "vfmadd231ph {c3_0:z}, zmm30, word ptr [{a} + 384]{{1to32}}",
        "vfmadd231ph {c3_1:z}, zmm31, word ptr [{a} + 384]{{1to32}}",
        "vfmadd231ph {c4_0:z}, zmm30, word ptr [{a} + 512]{{1to32}}",
        "vfmadd231ph {c4_1:z}, zmm31, word ptr [{a} + 512]{{1to32}}",
        "vfmadd231ph {c5_0:z}, zmm30, word ptr [{a} + 640]{{1to32}}",
        "vfmadd231ph {c5_1:z}, zmm31, word ptr [{a} + 640]{{1to32}}",
        "vfmadd231ph {c6_0:z}, zmm30, word ptr [{a} + 768]{{1to32}}",
        "vfmadd231ph {c6_1:z}, zmm31, word ptr [{a} + 768]{{1to32}}",
        "vfmadd231ph {c7_0:z}, zmm30, word ptr [{a} + 896]{{1to32}}",
        "vfmadd231ph {c7_1:z}, zmm31, word ptr [{a} + 896]{{1to32}}",
        "vfmadd231ph {c8_0:z}, zmm30, word ptr [{a} + 1024]{{1to32}}",
        "vfmadd231ph {c8_1:z}, zmm31, word ptr [{a} + 1024]{{1to32}}",
        "vfmadd231ph {c9_0:z}, zmm30, word ptr [{a} + 1152]{{1to32}}",
        "vfmadd231ph {c9_1:z}, zmm31, word ptr [{a} + 1152]{{1to32}}",
        "vfmadd231ph {c10_0:z}, zmm30, word ptr [{a} + 1280]{{1to32}}",
        "vfmadd231ph {c10_1:z}, zmm31, word ptr [{a} + 1280]{{1to32}}",
        "vfmadd231ph {c11_0:z}, zmm30, word ptr [{a} + 1408]{{1to32}}",
        "vfmadd231ph {c11_1:z}, zmm31, word ptr [{a} + 1408]{{1to32}}",
        "add {a}, 2",
        "add {b}, 128",
        "dec {n}",
        "jnz 2b",
        a = inout(reg) a => _,
        b = inout(reg) b => _,
        n = inout(reg) KCH => _,
        out("zmm30") _,
        out("zmm31") _,
        c0_0 = inout(zmm_reg) acc[0][0],
        c0_1 = inout(zmm_reg) acc[0][1],
        c1_0 = inout(zmm_reg) acc[1][0],
        c1_1 = inout(zmm_reg) acc[1][1],
        c2_0 = inout(zmm_reg) acc[2][0],
        c2_1 = inout(zmm_reg) acc[2][1],
        c3_0 = inout(zmm_reg) acc[3][0],
        c3_1 = inout(zmm_reg) acc[3][1],
        c4_0 = inout(zmm_reg) acc[4][0],
        c4_1 = inout(zmm_reg) acc[4][1],
        c5_0 = inout(zmm_reg) acc[5][0],
        c5_1 = inout(zmm_reg) acc[5][1],
        c6_0 = inout(zmm_reg) acc[6][0],
        c6_1 = inout(zmm_reg) acc[6][1],
        c7_0 = inout(zmm_reg) acc[7][0],
        c7_1 = inout(zmm_reg) acc[7][1],
        c8_0 = inout(zmm_reg) acc[8][0],
        c8_1 = inout(zmm_reg) acc[8][1],
        c9_0 = inout(zmm_reg) acc[9][0],
        c9_1 = inout(zmm_reg) acc[9][1],
        c10_0 = inout(zmm_reg) acc[10][0],
        c10_1 = inout(zmm_reg) acc[10][1],
        c11_0 = inout(zmm_reg) acc[11][0],
        c11_1 = inout(zmm_reg) acc[11][1],
        options(nostack, readonly),
    );
}

/// Which chunks of `k` one call of [`block`] sums: `chunks` of them,
/// starting from zero (`first`) or from the sums a previous pass stored in
/// `C`, and ending with the bias and epilogue (`last`) or with the partial
/// sums stored in `C`.
#[derive(Clone, Copy)]
struct Part {
    chunks: usize,
    first: bool,
    last: bool,
}

/// Bytes of B (in halves) one pass over `k` reads for every block of rows:
/// a slice that stays in L2 (2 MB per core here) with room for the rest.
const B_BLOCK_BYTES: usize = 640 << 10;

/// Chunks of `k` per pass of [`gemm`] over a `k x n` B: as many as keep
/// that slice of B (all its panels) within [`B_BLOCK_BYTES`], shared
/// evenly among the passes.
fn pass_chunks(k: usize, n: usize) -> usize {
    let chunks = k.div_ceil(KCH).max(1);
    let panels_width = n.div_ceil(64).max(1) * 64;
    let most = (B_BLOCK_BYTES / (KCH * panels_width * 2)).max(1);
    chunks.div_ceil(chunks.div_ceil(most)).max(1)
}

/// One register block: `rows` (at most [`MR`]; the packed `A` has zeros
/// below) by `cols` (at most `32 * NV`) outputs at `c` (rows `ldc`
/// apart), over the chunks of `k` that `part` gives. `false` if an
/// output of the last pass is not finite.
#[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512fp16")]
unsafe fn block<const NV: usize>(
    part: Part,
    mut a: *const u16,
    mut b: *const u16,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    bias: Option<*const f32>,
    relu: bool,
) -> bool {
    const { assert!(NV == 1 || NV == 2) };
    let mask_of = |j: usize| -> __mmask16 {
        if cols - j >= 16 {
            0xffff
        } else {
            (1u16 << (cols - j)) - 1
        }
    };
    let mut sums = [[_mm512_setzero_ps(); 4]; MR];
    if !part.first {
        // The previous pass's sums.
        for (i, row) in sums.iter_mut().enumerate().take(rows) {
            let c = c.add(i * ldc);
            for (q, s) in row.iter_mut().enumerate().take(2 * NV) {
                let j = 16 * q;
                if j >= cols {
                    break;
                }
                *s = _mm512_maskz_loadu_ps(mask_of(j), c.add(j));
            }
        }
    }
    for _ in 0..part.chunks {
        let mut acc = [[_mm512_setzero_ps(); NV]; MR];
        // SAFETY (of the casts): `NV` is 1 or 2, and the branch taken
        // matches it.
        if NV == 2 {
            chunk2(&mut *(&mut acc as *mut _ as *mut [[__m512; 2]; MR]), a, b);
        } else {
            chunk1(&mut *(&mut acc as *mut _ as *mut [[__m512; 1]; MR]), a, b);
        }
        for i in 0..MR {
            for v in 0..NV {
                let bits = _mm512_castps_si512(acc[i][v]);
                let lo = _mm512_cvtph_ps(_mm512_castsi512_si256(bits));
                let hi = _mm512_cvtph_ps(_mm512_extracti64x4_epi64::<1>(bits));
                sums[i][2 * v] = _mm512_add_ps(sums[i][2 * v], lo);
                sums[i][2 * v + 1] = _mm512_add_ps(sums[i][2 * v + 1], hi);
            }
        }
        a = a.add(MR * KCH);
        b = b.add(KCH * 32 * NV);
    }
    let mut bad: __mmask16 = 0;
    for (i, row) in sums.iter().enumerate().take(rows) {
        let c = c.add(i * ldc);
        for (q, &s) in row.iter().enumerate().take(2 * NV) {
            let j = 16 * q;
            if j >= cols {
                break;
            }
            let mask = mask_of(j);
            if !part.last {
                // A partial sum, for the next pass (an overflow carries
                // through to the last pass, which reports it).
                _mm512_mask_storeu_ps(c.add(j), mask, s);
                continue;
            }
            let mut y = s;
            if let Some(bias) = bias {
                y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask, bias.add(j)));
            }
            // `y - y` is NaN exactly where `y` is infinite or NaN.
            let d = _mm512_sub_ps(y, y);
            bad |= _mm512_mask_cmp_ps_mask::<_CMP_UNORD_Q>(mask, d, d);
            if relu {
                y = _mm512_max_ps(y, _mm512_setzero_ps());
            }
            _mm512_mask_storeu_ps(c.add(j), mask, y);
        }
    }
    bad == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    /// `(exact product, sum of |a b| per output)`, in f64.
    fn naive(
        m: usize,
        k: usize,
        n: usize,
        a: &[f32],
        lda: usize,
        b: &[f32],
        bias: Option<&[f32]>,
    ) -> (Vec<f64>, Vec<f64>) {
        let mut c = vec![0.0; m * n];
        let mut mag = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    let t = a[i * lda + p] as f64 * b[p * n + j] as f64;
                    c[i * n + j] += t;
                    mag[i * n + j] += t.abs();
                }
                c[i * n + j] += bias.map_or(0.0, |b| b[j] as f64);
            }
        }
        (c, mag)
    }

    #[test]
    fn small_integers_come_out_exact() {
        if !available() {
            return;
        }
        // Values whose products and partial sums halves hold exactly: any
        // misplaced row, column or chunk shows as a wrong integer.
        for &(m, k, n, lda) in &[
            (1, 1, 1, 1),
            (13, 7, 33, 9),
            (25, 130, 48, 130),
            (12, 64, 80, 70),
            (30, 65, 16, 65),
            (5, 3, 100, 4),
            (37, 200, 130, 201),
        ] {
            let ints = |len: usize, seed: u32| -> Vec<f32> {
                fill(len, seed).iter().map(|v| (v * 3.0).round()).collect()
            };
            let a = ints(m * lda, 1);
            let b = ints(k * n, 2);
            let bias: Vec<f32> = ints(n, 3);
            let (want, _) = naive(m, k, n, &a, lda, &b, Some(&bias));
            let pb = PackedB16::new(&b, k, n).unwrap();
            let mut c = vec![f32::NAN; m * n + 5];
            let mut scratch = vec![7; 3];
            assert!(gemm(
                m,
                &a,
                lda,
                &pb,
                &mut scratch,
                &mut c,
                Some(&bias),
                Epilogue::Relu
            ));
            for (i, (x, y)) in c.iter().zip(&want).enumerate() {
                assert_eq!(*x as f64, y.max(0.0), "{m}x{k}x{n} at {i}");
            }
            assert!(c[m * n..].iter().all(|v| v.is_nan()), "wrote past C");
        }
    }

    #[test]
    fn errors_stay_within_half_precision_bounds() {
        if !available() {
            return;
        }
        let u = 2f64.powi(-11);
        for &(m, k, n) in &[(50, 700, 70), (13, 64, 32), (24, 2000, 64)] {
            let a = fill(m * k, 4);
            let b = fill(k * n, 5);
            let (want, mag) = naive(m, k, n, &a, k, &b, None);
            let pb = PackedB16::new(&b, k, n).unwrap();
            let mut c = vec![0.0; m * n];
            assert!(gemm(
                m,
                &a,
                k,
                &pb,
                &mut Vec::new(),
                &mut c,
                None,
                Epilogue::None
            ));
            let mut sq = 0.0;
            for ((x, y), g) in c.iter().zip(&want).zip(&mag) {
                // Worst case: each product's inputs rounded (2u), each
                // half-precision addition of a chunk rounded (KCH u).
                let e = (*x as f64 - y).abs();
                assert!(
                    e <= (2.0 + KCH as f64) * u * g + 1e-6,
                    "{m}x{k}x{n}: {x} vs {y}"
                );
                sq += e * e;
            }
            let rms_err = (sq / c.len() as f64).sqrt();
            let rms = (want.iter().map(|y| y * y).sum::<f64>() / want.len() as f64).sqrt();
            // Typical errors are far below the worst case: about 1e-3 of
            // the values here.
            assert!(
                rms_err < 3e-3 * rms,
                "{m}x{k}x{n}: rms error {rms_err} of {rms}"
            );
        }
    }

    #[test]
    fn passes_over_k_add_up() {
        if !available() {
            return;
        }
        let u = 2f64.powi(-11);
        // B too large for one pass: 2 and 3 passes, a last panel of 32
        // columns or fewer, a last block of rows shorter than MR, bias and
        // ReLU on the last pass only.
        for &(m, k, n) in &[(29, 1500, 350), (13, 2600, 100), (5, 4000, 200)] {
            let step = pass_chunks(k, n);
            assert!(k.div_ceil(KCH) > step, "{m}x{k}x{n} takes one pass");
            let a = fill(m * k, 6);
            let b = fill(k * n, 7);
            let bias = fill(n, 8);
            let (want, mag) = naive(m, k, n, &a, k, &b, Some(&bias));
            let pb = PackedB16::new(&b, k, n).unwrap();
            for relu in [false, true] {
                let mut c = vec![f32::NAN; m * n];
                let epilogue = if relu { Epilogue::Relu } else { Epilogue::None };
                assert!(gemm(
                    m,
                    &a,
                    k,
                    &pb,
                    &mut Vec::new(),
                    &mut c,
                    Some(&bias),
                    epilogue
                ));
                for ((x, y), g) in c.iter().zip(&want).zip(&mag) {
                    let y = if relu { y.max(0.0) } else { *y };
                    let e = (*x as f64 - y).abs();
                    assert!(
                        e <= (2.0 + KCH as f64) * u * g + 1e-6,
                        "{m}x{k}x{n} relu {relu}: {x} vs {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn overflows_are_reported_not_returned() {
        if !available() {
            return;
        }
        let (m, k, n) = (20, 30, 40);
        let b = fill(k * n, 6);
        assert!(PackedB16::new(&[1e5, 1.0], 1, 2).is_none());
        assert!(PackedB16::new(&[f32::NAN, 1.0], 1, 2).is_none());
        let pb = PackedB16::new(&b, k, n).unwrap();
        let mut c = vec![0.0; m * n];
        for bad in [1e5, 300.0 * 300.0, f32::INFINITY, f32::NAN] {
            let mut a = fill(m * k, 7);
            a[17 * k + 3] = bad;
            assert!(
                !gemm(m, &a, k, &pb, &mut Vec::new(), &mut c, None, Epilogue::Relu),
                "{bad}"
            );
        }
        // Products past half precision's range with inputs inside it.
        let big = vec![250.0; k * n];
        let pb = PackedB16::new(&big, k, n).unwrap();
        let a = vec![250.0; m * k];
        assert!(!gemm(
            m,
            &a,
            k,
            &pb,
            &mut Vec::new(),
            &mut c,
            None,
            Epilogue::None
        ));
    }

    #[test]
    #[ignore = "timing; cargo test --release -p convnet-kernels --lib half_gemm_speed -- --ignored --nocapture"]
    fn half_gemm_speed() {
        if !available() {
            return;
        }
        for &(m, k, n) in &[
            (256, 768, 192),
            (1568, 768, 192),
            (8192, 768, 192),
            (256, 256, 64),
            (256, 2592, 384),
            (256, 1200, 64),
            (256, 1120, 160),
        ] {
            let a = fill(m * k, 1);
            let b = fill(k * n, 2);
            let mut c = vec![0.0; m * n];
            let flops = 2.0 * (m * k * n) as f64;
            let time = |f: &mut dyn FnMut()| {
                let mut best = f64::MAX;
                for _ in 0..30 {
                    let t = std::time::Instant::now();
                    f();
                    best = best.min(t.elapsed().as_secs_f64());
                }
                best
            };
            let single = time(&mut || {
                crate::gemm::sgemm(
                    m,
                    k,
                    n,
                    &a,
                    crate::gemm::Layout::RowMajor,
                    &b,
                    crate::gemm::Layout::RowMajor,
                    &mut c,
                    false,
                    crate::gemm::Parallelism::Sequential,
                )
            });
            let pack = time(&mut || {
                std::hint::black_box(PackedB16::new(&b, k, n));
            });
            let pb = PackedB16::new(&b, k, n).unwrap();
            let mut scratch = Vec::new();
            let half = time(&mut || {
                gemm(m, &a, k, &pb, &mut scratch, &mut c, None, Epilogue::None);
            });
            println!(
                "{m}x{k}x{n}: single {:.0}, half (with A's conversion) {:.0} GFLOP/s, {:.2}x; packing B {:.0} us, the product {:.0} us",
                flops / single / 1e9,
                flops / half / 1e9,
                single / half,
                pack * 1e6,
                half * 1e6
            );
        }
    }
}
