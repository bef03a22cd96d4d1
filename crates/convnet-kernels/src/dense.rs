//! Fully connected layer: `y = x w + b`, `x` `(m, k)`, `w` `(k, n)`.

use crate::Result;

/// `y = x w (+ b)`, `y` `(m, n)` overwritten.
pub fn dense_forward(
    m: usize,
    k: usize,
    n: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    let _ = (m, k, n, x, w, bias, y);
    todo!()
}

/// Gradients of `y = x w + b` from `dy` `(m, n)`: `dx = dy w^T` `(m, k)`,
/// `dw = x^T dy` `(k, n)`, `db = sum_rows(dy)` `(n,)`; each computed only
/// when asked for, and overwritten.
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
    let _ = (m, k, n, x, w, dy, dx, dw, db);
    todo!()
}
