//! Elementwise activations and softmax, forward and backward.
//! Backward rules take the forward *output* `y` where it suffices.
//!
//! Large tensors are split into chunks processed by rayon; each element's
//! result does not depend on the split, so results are identical whatever
//! the thread count.

use rayon::prelude::*;

use crate::{Result, TensorError};

/// Elements per parallel chunk; below two chunks everything runs inline.
pub(crate) const CHUNK: usize = 1 << 15;

fn check(op: &str, pairs: &[(&str, usize)], want: usize) -> Result<()> {
    for &(what, got) in pairs {
        TensorError::check_len(op, what, &[want], got)?;
    }
    Ok(())
}

/// `out[i] = f(a[i])`, in parallel chunks for large inputs.
pub(crate) fn map1(a: &[f32], out: &mut [f32], f: impl Fn(f32) -> f32 + Sync) {
    if a.len() < 2 * CHUNK {
        out.iter_mut().zip(a).for_each(|(o, &x)| *o = f(x));
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK))
            .for_each(|(o, a)| o.iter_mut().zip(a).for_each(|(o, &x)| *o = f(x)));
    }
}

/// `out[i] = f(a[i], b[i])`, in parallel chunks for large inputs.
pub(crate) fn map2(a: &[f32], b: &[f32], out: &mut [f32], f: impl Fn(f32, f32) -> f32 + Sync) {
    if a.len() < 2 * CHUNK {
        out.iter_mut()
            .zip(a.iter().zip(b))
            .for_each(|(o, (&x, &y))| *o = f(x, y));
    } else {
        out.par_chunks_mut(CHUNK)
            .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
            .for_each(|(o, (a, b))| {
                o.iter_mut()
                    .zip(a.iter().zip(b))
                    .for_each(|(o, (&x, &y))| *o = f(x, y))
            });
    }
}

/// `y = max(0, x)`.
pub fn relu_forward(x: &[f32], y: &mut [f32]) -> Result<()> {
    check("relu", &[("y", y.len())], x.len())?;
    map1(x, y, |v| v.max(0.0));
    Ok(())
}

/// `dx = dy * (y > 0)`.
pub fn relu_backward(y: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
    check(
        "relu backward",
        &[("dy", dy.len()), ("dx", dx.len())],
        y.len(),
    )?;
    map2(y, dy, dx, |y, d| if y > 0.0 { d } else { 0.0 });
    Ok(())
}

/// [`relu_backward`] in place: `d[i] = 0` where `y[i] <= 0` (the gradient
/// buffer is reused, no new one).
pub fn relu_backward_in_place(y: &[f32], d: &mut [f32]) -> Result<()> {
    check("relu backward", &[("dy", d.len())], y.len())?;
    let mask = |d: &mut [f32], y: &[f32]| {
        d.iter_mut()
            .zip(y)
            .for_each(|(d, &y)| *d = if y > 0.0 { *d } else { 0.0 })
    };
    if y.len() < 2 * CHUNK {
        mask(d, y);
    } else {
        d.par_chunks_mut(CHUNK)
            .zip(y.par_chunks(CHUNK))
            .for_each(|(d, y)| mask(d, y));
    }
    Ok(())
}

/// The logistic function, without overflow for large `|x|`.
#[inline]
fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// `y = 1 / (1 + exp(-x))`, stable for large |x|.
pub fn sigmoid_forward(x: &[f32], y: &mut [f32]) -> Result<()> {
    check("sigmoid", &[("y", y.len())], x.len())?;
    map1(x, y, sigmoid);
    Ok(())
}

/// `dx = dy * y * (1 - y)`.
pub fn sigmoid_backward(y: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
    check(
        "sigmoid backward",
        &[("dy", dy.len()), ("dx", dx.len())],
        y.len(),
    )?;
    map2(y, dy, dx, |y, d| d * y * (1.0 - y));
    Ok(())
}

/// `y = tanh(x)`.
pub fn tanh_forward(x: &[f32], y: &mut [f32]) -> Result<()> {
    check("tanh", &[("y", y.len())], x.len())?;
    map1(x, y, f32::tanh);
    Ok(())
}

/// `dx = dy * (1 - y^2)`.
pub fn tanh_backward(y: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
    check(
        "tanh backward",
        &[("dy", dy.len()), ("dx", dx.len())],
        y.len(),
    )?;
    map2(y, dy, dx, |y, d| d * (1.0 - y * y));
    Ok(())
}

/// Softmax over the last axis of a `(rows, cols)` matrix (max-subtracted).
pub fn softmax_forward(rows: usize, cols: usize, x: &[f32], y: &mut [f32]) -> Result<()> {
    let shape = [rows, cols];
    TensorError::check_len("softmax", "x", &shape, x.len())?;
    TensorError::check_len("softmax", "y", &shape, y.len())?;
    if cols == 0 {
        return Ok(());
    }
    let row = |(x, y): (&[f32], &mut [f32])| {
        let m = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut s = 0.0f32;
        for (o, &v) in y.iter_mut().zip(x) {
            *o = (v - m).exp();
            s += *o;
        }
        let inv = 1.0 / s;
        y.iter_mut().for_each(|o| *o *= inv);
    };
    if x.len() < 2 * CHUNK {
        x.chunks(cols).zip(y.chunks_mut(cols)).for_each(row);
    } else {
        x.par_chunks(cols).zip(y.par_chunks_mut(cols)).for_each(row);
    }
    Ok(())
}

/// `dx = y * (dy - sum(dy * y))` per row.
pub fn softmax_backward(
    rows: usize,
    cols: usize,
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    let shape = [rows, cols];
    for (what, len) in [("y", y.len()), ("dy", dy.len()), ("dx", dx.len())] {
        TensorError::check_len("softmax backward", what, &shape, len)?;
    }
    if cols == 0 {
        return Ok(());
    }
    let row = |((y, dy), dx): ((&[f32], &[f32]), &mut [f32])| {
        let dot: f32 = y.iter().zip(dy).map(|(a, b)| a * b).sum();
        for ((o, &y), &d) in dx.iter_mut().zip(y).zip(dy) {
            *o = y * (d - dot);
        }
    };
    if y.len() < 2 * CHUNK {
        y.chunks(cols)
            .zip(dy.chunks(cols))
            .zip(dx.chunks_mut(cols))
            .for_each(row);
    } else {
        y.par_chunks(cols)
            .zip(dy.par_chunks(cols))
            .zip(dx.par_chunks_mut(cols))
            .for_each(row);
    }
    Ok(())
}
