//! Keras's losses on probabilities (the output of a sigmoid or softmax),
//! averaged over the batch. The rules and their gradients live in
//! `convnet-autograd` (`ops/loss.rs`).

use convnet_autograd::Var;
use convnet_tensor::Tensor;

use crate::{NnError, Result};

/// A loss, as Keras's `loss=` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// `"binary_crossentropy"`: one probability per output, labels 0/1.
    BinaryCrossentropy,
    /// `"categorical_crossentropy"`: one-hot labels.
    CategoricalCrossentropy,
    /// `"sparse_categorical_crossentropy"`: integer class labels.
    SparseCategoricalCrossentropy,
}

impl Loss {
    /// Keras's name.
    pub fn name(self) -> &'static str {
        match self {
            Loss::BinaryCrossentropy => "binary_crossentropy",
            Loss::CategoricalCrossentropy => "categorical_crossentropy",
            Loss::SparseCategoricalCrossentropy => "sparse_categorical_crossentropy",
        }
    }

    /// The labels in the shape the loss wants for `pred`, or an error
    /// naming both shapes. As Keras, `(batch,)` labels are accepted for a
    /// `(batch, 1)` output.
    pub(crate) fn align_labels(self, pred: &[usize], y: &Tensor) -> Result<Tensor> {
        let mismatch = || {
            NnError::Data(format!(
                "labels of shape {:?} do not fit the model's output of shape {:?} for {}",
                y.shape(),
                pred,
                self.name()
            ))
        };
        if y.shape().first() != pred.first() {
            return Err(mismatch());
        }
        match self {
            Loss::BinaryCrossentropy | Loss::CategoricalCrossentropy => {
                if y.shape() == pred {
                    Ok(y.clone())
                } else if y.len() == pred.iter().product::<usize>()
                    && matches!(self, Loss::BinaryCrossentropy)
                {
                    Ok(y.reshape(pred)?)
                } else {
                    Err(mismatch())
                }
            }
            Loss::SparseCategoricalCrossentropy => {
                if pred.len() == 2 && y.len() == pred[0] {
                    Ok(y.reshape(&[pred[0]])?)
                } else {
                    Err(mismatch())
                }
            }
        }
    }

    /// The mean loss of a batch.
    pub fn compute(self, pred: &Var, y: &Tensor) -> Result<Var> {
        let y = self.align_labels(pred.shape(), y)?;
        Ok(match self {
            Loss::BinaryCrossentropy => pred.binary_crossentropy(&y)?,
            Loss::CategoricalCrossentropy => pred.categorical_crossentropy(&y)?,
            Loss::SparseCategoricalCrossentropy => pred.sparse_categorical_crossentropy(&y)?,
        })
    }
}

/// A metric, as Keras's `metrics=[...]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// `"accuracy"`, resolved from the loss as Keras does: binary accuracy
    /// (threshold 0.5) for binary cross-entropy, argmax agreement for the
    /// categorical losses.
    Accuracy,
}

impl Metric {
    /// The name in logs.
    pub fn name(self) -> &'static str {
        "accuracy"
    }

    /// Number of correct predictions in a batch (labels already aligned).
    pub(crate) fn correct(self, loss: Loss, pred: &Tensor, y: &Tensor) -> Result<usize> {
        let (p, t) = (pred.values(), y.values());
        Ok(match loss {
            Loss::BinaryCrossentropy => p
                .iter()
                .zip(t.iter())
                .filter(|(p, t)| (**p > 0.5) == (**t > 0.5))
                .count(),
            Loss::CategoricalCrossentropy => {
                let a = pred.argmax(1)?;
                let b = y.argmax(1)?;
                a.iter().zip(b.iter()).filter(|(a, b)| a == b).count()
            }
            Loss::SparseCategoricalCrossentropy => {
                let a = pred.argmax(1)?;
                a.iter()
                    .zip(t.iter())
                    .filter(|(a, t)| **a as f32 == **t)
                    .count()
            }
        })
    }

    /// How many predictions a batch holds for this metric.
    pub(crate) fn count(self, loss: Loss, pred: &Tensor) -> usize {
        match loss {
            Loss::BinaryCrossentropy => pred.len(),
            _ => pred.shape()[0],
        }
    }
}
