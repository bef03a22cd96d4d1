//! Pretrained architectures for convnet, built exactly as
//! `keras.applications` builds them, with loaders for their weights.
//!
//! - [`inception_v3`]: InceptionV3 (include_top, input_shape, pooling,
//!   classes), layer names as Keras gives them in a fresh session.
//!
//! The names other code relies on, all in [`inception_v3`] (and re-exported
//! here):
//!
//! - [`InceptionV3`]: the options, `InceptionV3::new()` with Keras's
//!   defaults, then `.include_top(bool)`, `.input_shape(h, w, c)`,
//!   `.pooling(Pooling::{None, Avg, Max})`, `.classes(n)`,
//!   `.classifier_activation(a)`, and `.build() -> Result<Model, ZooError>`;
//! - [`weights_path`]`(include_top) -> PathBuf`: where `cargo xtask
//!   fetch-weights` writes the converted ImageNet weights
//!   (`$CONVNET_HOME`, default `~/.cache/convnet`, joined with
//!   `inception_v3_weights_tf_dim_ordering_tf_kernels[_notop].safetensors`);
//! - [`load_weights`]`(&mut model, &path)`: loads such a file, checking
//!   every tensor (presence, shape, dtype), one error listing each offender;
//! - [`preprocess_input`]`(&x)` (`x / 127.5 - 1`) and
//!   [`decode_predictions`]`(&preds, top)` with the ImageNet class table.
//!
//! The mission's transfer-learning model:
//!
//! ```
//! use convnet_nn::layers::{Dense, Dropout, Flatten};
//! use convnet_nn::{Activation, Apply, Model};
//! use convnet_zoo::inception_v3::InceptionV3;
//!
//! let mut base = InceptionV3::new().include_top(false).input_shape(150, 150, 3).build()?;
//! // convnet_zoo::load_weights(&mut base, &convnet_zoo::weights_path(false))?;
//! base.set_trainable(false);
//! let last = base.get_layer("mixed7")?.output();
//! assert_eq!(last.shape(), &[7, 7, 768]);
//! let x = Flatten::new().apply(&last)?;
//! let x = Dense::new(1024).activation(Activation::Relu).apply(&x)?;
//! let x = Dropout::new(0.2).apply(&x)?;
//! let x = Dense::new(1).activation(Activation::Sigmoid).apply(&x)?;
//! let model = Model::new(&base.input(), &x)?;
//! assert_eq!(model.count_params_split(), (38_537_217, 8_975_264));
//! # Ok::<(), convnet_zoo::ZooError>(())
//! ```

mod error;
mod imagenet;
mod imagenet_classes;
pub mod inception_v3;
#[cfg(feature = "keras-h5")]
pub mod keras_h5;
pub mod layers;
mod weights;

pub use error::{Result, ZooError};
pub use imagenet::{decode_predictions, imagenet_class, preprocess_input, Prediction};
pub use inception_v3::{InceptionV3, Pooling};
pub use weights::{convnet_home, load_weights, weights_path, NOTOP_FILE, TOP_FILE};
