use convnet_tensor::{Result, Tensor, TensorError};

use crate::grad_mode::is_grad_enabled;
use crate::tape::{Backward, Tape};
use crate::Gradient;

/// A value in a computation: a tensor, and, when it depends on a variable of
/// a [`Tape`], the node that produced it.
///
/// Ops are methods on `Var` (`x.conv2d(..)`, `x.relu()`, ...), defined next
/// to their backward rules in [`crate::ops`].
#[derive(Clone)]
pub struct Var {
    value: Tensor,
    node: Option<(Tape, usize)>,
}

impl std::fmt::Debug for Var {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Var")
            .field("value", &self.value)
            .field("requires_grad", &self.requires_grad())
            .finish()
    }
}

impl Var {
    /// A constant: no gradient flows into it.
    pub fn constant(value: Tensor) -> Var {
        Var { value, node: None }
    }

    pub(crate) fn recorded(value: Tensor, tape: Tape, id: usize) -> Var {
        Var {
            value,
            node: Some((tape, id)),
        }
    }

    /// The value.
    pub fn value(&self) -> &Tensor {
        &self.value
    }

    /// The value, taken out.
    pub fn into_value(self) -> Tensor {
        self.value
    }

    /// The shape of the value.
    pub fn shape(&self) -> &[usize] {
        self.value.shape()
    }

    /// True if a gradient can flow into this value.
    pub fn requires_grad(&self) -> bool {
        self.node.is_some()
    }

    /// The same value, cut off from the tape (a constant).
    pub fn detach(&self) -> Var {
        Var::constant(self.value.clone())
    }

    pub(crate) fn node(&self) -> Option<(&Tape, usize)> {
        self.node.as_ref().map(|(t, i)| (t, *i))
    }

    /// Wrap an op's output: record `rule()` on the tape of the inputs that
    /// require a gradient, or return a constant when none does (or inside
    /// `no_grad`). `rule` is only called when the node is recorded, so
    /// nothing is saved for backward otherwise.
    pub fn from_op<B: Backward + 'static>(
        op: &str,
        inputs: &[&Var],
        value: Tensor,
        rule: impl FnOnce() -> B,
    ) -> Result<Var> {
        if !is_grad_enabled() {
            return Ok(Var::constant(value));
        }
        let mut tape: Option<&Tape> = None;
        for v in inputs {
            if let Some((t, _)) = v.node() {
                match tape {
                    None => tape = Some(t),
                    Some(first) if first.same(t) => {}
                    Some(_) => {
                        return Err(TensorError::invalid(
                            op,
                            "inputs were recorded on different tapes",
                        ));
                    }
                }
            }
        }
        let Some(tape) = tape else {
            return Ok(Var::constant(value));
        };
        // Inputs without a node are constants: give them no id; the rule
        // sees them as not needing a gradient through `needs`.
        let mut ids = Vec::with_capacity(inputs.len());
        let mut constant_slots = Vec::new();
        for (i, v) in inputs.iter().enumerate() {
            match v.node() {
                Some((_, id)) => ids.push(id),
                None => constant_slots.push(i),
            }
        }
        let boxed: Box<dyn Backward> = if constant_slots.is_empty() {
            Box::new(rule())
        } else {
            Box::new(SkipConstants {
                inner: rule(),
                n_inputs: inputs.len(),
                constant_slots,
            })
        };
        let id = tape.record(boxed, ids, value.shape());
        Ok(Var::recorded(value, tape.clone(), id))
    }
}

/// Adapts a rule whose op had constant inputs: the tape only knows the
/// recorded inputs, the rule is written for all of them.
struct SkipConstants<B> {
    inner: B,
    n_inputs: usize,
    constant_slots: Vec<usize>,
}

impl<B: Backward> Backward for SkipConstants<B> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn backward(&self, grad_output: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let grads = self.inner.backward(grad_output, &self.full_needs(needs))?;
        Ok(self.recorded_only(grads))
    }

    fn backward_owned(&self, grad_output: Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let grads = self
            .inner
            .backward_owned(grad_output, &self.full_needs(needs))?;
        Ok(self.recorded_only(grads))
    }

    fn backward_gradients(
        &self,
        grad_output: Tensor,
        needs: &[bool],
    ) -> Result<Vec<Option<Gradient>>> {
        let grads = self
            .inner
            .backward_gradients(grad_output, &self.full_needs(needs))?;
        Ok(self.recorded_only(grads))
    }
}

impl<B> SkipConstants<B> {
    /// `needs` of the recorded inputs, widened to every input (constants
    /// need nothing).
    fn full_needs(&self, needs: &[bool]) -> Vec<bool> {
        let mut full_needs = Vec::with_capacity(self.n_inputs);
        let mut it = needs.iter();
        for i in 0..self.n_inputs {
            if self.constant_slots.contains(&i) {
                full_needs.push(false);
            } else {
                full_needs.push(*it.next().unwrap_or(&false));
            }
        }
        full_needs
    }

    /// The gradients of the recorded inputs only.
    fn recorded_only<G>(&self, grads: Vec<Option<G>>) -> Vec<Option<G>> {
        grads
            .into_iter()
            .enumerate()
            .filter(|(i, _)| !self.constant_slots.contains(i))
            .map(|(_, g)| g)
            .collect()
    }
}
