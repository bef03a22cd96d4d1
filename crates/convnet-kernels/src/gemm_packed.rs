//! Single-precision GEMM for a layer's weights on AVX2 CPUs: `C = A B (+
//! bias, ReLU)` with `B` (the weights, or Winograd's transformed weights
//! at one transform point, `k x n`) packed once per call and `A` (an
//! im2col tile, the input itself for a 1x1 convolution, or a band's
//! transformed tiles) read in place.
//!
//! The `gemm` crate packs `B` again in every call, and the convolutions
//! call it once per row tile and Winograd once per band and transform
//! point (36 calls per band for F(4x4, 3x3)). On an AVX2 CPU without
//! AVX-512 (AMD Zen 3 here: 100 GFLOP/s per core by a register-only FMA
//! loop) this kernel measured, alternated in one process on both cores,
//! 1.05-1.16x the `gemm` crate's speed on InceptionV3's Winograd layers
//! (3x3 and 5x5), 0.96-1.15x on its 1x1 and stride-2 ones; single-thread
//! with `A` in cache, 89-97 against 68-94 GFLOP/s (`packed_gemm_speed`).
//!
//! Layout: `B` in panels of [`NR`] = 16 columns (the last one padded with
//! zeros), each panel `k` rows of 16, every row on its own 64-byte line
//! (unaligned rows cost 6% of the speed). The register block is [`MR`] = 6
//! rows by 16 columns: 12 accumulators, two `B` vectors and a broadcast
//! `A` value, 15 of the 16 `ymm` registers. `A` is walked in blocks of
//! [`MC`] rows, and `k` in chunks of [`KC`]: per chunk, panel by panel,
//! 6 rows at a time, so that the chunk of the block's rows stays in L2
//! across the panels and a panel's chunk of `B` (16 KB) in L1 across the
//! row groups. Partial sums of earlier chunks are kept in `C`.
//!
//! Tried on Zen 3 and left out (alternated in one process): blocks of 60
//! or 240 rows and chunks of 128 or 512 steps (all within 4%), and a
//! software prefetch of the next 6 rows of `A` during the first panel
//! (+1-9% on 16x16 1x1 layers, -1 to -6% on 7x7x768 ones).
//!
//! On CPUs with AVX-512 the `gemm` crate's AVX-512 kernel stays in use
//! ([`available`] is false there): this one was measured only where AVX2
//! is the widest.

#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code, unused_variables))]

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::conv::Epilogue;

/// Columns per panel (two 8-float vectors).
pub(crate) const NR: usize = 16;
/// Rows per register block.
pub(crate) const MR: usize = 6;
/// Steps of `k` per pass over a block of `A` rows.
pub(crate) const KC: usize = 256;
/// Rows of `A` per block: `MC x KC` values (120 KB) stay in L2 while the
/// panels pass over them.
const MC: usize = 120;

/// Whether this CPU runs the kernel: AVX2 and FMA, and no AVX-512 (whose
/// machines keep the `gemm` crate's wider kernel).
pub(crate) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        runs_kernel() && !std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU can execute the kernel at all (the tests run it
/// wherever it can).
pub(crate) fn runs_kernel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One row of a panel, on its own cache line (a 32-byte load that
/// straddles two lines costs two).
#[derive(Debug, Clone, Copy)]
#[repr(C, align(64))]
struct Row([f32; NR]);

/// `B` (`k x n`) packed for [`gemm`]: `n.div_ceil(16)` panels of `k x 16`.
#[derive(Debug)]
pub(crate) struct PackedB {
    k: usize,
    n: usize,
    data: Vec<Row>,
}

impl PackedB {
    /// Packs `b` (`k x n`, row-major), or `None` on a CPU where
    /// [`available`] is false.
    ///
    /// # Panics
    /// If `b` is shorter than `k * n`.
    pub(crate) fn new(b: &[f32], k: usize, n: usize) -> Option<Self> {
        if !available() {
            return None;
        }
        Some(Self::pack(b, k, n))
    }

    /// Packs whatever the CPU (the tests call this directly), one rayon
    /// task per panel.
    pub(crate) fn pack(b: &[f32], k: usize, n: usize) -> Self {
        // One task per panel: a layer's weights are packed in every
        // forward pass (4 MB for a 3x3 288 -> 384 layer).
        Self::build(b, k, n, |data| {
            data.par_chunks_mut(k.max(1))
                .enumerate()
                .for_each(|(p, panel)| pack_panel(b, k, n, p, panel))
        })
    }

    /// [`PackedB::pack`] on the calling thread, where the caller packs
    /// several matrices in parallel (Winograd's transform points).
    pub(crate) fn pack_here(b: &[f32], k: usize, n: usize) -> Self {
        Self::build(b, k, n, |data| {
            for (p, panel) in data.chunks_mut(k.max(1)).enumerate() {
                pack_panel(b, k, n, p, panel);
            }
        })
    }

    /// The panels of `b`, written once by `fill` (which must write every
    /// row: [`pack_panel`] over all of them), never zeroed first.
    fn build(b: &[f32], k: usize, n: usize, fill: impl FnOnce(&mut [MaybeUninit<Row>])) -> Self {
        assert!(
            b.len() >= k * n,
            "PackedB: B has {} elements, needs {k}x{n}",
            b.len()
        );
        let len = n.div_ceil(NR) * k;
        let mut data = Vec::with_capacity(len);
        fill(&mut data.spare_capacity_mut()[..len]);
        // SAFETY: `fill` wrote every one of the `len` rows (pack_panel
        // writes each row of its panel, and the panels cover all of them).
        unsafe { data.set_len(len) };
        PackedB { k, n, data }
    }

    /// Columns of `B`.
    pub(crate) fn n(&self) -> usize {
        self.n
    }
}

/// Panel `p` of `b` (`k x n`) into `panel` (`k` rows, every one written;
/// columns past `n` zero).
fn pack_panel(b: &[f32], k: usize, n: usize, p: usize, panel: &mut [MaybeUninit<Row>]) {
    let j0 = p * NR;
    let cols = (n - j0).min(NR);
    for (row, dst) in panel.iter_mut().enumerate().take(k) {
        let mut r = Row([0.0; NR]);
        r.0[..cols].copy_from_slice(&b[row * n + j0..row * n + j0 + cols]);
        dst.write(r);
    }
}

/// `c = a * B` (`rows x n`, row-major, overwritten) for `a` (`rows x k`,
/// row stride `lda`), then `+ bias` and the epilogue, on the calling
/// thread.
///
/// # Panics
/// If a slice is too short for its matrix, or if the CPU cannot run the
/// kernel ([`runs_kernel`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    rows: usize,
    a: &[f32],
    lda: usize,
    packed: &PackedB,
    c: &mut [f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
) {
    let (k, n) = (packed.k, packed.n);
    assert!(runs_kernel(), "gemm_packed: the CPU lacks AVX2 or FMA");
    assert!(lda >= k, "gemm_packed: row stride {lda} below k = {k}");
    assert!(
        rows == 0 || a.len() >= (rows - 1) * lda + k,
        "gemm_packed: A has {} elements, needs {rows} rows of {k} (stride {lda})",
        a.len()
    );
    assert!(
        c.len() >= rows * n,
        "gemm_packed: C has {} elements, needs {rows}x{n}",
        c.len()
    );
    if let Some(b) = bias {
        assert!(b.len() >= n, "gemm_packed: bias has {} of {n}", b.len());
    }
    if rows == 0 || n == 0 {
        return;
    }
    let relu = matches!(epilogue, Epilogue::Relu);
    if k == 0 {
        for row in c[..rows * n].chunks_exact_mut(n) {
            for (j, v) in row.iter_mut().enumerate() {
                let x = bias.map_or(0.0, |b| b[j]);
                *v = if relu { x.max(0.0) } else { x };
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX2 and FMA are present (asserted); the lengths of `a`,
    // `c`, `bias` and the panels were checked above, and `run` stays in
    // them (see its comments).
    unsafe {
        run(rows, a.as_ptr(), lda, packed, c.as_mut_ptr(), bias, relu)
    };
}

/// Every chunk, panel and block of the product.
///
/// # Safety
/// AVX2 and FMA; `a` holds `rows` rows of `packed.k` at stride `lda`, `c`
/// `rows x packed.n`, `bias` (if any) `packed.n` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run(
    rows: usize,
    a: *const f32,
    lda: usize,
    packed: &PackedB,
    c: *mut f32,
    bias: Option<&[f32]>,
    relu: bool,
) {
    let (k, n) = (packed.k, packed.n);
    for r0 in (0..rows).step_by(MC) {
        let mc = (rows - r0).min(MC);
        let (a, c) = (a.add(r0 * lda), c.add(r0 * n));
        let mut k0 = 0;
        while k0 < k {
            let kc = (k - k0).min(KC);
            let first = k0 == 0;
            let last = k0 + kc == k;
            for (p, panel) in packed.data.chunks_exact(k).enumerate() {
                let j0 = p * NR;
                let cols = (n - j0).min(NR);
                let store = Store {
                    cols,
                    ldc: n,
                    first,
                    last,
                    bias: bias.map(|b| &b[j0..j0 + cols]),
                    relu,
                };
                let b = panel.as_ptr().add(k0).cast::<f32>();
                let mut i0 = 0;
                while i0 < mc {
                    let r = (mc - i0).min(MR);
                    let ab = a.add(i0 * lda + k0);
                    let cb = c.add(i0 * n + j0);
                    match r {
                        6 => block::<6>(kc, ab, lda, b, cb, &store),
                        5 => block::<5>(kc, ab, lda, b, cb, &store),
                        4 => block::<4>(kc, ab, lda, b, cb, &store),
                        3 => block::<3>(kc, ab, lda, b, cb, &store),
                        2 => block::<2>(kc, ab, lda, b, cb, &store),
                        _ => block::<1>(kc, ab, lda, b, cb, &store),
                    }
                    i0 += r;
                }
            }
            k0 += kc;
        }
    }
}

/// How a block's sums reach `C`.
struct Store<'a> {
    /// Columns of the panel that exist (16 but in the last panel).
    cols: usize,
    /// Row stride of `C`.
    ldc: usize,
    /// The first chunk of `k`: overwrite `C` (else add to it).
    first: bool,
    /// The last chunk: add the bias and apply ReLU.
    last: bool,
    /// The panel's bias values (`cols` of them).
    bias: Option<&'a [f32]>,
    relu: bool,
}

/// `R` rows by 16 columns, `kc` steps: `c (+)= a * b`, as `store` says.
///
/// # Safety
/// AVX2 and FMA; `a` has `R` rows of `kc` at stride `lda`, `b` `kc` rows
/// of 16, `c` `R` rows of `store.cols` at stride `store.ldc`.
#[cfg(target_arch = "x86_64")]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn block<const R: usize>(
    kc: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
    store: &Store,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for q in 0..kc {
        let b0 = _mm256_loadu_ps(b.add(q * NR));
        let b1 = _mm256_loadu_ps(b.add(q * NR + 8));
        for (i, acc) in acc.iter_mut().enumerate() {
            let x = _mm256_broadcast_ss(&*a.add(i * lda + q));
            acc[0] = _mm256_fmadd_ps(x, b0, acc[0]);
            acc[1] = _mm256_fmadd_ps(x, b1, acc[1]);
        }
    }
    let zero = _mm256_setzero_ps();
    if store.cols == NR {
        let (bias0, bias1) = match store.bias {
            Some(b) if store.last => (
                _mm256_loadu_ps(b.as_ptr()),
                _mm256_loadu_ps(b.as_ptr().add(8)),
            ),
            _ => (zero, zero),
        };
        for (i, acc) in acc.iter().enumerate() {
            let out = c.add(i * store.ldc);
            let (mut v0, mut v1) = (acc[0], acc[1]);
            if !store.first {
                v0 = _mm256_add_ps(v0, _mm256_loadu_ps(out));
                v1 = _mm256_add_ps(v1, _mm256_loadu_ps(out.add(8)));
            }
            if store.last {
                v0 = _mm256_add_ps(v0, bias0);
                v1 = _mm256_add_ps(v1, bias1);
                if store.relu {
                    v0 = _mm256_max_ps(v0, zero);
                    v1 = _mm256_max_ps(v1, zero);
                }
            }
            _mm256_storeu_ps(out, v0);
            _mm256_storeu_ps(out.add(8), v1);
        }
    } else {
        let mut sums = [0.0f32; NR];
        for (i, acc) in acc.iter().enumerate() {
            _mm256_storeu_ps(sums.as_mut_ptr(), acc[0]);
            _mm256_storeu_ps(sums.as_mut_ptr().add(8), acc[1]);
            let out = std::slice::from_raw_parts_mut(c.add(i * store.ldc), store.cols);
            for (j, v) in out.iter_mut().enumerate() {
                let mut x = sums[j];
                if !store.first {
                    x += *v;
                }
                if store.last {
                    x += store.bias.map_or(0.0, |b| b[j]);
                    if store.relu {
                        x = x.max(0.0);
                    }
                }
                *v = x;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::{sgemm, Layout, Parallelism};

    fn values(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect()
    }

    /// Every tail of rows and columns, `k` across chunk boundaries, a row
    /// stride above `k`, with and without bias and ReLU, against the
    /// `gemm` crate.
    #[test]
    fn matches_the_gemm_crate() {
        if !runs_kernel() {
            eprintln!("skipped: no AVX2 + FMA");
            return;
        }
        for &(rows, k, n, pad) in &[
            (1, 1, 1, 0),
            (5, 3, 7, 2),
            (6, 16, 16, 0),
            (7, 255, 17, 1),
            (13, 256, 32, 0),
            (12, 257, 48, 3),
            (20, 600, 40, 0),
            (31, 513, 64, 5),
        ] {
            let lda = k + pad;
            let a = values(rows * lda, 1);
            let b = values(k * n, 2);
            let bias = values(n, 3);
            let packed = PackedB::pack(&b, k, n);
            let mut a_dense = vec![0.0; rows * k];
            for i in 0..rows {
                a_dense[i * k..(i + 1) * k].copy_from_slice(&a[i * lda..i * lda + k]);
            }
            let mut want = vec![0.0; rows * n];
            sgemm(
                rows,
                k,
                n,
                &a_dense,
                Layout::RowMajor,
                &b,
                Layout::RowMajor,
                &mut want,
                false,
                Parallelism::Sequential,
            );
            for (with_bias, epilogue) in [
                (false, Epilogue::None),
                (true, Epilogue::None),
                (true, Epilogue::Relu),
                (false, Epilogue::Relu),
            ] {
                let mut got = vec![f32::NAN; rows * n];
                let bias = with_bias.then_some(&bias[..]);
                gemm(rows, &a, lda, &packed, &mut got, bias, epilogue);
                for (idx, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    let mut w = w + bias.map_or(0.0, |b| b[idx % n]);
                    if matches!(epilogue, Epilogue::Relu) {
                        w = w.max(0.0);
                    }
                    assert!(
                        (g - w).abs() <= 1e-5 * (1.0 + (k as f32).sqrt()),
                        "{rows}x{k}x{n} (lda {lda}, bias {with_bias}, {epilogue:?}) at {idx}: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn empty_k_gives_bias_and_epilogue() {
        let packed = PackedB::pack(&[], 0, 3);
        let mut c = [9.0; 6];
        if !runs_kernel() {
            return;
        }
        gemm(
            2,
            &[],
            0,
            &packed,
            &mut c,
            Some(&[1.0, -2.0, 0.5]),
            Epilogue::Relu,
        );
        assert_eq!(c, [1.0, 0.0, 0.5, 1.0, 0.0, 0.5]);
    }

    /// Single-thread GFLOP/s of this kernel (weights packed once, as the
    /// convolutions use it) beside the `gemm` crate's, on InceptionV3's
    /// Winograd-point, 1x1 and im2col shapes, with `A` in cache.
    #[test]
    #[ignore = "timing; cargo test --release -p convnet-kernels --lib packed_gemm_speed -- --ignored --nocapture"]
    fn packed_gemm_speed() {
        if !runs_kernel() {
            return;
        }
        for &(rows, k, n) in &[
            (64, 64, 96),
            (64, 80, 192),
            (64, 48, 64),
            (240, 288, 64),
            (196, 768, 192),
            (8192, 288, 64),
            (48, 2592, 384),
        ] {
            let (a, b) = (values(rows * k, 1), values(k * n, 2));
            let mut c = vec![0.0; rows * n];
            let packed = PackedB::pack(&b, k, n);
            let reps = (2e8 / (2.0 * (rows * k * n) as f64)) as usize + 1;
            let time = |f: &mut dyn FnMut()| {
                let mut best = f64::MAX;
                for _ in 0..15 {
                    let t = std::time::Instant::now();
                    for _ in 0..reps {
                        f();
                    }
                    best = best.min(t.elapsed().as_secs_f64() / reps as f64);
                }
                best
            };
            let crate_gemm = time(&mut || {
                sgemm(
                    rows,
                    k,
                    n,
                    &a,
                    Layout::RowMajor,
                    &b,
                    Layout::RowMajor,
                    &mut c,
                    false,
                    Parallelism::Sequential,
                )
            });
            let ours = time(&mut || gemm(rows, &a, k, &packed, &mut c, None, Epilogue::None));
            let gflop = 2.0 * (rows * k * n) as f64 / 1e9;
            println!(
                "{rows} x {k} x {n}: packed {:.1} GFLOP/s, gemm crate {:.1} GFLOP/s ({:.2}x)",
                gflop / ours,
                gflop / crate_gemm,
                crate_gemm / ours
            );
        }
    }
}
