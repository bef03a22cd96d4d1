//! The functional API: symbolic tensors that layers are applied to, as in
//! `x = Conv2D(32, 3)(inputs)`. Shapes are inferred, and layers built, as
//! each layer is applied.

use std::cell::RefCell;
use std::rc::Rc;

use convnet_tensor::Rng;

use crate::layer::{batch_shape, unique_name, Layer};
use crate::{NnError, Result};

pub(crate) enum NodeKind {
    Input { name: String },
    Layer(usize),
}

pub(crate) struct Node {
    pub kind: NodeKind,
    pub inputs: Vec<usize>,
    pub shape: Vec<usize>,
}

/// Layers and the nodes that connect them. Shared by every model built on
/// it, so a model cut out of another (transfer learning) shares its layers
/// and weights, as in Keras.
pub(crate) struct Graph {
    pub layers: Vec<Box<dyn Layer>>,
    pub nodes: Vec<Node>,
    pub rng: Rng,
}

pub(crate) type GraphRef = Rc<RefCell<Graph>>;

thread_local! {
    static SEEDS: RefCell<Rng> = RefCell::new(Rng::new(1337));
}

/// Seed every weight initialiser and dropout mask drawn after this call, as
/// `keras.utils.set_random_seed` does: building the same model after the
/// same seed gives the same weights.
pub fn set_random_seed(seed: u64) {
    SEEDS.with(|s| *s.borrow_mut() = Rng::new(seed));
}

pub(crate) fn next_seed() -> u64 {
    SEEDS.with(|s| s.borrow_mut().next_u64())
}

/// The output of a layer in a model under construction: a shape (batch axis
/// excluded) and where it comes from.
#[derive(Clone)]
pub struct SymbolicTensor {
    pub(crate) graph: GraphRef,
    pub(crate) node: usize,
    pub(crate) shape: Vec<usize>,
}

impl std::fmt::Debug for SymbolicTensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SymbolicTensor(shape={}, node={})",
            batch_shape(&self.shape),
            self.node
        )
    }
}

impl SymbolicTensor {
    /// The shape without the batch axis.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
}

/// Keras's `Input`: the entry point of a functional model.
///
/// ```
/// use convnet_nn::{Activation, Apply, Input, Model, layers::{Conv2D, Flatten, Dense}};
/// let inputs = Input::new(&[28, 28, 1]);
/// let x = Conv2D::new(8, (3, 3)).activation(Activation::Relu).apply(&inputs).unwrap();
/// let x = Flatten::new().apply(&x).unwrap();
/// let outputs = Dense::new(10).activation(Activation::Softmax).apply(&x).unwrap();
/// let model = Model::new(&inputs, &outputs).unwrap();
/// assert_eq!(model.count_params(), 80 + 26 * 26 * 8 * 10 + 10);
/// ```
pub struct Input;

impl Input {
    /// An input of this shape (batch axis excluded), named `input_layer`,
    /// `input_layer_1`, ...
    #[allow(clippy::new_ret_no_self)]
    pub fn new(shape: &[usize]) -> SymbolicTensor {
        Self::named(shape, &unique_name("input_layer"))
    }

    /// An input with an explicit name.
    pub fn named(shape: &[usize], name: &str) -> SymbolicTensor {
        let graph = Graph {
            layers: Vec::new(),
            nodes: vec![Node {
                kind: NodeKind::Input {
                    name: name.to_string(),
                },
                inputs: vec![],
                shape: shape.to_vec(),
            }],
            rng: Rng::new(next_seed()),
        };
        SymbolicTensor {
            graph: Rc::new(RefCell::new(graph)),
            node: 0,
            shape: shape.to_vec(),
        }
    }
}

/// Applying a layer to symbolic tensors, as calling a Keras layer does:
/// the layer is named (if it has no name), built for the input shapes, and
/// joined to the graph.
pub trait Apply {
    /// Apply to one input.
    fn apply(self, input: &SymbolicTensor) -> Result<SymbolicTensor>;
    /// Apply to several inputs (Concatenate, Add).
    fn apply_many(self, inputs: &[&SymbolicTensor]) -> Result<SymbolicTensor>;
}

impl<L: Layer + 'static> Apply for L {
    fn apply(self, input: &SymbolicTensor) -> Result<SymbolicTensor> {
        self.apply_many(&[input])
    }

    fn apply_many(self, inputs: &[&SymbolicTensor]) -> Result<SymbolicTensor> {
        apply_boxed(Box::new(self), inputs)
    }
}

pub(crate) fn apply_boxed(
    mut layer: Box<dyn Layer>,
    inputs: &[&SymbolicTensor],
) -> Result<SymbolicTensor> {
    let first = inputs.first().ok_or_else(|| {
        NnError::build(format!("layer {} applied to no input", layer.class_name()))
    })?;
    if inputs.iter().any(|i| !Rc::ptr_eq(&i.graph, &first.graph)) {
        return Err(NnError::build(
            "inputs of one layer must come from the same model graph",
        ));
    }
    if layer.name().is_empty() {
        layer.core_mut().name = unique_name(layer.name_prefix());
    }
    let mut g = first.graph.borrow_mut();
    if g.layers.iter().any(|l| l.name() == layer.name()) {
        return Err(NnError::build(format!(
            "two layers are named \"{}\"; layer names must be unique",
            layer.name()
        )));
    }
    let shapes: Vec<Vec<usize>> = inputs.iter().map(|i| i.shape.clone()).collect();
    let mut rng = g.rng.fork(g.layers.len() as u64);
    let shape = layer.build(&shapes, &mut rng)?;
    g.layers.push(layer);
    let layer_id = g.layers.len() - 1;
    g.nodes.push(Node {
        kind: NodeKind::Layer(layer_id),
        inputs: inputs.iter().map(|i| i.node).collect(),
        shape: shape.clone(),
    });
    let node = g.nodes.len() - 1;
    drop(g);
    Ok(SymbolicTensor {
        graph: first.graph.clone(),
        node,
        shape,
    })
}
