use convnet_tensor::TensorError;

/// `Result` with an [`NnError`].
pub type Result<T> = std::result::Result<T, NnError>;

/// What can go wrong when building, compiling, training or saving a model.
#[derive(Debug, thiserror::Error)]
pub enum NnError {
    /// A tensor operation refused its input.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// The model cannot be built as described (shapes, names, graph).
    #[error("cannot build the model: {0}")]
    Build(String),
    /// The model is used in a way it cannot be (fit before compile, ...).
    #[error("{0}")]
    Usage(String),
    /// A batch from the data does not fit the model.
    #[error("bad batch: {0}")]
    Data(String),
    /// Training stopped on a non-finite loss.
    #[error("loss became {value} at epoch {epoch}, step {step}; training stopped")]
    NonFiniteLoss {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based step within the epoch.
        step: usize,
        /// The loss value.
        value: f32,
    },
    /// Reading or writing weights failed.
    #[error("{path}: {message}")]
    Weights {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// An error from a user's data source or callback.
    #[error("{0}")]
    External(Box<dyn std::error::Error + Send + Sync>),
}

impl NnError {
    pub(crate) fn build(msg: impl Into<String>) -> Self {
        NnError::Build(msg.into())
    }

    pub(crate) fn usage(msg: impl Into<String>) -> Self {
        NnError::Usage(msg.into())
    }
}
