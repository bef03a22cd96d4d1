use crate::Shape;

/// `Result` with a [`TensorError`].
pub type Result<T> = std::result::Result<T, TensorError>;

/// Every way a tensor operation can refuse its input. Each message names the
/// operation and the shapes involved, so a user can find the fault.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TensorError {
    /// Two operands whose shapes do not fit together.
    #[error("{op}: shapes {lhs} and {rhs} do not match{}", fmt_detail(.detail))]
    ShapeMismatch {
        /// The operation that failed.
        op: String,
        /// Shape of the first operand.
        lhs: Shape,
        /// Shape of the second operand.
        rhs: Shape,
        /// What was expected, if more can be said.
        detail: String,
    },
    /// One shape that the operation cannot take.
    #[error("{op}: invalid shape {shape}: {reason}")]
    InvalidShape {
        /// The operation that failed.
        op: String,
        /// The offending shape.
        shape: Shape,
        /// Why it is refused.
        reason: String,
    },
    /// A buffer whose length disagrees with the shape it should hold.
    #[error("{op}: {what} has {got} elements but shape {shape} needs {expected}")]
    LengthMismatch {
        /// The operation that failed.
        op: String,
        /// Which buffer.
        what: String,
        /// Its expected shape.
        shape: Shape,
        /// Elements the shape needs.
        expected: usize,
        /// Elements found.
        got: usize,
    },
    /// An axis outside the tensor's rank.
    #[error("{op}: axis {axis} is out of range for shape {shape}")]
    AxisOutOfRange {
        /// The operation that failed.
        op: String,
        /// The requested axis.
        axis: usize,
        /// The tensor's shape.
        shape: Shape,
    },
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A file's contents are not what its format requires.
    #[error("{path}: {}{message}", tensor.as_ref().map(|t| format!("tensor \"{t}\": ")).unwrap_or_default())]
    Format {
        /// The file (or other origin) at fault.
        path: String,
        /// The tensor at fault, if one is.
        tensor: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// Any other invalid argument (a rate outside [0, 1), a zero stride...).
    #[error("{op}: {message}")]
    InvalidArgument {
        /// The operation that failed.
        op: String,
        /// What is wrong.
        message: String,
    },
}

fn fmt_detail(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

impl TensorError {
    /// A [`TensorError::ShapeMismatch`] with an explanation.
    pub fn mismatch(op: &str, lhs: &[usize], rhs: &[usize], detail: impl Into<String>) -> Self {
        TensorError::ShapeMismatch {
            op: op.to_string(),
            lhs: Shape::from(lhs),
            rhs: Shape::from(rhs),
            detail: detail.into(),
        }
    }

    /// A [`TensorError::InvalidShape`].
    pub fn invalid_shape(op: &str, shape: &[usize], reason: impl Into<String>) -> Self {
        TensorError::InvalidShape {
            op: op.to_string(),
            shape: Shape::from(shape),
            reason: reason.into(),
        }
    }

    /// A [`TensorError::LengthMismatch`] for buffer `what` that should hold `shape`.
    pub fn length(op: &str, what: &str, shape: &[usize], got: usize) -> Self {
        TensorError::LengthMismatch {
            op: op.to_string(),
            what: what.to_string(),
            shape: Shape::from(shape),
            expected: shape.iter().product(),
            got,
        }
    }

    /// A [`TensorError::InvalidArgument`].
    pub fn invalid(op: &str, message: impl Into<String>) -> Self {
        TensorError::InvalidArgument {
            op: op.to_string(),
            message: message.into(),
        }
    }

    /// A [`TensorError::Format`] for `path` (and `tensor`, if any).
    pub fn format(path: &str, tensor: Option<&str>, message: impl Into<String>) -> Self {
        TensorError::Format {
            path: path.to_string(),
            tensor: tensor.map(str::to_string),
            message: message.into(),
        }
    }

    /// A [`TensorError::Io`] for `path`.
    pub fn io(path: &str, err: impl std::fmt::Display) -> Self {
        TensorError::Io {
            path: path.to_string(),
            message: err.to_string(),
        }
    }

    /// Check that buffer `what` has exactly the elements `shape` needs.
    pub fn check_len(op: &str, what: &str, shape: &[usize], got: usize) -> Result<()> {
        if shape.iter().product::<usize>() == got {
            Ok(())
        } else {
            Err(Self::length(op, what, shape, got))
        }
    }
}
