//! Fully connected layer (Keras's `Dense` without its activation):
//! `y = x w + b`; backward `dx = dy w^T`, `dw = x^T dy`, `db = sum(dy)`.
//!
//! On small batches the kernel gradient `dw` is handed over unevaluated, as
//! the [`OuterProduct`] of `x` and `dy` (see [`Gradient`]): an optimizer
//! applies it block by block without writing it out.

use convnet_kernels::dense::{dense_backward, dense_forward};
use convnet_tensor::{Result, Tensor, TensorError};

use super::fill;
use crate::{Backward, Gradient, OuterProduct, Var};

/// Batches up to this size hand the kernel gradient over factored: the
/// factors are small next to the kernel, and computing it block by block
/// (a reduction over the batch) is as fast as the GEMM.
const FACTORED_MAX_BATCH: usize = 128;

/// Layers with fewer units compute the kernel gradient with the GEMM: the
/// block kernel works in tiles of 32 columns, and narrower rows take its
/// scalar loop.
const FACTORED_MIN_UNITS: usize = 32;

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

    fn backward_gradients(&self, dy: Tensor, needs: &[bool]) -> Result<Vec<Option<Gradient>>> {
        let factored = needs.get(1).copied().unwrap_or(false)
            && self.m <= FACTORED_MAX_BATCH
            && self.n >= FACTORED_MIN_UNITS;
        if !factored {
            let grads = self.backward(&dy, needs)?;
            return Ok(grads.into_iter().map(|g| g.map(Gradient::dense)).collect());
        }
        // dx and db as usual, dw left as x^T dy.
        let mut others = needs.to_vec();
        others[1] = false;
        let mut grads: Vec<Option<Gradient>> = self
            .backward(&dy, &others)?
            .into_iter()
            .map(|g| g.map(Gradient::dense))
            .collect();
        grads[1] = Some(OuterProduct::new(self.x.clone(), dy)?.into());
        Ok(grads)
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
