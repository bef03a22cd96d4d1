//! Losses on probabilities, with Keras's exact semantics (Keras 3,
//! TensorFlow backend, `from_logits=False`, epsilon `1e-7`), reduced by the
//! mean over the batch ("sum over batch size"). Computed in f64.
//!
//! - binary cross-entropy: `p` clipped to `[eps, 1-eps]`, then
//!   `-(t ln p + (1 - t) ln(1 - p))`, mean over the last axis;
//! - categorical: `p` renormalised to sum 1 per row, clipped, `-sum t ln p`;
//! - sparse categorical: `p` clipped, then the softmax cross-entropy of
//!   `ln p`, i.e. `-ln p_y + ln sum_j p_j`.
//!
//! Clipping passes no gradient where it bites (as `tf.clip_by_value`).

use convnet_tensor::{Result, Tensor, TensorError};

use crate::{Backward, Var};

/// Keras's fuzz factor, `keras.config.epsilon()`.
pub const EPSILON: f64 = 1e-7;

/// `clip_by_value(p, eps, 1 - eps)` with the bounds as float32 values, as
/// TensorFlow computes them, and whether the gradient passes.
fn clip(p: f64) -> (f64, bool) {
    let lo = EPSILON as f32 as f64;
    let hi = (1.0f32 - EPSILON as f32) as f64;
    if p < lo {
        (lo, false)
    } else if p > hi {
        (hi, false)
    } else {
        (p, true)
    }
}

/// A loss whose gradient was computed with its value: backward scales it by
/// the incoming scalar.
struct Precomputed {
    name: &'static str,
    grad: Tensor,
}

impl Backward for Precomputed {
    fn name(&self) -> &'static str {
        self.name
    }

    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(self.grad.mul_scalar(g.item()?))])
    }
}

fn rows_of(op: &str, pred: &Var) -> Result<(usize, usize)> {
    match *pred.shape() {
        [m, k] if m > 0 && k > 0 => Ok((m, k)),
        _ => Err(TensorError::invalid_shape(
            op,
            pred.shape(),
            "predictions must be (batch, classes) and non-empty",
        )),
    }
}

impl Var {
    /// Binary cross-entropy of these probabilities against `y_true` (same
    /// shape, values in [0, 1]), averaged over all elements.
    pub fn binary_crossentropy(&self, y_true: &Tensor) -> Result<Var> {
        let op = "binary_crossentropy";
        if y_true.shape() != self.shape() {
            return Err(TensorError::mismatch(
                op,
                y_true.shape(),
                self.shape(),
                "labels must have the predictions' shape",
            ));
        }
        let n = self.value().len();
        let last = self.shape().last().copied().unwrap_or(1);
        if n == 0 || last == 0 {
            return Err(TensorError::invalid_shape(
                op,
                self.shape(),
                "empty predictions",
            ));
        }
        let (p, t) = (self.value().values(), y_true.values());
        let mut total = 0.0f64;
        let mut grad = Vec::with_capacity(n);
        for (&p, &t) in p.iter().zip(t.iter()) {
            let (p, t) = (p as f64, t as f64);
            let (pc, pass) = clip(p);
            total -= t * pc.ln() + (1.0 - t) * (1.0 - pc).ln();
            let g = if pass {
                -t / pc + (1.0 - t) / (1.0 - pc)
            } else {
                0.0
            };
            grad.push((g / n as f64) as f32);
        }
        let value = Tensor::scalar((total / n as f64) as f32);
        Var::from_op(op, &[self], value, || Precomputed {
            name: op,
            grad: Tensor::from_vec(self.shape(), grad).expect("same length"),
        })
    }

    /// Categorical cross-entropy of these `(batch, classes)` probabilities
    /// against one-hot (or soft) `y_true` of the same shape.
    pub fn categorical_crossentropy(&self, y_true: &Tensor) -> Result<Var> {
        let op = "categorical_crossentropy";
        let (m, k) = rows_of(op, self)?;
        if y_true.shape() != self.shape() {
            return Err(TensorError::mismatch(
                op,
                y_true.shape(),
                self.shape(),
                "labels must have the predictions' shape",
            ));
        }
        let (p, t) = (self.value().values(), y_true.values());
        let mut total = 0.0f64;
        let mut grad = vec![0.0f32; m * k];
        let mut gq = vec![0.0f64; k];
        for r in 0..m {
            let (pr, tr) = (&p[r * k..(r + 1) * k], &t[r * k..(r + 1) * k]);
            let s: f64 = pr.iter().map(|&v| v as f64).sum();
            let mut dot = 0.0;
            for j in 0..k {
                let q = pr[j] as f64 / s;
                let (qc, pass) = clip(q);
                total -= tr[j] as f64 * qc.ln();
                gq[j] = if pass { -(tr[j] as f64) / qc } else { 0.0 };
                dot += gq[j] * q;
            }
            for j in 0..k {
                grad[r * k + j] = ((gq[j] - dot) / s / m as f64) as f32;
            }
        }
        let value = Tensor::scalar((total / m as f64) as f32);
        Var::from_op(op, &[self], value, || Precomputed {
            name: op,
            grad: Tensor::from_vec(&[m, k], grad).expect("same length"),
        })
    }

    /// Sparse categorical cross-entropy of these `(batch, classes)`
    /// probabilities against integer class labels `(batch,)` or `(batch, 1)`
    /// stored as floats.
    pub fn sparse_categorical_crossentropy(&self, y_true: &Tensor) -> Result<Var> {
        let op = "sparse_categorical_crossentropy";
        let (m, k) = rows_of(op, self)?;
        if y_true.len() != m
            || !(y_true.rank() == 1 || (y_true.rank() == 2 && y_true.shape()[1] == 1))
        {
            return Err(TensorError::mismatch(
                op,
                y_true.shape(),
                self.shape(),
                "labels must be (batch,) or (batch, 1) class indices",
            ));
        }
        let (p, t) = (self.value().values(), y_true.values());
        let mut total = 0.0f64;
        let mut grad = vec![0.0f32; m * k];
        for r in 0..m {
            let label = t[r];
            if !(label >= 0.0 && label.fract() == 0.0 && (label as usize) < k) {
                return Err(TensorError::invalid(
                    op,
                    format!("label {label} of sample {r} is not a class index in 0..{k}"),
                ));
            }
            let y = label as usize;
            let pr = &p[r * k..(r + 1) * k];
            let clipped: Vec<(f64, bool)> = pr.iter().map(|&v| clip(v as f64)).collect();
            let s: f64 = clipped.iter().map(|c| c.0).sum();
            total += -clipped[y].0.ln() + s.ln();
            for (j, &(c, pass)) in clipped.iter().enumerate() {
                let g = 1.0 / s - if j == y { 1.0 / c } else { 0.0 };
                grad[r * k + j] = if pass { (g / m as f64) as f32 } else { 0.0 };
            }
        }
        let value = Tensor::scalar((total / m as f64) as f32);
        Var::from_op(op, &[self], value, || Precomputed {
            name: op,
            grad: Tensor::from_vec(&[m, k], grad).expect("same length"),
        })
    }
}
