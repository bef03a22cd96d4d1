//! End-to-end test of the mission's example programs: the run logic of
//! `examples/basic_cnn.rs` (shared with the other examples in
//! `examples/common/`) trains the basic CNN on a subset of the bundled
//! sample at a reduced size, and the out folder must hold what a user is
//! told it holds, with a model that learned something.

#[path = "../examples/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};

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
