//! convnet: Keras-style convolutional neural networks in Rust.
//!
//! This umbrella crate re-exports the layered crates:
//! - [`tensor`] (`convnet-tensor`): the NHWC `f32` tensor, shapes, errors, seeded RNG;
//! - [`kernels`] (`convnet-kernels`): im2col/GEMM convolution, pooling, dense,
//!   activations, batch normalisation, dropout, on plain slices;
//! - [`autograd`] (`convnet-autograd`): reverse-mode automatic differentiation;
//! - [`nn`] (`convnet-nn`): Keras-style layers, models, training, weights;
//! - [`data`] (`convnet-data`): image folders with augmentation, IDX files.
//! - [`zoo`] (`convnet-zoo`): pretrained architectures (InceptionV3).
//!
//! `use convnet::prelude::*;` brings the everyday names into scope.

/// With the default `mimalloc` feature, convnet programs allocate through
/// mimalloc: training frees and reallocates buffers of tens of megabytes
/// every step, which glibc's malloc returns to the kernel each time (page
/// faults and zeroing on every step); mimalloc reuses them. Disable default
/// features to bring your own `#[global_allocator]`.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use convnet_autograd as autograd;
pub use convnet_data as data;
pub use convnet_kernels as kernels;
pub use convnet_nn as nn;
pub use convnet_tensor as tensor;
pub use convnet_zoo as zoo;

/// The everyday names.
pub mod prelude {
    pub use convnet_autograd::{no_grad, Tape, Var};
    pub use convnet_kernels::{conv::Epilogue, Padding};
    pub use convnet_nn::layers::*;
    pub use convnet_nn::optimizers::{Adam, Optimizer, RMSprop, SGD};
    pub use convnet_nn::{
        Activation, Apply, FitOptions, History, Input, Loss, Metric, Model, Sequential,
    };
    pub use convnet_tensor::{Rng, Shape, Tensor, TensorError};
}
