//! A convolution (with its bias and optional ReLU) followed by max pooling,
//! computed a few images at a time so that the convolution's output, the
//! largest tensor of an image model and four times the pooled one, never
//! exists in full: each chunk of it is pooled while it is still in cache,
//! and in the backward pass each chunk of its gradient is rebuilt from the
//! pooled gradient and consumed by both convolution gradients at once.
//!
//! The first layer of the Cats-vs-Dogs CNN writes 90 MB of output per batch
//! of 32; unfused, that tensor is written, read by the pooling, kept for
//! the ReLU's mask, and its gradient is zeroed, scattered into, masked and
//! read twice more. Here only the pooled values and their argmax are kept.
//!
//! The results are those of [`conv2d_forward`](crate::conv::conv2d_forward())
//! then [`max_pool2d_forward`](crate::pool::max_pool2d_forward) (the same
//! kernels run on each chunk), and in backward those of the max-pooling
//! gradient, the ReLU mask and the two convolution gradients, up to the
//! rounding of summing the kernel gradient chunk by chunk.

use std::cell::Cell;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::conv::{
    conv2d_backward_filter, conv2d_backward_input, conv2d_forward, conv2d_forward_bands,
    forward_bands, ConvGeometry, Epilogue,
};
use crate::pool::{max_pool2d_backward_masked_uninit, max_pool2d_forward_uninit, PoolGeometry};
use crate::{Padding, Result, TensorError};

/// Bytes of convolution output per chunk: small enough that a chunk is
/// pooled (and its gradient rebuilt and consumed) from the last-level cache
/// rather than from memory, large enough that each chunk gives the
/// convolution kernels (Winograd's bands and filter-gradient partials) full
/// work on both cores. Measured on the basic CNN (2 cores, 2 MiB L2, large
/// shared L3): 4 MiB chunks made conv2's and conv3's backward passes slower
/// than unfused; 16 and 32 MiB were alike, 16 keeps less memory.
const CHUNK_BYTES: usize = 16 << 20;

/// Partial sums of the kernel gradient on the one-image-per-chunk path: a
/// fixed number of contiguous groups of images, added in order, so the
/// result does not depend on the thread count.
const IMAGE_GROUPS: usize = 8;

/// Largest per-thread scratch kept between calls (bytes); a larger one is
/// freed after use.
const KEEP_SCRATCH_BYTES: usize = 64 << 20;

/// Runs `f` on `len` values of this thread's scratch buffer (contents
/// unspecified), kept between calls so that a call does not allocate and
/// zero a fresh buffer. Reentrant: a nested call (rayon may run another
/// task of the same loop on this thread while `f` waits) gets a buffer of
/// its own.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    thread_local! {
        static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    }
    let mut v = SCRATCH.with(Cell::take);
    if v.len() < len {
        v.resize(len, 0.0);
    }
    let r = f(&mut v[..len]);
    if v.len() * 4 <= KEEP_SCRATCH_BYTES {
        SCRATCH.with(|s| s.set(v));
    }
    r
}

/// A convolution followed by max pooling of its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvPoolGeometry {
    /// The convolution, over the whole batch.
    pub conv: ConvGeometry,
    /// The pooling of the convolution's output, over the whole batch.
    pub pool: PoolGeometry,
    /// Images per chunk (at least 1). Set by [`ConvPoolGeometry::new`];
    /// tests may lower it to exercise several chunks on small shapes. The
    /// forward and backward passes of one layer must use the same value
    /// (the argmax is counted within a chunk). Chunks of one image run in
    /// parallel, each on one thread, its convolution output pooled from
    /// that core's own cache; larger chunks run one after the other, each
    /// on all threads.
    pub chunk: usize,
}

impl ConvPoolGeometry {
    /// Max pooling with a `pool` window, `strides` and `padding` over the
    /// output of the convolution `conv`.
    pub fn new(
        conv: ConvGeometry,
        pool: (usize, usize),
        strides: (usize, usize),
        padding: Padding,
    ) -> Result<Self> {
        let pool = PoolGeometry::new(conv.output_shape(), pool, strides, padding)?;
        let per_image = 4 * conv.oh * conv.ow * conv.f;
        // The direct kernels (few input channels: a first layer) cost the
        // same per image however many a call gets: one image per chunk,
        // in parallel (measured on the basic CNN's first layer, whose
        // pooling had cost as much as its convolution from 16 MiB chunks).
        // Winograd and GEMM need many tiles per call.
        let chunk = if conv.uses_direct() {
            1
        } else {
            // As many images as fit CHUNK_BYTES, then evened out over the
            // chunks that makes: 28 + 4 images would leave the second
            // chunk too few tiles to keep both cores busy; 16 + 16 does.
            let most = (CHUNK_BYTES / per_image.max(1)).clamp(1, conv.n);
            conv.n.div_ceil(conv.n.div_ceil(most))
        };
        Ok(ConvPoolGeometry { conv, pool, chunk })
    }

    /// Output shape `(n, pooled h, pooled w, filters)`.
    pub fn output_shape(&self) -> [usize; 4] {
        self.pool.output_shape()
    }

    /// `(first image, images)` of each chunk.
    fn chunks(&self) -> impl Iterator<Item = (usize, usize)> {
        let (n, k) = (self.conv.n, self.chunk.max(1));
        (0..n).step_by(k).map(move |i| (i, k.min(n - i)))
    }

    /// The convolution and the pooling of `images` images.
    fn of(&self, images: usize) -> (ConvGeometry, PoolGeometry) {
        (
            ConvGeometry {
                n: images,
                ..self.conv
            },
            PoolGeometry {
                n: images,
                ..self.pool
            },
        )
    }

    fn check(&self, op: &str) -> Result<()> {
        let (c, p) = (&self.conv, &self.pool);
        if [p.n, p.h, p.w, p.c] != c.output_shape() || self.chunk == 0 {
            return Err(TensorError::invalid(
                op,
                format!(
                    "inconsistent geometry: convolution output {:?}, pooling input {:?}, \
                     chunk {}",
                    c.output_shape(),
                    [p.n, p.h, p.w, p.c],
                    self.chunk
                ),
            ));
        }
        Ok(())
    }
}

const FWD: &str = "Conv2D+MaxPooling2D";
const BWD: &str = "Conv2D+MaxPooling2D backward";

/// Element counts per image: (input, convolution output, pooled output).
fn sizes(g: &ConvPoolGeometry) -> (usize, usize, usize) {
    let (c, p) = (&g.conv, &g.pool);
    (c.h * c.w * c.c, c.oh * c.ow * c.f, p.oh * p.ow * p.c)
}

/// Convolution of `input` (NHWC) by `kernel` (HWIO) plus `bias` and the
/// `epilogue`, then max pooling, into `out` (`g.output_shape()`) and, when
/// given (training needs it, inference does not), `argmax` (same length:
/// for each output, the index of the element chosen in the convolution's
/// output, counted from the first image of its chunk of `g.chunk` images).
/// Both are written in full on `Ok`, so they may be a fresh `Vec`'s spare
/// capacity. Wrong lengths are refused naming the buffer.
pub fn conv2d_max_pool_forward(
    g: &ConvPoolGeometry,
    input: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [MaybeUninit<f32>],
    mut argmax: Option<&mut [MaybeUninit<u32>]>,
) -> Result<()> {
    g.check(FWD)?;
    let (in_img, conv_img, out_img) = sizes(g);
    TensorError::check_len(FWD, "input", &g.conv.input_shape(), input.len())?;
    TensorError::check_len(FWD, "kernel", &g.conv.kernel_shape(), kernel.len())?;
    TensorError::check_len(FWD, "output", &g.output_shape(), out.len())?;
    if let Some(a) = argmax.as_deref() {
        TensorError::check_len(FWD, "argmax", &g.output_shape(), a.len())?;
    }
    if let Some(b) = bias {
        TensorError::check_len(FWD, "bias", &[g.conv.f], b.len())?;
    }
    if let Some(bands) = forward_bands(&g.conv) {
        if let Some(plan) = BandPlan::new(g, &bands) {
            return forward_by_bands(g, &plan, input, kernel, bias, epilogue, out, argmax);
        }
    }
    if g.chunk == 1 {
        return forward_per_image(g, input, kernel, bias, epilogue, out, argmax);
    }
    let most = g.chunk.min(g.conv.n);
    let mut scratch = vec![0.0f32; most * conv_img];
    // Without a caller's argmax, one chunk's worth, overwritten each time.
    let mut scratch_arg = Vec::with_capacity(if argmax.is_some() { 0 } else { most * out_img });
    for (first, images) in g.chunks() {
        let (cg, pg) = g.of(images);
        let conv_out = &mut scratch[..images * conv_img];
        conv2d_forward(
            &cg,
            &input[first * in_img..(first + images) * in_img],
            kernel,
            bias,
            epilogue,
            conv_out,
        )?;
        let at = first * out_img..(first + images) * out_img;
        let arg = match argmax.as_deref_mut() {
            Some(a) => &mut a[at.clone()],
            None => &mut scratch_arg.spare_capacity_mut()[..images * out_img],
        };
        max_pool2d_forward_uninit(&pg, conv_out, &mut out[at], arg)?;
    }
    Ok(())
}

/// [`conv2d_max_pool_forward`] with chunks of one image: the images in
/// parallel, each convolved into its thread's scratch and pooled from there.
fn forward_per_image(
    g: &ConvPoolGeometry,
    input: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [MaybeUninit<f32>],
    argmax: Option<&mut [MaybeUninit<u32>]>,
) -> Result<()> {
    let (in_img, conv_img, out_img) = sizes(g);
    let (cg, pg) = g.of(1);
    let run = |i: usize, o: &mut [MaybeUninit<f32>], a: Option<&mut [MaybeUninit<u32>]>| {
        with_scratch(conv_img, |conv_out| {
            let x = &input[i * in_img..(i + 1) * in_img];
            conv2d_forward(&cg, x, kernel, bias, epilogue, conv_out)?;
            match a {
                Some(a) => max_pool2d_forward_uninit(&pg, conv_out, o, a),
                None => {
                    let mut arg = Vec::with_capacity(out_img);
                    max_pool2d_forward_uninit(&pg, conv_out, o, arg.spare_capacity_mut())
                }
            }
        })
    };
    if out_img == 0 {
        return Ok(());
    }
    match argmax {
        Some(a) => out
            .par_chunks_mut(out_img)
            .zip(a.par_chunks_mut(out_img))
            .enumerate()
            .try_for_each(|(i, (o, a))| run(i, o, Some(a))),
        None => out
            .par_chunks_mut(out_img)
            .enumerate()
            .try_for_each(|(i, o)| run(i, o, None)),
    }
}

/// The output rows `[start, end)` of an input of `size` rows that output
/// row `o` of a pooling with `stride`, leading padding `pad` and window
/// `size` reads (empty when the window lies wholly in padding).
fn window(o: usize, stride: usize, pad: usize, len: usize, size: usize) -> (usize, usize) {
    let lo = (o * stride) as isize - pad as isize;
    let start = lo.clamp(0, size as isize) as usize;
    let end = (lo + len as isize).clamp(0, size as isize) as usize;
    (start, end.max(start))
}

/// Which pooled rows each band of a banded convolution (see
/// [`forward_bands`]) computes: those whose windows lie wholly inside the
/// band (`owned`, a contiguous range of pooled rows numbered through the
/// batch), and, for a row whose window spans bands (overlapping windows,
/// say 3x3 with stride 2), each band's share of its maxima (`shared`),
/// combined in band order afterwards.
struct BandPlan {
    /// Each band's convolution rows, numbered through the batch.
    rows: Vec<(usize, usize)>,
    /// Each band's pooled rows `[start, end)`.
    owned: Vec<(usize, usize)>,
    /// Each band's rows shared with other bands, ascending.
    shared: Vec<Vec<usize>>,
}

impl BandPlan {
    /// The plan for `bands` (each band's convolution rows), or `None` where
    /// banding does not fit: a pooled window wholly in padding, or argmax
    /// indices past `u32`.
    fn new(g: &ConvPoolGeometry, bands: &[(usize, usize)]) -> Option<Self> {
        let (c, p) = (&g.conv, &g.pool);
        let chunk_len = g.chunk.min(c.n).checked_mul(c.oh * c.ow * c.f)?;
        if chunk_len > u32::MAX as usize || bands.is_empty() || p.ow == 0 {
            return None;
        }
        let band_of = |row: usize| bands.partition_point(|&(_, end)| end <= row);
        let mut owned = vec![(0, 0); bands.len()];
        let mut shared = vec![Vec::new(); bands.len()];
        for q in 0..p.n * p.oh {
            let (lo, hi) = Self::reads(g, q);
            if lo == hi {
                return None;
            }
            let (first, last) = (band_of(lo), band_of(hi - 1));
            if last >= bands.len() {
                return None;
            }
            if first == last {
                let o = &mut owned[first];
                if o.0 == o.1 {
                    *o = (q, q + 1);
                } else if o.1 == q {
                    o.1 = q + 1;
                } else {
                    return None;
                }
            } else {
                (first..=last).for_each(|b| shared[b].push(q));
            }
        }
        Some(BandPlan {
            rows: bands.to_vec(),
            owned,
            shared,
        })
    }

    /// The convolution rows (numbered through the batch) that pooled row
    /// `q` (numbered through the batch) reads.
    fn reads(g: &ConvPoolGeometry, q: usize) -> (usize, usize) {
        let (c, p) = (&g.conv, &g.pool);
        let (img, py) = (q / p.oh, q % p.oh);
        let (lo, hi) = window(py, p.sh, p.pads.top, p.ph, c.oh);
        (img * c.oh + lo, img * c.oh + hi)
    }
}

/// One band's share of the pooled output.
struct BandWork<'a> {
    /// Its owned pooled rows (from `first`), values and argmax.
    first: usize,
    out: &'a mut [MaybeUninit<f32>],
    arg: Option<&'a mut [MaybeUninit<u32>]>,
    /// Its shares of the rows it has in common with other bands.
    shared: &'a [usize],
    /// Allocated by the band's task (in parallel), `shared.len()` rows.
    shared_out: &'a mut Vec<f32>,
    shared_arg: &'a mut Vec<u32>,
}

/// Running maxima of one pooled row: values and argmax (`ow x f` each).
#[derive(Default)]
struct RowMax {
    m: Vec<f32>,
    k: Vec<u32>,
}

/// Max pooling of pooled row `q` (numbered through the batch) over the
/// convolution rows `[lo, hi)` of its window, which `buf` holds (its first
/// row being row `b0`): `p.ow x f` maxima into `out` and, when wanted,
/// their argmax, counted from the first image of the row's chunk. Window
/// cells in row-major order, the first maximum winning, as
/// [`max_pool2d_forward`](crate::pool::max_pool2d_forward). A window with
/// no cells gives 0 and `u32::MAX`. `acc` is scratch.
#[allow(clippy::too_many_arguments)]
fn pool_row(
    g: &ConvPoolGeometry,
    q: usize,
    buf: &[f32],
    b0: usize,
    (lo, hi): (usize, usize),
    out: &mut [MaybeUninit<f32>],
    arg: Option<&mut [MaybeUninit<u32>]>,
    acc: &mut RowMax,
) {
    if arg.is_some() {
        pool_row_with::<true>(g, q, buf, b0, (lo, hi), acc);
    } else {
        pool_row_with::<false>(g, q, buf, b0, (lo, hi), acc);
    }
    let len = g.pool.ow * g.conv.f;
    for (o, &v) in out[..len].iter_mut().zip(&acc.m) {
        o.write(v);
    }
    if let Some(a) = arg {
        for (o, &v) in a[..len].iter_mut().zip(&acc.k) {
            o.write(v);
        }
    }
}

/// [`pool_row`]'s maxima into `acc` (the argmax only with `ARG`): the first
/// cell of each window, then the others in row-major window order, each
/// cell compared a whole channel vector at a time.
///
/// On a CPU with AVX-512F (or else AVX2) the loops run in a build for it,
/// whatever the crate was compiled for: in a user's crate built without
/// `-C target-cpu` they were SSE2 and this function took 8% of a basic-CNN
/// training step (1% with AVX-512).
fn pool_row_with<const ARG: bool>(
    g: &ConvPoolGeometry,
    q: usize,
    buf: &[f32],
    b0: usize,
    rows: (usize, usize),
    acc: &mut RowMax,
) {
    #[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: the CPU has AVX-512F.
        return unsafe { pool_row_avx512::<ARG>(g, q, buf, b0, rows, acc) };
    }
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2.
        return unsafe { pool_row_avx2::<ARG>(g, q, buf, b0, rows, acc) };
    }
    pool_row_body::<ARG>(g, q, buf, b0, rows, acc)
}

/// [`pool_row_body`] compiled for AVX2 (CPUs without AVX-512: Zen 3 and
/// most desktop CPUs).
///
/// # Safety
/// The CPU must have AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn pool_row_avx2<const ARG: bool>(
    g: &ConvPoolGeometry,
    q: usize,
    buf: &[f32],
    b0: usize,
    rows: (usize, usize),
    acc: &mut RowMax,
) {
    pool_row_body::<ARG>(g, q, buf, b0, rows, acc)
}

/// [`pool_row_body`] compiled for AVX-512F.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
#[allow(clippy::incompatible_msrv)]
#[target_feature(enable = "avx512f")]
unsafe fn pool_row_avx512<const ARG: bool>(
    g: &ConvPoolGeometry,
    q: usize,
    buf: &[f32],
    b0: usize,
    rows: (usize, usize),
    acc: &mut RowMax,
) {
    pool_row_body::<ARG>(g, q, buf, b0, rows, acc)
}

/// [`pool_row_with`]'s work, inlined into each build of it.
#[inline(always)]
fn pool_row_body<const ARG: bool>(
    g: &ConvPoolGeometry,
    q: usize,
    buf: &[f32],
    b0: usize,
    (lo, hi): (usize, usize),
    acc: &mut RowMax,
) {
    let (c, p) = (&g.conv, &g.pool);
    let (f, ow) = (c.f, c.ow);
    let len = p.ow * f;
    acc.m.clear();
    acc.m.resize(len, 0.0);
    acc.k.clear();
    acc.k.resize(if ARG { len } else { 0 }, u32::MAX);
    // The first convolution row of this image's chunk: argmax counts from
    // there.
    let img = q / p.oh;
    let chunk_row = img / g.chunk.max(1) * g.chunk.max(1) * c.oh;
    let cell = |r: usize, x: usize| ((r - b0) * ow + x) * f;
    let index = |r: usize, x: usize| (((r - chunk_row) * ow + x) * f) as u32;
    if lo == hi {
        return;
    }
    for px in 0..p.ow {
        let (x0, x1) = window(px, p.sw, p.pads.left, p.pw, ow);
        if x0 == x1 {
            continue;
        }
        let at = px * f;
        acc.m[at..at + f].copy_from_slice(&buf[cell(lo, x0)..cell(lo, x0) + f]);
        if ARG {
            let i0 = index(lo, x0);
            for (ch, k) in acc.k[at..at + f].iter_mut().enumerate() {
                *k = i0 + ch as u32;
            }
        }
        for r in lo..hi {
            for x in x0..x1 {
                if r == lo && x == x0 {
                    continue;
                }
                let src = &buf[cell(r, x)..cell(r, x) + f];
                let m = &mut acc.m[at..at + f];
                if ARG {
                    let i0 = index(r, x);
                    let k = &mut acc.k[at..at + f];
                    for ch in 0..f {
                        let better = src[ch] > m[ch];
                        m[ch] = if better { src[ch] } else { m[ch] };
                        k[ch] = if better { i0 + ch as u32 } else { k[ch] };
                    }
                } else {
                    for ch in 0..f {
                        m[ch] = if src[ch] > m[ch] { src[ch] } else { m[ch] };
                    }
                }
            }
        }
    }
}

/// Pooled rows `[first, upto)` of the outputs, `at` being `first`.
type Rows<'a> = (
    usize,
    &'a mut [MaybeUninit<f32>],
    Option<&'a mut [MaybeUninit<u32>]>,
);

/// Splits the pooled rows up to `upto` (`row` values each) off the front
/// of `rest` and `rest_arg`, whose first row is `*at`, and moves `*at`.
fn take_rows<'a>(
    upto: usize,
    row: usize,
    rest: &mut &'a mut [MaybeUninit<f32>],
    rest_arg: &mut Option<&'a mut [MaybeUninit<u32>]>,
    at: &mut usize,
) -> Rows<'a> {
    let len = (upto - *at) * row;
    let (o, tail) = std::mem::take(rest).split_at_mut(len);
    *rest = tail;
    let a = rest_arg.take().map(|a| {
        let (a, tail) = a.split_at_mut(len);
        *rest_arg = Some(tail);
        a
    });
    let first = *at;
    *at = upto;
    (first, o, a)
}

/// [`conv2d_max_pool_forward`] on a Winograd layer: each band of the
/// convolution's output is pooled as soon as it is computed, from the
/// thread's cache; it is never written out. A pooled row whose window
/// spans two bands gets each band's share of its maxima, combined after.
#[allow(clippy::too_many_arguments)]
fn forward_by_bands(
    g: &ConvPoolGeometry,
    plan: &BandPlan,
    input: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [MaybeUninit<f32>],
    mut argmax: Option<&mut [MaybeUninit<u32>]>,
) -> Result<()> {
    let row = g.pool.ow * g.pool.c;
    let want_arg = argmax.is_some();
    // Each band's shares of its shared rows, allocated by its task.
    let mut shared_out: Vec<Vec<f32>> = vec![Vec::new(); plan.rows.len()];
    let mut shared_arg: Vec<Vec<u32>> = vec![Vec::new(); plan.rows.len()];
    // Split the outputs into each band's owned rows and the gaps between
    // them (the shared rows), in order.
    let mut items = Vec::with_capacity(plan.rows.len());
    let mut gaps = Vec::new();
    let (mut rest, mut rest_arg, mut at) = (out, argmax.take(), 0);
    for (((&(start, end), shared), so), sa) in plan
        .owned
        .iter()
        .zip(&plan.shared)
        .zip(&mut shared_out)
        .zip(&mut shared_arg)
    {
        if start < end {
            gaps.push(take_rows(start, row, &mut rest, &mut rest_arg, &mut at));
        }
        let (first, out, arg) = take_rows(end.max(at), row, &mut rest, &mut rest_arg, &mut at);
        items.push(BandWork {
            first,
            out,
            arg,
            shared,
            shared_out: so,
            shared_arg: sa,
        });
    }
    gaps.push(take_rows(
        g.pool.n * g.pool.oh,
        row,
        &mut rest,
        &mut rest_arg,
        &mut at,
    ));
    let sink = |mut w: BandWork, (b0, b1): (usize, usize), buf: &[f32]| {
        let mut acc = RowMax::default();
        w.shared_out.resize(w.shared.len() * row, 0.0);
        if want_arg {
            w.shared_arg.resize(w.shared.len() * row, 0);
        }
        let rows = w.out.len() / row.max(1);
        for i in 0..rows {
            let q = w.first + i;
            let o = &mut w.out[i * row..(i + 1) * row];
            let a = w.arg.as_deref_mut().map(|a| &mut a[i * row..(i + 1) * row]);
            pool_row(g, q, buf, b0, BandPlan::reads(g, q), o, a, &mut acc);
        }
        for (i, &q) in w.shared.iter().enumerate() {
            let (lo, hi) = BandPlan::reads(g, q);
            let o = as_uninit(&mut w.shared_out[i * row..(i + 1) * row]);
            let a = (want_arg).then(|| as_uninit(&mut w.shared_arg[i * row..(i + 1) * row]));
            pool_row(g, q, buf, b0, (lo.max(b0), hi.min(b1)), o, a, &mut acc);
        }
    };
    conv2d_forward_bands(&g.conv, input, kernel, bias, epilogue, items, &sink)?;
    // The shared rows: each band's share in band order, the first maximum
    // winning, as one pass over the whole window would have chosen. Which
    // bands share each row is found in order; the rows are then merged in
    // parallel.
    let mut next = vec![0usize; plan.rows.len()];
    let mut merges = Vec::new();
    for (first, out, arg) in gaps {
        let mut args = arg.map(|a| a.chunks_mut(row.max(1)));
        for (i, o) in out.chunks_mut(row.max(1)).enumerate() {
            let q = first + i;
            let a = args.as_mut().and_then(Iterator::next);
            let mut shares = Vec::with_capacity(2);
            for (b, (shared, at)) in plan.shared.iter().zip(&mut next).enumerate() {
                if shared.get(*at) == Some(&q) {
                    shares.push((b, *at));
                    *at += 1;
                }
            }
            debug_assert!(!shares.is_empty(), "pooled row {q} shared by no band");
            merges.push((o, a, shares));
        }
    }
    merges.into_par_iter().for_each(|(o, mut a, shares)| {
        for (s, &(b, j)) in shares.iter().enumerate() {
            let vals = &shared_out[b][j * row..(j + 1) * row];
            let args = shared_arg[b].get(j * row..(j + 1) * row);
            if s == 0 {
                for (d, &v) in o.iter_mut().zip(vals) {
                    d.write(v);
                }
                if let (Some(a), Some(args)) = (a.as_deref_mut(), args) {
                    for (d, &v) in a.iter_mut().zip(args) {
                        d.write(v);
                    }
                }
                continue;
            }
            for e in 0..row {
                // SAFETY (assume_init_read): written by the first share.
                if vals[e] > unsafe { o[e].assume_init_read() } {
                    o[e].write(vals[e]);
                    if let (Some(a), Some(args)) = (a.as_deref_mut(), args) {
                        a[e].write(args[e]);
                    }
                }
            }
        }
    });
    Ok(())
}

/// The gradients of [`conv2d_max_pool_forward`] from `dout`, the gradient
/// of its output: `dinput` (NHWC), `dkernel` (HWIO) and `dbias`, each
/// overwritten when given. `out` and `argmax` are what the forward pass
/// wrote (the output gives the ReLU's mask: a pooled value of 0 passed no
/// gradient). Wrong lengths are refused naming the buffer.
#[allow(clippy::too_many_arguments)]
pub fn conv2d_max_pool_backward(
    g: &ConvPoolGeometry,
    input: &[f32],
    kernel: &[f32],
    epilogue: Epilogue,
    out: &[f32],
    argmax: &[u32],
    dout: &[f32],
    mut dinput: Option<&mut [f32]>,
    mut dkernel: Option<&mut [f32]>,
    mut dbias: Option<&mut [f32]>,
) -> Result<()> {
    g.check(BWD)?;
    let (in_img, conv_img, out_img) = sizes(g);
    let c = &g.conv;
    TensorError::check_len(BWD, "input", &c.input_shape(), input.len())?;
    TensorError::check_len(BWD, "kernel", &c.kernel_shape(), kernel.len())?;
    for (what, len) in [
        ("output", out.len()),
        ("argmax", argmax.len()),
        ("output gradient", dout.len()),
    ] {
        TensorError::check_len(BWD, what, &g.output_shape(), len)?;
    }
    if let Some(dx) = dinput.as_deref() {
        TensorError::check_len(BWD, "input gradient", &c.input_shape(), dx.len())?;
    }
    if let Some(dw) = dkernel.as_deref() {
        TensorError::check_len(BWD, "kernel gradient", &c.kernel_shape(), dw.len())?;
    }
    if let Some(db) = dbias.as_deref() {
        TensorError::check_len(BWD, "bias gradient", &[c.f], db.len())?;
    }
    let want_filter = dkernel.is_some() || dbias.is_some();
    if g.chunk == 1 {
        return backward_per_image(
            g, input, kernel, epilogue, out, argmax, dout, dinput, dkernel, dbias,
        );
    }
    let most = g.chunk.min(c.n);
    // The ReLU's mask: a pooled value of 0 passed no gradient.
    let relu_out = match epilogue {
        Epilogue::Relu => Some(out),
        Epilogue::None => None,
    };
    // One chunk of the convolution's output gradient: written in full by
    // the pooling gradient, chunk after chunk.
    let mut dconv: Vec<f32> = Vec::with_capacity(most * conv_img);
    // The kernel and bias gradients of one chunk, added into the totals.
    let mut part_w = vec![
        0.0f32;
        if want_filter {
            c.kernel_shape().iter().product()
        } else {
            0
        }
    ];
    let mut part_b = vec![0.0f32; if dbias.is_some() { c.f } else { 0 }];
    for (i, (first, images)) in g.chunks().enumerate() {
        let (cg, pg) = g.of(images);
        let at = first * out_img..(first + images) * out_img;
        let len = images * conv_img;
        max_pool2d_backward_masked_uninit(
            &pg,
            &dout[at.clone()],
            relu_out.map(|o| &o[at.clone()]),
            &argmax[at],
            &mut dconv.spare_capacity_mut()[..len],
        )?;
        // SAFETY: the pooling gradient wrote all `len` elements (its
        // contract on `Ok`), and `len <= capacity`.
        unsafe { dconv.set_len(len) };
        let dy = &dconv[..len];
        if let Some(dx) = dinput.as_deref_mut() {
            conv2d_backward_input(
                &cg,
                dy,
                kernel,
                &mut dx[first * in_img..(first + images) * in_img],
            )?;
        }
        if want_filter {
            let x = &input[first * in_img..(first + images) * in_img];
            if i == 0 {
                // The first chunk writes the totals directly.
                let mut scratch_w = Vec::new();
                let dw: &mut [f32] = match dkernel.as_deref_mut() {
                    Some(dw) => dw,
                    None => {
                        scratch_w.resize(part_w.len(), 0.0);
                        &mut scratch_w
                    }
                };
                conv2d_backward_filter(&cg, x, dy, dw, dbias.as_deref_mut())?;
            } else {
                let pb = (!part_b.is_empty()).then_some(part_b.as_mut_slice());
                conv2d_backward_filter(&cg, x, dy, &mut part_w, pb)?;
                if let Some(dw) = dkernel.as_deref_mut() {
                    add_into(dw, &part_w);
                }
                if let Some(db) = dbias.as_deref_mut() {
                    add_into(db, &part_b);
                }
            }
        }
        // The next chunk overwrites every element again.
        dconv.clear();
    }
    Ok(())
}

/// [`conv2d_max_pool_backward`] with chunks of one image: a fixed number
/// of contiguous groups of images in parallel; each image's convolution
/// gradient is rebuilt in its thread's scratch and consumed from there,
/// its kernel gradient added into its group's partial sum, and the
/// partials are added in order at the end.
#[allow(clippy::too_many_arguments)]
fn backward_per_image(
    g: &ConvPoolGeometry,
    input: &[f32],
    kernel: &[f32],
    epilogue: Epilogue,
    out: &[f32],
    argmax: &[u32],
    dout: &[f32],
    dinput: Option<&mut [f32]>,
    dkernel: Option<&mut [f32]>,
    dbias: Option<&mut [f32]>,
) -> Result<()> {
    let (in_img, conv_img, out_img) = sizes(g);
    let c = &g.conv;
    let (cg, pg) = g.of(1);
    let n = c.n;
    let want_w = dkernel.is_some();
    let want_b = dbias.is_some();
    let (wlen, blen) = (
        if want_w || want_b {
            c.kernel_shape().iter().product()
        } else {
            0
        },
        if want_b { c.f } else { 0 },
    );
    if n == 0 || in_img == 0 || conv_img == 0 || out_img == 0 {
        // Nothing flows back (a geometry check refuses such sizes first).
        for d in [dinput, dkernel, dbias].into_iter().flatten() {
            d.fill(0.0);
        }
        return Ok(());
    }
    let groups = n.clamp(1, IMAGE_GROUPS);
    let per = n.div_ceil(groups);
    // Each group's slice of the input gradient (if wanted).
    let mut dx_groups: Vec<Option<&mut [f32]>> = match dinput {
        Some(dx) => dx.chunks_mut(per * in_img).map(Some).collect(),
        None => (0..n.div_ceil(per)).map(|_| None).collect(),
    };
    let partials = dx_groups
        .par_iter_mut()
        .enumerate()
        .map(|(gi, dx)| -> Result<(Vec<f32>, Vec<f32>)> {
            let (mut sw, mut sb) = (vec![0.0f32; wlen], vec![0.0f32; blen]);
            let (mut pw, mut pb) = (vec![0.0f32; wlen], vec![0.0f32; blen]);
            let first = gi * per;
            for i in first..(first + per).min(n) {
                with_scratch(conv_img, |dconv| -> Result<()> {
                    let at = i * out_img..(i + 1) * out_img;
                    let relu_out = match epilogue {
                        Epilogue::Relu => Some(&out[at.clone()]),
                        Epilogue::None => None,
                    };
                    max_pool2d_backward_masked_uninit(
                        &pg,
                        &dout[at.clone()],
                        relu_out,
                        &argmax[at],
                        as_uninit(dconv),
                    )?;
                    if let Some(dx) = dx.as_deref_mut() {
                        let k = i - first;
                        let dxi = &mut dx[k * in_img..(k + 1) * in_img];
                        conv2d_backward_input(&cg, dconv, kernel, dxi)?;
                    }
                    if wlen > 0 {
                        let x = &input[i * in_img..(i + 1) * in_img];
                        let b = want_b.then_some(pb.as_mut_slice());
                        conv2d_backward_filter(&cg, x, dconv, &mut pw, b)?;
                        add_into(&mut sw, &pw);
                        add_into(&mut sb, &pb);
                    }
                    Ok(())
                })?;
            }
            Ok((sw, sb))
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(dw) = dkernel {
        dw.fill(0.0);
        partials.iter().for_each(|(w, _)| add_into(dw, w));
    }
    if let Some(db) = dbias {
        db.fill(0.0);
        partials.iter().for_each(|(_, b)| add_into(db, b));
    }
    Ok(())
}

/// A slice of initialised values seen as possibly uninitialised (for a
/// kernel that writes every element of its output).
fn as_uninit<T: Copy>(v: &mut [T]) -> &mut [MaybeUninit<T>] {
    // SAFETY: `MaybeUninit<T>` has the layout of `T`, and the callee only
    // writes initialised values through it.
    unsafe { &mut *(v as *mut [T] as *mut [MaybeUninit<T>]) }
}

/// `total += part`, elementwise.
fn add_into(total: &mut [f32], part: &[f32]) {
    total.iter_mut().zip(part).for_each(|(t, p)| *t += p);
}
