//! Data for convnet's training loop. Depends only on `convnet-tensor`: its
//! batches are plain `(Tensor, Tensor)` pairs that `convnet-nn`'s `fit`
//! consumes.
//!
//! - [`idx`]: the IDX files of MNIST and Fashion-MNIST (gzip or not).

pub mod idx;

/// What can go wrong reading data. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The file's contents are not what the format requires.
    #[error("{path}: {message}")]
    Format {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] convnet_tensor::TensorError),
}

/// `Result` with a [`DataError`].
pub type Result<T> = std::result::Result<T, DataError>;
