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
    conv2d_backward_filter, conv2d_backward_input, conv2d_forward, ConvGeometry, Epilogue,
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
fn as_uninit(v: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`, and the callee
    // only writes initialised values through it.
    unsafe { &mut *(v as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

/// `total += part`, elementwise.
fn add_into(total: &mut [f32], part: &[f32]) {
    total.iter_mut().zip(part).for_each(|(t, p)| *t += p);
}
