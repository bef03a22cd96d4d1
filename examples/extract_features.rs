//! Extract InceptionV3 features: the outputs of chosen layers (`mixed0`,
//! `mixed7`, ...) for some inputs, written to a safetensors file keyed by
//! layer name. With the same weights and inputs, Keras's
//! `Model(base.input, [base.get_layer(n).output for n in layers])` gives
//! the same numbers, so this is also how to check ours against Keras's.
//!
//! Inputs: `--input x.safetensors` holding an NHWC `f32` tensor named
//! `input` (used as given: apply `preprocess_input` yourself), or
//! `--images a.jpg b.png ...`, resized to `--target-size` (default 299,
//! InceptionV3's own) and scaled by Keras's `preprocess_input`
//! (`x / 127.5 - 1`). Weights: the ImageNet ones from
//! `cargo xtask fetch-weights` by default, `--weights FILE`, or
//! `--weights random`.
//!
//! Run: `cargo run --release --example extract_features -- --images
//! data/sample/validation/sneakers/sneaker.0.png --layers mixed0,mixed7
//! --output features.safetensors` (default output:
//! `runs/extract_features-<time>/features.safetensors`)

// `pub` so that the end-to-end test (tests/examples.rs) can reach it.
#[path = "common/mod.rs"]
pub mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Parser;
use convnet::data::{directory::load_img, ColorMode, Interpolation};
use convnet::nn::{clear_session, set_random_seed, Model};
use convnet::tensor::{safetensors, Tensor};
use convnet::zoo::{preprocess_input, InceptionV3};

/// Writes the outputs of chosen InceptionV3 layers for some inputs to a
/// safetensors file, one tensor per layer, keyed by the layer's name.
#[derive(Parser, Debug)]
#[command(name = "extract_features")]
pub struct Cli {
    /// Weights: a safetensors file keyed as Keras names the layers
    /// (`conv2d/kernel`, ...), or `random`. Default: the ImageNet weights
    /// that `cargo xtask fetch-weights` puts in $CONVNET_HOME (default
    /// ~/.cache/convnet).
    #[arg(long, value_name = "FILE|random")]
    pub weights: Option<String>,

    /// A safetensors file with an NHWC f32 tensor named `input`
    /// (batch, height, width, 3), fed as it is (already preprocessed).
    #[arg(long, value_name = "FILE", required_unless_present_any = ["images", "list_layers"],
          conflicts_with = "images")]
    pub input: Option<PathBuf>,

    /// Image files, resized to --target-size and scaled by
    /// `preprocess_input` (x / 127.5 - 1), one batch row each.
    #[arg(long, value_name = "FILE", num_args = 1..)]
    pub images: Vec<PathBuf>,

    /// Size images are resized to, HxW or one number (InceptionV3's own is
    /// 299; at least 75). Ignored with --input, whose shape is used.
    #[arg(long, value_name = "HxW", default_value = "299", value_parser = common::parse_size)]
    pub target_size: (usize, usize),

    /// The layers whose outputs to write, by Keras's names, comma-separated
    /// (`mixed0` ... `mixed10`, `conv2d_5`, `activation_93`, ...;
    /// --list-layers shows them all).
    #[arg(
        long,
        value_name = "NAMES",
        value_delimiter = ',',
        default_value = "mixed7"
    )]
    pub layers: Vec<String>,

    /// Build the model with its ImageNet classifier (`avg_pool`,
    /// `predictions`); the default weights are then the file of
    /// `cargo xtask fetch-weights --top`.
    #[arg(long)]
    pub include_top: bool,

    /// Where to write the features. Default:
    /// runs/extract_features-<UTC date>-<time>/features.safetensors.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Inputs per forward pass.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub batch_size: usize,

    /// Print every layer's name and output shape, and stop.
    #[arg(long)]
    pub list_layers: bool,
}

/// The inputs as one NHWC batch, and a line saying where they came from.
pub fn inputs(cli: &Cli) -> Result<(Tensor, String), common::BoxError> {
    if let Some(path) = &cli.input {
        let file = safetensors::load(path)?;
        let x = file.get("input").ok_or_else(|| {
            format!(
                "{}: no tensor named `input` (it has: {})",
                path.display(),
                file.names().collect::<Vec<_>>().join(", ")
            )
        })?;
        let x = match x.rank() {
            3 => x.reshape(&[1, x.shape()[0], x.shape()[1], x.shape()[2]])?,
            4 => x.clone(),
            _ => {
                return Err(format!(
                    "{}: `input` has shape {:?}; NHWC (batch, height, width, 3) wanted",
                    path.display(),
                    x.shape()
                )
                .into())
            }
        };
        if x.shape()[3] != 3 || x.shape()[0] == 0 {
            return Err(format!(
                "{}: `input` has shape {:?}; NHWC (batch, height, width, 3) wanted",
                path.display(),
                x.shape()
            )
            .into());
        }
        return Ok((x, format!("`input` of {}", path.display())));
    }
    let (h, w) = cli.target_size;
    let mut rows = Vec::with_capacity(cli.images.len());
    for path in &cli.images {
        let img = load_img(path, Some((h, w)), ColorMode::Rgb, Interpolation::Nearest)?;
        rows.push(img.reshape(&[1, h, w, 3])?);
    }
    if rows.is_empty() {
        return Err("give --input FILE or --images FILE...".into());
    }
    let refs: Vec<&Tensor> = rows.iter().collect();
    let x = preprocess_input(&Tensor::concat(&refs, 0)?);
    let names: Vec<String> = cli.images.iter().map(|p| p.display().to_string()).collect();
    Ok((
        x,
        format!("images {} with preprocess_input", names.join(", ")),
    ))
}

/// InceptionV3 for inputs of `(height, width)`, with `weights`.
pub fn inception(
    size: (usize, usize),
    include_top: bool,
    weights: &common::BaseWeights,
) -> Result<Model, common::BoxError> {
    clear_session();
    set_random_seed(0);
    let mut model = InceptionV3::new()
        .include_top(include_top)
        .input_shape(size.0, size.1, 3)
        .build()
        .map_err(|e| format!("inputs of {}x{}: {e}", size.0, size.1))?;
    weights.load(&mut model)?;
    Ok(model)
}

/// The outputs of `layers` of `model` for `x`, in the order asked.
pub fn extract(
    model: &Model,
    x: &Tensor,
    layers: &[String],
    batch_size: usize,
) -> Result<Vec<(String, Tensor)>, common::BoxError> {
    if batch_size == 0 {
        return Err("--batch-size must be at least 1".into());
    }
    let mut out = Vec::new();
    for name in layers {
        if out.iter().any(|(n, _)| n == name) {
            continue;
        }
        let layer = model.get_layer(name).map_err(|e| {
            format!("{e} (see --list-layers for the names; Keras's are `mixed0` ... `mixed10`)")
        })?;
        let sub = Model::new(&model.input(), &layer.output())?;
        out.push((name.clone(), sub.predict(x, batch_size)?));
    }
    Ok(out)
}

/// The whole program after parsing the flags; returns the features.
pub fn run(cli: Cli) -> Result<Vec<(String, Tensor)>, common::BoxError> {
    if cli.list_layers {
        let model = inception(
            cli.target_size,
            cli.include_top,
            &common::BaseWeights::Random,
        )?;
        for name in model.layer_names() {
            let layer = model.get_layer(&name)?;
            println!(
                "{name:<28} {:<20} {:?}",
                layer.class_name(),
                layer.output().shape()
            );
        }
        return Ok(Vec::new());
    }
    let weights = common::BaseWeights::from_flag(cli.weights.as_deref(), cli.include_top)?;
    if weights == common::BaseWeights::Random {
        eprintln!("{}", common::random_weights_banner("extract_features"));
    }
    let (x, source) = inputs(&cli)?;
    let size = (x.shape()[1], x.shape()[2]);
    let model = inception(size, cli.include_top, &weights)?;
    let started = std::time::Instant::now();
    let features = extract(&model, &x, &cli.layers, cli.batch_size)?;
    println!(
        "InceptionV3 ({}), {} input(s) of {}x{}x3 from {source}; {:.1} s",
        weights.describe(),
        x.shape()[0],
        size.0,
        size.1,
        started.elapsed().as_secs_f64()
    );
    for (name, t) in &features {
        let v = t.values();
        let mean = v.iter().map(|&a| f64::from(a)).sum::<f64>() / v.len().max(1) as f64;
        println!(
            "  {name:<16} {:?} mean {mean:.4} max |x| {:.4}",
            t.shape(),
            t.max_abs()
        );
    }
    let mut meta = BTreeMap::new();
    meta.insert("format".to_string(), "convnet features".to_string());
    meta.insert("model".to_string(), "InceptionV3".to_string());
    meta.insert("include_top".to_string(), cli.include_top.to_string());
    meta.insert("weights".to_string(), weights.describe());
    meta.insert("input".to_string(), source);
    meta.insert("layers".to_string(), cli.layers.join(","));
    let refs: Vec<(&str, &Tensor)> = features.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let output = match &cli.output {
        Some(p) => p.clone(),
        None => common::out_dir("extract_features", None)?.join("features.safetensors"),
    };
    safetensors::save(&output, &refs, &meta)?;
    println!("Wrote {}", output.display());
    Ok(features)
}

fn main() {
    let cli = Cli::parse();
    common::main_with("extract_features", || run(cli).map(|_| ()));
}
