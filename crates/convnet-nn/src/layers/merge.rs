use convnet_autograd::Var;
use convnet_tensor::Rng;

use crate::layer::shape_error;
use crate::{ForwardCtx, Layer, LayerCore, Result};

/// Keras's `Concatenate`: join inputs along `axis` (default the last, the
/// channels). `axis` counts the batch axis, as in Keras (`-1` is written as
/// `Concatenate::new()`).
#[derive(Debug, Clone)]
pub struct Concatenate {
    core: LayerCore,
    /// Axis in the shape without the batch axis.
    axis: Option<usize>,
}

impl Concatenate {
    /// Concatenate along the last axis.
    pub fn new() -> Self {
        Concatenate {
            core: LayerCore::new(None),
            axis: None,
        }
    }

    /// Concatenate along `axis` (counting the batch axis as 0, as Keras).
    pub fn axis(mut self, axis: usize) -> Self {
        self.axis = Some(axis.saturating_sub(1));
        self
    }

    /// An explicit name.
    pub fn name(mut self, name: &str) -> Self {
        self.core.name = name.to_string();
        self
    }
}

impl Default for Concatenate {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer for Concatenate {
    core_accessors!();

    fn class_name(&self) -> &'static str {
        "Concatenate"
    }

    fn name_prefix(&self) -> &'static str {
        "concatenate"
    }

    fn build(&mut self, input_shapes: &[Vec<usize>], _rng: &mut Rng) -> Result<Vec<usize>> {
        if input_shapes.len() < 2 {
            return Err(shape_error(
                self,
                input_shapes,
                "Concatenate needs at least two inputs",
            ));
        }
        let first = &input_shapes[0];
        let axis = self.axis.unwrap_or(first.len().saturating_sub(1));
        if axis >= first.len() {
            return Err(shape_error(
                self,
                input_shapes,
                &format!("axis {} is out of range", axis + 1),
            ));
        }
        let mut out = first.clone();
        for s in &input_shapes[1..] {
            let agree = s.len() == first.len()
                && s.iter()
                    .zip(first)
                    .enumerate()
                    .all(|(i, (a, b))| i == axis || a == b);
            if !agree {
                return Err(shape_error(
                    self,
                    input_shapes,
                    &format!(
                        "all dimensions except the concatenation axis ({}) must match",
                        axis + 1
                    ),
                ));
            }
            out[axis] += s[axis];
        }
        self.axis = Some(axis);
        Ok(out)
    }

    fn forward(&self, inputs: &[Var], _params: &[Var], _ctx: &mut ForwardCtx<'_>) -> Result<Var> {
        let refs: Vec<&Var> = inputs.iter().collect();
        let axis = self.axis.unwrap_or(inputs[0].shape().len() - 2) + 1;
        Ok(Var::concat(&refs, axis)?)
    }
}

/// Keras's `Add`: the elementwise sum of inputs of one shape.
#[derive(Debug, Clone)]
pub struct Add {
    core: LayerCore,
}

impl Add {
    /// The layer.
    pub fn new() -> Self {
        Add {
            core: LayerCore::new(None),
        }
    }

    /// An explicit name.
    pub fn name(mut self, name: &str) -> Self {
        self.core.name = name.to_string();
        self
    }
}

impl Default for Add {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer for Add {
    core_accessors!();

    fn class_name(&self) -> &'static str {
        "Add"
    }

    fn name_prefix(&self) -> &'static str {
        "add"
    }

    fn build(&mut self, input_shapes: &[Vec<usize>], _rng: &mut Rng) -> Result<Vec<usize>> {
        if input_shapes.len() < 2 {
            return Err(shape_error(
                self,
                input_shapes,
                "Add needs at least two inputs",
            ));
        }
        if input_shapes.iter().any(|s| s != &input_shapes[0]) {
            return Err(shape_error(
                self,
                input_shapes,
                "all inputs must have the same shape",
            ));
        }
        Ok(input_shapes[0].clone())
    }

    fn forward(&self, inputs: &[Var], _params: &[Var], _ctx: &mut ForwardCtx<'_>) -> Result<Var> {
        let mut acc = inputs[0].clone();
        for x in &inputs[1..] {
            acc = acc.add(x)?;
        }
        Ok(acc)
    }
}
