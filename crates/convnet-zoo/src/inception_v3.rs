//! InceptionV3 as `keras.applications.InceptionV3` builds it.
//!
//! Every convolution block is `Conv2D(use_bias=False)`,
//! `BatchNormalization(scale=False, epsilon=1e-3)` and `Activation("relu")`;
//! the pool branches are 3x3 stride-1 `same` average pooling that leaves
//! padded cells out of the mean (TensorFlow's rule); the concatenations are
//! named `mixed0` ... `mixed10` (and `mixed9_0`, `mixed9_1` inside the last
//! two blocks). All other layers get automatic names, so a model built in a
//! fresh session (see [`convnet_nn::clear_session`]) names them as Keras
//! does in a fresh session: `conv2d`, `conv2d_1`, ..., `conv2d_93`,
//! `batch_normalization` ... `batch_normalization_93`, `activation` ...,
//! `average_pooling2d` ..., `max_pooling2d` ..., `concatenate`,
//! `concatenate_1`; with the top, `avg_pool` and `predictions`.
//!
//! ```no_run
//! use convnet_zoo::inception_v3::{load_weights, weights_path, InceptionV3};
//!
//! // The mission's base: no top, 150x150 RGB, ImageNet weights (fetched
//! // and converted by `cargo xtask fetch-weights`).
//! let mut base = InceptionV3::new().include_top(false).input_shape(150, 150, 3).build()?;
//! load_weights(&mut base, &weights_path(false))?;
//! base.set_trainable(false);
//! let mixed7 = base.get_layer("mixed7")?.output(); // (None, 7, 7, 768)
//! # Ok::<(), convnet_zoo::ZooError>(())
//! ```

use convnet_kernels::Padding;
use convnet_nn::layers::{
    ActivationLayer, AveragePooling2D, BatchNormalization, Concatenate, Conv2D, Dense,
    GlobalAveragePooling2D, MaxPooling2D,
};
use convnet_nn::{Activation, Apply, Input, Model, SymbolicTensor};

pub use crate::imagenet::{decode_predictions, preprocess_input, Prediction};
use crate::layers::GlobalMaxPooling2D;
pub use crate::weights::{load_weights, weights_path};
use crate::{Result, ZooError};

/// What to put after the last block when there is no top (Keras's
/// `pooling=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pooling {
    /// `None`: the model ends with the last block's 4-D output.
    #[default]
    None,
    /// `"avg"`: global average pooling, `(None, 2048)`.
    Avg,
    /// `"max"`: global max pooling, `(None, 2048)`.
    Max,
}

/// Options of InceptionV3, as `keras.applications.InceptionV3`'s arguments
/// (weights are loaded separately, with [`load_weights`]).
///
/// Defaults as Keras's: `include_top(true)`, `input_shape(299, 299, 3)`,
/// `pooling(Pooling::None)`, `classes(1000)`,
/// `classifier_activation(Activation::Softmax)`.
///
/// ```
/// use convnet_zoo::inception_v3::{InceptionV3, Pooling};
/// let model = InceptionV3::new()
///     .include_top(false)
///     .input_shape(75, 75, 3)
///     .pooling(Pooling::Avg)
///     .build()?;
/// assert_eq!(model.output_shape(), vec![2048]);
/// assert_eq!(model.count_params(), 21_802_784);
/// # Ok::<(), convnet_zoo::ZooError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InceptionV3 {
    include_top: bool,
    input_shape: (usize, usize, usize),
    pooling: Pooling,
    classes: usize,
    classifier_activation: Activation,
}

impl Default for InceptionV3 {
    fn default() -> Self {
        Self::new()
    }
}

/// Smallest height and width InceptionV3 takes (Keras's `min_size`).
pub const MIN_SIZE: usize = 75;

impl InceptionV3 {
    /// Keras's defaults (see the type's documentation).
    pub fn new() -> Self {
        InceptionV3 {
            include_top: true,
            input_shape: (299, 299, 3),
            pooling: Pooling::None,
            classes: 1000,
            classifier_activation: Activation::Softmax,
        }
    }

    /// Whether to end with the classifier (`avg_pool` and `predictions`).
    pub fn include_top(mut self, include_top: bool) -> Self {
        self.include_top = include_top;
        self
    }

    /// Input height, width and channels; height and width at least 75.
    pub fn input_shape(mut self, height: usize, width: usize, channels: usize) -> Self {
        self.input_shape = (height, width, channels);
        self
    }

    /// Pooling after the last block when there is no top (ignored with
    /// the top, as in Keras).
    pub fn pooling(mut self, pooling: Pooling) -> Self {
        self.pooling = pooling;
        self
    }

    /// Number of classes of the top.
    pub fn classes(mut self, classes: usize) -> Self {
        self.classes = classes;
        self
    }

    /// Activation of the `predictions` layer (softmax by default; `Linear`
    /// gives the logits).
    pub fn classifier_activation(mut self, activation: Activation) -> Self {
        self.classifier_activation = activation;
        self
    }

    /// Build the model, named layers and all, with freshly initialised
    /// weights (load trained ones with [`load_weights`]).
    ///
    /// Refuses inputs smaller than 75x75 or without channels, and a top
    /// with no classes, naming the option.
    pub fn build(&self) -> Result<Model> {
        let (h, w, c) = self.input_shape;
        let bad = |message: String| ZooError::Options {
            model: "InceptionV3",
            message,
        };
        if h < MIN_SIZE || w < MIN_SIZE {
            return Err(bad(format!(
                "input_shape ({h}, {w}, {c}): height and width must be at least {MIN_SIZE}"
            )));
        }
        if c == 0 {
            return Err(bad(format!(
                "input_shape ({h}, {w}, {c}): channels must be at least 1"
            )));
        }
        if self.include_top && self.classes == 0 {
            return Err(bad("classes must be at least 1 with the top".into()));
        }
        let input = Input::new(&[h, w, c]);
        let x = self.body(&input)?;
        let out = if self.include_top {
            let x = GlobalAveragePooling2D::new().name("avg_pool").apply(&x)?;
            Dense::new(self.classes)
                .activation(self.classifier_activation)
                .name("predictions")
                .apply(&x)?
        } else {
            match self.pooling {
                Pooling::None => x,
                Pooling::Avg => GlobalAveragePooling2D::new().apply(&x)?,
                Pooling::Max => GlobalMaxPooling2D::new().apply(&x)?,
            }
        };
        Ok(Model::new(&input, &out)?)
    }

    /// The convolutional part, from the input to `mixed10`.
    fn body(&self, input: &SymbolicTensor) -> Result<SymbolicTensor> {
        use Padding::{Same, Valid};
        let x = conv_bn(input, 32, (3, 3), (2, 2), Valid)?;
        let x = conv_bn(&x, 32, (3, 3), (1, 1), Valid)?;
        let x = conv_bn(&x, 64, (3, 3), (1, 1), Same)?;
        let x = max_pool_3x3_s2(&x)?;

        let x = conv_bn(&x, 80, (1, 1), (1, 1), Valid)?;
        let x = conv_bn(&x, 192, (3, 3), (1, 1), Valid)?;
        let mut x = max_pool_3x3_s2(&x)?;

        // mixed0, 1, 2: 35 x 35 x 256, 288, 288 at 299x299.
        for (i, pool_filters) in [32, 64, 64].into_iter().enumerate() {
            let b1 = conv(&x, 64, (1, 1))?;
            let b5 = conv(&x, 48, (1, 1))?;
            let b5 = conv(&b5, 64, (5, 5))?;
            let b3 = conv(&x, 64, (1, 1))?;
            let b3 = conv(&b3, 96, (3, 3))?;
            let b3 = conv(&b3, 96, (3, 3))?;
            let bp = avg_pool_3x3(&x)?;
            let bp = conv(&bp, pool_filters, (1, 1))?;
            x = concat(&[&b1, &b5, &b3, &bp], Some(&format!("mixed{i}")))?;
        }

        // mixed3: 17 x 17 x 768.
        let b3 = conv_bn(&x, 384, (3, 3), (2, 2), Valid)?;
        let bd = conv(&x, 64, (1, 1))?;
        let bd = conv(&bd, 96, (3, 3))?;
        let bd = conv_bn(&bd, 96, (3, 3), (2, 2), Valid)?;
        let bp = max_pool_3x3_s2(&x)?;
        x = concat(&[&b3, &bd, &bp], Some("mixed3"))?;

        // mixed4, 5, 6, 7: 17 x 17 x 768.
        for (i, f) in [128, 160, 160, 192].into_iter().enumerate() {
            let b1 = conv(&x, 192, (1, 1))?;
            let b7 = conv(&x, f, (1, 1))?;
            let b7 = conv(&b7, f, (1, 7))?;
            let b7 = conv(&b7, 192, (7, 1))?;
            let bd = conv(&x, f, (1, 1))?;
            let bd = conv(&bd, f, (7, 1))?;
            let bd = conv(&bd, f, (1, 7))?;
            let bd = conv(&bd, f, (7, 1))?;
            let bd = conv(&bd, 192, (1, 7))?;
            let bp = avg_pool_3x3(&x)?;
            let bp = conv(&bp, 192, (1, 1))?;
            x = concat(&[&b1, &b7, &bd, &bp], Some(&format!("mixed{}", 4 + i)))?;
        }

        // mixed8: 8 x 8 x 1280.
        let b3 = conv(&x, 192, (1, 1))?;
        let b3 = conv_bn(&b3, 320, (3, 3), (2, 2), Valid)?;
        let b7 = conv(&x, 192, (1, 1))?;
        let b7 = conv(&b7, 192, (1, 7))?;
        let b7 = conv(&b7, 192, (7, 1))?;
        let b7 = conv_bn(&b7, 192, (3, 3), (2, 2), Valid)?;
        let bp = max_pool_3x3_s2(&x)?;
        x = concat(&[&b3, &b7, &bp], Some("mixed8"))?;

        // mixed9, 10: 8 x 8 x 2048.
        for i in 0..2 {
            let b1 = conv(&x, 320, (1, 1))?;
            let b3 = conv(&x, 384, (1, 1))?;
            let b3_1 = conv(&b3, 384, (1, 3))?;
            let b3_2 = conv(&b3, 384, (3, 1))?;
            let b3 = concat(&[&b3_1, &b3_2], Some(&format!("mixed9_{i}")))?;
            let bd = conv(&x, 448, (1, 1))?;
            let bd = conv(&bd, 384, (3, 3))?;
            let bd_1 = conv(&bd, 384, (1, 3))?;
            let bd_2 = conv(&bd, 384, (3, 1))?;
            let bd = concat(&[&bd_1, &bd_2], None)?;
            let bp = avg_pool_3x3(&x)?;
            let bp = conv(&bp, 192, (1, 1))?;
            x = concat(&[&b1, &b3, &bd, &bp], Some(&format!("mixed{}", 9 + i)))?;
        }
        Ok(x)
    }
}

/// Keras's `conv2d_bn`: Conv2D without bias, BatchNormalization without
/// scale, ReLU.
fn conv_bn(
    x: &SymbolicTensor,
    filters: usize,
    kernel: (usize, usize),
    strides: (usize, usize),
    padding: Padding,
) -> Result<SymbolicTensor> {
    let x = Conv2D::new(filters, kernel)
        .strides(strides)
        .padding(padding)
        .use_bias(false)
        .apply(x)?;
    let x = BatchNormalization::new().scale(false).apply(&x)?;
    Ok(ActivationLayer::new(Activation::Relu).apply(&x)?)
}

/// `conv2d_bn` with its defaults: stride 1, `same` padding.
fn conv(x: &SymbolicTensor, filters: usize, kernel: (usize, usize)) -> Result<SymbolicTensor> {
    conv_bn(x, filters, kernel, (1, 1), Padding::Same)
}

fn max_pool_3x3_s2(x: &SymbolicTensor) -> Result<SymbolicTensor> {
    Ok(MaxPooling2D::new((3, 3)).strides((2, 2)).apply(x)?)
}

fn avg_pool_3x3(x: &SymbolicTensor) -> Result<SymbolicTensor> {
    Ok(AveragePooling2D::new((3, 3))
        .strides((1, 1))
        .padding(Padding::Same)
        .apply(x)?)
}

fn concat(parts: &[&SymbolicTensor], name: Option<&str>) -> Result<SymbolicTensor> {
    let layer = match name {
        Some(n) => Concatenate::new().name(n),
        None => Concatenate::new(),
    };
    Ok(layer.apply_many(parts)?)
}
