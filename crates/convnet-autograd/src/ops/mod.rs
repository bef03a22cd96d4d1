//! The differentiable ops, one file each, forward and backward side by side.
//! Each adds methods to [`Var`](crate::Var).

mod activation;
mod arith;
mod batchnorm;
mod conv2d;
mod conv_pool;
mod dense;
mod dropout;
mod loss;
mod pool;
mod reduce;
mod shape;

pub use batchnorm::BatchStats;
pub use convnet_kernels::conv::{Epilogue, Precision};
pub use convnet_kernels::Padding;

use convnet_tensor::{Result, Tensor};
use rayon::iter::ParallelExtend;

/// Run a kernel that fills a fresh buffer of `shape`, and wrap the result.
pub(crate) fn fill(shape: &[usize], f: impl FnOnce(&mut [f32]) -> Result<()>) -> Result<Tensor> {
    let mut out = zeros(shape.iter().product());
    f(&mut out)?;
    Tensor::from_vec(shape, out)
}

/// A fresh buffer of `n` elements that `f` writes in full: no zeroing pass
/// before it. `f` must be a kernel documented to write every element of its
/// (possibly uninitialized) output when it returns `Ok`, such as the
/// `_uninit` kernels.
pub(crate) fn uninit_vec<T>(
    n: usize,
    f: impl FnOnce(&mut [std::mem::MaybeUninit<T>]) -> Result<()>,
) -> Result<Vec<T>> {
    let mut out = Vec::with_capacity(n);
    f(&mut out.spare_capacity_mut()[..n])?;
    // SAFETY: on `Ok`, `f` has written all `n` elements (its contract).
    unsafe { out.set_len(n) };
    Ok(out)
}

/// Elements from which a fresh buffer is zeroed by all threads.
const PARALLEL_ZEROS: usize = 1 << 18;

/// A zeroed buffer of `n` floats. Large ones are written by every thread
/// in parallel: zeroing (and the kernel's first touch of fresh pages) of an
/// output of tens of megabytes otherwise runs on one core while the others
/// wait.
fn zeros(n: usize) -> Vec<f32> {
    if n < PARALLEL_ZEROS {
        return vec![0.0f32; n];
    }
    let mut out = Vec::with_capacity(n);
    out.par_extend(rayon::iter::repeat_n(0.0f32, n));
    out
}
