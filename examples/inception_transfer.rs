//! The mission's third program: transfer learning from InceptionV3.
//!
//! ```text
//! base = InceptionV3(input_shape=(150, 150, 3), include_top=False, weights='imagenet')
//! every layer of base frozen; last = base.get_layer('mixed7').output  # (None, 7, 7, 768)
//! Flatten, Dense(1024, relu), Dropout(0.2), Dense(1, sigmoid)
//! RMSprop(learning_rate=1e-4), binary cross-entropy, accuracy
//! ```
//!
//! fed with the augmentation of `augmented_cnn` (rescale 1/255, as the
//! mission's program does; shifts, shear, zoom; `--rotation` and
//! `--horizontal-flip` on request). The ImageNet weights come from
//! `cargo xtask fetch-weights` (in `$CONVNET_HOME`, default
//! `~/.cache/convnet`); without them the program stops and says so.
//! `--weights FILE` loads another safetensors file, `--weights random` runs
//! the pipeline from random weights (with a loud warning). Writes
//! `accuracy.png`, `loss.png`, `history.csv`, `weights.safetensors` (the
//! whole model), `report.md` and `augmentation_preview.png` into
//! `runs/inception_transfer-<time>/` (or `--out`).
//!
//! Run: `cargo xtask fetch-weights` once, then
//! `cargo run --release --example inception_transfer` (`-- --help` for the
//! flags). Ctrl-C stops at the end of the epoch and still writes the files.

// `pub` so that the end-to-end test (tests/examples.rs) can reach it.
#[path = "common/mod.rs"]
pub mod common;

use clap::Parser;
use convnet::nn::layers::{Dense, Dropout, Flatten};
use convnet::nn::optimizers::RMSprop;
use convnet::nn::Activation::{Relu, Sigmoid};
use convnet::nn::{clear_session, set_random_seed, Apply, Loss, Metric, Model, Precision};
use convnet::zoo::InceptionV3;

/// Default epochs: a run on the bundled sample takes a few minutes on two
/// cores (the frozen base learns fast; the Keras program runs more).
const DEFAULT_EPOCHS: usize = 2;

/// Transfer learning as in the mission: InceptionV3 (ImageNet weights,
/// frozen) cut at mixed7, with a new head (Flatten, Dense 1024 relu,
/// Dropout 0.2, Dense 1 sigmoid) trained on augmented images. Needs the
/// weights from `cargo xtask fetch-weights` (or --weights). Writes
/// accuracy.png, loss.png, history.csv, weights.safetensors, report.md and
/// augmentation_preview.png into the out folder. Ctrl-C stops at the end of
/// the epoch and still writes them.
#[derive(Parser, Debug)]
#[command(name = "inception_transfer")]
pub struct Cli {
    #[command(flatten)]
    pub common: common::CommonArgs,

    #[command(flatten)]
    pub augment: common::AugmentArgs,

    /// Weights of the InceptionV3 base: a safetensors file keyed as Keras
    /// names the layers (`conv2d/kernel`, `batch_normalization/beta`, ...),
    /// or `random` to run the pipeline from random weights (the figures then
    /// mean nothing). Default: the ImageNet weights that
    /// `cargo xtask fetch-weights` puts in $CONVNET_HOME (default
    /// ~/.cache/convnet).
    #[arg(long, value_name = "FILE|random")]
    pub weights: Option<String>,

    /// Compute the frozen base's convolutions in half precision (on CPUs
    /// with AVX512-FP16; elsewhere the flag changes nothing): faster, with
    /// errors of about 1e-3 of the values per layer. The head trains in
    /// single precision.
    #[arg(long)]
    pub half: bool,
}

/// The mission's transfer model for `target` (height, width) RGB images,
/// compiled: the InceptionV3 base with `weights`, frozen, cut at mixed7,
/// and the new head; weights of the head drawn from `seed`.
pub fn transfer_model(
    target: (usize, usize),
    seed: u64,
    weights: &common::BaseWeights,
) -> Result<Model, common::BoxError> {
    clear_session();
    set_random_seed(seed);
    let mut base = InceptionV3::new()
        .include_top(false)
        .input_shape(target.0, target.1, 3)
        .build()
        .map_err(|e| format!("--target-size {}x{}: {e}", target.0, target.1))?;
    weights.load(&mut base)?;
    base.set_trainable(false);
    let last = base.get_layer("mixed7")?.output();
    println!("last layer output shape: {:?}", last.shape());
    let x = Flatten::new().apply(&last)?;
    let x = Dense::new(1024).activation(Relu).apply(&x)?;
    let x = Dropout::new(0.2).apply(&x)?;
    let x = Dense::new(1).activation(Sigmoid).apply(&x)?;
    let mut model = Model::new(&base.input(), &x)?;
    model.compile(
        RMSprop::new(1e-4),
        Loss::BinaryCrossentropy,
        &[Metric::Accuracy],
    )?;
    Ok(model)
}

/// The whole program after parsing the flags; returns the out folder.
pub fn run(
    cli: Cli,
    interrupt: &common::Interrupt,
) -> Result<std::path::PathBuf, common::BoxError> {
    const EXAMPLE: &str = "inception_transfer";
    let args = cli.common;
    args.check()?;
    cli.augment.check()?;
    let weights = common::BaseWeights::from_flag(cli.weights.as_deref(), false)?;
    if weights == common::BaseWeights::Random {
        eprintln!("{}", common::random_weights_banner(EXAMPLE));
    }
    let data = common::resolve_data(&args.data)?;
    let out = common::out_dir(EXAMPLE, args.out.as_deref())?;
    let generator = cli.augment.generator();
    let preview =
        common::write_augmentation_preview(&data, &generator, args.target_size, args.seed, &out)?;
    let mut model = transfer_model(args.target_size, args.seed, &weights)?;
    let precision = if cli.half {
        model.set_frozen_precision(Precision::Half);
        "the frozen base's convolutions in half precision (--half)"
    } else {
        "single precision throughout"
    };
    model.summary();
    println!("arithmetic: {precision}");
    println!("InceptionV3 base: {}", weights.describe());
    println!("{}", cli.augment.note());
    let (files, trained) = common::train_and_write(
        EXAMPLE,
        "transfer learning: InceptionV3 frozen to mixed7, new head",
        &args,
        &mut model,
        &generator,
        &out,
        interrupt,
        vec![
            format!(
                "InceptionV3 base (frozen, cut at mixed7): {}",
                weights.describe()
            ),
            "head: Flatten, Dense(1024, relu), Dropout(0.2), Dense(1, sigmoid); \
             RMSprop(learning_rate=1e-4)"
                .into(),
            cli.augment.note(),
            format!("arithmetic: {precision}"),
            "`augmentation_preview.png`: one training image under 9 random augmentations".into(),
        ],
    )?;
    common::print_files_with(
        &files,
        &trained,
        &[(&preview, "one training image under 9 random augmentations")],
    );
    if weights == common::BaseWeights::Random {
        eprintln!("{}", common::random_weights_banner(EXAMPLE));
    }
    Ok(out)
}

fn main() {
    let cli: Cli = common::parse_args(DEFAULT_EPOCHS);
    common::main_with("inception_transfer", || {
        let interrupt = common::Interrupt::new();
        interrupt.install()?;
        run(cli, &interrupt).map(|_| ())
    });
}
