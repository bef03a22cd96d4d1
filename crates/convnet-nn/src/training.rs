//! Keras's training API on [`Model`]: `compile`, `fit`, `evaluate`,
//! `predict`, `train_on_batch`.

use std::time::Instant;

use convnet_autograd::{no_grad, Tape, Var};
use convnet_tensor::{Rng, Tensor};

use crate::callbacks::{Callback, Control};
use crate::history::{History, Logs};
use crate::optimizers::Optimizer;
use crate::progress::Progress;
use crate::{Loss, Metric, Model, NnError, Result};

pub(crate) struct Compiled {
    pub optimizer: Box<dyn Optimizer>,
    pub loss: Loss,
    pub metrics: Vec<Metric>,
}

/// The most memory `fit_arrays` spends on a frozen base's cached outputs
/// (training and validation samples together); past it, every step runs
/// the whole model.
const MAX_CACHED_BYTES: usize = 2 << 30;

/// Something that turns into an `(inputs, targets)` batch: a plain pair, or
/// a `Result` of one from a fallible data source.
pub trait IntoBatch {
    /// The batch, or the source's error.
    fn into_batch(self) -> Result<(Tensor, Tensor)>;
}

impl IntoBatch for (Tensor, Tensor) {
    fn into_batch(self) -> Result<(Tensor, Tensor)> {
        Ok(self)
    }
}

impl<E: std::error::Error + Send + Sync + 'static> IntoBatch
    for std::result::Result<(Tensor, Tensor), E>
{
    fn into_batch(self) -> Result<(Tensor, Tensor)> {
        self.map_err(|e| NnError::External(Box::new(e)))
    }
}

/// A source of batches for `fit` and `evaluate`: any iterator of
/// [`IntoBatch`] items (so data crates need no dependency on this one).
pub trait BatchSource {
    /// The next batch, `None` when the source is exhausted.
    fn next_batch(&mut self) -> Option<Result<(Tensor, Tensor)>>;
}

impl<I, B> BatchSource for I
where
    I: Iterator<Item = B>,
    B: IntoBatch,
{
    fn next_batch(&mut self) -> Option<Result<(Tensor, Tensor)>> {
        self.next().map(IntoBatch::into_batch)
    }
}

/// Options of [`Model::fit`], with Keras's defaults.
#[derive(Debug, Clone)]
pub struct FitOptions {
    /// Number of epochs.
    pub epochs: usize,
    /// Batches per epoch; `None` runs each epoch until the source is
    /// exhausted. With more steps than one pass of the data, an endless
    /// source (such as `flow_from_directory`) simply continues.
    pub steps_per_epoch: Option<usize>,
    /// Validation batches per epoch; `None` runs the validation source
    /// until it is exhausted.
    pub validation_steps: Option<usize>,
    /// 0 silent, 1 progress bar, 2 one line per epoch.
    pub verbose: u8,
    /// Epoch to start from (when resuming).
    pub initial_epoch: usize,
    /// Seed of the dropout masks.
    pub seed: u64,
    /// [`Model::fit_arrays`] only: when the model starts with a frozen
    /// base (every layer up to some layer frozen, no Dropout among them,
    /// and the rest of the model reached only through that layer's
    /// output), compute the base's output once per sample and train the
    /// layers after it from those values, instead of running the base
    /// again every epoch (the same values: a frozen base computes the same
    /// in training as in inference). Up to 2 GiB of such values; on by
    /// default. A source of batches ([`Model::fit`]) always runs the whole
    /// model: its images may be augmented.
    pub cache_frozen_base: bool,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            epochs: 1,
            steps_per_epoch: None,
            validation_steps: None,
            verbose: 1,
            initial_epoch: 0,
            seed: 0,
            cache_frozen_base: true,
        }
    }
}

/// Running sums for the loss and metrics over an epoch.
#[derive(Default)]
struct Running {
    loss_sum: f64,
    samples: usize,
    correct: usize,
    counted: usize,
}

impl Running {
    fn logs(&self, prefix: &str, metrics: &[Metric]) -> Logs {
        let mut logs = Logs::new();
        if self.samples > 0 {
            logs.insert(
                format!("{prefix}loss"),
                (self.loss_sum / self.samples as f64) as f32,
            );
        }
        for m in metrics {
            if self.counted > 0 {
                logs.insert(
                    format!("{prefix}{}", m.name()),
                    self.correct as f32 / self.counted as f32,
                );
            }
        }
        logs
    }
}

fn check_batch(x: &Tensor, y: &Tensor) -> Result<()> {
    let n = x.shape().first().copied().unwrap_or(0);
    if n == 0 {
        return Err(NnError::Data(format!(
            "empty batch: inputs of shape {:?}",
            x.shape()
        )));
    }
    if y.shape().first() != Some(&n) {
        return Err(NnError::Data(format!(
            "inputs of shape {:?} and labels of shape {:?} hold different numbers of samples",
            x.shape(),
            y.shape()
        )));
    }
    Ok(())
}

impl Model {
    /// Keras's `compile`: the optimizer, the loss and the metrics.
    ///
    /// ```
    /// use convnet_nn::{Activation, Loss, Metric, Sequential, layers::Dense, optimizers::Adam};
    /// let mut model = Sequential::new(&[4]);
    /// model.add(Dense::new(1).activation(Activation::Sigmoid)).unwrap();
    /// model.compile(Adam::default(), Loss::BinaryCrossentropy, &[Metric::Accuracy]).unwrap();
    /// ```
    pub fn compile(
        &mut self,
        optimizer: impl Optimizer + 'static,
        loss: Loss,
        metrics: &[Metric],
    ) -> Result<()> {
        crate::optimizers::check_lr(optimizer.name(), optimizer.learning_rate())?;
        self.compiled = Some(Compiled {
            optimizer: Box::new(optimizer),
            loss,
            metrics: metrics.to_vec(),
        });
        Ok(())
    }

    fn compiled(&self) -> Result<&Compiled> {
        self.compiled.as_ref().ok_or_else(|| {
            NnError::usage(format!(
                "model \"{}\" must be compiled (compile()) before training or evaluation",
                self.name
            ))
        })
    }

    /// The optimizer, once compiled.
    pub fn optimizer(&self) -> Option<&dyn Optimizer> {
        self.compiled.as_ref().map(|c| c.optimizer.as_ref())
    }

    /// The optimizer, mutable (to change the learning rate, say).
    pub fn optimizer_mut(&mut self) -> Option<&mut (dyn Optimizer + 'static)> {
        self.compiled.as_mut().map(|c| c.optimizer.as_mut())
    }

    /// One gradient step on one batch; returns the batch's loss and metrics.
    pub fn train_on_batch(&mut self, x: &Tensor, y: &Tensor) -> Result<Logs> {
        let rng = Rng::new(self.compiled()?.optimizer.iterations());
        let mut r = Running::default();
        self.train_step(x, y, &rng, &mut r)?;
        Ok(r.logs("", &self.compiled()?.metrics))
    }

    fn train_step(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        rng: &Rng,
        running: &mut Running,
    ) -> Result<f32> {
        check_batch(x, y)?;
        let (loss_kind, metrics) = {
            let c = self.compiled()?;
            (c.loss, c.metrics.clone())
        };
        let tape = Tape::new();
        let params = self.param_vars(Some(&tape));
        let (pred, updates) = self.forward(Var::constant(x.clone()), &params, true, rng)?;
        let y = loss_kind.align_labels(pred.shape(), y)?;
        let loss = loss_kind.compute(&pred, &y)?;
        let loss_value = loss.value().item()?;
        let n = x.shape()[0];
        running.loss_sum += loss_value as f64 * n as f64;
        running.samples += n;
        for m in &metrics {
            running.correct += m.correct(loss_kind, pred.value(), &y)?;
            running.counted += m.count(loss_kind, pred.value());
        }
        let mut grads = tape.backward(&loss)?;
        let optimizer_start = std::time::Instant::now();
        // Collect the gradients (as the tape made them: a Dense kernel's may
        // be factored, for the optimizer to apply block by block), then
        // drop every other handle on the weights so the optimizer updates
        // them in place without a copy.
        let mut collected = Vec::new();
        for (l, vars) in params.vars.iter().enumerate() {
            for (w, v) in vars.iter().enumerate() {
                if let Some(g) = grads.take_gradient(v) {
                    collected.push((l, w, g));
                }
            }
        }
        drop((grads, params, pred, loss, tape));
        {
            let mut g = self.graph.borrow_mut();
            let compiled = self.compiled.as_mut().expect("checked above");
            for (l, w, grad) in collected {
                let layer = &mut g.layers[l];
                let key = format!("{}/{}", layer.name(), layer.core().weights[w].name);
                compiled.optimizer.update_gradient(
                    &key,
                    &mut layer.core_mut().weights[w].value,
                    &grad,
                )?;
            }
            compiled.optimizer.finish_step();
        }
        convnet_autograd::profile::add("optimizer", optimizer_start.elapsed().as_secs_f64());
        self.apply_updates(updates);
        Ok(loss_value)
    }

    /// Keras's `fit` over a source of batches, with optional validation.
    /// Returns the [`History`].
    pub fn fit(
        &mut self,
        train: &mut dyn BatchSource,
        validation: Option<&mut dyn BatchSource>,
        options: &FitOptions,
    ) -> Result<History> {
        self.fit_with_callbacks(train, validation, options, &mut [])
    }

    /// [`Model::fit`] with callbacks.
    pub fn fit_with_callbacks(
        &mut self,
        train: &mut dyn BatchSource,
        validation: Option<&mut dyn BatchSource>,
        options: &FitOptions,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<History> {
        self.fit_inner(train, validation, options, callbacks, None)
    }

    /// [`Model::fit_with_callbacks`]; with `start`, the batches' inputs are
    /// the values of that node (a frozen base's output), and each step
    /// runs the layers after it only. Callbacks see the whole model.
    fn fit_inner(
        &mut self,
        train: &mut dyn BatchSource,
        mut validation: Option<&mut dyn BatchSource>,
        options: &FitOptions,
        callbacks: &mut [&mut dyn Callback],
        start: Option<usize>,
    ) -> Result<History> {
        self.compiled()?;
        if options.steps_per_epoch == Some(0) {
            return Err(NnError::usage("steps_per_epoch must be positive"));
        }
        let mut history = History::default();
        let mut first = options.initial_epoch;
        for cb in callbacks.iter_mut() {
            if let Some(done) = cb.on_train_restore(self)? {
                first = first.max(done);
            }
        }
        if first > options.initial_epoch {
            // Continue the data where the finished epochs left it.
            let skip = options
                .steps_per_epoch
                .map(|s| s * (first - options.initial_epoch));
            if options.verbose > 0 {
                match skip {
                    Some(n) => println!(
                        "Restored from a backup: {first} epochs done; skipping the {n} batches they used"
                    ),
                    None => println!("Restored from a backup: {first} epochs done"),
                }
            }
            for _ in 0..skip.unwrap_or(0) {
                match train.next_batch() {
                    Some(b) => {
                        b?;
                    }
                    None => break,
                }
            }
            if let (Some(v), Some(steps)) = (validation.as_deref_mut(), options.validation_steps) {
                for _ in 0..steps * (first - options.initial_epoch) {
                    match v.next_batch() {
                        Some(b) => {
                            b?;
                        }
                        None => break,
                    }
                }
            }
        }
        for cb in callbacks.iter_mut() {
            cb.on_train_begin(self)?;
        }
        let seed_rng = Rng::new(options.seed);
        'epochs: for epoch in first..options.epochs {
            if options.verbose > 0 {
                println!("Epoch {}/{}", epoch + 1, options.epochs);
            }
            let started = Instant::now();
            let mut running = Running::default();
            let mut progress = Progress::new(options.verbose, options.steps_per_epoch);
            let mut step = 0;
            loop {
                if options.steps_per_epoch.is_some_and(|s| step >= s) {
                    break;
                }
                let Some(batch) = train.next_batch() else {
                    if step == 0 {
                        eprintln!(
                            "WARNING: Your input ran out of data; interrupting training. Make sure that your dataset \
                             can generate at least steps_per_epoch * epochs batches."
                        );
                        break 'epochs;
                    }
                    break;
                };
                let (x, y) = batch?;
                let rng = seed_rng.fork(((epoch as u64) << 32) | step as u64);
                self.start = start;
                let loss = self.train_step(&x, &y, &rng, &mut running);
                self.start = None;
                let loss = loss?;
                step += 1;
                let logs = running.logs("", &self.compiled()?.metrics);
                progress.step(step, &logs);
                for cb in callbacks.iter_mut() {
                    if cb.on_batch_end(epoch + 1, step, loss, &logs)? == Control::Stop {
                        break 'epochs;
                    }
                }
            }
            let mut logs = running.logs("", &self.compiled()?.metrics);
            if let Some(v) = validation.as_deref_mut() {
                self.start = start;
                let val = self.evaluate_source(v, options.validation_steps);
                self.start = None;
                let val = val?;
                for (k, x) in val {
                    logs.insert(format!("val_{k}"), x);
                }
            }
            progress.finish(step, started.elapsed(), &logs);
            history.push_epoch(epoch, &logs);
            let mut stop = false;
            for cb in callbacks.iter_mut() {
                if cb.on_epoch_end(epoch + 1, &logs, self)? == Control::Stop {
                    stop = true;
                }
            }
            if stop {
                break;
            }
        }
        for cb in callbacks.iter_mut() {
            cb.on_train_end(self)?;
        }
        Ok(history)
    }

    /// Keras's `fit(x, y, batch_size, ...)` on in-memory tensors: shuffled
    /// each epoch (from `options.seed`), with optional validation tensors.
    pub fn fit_arrays(
        &mut self,
        x: &Tensor,
        y: &Tensor,
        batch_size: usize,
        validation_data: Option<(&Tensor, &Tensor)>,
        options: &FitOptions,
        callbacks: &mut [&mut dyn Callback],
    ) -> Result<History> {
        check_batch(x, y)?;
        if batch_size == 0 {
            return Err(NnError::usage("batch_size must be positive"));
        }
        let n = x.shape()[0];
        let steps = n.div_ceil(batch_size);
        let mut rng = Rng::new(options.seed ^ 0x5eed);
        // A frozen base (every layer up to some node frozen and the same in
        // training as in inference): its output computed once per sample,
        // every step then trains the layers after it only.
        let cut = self.frozen_cut().filter(|&c| {
            if !options.cache_frozen_base {
                return false;
            }
            let per_sample: usize = self.graph.borrow().nodes[c].shape.iter().product();
            let samples = n + validation_data.map_or(0, |(vx, _)| vx.shape()[0]);
            4 * per_sample * samples <= MAX_CACHED_BYTES
        });
        let (x, validation_data) = match cut {
            Some(c) => {
                let started = Instant::now();
                let base = self.prefix(c)?;
                let fx = base.predict(x, batch_size)?;
                let fv = match validation_data {
                    Some((vx, vy)) => Some((base.predict(vx, batch_size)?, vy.clone())),
                    None => None,
                };
                if options.verbose > 0 {
                    println!(
                        "The frozen layers up to \"{}\" ran once on the {} training{} samples \
                         ({:.1} s); every epoch trains the layers after it only",
                        self.node_name(c),
                        n,
                        fv.as_ref().map_or(String::new(), |(v, _)| format!(
                            " and {} validation",
                            v.shape()[0]
                        )),
                        started.elapsed().as_secs_f64()
                    );
                }
                (fx, fv)
            }
            None => (
                x.clone(),
                validation_data.map(|(vx, vy)| (vx.clone(), vy.clone())),
            ),
        };
        let y = y.clone();
        let mut order: Vec<usize> = Vec::new();
        let mut cursor = 0;
        let mut train = std::iter::from_fn(move || {
            if cursor == 0 {
                order = (0..n).collect();
                rng.shuffle(&mut order);
            }
            let end = (cursor + batch_size).min(n);
            let idx = &order[cursor..end];
            cursor = if end == n { 0 } else { end };
            Some(
                x.select_batch(idx)
                    .and_then(|xb| Ok((xb, y.select_batch(idx)?))),
            )
        });
        let mut opts = options.clone();
        opts.steps_per_epoch = Some(steps);
        match &validation_data {
            Some((vx, vy)) => {
                check_batch(vx, vy)?;
                let mut val = ArrayBatches::new(vx, vy, batch_size);
                val.cycle = true;
                let vsteps = val.steps();
                opts.validation_steps = Some(vsteps);
                self.fit_inner(&mut train, Some(&mut val), &opts, callbacks, cut)
            }
            None => self.fit_inner(&mut train, None, &opts, callbacks, cut),
        }
    }

    fn evaluate_source(
        &mut self,
        data: &mut dyn BatchSource,
        steps: Option<usize>,
    ) -> Result<Logs> {
        let (loss_kind, metrics) = {
            let c = self.compiled()?;
            (c.loss, c.metrics.clone())
        };
        let params = self.param_vars(None);
        let rng = Rng::new(0);
        let mut running = Running::default();
        let mut step = 0;
        while steps.is_none_or(|s| step < s) {
            let Some(batch) = data.next_batch() else {
                break;
            };
            let (x, y) = batch?;
            check_batch(&x, &y)?;
            no_grad(|| -> Result<()> {
                let (pred, _) = self.forward(Var::constant(x.clone()), &params, false, &rng)?;
                let y = loss_kind.align_labels(pred.shape(), &y)?;
                let loss = loss_kind.compute(&pred, &y)?;
                let n = x.shape()[0];
                running.loss_sum += loss.value().item()? as f64 * n as f64;
                running.samples += n;
                for m in &metrics {
                    running.correct += m.correct(loss_kind, pred.value(), &y)?;
                    running.counted += m.count(loss_kind, pred.value());
                }
                Ok(())
            })?;
            step += 1;
        }
        if step == 0 {
            return Err(NnError::Data("evaluation data is empty".into()));
        }
        Ok(running.logs("", &metrics))
    }

    /// Keras's `evaluate` over a source of batches (`steps` of them, or until
    /// it is exhausted): loss and metrics in inference mode.
    pub fn evaluate(&mut self, data: &mut dyn BatchSource, steps: Option<usize>) -> Result<Logs> {
        self.evaluate_source(data, steps)
    }

    /// Keras's `evaluate(x, y, batch_size)` on in-memory tensors.
    pub fn evaluate_arrays(&mut self, x: &Tensor, y: &Tensor, batch_size: usize) -> Result<Logs> {
        check_batch(x, y)?;
        if batch_size == 0 {
            return Err(NnError::usage("batch_size must be positive"));
        }
        self.evaluate_source(&mut ArrayBatches::new(x, y, batch_size), None)
    }

    /// Keras's `predict`: the model's outputs for `x`, computed in batches of
    /// `batch_size` in inference mode, nothing recorded for backward.
    pub fn predict(&self, x: &Tensor, batch_size: usize) -> Result<Tensor> {
        if batch_size == 0 {
            return Err(NnError::usage("batch_size must be positive"));
        }
        let n = x.shape().first().copied().unwrap_or(0);
        if n == 0 {
            return Err(NnError::Data(format!(
                "predict on an empty batch of shape {:?}",
                x.shape()
            )));
        }
        let params = self.param_vars(None);
        let rng = Rng::new(0);
        let mut outs = Vec::new();
        for start in (0..n).step_by(batch_size) {
            let xb = x.slice_batch(start, (start + batch_size).min(n))?;
            let (y, _) = no_grad(|| self.forward(Var::constant(xb), &params, false, &rng))?;
            outs.push(y.into_value());
        }
        if outs.len() == 1 {
            // One batch: its output as it is, not copied.
            return Ok(outs.pop().expect("one output"));
        }
        let refs: Vec<&Tensor> = outs.iter().collect();
        Ok(Tensor::concat(&refs, 0)?)
    }
}

/// Batches over in-memory tensors, in order, once.
/// With `cycle`, a new pass starts where the last one ended (for
/// validation run a fixed number of steps each epoch).
struct ArrayBatches {
    x: Tensor,
    y: Tensor,
    batch_size: usize,
    cursor: usize,
    cycle: bool,
}

impl ArrayBatches {
    fn new(x: &Tensor, y: &Tensor, batch_size: usize) -> Self {
        ArrayBatches {
            x: x.clone(),
            y: y.clone(),
            batch_size,
            cursor: 0,
            cycle: false,
        }
    }

    fn steps(&self) -> usize {
        self.x.shape()[0].div_ceil(self.batch_size)
    }
}

impl BatchSource for ArrayBatches {
    fn next_batch(&mut self) -> Option<Result<(Tensor, Tensor)>> {
        let n = self.x.shape()[0];
        if self.cursor >= n {
            self.cursor = 0;
            if !self.cycle {
                return None;
            }
        }
        let end = (self.cursor + self.batch_size).min(n);
        let r = (|| {
            Ok((
                self.x.slice_batch(self.cursor, end)?,
                self.y.slice_batch(self.cursor, end)?,
            ))
        })();
        self.cursor = end;
        Some(r)
    }
}
