//! Data for convnet's training loop. Depends only on `convnet-tensor`: its
//! batches are plain `(Tensor, Tensor)` pairs that `convnet-nn`'s `fit`
//! consumes.
//!
//! - [`idx`]: the IDX files of MNIST and Fashion-MNIST (gzip or not), read
//!   as NHWC image tensors `(n, rows, cols, 1)` and label tensors `(n,)`.
//!
//! Every error is a [`DataError`] whose message starts with the file at
//! fault.
//!
//! ```no_run
//! use std::path::Path;
//! use convnet_data::idx::load_mnist_dir;
//! // `apt-get install dataset-fashion-mnist` puts the files here.
//! let dir = Path::new("/usr/share/datasets/fashion-mnist");
//! let (x_train, y_train) = load_mnist_dir(dir, "train")?;
//! let x_train = x_train.map(|v| v / 255.0);
//! assert_eq!(x_train.shape(), &[60000, 28, 28, 1]);
//! assert_eq!(y_train.shape(), &[60000]);
//! # Ok::<(), convnet_data::DataError>(())
//! ```

pub mod augment;
pub mod directory;
mod fast;
pub mod idx;
mod jpeg;
pub mod preview;
mod simd;

pub use augment::{FillMode, ImageDataGenerator, TransformParams};
pub use directory::{ClassMode, ColorMode, DirectoryIterator, FlowOptions, Interpolation};
pub use preview::augment_preview;

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
