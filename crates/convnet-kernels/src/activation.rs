//! Elementwise activations and softmax, forward and backward.
//! Backward rules take the forward *output* `y` where it suffices.

use crate::Result;

/// `y = max(0, x)`.
pub fn relu_forward(x: &[f32], y: &mut [f32]) -> Result<()> {
    let _ = (x, y);
    todo!()
}
/// `dx = dy * (y > 0)`.
pub fn relu_backward(y: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
    let _ = (y, dy, dx);
    todo!()
}
/// `y = 1 / (1 + exp(-x))`, stable for large |x|.
pub fn sigmoid_forward(x: &[f32], y: &mut [f32]) -> Result<()> {
    let _ = (x, y);
    todo!()
}
/// `dx = dy * y * (1 - y)`.
pub fn sigmoid_backward(y: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
    let _ = (y, dy, dx);
    todo!()
}
/// `y = tanh(x)`.
pub fn tanh_forward(x: &[f32], y: &mut [f32]) -> Result<()> {
    let _ = (x, y);
    todo!()
}
/// `dx = dy * (1 - y^2)`.
pub fn tanh_backward(y: &[f32], dy: &[f32], dx: &mut [f32]) -> Result<()> {
    let _ = (y, dy, dx);
    todo!()
}
/// Softmax over the last axis of a `(rows, cols)` matrix (max-subtracted).
pub fn softmax_forward(rows: usize, cols: usize, x: &[f32], y: &mut [f32]) -> Result<()> {
    let _ = (rows, cols, x, y);
    todo!()
}
/// `dx = y * (dy - sum(dy * y))` per row.
pub fn softmax_backward(
    rows: usize,
    cols: usize,
    y: &[f32],
    dy: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    let _ = (rows, cols, y, dy, dx);
    todo!()
}
