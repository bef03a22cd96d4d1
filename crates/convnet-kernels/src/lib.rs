//! Compute kernels of convnet on plain `f32` slices.
//!
//! Every kernel takes row-major slices plus a small geometry struct, never a
//! `Tensor`, so that each one is easy to test against a naive reference and
//! easy to swap behind its function. Activations are NHWC; convolution
//! kernels are HWIO `(kh, kw, in, out)` as Keras stores them; dense kernels
//! are `(in, out)`.
//!
//! Parallel kernels use rayon's current thread pool, so `RAYON_NUM_THREADS`
//! (or an installed pool) decides how many threads they use.

pub mod activation;
pub mod batchnorm;
pub mod conv;
pub mod conv_pool;
pub mod dense;
pub mod dropout;
pub mod gemm;
mod gemm_f16;
mod gemm_packed;
pub mod padding;
pub mod pool;

pub use convnet_tensor::{Result, TensorError};
pub use padding::{Padding, Pads};
