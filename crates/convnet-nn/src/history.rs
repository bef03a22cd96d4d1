//! [`History`]: per-epoch metrics returned by `fit`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Metrics by name for one epoch or step, sorted by name as Keras prints
/// them (`accuracy`, `loss`, `val_accuracy`, `val_loss`).
pub type Logs = BTreeMap<String, f32>;

/// Keras's `History`: for each metric, its value at the end of each epoch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct History {
    /// The epochs run (0-based, as Keras's `history.epoch`).
    pub epoch: Vec<usize>,
    /// Metric name -> one value per epoch.
    pub history: BTreeMap<String, Vec<f32>>,
}

impl History {
    /// The values of a metric, e.g. `history.get("val_accuracy")`.
    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.history.get(name).map(|v| v.as_slice())
    }

    /// Record the logs of one (0-based) epoch.
    pub fn push_epoch(&mut self, epoch: usize, logs: &Logs) {
        self.epoch.push(epoch);
        for (k, v) in logs {
            self.history.entry(k.clone()).or_default().push(*v);
        }
    }

    /// The history as CSV: a header `epoch,accuracy,loss,...` and one row
    /// per epoch (1-based epochs, as printed during training).
    pub fn to_csv(&self) -> String {
        let names: Vec<&String> = self.history.keys().collect();
        let mut out = String::from("epoch");
        for n in &names {
            out.push(',');
            out.push_str(n);
        }
        out.push('\n');
        for (i, e) in self.epoch.iter().enumerate() {
            let _ = write!(out, "{}", e + 1);
            for n in &names {
                match self.history[*n].get(i) {
                    Some(v) => {
                        let _ = write!(out, ",{v}");
                    }
                    None => out.push(','),
                }
            }
            out.push('\n');
        }
        out
    }
}
