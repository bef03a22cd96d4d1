//! The mission's second program: the basic CNN of `basic_cnn`, fed with
//! augmented training images to fight overfitting.
//!
//! Training images: `ImageDataGenerator(rescale=1/255,
//! width_shift_range=0.2, height_shift_range=0.2, shear_range=0.2,
//! zoom_range=0.2)`, plus `--rotation DEGREES` and `--horizontal-flip` on
//! request (the mission notes those two made its results worse).
//! Validation images are only rescaled. Writes `accuracy.png`, `loss.png`,
//! `history.csv`, `weights.safetensors`, `report.md` and
//! `augmentation_preview.png` (one training image under 9 random
//! augmentations) into `runs/augmented_cnn-<time>/` (or `--out`).
//!
//! Run: `cargo run --release --example augmented_cnn` (`-- --help` for the
//! flags). Ctrl-C stops at the end of the epoch and still writes the files.

// `pub` so that the end-to-end test (tests/examples.rs) can reach it.
#[path = "common/mod.rs"]
pub mod common;

use clap::Parser;

/// Default epochs: a run on the bundled sample takes a few minutes on two
/// cores (the Keras program runs 15; augmentation learns more slowly).
const DEFAULT_EPOCHS: usize = 5;

/// The mission's basic CNN trained on augmented images (random shifts,
/// shear and zoom; rotation and flips on request). Writes accuracy.png,
/// loss.png, history.csv, weights.safetensors, report.md and
/// augmentation_preview.png into the out folder. Ctrl-C stops at the end of
/// the epoch and still writes them.
#[derive(Parser, Debug)]
#[command(name = "augmented_cnn")]
pub struct Cli {
    #[command(flatten)]
    pub common: common::CommonArgs,

    #[command(flatten)]
    pub augment: common::AugmentArgs,
}

/// The whole program after parsing the flags; returns the out folder.
pub fn run(
    cli: Cli,
    interrupt: &common::Interrupt,
) -> Result<std::path::PathBuf, common::BoxError> {
    let args = cli.common;
    args.check()?;
    cli.augment.check()?;
    let data = common::resolve_data(&args.data)?;
    let out = common::out_dir("augmented_cnn", args.out.as_deref())?;
    let generator = cli.augment.generator();
    let preview =
        common::write_augmentation_preview(&data, &generator, args.target_size, args.seed, &out)?;
    println!("{}", cli.augment.note());
    let (files, trained) = common::run_basic_cnn(
        "augmented_cnn",
        "the basic CNN trained on augmented images",
        &args,
        &generator,
        &out,
        interrupt,
        vec![
            cli.augment.note(),
            "`augmentation_preview.png`: one training image under 9 random augmentations".into(),
        ],
    )?;
    common::print_files_with(
        &files,
        &trained,
        &[(&preview, "one training image under 9 random augmentations")],
    );
    Ok(out)
}

fn main() {
    let cli: Cli = common::parse_args(DEFAULT_EPOCHS);
    common::main_with("augmented_cnn", || {
        let interrupt = common::Interrupt::new();
        interrupt.install()?;
        run(cli, &interrupt).map(|_| ())
    });
}
