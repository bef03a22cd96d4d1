//! Inverted dropout with a seeded mask (Keras's semantics: kept units are
//! scaled by `1 / (1 - rate)` in training; nothing happens at inference).

use convnet_tensor::Rng;

use crate::activation::map2;
use crate::{Result, TensorError};

/// A mask of `len` values, each `0` with probability `rate` and
/// `1 / (1 - rate)` otherwise, drawn from `rng`. `rate` must be in `[0, 1)`.
///
/// ```
/// use convnet_kernels::dropout::dropout_mask;
/// use convnet_tensor::Rng;
/// let m = dropout_mask(1000, 0.2, &mut Rng::new(1)).unwrap();
/// assert!(m.iter().all(|&v| v == 0.0 || v == 1.25));
/// ```
pub fn dropout_mask(len: usize, rate: f32, rng: &mut Rng) -> Result<Vec<f32>> {
    if !(0.0..1.0).contains(&rate) {
        return Err(TensorError::invalid(
            "Dropout",
            format!("rate {rate} is not in [0, 1)"),
        ));
    }
    let keep = 1.0 / (1.0 - rate);
    Ok((0..len)
        .map(|_| if rng.uniform() < rate { 0.0 } else { keep })
        .collect())
}

/// `y = x * mask` (forward) — also the backward rule, `dx = dy * mask`.
pub fn apply_mask(x: &[f32], mask: &[f32], y: &mut [f32]) -> Result<()> {
    TensorError::check_len("Dropout", "mask", &[x.len()], mask.len())?;
    TensorError::check_len("Dropout", "output", &[x.len()], y.len())?;
    map2(x, mask, y, |a, m| a * m);
    Ok(())
}
