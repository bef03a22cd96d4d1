//! The mission's first program: a CNN trained from scratch to tell two
//! kinds of images apart (Cats vs Dogs in the blog post; the bundled
//! sandals-vs-sneakers sample by default).
//!
//! ```text
//! Conv2D(32, 3x3, relu) MaxPooling2D(2)
//! Conv2D(64, 3x3, relu) MaxPooling2D(2)
//! Conv2D(128, 3x3, relu) MaxPooling2D(2)
//! Flatten Dense(128, relu) Dense(512, relu) Dense(1, sigmoid)
//! ```
//!
//! adam, binary cross-entropy, accuracy; images rescaled by 1/255 and
//! resized to 150x150; `fit(train, validation_data=validation, epochs,
//! steps_per_epoch=100, validation_steps=50)`. Writes `accuracy.png`,
//! `loss.png`, `history.csv`, `weights.safetensors` and `report.md` into
//! `runs/basic_cnn-<time>/` (or `--out`).
//!
//! Run: `cargo run --release --example basic_cnn` (`-- --help` for the
//! flags). Ctrl-C stops at the end of the epoch and still writes the files.

#[path = "common/mod.rs"]
mod common;

use clap::Parser;
use convnet::data::ImageDataGenerator;

/// Default epochs: a run on the bundled sample takes a few minutes on two
/// cores (the Keras program runs 15).
const DEFAULT_EPOCHS: usize = 5;

/// The mission's basic CNN, trained from scratch on an image folder
/// (train/ and validation/, one subfolder per class). Writes accuracy.png,
/// loss.png, history.csv, weights.safetensors and report.md into the out
/// folder. Ctrl-C stops at the end of the epoch and still writes them.
#[derive(Parser, Debug)]
#[command(name = "basic_cnn")]
struct Cli {
    #[command(flatten)]
    common: common::CommonArgs,
}

fn main() {
    let cli: Cli = common::parse_args(DEFAULT_EPOCHS);
    common::main_with("basic_cnn", || {
        let args = cli.common;
        args.check()?;
        common::resolve_data(&args.data)?;
        let out = common::out_dir("basic_cnn", args.out.as_deref())?;
        let interrupt = common::Interrupt::new();
        interrupt.install()?;
        let (files, trained) = common::run_basic_cnn(
            "basic_cnn",
            "the basic CNN trained from scratch",
            &args,
            &ImageDataGenerator::new().rescale(1.0 / 255.0),
            &out,
            &interrupt,
            vec!["images rescaled by 1/255, no augmentation".into()],
        )?;
        common::print_files(&files, &trained);
        Ok(())
    });
}
