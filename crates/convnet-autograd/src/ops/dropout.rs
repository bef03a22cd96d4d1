//! Inverted dropout (Keras's `Dropout` in training): kept units are scaled by
//! `1 / (1 - rate)`; backward multiplies by the same mask.

use convnet_kernels::dropout::{apply_mask, dropout_mask};
use convnet_tensor::{Result, Rng, Tensor};

use super::fill;
use crate::{Backward, Var};

struct DropoutBackward {
    mask: Vec<f32>,
}

impl Backward for DropoutBackward {
    fn name(&self) -> &'static str {
        "Dropout"
    }

    fn backward(&self, dy: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(fill(dy.shape(), |dx| {
            apply_mask(&dy.values(), &self.mask, dx)
        })?)])
    }
}

impl Var {
    /// Training-mode dropout with a mask drawn from `rng` (`rate` in `[0, 1)`).
    pub fn dropout(&self, rate: f32, rng: &mut Rng) -> Result<Var> {
        let mask = dropout_mask(self.value().len(), rate, rng)?;
        let y = fill(self.shape(), |y| {
            apply_mask(&self.value().values(), &mask, y)
        })?;
        Var::from_op("Dropout", &[self], y, || DropoutBackward { mask })
    }
}
