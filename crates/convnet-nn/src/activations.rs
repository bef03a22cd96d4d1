//! Keras's activation functions by name.

use convnet_autograd::Var;

use crate::{NnError, Result};

/// An activation, as Keras's `activation=` argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Activation {
    /// Identity (`None` / `"linear"` in Keras).
    #[default]
    Linear,
    /// `"relu"`.
    Relu,
    /// `"sigmoid"`.
    Sigmoid,
    /// `"tanh"`.
    Tanh,
    /// `"softmax"` over the last axis.
    Softmax,
}

impl Activation {
    /// Apply to a value.
    pub fn apply(self, x: &Var) -> Result<Var> {
        Ok(match self {
            Activation::Linear => x.clone(),
            Activation::Relu => x.relu()?,
            Activation::Sigmoid => x.sigmoid()?,
            Activation::Tanh => x.tanh()?,
            Activation::Softmax => x.softmax()?,
        })
    }

    /// Keras's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Activation::Linear => "linear",
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Softmax => "softmax",
        }
    }
}

impl std::str::FromStr for Activation {
    type Err = NnError;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "linear" | "" => Activation::Linear,
            "relu" => Activation::Relu,
            "sigmoid" => Activation::Sigmoid,
            "tanh" => Activation::Tanh,
            "softmax" => Activation::Softmax,
            other => {
                return Err(NnError::build(format!(
                    "unknown activation \"{other}\" (linear, relu, sigmoid, tanh, softmax)"
                )))
            }
        })
    }
}
