use convnet_autograd::Var;
use convnet_tensor::Rng;

use crate::layer::single_input;
use crate::{Activation, ForwardCtx, Layer, LayerCore, Result};

/// Keras's `Activation` layer.
#[derive(Debug, Clone)]
pub struct ActivationLayer {
    core: LayerCore,
    activation: Activation,
}

impl ActivationLayer {
    /// Apply `activation`.
    pub fn new(activation: Activation) -> Self {
        ActivationLayer {
            core: LayerCore::new(None),
            activation,
        }
    }

    /// An explicit name.
    pub fn name(mut self, name: &str) -> Self {
        self.core.name = name.to_string();
        self
    }
}

impl Layer for ActivationLayer {
    core_accessors!();

    fn class_name(&self) -> &'static str {
        "Activation"
    }

    fn name_prefix(&self) -> &'static str {
        "activation"
    }

    fn build(&mut self, input_shapes: &[Vec<usize>], _rng: &mut Rng) -> Result<Vec<usize>> {
        Ok(single_input(self, input_shapes)?.to_vec())
    }

    fn forward(&self, inputs: &[Var], _params: &[Var], _ctx: &mut ForwardCtx<'_>) -> Result<Var> {
        self.activation.apply(&inputs[0])
    }

    fn is_relu(&self) -> bool {
        self.activation == Activation::Relu
    }
}
