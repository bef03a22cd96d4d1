//! Project chores: `cargo xtask <command>`.
//!
//! Commands:
//! - `bench [target...]`: quick throughput figures, one line each. Targets:
//!   `conv` (the three convolutions of the basic Cats-vs-Dogs CNN). With no
//!   target, every available target runs.

// The `convnet` umbrella crate's global allocator (its default `mimalloc`
// feature), so the benchmarks measure what users of `convnet` get.
use convnet as _;

mod bench;
mod download;
mod fetch_data;
mod fetch_weights;
mod fuzz;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  bench [target [options]...]
                      quick benchmarks, one line per figure; targets: {targets}
                      (no target: all of them but half); --against-keras [--rounds N]:
                      TensorFlow/Keras's figures too, alternating, best of N rounds (2)
  fetch-data          download and unpack the Cats-vs-Dogs images into data/
  fetch-weights       download Keras's InceptionV3 ImageNet weights and convert
                      them to safetensors ($CONVNET_HOME, default ~/.cache/convnet)
  fuzz [--time S] [target...]
                      run the cargo-fuzz targets (safetensors, idx, image, keras_h5), S seconds
                      each (default 600); needs nightly and cargo-fuzz
  help                this message";

fn usage() -> String {
    USAGE.replace("{targets}", &bench::target_names().join(", "))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("bench") => match bench::run(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xtask bench: {e}\n\n{}", usage());
                ExitCode::FAILURE
            }
        },
        Some("fetch-data") => match fetch_data::run(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xtask fetch-data: {e}");
                ExitCode::FAILURE
            }
        },
        Some("fetch-weights") => match fetch_weights::run(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xtask fetch-weights: {e}");
                ExitCode::FAILURE
            }
        },
        Some("fuzz") => match fuzz::run(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("xtask fuzz: {e}");
                ExitCode::FAILURE
            }
        },
        Some("help" | "-h" | "--help") => {
            println!("{}", usage());
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("xtask: unknown command `{other}`\n\n{}", usage());
            ExitCode::FAILURE
        }
        None => {
            eprintln!("{}", usage());
            ExitCode::FAILURE
        }
    }
}
