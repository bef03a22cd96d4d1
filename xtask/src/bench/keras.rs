//! `cargo xtask bench --against-keras [--rounds N] [target...]`: each
//! figure measured by us and by TensorFlow/Keras (`benches/keras/bench.py`,
//! same models, same batch, same data) in the same run, alternating, two
//! rounds (or `N`), the best of the rounds kept on each side, and the
//! ratio printed, so the comparison holds on a shared, noisy machine (on a
//! VM whose speed swings within seconds, more rounds bring both sides'
//! best closer to what the machine does when quiet). Needs a Python with
//! TensorFlow (`pip install tensorflow-cpu pillow scipy`; `PYTHON` picks the
//! interpreter, default `python3`). With `inception --half`, our figures
//! named `... (half)` are set against Keras's float32 ones.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// Rounds of (ours, Keras) unless `--rounds` says otherwise.
pub const ROUNDS: usize = 2;

/// `name -> (value, unit)` from lines `name: value unit`.
fn parse(stdout: &str) -> Vec<(String, f64, String)> {
    stdout
        .lines()
        .filter_map(|line| {
            let (name, rest) = line.rsplit_once(": ")?;
            let mut parts = rest.split_whitespace();
            let value = parts.next()?.parse().ok()?;
            let unit = parts.next()?.to_string();
            Some((name.to_string(), value, unit))
        })
        .collect()
}

/// Higher is better for throughput, lower for seconds and memory.
fn higher_is_better(unit: &str) -> bool {
    unit.ends_with("/s")
}

fn run_capture(cmd: &mut Command, what: &str) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("could not run {what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn against_keras(targets: &[(&str, Vec<String>)], rounds: usize) -> Result<(), String> {
    let targets: Vec<(&str, Vec<String>)> = if targets.is_empty() {
        super::KERAS_TARGETS
            .iter()
            .map(|t| (*t, Vec::new()))
            .collect()
    } else {
        targets.to_vec()
    };
    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../benches/keras/bench.py");
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let probe = Command::new(&python)
        .args(["-c", "import tensorflow, PIL, scipy"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        return Err(format!(
            "`{python}` cannot import tensorflow, PIL and scipy: `pip install tensorflow-cpu pillow scipy` (or set PYTHON)"
        ));
    }
    for (target, opts) in targets {
        // name -> (unit, best ours, best Keras)
        let mut best: BTreeMap<String, (String, Option<f64>, Option<f64>)> = BTreeMap::new();
        let keep = |slot: &mut Option<f64>, v: f64, unit: &str| {
            *slot = Some(match *slot {
                Some(old) if higher_is_better(unit) => old.max(v),
                Some(old) => old.min(v),
                None => v,
            });
        };
        for round in 0..rounds {
            eprintln!("[{target}] round {}/{rounds}: convnet", round + 1);
            let ours = run_capture(
                Command::new(&exe).arg("bench").arg(target).args(&opts),
                &format!("convnet {target}"),
            )?;
            for (name, v, unit) in parse(&ours) {
                let e = best.entry(name).or_insert((unit.clone(), None, None));
                keep(&mut e.1, v, &unit);
            }
            eprintln!("[{target}] round {}/{rounds}: Keras", round + 1);
            let theirs = run_capture(
                Command::new(&python).arg(&script).arg(target).args(&opts),
                &format!("Keras {target}"),
            )?;
            for (name, v, unit) in parse(&theirs) {
                let e = best.entry(name).or_insert((unit.clone(), None, None));
                keep(&mut e.2, v, &unit);
            }
        }
        // Our half-precision figures (`inception --half`) against Keras's
        // float32 figures of the same name.
        let keras_single: BTreeMap<String, f64> = best
            .iter()
            .filter_map(|(n, (_, _, k))| Some((format!("{n} (half)"), (*k)?)))
            .collect();
        for (name, (unit, ours, theirs)) in best {
            let theirs = theirs.or_else(|| keras_single.get(&name).copied());
            match (ours, theirs) {
                (Some(o), Some(k)) => {
                    let ratio = if higher_is_better(&unit) {
                        o / k
                    } else {
                        k / o
                    };
                    println!("{name}: {o:.1} {unit}; Keras {k:.1} {unit}; convnet {ratio:.2}x");
                }
                (Some(o), None) => println!("{name}: {o:.1} {unit}; Keras: no figure"),
                (None, Some(k)) => println!("{name}: no figure; Keras {k:.1} {unit}"),
                (None, None) => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_figure_lines() {
        let got = parse("basic_cnn train: 412.3 images/s\nnoise\naugmented epoch: 7.9 s\n");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], ("basic_cnn train".into(), 412.3, "images/s".into()));
        assert_eq!(got[1], ("augmented epoch".into(), 7.9, "s".into()));
        assert!(higher_is_better("images/s") && !higher_is_better("MiB"));
    }
}
