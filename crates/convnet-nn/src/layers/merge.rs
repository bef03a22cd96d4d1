use convnet_autograd::Var;
use convnet_tensor::{Rng, Tensor};
use rayon::prelude::*;

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
        if axis + 1 == inputs[0].shape().len() && !inputs.iter().any(Var::requires_grad) {
            if let Some(y) = concat_last_constant(inputs) {
                return Ok(Var::constant(y?));
            }
        }
        Ok(Var::concat(&refs, axis)?)
    }
}

/// Rows of the output one rayon task copies at least (a row is one pixel's
/// channels: a few KiB).
const CONCAT_ROWS_PER_TASK: usize = 64;

/// Concatenation along the last axis of inputs that need no gradient (a
/// frozen base, `predict`): every thread copies whole output rows into a
/// buffer that is written once (no zeroing pass). `None` when the inputs'
/// other dimensions disagree (left to `Var::concat` to report).
fn concat_last_constant(inputs: &[Var]) -> Option<Result<Tensor>> {
    let first = inputs.first()?.shape();
    let (_, lead) = first.split_last()?;
    let mut widths = Vec::with_capacity(inputs.len());
    for v in inputs {
        let (&w, l) = v.shape().split_last()?;
        if l != lead {
            return None;
        }
        widths.push(w);
    }
    let outer: usize = lead.iter().product();
    let total: usize = widths.iter().sum();
    let parts: Vec<_> = inputs.iter().map(|v| v.value().values()).collect();
    let mut data: Vec<f32> = Vec::with_capacity(outer * total);
    if total > 0 {
        data.spare_capacity_mut()[..outer * total]
            .par_chunks_mut(total)
            .with_min_len(CONCAT_ROWS_PER_TASK)
            .enumerate()
            .for_each(|(o, row)| {
                let mut at = 0;
                for (vals, &w) in parts.iter().zip(&widths) {
                    let src = &vals[o * w..(o + 1) * w];
                    for (d, &s) in row[at..at + w].iter_mut().zip(src) {
                        d.write(s);
                    }
                    at += w;
                }
            });
    }
    // SAFETY: the rows above cover all `outer * total` elements (each row
    // is `total` long and its parts' widths sum to `total`), each written
    // once.
    unsafe { data.set_len(outer * total) };
    let mut shape = lead.to_vec();
    shape.push(total);
    Some(Tensor::from_vec(&shape, data).map_err(Into::into))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn var(shape: &[usize], seed: usize) -> Var {
        let n: usize = shape.iter().product();
        let v = (0..n).map(|i| ((i * 7 + seed * 13) % 23) as f32 - 11.0);
        Var::constant(Tensor::from_vec(shape, v.collect()).expect("shape"))
    }

    #[test]
    fn constant_concat_matches_tensor_concat() {
        for (lead, widths) in [
            (vec![2, 3, 5], vec![4, 1, 7]),
            (vec![1, 1, 1], vec![3, 2]),
            (vec![70, 3], vec![5, 0, 9]),
            (vec![3], vec![2, 6]),
        ] {
            let vars: Vec<Var> = widths
                .iter()
                .enumerate()
                .map(|(i, &w)| {
                    let mut s = lead.clone();
                    s.push(w);
                    var(&s, i)
                })
                .collect();
            let got = concat_last_constant(&vars)
                .expect("shapes agree")
                .expect("concat");
            let values: Vec<&Tensor> = vars.iter().map(Var::value).collect();
            let want = Tensor::concat(&values, lead.len()).expect("concat");
            assert_eq!(got.shape(), want.shape());
            assert_eq!(got.values(), want.values(), "{lead:?} {widths:?}");
        }
    }

    #[test]
    fn constant_concat_leaves_disagreeing_shapes_to_var_concat() {
        let vars = [var(&[2, 3, 4], 0), var(&[2, 4, 4], 1)];
        assert!(concat_last_constant(&vars).is_none());
    }
}
