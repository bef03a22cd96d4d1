//! What a CNN's filters do, as pictures.
//!
//! The mission explains convolution with filters drawn by hand (Sobel,
//! Laplacian, blur) that a CNN instead learns by backpropagation. This
//! program draws, as PNG files in its out folder:
//!
//! - `filters_fixed.png`: an image and what four hand-made filters make of
//!   it (left to right: the image, Sobel x, Sobel y, Laplacian, Gaussian
//!   blur), computed by a `Conv2D` layer whose kernel is set by hand;
//! - `filters_learned_bars.png`: a 4-filter CNN trained in a second to tell
//!   vertical from horizontal bars: its learned 3x3 filters (left) end up
//!   as edge detectors, like Sobel x and y (right); red positive, blue
//!   negative;
//! - with `--weights runs/basic_cnn-.../weights.safetensors` (from
//!   `basic_cnn` or `augmented_cnn`): `first_layer_filters.png`, the 32
//!   first-layer 3x3 RGB filters of the trained model (zero is gray),
//!   `first_layer_filters_gray.png`, the same summed over the colour
//!   channels (what each does to a grayscale image; red positive, blue
//!   negative), and
//!   `feature_maps_conv2d.png`, `feature_maps_conv2d_1.png`,
//!   `feature_maps_conv2d_2.png`, every channel of each conv layer's output
//!   for the image (dark blue low, yellow high).
//!
//! Run: `cargo run --release --example filters` (the first training image
//! of the bundled sample; `--image FILE` for another), or after `basic_cnn`:
//! `cargo run --release --example filters -- --weights
//! runs/basic_cnn-<time>/weights.safetensors`.

// `pub` so that the end-to-end test (tests/examples.rs) can reach it.
#[path = "common/mod.rs"]
pub mod common;

use std::path::{Path, PathBuf};

use clap::Parser;
use convnet::data::{directory::load_img, ColorMode, Interpolation};
use convnet::kernels::Padding;
use convnet::nn::layers::{Conv2D, Dense, GlobalAveragePooling2D, MaxPooling2D};
use convnet::nn::optimizers::SGD;
use convnet::nn::Activation::{Relu, Sigmoid};
use convnet::nn::{clear_session, set_random_seed, FitOptions, Loss, Metric, Model, Sequential};
use convnet::tensor::{safetensors, Rng, Tensor};
use image::{Rgb, RgbImage};

/// Draws what CNN filters do: hand-made filters (Sobel, Laplacian,
/// Gaussian) applied to an image, filters a small CNN learns, and with
/// --weights the first-layer filters and the feature maps of a model
/// trained by basic_cnn or augmented_cnn.
#[derive(Parser, Debug)]
#[command(name = "filters")]
pub struct Cli {
    /// The image to filter. Default: the first training image of --data.
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,

    /// Image folder (train/ and validation/) whose first training image is
    /// used when --image is not given.
    #[arg(long, value_name = "DIR", default_value = common::SAMPLE_DIR)]
    pub data: PathBuf,

    /// Weights saved by basic_cnn or augmented_cnn
    /// (runs/<example>-<time>/weights.safetensors): also draw the model's
    /// first-layer filters and the feature maps of its conv layers.
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,

    /// Size the image is resized to (bilinear) for the hand-made filters,
    /// HxW or one number.
    #[arg(long, value_name = "HxW", default_value = "150", value_parser = common::parse_size)]
    pub size: (usize, usize),

    /// Seed of the small CNN that learns bar filters.
    #[arg(long, value_name = "N", default_value_t = 42)]
    pub seed: u64,

    /// Where to write the pictures (created if needed). Default:
    /// runs/filters-<UTC date>-<time>/.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

const WHITE: [u8; 3] = [255, 255, 255];
const DARK: [u8; 3] = [48, 48, 48];

/// Pixels drawn per feature-map pixel, so that small maps stay visible.
fn scale_for(h: usize, w: usize, min_side: usize) -> usize {
    min_side.div_ceil(h.min(w).max(1)).max(1)
}

/// Gray for values in 0..1.
fn gray(t: f32) -> [u8; 3] {
    let v = (t.clamp(0.0, 1.0) * 255.0).round() as u8;
    [v, v, v]
}

/// Blue (-1) to white (0) to red (+1).
fn diverging(t: f32) -> [u8; 3] {
    let t = t.clamp(-1.0, 1.0);
    let fade = |a: f32| (255.0 * (1.0 - a)).round() as u8;
    if t >= 0.0 {
        [255, fade(t), fade(t)]
    } else {
        [fade(-t), fade(-t), 255]
    }
}

/// Matplotlib's viridis, approximated from five stops, for values in 0..1.
fn viridis(t: f32) -> [u8; 3] {
    const STOPS: [[f32; 3]; 5] = [
        [68.0, 1.0, 84.0],
        [59.0, 82.0, 139.0],
        [33.0, 145.0, 140.0],
        [94.0, 201.0, 98.0],
        [253.0, 231.0, 37.0],
    ];
    let x = t.clamp(0.0, 1.0) * 4.0;
    let i = (x.floor() as usize).min(3);
    let f = x - i as f32;
    let mut c = [0u8; 3];
    for k in 0..3 {
        c[k] = (STOPS[i][k] + (STOPS[i + 1][k] - STOPS[i][k]) * f).round() as u8;
    }
    c
}

/// A picture: tiles of `(h, w)` colours, `cols` per row, each pixel drawn
/// as a `scale` x `scale` block, a few pixels of `background` between
/// tiles.
fn grid(
    tiles: &[Vec<[u8; 3]>],
    (h, w): (usize, usize),
    cols: usize,
    scale: usize,
    background: [u8; 3],
) -> RgbImage {
    let gap = 2 + scale / 4;
    let cols = cols.clamp(1, tiles.len().max(1));
    let rows = tiles.len().div_ceil(cols);
    let (th, tw) = (h * scale, w * scale);
    let width = cols * tw + (cols + 1) * gap;
    let height = rows * th + (rows + 1) * gap;
    let mut img = RgbImage::from_pixel(width as u32, height as u32, Rgb(background));
    for (i, tile) in tiles.iter().enumerate() {
        let (ox, oy) = (gap + (i % cols) * (tw + gap), gap + (i / cols) * (th + gap));
        for y in 0..th {
            for x in 0..tw {
                let c = tile[(y / scale) * w + x / scale];
                img.put_pixel((ox + x) as u32, (oy + y) as u32, Rgb(c));
            }
        }
    }
    img
}

fn save(img: &RgbImage, path: &Path) -> Result<(), common::BoxError> {
    img.save(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    println!(
        "  {:<44} {}x{}",
        path.display().to_string(),
        img.width(),
        img.height()
    );
    Ok(())
}

/// Channel `k` of an NHWC tensor's first image as a `(h, w)` plane.
fn plane(t: &Tensor, k: usize) -> Vec<f32> {
    let [_, h, w, c] = t.nhwc("plane").expect("an NHWC tensor");
    let v = t.values();
    (0..h * w).map(|p| v[p * c + k]).collect()
}

/// A plane coloured with `colour`, values mapped by `norm`.
fn paint(p: &[f32], norm: impl Fn(f32) -> f32, colour: fn(f32) -> [u8; 3]) -> Vec<[u8; 3]> {
    p.iter().map(|&v| colour(norm(v))).collect()
}

/// Largest absolute value, at least a tiny number (to divide by).
fn max_abs(p: &[f32]) -> f32 {
    p.iter().fold(1e-12f32, |m, v| m.max(v.abs()))
}

/// The hand-made filters, 5x5 (the 3x3 ones in the middle), in order:
/// Sobel x, Sobel y, Laplacian, Gaussian (sigma 1), and their names.
pub fn fixed_kernels() -> (Vec<&'static str>, Vec<[[f32; 5]; 5]>) {
    let pad = |k: [[f32; 3]; 3]| {
        let mut o = [[0.0; 5]; 5];
        for r in 0..3 {
            for c in 0..3 {
                o[r + 1][c + 1] = k[r][c];
            }
        }
        o
    };
    let sobel_x = pad([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]);
    let sobel_y = pad([[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]]);
    let laplacian = pad([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]);
    let mut gauss = [[0.0f32; 5]; 5];
    let mut sum = 0.0;
    for (r, row) in gauss.iter_mut().enumerate() {
        for (c, g) in row.iter_mut().enumerate() {
            let (dy, dx) = (r as f32 - 2.0, c as f32 - 2.0);
            *g = (-(dx * dx + dy * dy) / 2.0).exp();
            sum += *g;
        }
    }
    gauss.iter_mut().flatten().for_each(|g| *g /= sum);
    (
        vec!["sobel_x", "sobel_y", "laplacian", "gaussian"],
        vec![sobel_x, sobel_y, laplacian, gauss],
    )
}

/// Apply the hand-made filters to a `(h, w)` grayscale image with values
/// 0..1: a `Conv2D(4, 5x5, padding same, no bias)` layer whose kernel is
/// set to them. Returns the `(1, h, w, 4)` output.
pub fn apply_fixed_filters(image: &Tensor) -> Result<Tensor, common::BoxError> {
    let (h, w) = (image.shape()[0], image.shape()[1]);
    let (_, kernels) = fixed_kernels();
    clear_session();
    let mut model = Sequential::new(&[h, w, 1]);
    model.add(
        Conv2D::new(kernels.len(), (5, 5))
            .padding(Padding::Same)
            .use_bias(false)
            .name("fixed_filters"),
    )?;
    // HWIO: (5, 5, 1, 4).
    let n = kernels.len();
    let kernel = Tensor::from_fn(&[5, 5, 1, n], |i| {
        let (f, rc) = (i % n, i / n);
        kernels[f][rc / 5][rc % 5]
    });
    model
        .get_layer("fixed_filters")?
        .set_weights(vec![kernel])?;
    Ok(model.predict(&image.reshape(&[1, h, w, 1])?, 1)?)
}

/// `filters_fixed.png`: the image, then each filter's output.
fn draw_fixed(image_path: &Path, size: (usize, usize), out: &Path) -> Result<(), common::BoxError> {
    let img = load_img(
        image_path,
        Some(size),
        ColorMode::Grayscale,
        Interpolation::Bilinear,
    )?
    .map(|v| v / 255.0);
    let y = apply_fixed_filters(&img)?;
    let (h, w) = size;
    let (names, _) = fixed_kernels();
    let mut tiles = vec![paint(&img.to_vec(), |v| v, gray)];
    for (k, name) in names.iter().enumerate() {
        let p = plane(&y, k);
        let m = max_abs(&p);
        tiles.push(if *name == "gaussian" {
            paint(&p, |v| v, gray)
        } else {
            // Signed responses: mid-gray is zero.
            paint(&p, |v| 0.5 + 0.5 * v / m, gray)
        });
    }
    save(
        &grid(&tiles, (h, w), tiles.len(), scale_for(h, w, 120), WHITE),
        &out.join("filters_fixed.png"),
    )
}

/// A batch of `n` noisy 16x16 grayscale images with one bar each, and their
/// labels (1 = vertical, 0 = horizontal).
fn bars(n: usize, rng: &mut Rng) -> Result<(Tensor, Tensor), common::BoxError> {
    const SIZE: usize = 16;
    let mut images = vec![0.0f32; n * SIZE * SIZE];
    let mut labels = vec![0.0f32; n];
    for (i, label) in labels.iter_mut().enumerate() {
        let vertical = rng.uniform() < 0.5;
        *label = if vertical { 1.0 } else { 0.0 };
        let at = 2 + rng.below(SIZE - 4);
        let img = &mut images[i * SIZE * SIZE..(i + 1) * SIZE * SIZE];
        for (p, px) in img.iter_mut().enumerate() {
            let (y, x) = (p / SIZE, p % SIZE);
            let on = if vertical { x == at } else { y == at };
            *px = if on { 1.0 } else { 0.0 } + 0.1 * rng.normal();
        }
    }
    Ok((
        Tensor::from_vec(&[n, SIZE, SIZE, 1], images)?,
        Tensor::from_vec(&[n, 1], labels)?,
    ))
}

/// Train `Conv2D(4, 3x3, relu) MaxPooling2D(2) GlobalAveragePooling2D
/// Dense(1, sigmoid)` (SGD, binary cross-entropy) to tell vertical from
/// horizontal bars; returns its `(3, 3, 1, 4)` kernel and test accuracy.
pub fn learn_bar_filters(seed: u64) -> Result<(Tensor, f32), common::BoxError> {
    clear_session();
    set_random_seed(seed);
    let mut model = Sequential::new(&[16, 16, 1]);
    model.add(Conv2D::new(4, (3, 3)).activation(Relu))?;
    model.add(MaxPooling2D::new((2, 2)))?;
    model.add(GlobalAveragePooling2D::new())?;
    model.add(Dense::new(1).activation(Sigmoid))?;
    model.compile(
        SGD::new(0.5, 0.0, false),
        Loss::BinaryCrossentropy,
        &[Metric::Accuracy],
    )?;
    let mut rng = Rng::new(seed);
    let (x, y) = bars(640, &mut rng)?;
    let (tx, ty) = bars(256, &mut rng)?;
    let options = FitOptions {
        epochs: 15,
        verbose: 0,
        seed,
        ..Default::default()
    };
    model.fit_arrays(&x, &y, 32, None, &options, &mut [])?;
    let logs = model.evaluate_arrays(&tx, &ty, 64)?;
    let accuracy = logs.get("accuracy").copied().unwrap_or(f32::NAN);
    let kernel = model.get_layer("conv2d")?.weights()[0].value.clone();
    Ok((kernel, accuracy))
}

/// `filters_learned_bars.png`: the 4 learned filters, then Sobel x and y.
fn draw_learned_bars(seed: u64, out: &Path) -> Result<(), common::BoxError> {
    let (kernel, accuracy) = learn_bar_filters(seed)?;
    println!(
        "A Conv2D(4, 3x3) CNN learned to tell vertical from horizontal bars (test accuracy \
         {accuracy:.3}); its filters (compare with Sobel x [-1 0 1; -2 0 2; -1 0 1]):"
    );
    let k = kernel.to_vec();
    let mut tiles = Vec::new();
    for f in 0..4 {
        let p: Vec<f32> = (0..9).map(|i| k[i * 4 + f]).collect();
        for r in 0..3 {
            let row: Vec<String> = p[r * 3..r * 3 + 3]
                .iter()
                .map(|v| format!("{v:6.2}"))
                .collect();
            println!(
                "  {} [{}]",
                if r == 1 { format!("{f}:") } else { "  ".into() },
                row.join(" ")
            );
        }
        let m = max_abs(&p);
        tiles.push(paint(&p, |v| v / m, diverging));
    }
    let (_, fixed) = fixed_kernels();
    for kern in &fixed[..2] {
        let p: Vec<f32> = (0..9).map(|i| kern[1 + i / 3][1 + i % 3]).collect();
        tiles.push(paint(&p, |v| v / 2.0, diverging));
    }
    save(
        &grid(&tiles, (3, 3), tiles.len(), 40, DARK),
        &out.join("filters_learned_bars.png"),
    )
}

/// The trained model of `weights` (basic_cnn's architecture, input shape
/// from the file's metadata, else 150x150x3).
pub fn trained_model(weights: &Path) -> Result<(Model, (usize, usize)), common::BoxError> {
    let file = safetensors::load(weights)?;
    let shape: Vec<usize> = file
        .metadata
        .get("input_shape")
        .map(|s| s.split(',').filter_map(|d| d.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![150, 150, 3]);
    if shape.len() != 3 || shape[2] != 3 {
        return Err(format!(
            "{}: input shape {shape:?} in the metadata; basic_cnn's (height, width, 3) wanted",
            weights.display()
        )
        .into());
    }
    let target = (shape[0], shape[1]);
    let model = common::basic_cnn_model(target, 0)?;
    model.load_weights(weights).map_err(|e| {
        format!("{e} (--weights wants a file written by basic_cnn or augmented_cnn)")
    })?;
    Ok((model, target))
}

/// `first_layer_filters.png` and `feature_maps_<layer>.png` of the model
/// in `weights` for the image.
fn draw_trained(weights: &Path, image_path: &Path, out: &Path) -> Result<(), common::BoxError> {
    let (model, (h, w)) = trained_model(weights)?;
    // First-layer filters: (3, 3, 3, 32) as 3x3 RGB tiles, one scale for
    // all (so that strong and weak filters show as such), zero at gray.
    let layer = model.get_layer("conv2d")?;
    let kernel = layer.weights()[0].value.clone();
    let [kh, kw, cin, cout] = [
        kernel.shape()[0],
        kernel.shape()[1],
        kernel.shape()[2],
        kernel.shape()[3],
    ];
    let k = kernel.to_vec();
    let m = max_abs(&k);
    let tiles: Vec<Vec<[u8; 3]>> = (0..cout)
        .map(|f| {
            (0..kh * kw)
                .map(|p| {
                    let mut c = [0u8; 3];
                    for (ch, v) in c.iter_mut().enumerate().take(cin.min(3)) {
                        let x = k[(p * cin + ch) * cout + f];
                        *v = ((0.5 + 0.5 * x / m) * 255.0).round().clamp(0.0, 255.0) as u8;
                    }
                    c
                })
                .collect()
        })
        .collect();
    save(
        &grid(&tiles, (kh, kw), 8, 24, WHITE),
        &out.join("first_layer_filters.png"),
    )?;
    // The same filters summed over the input channels: what each does to
    // a grayscale image (red positive, blue negative).
    let sums: Vec<Vec<f32>> = (0..cout)
        .map(|f| {
            (0..kh * kw)
                .map(|p| (0..cin).map(|ch| k[(p * cin + ch) * cout + f]).sum())
                .collect()
        })
        .collect();
    let m = sums.iter().map(|s| max_abs(s)).fold(1e-12f32, f32::max);
    let tiles: Vec<Vec<[u8; 3]>> = sums
        .iter()
        .map(|s| paint(s, |v| v / m, diverging))
        .collect();
    save(
        &grid(&tiles, (kh, kw), 8, 24, DARK),
        &out.join("first_layer_filters_gray.png"),
    )?;
    // Feature maps: the image as the model saw it in training (nearest
    // resize, rescale 1/255).
    let img = load_img(
        image_path,
        Some((h, w)),
        ColorMode::Rgb,
        Interpolation::Nearest,
    )?
    .map(|v| v / 255.0)
    .reshape(&[1, h, w, 3])?;
    for name in model.layer_names() {
        let layer = model.get_layer(&name)?;
        if layer.class_name() != "Conv2D" {
            continue;
        }
        let sub = Model::new(&model.input(), &layer.output())?;
        let y = sub.predict(&img, 1)?;
        let [_, fh, fw, c] = y.nhwc("feature maps")?;
        let tiles: Vec<Vec<[u8; 3]>> = (0..c)
            .map(|k| {
                let p = plane(&y, k);
                let hi = p.iter().fold(1e-12f32, |a, &b| a.max(b));
                paint(&p, |v| v / hi, viridis)
            })
            .collect();
        let cols = (c as f64).sqrt().ceil() as usize;
        save(
            &grid(&tiles, (fh, fw), cols.min(16), scale_for(fh, fw, 48), WHITE),
            &out.join(format!("feature_maps_{name}.png")),
        )?;
    }
    Ok(())
}

/// The whole program after parsing the flags; returns the out folder.
pub fn run(cli: Cli) -> Result<PathBuf, common::BoxError> {
    let image_path = match &cli.image {
        Some(p) => p.clone(),
        None => common::first_training_image(&common::resolve_data(&cli.data)?)?,
    };
    let out = common::out_dir("filters", cli.out.as_deref())?;
    println!(
        "Image: {}\nWrote into {}/:",
        image_path.display(),
        out.display()
    );
    draw_fixed(&image_path, cli.size, &out)?;
    draw_learned_bars(cli.seed, &out)?;
    match &cli.weights {
        Some(weights) => draw_trained(weights, &image_path, &out)?,
        None => println!(
            "(--weights runs/basic_cnn-<time>/weights.safetensors also draws a trained model's \
             filters and feature maps)"
        ),
    }
    Ok(out)
}

fn main() {
    let cli = Cli::parse();
    common::main_with("filters", || run(cli).map(|_| ()));
}
