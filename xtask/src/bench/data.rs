//! Image-folder throughput: `flow_from_directory` at 150x150, batches of
//! 32, over one full pass of the files (the median of three passes after
//! one of warm-up, as epochs after the first), in images/s, with the mission's
//! augmentation (rescale 1/255, width/height shift 0.2, shear 0.2, zoom
//! 0.2) and with rescale only.
//!
//! With no option it generates (once, cached under `target/bench-data/`)
//! two folders in the Kaggle layout (`train/cats`, `train/dogs`) and prints
//! `augment: N images/s`, `rescale: N images/s`, `augment photo: N
//! images/s` and `rescale photo: N images/s`:
//! - like the folder Keras's figures were taken on: 2000 Fashion-MNIST
//!   images (the IDX files of `/usr/share/datasets/fashion-mnist/`, else
//!   the bundled `data/sample` PNGs, else synthetic shapes), tinted and
//!   upscaled to 300-500 px, JPEG, about 8 KB each;
//! - photo-like: 1000 textured 500x375 JPEGs, quality 75, about 40 KB.
//!
//! `--dir DIR` measures any folder in the Kaggle layout instead (its
//! `train/` subfolder when there is one), printing `augment:` and
//! `rescale:`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use convnet_data::{ClassMode, FlowOptions, ImageDataGenerator};
use rayon::prelude::*;

/// Bump when the generated folders change, so stale caches are not used.
const VERSION: u32 = 3;
const KERAS_IMAGES: usize = 2000;
const PHOTO_IMAGES: usize = 1000;

pub fn run(opts: &[String]) -> Result<(), String> {
    match opts {
        [] => {
            let keras = keras_folder()?;
            let photo = photo_folder()?;
            measure(&keras, "")?;
            measure(&photo, " photo")
        }
        [flag, dir] if flag == "--dir" => {
            let dir = PathBuf::from(dir);
            let train = dir.join("train");
            measure(if train.is_dir() { &train } else { &dir }, "")
        }
        other => Err(format!("unknown options {other:?} (expected --dir DIR)")),
    }
}

/// Images/s of one full pass (the median of three, after a first pass of
/// warm-up), augmenting and with rescale only.
fn measure(dir: &Path, suffix: &str) -> Result<(), String> {
    let augment = ImageDataGenerator::new()
        .rescale(1.0 / 255.0)
        .width_shift_range(0.2)
        .height_shift_range(0.2)
        .shear_range(0.2)
        .zoom_range(0.2);
    let rescale = ImageDataGenerator::new().rescale(1.0 / 255.0);
    for (name, generator) in [("augment", augment), ("rescale", rescale)] {
        let options = FlowOptions {
            target_size: (150, 150),
            class_mode: ClassMode::Sparse,
            batch_size: 32,
            seed: Some(1),
            verbose: false,
            ..FlowOptions::default()
        };
        let mut flow = generator
            .flow_from_directory(dir, options.clone())
            .map_err(|e| e.to_string())?;
        let batches = flow.batches_per_epoch();
        // Warm-up: one full pass, as a training run's first epoch (thread
        // pools, the page cache, and the memory the prefetching thread's
        // allocator touches for the first time: on this VM a first touch
        // costs about 8 ms per 2 MiB huge page, a whole pass's time for
        // the first batch buffers). Then the passes that follow, on the
        // same endless iterator, as the next epochs run.
        for _ in 0..batches {
            flow.next().ok_or("no batch")?.map_err(|e| e.to_string())?;
        }
        let mut rates = Vec::new();
        let mut cpu_rates = Vec::new();
        for _ in 0..3 {
            let t = Instant::now();
            let cpu = cpu_seconds();
            let mut images = 0;
            for _ in 0..batches {
                let (x, _) = flow.next().ok_or("no batch")?.map_err(|e| e.to_string())?;
                images += x.shape()[0];
            }
            rates.push(images as f64 / t.elapsed().as_secs_f64());
            if let (Some(a), Some(b)) = (cpu, cpu_seconds()) {
                cpu_rates.push(images as f64 / (b - a).max(1e-3));
            }
        }
        rates.sort_by(f64::total_cmp);
        println!("{name}{suffix}: {:.0} images/s", rates[1]);
        if cpu_rates.len() == 3 {
            // On a busy machine the wall-clock figure says little: the CPU
            // time this process spent per image does.
            cpu_rates.sort_by(f64::total_cmp);
            eprintln!(
                "  ({:.0} images per CPU-second, {} rayon threads)",
                cpu_rates[1],
                rayon::current_num_threads()
            );
        }
    }
    eprintln!("(folder {})", dir.display());
    Ok(())
}

/// This process's CPU time (user + system) in seconds, from
/// `/proc/self/stat` (Linux; `None` elsewhere).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which is in parentheses).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// `target/bench-data` (or under `CARGO_TARGET_DIR`).
fn cache_root() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(t) => PathBuf::from(t).join("bench-data"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data"),
    }
}

/// A small xorshift generator (deterministic folders, no RNG dependency).
struct Xs(u64);

impl Xs {
    fn new(seed: u64) -> Self {
        Xs(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }
    fn range(&mut self, lo: u32, hi: u32) -> u32 {
        lo + (self.next() % u64::from(hi - lo + 1)) as u32
    }
}

/// Builds `train/cats` and `train/dogs` under `root` with `n` images from
/// `make(i)`, saved as JPEG quality 75, unless a finished folder of this
/// version is there already. Returns the `train` folder.
///
/// The JPEGs are written by Pillow when `python3` has it, as the folders
/// Keras reads usually are (and as cameras write them): 4:2:0 chroma
/// subsampling. Else by the `image` crate, whose encoder knows only 4:4:4
/// (twice the colour data to decode: slower to read).
fn cached_folder(
    root: &Path,
    n: usize,
    make: impl Fn(usize) -> Result<image::RgbImage, String> + Sync,
) -> Result<PathBuf, String> {
    let train = root.join("train");
    let done = root.join(format!("done-v{VERSION}"));
    if done.is_file() {
        return Ok(train);
    }
    eprintln!("generating {n} images in {} ...", root.display());
    let _ = std::fs::remove_dir_all(root);
    for class in ["cats", "dogs"] {
        std::fs::create_dir_all(train.join(class)).map_err(|e| e.to_string())?;
    }
    let pillow = std::process::Command::new("python3")
        .args(["-c", "import PIL"])
        .output()
        .is_ok_and(|o| o.status.success());
    let paths: Vec<PathBuf> = (0..n)
        .map(|i| {
            let (class, stem) = if i % 2 == 0 {
                ("cats", "cat")
            } else {
                ("dogs", "dog")
            };
            train.join(class).join(format!("{stem}.{}.jpg", i / 2))
        })
        .collect();
    paths
        .par_iter()
        .enumerate()
        .try_for_each(|(i, path)| -> Result<(), String> {
            let img = make(i)?;
            if pillow {
                // Lossless pixels beside the file, for Pillow to encode below.
                let raw = path.with_extension("png");
                img.save(&raw).map_err(|e| e.to_string())
            } else {
                let mut out = Vec::new();
                image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 75)
                    .encode_image(&img)
                    .map_err(|e| e.to_string())?;
                std::fs::write(path, out).map_err(|e| e.to_string())
            }
        })?;
    if pillow {
        let script = "import sys, os\nfrom PIL import Image\nfor p in sys.stdin.read().split('\\n'):\n    if p:\n        Image.open(p + '.png').save(p + '.jpg', quality=75)\n        os.remove(p + '.png')\n";
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let list: String = paths
            .iter()
            .map(|p| format!("{}\n", p.with_extension("").display()))
            .collect();
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().ok_or("no stdin")?;
            stdin
                .write_all(list.as_bytes())
                .map_err(|e| e.to_string())?;
        }
        let status = child.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            return Err("python3 (Pillow) failed to write the JPEGs".into());
        }
    } else {
        eprintln!("  (no Pillow: JPEGs from the image crate, 4:4:4, slower to decode)");
    }
    let bytes: u64 = paths
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    eprintln!("  {} KB per image on average", bytes / n as u64 / 1024);
    std::fs::write(&done, b"").map_err(|e| e.to_string())?;
    Ok(train)
}

/// 28x28 grayscale Fashion-MNIST images: the IDX files, else the bundled
/// sample, else synthetic shapes.
fn fashion_images(n: usize) -> Vec<Vec<u8>> {
    let idx_dir = Path::new("/usr/share/datasets/fashion-mnist");
    if let Ok((x, _)) = convnet_data::idx::load_mnist_dir(idx_dir, "train") {
        let v = x.values();
        return (0..n.min(x.shape()[0]))
            .map(|i| v[i * 784..(i + 1) * 784].iter().map(|&p| p as u8).collect())
            .collect();
    }
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/sample/train");
    let mut files = Vec::new();
    for class in ["sandals", "sneakers"] {
        if let Ok(rd) = std::fs::read_dir(sample.join(class)) {
            files.extend(rd.filter_map(|e| e.ok()).map(|e| e.path()));
        }
    }
    files.sort();
    let images: Vec<Vec<u8>> = files
        .iter()
        .filter_map(|f| image::open(f).ok())
        .map(|img| {
            image::imageops::resize(&img.into_luma8(), 28, 28, image::imageops::Nearest).into_raw()
        })
        .take(n)
        .collect();
    if !images.is_empty() {
        return images;
    }
    eprintln!("(no Fashion-MNIST files: synthetic shapes instead)");
    (0..n)
        .map(|i| {
            let mut r = Xs::new(i as u64 + 7);
            let (cx, cy, rx, ry) = (
                r.range(9, 18) as f32,
                r.range(9, 18) as f32,
                r.range(4, 10) as f32,
                r.range(4, 10) as f32,
            );
            (0..784)
                .map(|p| {
                    let (x, y) = ((p % 28) as f32, (p / 28) as f32);
                    let d = ((x - cx) / rx).powi(2) + ((y - cy) / ry).powi(2);
                    if d < 1.0 {
                        (255.0 * (1.0 - 0.5 * d)) as u8
                    } else {
                        0
                    }
                })
                .collect()
        })
        .collect()
}

/// Like the folder behind Keras's figures: Fashion-MNIST images tinted and
/// upscaled (bilinear) to 300-500 px a side.
fn keras_folder() -> Result<PathBuf, String> {
    let src = fashion_images(KERAS_IMAGES);
    if src.is_empty() {
        return Err("no source images".into());
    }
    let root = cache_root().join("keras-like");
    cached_folder(&root, KERAS_IMAGES, |i| {
        let mut r = Xs::new(i as u64 + 1);
        let g = image::GrayImage::from_raw(28, 28, src[i % src.len()].clone())
            .ok_or("bad source image")?;
        let fg = [r.unit(), r.unit(), r.unit()].map(|v| 0.4 + 0.6 * v);
        let bg = [r.unit(), r.unit(), r.unit()].map(|v| 60.0 * v);
        let tinted = image::RgbImage::from_fn(28, 28, |x, y| {
            let a = f32::from(g.get_pixel(x, y)[0]);
            image::Rgb([0, 1, 2].map(|k| (bg[k] * (1.0 - a / 255.0) + fg[k] * a) as u8))
        });
        let (w, h) = (r.range(300, 500), r.range(300, 500));
        Ok(image::imageops::resize(
            &tinted,
            w,
            h,
            image::imageops::Triangle,
        ))
    })
}

/// Photo-like: 500x375, quality 75, smooth colour fields with texture and
/// grain, about 40 KB.
fn photo_folder() -> Result<PathBuf, String> {
    let root = cache_root().join("photo-like");
    cached_folder(&root, PHOTO_IMAGES, |i| {
        let mut r = Xs::new(i as u64 + 1001);
        let base = [r.unit(), r.unit(), r.unit()].map(|v| 60.0 + 140.0 * v);
        let grad = [r.unit(), r.unit(), r.unit()].map(|v| (v - 0.5) * 0.3);
        let (f1, f2, ph) = (
            0.02 + 0.1 * r.unit(),
            0.02 + 0.1 * r.unit(),
            std::f32::consts::TAU * r.unit(),
        );
        let (cx, cy, rad) = (
            r.range(100, 400) as f32,
            r.range(80, 300) as f32,
            r.range(40, 150) as f32,
        );
        let mut noise = Xs::new(i as u64 + 99_991);
        let img = image::RgbImage::from_fn(500, 375, |x, y| {
            let (xf, yf) = (x as f32, y as f32);
            let tex = 25.0 * ((xf * f1 + ph).sin() * (yf * f2).cos())
                + 12.0 * ((xf * 0.31 + yf * 0.17).sin());
            let inside = ((xf - cx).powi(2) + (yf - cy).powi(2)).sqrt() < rad;
            let grain = (noise.unit() - 0.5) * 40.0;
            image::Rgb([0, 1, 2].map(|k| {
                let mut v = base[k] + grad[k] * (xf - yf) + tex + grain;
                if inside {
                    v = 255.0 - v * 0.7;
                }
                v.clamp(0.0, 255.0) as u8
            }))
        });
        Ok(img)
    })
}
