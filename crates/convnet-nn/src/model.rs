//! [`Model`]: a graph of layers from inputs to outputs, built with the
//! functional API or as a [`Sequential`] stack.

use std::rc::Rc;

use convnet_autograd::{Tape, Var};
use convnet_kernels::conv::Precision;
use convnet_tensor::{Rng, Tensor};

use crate::graph::{apply_boxed, Graph, GraphRef, NodeKind, SymbolicTensor};
use crate::layer::{unique_name, ForwardCtx, Layer, Weight};
use crate::training::Compiled;
use crate::{Input, NnError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ModelKind {
    Sequential,
    Functional,
}

/// A model: layers connected from an input to an output, with Keras's
/// `compile`, `fit`, `evaluate`, `predict` and `summary`.
pub struct Model {
    pub(crate) name: String,
    pub(crate) kind: ModelKind,
    pub(crate) graph: GraphRef,
    pub(crate) input: usize,
    pub(crate) output: usize,
    /// Node ids needed to compute the output, in a topological order.
    pub(crate) order: Vec<usize>,
    pub(crate) compiled: Option<Compiled>,
    /// The arithmetic of convolutions with constant weights.
    pub(crate) frozen_precision: Precision,
    /// Where `forward` starts: `None`, the input; `Some(node)`, that
    /// node's value is given (a frozen base's cached output, during
    /// `fit_arrays`).
    pub(crate) start: Option<usize>,
}

/// Keras's `Sequential`: a stack of layers, each fed by the previous one.
///
/// ```
/// use convnet_nn::{Activation, Sequential, layers::*};
/// let mut model = Sequential::new(&[150, 150, 3]);
/// model.add(Conv2D::new(32, (3, 3)).activation(Activation::Relu)).unwrap();
/// model.add(MaxPooling2D::new((2, 2))).unwrap();
/// model.add(Flatten::new()).unwrap();
/// model.add(Dense::new(1).activation(Activation::Sigmoid)).unwrap();
/// assert_eq!(model.output_shape(), &[1]);
/// ```
pub struct Sequential;

impl Sequential {
    /// An empty stack taking inputs of `input_shape` (batch axis excluded).
    #[allow(clippy::new_ret_no_self)]
    pub fn new(input_shape: &[usize]) -> Model {
        let input = Input::named(input_shape, &unique_name("input_layer"));
        let mut m = Model::build(&input, &input, unique_name("sequential"))
            .expect("an input alone is a valid model");
        m.kind = ModelKind::Sequential;
        m
    }
}

/// A handle on one layer of a model, as `model.get_layer(name)` in Keras.
pub struct LayerRef {
    graph: GraphRef,
    layer: usize,
    node: usize,
}

impl LayerRef {
    /// The layer's output in the graph, to build a new model from (as
    /// `get_layer('mixed7').output`).
    pub fn output(&self) -> SymbolicTensor {
        let shape = self.graph.borrow().nodes[self.node].shape.clone();
        SymbolicTensor {
            graph: self.graph.clone(),
            node: self.node,
            shape,
        }
    }

    /// The layer's name.
    pub fn name(&self) -> String {
        self.graph.borrow().layers[self.layer].name().to_string()
    }

    /// The layer's class name.
    pub fn class_name(&self) -> &'static str {
        self.graph.borrow().layers[self.layer].class_name()
    }

    /// Keras's `layer.trainable`.
    pub fn trainable(&self) -> bool {
        self.graph.borrow().layers[self.layer].core().trainable
    }

    /// Freeze (`false`) or unfreeze the layer.
    pub fn set_trainable(&self, trainable: bool) {
        self.graph.borrow_mut().layers[self.layer]
            .core_mut()
            .trainable = trainable;
    }

    /// Copies of the layer's weights.
    pub fn weights(&self) -> Vec<Weight> {
        self.graph.borrow().layers[self.layer].weights().to_vec()
    }

    /// Replace the layer's weights' values, in order; shapes must match.
    pub fn set_weights(&self, values: Vec<Tensor>) -> Result<()> {
        let mut g = self.graph.borrow_mut();
        let layer = &mut g.layers[self.layer];
        let name = layer.name().to_string();
        let ws = &mut layer.core_mut().weights;
        if ws.len() != values.len() {
            return Err(NnError::usage(format!(
                "layer \"{name}\" has {} weights, {} values given",
                ws.len(),
                values.len()
            )));
        }
        for (w, v) in ws.iter().zip(&values) {
            if w.value.shape() != v.shape() {
                return Err(NnError::usage(format!(
                    "layer \"{name}\" weight {}: shape {:?} expected, {:?} given",
                    w.name,
                    w.value.shape(),
                    v.shape()
                )));
            }
        }
        for (w, v) in ws.iter_mut().zip(values) {
            w.value = v;
        }
        Ok(())
    }
}

/// New values for non-trainable weights: `(layer id, weight index, value)`.
pub(crate) type WeightUpdates = Vec<(usize, usize, Tensor)>;

/// Autograd values for every weight of every layer, for one pass.
pub(crate) struct ParamVars {
    /// Indexed by layer id, then weight index.
    pub vars: Vec<Vec<Var>>,
}

impl Model {
    /// A model from `input` to `output` (Keras's `Model(inputs, outputs)`).
    /// Both must come from the same graph, and the output must depend on
    /// the input alone.
    pub fn new(input: &SymbolicTensor, output: &SymbolicTensor) -> Result<Model> {
        Self::build(input, output, unique_name("functional"))
    }

    fn build(input: &SymbolicTensor, output: &SymbolicTensor, name: String) -> Result<Model> {
        if !Rc::ptr_eq(&input.graph, &output.graph) {
            return Err(NnError::build(
                "the output is not computed from this input (different graphs)",
            ));
        }
        let order = Self::order_between(&input.graph, input.node, output.node)?;
        Ok(Model {
            name,
            kind: ModelKind::Functional,
            graph: input.graph.clone(),
            input: input.node,
            output: output.node,
            order,
            compiled: None,
            frozen_precision: Precision::Single,
            start: None,
        })
    }

    fn order_between(graph: &GraphRef, input: usize, output: usize) -> Result<Vec<usize>> {
        let g = graph.borrow();
        let mut needed = vec![false; g.nodes.len()];
        needed[output] = true;
        for id in (0..=output).rev() {
            if !needed[id] || id == input {
                continue;
            }
            match &g.nodes[id].kind {
                NodeKind::Input { name } => {
                    return Err(NnError::build(format!(
                        "the output depends on input \"{name}\", which is not the model's input"
                    )))
                }
                NodeKind::Layer(_) => {
                    for &i in &g.nodes[id].inputs {
                        needed[i] = true;
                    }
                }
            }
        }
        if !needed[input] {
            return Err(NnError::build("the output does not depend on the input"));
        }
        Ok((0..=output).filter(|&i| needed[i]).collect())
    }

    /// Add a layer on top of a sequential model (Keras's `model.add`).
    /// Shapes are checked now: a mismatch is an error naming the layer.
    pub fn add<L: Layer + 'static>(&mut self, layer: L) -> Result<()> {
        if self.kind != ModelKind::Sequential {
            return Err(NnError::usage(
                "add() is for Sequential models; use the functional API (Apply) otherwise",
            ));
        }
        if self.compiled.is_some() {
            return Err(NnError::usage(
                "add() after compile(); compile again after changing the model",
            ));
        }
        let out = apply_boxed(Box::new(layer), &[&self.output()])?;
        self.output = out.node;
        self.order.push(out.node);
        Ok(())
    }

    /// The model's name (`sequential`, `functional_1`, ...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The model's input, to build new models from.
    pub fn input(&self) -> SymbolicTensor {
        self.symbolic(self.input)
    }

    /// The model's output.
    pub fn output(&self) -> SymbolicTensor {
        self.symbolic(self.output)
    }

    fn symbolic(&self, node: usize) -> SymbolicTensor {
        let shape = self.graph.borrow().nodes[node].shape.clone();
        SymbolicTensor {
            graph: self.graph.clone(),
            node,
            shape,
        }
    }

    /// The input shape, batch axis excluded.
    pub fn input_shape(&self) -> Vec<usize> {
        self.graph.borrow().nodes[self.input].shape.clone()
    }

    /// The output shape, batch axis excluded.
    pub fn output_shape(&self) -> Vec<usize> {
        self.graph.borrow().nodes[self.output].shape.clone()
    }

    /// Ids of the layers this model uses, in order.
    pub(crate) fn layer_ids(&self) -> Vec<usize> {
        let g = self.graph.borrow();
        let mut ids = Vec::new();
        for &n in &self.order {
            if let NodeKind::Layer(l) = g.nodes[n].kind {
                if !ids.contains(&l) {
                    ids.push(l);
                }
            }
        }
        ids
    }

    /// The layer called `name` (Keras's `get_layer`).
    pub fn get_layer(&self, name: &str) -> Result<LayerRef> {
        let g = self.graph.borrow();
        for &n in &self.order {
            if let NodeKind::Layer(l) = g.nodes[n].kind {
                if g.layers[l].name() == name {
                    return Ok(LayerRef {
                        graph: self.graph.clone(),
                        layer: l,
                        node: n,
                    });
                }
            }
        }
        Err(NnError::usage(format!(
            "model \"{}\" has no layer named \"{name}\"",
            self.name
        )))
    }

    /// Names of the model's layers, in order.
    pub fn layer_names(&self) -> Vec<String> {
        let g = self.graph.borrow();
        self.layer_ids()
            .into_iter()
            .map(|l| g.layers[l].name().to_string())
            .collect()
    }

    /// The arithmetic of the convolutions whose weights do not change in a
    /// pass: the frozen layers while training, every layer in `predict` and
    /// `evaluate`, where a batch normalisation after the convolution is
    /// folded into it (InceptionV3's layers). [`Precision::Single`], the
    /// default, computes them in `f32` as Keras does.
    /// [`Precision::Half`] computes those that run as im2col + GEMM (1x1,
    /// strided and 1x7 / 7x1 / 5x5 kernels; not the 3x3 stride-1 layers,
    /// which Winograd already cuts) with inputs and weights rounded to
    /// half precision and sums in half precision over 64 terms, then in
    /// `f32`, on CPUs with AVX512-FP16 (elsewhere it is `Single`): faster,
    /// with errors of about 1e-3 of the values per layer. Trainable layers,
    /// all gradients, and a convolution computed together with the max
    /// pooling after it (InceptionV3's two, both 3x3 stride 1) stay in
    /// `f32`.
    ///
    /// ```
    /// use convnet_nn::{layers::*, Apply, Input, Model, Precision};
    /// let x = Input::new(&[9, 9, 3]);
    /// let y = Conv2D::new(4, (1, 1)).use_bias(false).apply(&x).unwrap();
    /// let y = BatchNormalization::new().apply(&y).unwrap();
    /// let mut model = Model::new(&x, &y).unwrap();
    /// model.set_frozen_precision(Precision::Half);
    /// assert_eq!(model.frozen_precision(), Precision::Half);
    /// ```
    pub fn set_frozen_precision(&mut self, precision: Precision) {
        self.frozen_precision = precision;
    }

    /// See [`Model::set_frozen_precision`].
    pub fn frozen_precision(&self) -> Precision {
        self.frozen_precision
    }

    /// Freeze or unfreeze every layer (Keras's `model.trainable = False`).
    pub fn set_trainable(&mut self, trainable: bool) {
        let ids = self.layer_ids();
        let mut g = self.graph.borrow_mut();
        for l in ids {
            g.layers[l].core_mut().trainable = trainable;
        }
    }

    /// Every weight as `("{layer}/{weight}", value, trainable)`, trainable
    /// meaning the optimizer updates it (its layer is trainable too).
    pub fn weights(&self) -> Vec<(String, Tensor, bool)> {
        let g = self.graph.borrow();
        let mut out = Vec::new();
        for l in self.layer_ids() {
            let layer = &g.layers[l];
            for w in layer.weights() {
                out.push((
                    format!("{}/{}", layer.name(), w.name),
                    w.value.clone(),
                    w.trainable && layer.core().trainable,
                ));
            }
        }
        out
    }

    /// Total number of weights' elements.
    pub fn count_params(&self) -> usize {
        self.weights().iter().map(|w| w.1.len()).sum()
    }

    /// `(trainable, non-trainable)` parameter counts.
    pub fn count_params_split(&self) -> (usize, usize) {
        self.weights().iter().fold((0, 0), |(t, n), w| {
            if w.2 {
                (t + w.1.len(), n)
            } else {
                (t, n + w.1.len())
            }
        })
    }

    /// Autograd values for every weight: trainable ones recorded on `tape`
    /// (when given), the rest constants.
    pub(crate) fn param_vars(&self, tape: Option<&Tape>) -> ParamVars {
        let g = self.graph.borrow();
        let vars = g
            .layers
            .iter()
            .map(|layer| {
                layer
                    .weights()
                    .iter()
                    .map(|w| match tape {
                        Some(t) if w.trainable && layer.core().trainable => t.var(w.value.clone()),
                        _ => Var::constant(w.value.clone()),
                    })
                    .collect()
            })
            .collect();
        ParamVars { vars }
    }

    /// Run the model on `x`. Non-trainable weight updates (BN moving
    /// statistics) are returned as `(layer, weight index, value)`.
    /// The frozen base's output, if the model has one: the last node such
    /// that every layer up to it is frozen (or has no weights) and computes
    /// the same in training as in inference (no Dropout), that every path
    /// from the input to the output goes through, with weights before it
    /// and trainable weights after it. Training can then start from its
    /// value, computed once per sample.
    pub(crate) fn frozen_cut(&self) -> Option<usize> {
        let g = self.graph.borrow();
        let mut last_use = vec![None; g.nodes.len()];
        for (p, &n) in self.order.iter().enumerate() {
            for &i in &g.nodes[n].inputs {
                last_use[i] = Some(p);
            }
        }
        let (mut open, mut weights, mut best) = (0usize, false, None);
        let mut after = None;
        for (p, &n) in self.order.iter().enumerate() {
            if let NodeKind::Layer(l) = g.nodes[n].kind {
                let layer = &g.layers[l];
                let has = !layer.weights().is_empty();
                if (has && layer.core().trainable) || layer.class_name() == "Dropout" {
                    after = Some(p);
                    break;
                }
                weights |= has;
            }
            if last_use[n].is_some_and(|u| u > p) {
                open += 1;
            }
            for &i in &g.nodes[n].inputs {
                if last_use[i] == Some(p) {
                    open -= 1;
                }
            }
            let alone = open == 1 && last_use[n].is_some_and(|u| u > p);
            if alone && weights && n != self.output {
                best = Some(n);
            }
        }
        // Something after it must train.
        let trains = after.is_some_and(|p| {
            self.order[p..].iter().any(|&n| match g.nodes[n].kind {
                NodeKind::Layer(l) => {
                    g.layers[l].core().trainable && !g.layers[l].weights().is_empty()
                }
                _ => false,
            })
        });
        best.filter(|_| trains)
    }

    /// The layer whose output `fit_arrays` computes once per sample (see
    /// [`crate::FitOptions::cache_frozen_base`]), if the model has a frozen
    /// base. For tests and logs.
    #[doc(hidden)]
    pub fn frozen_base_output(&self) -> Option<String> {
        self.frozen_cut().map(|n| self.node_name(n))
    }

    /// The model from the input to `node` (sharing the layers).
    pub(crate) fn prefix(&self, node: usize) -> Result<Model> {
        Ok(Model {
            name: format!("{}_base", self.name),
            kind: ModelKind::Functional,
            graph: self.graph.clone(),
            input: self.input,
            output: node,
            order: Self::order_between(&self.graph, self.input, node)?,
            compiled: None,
            frozen_precision: self.frozen_precision,
            start: None,
        })
    }

    /// The name of the layer that computes `node`.
    pub(crate) fn node_name(&self, node: usize) -> String {
        let g = self.graph.borrow();
        match g.nodes[node].kind {
            NodeKind::Layer(l) => g.layers[l].name().to_string(),
            _ => "the input".into(),
        }
    }

    pub(crate) fn forward(
        &self,
        x: Var,
        params: &ParamVars,
        training: bool,
        step_rng: &Rng,
    ) -> Result<(Var, WeightUpdates)> {
        let g = self.graph.borrow();
        let start = self.start.unwrap_or(self.input);
        let expected = &g.nodes[start].shape;
        if x.shape().len() != expected.len() + 1 || &x.shape()[1..] != expected.as_slice() {
            return Err(NnError::Data(format!(
                "model \"{}\" expects inputs of shape {}, got a batch of shape {:?}",
                self.name,
                crate::layer::batch_shape(expected),
                x.shape()
            )));
        }
        // How many consumers each node still has, to drop values early.
        let mut uses = vec![0usize; g.nodes.len()];
        for &n in &self.order {
            for &i in &g.nodes[n].inputs {
                uses[i] += 1;
            }
        }
        let mut consumers = vec![Vec::new(); g.nodes.len()];
        for &n in &self.order {
            for &i in &g.nodes[n].inputs {
                consumers[i].push(n);
            }
        }
        // The sole consumer of `n`, when it is a layer whose only input is
        // `n`, and `n` is not the output.
        let sole = |n: usize| -> Option<(usize, usize)> {
            match consumers[n].as_slice() {
                &[m] if n != self.output && g.nodes[m].inputs == [n] => match g.nodes[m].kind {
                    NodeKind::Layer(l) => Some((m, l)),
                    _ => None,
                },
                _ => None,
            }
        };
        let mut values: Vec<Option<Var>> = vec![None; g.nodes.len()];
        values[start] = Some(x);
        // From a later start, the nodes up to it are not computed: every
        // path to the output goes through it (`frozen_cut`).
        let skip = match self.start {
            Some(s) => self.order.iter().position(|&n| n == s).map_or(0, |p| p + 1),
            None => 0,
        };
        let mut fused_away = vec![false; g.nodes.len()];
        let mut all_updates = Vec::new();
        for &n in &self.order[skip..] {
            let NodeKind::Layer(l) = g.nodes[n].kind else {
                continue;
            };
            if fused_away[n] {
                continue;
            }
            let node = &g.nodes[n];
            let inputs: Vec<Var> = node
                .inputs
                .iter()
                .map(|&i| {
                    values[i].clone().ok_or_else(|| {
                        NnError::build("internal: a node was evaluated before its input")
                    })
                })
                .collect::<Result<_>>()?;
            for &i in &node.inputs {
                uses[i] -= 1;
                if uses[i] == 0 && i != self.output {
                    values[i] = None;
                }
            }
            let layer = &g.layers[l];
            // Conv2D -> MaxPooling2D: one op that never keeps the
            // convolution's output. Conv2D -> BatchNormalization in
            // inference mode (-> ReLU), all weights constant (a frozen
            // base, or predict): one convolution with the normalisation
            // folded into its kernel and bias and the ReLU in its epilogue.
            // Nothing is recorded for backward that the layers would not
            // have recorded.
            if let [input] = inputs.as_slice() {
                let fused = match layer.avg_pool_window() {
                    Some(window) => self.fused_avg(
                        &g,
                        layer.as_ref(),
                        window,
                        n,
                        input,
                        params,
                        training,
                        &sole,
                    )?,
                    None => self.fused(&g, layer.as_ref(), l, n, input, params, training, &sole)?,
                };
                if let Some((y, last)) = fused {
                    let mut at = n;
                    while at != last {
                        let (next, _) = sole(at).ok_or_else(|| {
                            NnError::build("internal: a fused layer lost its consumer")
                        })?;
                        fused_away[next] = true;
                        at = next;
                    }
                    values[last] = Some(y);
                    continue;
                }
            }
            let mut updates = Vec::new();
            let mut ctx = ForwardCtx {
                training,
                rng: step_rng.fork(l as u64),
                updates: &mut updates,
            };
            let section = if convnet_autograd::profile::enabled() {
                format!("forward {}", layer.name())
            } else {
                String::new()
            };
            let y = convnet_autograd::profile::timed(&section, || {
                layer.forward(&inputs, &params.vars[l], &mut ctx)
            })
            .map_err(|e| match e {
                NnError::Tensor(t) => NnError::Data(format!(
                    "layer \"{}\" ({}): {t}",
                    layer.name(),
                    layer.class_name()
                )),
                other => other,
            })?;
            all_updates.extend(updates.into_iter().map(|(w, v)| (l, w, v)));
            values[n] = Some(y);
        }
        let out = values[self.output]
            .take()
            .ok_or_else(|| NnError::build("internal: the output was not computed"))?;
        Ok((out, all_updates))
    }

    /// The fused forward pass starting at conv node `n` (layer `l`), when
    /// a pattern applies (Conv2D -> MaxPooling2D, or Conv2D ->
    /// BatchNormalization (-> ReLU) with constant weights): `(output, the
    /// last node it stands for)`.
    #[allow(clippy::too_many_arguments)]
    fn fused(
        &self,
        g: &Graph,
        conv: &dyn Layer,
        l: usize,
        n: usize,
        input: &Var,
        params: &ParamVars,
        training: bool,
        sole: &dyn Fn(usize) -> Option<(usize, usize)>,
    ) -> Result<Option<(Var, usize)>> {
        if conv.class_name() != "Conv2D" {
            return Ok(None);
        }
        let Some((bn_node, bn)) = sole(n) else {
            return Ok(None);
        };
        let named = |y: Result<Var>| {
            y.map_err(|e| match e {
                NnError::Tensor(t) => NnError::Data(format!(
                    "layer \"{}\" ({}): {t}",
                    conv.name(),
                    conv.class_name()
                )),
                other => other,
            })
        };
        // Conv2D (linear or ReLU) -> MaxPooling2D: the convolution's output
        // is pooled chunk by chunk as it is computed, never kept in full.
        if let Some(window) = g.layers[bn].max_pool_window() {
            let section = if convnet_autograd::profile::enabled() {
                format!("forward {}+{}", conv.name(), g.layers[bn].name())
            } else {
                String::new()
            };
            let y = convnet_autograd::profile::timed(&section, || {
                conv.forward_max_pooled(input, &params.vars[l], window)
            });
            return match y {
                None => Ok(None),
                Some(y) => Ok(Some((named(y)?, bn_node))),
            };
        }
        let Some(affine) = g.layers[bn].inference_affine(&params.vars[bn], training) else {
            return Ok(None);
        };
        let (scale, shift) = affine?;
        let relu = sole(bn_node).filter(|&(_, a)| g.layers[a].is_relu());
        let last = relu.map_or(bn_node, |(a, _)| a);
        // (-> MaxPooling2D): pooled as computed, too.
        let pool = sole(last).and_then(|(p, pl)| Some((p, pl, g.layers[pl].max_pool_window()?)));
        let last = pool.map_or(last, |(p, _, _)| p);
        let section = if convnet_autograd::profile::enabled() {
            let name =
                |x: Option<usize>| x.map_or(String::new(), |a| format!("+{}", g.layers[a].name()));
            format!(
                "forward {}+{}{}{}",
                conv.name(),
                g.layers[bn].name(),
                name(relu.map(|(_, a)| a)),
                name(pool.map(|(_, pl, _)| pl)),
            )
        } else {
            String::new()
        };
        let y = convnet_autograd::profile::timed(&section, || {
            conv.forward_scaled(
                input,
                &params.vars[l],
                &scale,
                &shift,
                relu.is_some(),
                pool.map(|(_, _, w)| w),
                self.frozen_precision,
            )
        });
        match y {
            None => Ok(None),
            Some(y) => Ok(Some((named(y)?, last))),
        }
    }

    /// The fused forward pass starting at average-pooling node `n`:
    /// AveragePooling2D -> 1x1 Conv2D -> BatchNormalization in inference
    /// mode (-> ReLU), all constant (a frozen base, or predict), computed
    /// with the pooling after the convolution, on its fewer channels (see
    /// [`Layer::forward_avg_pooled_scaled`]): `(output, the last node it
    /// stands for)`.
    #[allow(clippy::too_many_arguments)]
    fn fused_avg(
        &self,
        g: &Graph,
        pool: &dyn Layer,
        window: crate::MaxPoolWindow,
        n: usize,
        input: &Var,
        params: &ParamVars,
        training: bool,
        sole: &dyn Fn(usize) -> Option<(usize, usize)>,
    ) -> Result<Option<(Var, usize)>> {
        let Some((conv_node, cl)) = sole(n) else {
            return Ok(None);
        };
        let conv = g.layers[cl].as_ref();
        if conv.class_name() != "Conv2D" {
            return Ok(None);
        }
        let Some((bn_node, bn)) = sole(conv_node) else {
            return Ok(None);
        };
        let Some(affine) = g.layers[bn].inference_affine(&params.vars[bn], training) else {
            return Ok(None);
        };
        let (scale, shift) = affine?;
        let relu = sole(bn_node).filter(|&(_, a)| g.layers[a].is_relu());
        let last = relu.map_or(bn_node, |(a, _)| a);
        let section = if convnet_autograd::profile::enabled() {
            let relu = relu.map_or(String::new(), |(_, a)| format!("+{}", g.layers[a].name()));
            format!(
                "forward {}+{}+{}{relu}",
                pool.name(),
                conv.name(),
                g.layers[bn].name()
            )
        } else {
            String::new()
        };
        let y = convnet_autograd::profile::timed(&section, || {
            conv.forward_avg_pooled_scaled(
                input,
                &params.vars[cl],
                window,
                &scale,
                &shift,
                relu.is_some(),
                self.frozen_precision,
            )
        });
        match y {
            None => Ok(None),
            Some(y) => Ok(Some((
                y.map_err(|e| match e {
                    NnError::Tensor(t) => NnError::Data(format!(
                        "layer \"{}\" ({}): {t}",
                        conv.name(),
                        conv.class_name()
                    )),
                    other => other,
                })?,
                last,
            ))),
        }
    }

    pub(crate) fn apply_updates(&self, updates: WeightUpdates) {
        let mut g = self.graph.borrow_mut();
        for (l, w, v) in updates {
            g.layers[l].core_mut().weights[w].value = v;
        }
    }
}
