//! Max and average pooling (any window, stride and padding) and global
//! average pooling, NHWC.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::{Padding, Pads, Result, TensorError};

/// The sizes of one pooling: input `(n, h, w, c)`, window `ph x pw`,
/// output `(n, oh, ow, c)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    /// Batch size.
    pub n: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Channels.
    pub c: usize,
    /// Window height.
    pub ph: usize,
    /// Window width.
    pub pw: usize,
    /// Vertical stride.
    pub sh: usize,
    /// Horizontal stride.
    pub sw: usize,
    /// Resolved padding.
    pub pads: Pads,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl PoolGeometry {
    /// The geometry of a `pool` window with `strides` over an NHWC `input`.
    pub fn new(
        input: [usize; 4],
        pool: (usize, usize),
        strides: (usize, usize),
        padding: Padding,
    ) -> Result<Self> {
        let [n, h, w, c] = input;
        if n == 0 || c == 0 {
            return Err(TensorError::invalid_shape(
                "Pooling2D",
                &input,
                "batch and channel counts must be positive",
            ));
        }
        let (pads, oh, ow) = padding.resolve("Pooling2D", (h, w), pool, strides)?;
        Ok(PoolGeometry {
            n,
            h,
            w,
            c,
            ph: pool.0,
            pw: pool.1,
            sh: strides.0,
            sw: strides.1,
            pads,
            oh,
            ow,
        })
    }

    /// Output shape `(n, oh, ow, c)`.
    pub fn output_shape(&self) -> [usize; 4] {
        [self.n, self.oh, self.ow, self.c]
    }
}

/// Zero `buf` and view it as initialized.
pub(crate) fn init_zeroed<T: Copy + Default>(buf: &mut [MaybeUninit<T>]) -> &mut [T] {
    buf.fill(MaybeUninit::new(T::default()));
    // SAFETY: every element was just written; `MaybeUninit<T>` has `T`'s layout.
    unsafe { &mut *(buf as *mut [MaybeUninit<T>] as *mut [T]) }
}

/// View an initialized slice as possibly uninitialized.
///
/// # Safety
/// The caller must write only initialized values through the result (the
/// `_uninit` kernels here never write anything else).
pub(crate) unsafe fn as_uninit<T>(buf: &mut [T]) -> &mut [MaybeUninit<T>] {
    // SAFETY: same layout; the caller keeps the elements initialized.
    unsafe { &mut *(buf as *mut [T] as *mut [MaybeUninit<T>]) }
}

fn check_pool(
    g: &PoolGeometry,
    op: &str,
    x_what: &str,
    x_len: usize,
    y_what: &str,
    y_len: usize,
) -> Result<()> {
    TensorError::check_len(op, x_what, &[g.n, g.h, g.w, g.c], x_len)?;
    TensorError::check_len(op, y_what, &g.output_shape(), y_len)
}

/// The input rows (or columns) a window at output index `o` covers,
/// clipped to the input: `start..end`.
#[inline]
fn window(o: usize, stride: usize, pad: usize, size: usize, input: usize) -> (usize, usize) {
    let lo = (o * stride) as isize - pad as isize;
    let hi = lo + size as isize;
    let start = lo.clamp(0, input as isize) as usize;
    let end = hi.clamp(0, input as isize) as usize;
    (start, end.max(start))
}

/// Per-image work in parallel: `f(image index, input image, output image)`.
fn per_image<F>(g: &PoolGeometry, x: &[f32], y: &mut [f32], f: F)
where
    F: Fn(usize, &[f32], &mut [f32]) + Sync,
{
    let (in_img, out_img) = (g.h * g.w * g.c, g.oh * g.ow * g.c);
    if out_img == 0 || in_img == 0 {
        return;
    }
    if g.n * in_img < 1 << 15 {
        for (i, (xi, yi)) in x.chunks(in_img).zip(y.chunks_mut(out_img)).enumerate() {
            f(i, xi, yi);
        }
    } else {
        x.par_chunks(in_img)
            .zip(y.par_chunks_mut(out_img))
            .enumerate()
            .for_each(|(i, (xi, yi))| f(i, xi, yi));
    }
}

/// Max pooling. `argmax` (same length as `y`) receives, for each output, the
/// flat index into `x` of the element chosen (padded cells never win; on
/// ties the first in row-major window order wins). A window lying wholly in
/// explicit padding gives 0 and the index `u32::MAX`.
pub fn max_pool2d_forward(
    g: &PoolGeometry,
    x: &[f32],
    y: &mut [f32],
    argmax: &mut [u32],
) -> Result<()> {
    // SAFETY: `max_pool2d_forward_uninit` only ever writes initialized
    // values, so the slices stay initialized.
    let (y, argmax) = unsafe { (as_uninit(y), as_uninit(argmax)) };
    max_pool2d_forward_uninit(g, x, y, argmax)
}

/// [`max_pool2d_forward`] into buffers that need not be initialized (the
/// spare capacity of a fresh `Vec`): on `Ok`, every element of `y` and
/// `argmax` has been written, so a caller may `set_len` over them. It
/// saves the caller a zeroing pass over both outputs.
pub fn max_pool2d_forward_uninit(
    g: &PoolGeometry,
    x: &[f32],
    y: &mut [MaybeUninit<f32>],
    argmax: &mut [MaybeUninit<u32>],
) -> Result<()> {
    let op = "MaxPooling2D";
    check_pool(g, op, "input", x.len(), "output", y.len())?;
    TensorError::check_len(op, "argmax", &g.output_shape(), argmax.len())?;
    if x.len() > u32::MAX as usize {
        return Err(TensorError::invalid_shape(
            op,
            &[g.n, g.h, g.w, g.c],
            "more than 2^32 elements",
        ));
    }
    let (in_img, out_img, c) = (g.h * g.w * g.c, g.oh * g.ow * g.c, g.c);
    if out_img == 0 {
        return Ok(());
    }
    if in_img == 0 {
        // Every window lies wholly in padding (outputs must still be written).
        y.fill(MaybeUninit::new(0.0));
        argmax.fill(MaybeUninit::new(u32::MAX));
        return Ok(());
    }
    // The common case (2x2 windows, stride 2, no padding): four cells,
    // all inside, compared channel vector by channel vector.
    let two_by_two = (g.ph, g.pw, g.sh, g.sw) == (2, 2, 2, 2) && g.pads == Pads::default();
    type Outputs<'a> = (&'a mut [MaybeUninit<f32>], &'a mut [MaybeUninit<u32>]);
    let body = |(img, (out, arg)): (usize, Outputs)| {
        let xi = &x[img * in_img..(img + 1) * in_img];
        let base = (img * in_img) as u32;
        if two_by_two {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let p00 = (2 * oy * g.w + 2 * ox) * c;
                    // The other three cells' offsets from the first.
                    let (d01, d10, d11) = (c, g.w * c, (g.w + 1) * c);
                    let v00 = &xi[p00..p00 + c];
                    let v01 = &xi[p00 + d01..p00 + d01 + c];
                    let v10 = &xi[p00 + d10..p00 + d10 + c];
                    let v11 = &xi[p00 + d11..p00 + d11 + c];
                    let (d01, d10, d11) = (d01 as u32, d10 as u32, d11 as u32);
                    let at = (oy * g.ow + ox) * c;
                    let (o, a) = (&mut out[at..at + c], &mut arg[at..at + c]);
                    let i00 = base + p00 as u32;
                    for ch in 0..c {
                        // Row-major window order; the first maximum wins.
                        // Written as selects of offsets so that the loop
                        // vectorizes over channels.
                        let (mut m, mut k) = (v00[ch], 0u32);
                        if v01[ch] > m {
                            m = v01[ch];
                            k = d01;
                        }
                        if v10[ch] > m {
                            m = v10[ch];
                            k = d10;
                        }
                        if v11[ch] > m {
                            m = v11[ch];
                            k = d11;
                        }
                        o[ch].write(m);
                        a[ch].write(i00 + ch as u32 + k);
                    }
                }
            }
            return;
        }
        // Every output is written below, but through running maxima:
        // zero this image's outputs first (in cache, just before use).
        let (out, arg) = (init_zeroed(out), init_zeroed(arg));
        for oy in 0..g.oh {
            let (y0, y1) = window(oy, g.sh, g.pads.top, g.ph, g.h);
            for ox in 0..g.ow {
                let (x0, x1) = window(ox, g.sw, g.pads.left, g.pw, g.w);
                let at = (oy * g.ow + ox) * c;
                let (o, a) = (&mut out[at..at + c], &mut arg[at..at + c]);
                if y0 == y1 || x0 == x1 {
                    // A window wholly inside explicit padding.
                    o.fill(0.0);
                    a.fill(u32::MAX);
                    continue;
                }
                // Whole channel vectors at a time: the first cell, then a
                // running max (first maximum wins on ties).
                let first = (y0 * g.w + x0) * c;
                o.copy_from_slice(&xi[first..first + c]);
                a.iter_mut()
                    .enumerate()
                    .for_each(|(ch, a)| *a = base + (first + ch) as u32);
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        let cell = (iy * g.w + ix) * c;
                        if cell == first {
                            continue;
                        }
                        let src = &xi[cell..cell + c];
                        let idx0 = base + cell as u32;
                        for (ch, ((o, a), &v)) in
                            o.iter_mut().zip(a.iter_mut()).zip(src).enumerate()
                        {
                            let better = v > *o;
                            *o = if better { v } else { *o };
                            *a = if better { idx0 + ch as u32 } else { *a };
                        }
                    }
                }
            }
        }
    };
    if x.len() < 1 << 15 {
        y.chunks_mut(out_img)
            .zip(argmax.chunks_mut(out_img))
            .enumerate()
            .for_each(body);
    } else {
        y.par_chunks_mut(out_img)
            .zip(argmax.par_chunks_mut(out_img))
            .enumerate()
            .for_each(body);
    }
    Ok(())
}

/// Gradient of max pooling: `dx` (overwritten) gets each `dy` at its argmax
/// (summed where windows overlap).
pub fn max_pool2d_backward(
    g: &PoolGeometry,
    dy: &[f32],
    argmax: &[u32],
    dx: &mut [f32],
) -> Result<()> {
    // SAFETY: `max_pool2d_backward_uninit` only ever writes initialized
    // values, so `dx` stays initialized.
    max_pool2d_backward_uninit(g, dy, argmax, unsafe { as_uninit(dx) })
}

/// [`max_pool2d_backward`] into a buffer that need not be initialized (the
/// spare capacity of a fresh `Vec`): on `Ok`, every element of `dx` has
/// been written. Each image is zeroed just before its scatter, while it is
/// in cache, so the caller's separate zeroing pass over `dx` (as large as
/// the pooling's input) is saved.
pub fn max_pool2d_backward_uninit(
    g: &PoolGeometry,
    dy: &[f32],
    argmax: &[u32],
    dx: &mut [MaybeUninit<f32>],
) -> Result<()> {
    max_pool2d_backward_masked_uninit(g, dy, None, argmax, dx)
}

/// [`max_pool2d_backward_uninit`] where the pooled values went through a
/// ReLU first: with `relu_out` (the pooling's output, `g.output_shape()`),
/// a gradient whose pooled value is not above 0 is dropped (the ReLU passed
/// nothing there), in the same pass, instead of a separate masking pass
/// over the pooled gradient. Without it, as [`max_pool2d_backward_uninit`].
pub fn max_pool2d_backward_masked_uninit(
    g: &PoolGeometry,
    dy: &[f32],
    relu_out: Option<&[f32]>,
    argmax: &[u32],
    dx: &mut [MaybeUninit<f32>],
) -> Result<()> {
    let op = "MaxPooling2D backward";
    if let Some(o) = relu_out {
        TensorError::check_len(op, "output", &g.output_shape(), o.len())?;
    }
    check_pool(
        g,
        op,
        "input gradient",
        dx.len(),
        "output gradient",
        dy.len(),
    )?;
    TensorError::check_len(op, "argmax", &g.output_shape(), argmax.len())?;
    let (in_img, out_img) = (g.h * g.w * g.c, g.oh * g.ow * g.c);
    if in_img == 0 || out_img == 0 {
        init_zeroed(dx);
        return Ok(());
    }
    // Each image's indices must fall inside that image; one found outside
    // (a caller bug) is reported after the pass, which skips it.
    let body = |(img, dxi): (usize, &mut [MaybeUninit<f32>])| -> std::result::Result<(), u32> {
        let dxi = init_zeroed(dxi);
        let base = img * in_img;
        let (d, a) = (
            &dy[img * out_img..(img + 1) * out_img],
            &argmax[img * out_img..(img + 1) * out_img],
        );
        let mut bad = None;
        let mut scatter =
            |d: f32, a: u32| match (a as usize).checked_sub(base).and_then(|i| dxi.get_mut(i)) {
                Some(slot) => *slot += d,
                None if a != u32::MAX => bad = Some(a),
                None => {}
            };
        match relu_out {
            Some(o) => {
                let o = &o[img * out_img..(img + 1) * out_img];
                for ((&d, &a), &o) in d.iter().zip(a).zip(o) {
                    if o > 0.0 {
                        scatter(d, a);
                    }
                }
            }
            None => d.iter().zip(a).for_each(|(&d, &a)| scatter(d, a)),
        }
        bad.map_or(Ok(()), Err)
    };
    let checked = if dx.len() < 1 << 15 {
        dx.chunks_mut(in_img).enumerate().try_for_each(body)
    } else {
        dx.par_chunks_mut(in_img).enumerate().try_for_each(body)
    };
    checked.map_err(|bad| {
        TensorError::invalid(
            op,
            format!("argmax index {bad} is outside its image in the input"),
        )
    })
}

/// Average pooling; padded cells are excluded from the count (TensorFlow's rule).
///
/// Separable: per output row, the window's input rows are summed once into
/// a row buffer, then each output sums its window's columns of that buffer
/// and multiplies by the reciprocal of its count (`ph + pw` vector adds per
/// output instead of `ph * pw`: 6 instead of 9 for InceptionV3's 3x3
/// stride-1 pools).
pub fn avg_pool2d_forward(g: &PoolGeometry, x: &[f32], y: &mut [f32]) -> Result<()> {
    check_pool(g, "AveragePooling2D", "input", x.len(), "output", y.len())?;
    let c = g.c;
    let row = g.w * c;
    per_image(g, x, y, |_, xi, out| {
        let mut sums = vec![0.0f32; row];
        for (oy, orow) in out.chunks_exact_mut(g.ow * c).enumerate() {
            let (y0, y1) = window(oy, g.sh, g.pads.top, g.ph, g.h);
            if y1 == y0 {
                orow.fill(0.0);
                continue;
            }
            sums.copy_from_slice(&xi[y0 * row..(y0 + 1) * row]);
            for iy in y0 + 1..y1 {
                let src = &xi[iy * row..(iy + 1) * row];
                sums.iter_mut().zip(src).for_each(|(a, &v)| *a += v);
            }
            for (ox, o) in orow.chunks_exact_mut(c).enumerate() {
                let (x0, x1) = window(ox, g.sw, g.pads.left, g.pw, g.w);
                if x1 == x0 {
                    o.fill(0.0);
                    continue;
                }
                o.copy_from_slice(&sums[x0 * c..(x0 + 1) * c]);
                for ix in x0 + 1..x1 {
                    let src = &sums[ix * c..(ix + 1) * c];
                    o.iter_mut().zip(src).for_each(|(a, &v)| *a += v);
                }
                let inv = 1.0 / ((y1 - y0) * (x1 - x0)) as f32;
                o.iter_mut().for_each(|a| *a *= inv);
            }
        }
    });
    Ok(())
}

/// Gradient of average pooling: `dx` overwritten.
pub fn avg_pool2d_backward(g: &PoolGeometry, dy: &[f32], dx: &mut [f32]) -> Result<()> {
    check_pool(
        g,
        "AveragePooling2D backward",
        "input gradient",
        dx.len(),
        "output gradient",
        dy.len(),
    )?;
    let (c, in_img, out_img) = (g.c, g.h * g.w * g.c, g.oh * g.ow * g.c);
    if in_img == 0 || out_img == 0 {
        dx.fill(0.0);
        return Ok(());
    }
    let body = |(img, dxi): (usize, &mut [f32])| {
        dxi.fill(0.0);
        let d = &dy[img * out_img..(img + 1) * out_img];
        for oy in 0..g.oh {
            let (y0, y1) = window(oy, g.sh, g.pads.top, g.ph, g.h);
            for ox in 0..g.ow {
                let (x0, x1) = window(ox, g.sw, g.pads.left, g.pw, g.w);
                let inv = 1.0 / ((y1 - y0) * (x1 - x0)).max(1) as f32;
                let src = &d[(oy * g.ow + ox) * c..(oy * g.ow + ox + 1) * c];
                for iy in y0..y1 {
                    for ix in x0..x1 {
                        let dst = &mut dxi[(iy * g.w + ix) * c..(iy * g.w + ix + 1) * c];
                        dst.iter_mut().zip(src).for_each(|(a, &v)| *a += v * inv);
                    }
                }
            }
        }
    };
    if dx.len() < 1 << 15 {
        dx.chunks_mut(in_img).enumerate().for_each(body);
    } else {
        dx.par_chunks_mut(in_img).enumerate().for_each(body);
    }
    Ok(())
}

/// Global average pooling `(n, h, w, c) -> (n, c)`; `hw = h * w`.
pub fn global_avg_pool2d_forward(
    n: usize,
    hw: usize,
    c: usize,
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    let op = "GlobalAveragePooling2D";
    TensorError::check_len(op, "input", &[n, hw, c], x.len())?;
    TensorError::check_len(op, "output", &[n, c], y.len())?;
    if hw == 0 {
        return Err(TensorError::invalid_shape(
            op,
            &[n, hw, c],
            "cannot average over an empty image",
        ));
    }
    if c == 0 {
        return Ok(());
    }
    let inv = 1.0 / hw as f64;
    // One image per task, accumulated in f64 pixel by pixel.
    let image = |(xi, yi): (&[f32], &mut [f32])| {
        let mut acc = vec![0.0f64; c];
        for px in xi.chunks(c) {
            acc.iter_mut().zip(px).for_each(|(a, &v)| *a += v as f64);
        }
        yi.iter_mut()
            .zip(&acc)
            .for_each(|(o, &a)| *o = (a * inv) as f32);
    };
    if x.len() < 1 << 15 {
        x.chunks(hw * c).zip(y.chunks_mut(c)).for_each(image);
    } else {
        x.par_chunks(hw * c)
            .zip(y.par_chunks_mut(c))
            .for_each(image);
    }
    Ok(())
}

/// Gradient of global average pooling: `dx` `(n, hw, c)` overwritten.
pub fn global_avg_pool2d_backward(
    n: usize,
    hw: usize,
    c: usize,
    dy: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    let op = "GlobalAveragePooling2D backward";
    TensorError::check_len(op, "input gradient", &[n, hw, c], dx.len())?;
    TensorError::check_len(op, "output gradient", &[n, c], dy.len())?;
    if hw == 0 || c == 0 {
        return Ok(());
    }
    let inv = 1.0 / hw as f32;
    let image = |(dxi, dyi): (&mut [f32], &[f32])| {
        for px in dxi.chunks_mut(c) {
            px.iter_mut().zip(dyi).for_each(|(o, &d)| *o = d * inv);
        }
    };
    if dx.len() < 1 << 15 {
        dx.chunks_mut(hw * c).zip(dy.chunks(c)).for_each(image);
    } else {
        dx.par_chunks_mut(hw * c)
            .zip(dy.par_chunks(c))
            .for_each(image);
    }
    Ok(())
}
