//! The [`Layer`] trait, layer weights, and Keras-style automatic names.

use std::cell::RefCell;
use std::collections::HashMap;

use convnet_autograd::Var;
use convnet_kernels::conv::Precision;
use convnet_kernels::Padding;
use convnet_tensor::{Rng, Tensor};

use crate::{NnError, Result};

/// One weight of a layer, named as Keras names it (`kernel`, `bias`,
/// `gamma`, `beta`, `moving_mean`, `moving_variance`).
#[derive(Debug, Clone)]
pub struct Weight {
    /// Keras's weight name.
    pub name: &'static str,
    /// The value.
    pub value: Tensor,
    /// False for statistics updated by the forward pass (BN moving averages).
    pub trainable: bool,
}

impl Weight {
    /// A trainable weight.
    pub fn trainable(name: &'static str, value: Tensor) -> Self {
        Weight {
            name,
            value,
            trainable: true,
        }
    }

    /// A non-trainable weight.
    pub fn frozen(name: &'static str, value: Tensor) -> Self {
        Weight {
            name,
            value,
            trainable: false,
        }
    }
}

/// What a layer's forward pass may need besides its inputs.
pub struct ForwardCtx<'a> {
    /// Training mode: batch statistics in batch norm, active dropout.
    pub training: bool,
    /// Randomness for this layer and step (dropout masks).
    pub rng: Rng,
    /// New values for this layer's non-trainable weights (by index in
    /// [`Layer::weights`]), applied by the model after the step.
    pub updates: &'a mut Vec<(usize, Tensor)>,
}

/// What every layer has: its name, whether it trains, and its weights.
#[derive(Debug, Clone, Default)]
pub struct LayerCore {
    /// The layer's name; empty until the layer is attached to a model, when
    /// an automatic Keras-style name is given unless one was set.
    pub name: String,
    /// Keras's `trainable`: when false, the weights get no gradient and no
    /// optimizer state, and batch normalisation runs in inference mode.
    pub trainable: bool,
    /// The weights, in Keras's order; empty until built.
    pub weights: Vec<Weight>,
}

impl LayerCore {
    /// A trainable core with this name (empty for an automatic one).
    pub fn new(name: Option<&str>) -> Self {
        LayerCore {
            name: name.unwrap_or_default().to_string(),
            trainable: true,
            weights: Vec::new(),
        }
    }
}

/// A max-pooling layer's `(pool_size, strides, padding)`.
pub type MaxPoolWindow = ((usize, usize), (usize, usize), Padding);

/// A layer: weights, a shape rule, and a forward pass over autograd values.
///
/// Shapes exclude the batch axis: a Conv2D on 150x150 RGB images sees the
/// input shape `[150, 150, 3]`.
pub trait Layer {
    /// Keras's class name, e.g. `"Conv2D"`.
    fn class_name(&self) -> &'static str;

    /// Prefix of automatic names, e.g. `"conv2d"` (then `conv2d_1`, ...).
    fn name_prefix(&self) -> &'static str;

    /// The common state.
    fn core(&self) -> &LayerCore;

    /// The common state, mutable.
    fn core_mut(&mut self) -> &mut LayerCore;

    /// Create the weights for these input shapes (drawing initial values
    /// from `rng`) and return the output shape. Refuses shapes the layer
    /// cannot take, naming the layer and the shapes.
    fn build(&mut self, input_shapes: &[Vec<usize>], rng: &mut Rng) -> Result<Vec<usize>>;

    /// The forward pass; `params` are the weights as autograd values, in
    /// the order of [`LayerCore::weights`].
    fn forward(&self, inputs: &[Var], params: &[Var], ctx: &mut ForwardCtx<'_>) -> Result<Var>;

    /// Fusion hook: a layer that is, in this mode and with these weights, a
    /// constant per-channel affine map `y = x * scale + shift` (batch
    /// normalisation in inference mode, weights not training) returns
    /// `(scale, shift)`, so that the model can fold it into the
    /// convolution before it. `None` (the default) otherwise.
    fn inference_affine(
        &self,
        _params: &[Var],
        _training: bool,
    ) -> Option<Result<(Vec<f32>, Vec<f32>)>> {
        None
    }

    /// Fusion hook: this layer's forward pass followed by a per-channel
    /// `y * scale + shift` and, with `relu`, a ReLU, computed in one pass
    /// (a Conv2D without activation folds them into its kernel, bias and
    /// epilogue when its weights are constants), then, with `pool`, max
    /// pooling; the convolution in `precision` where it can (see
    /// [`crate::Model::set_frozen_precision`]). `None` (the default) when
    /// the layer cannot.
    #[allow(clippy::too_many_arguments)]
    fn forward_scaled(
        &self,
        _input: &Var,
        _params: &[Var],
        _scale: &[f32],
        _shift: &[f32],
        _relu: bool,
        _pool: Option<MaxPoolWindow>,
        _precision: Precision,
    ) -> Option<Result<Var>> {
        None
    }

    /// Fusion hook: true for a layer that only applies a ReLU.
    fn is_relu(&self) -> bool {
        false
    }

    /// Fusion hook: a max-pooling layer returns its `(window, strides,
    /// padding)`, so that the model can pool the output of the convolution
    /// before it as that convolution computes it. `None` (the default)
    /// otherwise.
    fn max_pool_window(&self) -> Option<MaxPoolWindow> {
        None
    }

    /// Fusion hook: an average-pooling layer returns its `(window, strides,
    /// padding)` (the same triple as [`Layer::max_pool_window`]), so that
    /// the model can pool after the 1x1 convolution that follows it.
    /// `None` (the default) otherwise.
    fn avg_pool_window(&self) -> Option<MaxPoolWindow> {
        None
    }

    /// Fusion hook: average pooling of `input` with `window`, then this
    /// layer's forward pass, then a per-channel `y * scale + shift` and,
    /// with `relu`, a ReLU (InceptionV3's pooling branches with a frozen
    /// base). A 1x1 stride-1 Conv2D with constant weights on a constant
    /// input computes it with the pooling after the convolution instead,
    /// on its (fewer) output channels: the two commute, and the shift
    /// passes through an average whose weights sum to one; the
    /// convolution in `precision` where it can. `None` (the default) when
    /// the layer cannot.
    #[allow(clippy::too_many_arguments)]
    fn forward_avg_pooled_scaled(
        &self,
        _input: &Var,
        _params: &[Var],
        _window: MaxPoolWindow,
        _scale: &[f32],
        _shift: &[f32],
        _relu: bool,
        _precision: Precision,
    ) -> Option<Result<Var>> {
        None
    }

    /// Fusion hook: this layer's forward pass followed by max pooling with
    /// `window`, computed without keeping this layer's own output (a
    /// Conv2D with a linear or ReLU activation). `None` (the default) when
    /// the layer cannot.
    fn forward_max_pooled(
        &self,
        _input: &Var,
        _params: &[Var],
        _window: MaxPoolWindow,
    ) -> Option<Result<Var>> {
        None
    }

    /// The layer's name.
    fn name(&self) -> &str {
        &self.core().name
    }

    /// The weights.
    fn weights(&self) -> &[Weight] {
        &self.core().weights
    }
}

/// The error for a layer that cannot take its input shapes.
pub(crate) fn shape_error(layer: &dyn Layer, shapes: &[Vec<usize>], why: &str) -> NnError {
    let shown: Vec<String> = shapes.iter().map(|s| batch_shape(s)).collect();
    NnError::Build(format!(
        "layer \"{}\" ({}) cannot take input shape {}: {why}",
        layer.name(),
        layer.class_name(),
        shown.join(" and ")
    ))
}

/// A shape with the batch axis shown as Keras shows it: `(None, 148, 148, 32)`.
pub fn batch_shape(shape: &[usize]) -> String {
    let mut s = String::from("(None");
    for d in shape {
        s.push_str(&format!(", {d}"));
    }
    s.push(')');
    s
}

/// One input shape, or an error naming the layer.
pub(crate) fn single_input<'a>(layer: &dyn Layer, shapes: &'a [Vec<usize>]) -> Result<&'a [usize]> {
    match shapes {
        [one] => Ok(one),
        _ => Err(shape_error(layer, shapes, "expects exactly one input")),
    }
}

thread_local! {
    static NAMES: RefCell<HashMap<String, usize>> = RefCell::new(HashMap::new());
}

/// The next automatic name for a layer with this prefix, as Keras gives them
/// in a fresh session: `conv2d`, `conv2d_1`, `conv2d_2`, ...
///
/// Counters are per thread; [`clear_session`] resets them.
pub fn unique_name(prefix: &str) -> String {
    NAMES.with(|n| {
        let mut n = n.borrow_mut();
        let count = n.entry(prefix.to_string()).or_insert(0);
        let name = if *count == 0 {
            prefix.to_string()
        } else {
            format!("{prefix}_{count}")
        };
        *count += 1;
        name
    })
}

/// Reset the automatic layer names, like `keras.backend.clear_session()`.
pub fn clear_session() {
    NAMES.with(|n| n.borrow_mut().clear());
}
