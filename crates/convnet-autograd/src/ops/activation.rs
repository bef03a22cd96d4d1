//! Activations: ReLU, sigmoid, tanh and softmax (over the last axis). Their
//! backward rules use the saved output.

use convnet_kernels::activation as k;
use convnet_tensor::{Result, Tensor, TensorError};

use super::fill;
use crate::{Backward, Var};

#[derive(Clone, Copy)]
enum Act {
    Relu,
    Sigmoid,
    Tanh,
    Softmax,
}

struct ActBackward {
    act: Act,
    y: Tensor,
}

impl Backward for ActBackward {
    fn name(&self) -> &'static str {
        match self.act {
            Act::Relu => "relu",
            Act::Sigmoid => "sigmoid",
            Act::Tanh => "tanh",
            Act::Softmax => "softmax",
        }
    }

    fn backward(&self, dy: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let (y, dy_v) = (self.y.values(), dy.values());
        let dx = fill(self.y.shape(), |dx| match self.act {
            Act::Relu => k::relu_backward(&y, &dy_v, dx),
            Act::Sigmoid => k::sigmoid_backward(&y, &dy_v, dx),
            Act::Tanh => k::tanh_backward(&y, &dy_v, dx),
            Act::Softmax => {
                let (rows, cols) = rows_cols(self.y.shape())?;
                k::softmax_backward(rows, cols, &y, &dy_v, dx)
            }
        })?;
        Ok(vec![Some(dx)])
    }
}

fn rows_cols(shape: &[usize]) -> Result<(usize, usize)> {
    match shape.last() {
        Some(&cols) if cols > 0 => Ok((shape.iter().product::<usize>() / cols, cols)),
        _ => Err(TensorError::invalid_shape(
            "softmax",
            shape,
            "softmax needs a non-empty last axis",
        )),
    }
}

impl Var {
    fn activation(&self, act: Act) -> Result<Var> {
        let x = self.value().values();
        let y = fill(self.shape(), |y| match act {
            Act::Relu => k::relu_forward(&x, y),
            Act::Sigmoid => k::sigmoid_forward(&x, y),
            Act::Tanh => k::tanh_forward(&x, y),
            Act::Softmax => {
                let (rows, cols) = rows_cols(self.shape())?;
                k::softmax_forward(rows, cols, &x, y)
            }
        })?;
        let saved = y.clone();
        let name = match act {
            Act::Relu => "relu",
            Act::Sigmoid => "sigmoid",
            Act::Tanh => "tanh",
            Act::Softmax => "softmax",
        };
        Var::from_op(name, &[self], y, || ActBackward { act, y: saved })
    }

    /// `max(0, x)`.
    pub fn relu(&self) -> Result<Var> {
        self.activation(Act::Relu)
    }

    /// `1 / (1 + exp(-x))`.
    pub fn sigmoid(&self) -> Result<Var> {
        self.activation(Act::Sigmoid)
    }

    /// `tanh(x)`.
    pub fn tanh(&self) -> Result<Var> {
        self.activation(Act::Tanh)
    }

    /// Softmax over the last axis.
    pub fn softmax(&self) -> Result<Var> {
        self.activation(Act::Softmax)
    }
}
