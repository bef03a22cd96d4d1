//! `History::plot`: the training-vs-validation curves every Keras tutorial
//! draws, as PNG.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use crate::{History, NnError, Result};

static FONT: Once = Once::new();

fn register_font() {
    FONT.call_once(|| {
        // Embedded DejaVu Sans: no system fonts needed.
        let _ = plotters::style::register_font(
            "sans-serif",
            FontStyle::Normal,
            dejavu::sans::regular(),
        );
    });
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> NnError {
    NnError::Usage(format!("{}: cannot draw the plot: {e}", path.display()))
}

fn draw_metric<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    history: &History,
    metric: &str,
    title: &str,
) -> std::result::Result<(), String> {
    let train = history.get(metric).unwrap_or(&[]);
    let val = history.get(&format!("val_{metric}")).unwrap_or(&[]);
    let epochs = train.len().max(val.len()).max(1);
    let all: Vec<f32> = train
        .iter()
        .chain(val)
        .copied()
        .filter(|v| v.is_finite())
        .collect();
    let (mut lo, mut hi) = all
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &v| {
            (l.min(v), h.max(v))
        });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.08).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 22))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(56)
        .build_cartesian_2d(1f32..(epochs as f32).max(2.0), (lo - pad)..(hi + pad))
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc(metric)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())?;
    for (values, label, color) in [(train, "Training", BLUE), (val, "Validation", RED)] {
        if values.is_empty() {
            continue;
        }
        let points: Vec<(f32, f32)> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| ((i + 1) as f32, v))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(format!("{label} {metric}"))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(())
}

impl History {
    /// Draw one metric (`"accuracy"` or `"loss"`), training and validation
    /// per epoch, as a PNG titled `title` (e.g. "Training and validation
    /// accuracy").
    pub fn plot_metric(&self, metric: &str, title: &str, path: &Path) -> Result<()> {
        register_font();
        let root = BitMapBackend::new(path, (800, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        draw_metric(&root, self, metric, title).map_err(|e| plot_err(path, e))?;
        root.present().map_err(|e| plot_err(path, e))?;
        Ok(())
    }

    /// The mission's two figures side by side in one PNG: training vs
    /// validation accuracy, and training vs validation loss.
    pub fn plot(&self, path: &Path) -> Result<()> {
        register_font();
        let root = BitMapBackend::new(path, (1400, 520)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        let (left, right) = root.split_horizontally(700);
        draw_metric(&left, self, "accuracy", "Training and validation accuracy")
            .map_err(|e| plot_err(path, e))?;
        draw_metric(&right, self, "loss", "Training and validation loss")
            .map_err(|e| plot_err(path, e))?;
        root.present().map_err(|e| plot_err(path, e))?;
        Ok(())
    }
}
