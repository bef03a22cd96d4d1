//! Layers the zoo needs that `convnet-nn` does not have.

use convnet_autograd::Var;
use convnet_kernels::Padding;
use convnet_nn::{ForwardCtx, Layer, LayerCore, NnError, Result};
use convnet_tensor::Rng;

/// Keras's `GlobalMaxPooling2D`: `(h, w, c) -> (c,)`, the largest value of
/// each channel (a max pool over the whole image, then a reshape; its
/// gradient goes to the largest cell).
#[derive(Debug, Clone)]
pub struct GlobalMaxPooling2D {
    core: LayerCore,
    /// The input's `(h, w)`, known once built.
    window: (usize, usize),
}

impl GlobalMaxPooling2D {
    /// The layer, named automatically (`global_max_pooling2d`, ...).
    pub fn new() -> Self {
        GlobalMaxPooling2D {
            core: LayerCore::new(None),
            window: (0, 0),
        }
    }

    /// An explicit name.
    pub fn name(mut self, name: &str) -> Self {
        self.core.name = name.to_string();
        self
    }
}

impl Default for GlobalMaxPooling2D {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer for GlobalMaxPooling2D {
    fn class_name(&self) -> &'static str {
        "GlobalMaxPooling2D"
    }

    fn name_prefix(&self) -> &'static str {
        "global_max_pooling2d"
    }

    fn core(&self) -> &LayerCore {
        &self.core
    }

    fn core_mut(&mut self) -> &mut LayerCore {
        &mut self.core
    }

    fn build(&mut self, input_shapes: &[Vec<usize>], _rng: &mut Rng) -> Result<Vec<usize>> {
        match input_shapes {
            [shape] => match shape.as_slice() {
                &[h, w, c] if h > 0 && w > 0 => {
                    self.window = (h, w);
                    Ok(vec![c])
                }
                _ => Err(NnError::Build(format!(
                    "layer \"{}\" (GlobalMaxPooling2D) cannot take input shape {}: expects \
                     non-empty (height, width, channels) inputs",
                    self.core.name,
                    convnet_nn::batch_shape(shape)
                ))),
            },
            _ => Err(NnError::Build(format!(
                "layer \"{}\" (GlobalMaxPooling2D) expects exactly one input, got {}",
                self.core.name,
                input_shapes.len()
            ))),
        }
    }

    fn forward(&self, inputs: &[Var], _params: &[Var], _ctx: &mut ForwardCtx<'_>) -> Result<Var> {
        let x = &inputs[0];
        let pooled = x.max_pool2d(self.window, self.window, Padding::Valid)?;
        let (n, c) = (pooled.shape()[0], pooled.shape()[3]);
        Ok(pooled.reshape(&[n, c])?)
    }
}
