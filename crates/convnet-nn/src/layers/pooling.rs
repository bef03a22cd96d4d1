use convnet_autograd::Var;
use convnet_kernels::Padding;
use convnet_tensor::Rng;

use crate::layer::{shape_error, single_input, MaxPoolWindow};
use crate::{ForwardCtx, Layer, LayerCore, Result};

fn pooled_shape(
    layer: &dyn Layer,
    shapes: &[Vec<usize>],
    pool: (usize, usize),
    strides: (usize, usize),
    padding: Padding,
) -> Result<Vec<usize>> {
    let shape = single_input(layer, shapes)?;
    let &[h, w, c] = shape else {
        return Err(shape_error(
            layer,
            shapes,
            "pooling expects (height, width, channels) inputs",
        ));
    };
    let (_, oh, ow) = padding
        .resolve(layer.class_name(), (h, w), pool, strides)
        .map_err(|e| shape_error(layer, shapes, &e.to_string()))?;
    Ok(vec![oh, ow, c])
}

macro_rules! pooling_layer {
    ($(#[$doc:meta])* $name:ident, $class:literal, $prefix:literal, $op:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name {
            core: LayerCore,
            pool_size: (usize, usize),
            strides: (usize, usize),
            padding: Padding,
        }

        impl $name {
            /// A `pool_size` window; strides default to the pool size, as in Keras.
            pub fn new(pool_size: (usize, usize)) -> Self {
                $name { core: LayerCore::new(None), pool_size, strides: pool_size, padding: Padding::Valid }
            }

            /// Strides.
            pub fn strides(mut self, strides: (usize, usize)) -> Self {
                self.strides = strides;
                self
            }

            /// Padding (`Valid` or `Same`).
            pub fn padding(mut self, padding: Padding) -> Self {
                self.padding = padding;
                self
            }

            /// An explicit name.
            pub fn name(mut self, name: &str) -> Self {
                self.core.name = name.to_string();
                self
            }
        }

        impl Layer for $name {
            core_accessors!();

            fn class_name(&self) -> &'static str {
                $class
            }

            fn name_prefix(&self) -> &'static str {
                $prefix
            }

            fn build(&mut self, input_shapes: &[Vec<usize>], _rng: &mut Rng) -> Result<Vec<usize>> {
                pooled_shape(self, input_shapes, self.pool_size, self.strides, self.padding)
            }

            fn forward(&self, inputs: &[Var], _params: &[Var], _ctx: &mut ForwardCtx<'_>) -> Result<Var> {
                Ok(inputs[0].$op(self.pool_size, self.strides, self.padding)?)
            }

            fn max_pool_window(&self) -> Option<MaxPoolWindow> {
                ($class == "MaxPooling2D").then_some((self.pool_size, self.strides, self.padding))
            }

            fn avg_pool_window(&self) -> Option<MaxPoolWindow> {
                ($class == "AveragePooling2D")
                    .then_some((self.pool_size, self.strides, self.padding))
            }
        }
    };
}

pooling_layer!(
    /// Keras's `MaxPooling2D`: the largest value of each window.
    MaxPooling2D,
    "MaxPooling2D",
    "max_pooling2d",
    max_pool2d
);

pooling_layer!(
    /// Keras's `AveragePooling2D`: the mean of each window; with `Same`
    /// padding the padded cells are left out of the mean, as TensorFlow does.
    AveragePooling2D,
    "AveragePooling2D",
    "average_pooling2d",
    avg_pool2d
);

/// Keras's `GlobalAveragePooling2D`: `(h, w, c) -> (c,)`.
#[derive(Debug, Clone)]
pub struct GlobalAveragePooling2D {
    core: LayerCore,
}

impl GlobalAveragePooling2D {
    /// The layer.
    pub fn new() -> Self {
        GlobalAveragePooling2D {
            core: LayerCore::new(None),
        }
    }

    /// An explicit name.
    pub fn name(mut self, name: &str) -> Self {
        self.core.name = name.to_string();
        self
    }
}

impl Default for GlobalAveragePooling2D {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer for GlobalAveragePooling2D {
    core_accessors!();

    fn class_name(&self) -> &'static str {
        "GlobalAveragePooling2D"
    }

    fn name_prefix(&self) -> &'static str {
        "global_average_pooling2d"
    }

    fn build(&mut self, input_shapes: &[Vec<usize>], _rng: &mut Rng) -> Result<Vec<usize>> {
        let shape = single_input(self, input_shapes)?;
        match *shape {
            [h, w, c] if h > 0 && w > 0 => Ok(vec![c]),
            _ => Err(shape_error(
                self,
                input_shapes,
                "expects non-empty (height, width, channels) inputs",
            )),
        }
    }

    fn forward(&self, inputs: &[Var], _params: &[Var], _ctx: &mut ForwardCtx<'_>) -> Result<Var> {
        Ok(inputs[0].global_avg_pool2d()?)
    }
}
