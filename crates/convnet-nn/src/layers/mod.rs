//! Keras's layers. Each builds its weights from its input shapes (batch axis
//! excluded) and runs its forward pass on autograd values.

macro_rules! core_accessors {
    () => {
        fn core(&self) -> &$crate::LayerCore {
            &self.core
        }
        fn core_mut(&mut self) -> &mut $crate::LayerCore {
            &mut self.core
        }
    };
}

mod activation;
mod batch_norm;
mod conv2d;
mod dense;
mod dropout;
mod flatten;
mod merge;
mod pooling;

pub use activation::ActivationLayer;
pub use batch_norm::BatchNormalization;
pub use conv2d::Conv2D;
pub use dense::Dense;
pub use dropout::Dropout;
pub use flatten::Flatten;
pub use merge::{Add, Concatenate};
pub use pooling::{AveragePooling2D, GlobalAveragePooling2D, MaxPooling2D};
