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
    pub fn load_weights(&self, path: &Path) -> Result<()> {
        let file = safetensors::load(path)?;
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
                path: path.display().to_string(),
                message: problems.join("; "),
            });
        }
        self.set_weights(&file.tensors)
    }
}
