//! The CPU cost of one image through `flow_from_directory` (read, decode,
//! augment or resize, rescale), measured so that other processes on a busy
//! machine disturb it little: each image is built `REPEATS` times on one
//! thread and its fastest time kept; the figure is the sum over the folder.
//!
//! `cargo run --release -p convnet-data --example image_cost -- DIR [N]`
//! (DIR in the Kaggle layout, e.g. the `train/` folder that `cargo xtask
//! bench data` generates; N images at most, default all).

use std::time::Instant;

use convnet_data::{ClassMode, FlowOptions, ImageDataGenerator};

const REPEATS: usize = 5;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = args.first().ok_or("usage: image_cost DIR [N]")?;
    let limit: usize = match args.get(1) {
        Some(n) => n.parse()?,
        None => usize::MAX,
    };
    let augment = ImageDataGenerator::new()
        .rescale(1.0 / 255.0)
        .width_shift_range(0.2)
        .height_shift_range(0.2)
        .shear_range(0.2)
        .zoom_range(0.2);
    let rescale = ImageDataGenerator::new().rescale(1.0 / 255.0);
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    for (name, generator) in [("augment", augment), ("rescale", rescale)] {
        let (n, total) = pool.install(|| -> Result<(usize, f64), convnet_data::DataError> {
            let flow = generator.flow_from_directory(
                dir,
                FlowOptions {
                    target_size: (150, 150),
                    class_mode: ClassMode::Sparse,
                    batch_size: 1,
                    shuffle: false,
                    seed: Some(1),
                    verbose: false,
                    prefetch: 0,
                    ..FlowOptions::default()
                },
            )?;
            let n = flow.samples().min(limit);
            let mut total = 0.0;
            for i in 0..n {
                let mut best = f64::INFINITY;
                for _ in 0..REPEATS {
                    let t = Instant::now();
                    let b = flow.batch(0, i)?;
                    best = best.min(t.elapsed().as_secs_f64());
                    drop(b);
                }
                total += best;
            }
            Ok((n, total))
        })?;
        println!(
            "{name}: {:.1} us per image ({:.0} images per CPU-second)",
            total / n as f64 * 1e6,
            n as f64 / total
        );
    }
    Ok(())
}
