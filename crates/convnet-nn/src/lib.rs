//! Keras-style neural networks for Rust: layers, `Sequential` and functional
//! models, `compile`/`fit`/`evaluate`/`predict`, optimizers, losses,
//! metrics, callbacks, `summary()` and safetensors weights.
//!
//! The basic Cats-vs-Dogs CNN reads almost like its Keras original:
//!
//! ```
//! use convnet_nn::{layers::*, optimizers::Adam, Activation::*, Loss, Metric, Sequential};
//!
//! let mut model = Sequential::new(&[150, 150, 3]);
//! model.add(Conv2D::new(32, (3, 3)).activation(Relu))?;
//! model.add(MaxPooling2D::new((2, 2)))?;
//! model.add(Conv2D::new(64, (3, 3)).activation(Relu))?;
//! model.add(MaxPooling2D::new((2, 2)))?;
//! model.add(Conv2D::new(128, (3, 3)).activation(Relu))?;
//! model.add(MaxPooling2D::new((2, 2)))?;
//! model.add(Flatten::new())?;
//! model.add(Dense::new(128).activation(Relu))?;
//! model.add(Dense::new(512).activation(Relu))?;
//! model.add(Dense::new(1).activation(Sigmoid))?;
//! model.compile(Adam::default(), Loss::BinaryCrossentropy, &[Metric::Accuracy])?;
//! assert_eq!(model.count_params(), 4_894_913);
//! # Ok::<(), convnet_nn::NnError>(())
//! ```
//!
//! `fit` takes any iterator of `(inputs, targets)` batches, so data
//! pipelines need not depend on this crate.

mod activations;
pub mod callbacks;
mod error;
mod graph;
mod history;
mod layer;
pub mod layers;
mod losses;
mod model;
pub mod optimizers;
mod plot;
mod progress;
mod summary;
mod training;
mod weights;
pub use weights::non_finite_report;

pub use activations::Activation;
pub use convnet_kernels::conv::Precision;
pub use error::{NnError, Result};
pub use graph::{set_random_seed, Apply, Input, SymbolicTensor};
pub use history::{History, Logs};
pub use layer::{
    batch_shape, clear_session, unique_name, ForwardCtx, Layer, LayerCore, MaxPoolWindow, Weight,
};
pub use losses::{Loss, Metric};
pub use model::{LayerRef, Model, Sequential};
pub use summary::thousands;
pub use training::{BatchSource, FitOptions, IntoBatch};
