//! The differentiable ops, one file each, forward and backward side by side.
//! Each adds methods to [`Var`](crate::Var).

mod activation;
mod arith;
mod batchnorm;
mod conv2d;
mod dense;
mod dropout;
mod loss;
mod pool;
mod reduce;
mod shape;

pub use batchnorm::BatchStats;
pub use convnet_kernels::conv::Epilogue;
pub use convnet_kernels::Padding;

use convnet_tensor::{Result, Tensor};

/// Run a kernel that fills a fresh buffer of `shape`, and wrap the result.
pub(crate) fn fill(shape: &[usize], f: impl FnOnce(&mut [f32]) -> Result<()>) -> Result<Tensor> {
    let mut out = vec![0.0f32; shape.iter().product()];
    f(&mut out)?;
    Tensor::from_vec(shape, out)
}
