//! The NHWC `f32` tensor of convnet, its shapes, errors and the seeded random
//! number generator every initialiser draws from.
//!
//! Images are channels-last (`(batch, height, width, channels)`), as in Keras's
//! default `channels_last` data format; convolution kernels are HWIO
//! (`(kernel_h, kernel_w, in_channels, out_channels)`), the layout Keras stores.
//!
//! ```
//! use convnet_tensor::{Tensor, Rng};
//! let mut rng = Rng::new(42);
//! let x = Tensor::rand_uniform(&[2, 4, 4, 3], -1.0, 1.0, &mut rng);
//! let b = Tensor::from_vec(&[3], vec![1.0, 2.0, 3.0]).unwrap();
//! let y = x.add(&b).unwrap(); // broadcasts over the channel axis
//! assert_eq!(y.shape(), &[2, 4, 4, 3]);
//! assert_eq!(y.sum_axes(&[0, 1, 2], false).unwrap().shape(), &[3]);
//! ```

mod arith;
mod error;
mod init;
mod reduce;
mod rng;
pub mod safetensors;
mod shape;
mod tensor;

pub use error::{Result, TensorError};
pub use init::{fans, FanMode};
pub use rng::Rng;
pub use shape::Shape;
pub use tensor::Tensor;

/// `ndarray`, re-exported so users can build and inspect tensors without a
/// version mismatch.
pub use ndarray;
