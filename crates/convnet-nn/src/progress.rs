//! Keras-style console output during `fit`.

use std::time::Duration;

use crate::history::Logs;

/// `loss: 0.5288 - accuracy: 0.7312`, metrics in name order as Keras 3.
pub(crate) fn format_logs(logs: &Logs) -> String {
    logs.iter()
        .map(|(k, v)| format!("{k}: {v:.4}"))
        .collect::<Vec<_>>()
        .join(" - ")
}

/// Keras's time per step: `120ms/step`, `15s/step`, `850us/step`.
pub(crate) fn per_step(d: Duration, steps: usize) -> String {
    let s = d.as_secs_f64() / steps.max(1) as f64;
    if s >= 1.0 {
        format!("{s:.0}s/step")
    } else if s >= 1e-3 {
        format!("{:.0}ms/step", s * 1e3)
    } else {
        format!("{:.0}us/step", s * 1e6)
    }
}

pub(crate) struct Progress {
    verbose: u8,
    total: Option<usize>,
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    pub fn new(verbose: u8, total: Option<usize>) -> Self {
        let bar = (verbose == 1).then(|| {
            let bar = match total {
                Some(t) => indicatif::ProgressBar::new(t as u64),
                None => indicatif::ProgressBar::new_spinner(),
            };
            bar.set_draw_target(indicatif::ProgressDrawTarget::stdout());
            let style = indicatif::ProgressStyle::with_template(
                "{pos}/{len} {bar:20} {elapsed} (ETA {eta}) {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("━━─");
            bar.set_style(style);
            bar
        });
        Progress {
            verbose,
            total,
            bar,
        }
    }

    pub fn step(&mut self, step: usize, logs: &Logs) {
        if let Some(bar) = &self.bar {
            bar.set_position(step as u64);
            bar.set_message(format!("- {}", format_logs(logs)));
        }
    }

    pub fn finish(&mut self, steps: usize, elapsed: Duration, logs: &Logs) {
        let line = format!(
            "{}/{} - {:.0}s - {} - {}",
            steps,
            self.total.unwrap_or(steps),
            elapsed.as_secs_f64(),
            per_step(elapsed, steps),
            format_logs(logs)
        );
        match (&self.bar, self.verbose) {
            (Some(bar), _) => bar.finish_with_message(format!("- {}", format_logs(logs))),
            (None, 2) => println!("{line}"),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keras_like_line_pieces() {
        let mut logs = Logs::new();
        logs.insert("loss".into(), 0.52881);
        logs.insert("accuracy".into(), 0.73119);
        logs.insert("val_loss".into(), 0.5634);
        logs.insert("val_accuracy".into(), 0.711);
        assert_eq!(
            format_logs(&logs),
            "accuracy: 0.7312 - loss: 0.5288 - val_accuracy: 0.7110 - val_loss: 0.5634"
        );
        assert_eq!(per_step(Duration::from_millis(12_000), 100), "120ms/step");
        assert_eq!(per_step(Duration::from_micros(8_500), 10), "850us/step");
    }
}
