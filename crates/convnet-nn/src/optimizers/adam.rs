use std::collections::BTreeMap;

use rayon::prelude::*;

use convnet_autograd::Gradient;
use convnet_tensor::Tensor;

use super::{check_grad, check_lr, Optimizer, Slots, CHUNK};
use crate::Result;

/// Keras's `Adam` (defaults: learning rate 1e-3, beta_1 0.9, beta_2 0.999,
/// epsilon 1e-7), with Keras 3's update:
/// `m += (g - m)(1 - b1)`, `v += (g^2 - v)(1 - b2)`,
/// `w -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)`.
#[derive(Debug, Clone)]
pub struct Adam {
    /// Learning rate.
    pub learning_rate: f32,
    /// Decay of the first moment.
    pub beta_1: f32,
    /// Decay of the second moment.
    pub beta_2: f32,
    /// Added to the denominator.
    pub epsilon: f32,
    iterations: u64,
    slots: Slots,
}

impl Default for Adam {
    fn default() -> Self {
        Adam {
            learning_rate: 1e-3,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
            iterations: 0,
            slots: Slots::default(),
        }
    }
}

impl Adam {
    /// Adam with Keras's defaults and this learning rate.
    pub fn new(learning_rate: f32) -> Self {
        Adam {
            learning_rate,
            ..Default::default()
        }
    }
}

impl Optimizer for Adam {
    common_accessors!();

    fn name(&self) -> &'static str {
        "Adam"
    }

    fn update(&mut self, key: &str, param: &mut Tensor, grad: &Tensor) -> Result<()> {
        self.update_gradient(key, param, &Gradient::dense(grad.clone()))
    }

    fn update_gradient(&mut self, key: &str, param: &mut Tensor, grad: &Gradient) -> Result<()> {
        check_lr("Adam", self.learning_rate)?;
        check_grad(key, param, grad)?;
        let t = (self.iterations + 1) as i32;
        let (b1, b2, eps) = (self.beta_1, self.beta_2, self.epsilon);
        let alpha = self.learning_rate * (1.0 - b2.powi(t)).sqrt() / (1.0 - b1.powi(t));
        let slots = self.slots.get_or_init(key, param.shape(), 2);
        let (m_slot, v_slot) = slots.split_at_mut(1);
        let (m, v) = (m_slot[0].as_slice_mut(), v_slot[0].as_slice_mut());
        let len = grad.chunk_len(CHUNK);
        // Element-wise, so chunks in parallel give the same bits as a loop.
        param
            .as_slice_mut()
            .par_chunks_mut(len)
            .zip(m.par_chunks_mut(len))
            .zip(v.par_chunks_mut(len))
            .enumerate()
            .try_for_each(|(i, ((w, m), v))| {
                grad.with_chunk(i, len, |g| {
                    for (((w, &g), m), v) in w.iter_mut().zip(g).zip(m).zip(v) {
                        *m += (g - *m) * (1.0 - b1);
                        *v += (g * g - *v) * (1.0 - b2);
                        *w -= alpha * *m / (v.sqrt() + eps);
                    }
                })
            })?;
        Ok(())
    }

    fn state(&self) -> BTreeMap<String, Tensor> {
        self.slots.export(&["m", "v"], self.iterations)
    }

    fn load_state(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()> {
        self.iterations = self.slots.import(&["m", "v"], state)?;
        Ok(())
    }
}
