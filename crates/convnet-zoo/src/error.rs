//! [`ZooError`]: what can go wrong building a zoo model or loading its weights.

use convnet_nn::NnError;
use convnet_tensor::TensorError;

/// `Result` with a [`ZooError`].
pub type Result<T> = std::result::Result<T, ZooError>;

/// What can go wrong building a zoo model, loading its weights or decoding
/// its predictions.
#[derive(Debug, thiserror::Error)]
pub enum ZooError {
    /// The options cannot give a model (input too small, no classes, ...).
    #[error("{model}: {message}")]
    Options {
        /// The architecture, e.g. `InceptionV3`.
        model: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A weights file does not fit the model: every offender (missing,
    /// unexpected, wrong shape, wrong dtype) is listed.
    #[error("{path}: {} problem(s) with the weights: {}", problems.len(), problems.join("; "))]
    Weights {
        /// The file.
        path: String,
        /// One line per offending tensor.
        problems: Vec<String>,
    },
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A tensor did not have the shape an operation needs.
    #[error("{0}")]
    Shape(String),
    /// An error from the layers and models crate.
    #[error(transparent)]
    Nn(#[from] NnError),
    /// An error from the tensor crate (reading safetensors, say).
    #[error(transparent)]
    Tensor(#[from] TensorError),
}
