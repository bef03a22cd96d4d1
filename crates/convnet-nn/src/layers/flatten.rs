use convnet_autograd::Var;
use convnet_tensor::Rng;

use crate::layer::single_input;
use crate::{ForwardCtx, Layer, LayerCore, Result};

/// Keras's `Flatten`: `(h, w, c) -> (h*w*c,)`, in NHWC order (as Keras
/// with `channels_last`, so Dense weights trained by Keras line up).
#[derive(Debug, Clone)]
pub struct Flatten {
    core: LayerCore,
}

impl Flatten {
    /// The layer.
    pub fn new() -> Self {
        Flatten {
            core: LayerCore::new(None),
        }
    }

    /// An explicit name.
    pub fn name(mut self, name: &str) -> Self {
        self.core.name = name.to_string();
        self
    }
}

impl Default for Flatten {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer for Flatten {
    core_accessors!();

    fn class_name(&self) -> &'static str {
        "Flatten"
    }

    fn name_prefix(&self) -> &'static str {
        "flatten"
    }

    fn build(&mut self, input_shapes: &[Vec<usize>], _rng: &mut Rng) -> Result<Vec<usize>> {
        Ok(vec![single_input(self, input_shapes)?.iter().product()])
    }

    fn forward(&self, inputs: &[Var], _params: &[Var], _ctx: &mut ForwardCtx<'_>) -> Result<Var> {
        Ok(inputs[0].flatten()?)
    }
}
