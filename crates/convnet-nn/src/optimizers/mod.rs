//! Keras's optimizers, with Keras 3's update rules and defaults.

/// The accessors every optimizer implements the same way, from its
/// `learning_rate` and `iterations` fields.
macro_rules! common_accessors {
    () => {
        fn learning_rate(&self) -> f32 {
            self.learning_rate
        }

        fn set_learning_rate(&mut self, lr: f32) {
            self.learning_rate = lr;
        }

        fn iterations(&self) -> u64 {
            self.iterations
        }

        fn finish_step(&mut self) {
            self.iterations += 1;
        }
    };
}

mod adam;
mod rmsprop;
mod sgd;

pub use adam::Adam;
pub use rmsprop::RMSprop;
pub use sgd::SGD;

use std::collections::BTreeMap;

use convnet_autograd::Gradient;
use convnet_tensor::Tensor;

use crate::{NnError, Result};

/// Elements per parallel task of an element-wise update: large enough that
/// small weights run in one task, small enough that a big dense kernel is
/// split across the cores.
pub(crate) const CHUNK: usize = 1 << 16;

/// An optimizer: updates each trainable weight from its gradient, keeping
/// per-weight state (slots) keyed by the weight's name.
pub trait Optimizer {
    /// Keras's class name.
    fn name(&self) -> &'static str;

    /// The learning rate.
    fn learning_rate(&self) -> f32;

    /// Set the learning rate.
    fn set_learning_rate(&mut self, lr: f32);

    /// Steps taken so far (Keras's `optimizer.iterations`).
    fn iterations(&self) -> u64;

    /// Update `param` (the weight `key`) with `grad`, as step number
    /// `iterations() + 1`. Call [`Optimizer::finish_step`] after all weights.
    fn update(&mut self, key: &str, param: &mut Tensor, grad: &Tensor) -> Result<()>;

    /// [`Optimizer::update`] with a gradient in either of the forms the
    /// tape hands over. The default materializes a factored gradient and
    /// calls [`Optimizer::update`]; the element-wise optimizers here
    /// override it to compute a factored gradient block by block
    /// ([`Gradient::with_chunk`]) and apply each block while it is in
    /// cache, with the same bits as updating from the materialized tensor.
    fn update_gradient(&mut self, key: &str, param: &mut Tensor, grad: &Gradient) -> Result<()> {
        match grad.as_dense() {
            Some(g) => self.update(key, param, g),
            None => self.update(key, param, &grad.to_tensor()?),
        }
    }

    /// Count one step done.
    fn finish_step(&mut self);

    /// The state, for checkpoints: `"{key}/{slot}"` -> tensor, plus
    /// `"iterations"` as a 1-element tensor.
    fn state(&self) -> BTreeMap<String, Tensor>;

    /// Restore a state from [`Optimizer::state`].
    fn load_state(&mut self, state: &BTreeMap<String, Tensor>) -> Result<()>;
}

pub(crate) fn check_lr(op: &str, lr: f32) -> Result<()> {
    if lr.is_finite() && lr >= 0.0 {
        Ok(())
    } else {
        Err(NnError::usage(format!(
            "{op}: learning rate {lr} must be a finite non-negative number"
        )))
    }
}

pub(crate) fn check_grad(key: &str, param: &Tensor, grad: &Gradient) -> Result<()> {
    if param.shape() == grad.shape() {
        Ok(())
    } else {
        Err(NnError::usage(format!(
            "gradient of {key} has shape {:?}, the weight {:?}",
            grad.shape(),
            param.shape()
        )))
    }
}

/// Slots of one kind for every weight, saved as `"{key}/{slot}"`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Slots {
    pub by_key: BTreeMap<String, Vec<Tensor>>,
}

impl Slots {
    pub fn get_or_init(&mut self, key: &str, shape: &[usize], count: usize) -> &mut Vec<Tensor> {
        self.by_key
            .entry(key.to_string())
            .or_insert_with(|| vec![Tensor::zeros(shape); count])
    }

    pub fn export(&self, names: &[&str], iterations: u64) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (k, v) in &self.by_key {
            for (name, t) in names.iter().zip(v) {
                out.insert(format!("{k}/{name}"), t.clone());
            }
        }
        out.insert(
            "iterations".to_string(),
            Tensor::from_vec(&[1], vec![iterations as f32]).expect("one value"),
        );
        out
    }

    pub fn import(&mut self, names: &[&str], state: &BTreeMap<String, Tensor>) -> Result<u64> {
        let mut by_key: BTreeMap<String, Vec<Option<Tensor>>> = BTreeMap::new();
        let mut iterations = 0;
        for (k, t) in state {
            if k == "iterations" {
                iterations = t.item()? as u64;
                continue;
            }
            let (key, slot) = k.rsplit_once('/').ok_or_else(|| {
                NnError::usage(format!(
                    "optimizer state entry \"{k}\" is not \"weight/slot\""
                ))
            })?;
            let idx = names.iter().position(|n| *n == slot).ok_or_else(|| {
                NnError::usage(format!(
                    "optimizer state entry \"{k}\": unknown slot \"{slot}\""
                ))
            })?;
            by_key
                .entry(key.to_string())
                .or_insert_with(|| vec![None; names.len()])[idx] = Some(t.clone());
        }
        let mut slots = BTreeMap::new();
        for (k, v) in by_key {
            let full: Option<Vec<Tensor>> = v.into_iter().collect();
            slots.insert(
                k.clone(),
                full.ok_or_else(|| {
                    NnError::usage(format!("optimizer state for \"{k}\" is incomplete"))
                })?,
            );
        }
        self.by_key = slots;
        Ok(iterations)
    }
}
