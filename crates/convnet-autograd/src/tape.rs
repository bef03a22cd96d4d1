use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use convnet_tensor::{Result, Tensor, TensorError};

use crate::{Gradient, Var};

/// The backward rule of one op application. It holds whatever the forward
/// pass saved for it.
pub trait Backward {
    /// The op's name, for error messages.
    fn name(&self) -> &'static str;

    /// Given the gradient of the loss with respect to the op's output, return
    /// the gradient with respect to each input, in input order. `needs[i]`
    /// says whether input `i` wants one; return `None` where it does not, and
    /// skip the work.
    fn backward(&self, grad_output: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>>;

    /// [`Backward::backward`] given the gradient by value, which the tape
    /// no longer needs: a rule that can reuse its buffer (a mask applied in
    /// place) overrides this and saves an allocation the size of the
    /// output. The default borrows it.
    fn backward_owned(&self, grad_output: Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        self.backward(&grad_output, needs)
    }

    /// [`Backward::backward_owned`], with the input gradients in either
    /// form of [`Gradient`]: a rule whose gradient has a cheaper factored
    /// form (a `Dense` kernel's `x^T dy`) overrides this to hand it over
    /// unevaluated. The default wraps the dense gradients.
    fn backward_gradients(
        &self,
        grad_output: Tensor,
        needs: &[bool],
    ) -> Result<Vec<Option<Gradient>>> {
        Ok(self
            .backward_owned(grad_output, needs)?
            .into_iter()
            .map(|g| g.map(Gradient::dense))
            .collect())
    }
}

struct Node {
    /// `None` for a leaf (a variable created by [`Tape::var`]).
    op: Option<Box<dyn Backward>>,
    inputs: Vec<usize>,
    shape: Vec<usize>,
}

struct Inner {
    id: u64,
    nodes: Vec<Node>,
}

/// A recording of the forward pass, to be played backwards.
///
/// A tape is cheap to clone (a shared handle). Use one tape per training
/// step: create the parameters' variables on it with [`Tape::var`], run the
/// forward pass, call [`Tape::backward`] on the loss, then drop it.
#[derive(Clone)]
pub struct Tape {
    inner: Rc<RefCell<Inner>>,
}

static NEXT_TAPE: AtomicU64 = AtomicU64::new(1);

impl Default for Tape {
    fn default() -> Self {
        Self::new()
    }
}

impl Tape {
    /// An empty tape.
    pub fn new() -> Self {
        Tape {
            inner: Rc::new(RefCell::new(Inner {
                id: NEXT_TAPE.fetch_add(1, Ordering::Relaxed),
                nodes: Vec::new(),
            })),
        }
    }

    /// A variable whose gradient [`Tape::backward`] will compute (a
    /// trainable parameter, or an input we differentiate with respect to).
    pub fn var(&self, value: Tensor) -> Var {
        let id = self.push(Node {
            op: None,
            inputs: Vec::new(),
            shape: value.shape().to_vec(),
        });
        Var::recorded(value, self.clone(), id)
    }

    /// Number of recorded nodes (leaves included).
    pub fn len(&self) -> usize {
        self.inner.borrow().nodes.len()
    }

    /// True if nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(crate) fn id(&self) -> u64 {
        self.inner.borrow().id
    }

    pub(crate) fn same(&self, other: &Tape) -> bool {
        Rc::ptr_eq(&self.inner, &other.inner)
    }

    fn push(&self, node: Node) -> usize {
        let mut inner = self.inner.borrow_mut();
        inner.nodes.push(node);
        inner.nodes.len() - 1
    }

    pub(crate) fn record(
        &self,
        op: Box<dyn Backward>,
        inputs: Vec<usize>,
        shape: &[usize],
    ) -> usize {
        self.push(Node {
            op: Some(op),
            inputs,
            shape: shape.to_vec(),
        })
    }

    /// Gradients of the scalar `loss` with respect to every variable on this
    /// tape that it depends on. A non-scalar `loss` is differentiated as the
    /// sum of its elements (its seed gradient is all ones).
    ///
    /// A variable's gradient may stay factored (see [`Gradient`]) when it
    /// comes from one op that hands it over so and nothing else: a
    /// gradient summed from several uses, or flowing on into another op,
    /// is materialized. [`Gradients::get`] and [`Gradients::take`] give
    /// tensors either way; [`Gradients::take_gradient`] gives the form.
    pub fn backward(&self, loss: &Var) -> Result<Gradients> {
        self.backward_with(loss, Tensor::ones(loss.shape()))
    }

    /// Gradients given the seed gradient `grad` of `output` (same shape).
    pub fn backward_with(&self, output: &Var, grad: Tensor) -> Result<Gradients> {
        let op = "Tape::backward";
        let (tape, root) = output.node().ok_or_else(|| {
            TensorError::invalid(op, "the output does not depend on any variable of a tape (was it computed under no_grad, or from constants only?)")
        })?;
        if !tape.same(self) {
            return Err(TensorError::invalid(
                op,
                "the output was recorded on another tape",
            ));
        }
        if grad.shape() != output.shape() {
            return Err(TensorError::mismatch(
                op,
                output.shape(),
                grad.shape(),
                "the seed gradient must have the output's shape",
            ));
        }
        // Take the nodes out so backward rules may run while the tape is
        // borrowed by nobody; the tape is spent afterwards.
        let mut nodes = std::mem::take(&mut self.inner.borrow_mut().nodes);
        let mut grads: Vec<Option<Gradient>> = vec![None; nodes.len()];
        grads[root] = Some(Gradient::dense(grad));
        // Which nodes lead to the root at all.
        let mut live = vec![false; nodes.len()];
        live[root] = true;
        for id in (0..=root).rev() {
            if live[id] {
                for &i in &nodes[id].inputs {
                    live[i] = true;
                }
            }
        }
        let mut leaves = HashMap::new();
        for id in (0..=root).rev() {
            // Each rule is dropped once it has run, and with it what it
            // saved from the forward pass: memory falls as backward goes.
            let rule = nodes[id].op.take();
            let node = &nodes[id];
            let Some(g) = grads[id].take() else { continue };
            let Some(rule) = rule else {
                leaves.insert(
                    id,
                    Entry {
                        grad: g,
                        dense: OnceCell::new(),
                    },
                );
                continue;
            };
            // An op's backward rule takes its output gradient dense.
            let g = g.into_tensor()?;
            let needs: Vec<bool> = node.inputs.iter().map(|&i| live[i]).collect();
            let section = if crate::profile::enabled() {
                format!("backward {} {:?}", rule.name(), node.shape)
            } else {
                String::new()
            };
            let input_grads =
                crate::profile::timed(&section, || rule.backward_gradients(g, &needs))?;
            if input_grads.len() != node.inputs.len() {
                return Err(TensorError::invalid(
                    rule.name(),
                    format!(
                        "backward returned {} gradients for {} inputs",
                        input_grads.len(),
                        node.inputs.len()
                    ),
                ));
            }
            for (&input, ig) in node.inputs.iter().zip(input_grads) {
                let Some(ig) = ig else { continue };
                if ig.shape() != nodes[input].shape.as_slice() {
                    return Err(TensorError::mismatch(
                        rule.name(),
                        &nodes[input].shape,
                        ig.shape(),
                        "backward produced a gradient of the wrong shape",
                    ));
                }
                match &mut grads[input] {
                    Some(acc) => acc.add_assign(ig)?,
                    slot @ None => *slot = Some(ig),
                }
            }
        }
        Ok(Gradients {
            tape: self.id(),
            grads: leaves,
        })
    }
}

/// Gradients of a loss with respect to the variables of one tape.
pub struct Gradients {
    tape: u64,
    grads: HashMap<usize, Entry>,
}

/// One variable's gradient, and its dense form once asked for.
struct Entry {
    grad: Gradient,
    dense: OnceCell<Tensor>,
}

impl Entry {
    fn tensor(&self) -> &Tensor {
        if let Some(t) = self.grad.as_dense() {
            return t;
        }
        self.dense.get_or_init(|| materialize(&self.grad))
    }
}

/// The dense form of a gradient built by the tape. Its factors were checked
/// when it was made (matrices with the same number of rows, contiguous),
/// which is all the computation can fail on.
fn materialize(grad: &Gradient) -> Tensor {
    grad.to_tensor()
        .expect("a factored gradient's factors are checked when it is made")
}

impl Gradients {
    fn entry(&self, var: &Var) -> Option<&Entry> {
        let (tape, id) = var.node()?;
        if tape.id() != self.tape {
            return None;
        }
        self.grads.get(&id)
    }

    /// The gradient of `var` as a tensor (a factored one is computed the
    /// first time), or `None` if the loss does not depend on it (or it
    /// belongs to another tape).
    pub fn get(&self, var: &Var) -> Option<&Tensor> {
        self.entry(var).map(Entry::tensor)
    }

    /// The gradient of `var` in the form the tape produced it.
    pub fn gradient(&self, var: &Var) -> Option<&Gradient> {
        self.entry(var).map(|e| &e.grad)
    }

    /// Take the gradient of `var` out, as a tensor.
    pub fn take(&mut self, var: &Var) -> Option<Tensor> {
        let entry = self.take_entry(var)?;
        Some(match entry.dense.into_inner() {
            Some(t) => t,
            None => match entry.grad.as_dense() {
                Some(t) => t.clone(),
                None => materialize(&entry.grad),
            },
        })
    }

    /// Take the gradient of `var` out in the form the tape produced it
    /// (possibly factored: see [`Gradient`]).
    pub fn take_gradient(&mut self, var: &Var) -> Option<Gradient> {
        self.take_entry(var).map(|e| e.grad)
    }

    fn take_entry(&mut self, var: &Var) -> Option<Entry> {
        let (tape, id) = var.node()?;
        if tape.id() != self.tape {
            return None;
        }
        self.grads.remove(&id)
    }

    /// Number of variables with a gradient.
    pub fn len(&self) -> usize {
        self.grads.len()
    }

    /// True if no variable got a gradient.
    pub fn is_empty(&self) -> bool {
        self.grads.is_empty()
    }
}
