//! Shape ops: reshape, flatten and concatenation. Their backward rules move
//! gradients without arithmetic.

use convnet_tensor::{Result, Tensor, TensorError};

use crate::{Backward, Var};

struct Reshape {
    input_shape: Vec<usize>,
}

impl Backward for Reshape {
    fn name(&self) -> &'static str {
        "reshape"
    }

    fn backward(&self, g: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.reshape(&self.input_shape)?)])
    }
}

struct Concat {
    axis: usize,
    sizes: Vec<usize>,
}

impl Backward for Concat {
    fn name(&self) -> &'static str {
        "concat"
    }

    fn backward(&self, g: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let mut start = 0;
        let mut out = Vec::with_capacity(self.sizes.len());
        for (&size, &need) in self.sizes.iter().zip(needs) {
            out.push(if need {
                Some(g.slice_axis(self.axis, start, start + size)?.contiguous())
            } else {
                None
            });
            start += size;
        }
        Ok(out)
    }
}

impl Var {
    /// The same elements under a new shape (`usize::MAX` for one inferred
    /// dimension).
    pub fn reshape(&self, shape: &[usize]) -> Result<Var> {
        let value = self.value().reshape(shape)?;
        Var::from_op("reshape", &[self], value, || Reshape {
            input_shape: self.shape().to_vec(),
        })
    }

    /// Keras's `Flatten`: `(n, ...)` to `(n, product of the rest)`.
    pub fn flatten(&self) -> Result<Var> {
        let value = self.value().flatten_batch()?;
        Var::from_op("flatten", &[self], value, || Reshape {
            input_shape: self.shape().to_vec(),
        })
    }

    /// Join `vars` along `axis` (Keras's `Concatenate`; InceptionV3's
    /// `mixed` blocks join along channels, axis 3).
    pub fn concat(vars: &[&Var], axis: usize) -> Result<Var> {
        if vars.is_empty() {
            return Err(TensorError::invalid("concat", "nothing to concatenate"));
        }
        let values: Vec<&Tensor> = vars.iter().map(|v| v.value()).collect();
        let value = Tensor::concat(&values, axis)?;
        Var::from_op("concat", vars, value, || Concat {
            axis,
            sizes: vars.iter().map(|v| v.shape()[axis]).collect(),
        })
    }
}
