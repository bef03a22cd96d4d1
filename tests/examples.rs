//! End-to-end test of the mission's example programs: the run logic of
//! `examples/basic_cnn.rs` (shared with the other examples in
//! `examples/common/`) trains the basic CNN on a subset of the bundled
//! sample at a reduced size, and the out folder must hold what a user is
//! told it holds, with a model that learned something.

#[allow(clippy::duplicate_mod)]
#[path = "../examples/common/mod.rs"]
mod common;

// The example programs themselves, each with its `Cli` and `run` (their
// `main` is not called here).
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "../examples/augmented_cnn.rs"]
mod augmented_cnn;
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "../examples/extract_features.rs"]
mod extract_features;
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "../examples/filters.rs"]
mod filters;
#[allow(dead_code, clippy::duplicate_mod)]
#[path = "../examples/inception_transfer.rs"]
mod inception_transfer;

use std::path::{Path, PathBuf};

use clap::Parser;
use common::{CommonArgs, Interrupt};
use convnet::data::ImageDataGenerator;
use convnet::tensor::safetensors;

/// The bundled sample in the repository.
fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/sample")
}

/// A copy of the first `train` and `validation` images of each class of the
/// bundled sample, in the same layout.
fn subset(dir: &Path, train: usize, validation: usize) {
    for (split, n) in [("train", train), ("validation", validation)] {
        for class in ["sandals", "sneakers"] {
            let from = sample().join(split).join(class);
            let to = dir.join(split).join(class);
            std::fs::create_dir_all(&to).unwrap();
            let mut files: Vec<PathBuf> = std::fs::read_dir(&from)
                .unwrap_or_else(|e| panic!("{}: {e}", from.display()))
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            assert!(files.len() >= n, "{}: too few images", from.display());
            for f in &files[..n] {
                std::fs::copy(f, to.join(f.file_name().unwrap())).unwrap();
            }
        }
    }
}

fn small_args(data: &Path, epochs: usize) -> CommonArgs {
    CommonArgs {
        data: data.to_path_buf(),
        epochs,
        steps_per_epoch: 20,
        validation_steps: 4,
        batch_size: 32,
        seed: 3,
        out: None,
        verbose: false,
        target_size: (48, 48),
    }
}

fn assert_png(path: &Path) {
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: not a PNG: {e}", path.display()));
    assert!(
        img.width() >= 100 && img.height() >= 100,
        "{}",
        path.display()
    );
    // A plot is not a blank canvas: several distinct colours.
    let rgb = img.to_rgb8();
    let mut colours: Vec<[u8; 3]> = rgb.pixels().map(|p| p.0).collect();
    colours.sort();
    colours.dedup();
    assert!(colours.len() > 10, "{} looks blank", path.display());
}

#[test]
fn basic_cnn_trains_and_writes_its_files() {
    let data = tempfile::tempdir().unwrap();
    subset(data.path(), 320, 64);
    let out = tempfile::tempdir().unwrap();
    let args = small_args(data.path(), 1);
    let (files, trained) = common::run_basic_cnn(
        "basic_cnn",
        "test run",
        &args,
        &ImageDataGenerator::new().rescale(1.0 / 255.0),
        out.path(),
        &Interrupt::new(),
        vec![],
    )
    .unwrap();

    assert!(!trained.interrupted);
    assert_eq!(trained.history.epoch, vec![0]);
    let val_acc = trained.history.get("val_accuracy").unwrap()[0];
    assert!(
        val_acc > 0.75,
        "validation accuracy {val_acc} after one epoch"
    );

    assert_png(&files.accuracy_png);
    assert_png(&files.loss_png);

    let csv = std::fs::read_to_string(&files.history_csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "epoch,accuracy,loss,val_accuracy,val_loss");
    assert_eq!(lines.len(), 2);
    let row: Vec<f32> = lines[1].split(',').map(|v| v.parse().unwrap()).collect();
    assert_eq!(row[0], 1.0);
    assert_eq!(row[3], val_acc);

    // The weights load back into the same architecture and say what made them.
    let file = safetensors::load(&files.weights).unwrap();
    assert_eq!(file.metadata["example"], "basic_cnn");
    assert_eq!(file.metadata["input_shape"], "48,48,3");
    assert_eq!(file.get("conv2d/kernel").unwrap().shape(), &[3, 3, 3, 32]);
    let model = common::basic_cnn_model((48, 48), 99).unwrap();
    model.load_weights(&files.weights).unwrap();
    // The file lists tensors sorted by name, the model in layer order.
    let mut loaded = model.get_weights();
    loaded.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        loaded, file.tensors,
        "the saved weights are the model's after loading"
    );

    let report = std::fs::read_to_string(&files.report).unwrap();
    assert!(report.contains("Total params"), "{report}");
    assert!(report.contains(&format!("{val_acc:.4}")), "{report}");
}

#[test]
fn a_stop_request_ends_after_the_epoch_and_still_writes_everything() {
    let data = tempfile::tempdir().unwrap();
    subset(data.path(), 40, 16);
    let out = tempfile::tempdir().unwrap();
    let mut args = small_args(data.path(), 3);
    args.steps_per_epoch = 2;
    args.validation_steps = 1;
    args.target_size = (24, 24);
    let interrupt = Interrupt::new();
    interrupt.request(); // as one Ctrl-C during the first epoch
    let (files, trained) = common::run_basic_cnn(
        "basic_cnn",
        "interrupted",
        &args,
        &ImageDataGenerator::new().rescale(1.0 / 255.0),
        out.path(),
        &interrupt,
        vec![],
    )
    .unwrap();
    assert!(trained.interrupted);
    assert_eq!(
        trained.history.epoch,
        vec![0],
        "the first epoch is finished"
    );
    assert!(trained.history.get("val_loss").is_some());
    assert_png(&files.accuracy_png);
    assert_png(&files.loss_png);
    assert_eq!(
        std::fs::read_to_string(&files.history_csv)
            .unwrap()
            .lines()
            .count(),
        2
    );
    assert!(files.weights.exists());
    let report = std::fs::read_to_string(&files.report).unwrap();
    assert!(
        report.contains("Stopped by Ctrl-C after 1 of 3 epochs"),
        "{report}"
    );
}

#[test]
fn bad_data_folders_are_named_in_the_error() {
    let empty = tempfile::tempdir().unwrap();
    let err = common::resolve_data(empty.path()).unwrap_err().to_string();
    assert!(err.contains(&empty.path().display().to_string()), "{err}");
    assert!(err.contains("no train/ folder"), "{err}");
    let missing = empty.path().join("nope");
    let err = common::resolve_data(&missing).unwrap_err().to_string();
    assert!(err.contains("no such folder"), "{err}");
    let mut args = small_args(empty.path(), 1);
    args.batch_size = 0;
    assert!(args
        .check()
        .unwrap_err()
        .to_string()
        .contains("--batch-size"));
}

#[test]
fn sizes_and_stamps() {
    assert_eq!(common::parse_size("150"), Ok((150, 150)));
    assert_eq!(common::parse_size("120x80"), Ok((120, 80)));
    assert!(common::parse_size("0").is_err());
    assert!(common::parse_size("12xx").is_err());
    assert!(common::parse_size("big").is_err());
    use std::time::{Duration, UNIX_EPOCH};
    assert_eq!(common::utc_stamp(UNIX_EPOCH), "19700101-000000");
    // 2023-11-14 22:13:20 UTC and 2024-02-29 12:00:00 UTC.
    assert_eq!(
        common::utc_stamp(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        "20231114-221320"
    );
    assert_eq!(
        common::utc_stamp(UNIX_EPOCH + Duration::from_secs(1_709_208_000)),
        "20240229-120000"
    );
}

/// A valid PNG of at least `min` pixels a side with some contrast; returns
/// its size.
fn assert_picture(path: &Path, min: u32) -> (u32, u32) {
    assert!(
        std::fs::read(path)
            .unwrap()
            .starts_with(b"\x89PNG\r\n\x1a\n"),
        "{}: no PNG signature",
        path.display()
    );
    let img = image::open(path).unwrap_or_else(|e| panic!("{}: not a PNG: {e}", path.display()));
    assert!(
        img.width() >= min && img.height() >= min,
        "{}: {}x{}",
        path.display(),
        img.width(),
        img.height()
    );
    let rgb = img.to_rgb8();
    let mut colours: Vec<[u8; 3]> = rgb.pixels().map(|p| p.0).collect();
    colours.sort();
    colours.dedup();
    assert!(colours.len() > 4, "{} looks blank", path.display());
    (img.width(), img.height())
}

fn arg(p: &Path) -> String {
    p.display().to_string()
}

/// The history of a one-epoch run: header and one row of four figures.
fn assert_history(dir: &Path) {
    let csv = std::fs::read_to_string(dir.join("history.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], "epoch,accuracy,loss,val_accuracy,val_loss");
    assert_eq!(lines.len(), 2, "{csv}");
    let row: Vec<f32> = lines[1].split(',').map(|v| v.parse().unwrap()).collect();
    assert_eq!(row.len(), 5);
    assert!(row.iter().all(|v| v.is_finite()), "{csv}");
}

#[test]
fn augmented_cnn_runs_and_writes_its_files_and_preview() {
    let data = tempfile::tempdir().unwrap();
    subset(data.path(), 24, 8);
    let out = tempfile::tempdir().unwrap();
    let cli = augmented_cnn::Cli::try_parse_from([
        "augmented_cnn",
        "--data",
        &arg(data.path()),
        "--out",
        &arg(out.path()),
        "--epochs",
        "1",
        "--steps-per-epoch",
        "2",
        "--validation-steps",
        "1",
        "--batch-size",
        "8",
        "--target-size",
        "32",
        "--rotation",
        "40",
        "--horizontal-flip",
    ])
    .unwrap();
    assert_eq!(cli.augment.rotation, 40.0);
    assert!(cli.augment.horizontal_flip);
    let dir = augmented_cnn::run(cli, &augmented_cnn::common::Interrupt::new()).unwrap();
    assert_eq!(dir, out.path());
    assert_png(&dir.join("accuracy.png"));
    assert_png(&dir.join("loss.png"));
    assert_history(&dir);
    // 9 tiles of 32x32 in a 3x3 grid with 2-pixel gaps.
    assert_eq!(
        assert_picture(&dir.join("augmentation_preview.png"), 32),
        (100, 100)
    );
    assert!(!dir.join(".augmentation_source.png").exists());
    let weights = safetensors::load(&dir.join("weights.safetensors")).unwrap();
    assert_eq!(weights.metadata["example"], "augmented_cnn");
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("rotation up to 40 degrees"), "{report}");
    assert!(report.contains("horizontal flip on"), "{report}");

    // A rotation that is not an angle is refused before anything runs.
    let cli = augmented_cnn::Cli::try_parse_from([
        "augmented_cnn",
        "--data",
        &arg(data.path()),
        "--rotation",
        "400",
    ])
    .unwrap();
    let err = augmented_cnn::run(cli, &augmented_cnn::common::Interrupt::new()).unwrap_err();
    assert!(err.to_string().contains("--rotation"), "{err}");
}

#[test]
fn inception_transfer_runs_from_random_weights_and_stops_without_the_imagenet_file() {
    let data = tempfile::tempdir().unwrap();
    subset(data.path(), 4, 2);
    let out = tempfile::tempdir().unwrap();
    let cli = inception_transfer::Cli::try_parse_from([
        "inception_transfer",
        "--data",
        &arg(data.path()),
        "--out",
        &arg(out.path()),
        "--weights",
        "random",
        "--epochs",
        "1",
        "--steps-per-epoch",
        "1",
        "--validation-steps",
        "1",
        "--batch-size",
        "2",
        "--target-size",
        "75",
        "--half",
    ])
    .unwrap();
    let dir = inception_transfer::run(cli, &inception_transfer::common::Interrupt::new()).unwrap();
    assert_png(&dir.join("accuracy.png"));
    assert_png(&dir.join("loss.png"));
    assert_history(&dir);
    assert_picture(&dir.join("augmentation_preview.png"), 75);
    let weights = safetensors::load(&dir.join("weights.safetensors")).unwrap();
    assert_eq!(weights.metadata["example"], "inception_transfer");
    assert_eq!(weights.metadata["input_shape"], "75,75,3");
    assert_eq!(weights.get("mixed7"), None);
    assert!(weights.get("conv2d/kernel").is_some());
    assert_eq!(weights.get("dense/kernel").unwrap().shape()[1], 1024);
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("RANDOM weights"), "{report}");
    assert!(report.contains("mixed7"), "{report}");
    assert!(report.contains("half precision (--half)"), "{report}");
    assert!(inception_transfer::common::random_weights_banner("x").contains("RANDOM"));

    // The mission's model at 150x150: Keras's parameter counts.
    let model = inception_transfer::transfer_model(
        (150, 150),
        1,
        &inception_transfer::common::BaseWeights::Random,
    )
    .unwrap();
    assert_eq!(model.count_params_split(), (38_537_217, 8_975_264));

    // No weights file where `cargo xtask fetch-weights` puts it: a message
    // that says to run it, before any work (only this test sets
    // CONVNET_HOME).
    let home = tempfile::tempdir().unwrap();
    std::env::set_var("CONVNET_HOME", home.path());
    let cli = inception_transfer::Cli::try_parse_from([
        "inception_transfer",
        "--data",
        &arg(data.path()),
        "--out",
        &arg(&out.path().join("none")),
    ])
    .unwrap();
    let err = inception_transfer::run(cli, &inception_transfer::common::Interrupt::new())
        .unwrap_err()
        .to_string();
    std::env::remove_var("CONVNET_HOME");
    assert!(err.contains("cargo xtask fetch-weights"), "{err}");
    assert!(err.contains(&arg(home.path())), "{err}");
    assert!(!out.path().join("none").exists(), "nothing written");
    // A --weights file that is not there is named.
    let cli = inception_transfer::Cli::try_parse_from([
        "inception_transfer",
        "--weights",
        "no/such.safetensors",
    ])
    .unwrap();
    let err = inception_transfer::run(cli, &inception_transfer::common::Interrupt::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("no/such.safetensors"), "{err}");
}

#[test]
fn extract_features_writes_the_layers_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    // Weights both runs share: a random model's, saved.
    let model = extract_features::inception(
        (75, 75),
        false,
        &extract_features::common::BaseWeights::Random,
    )
    .unwrap();
    let weights_file = dir.path().join("weights.safetensors");
    model.save_weights(&weights_file).unwrap();

    // From image files.
    let images = [
        sample().join("train/sandals/sandal.0.png"),
        sample().join("train/sneakers/sneaker.0.png"),
    ];
    let output = dir.path().join("features.safetensors");
    let cli = extract_features::Cli::try_parse_from([
        "extract_features",
        "--weights",
        &arg(&weights_file),
        "--images",
        &arg(&images[0]),
        &arg(&images[1]),
        "--target-size",
        "75",
        "--layers",
        "mixed0,mixed2",
        "--output",
        &arg(&output),
    ])
    .unwrap();
    let features = extract_features::run(cli).unwrap();
    let file = safetensors::load(&output).unwrap();
    assert_eq!(file.names().collect::<Vec<_>>(), ["mixed0", "mixed2"]);
    let mixed0 = file.get("mixed0").unwrap();
    assert_eq!(mixed0.shape(), &[2, 7, 7, 256]);
    assert_eq!(file.get("mixed2").unwrap().shape(), &[2, 7, 7, 288]);
    assert_eq!(mixed0, &features[0].1);
    assert!(mixed0.all_finite());
    assert_eq!(file.metadata["model"], "InceptionV3");

    // The same images given as a preprocessed `input` tensor: the same
    // features.
    let x = extract_features::inputs(
        &extract_features::Cli::try_parse_from([
            "extract_features",
            "--images",
            &arg(&images[0]),
            &arg(&images[1]),
            "--target-size",
            "75",
        ])
        .unwrap(),
    )
    .unwrap()
    .0;
    assert!(x.values().iter().all(|v| (-1.0..=1.0).contains(v)));
    let input = dir.path().join("x.safetensors");
    safetensors::save(&input, &[("input", &x)], &Default::default()).unwrap();
    let output2 = dir.path().join("features2.safetensors");
    let cli = extract_features::Cli::try_parse_from([
        "extract_features",
        "--weights",
        &arg(&weights_file),
        "--input",
        &arg(&input),
        "--layers",
        "mixed0",
        "--output",
        &arg(&output2),
    ])
    .unwrap();
    extract_features::run(cli).unwrap();
    assert_eq!(
        safetensors::load(&output2).unwrap().get("mixed0").unwrap(),
        mixed0
    );

    // An unknown layer is named.
    let cli = extract_features::Cli::try_parse_from([
        "extract_features",
        "--weights",
        "random",
        "--input",
        &arg(&input),
        "--layers",
        "mixed99",
        "--output",
        &arg(&dir.path().join("never.safetensors")),
    ])
    .unwrap();
    let err = extract_features::run(cli).unwrap_err().to_string();
    assert!(err.contains("mixed99"), "{err}");
    // One of --input and --images is required, except to list the layers
    // (which needs no weights file).
    assert!(extract_features::Cli::try_parse_from(["extract_features"]).is_err());
    let cli = extract_features::Cli::try_parse_from([
        "extract_features",
        "--list-layers",
        "--target-size",
        "75",
    ])
    .unwrap();
    assert!(extract_features::run(cli).unwrap().is_empty());
}

#[test]
fn fixed_filters_are_the_library_convolution_of_the_textbook_kernels() {
    // A vertical step edge: Sobel x answers on it, Sobel y does not, the
    // Gaussian keeps the flat parts flat.
    let img =
        convnet::tensor::Tensor::from_fn(&[12, 12, 1], |i| if i % 12 >= 6 { 1.0 } else { 0.0 });
    let y = filters::apply_fixed_filters(&img).unwrap();
    assert_eq!(y.shape(), &[1, 12, 12, 4]);
    let v = y.to_vec();
    let at = |r: usize, c: usize, k: usize| v[(r * 12 + c) * 4 + k];
    assert_eq!(at(6, 5, 0), 4.0, "Sobel x at the edge");
    assert_eq!(at(6, 6, 0), 4.0);
    assert_eq!(at(6, 2, 0), 0.0);
    assert_eq!(at(6, 5, 1), 0.0, "Sobel y sees no vertical edge");
    assert_eq!(at(6, 5, 2), 1.0, "Laplacian");
    assert_eq!(at(6, 6, 2), -1.0);
    assert!((at(6, 9, 3) - 1.0).abs() < 1e-5, "{}", at(6, 9, 3));
    assert!(at(6, 2, 3).abs() < 1e-6);
}

#[test]
fn filters_draws_fixed_learned_and_trained_pictures() {
    // Weights of a basic CNN at 32x32, as basic_cnn saves them.
    let dir = tempfile::tempdir().unwrap();
    let model = filters::common::basic_cnn_model((32, 32), 5).unwrap();
    let weights = dir.path().join("weights.safetensors");
    filters::common::save_weights(&model, "basic_cnn", &weights).unwrap();
    let out = dir.path().join("pictures");
    let cli = filters::Cli::try_parse_from([
        "filters",
        "--weights",
        &arg(&weights),
        "--size",
        "40",
        "--out",
        &arg(&out),
    ])
    .unwrap();
    filters::run(cli).unwrap();
    // Five 40x40 panels at 3x in a row.
    let (w, h) = assert_picture(&out.join("filters_fixed.png"), 100);
    assert!(w > 5 * h / 2, "{w}x{h}");
    assert_picture(&out.join("filters_learned_bars.png"), 100);
    assert_picture(&out.join("first_layer_filters.png"), 100);
    assert_picture(&out.join("first_layer_filters_gray.png"), 100);
    for layer in ["conv2d", "conv2d_1", "conv2d_2"] {
        assert_picture(&out.join(format!("feature_maps_{layer}.png")), 40);
    }
    // The bars CNN learns its task.
    let (kernel, accuracy) = filters::learn_bar_filters(42).unwrap();
    assert_eq!(kernel.shape(), &[3, 3, 1, 4]);
    assert!(accuracy > 0.9, "bar test accuracy {accuracy}");
    // Weights of another architecture are refused with a hint.
    let other = dir.path().join("other.safetensors");
    let t = convnet::tensor::Tensor::zeros(&[2]);
    safetensors::save(&other, &[("dense/bias", &t)], &Default::default()).unwrap();
    let cli = filters::Cli::try_parse_from([
        "filters",
        "--weights",
        &arg(&other),
        "--out",
        &arg(&dir.path().join("x")),
    ])
    .unwrap();
    let err = filters::run(cli).unwrap_err().to_string();
    assert!(err.contains("basic_cnn"), "{err}");
}
