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
static GLOBAL: keep::KeepMemory = keep::KeepMemory;

#[cfg(feature = "mimalloc")]
mod keep {
    use std::alloc::{GlobalAlloc, Layout};
    use std::sync::atomic::{AtomicBool, Ordering};

    use mimalloc::MiMalloc;

    /// mimalloc with purging turned off: by default it hands freed memory
    /// back to the kernel after 10-100 ms, and a training step is longer
    /// than that, so every step faulted its large buffers in again (52,000
    /// page faults in `cargo xtask bench inception`, 640 with purging off).
    /// The process keeps its peak footprint instead, which it needs again
    /// on the next step anyway.
    pub struct KeepMemory;

    static SET: AtomicBool = AtomicBool::new(false);

    /// `mi_option_purge_delay` in mimalloc's option enum.
    const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

    #[inline]
    fn keep_memory() {
        if !SET.load(Ordering::Relaxed) {
            SET.store(true, Ordering::Relaxed);
            // SAFETY: sets one integer option, read by mimalloc at its next
            // purge decision; `-1` means never purge.
            unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, -1) }
        }
    }

    // SAFETY: every call is forwarded to mimalloc unchanged.
    unsafe impl GlobalAlloc for KeepMemory {
        #[inline]
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            keep_memory();
            MiMalloc.alloc(layout)
        }

        #[inline]
        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            keep_memory();
            MiMalloc.alloc_zeroed(layout)
        }

        #[inline]
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            MiMalloc.dealloc(ptr, layout)
        }

        #[inline]
        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            MiMalloc.realloc(ptr, layout, new_size)
        }
    }
}

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
        Activation, Apply, FitOptions, History, Input, Loss, Metric, Model, Precision, Sequential,
    };
    pub use convnet_tensor::{Rng, Shape, Tensor, TensorError};
}
