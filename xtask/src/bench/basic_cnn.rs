//! The mission's basic Cats-vs-Dogs CNN at batch 32, 150x150x3 (Conv2D 32,
//! 64, 128 with max pooling, Dense 128 and 512, sigmoid; adam, binary
//! cross-entropy): training and predict throughput on in-memory data, and
//! the peak memory of a process that trains it.
//!
//! Prints `basic_cnn train: N images/s`, `basic_cnn predict: N images/s`
//! and `peak memory basic_cnn train: N MiB`. The memory figure comes from a
//! child process (this program again, with `--memory-child`) that does
//! nothing but build the model and train it for a few steps, so earlier
//! benchmarks in this process do not count; it is the child's `VmHWM`
//! (peak resident set) from `/proc/self/status`.

use std::process::Command;

use convnet_nn::layers::{Conv2D, Dense, Flatten, MaxPooling2D};
use convnet_nn::optimizers::Adam;
use convnet_nn::Activation::{Relu, Sigmoid};
use convnet_nn::{set_random_seed, Loss, Metric, Model, Sequential};
use convnet_tensor::Tensor;

use super::{fill, median_secs};

const BATCH: usize = 32;
const SIDE: usize = 150;

/// The basic CNN, compiled as the mission compiles it.
pub fn basic_cnn() -> Result<Model, String> {
    let e = |e: convnet_nn::NnError| e.to_string();
    set_random_seed(1);
    let mut m = Sequential::new(&[SIDE, SIDE, 3]);
    m.add(Conv2D::new(32, (3, 3)).activation(Relu)).map_err(e)?;
    m.add(MaxPooling2D::new((2, 2))).map_err(e)?;
    m.add(Conv2D::new(64, (3, 3)).activation(Relu)).map_err(e)?;
    m.add(MaxPooling2D::new((2, 2))).map_err(e)?;
    m.add(Conv2D::new(128, (3, 3)).activation(Relu))
        .map_err(e)?;
    m.add(MaxPooling2D::new((2, 2))).map_err(e)?;
    m.add(Flatten::new()).map_err(e)?;
    m.add(Dense::new(128).activation(Relu)).map_err(e)?;
    m.add(Dense::new(512).activation(Relu)).map_err(e)?;
    m.add(Dense::new(1).activation(Sigmoid)).map_err(e)?;
    m.compile(
        Adam::default(),
        Loss::BinaryCrossentropy,
        &[Metric::Accuracy],
    )
    .map_err(e)?;
    Ok(m)
}

/// One batch of images in [0, 1) and 0/1 labels.
pub fn batch() -> Result<(Tensor, Tensor), String> {
    let x: Vec<f32> = fill(BATCH * SIDE * SIDE * 3, 11)
        .iter()
        .map(|v| 0.5 + 0.5 * v)
        .collect();
    let y: Vec<f32> = (0..BATCH).map(|i| (i % 2) as f32).collect();
    let x = Tensor::from_vec(&[BATCH, SIDE, SIDE, 3], x).map_err(|e| e.to_string())?;
    let y = Tensor::from_vec(&[BATCH, 1], y).map_err(|e| e.to_string())?;
    Ok((x, y))
}

/// Peak resident set of this process in KiB (`VmHWM`), where Linux says.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The child's work: train a few steps, print the peak memory.
fn memory_child() -> Result<(), String> {
    let mut model = basic_cnn()?;
    let (x, y) = batch()?;
    for _ in 0..5 {
        model.train_on_batch(&x, &y).map_err(|e| e.to_string())?;
    }
    let kib = peak_rss_kib().ok_or("no VmHWM in /proc/self/status")?;
    println!("peak memory basic_cnn train: {} MiB", kib.div_ceil(1024));
    Ok(())
}

pub fn run(opts: &[String]) -> Result<(), String> {
    match opts.first().map(String::as_str) {
        Some("--memory-child") => return memory_child(),
        Some(o) => return Err(format!("unknown option `{o}`")),
        None => {}
    }
    let mut model = basic_cnn()?;
    let (x, y) = batch()?;
    let mut failed = None;
    // Warm-up outside the timing and the profile: the first steps fault
    // their buffers in (a steady-state step does not).
    for _ in 0..3 {
        model.train_on_batch(&x, &y).map_err(|e| e.to_string())?;
    }
    convnet_autograd::profile::reset();
    let train = median_secs(0, 7, || {
        if let Err(e) = model.train_on_batch(&x, &y) {
            failed = Some(e.to_string());
        }
    });
    if let Some(e) = failed.take() {
        return Err(e);
    }
    println!("basic_cnn train: {:.1} images/s", BATCH as f64 / train);
    if convnet_autograd::profile::enabled() {
        eprint!("{}", convnet_autograd::profile::report());
    }
    for _ in 0..2 {
        model.predict(&x, BATCH).map_err(|e| e.to_string())?;
    }
    convnet_autograd::profile::reset();
    let predict = median_secs(0, 9, || {
        if let Err(e) = model.predict(&x, BATCH) {
            failed = Some(e.to_string());
        }
    });
    if let Some(e) = failed {
        return Err(e);
    }
    println!("basic_cnn predict: {:.1} images/s", BATCH as f64 / predict);
    if convnet_autograd::profile::enabled() {
        eprint!("{}", convnet_autograd::profile::report());
    }

    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let out = Command::new(exe)
        .args(["bench", "basic_cnn", "--memory-child"])
        .output()
        .map_err(|e| format!("running the memory child: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "memory child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    print!("{}", String::from_utf8_lossy(&out.stdout));
    Ok(())
}
