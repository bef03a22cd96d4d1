//! Saving and loading a model's weights as safetensors, keyed
//! `{layer name}/{weight name}` with Keras's weight names.

use std::collections::BTreeMap;
use std::path::Path;

use convnet_tensor::{safetensors, Tensor};

use crate::{Model, NnError, Result};

impl Model {
    /// Every weight as `("{layer}/{weight}", value)`, in layer order.
    pub fn get_weights(&self) -> Vec<(String, Tensor)> {
        self.weights().into_iter().map(|(k, v, _)| (k, v)).collect()
    }

    /// Set weights by key; every key must name a weight of this model with
    /// the same shape. Weights not mentioned keep their values.
    pub fn set_weights(&self, weights: &[(String, Tensor)]) -> Result<()> {
        let ids = self.layer_ids();
        let mut g = self.graph.borrow_mut();
        let mut slots: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for &l in &ids {
            for (i, w) in g.layers[l].weights().iter().enumerate() {
                slots.insert(format!("{}/{}", g.layers[l].name(), w.name), (l, i));
            }
        }
        let mut problems = Vec::new();
        for (k, v) in weights {
            match slots.get(k) {
                None => problems.push(format!("unexpected weight \"{k}\"")),
                Some(&(l, i)) => {
                    let want = g.layers[l].weights()[i].value.shape();
                    if want != v.shape() {
                        problems.push(format!(
                            "weight \"{k}\" has shape {:?}, the model needs {want:?}",
                            v.shape()
                        ));
                    }
                }
            }
        }
        if !problems.is_empty() {
            return Err(NnError::usage(problems.join("; ")));
        }
        for (k, v) in weights {
            let (l, i) = slots[k];
            g.layers[l].core_mut().weights[i].value = v.clone();
        }
        Ok(())
    }

    /// Save all weights to a safetensors file, atomically (a temporary file,
    /// fsync, rename): a crash mid-save leaves any previous file intact.
    pub fn save_weights(&self, path: &Path) -> Result<()> {
        let weights = self.get_weights();
        let refs: Vec<(&str, &Tensor)> = weights.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "convnet".to_string());
        meta.insert("model".to_string(), self.name.clone());
        safetensors::save(path, &refs, &meta)?;
        Ok(())
    }

    /// Load weights saved by [`Model::save_weights`] (or converted from
    /// Keras). Every weight of the model must be present with its shape;
    /// every mismatch (missing, unexpected, wrong shape) is reported by
    /// name. f16 and bf16 files are widened to f32.
    ///
    /// Weights holding NaN or infinity load (they may be intended) but
    /// each such tensor is reported on stderr with its count, naming the
    /// file; [`non_finite_report`] gives the same list.
    pub fn load_weights(&self, path: &Path) -> Result<()> {
        let file = safetensors::load(path)?;
        let shown = path.display().to_string();
        self.check_weight_names(&file, &shown)?;
        for line in non_finite_report(&file.tensors) {
            eprintln!("warning: {shown}: {line}");
        }
        self.set_weights(&file.tensors)
    }

    /// Every weight present with its shape, nothing unexpected; all
    /// problems reported together, by name.
    fn check_weight_names(&self, file: &safetensors::SafeTensors, shown: &str) -> Result<()> {
        let have: BTreeMap<&str, &Tensor> =
            file.tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut problems = Vec::new();
        for (k, v, _) in self.weights() {
            match have.get(k.as_str()) {
                None => problems.push(format!("missing \"{k}\"")),
                Some(t) if t.shape() != v.shape() => problems.push(format!(
                    "\"{k}\" has shape {:?} in the file, the model needs {:?}",
                    t.shape(),
                    v.shape()
                )),
                Some(_) => {}
            }
        }
        let wanted: std::collections::BTreeSet<String> =
            self.weights().into_iter().map(|w| w.0).collect();
        for k in have.keys() {
            if !wanted.contains(*k) {
                problems.push(format!("unexpected \"{k}\""));
            }
        }
        if !problems.is_empty() {
            return Err(NnError::Weights {
                path: shown.to_string(),
                message: problems.join("; "),
            });
        }
        Ok(())
    }
}

/// One line per tensor holding NaN or infinite values:
/// `"conv2d/kernel": 3 NaN, 1 infinite of 864 values`.
pub fn non_finite_report(tensors: &[(String, Tensor)]) -> Vec<String> {
    tensors
        .iter()
        .filter_map(|(name, t)| {
            let values = t.values();
            let nan = values.iter().filter(|v| v.is_nan()).count();
            let inf = values.iter().filter(|v| v.is_infinite()).count();
            (nan + inf > 0).then(|| {
                format!(
                    "\"{name}\": {nan} NaN, {inf} infinite of {} values",
                    values.len()
                )
            })
        })
        .collect()
}

/// Prefix of optimizer slots in a checkpoint file.
const OPTIMIZER_PREFIX: &str = "optimizer/";

impl Model {
    /// Save the weights and, when compiled, the optimizer's state (its
    /// slots under `optimizer/{layer}/{weight}/{slot}` and its step count),
    /// atomically, so training can resume where it stopped.
    pub fn save_checkpoint(&self, path: &Path) -> Result<()> {
        self.save_checkpoint_with(path, BTreeMap::new())
    }

    /// [`Model::save_checkpoint`] with extra metadata entries.
    pub(crate) fn save_checkpoint_with(
        &self,
        path: &Path,
        mut meta: BTreeMap<String, String>,
    ) -> Result<()> {
        let mut entries = self.get_weights();
        meta.insert("format".to_string(), "convnet".to_string());
        meta.insert("model".to_string(), self.name.clone());
        if let Some(opt) = self.optimizer() {
            meta.insert("optimizer".to_string(), opt.name().to_string());
            for (k, v) in opt.state() {
                entries.push((format!("{OPTIMIZER_PREFIX}{k}"), v));
            }
        }
        let refs: Vec<(&str, &Tensor)> = entries.iter().map(|(k, v)| (k.as_str(), v)).collect();
        safetensors::save(path, &refs, &meta)?;
        Ok(())
    }

    /// Load a checkpoint written by [`Model::save_checkpoint`]: the weights
    /// (checked as [`Model::load_weights`] checks them) and the optimizer
    /// state, which must come from the same kind of optimizer as the one
    /// this model was compiled with.
    pub fn load_checkpoint(&mut self, path: &Path) -> Result<()> {
        self.load_checkpoint_meta(path).map(|_| ())
    }

    /// [`Model::load_checkpoint`], returning the file's metadata.
    pub(crate) fn load_checkpoint_meta(&mut self, path: &Path) -> Result<BTreeMap<String, String>> {
        let shown = path.display().to_string();
        let file = safetensors::load(path)?;
        let (opt_entries, weights): (Vec<_>, Vec<_>) = file
            .tensors
            .into_iter()
            .partition(|(k, _)| k.starts_with(OPTIMIZER_PREFIX));
        let tmp = safetensors::SafeTensors {
            tensors: weights,
            metadata: file.metadata.clone(),
        };
        self.check_weight_names(&tmp, &shown)?;
        if let Some(saved) = file.metadata.get("optimizer") {
            let opt = self.optimizer_mut().ok_or_else(|| {
                NnError::usage(
                    "load_checkpoint: compile the model before loading an optimizer state",
                )
            })?;
            if opt.name() != saved {
                return Err(NnError::Weights {
                    path: shown,
                    message: format!(
                        "the checkpoint holds {saved} state, the model is compiled with {}",
                        opt.name()
                    ),
                });
            }
            let state: BTreeMap<String, Tensor> = opt_entries
                .into_iter()
                .map(|(k, v)| (k[OPTIMIZER_PREFIX.len()..].to_string(), v))
                .collect();
            opt.load_state(&state)?;
        }
        self.set_weights(&tmp.tensors)?;
        Ok(file.metadata)
    }
}
