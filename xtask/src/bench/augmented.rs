//! One epoch of the mission's second program: the basic CNN trained for 100
//! steps of 32 images read from an image folder through
//! `flow_from_directory` with the mission's augmentation (rescale 1/255,
//! width/height shift 0.2, shear 0.2, zoom 0.2), 150x150, binary labels.
//!
//! Prints `augmented epoch: N s`. `--dir DIR` picks the folder (Kaggle
//! layout: its `train/` subfolder is used when there is one); by default
//! `data/cats_and_dogs_filtered` when `cargo xtask fetch-data` has fetched
//! it, else the bundled `data/sample`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use convnet_data::{ClassMode, FlowOptions, ImageDataGenerator};
use convnet_nn::FitOptions;

use super::basic_cnn::basic_cnn;

const STEPS: usize = 100;

/// The folder to read: `--dir`, else the fetched data, else the sample.
fn folder(opts: &[String]) -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = match opts {
        [] => {
            let fetched = root.join("data/cats_and_dogs_filtered");
            if fetched.is_dir() {
                fetched
            } else {
                root.join("data/sample")
            }
        }
        [flag, dir] if flag == "--dir" => PathBuf::from(dir),
        other => return Err(format!("unknown options {other:?} (expected --dir DIR)")),
    };
    let train = dir.join("train");
    Ok(if train.is_dir() { train } else { dir })
}

pub fn run(opts: &[String]) -> Result<(), String> {
    let dir = folder(opts)?;
    let generator = ImageDataGenerator::new()
        .rescale(1.0 / 255.0)
        .width_shift_range(0.2)
        .height_shift_range(0.2)
        .shear_range(0.2)
        .zoom_range(0.2);
    let flow_options = FlowOptions {
        target_size: (150, 150),
        class_mode: ClassMode::Binary,
        batch_size: 32,
        seed: Some(1),
        verbose: false,
        ..FlowOptions::default()
    };
    let mut flow = generator
        .flow_from_directory(&dir, flow_options)
        .map_err(|e| e.to_string())?;
    let mut model = basic_cnn()?;
    let fit = |steps| FitOptions {
        epochs: 1,
        steps_per_epoch: Some(steps),
        verbose: 0,
        ..FitOptions::default()
    };
    // Warm-up: a few steps (thread pools, allocator, first decode).
    model
        .fit(&mut flow, None, &fit(5))
        .map_err(|e| e.to_string())?;
    let t = Instant::now();
    model
        .fit(&mut flow, None, &fit(STEPS))
        .map_err(|e| e.to_string())?;
    println!("augmented epoch: {:.1} s", t.elapsed().as_secs_f64());
    eprintln!("(folder {})", dir.display());
    Ok(())
}
