use std::collections::BTreeMap;

use rayon::prelude::*;

use convnet_autograd::Gradient;
use convnet_tensor::Tensor;

use super::{check_grad, check_lr, Optimizer, Slots, CHUNK};
use crate::Result;

/// Keras's `SGD` (defaults: learning rate 0.01, no momentum), with Keras
/// 3's update: with momentum `m = momentum m - lr g`, then `w += m`, or with
/// Nesterov `w += momentum m - lr g`; without, `w -= lr g`.
#[derive(Debug, Clone)]
pub struct SGD {
    /// Learning rate.
    pub learning_rate: f32,
    /// Momentum (0 for plain SGD).
    pub momentum: f32,
    /// Nesterov momentum.
    pub nesterov: bool,
    iterations: u64,
    slots: Slots,
}

impl Default for SGD {
    fn default() -> Self {
        SGD {
            learning_rate: 0.01,
            momentum: 0.0,
            nesterov: false,
            iterations: 0,
            slots: Slots::default(),
        }
    }
}

impl SGD {
    /// SGD with this learning rate and momentum.
    pub fn new(learning_rate: f32, momentum: f32, nesterov: bool) -> Self {
        SGD {
            learning_rate,
            momentum,
            nesterov,
            ..Default::default()
        }
    }
}

impl Optimizer for SGD {
    common_accessors!();

    fn name(&self) -> &'static str {
        "SGD"
    }

    fn update(&mut self, key: &str, param: &mut Tensor, grad: &Tensor) -> Result<()> {
        self.update_gradient(key, param, &Gradient::dense(grad.clone()))
    }

    fn update_gradient(&mut self, key: &str, param: &mut Tensor, grad: &Gradient) -> Result<()> {
        check_lr("SGD", self.learning_rate)?;
        check_grad(key, param, grad)?;
        let (lr, mu, nesterov) = (self.learning_rate, self.momentum, self.nesterov);
        let len = grad.chunk_len(CHUNK);
        // Element-wise, so chunks in parallel give the same bits as a loop.
        if mu == 0.0 {
            param
                .as_slice_mut()
                .par_chunks_mut(len)
                .enumerate()
                .try_for_each(|(i, w)| {
                    grad.with_chunk(i, len, |g| {
                        for (w, &g) in w.iter_mut().zip(g) {
                            *w -= lr * g;
                        }
                    })
                })?;
            return Ok(());
        }
        let m = self.slots.get_or_init(key, param.shape(), 1)[0].as_slice_mut();
        param
            .as_slice_mut()
            .par_chunks_mut(len)
            .zip(m.par_chunks_mut(len))
            .enumerate()
            .try_for_each(|(i, (w, m))| {
                grad.with_chunk(i, len, |g| {
                    for ((w, &g), m) in w.iter_mut().zip(g).zip(m) {
                        *m = mu * *m - lr * g;
                        if nesterov {
                            *w += mu * *m - lr * g;
                        } else {
                            *w += *m;
                        }
                    }
                })
            })?;
        Ok(())
    }

    fn state(&self) -> BTreeMap<String, Tensor> {
        self.slots.export(&["momentum"], self.iterations)
    }

    fn load_state(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()> {
        self.iterations = self.slots.import(&["momentum"], state)?;
        Ok(())
    }
}
