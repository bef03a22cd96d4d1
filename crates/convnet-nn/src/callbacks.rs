//! Callbacks run by `fit`: the [`Callback`] trait and Keras's
//! `EarlyStopping`, `ModelCheckpoint`, `TerminateOnNaN` and
//! `BackupAndRestore`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use convnet_tensor::Tensor;

use crate::history::Logs;
use crate::{Model, NnError, Result};

/// Whether training goes on after a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    Continue,
    /// Stop after this step or epoch (Keras's `model.stop_training = True`).
    Stop,
}

/// Hooks into `fit`. Epochs and steps are 1-based, as printed. Returning an
/// error stops training with that error.
pub trait Callback {
    /// Before anything else: a callback that restores an interrupted run
    /// (such as [`BackupAndRestore`]) loads its state into `model` and
    /// returns the number of epochs already done; `fit` then starts there.
    fn on_train_restore(&mut self, _model: &mut Model) -> Result<Option<usize>> {
        Ok(None)
    }

    /// Before the first epoch.
    fn on_train_begin(&mut self, _model: &Model) -> Result<()> {
        Ok(())
    }

    /// After each training step, with the step's loss and the epoch's
    /// running logs.
    fn on_batch_end(
        &mut self,
        _epoch: usize,
        _step: usize,
        _loss: f32,
        _logs: &Logs,
    ) -> Result<Control> {
        Ok(Control::Continue)
    }

    /// After each epoch (validation included).
    fn on_epoch_end(&mut self, _epoch: usize, _logs: &Logs, _model: &Model) -> Result<Control> {
        Ok(Control::Continue)
    }

    /// After the last epoch.
    fn on_train_end(&mut self, _model: &Model) -> Result<()> {
        Ok(())
    }
}

/// Whether a monitored metric is better when lower or higher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Lower is better (losses).
    Min,
    /// Higher is better (accuracies).
    Max,
    /// `Max` for names containing "acc", `Min` otherwise, as Keras's "auto".
    Auto,
}

impl Mode {
    fn resolve(self, monitor: &str) -> Mode {
        match self {
            Mode::Auto if monitor.contains("acc") => Mode::Max,
            Mode::Auto => Mode::Min,
            m => m,
        }
    }

    fn better(self, value: f32, best: f32, min_delta: f32) -> bool {
        match self {
            Mode::Max => value > best + min_delta,
            _ => value < best - min_delta,
        }
    }

    fn worst(self) -> f32 {
        match self {
            Mode::Max => f32::NEG_INFINITY,
            _ => f32::INFINITY,
        }
    }
}

fn monitored(logs: &Logs, monitor: &str, who: &str) -> Result<f32> {
    logs.get(monitor).copied().ok_or_else(|| {
        NnError::usage(format!(
            "{who}: the monitored metric \"{monitor}\" is not in the logs (available: {})",
            logs.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })
}

/// Keras's `TerminateOnNaN`: a loss that becomes NaN or infinite stops
/// training with an error naming the epoch and step. Checkpoints written
/// before stay as they are.
#[derive(Debug, Clone, Default)]
pub struct TerminateOnNaN;

impl Callback for TerminateOnNaN {
    fn on_batch_end(
        &mut self,
        epoch: usize,
        step: usize,
        loss: f32,
        _logs: &Logs,
    ) -> Result<Control> {
        if loss.is_finite() {
            Ok(Control::Continue)
        } else {
            Err(NnError::NonFiniteLoss {
                epoch,
                step,
                value: loss,
            })
        }
    }
}

/// Keras's `EarlyStopping`: stop when `monitor` has not improved by more
/// than `min_delta` for `patience` epochs; optionally restore the best
/// weights at the end.
#[derive(Debug, Clone)]
pub struct EarlyStopping {
    /// The metric watched, e.g. `"val_loss"`.
    pub monitor: String,
    /// Smallest change that counts as an improvement.
    pub min_delta: f32,
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// Direction of improvement.
    pub mode: Mode,
    /// Put back the weights of the best epoch when training ends.
    pub restore_best_weights: bool,
    best: f32,
    wait: usize,
    best_weights: Option<Vec<(String, Tensor)>>,
    /// The epoch (1-based) training stopped at, if it did.
    pub stopped_epoch: Option<usize>,
}

impl EarlyStopping {
    /// Watch `monitor` with this patience (Keras's defaults otherwise).
    pub fn new(monitor: &str, patience: usize) -> Self {
        EarlyStopping {
            monitor: monitor.to_string(),
            min_delta: 0.0,
            patience,
            mode: Mode::Auto,
            restore_best_weights: false,
            best: f32::NAN,
            wait: 0,
            best_weights: None,
            stopped_epoch: None,
        }
    }

    /// Restore the best weights at the end.
    pub fn restore_best_weights(mut self, yes: bool) -> Self {
        self.restore_best_weights = yes;
        self
    }
}

impl Callback for EarlyStopping {
    fn on_train_begin(&mut self, _model: &Model) -> Result<()> {
        self.best = self.mode.resolve(&self.monitor).worst();
        self.wait = 0;
        self.best_weights = None;
        self.stopped_epoch = None;
        Ok(())
    }

    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, model: &Model) -> Result<Control> {
        let value = monitored(logs, &self.monitor, "EarlyStopping")?;
        let mode = self.mode.resolve(&self.monitor);
        if mode.better(value, self.best, self.min_delta) {
            self.best = value;
            self.wait = 0;
            if self.restore_best_weights {
                self.best_weights = Some(model.get_weights());
            }
            return Ok(Control::Continue);
        }
        self.wait += 1;
        if self.wait >= self.patience {
            self.stopped_epoch = Some(epoch);
            return Ok(Control::Stop);
        }
        Ok(Control::Continue)
    }

    fn on_train_end(&mut self, model: &Model) -> Result<()> {
        if let Some(w) = self.best_weights.take() {
            model.set_weights(&w)?;
        }
        Ok(())
    }
}

/// Keras's `ModelCheckpoint`: save the weights (safetensors, written
/// atomically) after each epoch, or only when `monitor` improves. `{epoch}`
/// in the path is replaced by the 1-based epoch number.
#[derive(Debug, Clone)]
pub struct ModelCheckpoint {
    /// Where to write; may contain `{epoch}`.
    pub path: PathBuf,
    /// The metric watched with `save_best_only`.
    pub monitor: String,
    /// Save only when the monitored metric improves.
    pub save_best_only: bool,
    /// Direction of improvement.
    pub mode: Mode,
    best: f32,
    /// Files written so far.
    pub saved: Vec<PathBuf>,
}

impl ModelCheckpoint {
    /// Save to `path` every epoch.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        ModelCheckpoint {
            path: path.into(),
            monitor: "val_loss".into(),
            save_best_only: false,
            mode: Mode::Auto,
            best: f32::NAN,
            saved: Vec::new(),
        }
    }

    /// Save only when `monitor` improves.
    pub fn save_best_only(mut self, monitor: &str) -> Self {
        self.monitor = monitor.to_string();
        self.save_best_only = true;
        self
    }
}

impl Callback for ModelCheckpoint {
    fn on_train_begin(&mut self, _model: &Model) -> Result<()> {
        self.best = self.mode.resolve(&self.monitor).worst();
        Ok(())
    }

    fn on_epoch_end(&mut self, epoch: usize, logs: &Logs, model: &Model) -> Result<Control> {
        if self.save_best_only {
            let value = monitored(logs, &self.monitor, "ModelCheckpoint")?;
            let mode = self.mode.resolve(&self.monitor);
            if !mode.better(value, self.best, 0.0) {
                return Ok(Control::Continue);
            }
            self.best = value;
        }
        let path = PathBuf::from(
            self.path
                .to_string_lossy()
                .replace("{epoch}", &epoch.to_string()),
        );
        model.save_weights(&path)?;
        self.saved.push(path);
        Ok(Control::Continue)
    }
}

/// Keras's `BackupAndRestore`: after each epoch, a checkpoint of the
/// weights, the optimizer state and the number of epochs done, written
/// atomically to `backup_dir/checkpoint.safetensors`. When `fit` starts and
/// that file exists (the run before was interrupted), the model and
/// optimizer are restored from it and training continues with the next
/// epoch. The dropout masks and the data order depend only on the seed and
/// the epoch and step, and `fit` skips the batches the finished epochs used,
/// so a resumed run ends with the same weights as an uninterrupted one
/// (given the same seed and data source). The backup is deleted when
/// training completes, unless `delete_checkpoint` is false.
///
/// ```no_run
/// # use convnet_nn::{Model, FitOptions, callbacks::BackupAndRestore};
/// # fn f(model: &mut Model, train: &mut dyn convnet_nn::BatchSource) -> convnet_nn::Result<()> {
/// let mut backup = BackupAndRestore::new("runs/backup");
/// let options = FitOptions { epochs: 15, steps_per_epoch: Some(100), ..Default::default() };
/// model.fit_with_callbacks(train, None, &options, &mut [&mut backup])?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct BackupAndRestore {
    /// The folder holding the backup.
    pub backup_dir: PathBuf,
    /// Delete the backup when training completes (Keras's default).
    pub delete_checkpoint: bool,
    /// The epochs found done when training started (0 for a fresh run).
    pub restored_epochs: usize,
}

impl BackupAndRestore {
    /// Back up into `backup_dir` (created when needed).
    pub fn new(backup_dir: impl Into<PathBuf>) -> Self {
        BackupAndRestore {
            backup_dir: backup_dir.into(),
            delete_checkpoint: true,
            restored_epochs: 0,
        }
    }

    /// The checkpoint file.
    pub fn path(&self) -> PathBuf {
        self.backup_dir.join("checkpoint.safetensors")
    }
}

impl Callback for BackupAndRestore {
    fn on_train_restore(&mut self, model: &mut Model) -> Result<Option<usize>> {
        let path = self.path();
        if !path.exists() {
            self.restored_epochs = 0;
            return Ok(None);
        }
        let meta = model.load_checkpoint_meta(&path)?;
        let epochs = meta
            .get("epochs_done")
            .and_then(|e| e.parse::<usize>().ok())
            .ok_or_else(|| NnError::Weights {
                path: path.display().to_string(),
                message: "not a BackupAndRestore checkpoint (no \"epochs_done\" metadata)".into(),
            })?;
        self.restored_epochs = epochs;
        Ok(Some(epochs))
    }

    fn on_epoch_end(&mut self, epoch: usize, _logs: &Logs, model: &Model) -> Result<Control> {
        std::fs::create_dir_all(&self.backup_dir).map_err(|e| NnError::Weights {
            path: self.backup_dir.display().to_string(),
            message: format!("cannot create the backup folder: {e}"),
        })?;
        let meta = BTreeMap::from([("epochs_done".to_string(), epoch.to_string())]);
        model.save_checkpoint_with(&self.path(), meta)?;
        Ok(Control::Continue)
    }

    fn on_train_end(&mut self, _model: &Model) -> Result<()> {
        if self.delete_checkpoint {
            match std::fs::remove_file(self.path()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(NnError::Weights {
                        path: self.path().display().to_string(),
                        message: format!("cannot delete the backup: {e}"),
                    })
                }
            }
        }
        Ok(())
    }
}
