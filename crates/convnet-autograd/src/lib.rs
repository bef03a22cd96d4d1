//! Reverse-mode automatic differentiation over convnet's kernels.
//!
//! A [`Tape`] records one node per op application in the forward pass: the
//! op's backward rule (a small object that holds what backward needs: saved
//! inputs, outputs, argmax indices, masks) and the ids of its inputs.
//! [`Tape::backward`] walks the nodes in reverse order (the recording order is
//! a topological order), accumulating gradients where a value is used twice.
//!
//! Nothing is recorded when no input of an op requires a gradient (frozen
//! layers, constants), nor inside [`no_grad`]: inference holds no backward
//! memory.
//!
//! Each op lives in its own file under `ops/`, its forward and its backward
//! rule side by side.
//!
//! ```
//! use convnet_autograd::{Tape, Var};
//! use convnet_tensor::Tensor;
//!
//! let tape = Tape::new();
//! let x = tape.var(Tensor::from_vec(&[1, 2], vec![1.0, -2.0]).unwrap());
//! let w = tape.var(Tensor::from_vec(&[2, 1], vec![3.0, 4.0]).unwrap());
//! let y = x.dense(&w, None).unwrap().relu().unwrap(); // relu(1*3 - 2*4) = 0
//! let loss = x.mul(&x).unwrap().sum().unwrap().add(&y.sum().unwrap()).unwrap();
//! let grads = tape.backward(&loss).unwrap();
//! assert_eq!(grads.get(&x).unwrap().to_vec(), vec![2.0, -4.0]);
//! assert_eq!(grads.get(&w).unwrap().to_vec(), vec![0.0, 0.0]);
//! ```

mod grad_mode;
mod gradient;
pub mod ops;
pub mod profile;
mod tape;
mod var;

pub use grad_mode::{is_grad_enabled, no_grad};
pub use gradient::{Gradient, OuterProduct};
pub use tape::{Backward, Gradients, Tape};
pub use var::Var;

pub use convnet_tensor::{Result, Tensor, TensorError};
