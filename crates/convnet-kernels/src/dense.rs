//! Fully connected layer: `y = x w + b`, `x` `(m, k)`, `w` `(k, n)`.
//!
//! Besides the GEMM path, two kernels for the small batches of training,
//! where the kernel `w` is the big operand and memory bandwidth, not
//! arithmetic, sets the time:
//!
//! - [`dense_forward_streamed`]: `x w` reading `w` once, in memory order
//!   (the GEMM copies all of a large `B` into panels first: one more read
//!   and a write of it); on CPUs without AVX-512 each block of 64 rows is
//!   copied into column strips while it is in cache (see `packs_b` in the source);
//! - [`outer_rows`] / [`outer_product`]: the kernel gradient `x^T dy` a
//!   block of rows at a time, so that an optimizer can apply it while the
//!   block is in cache instead of writing the whole gradient out and
//!   reading it back.

use rayon::prelude::*;

use crate::gemm::{sgemm, Layout, Parallelism};
use crate::{Result, TensorError};

/// Whether [`dense_forward`] takes [`dense_forward_streamed`] for small
/// batches. On: on the basic CNN's Dense(128) (32 x 36992 x 128, a 19 MB
/// kernel the GEMM would copy into panels first) the profile's `forward
/// dense` measured 3.2-4.8 ms against 4.2-5.5 ms by the GEMM (3 alternated
/// runs of `CONVNET_PROFILE=1 cargo xtask bench basic_cnn`, train and
/// predict alike). On the InceptionV3 head (32 x 37632 x 1024) the two were
/// alike at AVX2 width (48-57 ms against 52-55 ms of single-thread CPU).
const STREAM_FORWARD: bool = true;

/// Batches up to this size use [`dense_forward_streamed`] (when the kernel
/// is big enough for it to matter, see [`STREAM_MIN_KERNEL`]).
pub const STREAM_MAX_BATCH: usize = 64;

/// Kernels of at least this many elements (4 MiB) take the streamed path
/// for small batches: below it the kernel stays in cache and the GEMM's
/// packing costs little.
pub const STREAM_MIN_KERNEL: usize = 1 << 20;

/// Columns of a register tile: two 16-float vectors.
const NR: usize = 32;

/// Rows of a register tile: 8 on a CPU with AVX-512 (16 of its 32 vector
/// registers; on the InceptionV3 head, 32 x 37632 x 1024, the streamed
/// forward took 13.3 ms against 15.9 with 4 rows, and the RMSprop step on
/// its factored gradient 25.3 against 28.1: minima of 12, 3 alternated
/// runs), 6 for AVX2's 16 (the AVX2 tile takes its 32 columns as two
/// halves of 16: 12 accumulators; on Zen 3, alternated in one process on
/// the same head, 6 rows against 4: forward 0.92x on one core and 1.00x
/// on two, kernel gradient 1.24x and 1.12x). Chosen at run time, like the micro-kernel itself, so that
/// a build without `-C target-cpu` gets the wider tiles too.
fn mr() -> usize {
    #[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return 8;
    }
    6
}

/// Whether the tiles read `b` (the kernel's rows in the streamed forward,
/// `dy`'s in the kernel gradient) from a contiguous copy of the columns
/// they use instead of in place: everywhere but where the AVX-512 tile
/// runs. In place, the rows of a strip lie `n` floats apart (4 KB on the
/// InceptionV3 head), so they all fall in the same few sets of the L1
/// cache, which holds 8 of them per set: the strip was read from L2 again
/// by every tile. On Zen 3 (AVX2), alternated in one process on that head
/// (32 x 37632 x 1024, both cores, 4 alternations of 9 calls), copying
/// each block of 64 kernel rows into strips took the forward from 52-57 ms
/// to 32-35 ms together with the halved AVX2 tile and 6 rows, and the
/// kernel gradient ([`outer_product`]) from 62-65 to 41-44 ms; the same
/// bits. The AVX-512 path (measured on Zen 5 before this) keeps reading in
/// place with its prefetches.
fn packs_b() -> bool {
    #[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
    if std::arch::is_x86_feature_detected!("avx512f") {
        return false;
    }
    true
}

/// Kernel rows per task of the streamed forward. Fixed (never derived from
/// the thread count): the partial sums of the tasks are added in task
/// order, so results do not depend on the number of threads.
const STREAM_ROWS: usize = 512;
/// Kernel rows between two visits of a task's partial output (which stays
/// in L2): the register tile runs over this many rows at a time.
const STREAM_STEP: usize = 64;
/// Floats ahead of each kernel row that the streamed forward's tiles
/// prefetch: two strips of [`NR`] columns, so that the kernel's next
/// strips arrive while this one is multiplied (its rows lie 4 KB apart and
/// the hardware prefetchers did not follow them). On the InceptionV3
/// transfer head (32 x 37632 x 1024), alternated in one process: 1.13-1.29x
/// (median 24.5-29.4 ms without, 21.7-22.8 ms with); 1 and 3-8 strips
/// ahead did no better.
const STREAM_AHEAD: usize = 2 * NR;
/// Tasks the streamed forward aims for, splitting the columns when the rows
/// alone give fewer.
const STREAM_TASKS: usize = 8;
/// Elements of one block of [`outer_product`] (rows of the gradient
/// computed together by one task).
const OUTER_BLOCK: usize = 1 << 16;

/// `acc[r][j] += sum_t a[r * a_rs + t * a_ts] * b[t * b_ts + j]` over
/// `steps` values of `t`, one fused multiply-add per term in order of `t`.
/// Every element's arithmetic is the same whatever its place in a tile,
/// which the scalar loops for the leftover columns reproduce (a fused
/// multiply-add rounds once, in a vector lane as in `f32::mul_add`).
///
/// `ahead`: with AVX-512, each row of `b` read also prefetches the two
/// cache lines `ahead` floats past it (0: none), for tiles that stream
/// `b` from memory one strip of columns after another.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn micro<const R: usize>(
    steps: usize,
    a: &[f32],
    a_rs: usize,
    a_ts: usize,
    b: &[f32],
    b_ts: usize,
    acc: &mut [[f32; NR]; R],
    ahead: usize,
) {
    // Only the AVX-512 tiles prefetch.
    let _ = ahead;
    if steps == 0 || R == 0 {
        return;
    }
    // The largest indices read; every other one is smaller (both grow with
    // `r`, `t` and `j`). Checked once here instead of in the loop.
    assert!(
        (R - 1) * a_rs + (steps - 1) * a_ts < a.len() && (steps - 1) * b_ts + NR <= b.len(),
        "dense micro-kernel: operands too short"
    );
    #[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F (just checked); the operands hold
        // every index read (asserted above).
        unsafe { avx512::micro::<R>(steps, a.as_ptr(), a_rs, a_ts, b.as_ptr(), b_ts, acc, ahead) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has AVX2 and FMA (just checked); the operands
        // hold every index read (asserted above).
        unsafe { avx2::micro::<R>(steps, a.as_ptr(), a_rs, a_ts, b.as_ptr(), b_ts, acc) };
        return;
    }
    for t in 0..steps {
        let brow = &b[t * b_ts..][..NR];
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let av = a[r * a_rs + t * a_ts];
            for (c, &bv) in acc_r.iter_mut().zip(brow) {
                *c = av.mul_add(bv, *c);
            }
        }
    }
}

/// [`micro`] at AVX-512 width (the intrinsics are stable from Rust 1.89;
/// `build.rs` sets `avx512_intrinsics` on such compilers): the same fused
/// multiply-adds in the same order, two 16-float vectors per tile row.
#[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
#[allow(clippy::incompatible_msrv)]
mod avx512 {
    use std::arch::x86_64::*;

    use super::NR;

    /// Vectors of sixteen per tile row.
    const V: usize = NR / 16;

    /// [`super::micro`] on AVX-512F, the accumulators in registers.
    ///
    /// # Safety
    /// The CPU must have AVX-512F; `a + r * a_rs + t * a_ts` and
    /// `b + t * b_ts + j` must be readable for `r < R`, `t < steps`,
    /// `j < NR`. `ahead` (floats past each row of `b` to prefetch, 0 for
    /// none) reads nothing.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn micro<const R: usize>(
        steps: usize,
        a: *const f32,
        a_rs: usize,
        a_ts: usize,
        b: *const f32,
        b_ts: usize,
        acc: &mut [[f32; NR]; R],
        ahead: usize,
    ) {
        let mut regs = [[_mm512_setzero_ps(); V]; R];
        for (reg, row) in regs.iter_mut().zip(acc.iter()) {
            for (v, reg) in reg.iter_mut().enumerate() {
                *reg = _mm512_loadu_ps(row.as_ptr().add(16 * v));
            }
        }
        for t in 0..steps {
            let brow = b.add(t * b_ts);
            if ahead != 0 {
                // A hint: it reads nothing, whatever the address.
                _mm_prefetch::<_MM_HINT_T0>(brow.wrapping_add(ahead) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(brow.wrapping_add(ahead + 16) as *const i8);
            }
            let mut bv = [_mm512_setzero_ps(); V];
            for (v, bv) in bv.iter_mut().enumerate() {
                *bv = _mm512_loadu_ps(brow.add(16 * v));
            }
            for (r, reg) in regs.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(r * a_rs + t * a_ts));
                for (reg, &bv) in reg.iter_mut().zip(&bv) {
                    *reg = _mm512_fmadd_ps(av, bv, *reg);
                }
            }
        }
        for (reg, row) in regs.iter().zip(acc.iter_mut()) {
            for (v, &reg) in reg.iter().enumerate() {
                _mm512_storeu_ps(row.as_mut_ptr().add(16 * v), reg);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::NR;

    /// [`super::micro`] on AVX2 + FMA, the accumulators in registers: the
    /// 32 columns as two halves of 16, so that a tile of 6 rows keeps its
    /// 12 accumulators, two vectors of `b` and the broadcast in the 16
    /// registers (the whole width at once, 16 accumulators for 4 rows,
    /// spilled to the stack). Each element gets the same fused
    /// multiply-adds in the same order either way.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `a + r * a_rs + t * a_ts` and
    /// `b + t * b_ts + j` must be readable for `r < R`, `t < steps`,
    /// `j < NR`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn micro<const R: usize>(
        steps: usize,
        a: *const f32,
        a_rs: usize,
        a_ts: usize,
        b: *const f32,
        b_ts: usize,
        acc: &mut [[f32; NR]; R],
    ) {
        for half in 0..NR / 16 {
            let col = 16 * half;
            let mut regs = [[_mm256_setzero_ps(); 2]; R];
            for (reg, row) in regs.iter_mut().zip(acc.iter()) {
                reg[0] = _mm256_loadu_ps(row.as_ptr().add(col));
                reg[1] = _mm256_loadu_ps(row.as_ptr().add(col + 8));
            }
            for t in 0..steps {
                let brow = b.add(t * b_ts + col);
                let (b0, b1) = (_mm256_loadu_ps(brow), _mm256_loadu_ps(brow.add(8)));
                for (r, reg) in regs.iter_mut().enumerate() {
                    let av = _mm256_set1_ps(*a.add(r * a_rs + t * a_ts));
                    reg[0] = _mm256_fmadd_ps(av, b0, reg[0]);
                    reg[1] = _mm256_fmadd_ps(av, b1, reg[1]);
                }
            }
            for (reg, row) in regs.iter().zip(acc.iter_mut()) {
                _mm256_storeu_ps(row.as_mut_ptr().add(col), reg[0]);
                _mm256_storeu_ps(row.as_mut_ptr().add(col + 8), reg[1]);
            }
        }
    }
}

/// `y = x w (+ b)`, `y` `(m, n)` overwritten; one GEMM on rayon's current
/// pool (split over the output, so results do not depend on the thread
/// count), then the bias added row by row. (Small batches with a big
/// kernel take [`dense_forward_streamed`] instead, which reads the
/// kernel once; see `STREAM_FORWARD` in the source.)
///
/// # Errors
/// A buffer whose length disagrees with `(m, k)`, `(k, n)`, `(n,)` or
/// `(m, n)`, named in the message.
pub fn dense_forward(
    m: usize,
    k: usize,
    n: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    let op = "Dense";
    TensorError::check_len(op, "input", &[m, k], x.len())?;
    TensorError::check_len(op, "kernel", &[k, n], w.len())?;
    TensorError::check_len(op, "output", &[m, n], y.len())?;
    if let Some(b) = bias {
        TensorError::check_len(op, "bias", &[n], b.len())?;
    }
    if STREAM_FORWARD
        && m <= STREAM_MAX_BATCH
        && n >= NR
        && k.saturating_mul(n) >= STREAM_MIN_KERNEL
    {
        return dense_forward_streamed(m, k, n, x, w, bias, y);
    }
    sgemm(
        m,
        k,
        n,
        x,
        Layout::RowMajor,
        w,
        Layout::RowMajor,
        y,
        false,
        Parallelism::Rayon,
    );
    if let Some(b) = bias {
        for row in y.chunks_mut(n.max(1)) {
            row.iter_mut().zip(b).for_each(|(v, &b)| *v += b);
        }
    }
    Ok(())
}

/// Gradients of `y = x w + b` from `dy` `(m, n)`: `dx = dy w^T` `(m, k)`,
/// `dw = x^T dy` `(k, n)`, `db = sum_rows(dy)` `(n,)`; each computed only
/// when asked for, and overwritten.
///
/// The GEMMs split their work over the output only (never over the summed
/// dimension), and `db` sums rows in order, so results do not depend on the
/// thread count.
///
/// # Errors
/// A buffer (input, kernel or gradient) of the wrong length, named in the
/// message; every buffer is checked before any is written.
#[allow(clippy::too_many_arguments)]
pub fn dense_backward(
    m: usize,
    k: usize,
    n: usize,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: Option<&mut [f32]>,
    dw: Option<&mut [f32]>,
    db: Option<&mut [f32]>,
) -> Result<()> {
    let op = "Dense backward";
    TensorError::check_len(op, "input", &[m, k], x.len())?;
    TensorError::check_len(op, "kernel", &[k, n], w.len())?;
    TensorError::check_len(op, "output gradient", &[m, n], dy.len())?;
    // Every buffer is checked before any is written.
    if let Some(dx) = &dx {
        TensorError::check_len(op, "input gradient", &[m, k], dx.len())?;
    }
    if let Some(dw) = &dw {
        TensorError::check_len(op, "kernel gradient", &[k, n], dw.len())?;
    }
    if let Some(db) = &db {
        TensorError::check_len(op, "bias gradient", &[n], db.len())?;
    }
    if let Some(dx) = dx {
        sgemm(
            m,
            n,
            k,
            dy,
            Layout::RowMajor,
            w,
            Layout::Transposed,
            dx,
            false,
            Parallelism::Rayon,
        );
    }
    if let Some(dw) = dw {
        sgemm(
            k,
            m,
            n,
            x,
            Layout::Transposed,
            dy,
            Layout::RowMajor,
            dw,
            false,
            Parallelism::Rayon,
        );
    }
    if let Some(db) = db {
        let mut acc = vec![0.0f64; n];
        for row in dy.chunks(n.max(1)) {
            acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v as f64);
        }
        db.iter_mut().zip(&acc).for_each(|(d, &a)| *d = a as f32);
    }
    Ok(())
}

/// [`dense_forward`] for small batches: reads `w` once, in memory order,
/// never packing all of it (on CPUs without AVX-512 a block of 64 rows at
/// a time is copied into column strips that stay in cache). `y` `(m, n)`
/// is overwritten.
///
/// The rows of `w` are cut into fixed blocks of 512, one task each (the
/// columns are split too when that gives fewer than 8 tasks); each task
/// accumulates its block's partial product in order of the rows, and the
/// partial products are then added in block order, then the bias. So the
/// result does not depend on the thread count; it differs from the GEMM's
/// by rounding only (a different summation order).
///
/// # Errors
/// As [`dense_forward`].
pub fn dense_forward_streamed(
    m: usize,
    k: usize,
    n: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    streamed_with(m, k, n, x, w, bias, y, mr(), packs_b())
}

/// [`dense_forward_streamed`] with register tiles of up to `mr` rows (4 to
/// 8), reading the kernel from strips copied per block if `packed` (see
/// [`packs_b`]).
#[allow(clippy::too_many_arguments)]
fn streamed_with(
    m: usize,
    k: usize,
    n: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
    mr: usize,
    packed: bool,
) -> Result<()> {
    let op = "Dense";
    TensorError::check_len(op, "input", &[m, k], x.len())?;
    TensorError::check_len(op, "kernel", &[k, n], w.len())?;
    TensorError::check_len(op, "output", &[m, n], y.len())?;
    if let Some(b) = bias {
        TensorError::check_len(op, "bias", &[n], b.len())?;
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    let blocks = k.div_ceil(STREAM_ROWS).max(1);
    // Column groups: whole tiles of NR, enough of them for STREAM_TASKS.
    let want_groups = STREAM_TASKS.div_ceil(blocks);
    let width = n
        .div_ceil(want_groups)
        .div_ceil(NR)
        .saturating_mul(NR)
        .clamp(NR.min(n), n);
    let groups = n.div_ceil(width);
    let partials: Vec<Vec<f32>> = (0..blocks * groups)
        .into_par_iter()
        .map(|task| {
            let (block, group) = (task / groups, task % groups);
            let rows = block * STREAM_ROWS..((block + 1) * STREAM_ROWS).min(k);
            let c0 = group * width;
            let cw = width.min(n - c0);
            let mut part = vec![0.0f32; m * cw];
            forward_block(m, k, n, x, w, rows, c0, cw, &mut part, (mr, packed));
            part
        })
        .collect();
    y.par_chunks_mut(n).enumerate().for_each(|(r, y_row)| {
        for group in 0..groups {
            let c0 = group * width;
            let cw = width.min(n - c0);
            let y_part = &mut y_row[c0..c0 + cw];
            y_part.copy_from_slice(&partials[group][r * cw..(r + 1) * cw]);
            for block in 1..blocks {
                let p = &partials[block * groups + group][r * cw..(r + 1) * cw];
                y_part.iter_mut().zip(p).for_each(|(v, &p)| *v += p);
            }
        }
        if let Some(b) = bias {
            y_row.iter_mut().zip(b).for_each(|(v, &b)| *v += b);
        }
    });
    Ok(())
}

/// `part` `(m, cw)` `+=` `x[:, rows] w[rows, c0..c0 + cw]`.
#[allow(clippy::too_many_arguments)]
fn forward_block(
    m: usize,
    k: usize,
    n: usize,
    x: &[f32],
    w: &[f32],
    rows: std::ops::Range<usize>,
    c0: usize,
    cw: usize,
    part: &mut [f32],
    (mr, packed): (usize, bool),
) {
    let full = cw / NR * NR;
    let mut strips = STRIPS.with(|s| s.take());
    let mut p0 = rows.start;
    while p0 < rows.end {
        let steps = STREAM_STEP.min(rows.end - p0);
        if packed {
            // The block's rows of w, strip by strip (strip `s`: `steps`
            // rows of NR from `s * steps * NR`), read in memory order.
            strips.resize(steps * full, 0.0);
            for t in 0..steps {
                let src = &w[(p0 + t) * n + c0..][..full];
                for (s, chunk) in src.chunks_exact(NR).enumerate() {
                    strips[(s * steps + t) * NR..][..NR].copy_from_slice(chunk);
                }
            }
        }
        for c in (0..full).step_by(NR) {
            let (b, b_ts, ahead) = if packed {
                (&strips[c / NR * steps * NR..], NR, 0)
            } else {
                (&w[p0 * n + c0 + c..], n, STREAM_AHEAD)
            };
            let b = (b, b_ts, ahead);
            let mut r0 = 0;
            while r0 < m {
                let a = &x[r0 * k + p0..];
                // Each row once: a tile adds into `part`.
                let rows = (m - r0).min(mr);
                match rows {
                    1 => forward_tile::<1>(steps, a, k, b, part, r0, cw, c),
                    2 => forward_tile::<2>(steps, a, k, b, part, r0, cw, c),
                    3 => forward_tile::<3>(steps, a, k, b, part, r0, cw, c),
                    4 => forward_tile::<4>(steps, a, k, b, part, r0, cw, c),
                    5 => forward_tile::<5>(steps, a, k, b, part, r0, cw, c),
                    6 => forward_tile::<6>(steps, a, k, b, part, r0, cw, c),
                    7 => forward_tile::<7>(steps, a, k, b, part, r0, cw, c),
                    _ => forward_tile::<8>(steps, a, k, b, part, r0, cw, c),
                }
                r0 += rows;
            }
        }
        for c in full..cw {
            for r in 0..m {
                let mut s = part[r * cw + c];
                for t in 0..steps {
                    s = x[r * k + p0 + t].mul_add(w[(p0 + t) * n + c0 + c], s);
                }
                part[r * cw + c] = s;
            }
        }
        p0 += steps;
    }
    STRIPS.with(|s| s.set(strips));
}

thread_local! {
    /// Each thread's copy of a block of kernel rows in strips
    /// ([`forward_block`]) or of `dy`'s strip ([`outer_rows`]), kept
    /// between calls.
    static STRIPS: std::cell::Cell<Vec<f32>> = const { std::cell::Cell::new(Vec::new()) };
}

/// One register tile of [`forward_block`]: rows `r0..r0 + R`, columns
/// `c..c + NR` of `part` (row length `cw`); `b` is the strip of the kernel
/// with its row stride and the prefetch distance for [`micro`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn forward_tile<const R: usize>(
    steps: usize,
    a: &[f32],
    k: usize,
    (b, n, ahead): (&[f32], usize, usize),
    part: &mut [f32],
    r0: usize,
    cw: usize,
    c: usize,
) {
    let mut acc = [[0.0f32; NR]; R];
    for (r, acc_r) in acc.iter_mut().enumerate() {
        acc_r.copy_from_slice(&part[(r0 + r) * cw + c..][..NR]);
    }
    micro::<R>(steps, a, k, 1, b, n, &mut acc, ahead);
    for (r, acc_r) in acc.iter().enumerate() {
        part[(r0 + r) * cw + c..][..NR].copy_from_slice(acc_r);
    }
}

/// Rows `k0..k0 + out.len() / n` of the kernel gradient `x^T dy` (`x`
/// `(m, k)`, `dy` `(m, n)`) into `out`, overwritten.
///
/// Each element is `sum_t x[t, i] dy[t, j]` accumulated from zero in order
/// of `t` with fused multiply-adds: the same bits whatever block of rows it
/// is computed in, so an optimizer applying the gradient block by block
/// sees exactly the values [`outer_product`] writes.
///
/// # Errors
/// A buffer of the wrong length, or rows past `k`.
pub fn outer_rows(
    m: usize,
    k: usize,
    n: usize,
    x: &[f32],
    dy: &[f32],
    k0: usize,
    out: &mut [f32],
) -> Result<()> {
    outer_rows_with(m, k, n, x, dy, k0, out, (mr(), packs_b()))
}

/// [`outer_rows`] with register tiles of up to `mr` rows (4 to 8), reading
/// `dy` from a copy of each strip if `packed` (see [`packs_b`]).
#[allow(clippy::too_many_arguments)]
fn outer_rows_with(
    m: usize,
    k: usize,
    n: usize,
    x: &[f32],
    dy: &[f32],
    k0: usize,
    out: &mut [f32],
    (mr, packed): (usize, bool),
) -> Result<()> {
    let op = "Dense kernel gradient";
    TensorError::check_len(op, "input", &[m, k], x.len())?;
    TensorError::check_len(op, "output gradient", &[m, n], dy.len())?;
    if n == 0 {
        return Ok(());
    }
    let rows = out.len() / n;
    if out.len() % n != 0 || k0 + rows > k {
        return Err(TensorError::invalid(
            op,
            format!(
                "a block of {} values at row {k0} is not whole rows of {n} inside {k} rows",
                out.len()
            ),
        ));
    }
    let full = n / NR * NR;
    let mut strip = STRIPS.with(|s| s.take());
    for c in (0..full).step_by(NR) {
        let b = if packed {
            // dy's columns c..c + NR, contiguous (see `packs_b`).
            strip.resize(m * NR, 0.0);
            for (t, dst) in strip.chunks_exact_mut(NR).enumerate() {
                dst.copy_from_slice(&dy[t * n + c..][..NR]);
            }
            (&strip[..], NR)
        } else {
            (&dy[c..], n)
        };
        let mut i = 0;
        while i < rows {
            let a = &x[k0 + i..];
            let tile = (rows - i).min(mr);
            match tile {
                1 => outer_tile::<1>(m, a, k, b, n, out, i, c),
                2 => outer_tile::<2>(m, a, k, b, n, out, i, c),
                3 => outer_tile::<3>(m, a, k, b, n, out, i, c),
                4 => outer_tile::<4>(m, a, k, b, n, out, i, c),
                5 => outer_tile::<5>(m, a, k, b, n, out, i, c),
                6 => outer_tile::<6>(m, a, k, b, n, out, i, c),
                7 => outer_tile::<7>(m, a, k, b, n, out, i, c),
                _ => outer_tile::<8>(m, a, k, b, n, out, i, c),
            }
            i += tile;
        }
    }
    STRIPS.with(|s| s.set(strip));
    for i in 0..rows {
        for j in full..n {
            let mut s = 0.0f32;
            for t in 0..m {
                s = x[t * k + k0 + i].mul_add(dy[t * n + j], s);
            }
            out[i * n + j] = s;
        }
    }
    Ok(())
}

/// One register tile of [`outer_rows`]: rows `i..i + R`, columns
/// `c..c + NR` of `out` (row length `n`); `b` is `dy`'s strip with its row
/// stride.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn outer_tile<const R: usize>(
    m: usize,
    a: &[f32],
    k: usize,
    (b, b_ts): (&[f32], usize),
    n: usize,
    out: &mut [f32],
    i: usize,
    c: usize,
) {
    let mut acc = [[0.0f32; NR]; R];
    micro::<R>(m, a, 1, k, b, b_ts, &mut acc, 0);
    for (r, acc_r) in acc.iter().enumerate() {
        out[(i + r) * n + c..][..NR].copy_from_slice(acc_r);
    }
}

/// The kernel gradient `dw = x^T dy` `(k, n)`, overwritten: [`outer_rows`]
/// over blocks of rows in parallel (same bits whatever the thread count or
/// the blocks).
///
/// # Errors
/// A buffer of the wrong length.
pub fn outer_product(
    m: usize,
    k: usize,
    n: usize,
    x: &[f32],
    dy: &[f32],
    dw: &mut [f32],
) -> Result<()> {
    TensorError::check_len(
        "Dense kernel gradient",
        "kernel gradient",
        &[k, n],
        dw.len(),
    )?;
    if n == 0 {
        return Ok(());
    }
    let rows = (OUTER_BLOCK / n).max(1);
    dw.par_chunks_mut(rows * n)
        .enumerate()
        .try_for_each(|(b, out)| outer_rows(m, k, n, x, dy, b * rows, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i + seed) * 7919 % 1013) as f32 - 506.0) / 400.0)
            .collect()
    }

    /// The register-tile heights (8 on AVX-512, 6 elsewhere, and 4) on
    /// every row count up to 17, each row once (a tile of 5-7 rows stepped
    /// by 4 added the last rows twice), with the kernel's strips read in
    /// place and copied.
    #[test]
    fn every_tile_height_covers_each_row_once() {
        let (k, n) = (70, 2 * NR + 3);
        let w = values(k * n, 1);
        for (mr, packed) in [4, 6, 8]
            .into_iter()
            .flat_map(|mr| [(mr, false), (mr, true)])
        {
            for m in 1..=17 {
                let x = values(m * k, m);
                let mut want = vec![0.0f32; m * n];
                for r in 0..m {
                    for j in 0..n {
                        want[r * n + j] = (0..k).map(|t| x[r * k + t] * w[t * n + j]).sum();
                    }
                }
                let mut y = vec![f32::NAN; m * n];
                streamed_with(m, k, n, &x, &w, None, &mut y, mr, packed).unwrap();
                for (i, (a, b)) in y.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() < 1e-3,
                        "mr {mr} packed {packed} m {m} [{i}]: {a} vs {b}"
                    );
                }
                // The kernel gradient x^T dy of rows 3.. of x's columns.
                let dy = values(m * n, 7 * m);
                let rows = k - 3;
                let mut out = vec![f32::NAN; rows * n];
                outer_rows_with(m, k, n, &x, &dy, 3, &mut out, (mr, packed)).unwrap();
                for i in 0..rows {
                    for j in 0..n {
                        let s: f32 = (0..m).map(|t| x[t * k + 3 + i] * dy[t * n + j]).sum();
                        let got = out[i * n + j];
                        assert!(
                            (got - s).abs() < 1e-3,
                            "mr {mr} packed {packed} m {m}: {got} vs {s}"
                        );
                    }
                }
            }
        }
    }
}
