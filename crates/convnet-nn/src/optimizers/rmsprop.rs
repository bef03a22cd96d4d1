use std::collections::BTreeMap;

use rayon::prelude::*;

use convnet_autograd::Gradient;
use convnet_tensor::Tensor;

use super::{check_grad, check_lr, Optimizer, Slots, CHUNK};
use crate::Result;

/// Keras's `RMSprop` (defaults: learning rate 1e-3, rho 0.9, epsilon 1e-7,
/// no momentum), with Keras 3's update:
/// `v = rho v + (1 - rho) g^2`, `w -= lr g / sqrt(v + eps)`.
#[derive(Debug, Clone)]
pub struct RMSprop {
    /// Learning rate.
    pub learning_rate: f32,
    /// Decay of the mean square.
    pub rho: f32,
    /// Added inside the square root.
    pub epsilon: f32,
    iterations: u64,
    slots: Slots,
}

impl Default for RMSprop {
    fn default() -> Self {
        RMSprop {
            learning_rate: 1e-3,
            rho: 0.9,
            epsilon: 1e-7,
            iterations: 0,
            slots: Slots::default(),
        }
    }
}

impl RMSprop {
    /// RMSprop with Keras's defaults and this learning rate.
    pub fn new(learning_rate: f32) -> Self {
        RMSprop {
            learning_rate,
            ..Default::default()
        }
    }
}

impl Optimizer for RMSprop {
    common_accessors!();

    fn name(&self) -> &'static str {
        "RMSprop"
    }

    fn update(&mut self, key: &str, param: &mut Tensor, grad: &Tensor) -> Result<()> {
        self.update_gradient(key, param, &Gradient::dense(grad.clone()))
    }

    fn update_gradient(&mut self, key: &str, param: &mut Tensor, grad: &Gradient) -> Result<()> {
        check_lr("RMSprop", self.learning_rate)?;
        check_grad(key, param, grad)?;
        let (lr, rho, eps) = (self.learning_rate, self.rho, self.epsilon);
        let v = self.slots.get_or_init(key, param.shape(), 1)[0].as_slice_mut();
        let len = grad.chunk_len(CHUNK);
        // Element-wise, so chunks in parallel give the same bits as a loop.
        param
            .as_slice_mut()
            .par_chunks_mut(len)
            .zip(v.par_chunks_mut(len))
            .enumerate()
            .try_for_each(|(i, (w, v))| {
                grad.with_chunk(i, len, |g| {
                    for ((w, &g), v) in w.iter_mut().zip(g).zip(v) {
                        *v = rho * *v + (1.0 - rho) * g * g;
                        *w -= lr * g / (*v + eps).sqrt();
                    }
                })
            })?;
        Ok(())
    }

    fn state(&self) -> BTreeMap<String, Tensor> {
        self.slots.export(&["velocity"], self.iterations)
    }

    fn load_state(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()> {
        self.iterations = self.slots.import(&["velocity"], state)?;
        Ok(())
    }
}
