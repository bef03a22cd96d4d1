//! Fully connected layer (Keras's `Dense` without its activation):
//! `y = x w + b`; backward `dx = dy w^T`, `dw = x^T dy`, `db = sum(dy)`.

use convnet_kernels::dense::{dense_backward, dense_forward};
use convnet_tensor::{Result, Tensor, TensorError};

use super::fill;
use crate::{Backward, Var};

struct DenseBackward {
    m: usize,
    k: usize,
    n: usize,
    x: Tensor,
    w: Tensor,
    has_bias: bool,
}

impl Backward for DenseBackward {
    fn name(&self) -> &'static str {
        "Dense"
    }

    fn backward(&self, dy: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let (m, k, n) = (self.m, self.k, self.n);
        let need_b = self.has_bias && needs.get(2).copied().unwrap_or(false);
        let mut dx = needs[0].then(|| vec![0.0f32; m * k]);
        let mut dw = needs[1].then(|| vec![0.0f32; k * n]);
        let mut db = need_b.then(|| vec![0.0f32; n]);
        dense_backward(
            m,
            k,
            n,
            &self.x.values(),
            &self.w.values(),
            &dy.values(),
            dx.as_deref_mut(),
            dw.as_deref_mut(),
            db.as_deref_mut(),
        )?;
        let mut out = vec![
            dx.map(|v| Tensor::from_vec(&[m, k], v)).transpose()?,
            dw.map(|v| Tensor::from_vec(&[k, n], v)).transpose()?,
        ];
        if self.has_bias {
            out.push(db.map(|v| Tensor::from_vec(&[n], v)).transpose()?);
        }
        Ok(out)
    }
}

impl Var {
    /// `self w + b` for a `(batch, in)` value, a kernel `w` `(in, out)` and an
    /// optional bias `(out,)`.
    pub fn dense(&self, w: &Var, b: Option<&Var>) -> Result<Var> {
        let op = "Dense";
        let (m, k) = match *self.shape() {
            [m, k] => (m, k),
            _ => {
                return Err(TensorError::invalid_shape(
                    op,
                    self.shape(),
                    "Dense expects a rank-2 input (batch, features); add a Flatten first",
                ))
            }
        };
        let n = match *w.shape() {
            [wk, n] if wk == k => n,
            _ => {
                return Err(TensorError::mismatch(
                    op,
                    self.shape(),
                    w.shape(),
                    "the kernel must be (input features, units)",
                ))
            }
        };
        if let Some(b) = b {
            if b.shape() != [n] {
                return Err(TensorError::mismatch(
                    op,
                    b.shape(),
                    &[n],
                    "the bias must have one value per unit",
                ));
            }
        }
        let bv = b.map(|b| b.value().values());
        let y = fill(&[m, n], |y| {
            dense_forward(
                m,
                k,
                n,
                &self.value().values(),
                &w.value().values(),
                bv.as_deref(),
                y,
            )
        })?;
        let mut inputs = vec![self, w];
        if let Some(b) = b {
            inputs.push(b);
        }
        Var::from_op(op, &inputs, y, || DenseBackward {
            m,
            k,
            n,
            x: self.value().clone(),
            w: w.value().clone(),
            has_bias: b.is_some(),
        })
    }
}
