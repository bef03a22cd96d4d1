//! Fully connected layer: `y = x w + b`, `x` `(m, k)`, `w` `(k, n)`.

use crate::gemm::{sgemm, Layout, Parallelism};
use crate::{Result, TensorError};

/// `y = x w (+ b)`, `y` `(m, n)` overwritten; one GEMM on rayon's current
/// pool (split over the output, so results do not depend on the thread
/// count), then the bias added row by row.
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
