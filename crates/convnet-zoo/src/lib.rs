//! Pretrained architectures for convnet, built exactly as
//! `keras.applications` builds them, with loaders for their weights.
//!
//! - [`inception_v3`]: InceptionV3 (include_top, input_shape, pooling,
//!   classes), layer names as Keras gives them in a fresh session.
