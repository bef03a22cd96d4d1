//! Inverted dropout with a seeded mask (Keras's semantics: kept units are
//! scaled by `1 / (1 - rate)` in training; nothing happens at inference).

use convnet_tensor::Rng;

use crate::Result;

/// A mask of `len` values, each `0` with probability `rate` and
/// `1 / (1 - rate)` otherwise, drawn from `rng`. `rate` must be in `[0, 1)`.
pub fn dropout_mask(len: usize, rate: f32, rng: &mut Rng) -> Result<Vec<f32>> {
    let _ = (len, rate, rng);
    todo!()
}

/// `y = x * mask` (forward) — also the backward rule, `dx = dy * mask`.
pub fn apply_mask(x: &[f32], mask: &[f32], y: &mut [f32]) -> Result<()> {
    let _ = (x, mask, y);
    todo!()
}
