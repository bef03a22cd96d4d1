use convnet_autograd::Var;
use convnet_tensor::{Rng, Tensor};

use crate::layer::{shape_error, single_input};
use crate::{ForwardCtx, Layer, LayerCore, Result, Weight};

/// Keras's `BatchNormalization` over the last (channel) axis.
///
/// Weights, in Keras's order: `gamma` (ones, if `scale`), `beta` (zeros, if
/// `center`), `moving_mean` (zeros) and `moving_variance` (ones), the last
/// two non-trainable. In training (and only if the layer is trainable, as
/// Keras does for frozen layers) it normalises with the batch statistics and
/// updates the moving ones: `moving = moving * momentum + batch * (1 -
/// momentum)`, with the biased batch variance, as Keras 3 does. Otherwise it
/// normalises with the moving statistics.
#[derive(Debug, Clone)]
pub struct BatchNormalization {
    core: LayerCore,
    momentum: f32,
    epsilon: f32,
    center: bool,
    scale: bool,
}

impl BatchNormalization {
    /// Keras's defaults: momentum 0.99, epsilon 1e-3, center and scale.
    pub fn new() -> Self {
        BatchNormalization {
            core: LayerCore::new(None),
            momentum: 0.99,
            epsilon: 1e-3,
            center: true,
            scale: true,
        }
    }

    /// Momentum of the moving averages.
    pub fn momentum(mut self, momentum: f32) -> Self {
        self.momentum = momentum;
        self
    }

    /// Added to the variance before the square root.
    pub fn epsilon(mut self, epsilon: f32) -> Self {
        self.epsilon = epsilon;
        self
    }

    /// Whether to learn an offset `beta`.
    pub fn center(mut self, center: bool) -> Self {
        self.center = center;
        self
    }

    /// Whether to learn a scale `gamma`.
    pub fn scale(mut self, scale: bool) -> Self {
        self.scale = scale;
        self
    }

    /// An explicit name.
    pub fn name(mut self, name: &str) -> Self {
        self.core.name = name.to_string();
        self
    }
}

impl Default for BatchNormalization {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer for BatchNormalization {
    core_accessors!();

    fn class_name(&self) -> &'static str {
        "BatchNormalization"
    }

    fn name_prefix(&self) -> &'static str {
        "batch_normalization"
    }

    fn build(&mut self, input_shapes: &[Vec<usize>], _rng: &mut Rng) -> Result<Vec<usize>> {
        let shape = single_input(self, input_shapes)?.to_vec();
        let c = match shape.last() {
            Some(&c) if c > 0 => c,
            _ => {
                return Err(shape_error(
                    self,
                    input_shapes,
                    "needs a non-empty channel axis",
                ))
            }
        };
        if self.epsilon.is_nan() || self.epsilon <= 0.0 || !(0.0..=1.0).contains(&self.momentum) {
            return Err(shape_error(
                self,
                input_shapes,
                "epsilon must be positive and momentum in [0, 1]",
            ));
        }
        let mut weights = Vec::new();
        if self.scale {
            weights.push(Weight::trainable("gamma", Tensor::ones(&[c])));
        }
        if self.center {
            weights.push(Weight::trainable("beta", Tensor::zeros(&[c])));
        }
        weights.push(Weight::frozen("moving_mean", Tensor::zeros(&[c])));
        weights.push(Weight::frozen("moving_variance", Tensor::ones(&[c])));
        self.core.weights = weights;
        Ok(shape)
    }

    fn inference_affine(
        &self,
        params: &[Var],
        training: bool,
    ) -> Option<Result<(Vec<f32>, Vec<f32>)>> {
        if (training && self.core.trainable) || params.iter().any(Var::requires_grad) {
            return None;
        }
        let mut i = 0;
        let mut next = |on: bool| {
            on.then(|| {
                i += 1;
                params[i - 1].value().values()
            })
        };
        let gamma = next(self.scale);
        let beta = next(self.center);
        let (mean, var) = (params[i].value().values(), params[i + 1].value().values());
        Some(Ok(convnet_kernels::batchnorm::inference_affine(
            gamma.as_deref(),
            beta.as_deref(),
            &mean,
            &var,
            self.epsilon,
        )))
    }

    fn forward(&self, inputs: &[Var], params: &[Var], ctx: &mut ForwardCtx<'_>) -> Result<Var> {
        let mut i = 0;
        let gamma = self.scale.then(|| {
            i += 1;
            &params[i - 1]
        });
        let beta = self.center.then(|| {
            i += 1;
            &params[i - 1]
        });
        let (mm_idx, mv_idx) = (i, i + 1);
        let (moving_mean, moving_var) = (params[mm_idx].value(), params[mv_idx].value());
        if ctx.training && self.core.trainable {
            let (y, stats) = inputs[0].batch_norm_train(gamma, beta, self.epsilon)?;
            let m = self.momentum;
            let blend = |moving: &Tensor, batch: &Tensor| -> Result<Tensor> {
                Ok(moving.mul_scalar(m).add(&batch.mul_scalar(1.0 - m))?)
            };
            ctx.updates.push((mm_idx, blend(moving_mean, &stats.mean)?));
            ctx.updates.push((mv_idx, blend(moving_var, &stats.var)?));
            Ok(y)
        } else {
            Ok(inputs[0].batch_norm_inference(
                gamma,
                beta,
                moving_mean,
                moving_var,
                self.epsilon,
            )?)
        }
    }
}
