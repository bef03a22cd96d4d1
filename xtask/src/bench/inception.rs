//! InceptionV3 to mixed7 at batch 32, 150x150x3 (randomly initialised:
//! speed does not depend on the weights): the frozen base's forward pass
//! (`predict` of the model cut at mixed7), and one training step of the
//! mission's transfer model (frozen base, Flatten, Dense 1024 relu,
//! Dropout 0.2, Dense 1 sigmoid; RMSprop 1e-4, binary cross-entropy), as
//! `benches/keras/bench.py inception` times Keras.
//!
//! Prints `inception mixed7 forward: N images/s` and
//! `inception transfer train: N images/s`, each followed by the median CPU
//! time of all the process's threads per batch (Linux; steadier than wall
//! time when other jobs share the cores). `--forward`: the forward pass only.

use convnet_data::{ColorMode, Interpolation};
use convnet_nn::layers::{Dense, Dropout, Flatten};
use convnet_nn::optimizers::RMSprop;
use convnet_nn::Activation::{Relu, Sigmoid};
use convnet_nn::{clear_session, set_random_seed, Apply, Loss, Metric, Model, Precision};
use convnet_tensor::Tensor;
use convnet_zoo::inception_v3::InceptionV3;

use super::{fill, median_secs};

const BATCH: usize = 32;
const SIDE: usize = 150;

/// The frozen base cut at mixed7, and the transfer model on top of it.
fn models() -> Result<(Model, Model), String> {
    let e = |e: convnet_nn::NnError| e.to_string();
    clear_session();
    set_random_seed(1);
    let mut base = InceptionV3::new()
        .include_top(false)
        .input_shape(SIDE, SIDE, 3)
        .build()
        .map_err(|e| e.to_string())?;
    base.set_trainable(false);
    let last = base.get_layer("mixed7").map_err(e)?.output();
    let cut = Model::new(&base.input(), &last).map_err(e)?;
    let x = Flatten::new().apply(&last).map_err(e)?;
    let x = Dense::new(1024).activation(Relu).apply(&x).map_err(e)?;
    let x = Dropout::new(0.2).apply(&x).map_err(e)?;
    let x = Dense::new(1).activation(Sigmoid).apply(&x).map_err(e)?;
    let mut model = Model::new(&base.input(), &x).map_err(e)?;
    model
        .compile(
            RMSprop::new(1e-4),
            Loss::BinaryCrossentropy,
            &[Metric::Accuracy],
        )
        .map_err(e)?;
    Ok((cut, model))
}

/// CPU time of all the process's threads, in seconds (Linux; 0 elsewhere).
fn cpu_secs() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        / 1e9
}

/// Median wall seconds (as [`median_secs`]) and median CPU seconds of all
/// threads of `reps` runs of `f` after `warmup` runs.
fn wall_and_cpu(warmup: usize, reps: usize, mut f: impl FnMut()) -> (f64, f64) {
    let mut cpu = Vec::new();
    let wall = median_secs(warmup, reps, || {
        let c = cpu_secs();
        f();
        cpu.push(cpu_secs() - c);
    });
    let mut cpu = cpu.split_off(warmup);
    cpu.sort_by(f64::total_cmp);
    (wall, cpu[cpu.len() / 2])
}

/// The bundled sample's validation images (up to 16 per class) at
/// 150x150, rescaled by 1/255, or `None` when the folder is not there.
fn sample_images() -> Result<Option<Tensor>, String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/sample/validation");
    let Ok(classes) = std::fs::read_dir(&root) else {
        return Ok(None);
    };
    let mut classes: Vec<_> = classes.filter_map(|e| Some(e.ok()?.path())).collect();
    classes.sort();
    let mut values = Vec::new();
    let mut count = 0;
    for class in classes {
        let mut files: Vec<_> = std::fs::read_dir(&class)
            .map_err(|e| format!("{}: {e}", class.display()))?
            .filter_map(|e| Some(e.ok()?.path()))
            .collect();
        files.sort();
        for f in files.iter().take(16) {
            let img = convnet_data::directory::load_img(
                f,
                Some((SIDE, SIDE)),
                ColorMode::Rgb,
                Interpolation::Nearest,
            )
            .map_err(|e| e.to_string())?;
            values.extend(img.values().iter().map(|v| v / 255.0));
            count += 1;
        }
    }
    Tensor::from_vec(&[count, SIDE, SIDE, 3], values)
        .map(Some)
        .map_err(|e| e.to_string())
}

/// Prints how far the base's mixed7 output in half precision lies from
/// single precision's, on the bundled sample's images (the synthetic batch
/// without them): the root mean square of the differences and the largest
/// one, both over the root mean square of the output.
fn half_error(cut: &mut Model) -> Result<(), String> {
    let (x, what) = match sample_images()? {
        Some(x) => (x, "the bundled sample's validation images"),
        None => (
            Tensor::from_vec(
                &[BATCH, SIDE, SIDE, 3],
                fill(BATCH * SIDE * SIDE * 3, 21)
                    .iter()
                    .map(|v| 0.5 + 0.5 * v)
                    .collect(),
            )
            .map_err(|e| e.to_string())?,
            "a synthetic batch",
        ),
    };
    let e = |e: convnet_nn::NnError| e.to_string();
    let half = cut.predict(&x, BATCH).map_err(e)?;
    cut.set_frozen_precision(Precision::Single);
    let single = cut.predict(&x, BATCH).map_err(e)?;
    cut.set_frozen_precision(Precision::Half);
    let (h, s) = (half.values(), single.values());
    let rms = (s.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / s.len() as f64).sqrt();
    let diff: Vec<f64> = h
        .iter()
        .zip(s.iter())
        .map(|(a, b)| (a - b).abs() as f64)
        .collect();
    let rms_diff = (diff.iter().map(|d| d * d).sum::<f64>() / diff.len() as f64).sqrt();
    let largest = diff.iter().fold(0.0f64, |a, &d| a.max(d));
    println!(
        "inception mixed7 half precision error = {:.2e} rms, {:.2e} largest, of the output's rms \
         ({} images of {what}; weights as built)",
        rms_diff / rms,
        largest / rms,
        x.shape()[0]
    );
    Ok(())
}

/// Run the benchmark (`--forward`: the forward pass only; `--half`: the
/// frozen convolutions in [`Precision::Half`], the figures named
/// `... (half)`).
pub fn run(opts: &[String]) -> Result<(), String> {
    let (mut forward_only, mut half) = (false, false);
    for o in opts {
        match o.as_str() {
            "--forward" => forward_only = true,
            "--half" => half = true,
            o => return Err(format!("unknown option `{o}`")),
        }
    }
    let (mut cut, mut model) = models()?;
    let tag = if half {
        cut.set_frozen_precision(Precision::Half);
        model.set_frozen_precision(Precision::Half);
        " (half)"
    } else {
        ""
    };
    // Images rescaled by 1/255, as the mission feeds them.
    let x: Vec<f32> = fill(BATCH * SIDE * SIDE * 3, 21)
        .iter()
        .map(|v| 0.5 + 0.5 * v)
        .collect();
    let x = Tensor::from_vec(&[BATCH, SIDE, SIDE, 3], x).map_err(|e| e.to_string())?;
    let y: Vec<f32> = (0..BATCH).map(|i| (i % 2) as f32).collect();
    let y = Tensor::from_vec(&[BATCH, 1], y).map_err(|e| e.to_string())?;

    let mut failed = None;
    // Warm-up outside the profile: the first passes fault their buffers in.
    for _ in 0..2 {
        cut.predict(&x, BATCH).map_err(|e| e.to_string())?;
    }
    convnet_autograd::profile::reset();
    let (forward, cpu) = wall_and_cpu(0, 5, || {
        if let Err(e) = cut.predict(&x, BATCH) {
            failed = Some(e.to_string());
        }
    });
    if let Some(e) = failed.take() {
        return Err(e);
    }
    println!(
        "inception mixed7 forward{tag}: {:.1} images/s (CPU {:.1} ms per batch)",
        BATCH as f64 / forward,
        cpu * 1e3
    );
    if half {
        half_error(&mut cut)?;
    }
    if forward_only {
        if convnet_autograd::profile::enabled() {
            eprint!("{}", convnet_autograd::profile::report());
        }
        return Ok(());
    }
    for _ in 0..2 {
        model.train_on_batch(&x, &y).map_err(|e| e.to_string())?;
    }
    convnet_autograd::profile::reset();
    let (train, cpu) = wall_and_cpu(0, 5, || {
        if let Err(e) = model.train_on_batch(&x, &y) {
            failed = Some(e.to_string());
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    println!(
        "inception transfer train{tag}: {:.1} images/s (CPU {:.1} ms per batch)",
        BATCH as f64 / train,
        cpu * 1e3
    );
    if convnet_autograd::profile::enabled() {
        eprint!("{}", convnet_autograd::profile::report());
    }
    Ok(())
}
