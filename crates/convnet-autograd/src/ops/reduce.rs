//! Reductions to a scalar: sum and mean of all elements.

use convnet_tensor::{Result, Tensor};

use crate::{Backward, Var};

struct Fill {
    shape: Vec<usize>,
    scale: f32,
    name: &'static str,
}

impl Backward for Fill {
    fn name(&self) -> &'static str {
        self.name
    }

    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(Tensor::full(
            &self.shape,
            g.item()? * self.scale,
        ))])
    }
}

impl Var {
    /// Sum of all elements, a rank-0 value.
    pub fn sum(&self) -> Result<Var> {
        let value = Tensor::scalar(self.value().sum());
        Var::from_op("sum", &[self], value, || Fill {
            shape: self.shape().to_vec(),
            scale: 1.0,
            name: "sum",
        })
    }

    /// Mean of all elements, a rank-0 value.
    pub fn mean(&self) -> Result<Var> {
        let n = self.value().len();
        if n == 0 {
            return Err(convnet_tensor::TensorError::invalid_shape(
                "mean",
                self.shape(),
                "mean of an empty tensor",
            ));
        }
        let value = Tensor::scalar(self.value().mean());
        Var::from_op("mean", &[self], value, || Fill {
            shape: self.shape().to_vec(),
            scale: 1.0 / n as f32,
            name: "mean",
        })
    }
}
