//! Batch normalisation over the last (channel) axis of a `(rows, c)` matrix
//! (NHWC flattened to `rows = n*h*w`).

use crate::Result;

/// Training mode: normalise with the batch statistics. Writes `y`, the batch
/// `mean` and the *biased* batch `var` (both `(c,)`), which the caller uses
/// for the moving averages and the backward pass. `gamma`/`beta` absent mean
/// 1 and 0 (Keras's `scale=False` / `center=False`).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward_train(
    rows: usize,
    c: usize,
    x: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    eps: f32,
    y: &mut [f32],
    mean: &mut [f32],
    var: &mut [f32],
) -> Result<()> {
    let _ = (rows, c, x, gamma, beta, eps, y, mean, var);
    todo!()
}

/// Inference mode: normalise with given (moving) statistics.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_forward_inference(
    rows: usize,
    c: usize,
    x: &[f32],
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    mean: &[f32],
    var: &[f32],
    eps: f32,
    y: &mut [f32],
) -> Result<()> {
    let _ = (rows, c, x, gamma, beta, mean, var, eps, y);
    todo!()
}

/// Backward of the training-mode forward (statistics depend on `x`):
/// `dx` overwritten; `dgamma`, `dbeta` (`(c,)`) overwritten when asked for.
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward_train(
    rows: usize,
    c: usize,
    x: &[f32],
    dy: &[f32],
    gamma: Option<&[f32]>,
    mean: &[f32],
    var: &[f32],
    eps: f32,
    dx: &mut [f32],
    dgamma: Option<&mut [f32]>,
    dbeta: Option<&mut [f32]>,
) -> Result<()> {
    let _ = (rows, c, x, dy, gamma, mean, var, eps, dx, dgamma, dbeta);
    todo!()
}

/// Backward of the inference-mode forward (statistics are constants).
#[allow(clippy::too_many_arguments)]
pub fn batch_norm_backward_inference(
    rows: usize,
    c: usize,
    x: &[f32],
    dy: &[f32],
    gamma: Option<&[f32]>,
    mean: &[f32],
    var: &[f32],
    eps: f32,
    dx: &mut [f32],
    dgamma: Option<&mut [f32]>,
    dbeta: Option<&mut [f32]>,
) -> Result<()> {
    let _ = (rows, c, x, dy, gamma, mean, var, eps, dx, dgamma, dbeta);
    todo!()
}
