//! `model.summary()`, drawn as Keras 3 draws it.

use crate::graph::NodeKind;
use crate::layer::batch_shape;
use crate::model::ModelKind;
use crate::Model;

/// `4894913` -> `4,894,913`.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// Bytes of `params` f32 values, as Keras prints them: `18.67 MB`.
fn size(params: usize) -> String {
    let b = params as f64 * 4.0;
    let units = ["B", "KB", "MB", "GB", "TB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u < units.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.2} {}", units[u])
}

struct Table {
    widths: Vec<usize>,
    right: Vec<bool>,
    out: String,
}

impl Table {
    fn rule(&mut self, l: &str, fill: &str, mid: &str, r: &str) {
        self.out.push_str(l);
        let parts: Vec<String> = self.widths.iter().map(|w| fill.repeat(w + 2)).collect();
        self.out.push_str(&parts.join(mid));
        self.out.push_str(r);
        self.out.push('\n');
    }

    fn row(&mut self, cells: &[Vec<String>], edge: &str) {
        let height = cells.iter().map(|c| c.len()).max().unwrap_or(1);
        for line in 0..height {
            self.out.push_str(edge);
            for (i, c) in cells.iter().enumerate() {
                let text = c.get(line).map(String::as_str).unwrap_or("");
                let w = self.widths[i];
                let padded = if self.right[i] {
                    format!("{text:>w$}")
                } else {
                    format!("{text:<w$}")
                };
                self.out.push(' ');
                self.out.push_str(&padded);
                self.out.push(' ');
                self.out.push_str(edge);
            }
            self.out.push('\n');
        }
    }
}

impl Model {
    /// The summary table as text: each layer's name and type, output shape
    /// and parameter count (and for branching models what it is connected
    /// to), then the total, trainable and non-trainable parameter counts.
    pub fn summary_string(&self) -> String {
        let g = self.graph.borrow();
        let functional = self.kind == ModelKind::Functional;
        let mut rows: Vec<Vec<Vec<String>>> = Vec::new();
        for &n in &self.order {
            let node = &g.nodes[n];
            let (label, params) = match &node.kind {
                NodeKind::Input { name } => {
                    if !functional {
                        continue;
                    }
                    (format!("{name} (InputLayer)"), 0)
                }
                NodeKind::Layer(l) => {
                    let layer = &g.layers[*l];
                    (
                        format!("{} ({})", layer.name(), layer.class_name()),
                        layer.weights().iter().map(|w| w.value.len()).sum(),
                    )
                }
            };
            let mut row = vec![
                vec![label],
                vec![batch_shape(&node.shape)],
                vec![thousands(params)],
            ];
            if functional {
                let connected: Vec<String> = node
                    .inputs
                    .iter()
                    .map(|&i| {
                        let name = match &g.nodes[i].kind {
                            NodeKind::Input { name } => name.clone(),
                            NodeKind::Layer(l) => g.layers[*l].name().to_string(),
                        };
                        format!("{name}[0][0]")
                    })
                    .collect();
                row.push(if connected.is_empty() {
                    vec!["-".to_string()]
                } else {
                    connected
                });
            }
            rows.push(row);
        }
        drop(g);
        let mut headers = vec!["Layer (type)", "Output Shape", "Param #"];
        if functional {
            headers.push("Connected to");
        }
        let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
        for row in &rows {
            for (i, cell) in row.iter().enumerate() {
                for line in cell {
                    widths[i] = widths[i].max(line.chars().count());
                }
            }
        }
        // Keras's minimum column widths.
        let mins = [31, 22, 13, 17];
        for (w, m) in widths.iter_mut().zip(mins) {
            *w = (*w).max(m);
        }
        let right = vec![false, false, true, false];
        let mut t = Table {
            widths,
            right,
            out: String::new(),
        };
        t.out.push_str(&format!("Model: \"{}\"\n", self.name));
        t.rule("┏", "━", "┳", "┓");
        let header: Vec<Vec<String>> = headers.iter().map(|h| vec![h.to_string()]).collect();
        t.row(&header, "┃");
        t.rule("┡", "━", "╇", "┩");
        for (i, row) in rows.iter().enumerate() {
            if i > 0 {
                t.rule("├", "─", "┼", "┤");
            }
            t.row(row, "│");
        }
        t.rule("└", "─", "┴", "┘");
        let (trainable, frozen) = self.count_params_split();
        let total = trainable + frozen;
        t.out.push_str(&format!(
            " Total params: {} ({})\n",
            thousands(total),
            size(total)
        ));
        t.out.push_str(&format!(
            " Trainable params: {} ({})\n",
            thousands(trainable),
            size(trainable)
        ));
        t.out.push_str(&format!(
            " Non-trainable params: {} ({})\n",
            thousands(frozen),
            size(frozen)
        ));
        t.out
    }

    /// Print [`Model::summary_string`] (Keras's `model.summary()`).
    pub fn summary(&self) {
        print!("{}", self.summary_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_as_keras_prints_them() {
        assert_eq!(thousands(4894913), "4,894,913");
        assert_eq!(thousands(896), "896");
        assert_eq!(thousands(0), "0");
        assert_eq!(size(4894913), "18.67 MB");
        assert_eq!(size(0), "0.00 B");
    }
}
