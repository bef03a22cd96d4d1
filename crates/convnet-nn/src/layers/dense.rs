use convnet_autograd::Var;
use convnet_tensor::{Rng, Tensor};

use crate::layer::{shape_error, single_input};
use crate::{Activation, ForwardCtx, Layer, LayerCore, Result, Weight};

/// Keras's `Dense`: `activation(x kernel + bias)`, `kernel` `(in, units)`
/// (Glorot uniform), `bias` `(units,)` (zeros). Takes `(features,)` inputs;
/// put a [`Flatten`](crate::layers::Flatten) before it after convolutions.
#[derive(Debug, Clone)]
pub struct Dense {
    core: LayerCore,
    units: usize,
    activation: Activation,
    use_bias: bool,
}

impl Dense {
    /// `units` outputs, no activation, with a bias.
    pub fn new(units: usize) -> Self {
        Dense {
            core: LayerCore::new(None),
            units,
            activation: Activation::Linear,
            use_bias: true,
        }
    }

    /// Activation.
    pub fn activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// Whether to add a bias.
    pub fn use_bias(mut self, use_bias: bool) -> Self {
        self.use_bias = use_bias;
        self
    }

    /// An explicit name.
    pub fn name(mut self, name: &str) -> Self {
        self.core.name = name.to_string();
        self
    }
}

impl Layer for Dense {
    core_accessors!();

    fn class_name(&self) -> &'static str {
        "Dense"
    }

    fn name_prefix(&self) -> &'static str {
        "dense"
    }

    fn build(&mut self, input_shapes: &[Vec<usize>], rng: &mut Rng) -> Result<Vec<usize>> {
        let shape = single_input(self, input_shapes)?;
        let &[features] = shape else {
            return Err(shape_error(
                self,
                input_shapes,
                "Dense expects flat (features,) inputs; add a Flatten layer before it",
            ));
        };
        if self.units == 0 || features == 0 {
            return Err(shape_error(
                self,
                input_shapes,
                "units and input features must be positive",
            ));
        }
        let mut weights = vec![Weight::trainable(
            "kernel",
            Tensor::glorot_uniform(&[features, self.units], rng),
        )];
        if self.use_bias {
            weights.push(Weight::trainable("bias", Tensor::zeros(&[self.units])));
        }
        self.core.weights = weights;
        Ok(vec![self.units])
    }

    fn forward(&self, inputs: &[Var], params: &[Var], _ctx: &mut ForwardCtx<'_>) -> Result<Var> {
        let y = inputs[0].dense(&params[0], params.get(1))?;
        self.activation.apply(&y)
    }
}
