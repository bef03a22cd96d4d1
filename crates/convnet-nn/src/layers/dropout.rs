use convnet_autograd::Var;
use convnet_tensor::Rng;

use crate::layer::{shape_error, single_input};
use crate::{ForwardCtx, Layer, LayerCore, Result};

/// Keras's `Dropout`: in training, zero each value with probability `rate`
/// and scale the rest by `1 / (1 - rate)`; at inference, the identity.
#[derive(Debug, Clone)]
pub struct Dropout {
    core: LayerCore,
    rate: f32,
}

impl Dropout {
    /// Dropout with this rate, in `[0, 1)`.
    pub fn new(rate: f32) -> Self {
        Dropout {
            core: LayerCore::new(None),
            rate,
        }
    }

    /// An explicit name.
    pub fn name(mut self, name: &str) -> Self {
        self.core.name = name.to_string();
        self
    }
}

impl Layer for Dropout {
    core_accessors!();

    fn class_name(&self) -> &'static str {
        "Dropout"
    }

    fn name_prefix(&self) -> &'static str {
        "dropout"
    }

    fn build(&mut self, input_shapes: &[Vec<usize>], _rng: &mut Rng) -> Result<Vec<usize>> {
        if !(0.0..1.0).contains(&self.rate) {
            return Err(shape_error(
                self,
                input_shapes,
                &format!("rate {} is not in [0, 1)", self.rate),
            ));
        }
        Ok(single_input(self, input_shapes)?.to_vec())
    }

    fn forward(&self, inputs: &[Var], _params: &[Var], ctx: &mut ForwardCtx<'_>) -> Result<Var> {
        if ctx.training && self.rate > 0.0 {
            Ok(inputs[0].dropout(self.rate, &mut ctx.rng)?)
        } else {
            Ok(inputs[0].clone())
        }
    }
}
