//! Batch normalisation over the last (channel) axis (Keras's
//! `BatchNormalization` with `axis=-1`), in training mode (batch statistics,
//! which depend on the input) or inference mode (given moving statistics).

use convnet_kernels::batchnorm as k;
use convnet_tensor::{Result, Tensor, TensorError};

use super::fill;
use crate::{Backward, Var};

/// The statistics of one training-mode batch, per channel, for the caller's
/// moving averages. `var` is the biased (population) variance.
#[derive(Debug, Clone)]
pub struct BatchStats {
    /// Batch mean.
    pub mean: Tensor,
    /// Biased batch variance.
    pub var: Tensor,
}

struct BnBackward {
    training: bool,
    rows: usize,
    c: usize,
    x: Tensor,
    gamma: Option<Tensor>,
    has_beta: bool,
    mean: Vec<f32>,
    var: Vec<f32>,
    eps: f32,
}

impl Backward for BnBackward {
    fn name(&self) -> &'static str {
        "BatchNormalization"
    }

    fn backward(&self, dy: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let (rows, c) = (self.rows, self.c);
        let gamma_slot = self.gamma.as_ref().map(|_| 1);
        let beta_slot = self.has_beta.then(|| 1 + gamma_slot.map_or(0, |_| 1));
        let need_g = gamma_slot.is_some_and(|s| needs[s]);
        let need_b = beta_slot.is_some_and(|s| needs[s]);
        let mut dx = vec![0.0f32; rows * c];
        let mut dgamma = need_g.then(|| vec![0.0f32; c]);
        let mut dbeta = need_b.then(|| vec![0.0f32; c]);
        let gamma = self.gamma.as_ref().map(|g| g.values());
        let f = if self.training {
            k::batch_norm_backward_train
        } else {
            k::batch_norm_backward_inference
        };
        f(
            rows,
            c,
            &self.x.values(),
            &dy.values(),
            gamma.as_deref(),
            &self.mean,
            &self.var,
            self.eps,
            &mut dx,
            dgamma.as_deref_mut(),
            dbeta.as_deref_mut(),
        )?;
        let mut out = vec![needs[0]
            .then(|| Tensor::from_vec(self.x.shape(), dx))
            .transpose()?];
        if gamma_slot.is_some() {
            out.push(dgamma.map(|v| Tensor::from_vec(&[c], v)).transpose()?);
        }
        if beta_slot.is_some() {
            out.push(dbeta.map(|v| Tensor::from_vec(&[c], v)).transpose()?);
        }
        Ok(out)
    }
}

fn check(
    x: &Var,
    gamma: Option<&Var>,
    beta: Option<&Var>,
    stats: &[&Tensor],
) -> Result<(usize, usize)> {
    let op = "BatchNormalization";
    let c = *x.shape().last().filter(|&&c| c > 0).ok_or_else(|| {
        TensorError::invalid_shape(op, x.shape(), "needs a non-empty channel (last) axis")
    })?;
    let rows = x.value().len() / c;
    if rows == 0 {
        return Err(TensorError::invalid_shape(op, x.shape(), "empty batch"));
    }
    for t in gamma
        .map(|g| g.value())
        .into_iter()
        .chain(beta.map(|b| b.value()))
        .chain(stats.iter().copied())
    {
        if t.shape() != [c] {
            return Err(TensorError::mismatch(
                op,
                x.shape(),
                t.shape(),
                "parameters and statistics must be (channels,)",
            ));
        }
    }
    Ok((rows, c))
}

fn inputs<'a>(x: &'a Var, gamma: Option<&'a Var>, beta: Option<&'a Var>) -> Vec<&'a Var> {
    let mut v = vec![x];
    v.extend(gamma);
    v.extend(beta);
    v
}

impl Var {
    /// Training-mode batch normalisation: normalise with this batch's
    /// statistics, returned for the moving averages. `gamma`/`beta` absent
    /// mean `scale=False`/`center=False`.
    pub fn batch_norm_train(
        &self,
        gamma: Option<&Var>,
        beta: Option<&Var>,
        eps: f32,
    ) -> Result<(Var, BatchStats)> {
        let (rows, c) = check(self, gamma, beta, &[])?;
        let mut mean = vec![0.0f32; c];
        let mut var = vec![0.0f32; c];
        let gv = gamma.map(|g| g.value().values());
        let bv = beta.map(|b| b.value().values());
        let y = fill(self.shape(), |y| {
            k::batch_norm_forward_train(
                rows,
                c,
                &self.value().values(),
                gv.as_deref(),
                bv.as_deref(),
                eps,
                y,
                &mut mean,
                &mut var,
            )
        })?;
        let stats = BatchStats {
            mean: Tensor::from_vec(&[c], mean.clone())?,
            var: Tensor::from_vec(&[c], var.clone())?,
        };
        let out = Var::from_op("BatchNormalization", &inputs(self, gamma, beta), y, || {
            BnBackward {
                training: true,
                rows,
                c,
                x: self.value().clone(),
                gamma: gamma.map(|g| g.value().clone()),
                has_beta: beta.is_some(),
                mean,
                var,
                eps,
            }
        })?;
        Ok((out, stats))
    }

    /// Inference-mode batch normalisation with the given (moving) `mean` and
    /// `var`, which are constants here.
    pub fn batch_norm_inference(
        &self,
        gamma: Option<&Var>,
        beta: Option<&Var>,
        mean: &Tensor,
        var: &Tensor,
        eps: f32,
    ) -> Result<Var> {
        let (rows, c) = check(self, gamma, beta, &[mean, var])?;
        let gv = gamma.map(|g| g.value().values());
        let bv = beta.map(|b| b.value().values());
        let (mv, vv) = (mean.values(), var.values());
        let y = fill(self.shape(), |y| {
            k::batch_norm_forward_inference(
                rows,
                c,
                &self.value().values(),
                gv.as_deref(),
                bv.as_deref(),
                &mv,
                &vv,
                eps,
                y,
            )
        })?;
        Var::from_op("BatchNormalization", &inputs(self, gamma, beta), y, || {
            BnBackward {
                training: false,
                rows,
                c,
                x: self.value().clone(),
                gamma: gamma.map(|g| g.value().clone()),
                has_beta: beta.is_some(),
                mean: mv.to_vec(),
                var: vv.to_vec(),
                eps,
            }
        })
    }
}
