//! Weights: save -> load gives identical predictions; loading reports every
//! mismatch by name; the history plots are real PNGs.

use std::path::PathBuf;

use convnet_nn::layers::*;
use convnet_nn::Activation::*;
use convnet_nn::{clear_session, set_random_seed, History, Logs, Model, Sequential};
use convnet_tensor::{safetensors, Rng, Tensor};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("convnet-nn-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn model(seed: u64) -> Model {
    set_random_seed(seed);
    let mut m = Sequential::new(&[6, 6, 2]);
    m.add(Conv2D::new(4, (3, 3)).activation(Relu)).unwrap();
    m.add(BatchNormalization::new()).unwrap();
    m.add(Flatten::new()).unwrap();
    m.add(Dense::new(3).activation(Softmax)).unwrap();
    m
}

#[test]
fn save_then_load_gives_identical_predictions() {
    clear_session();
    let dir = tmp("roundtrip");
    let path = dir.join("weights.safetensors");
    let a = model(1);
    a.save_weights(&path).unwrap();
    let x = Tensor::rand_normal(&[5, 6, 6, 2], 0.0, 1.0, &mut Rng::new(3));
    clear_session();
    let b = model(2);
    assert_ne!(a.predict(&x, 5).unwrap(), b.predict(&x, 5).unwrap());
    b.load_weights(&path).unwrap();
    assert_eq!(a.predict(&x, 5).unwrap(), b.predict(&x, 5).unwrap());
    let file = safetensors::load(&path).unwrap();
    let names: Vec<&str> = file.tensors.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        [
            "batch_normalization/beta",
            "batch_normalization/gamma",
            "batch_normalization/moving_mean",
            "batch_normalization/moving_variance",
            "conv2d/bias",
            "conv2d/kernel",
            "dense/bias",
            "dense/kernel"
        ]
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn loading_reports_each_mismatch_by_name() {
    clear_session();
    let dir = tmp("mismatch");
    let path = dir.join("w.safetensors");
    let m = model(1);
    let mut w = m.get_weights();
    w.retain(|(k, _)| k != "dense/bias");
    w.push(("dense/extra".into(), Tensor::zeros(&[2])));
    for (k, v) in w.iter_mut() {
        if k == "conv2d/kernel" {
            *v = Tensor::zeros(&[3, 3, 2, 5]);
        }
    }
    let refs: Vec<(&str, &Tensor)> = w.iter().map(|(k, v)| (k.as_str(), v)).collect();
    safetensors::save(&path, &refs, &Default::default()).unwrap();
    let e = m.load_weights(&path).unwrap_err().to_string();
    assert!(e.contains("w.safetensors"), "{e}");
    assert!(e.contains("missing \"dense/bias\""), "{e}");
    assert!(e.contains("unexpected \"dense/extra\""), "{e}");
    assert!(
        e.contains("\"conv2d/kernel\" has shape [3, 3, 2, 5]"),
        "{e}"
    );
    // Nothing was changed by the failed load.
    let x = Tensor::rand_normal(&[2, 6, 6, 2], 0.0, 1.0, &mut Rng::new(3));
    let before = m.predict(&x, 2).unwrap();
    let _ = m.load_weights(&path);
    assert_eq!(before, m.predict(&x, 2).unwrap());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn history_plots_are_png_files() {
    let dir = tmp("plot");
    let mut h = History::default();
    for e in 0..5 {
        let mut logs = Logs::new();
        logs.insert("accuracy".into(), 0.5 + 0.08 * e as f32);
        logs.insert("val_accuracy".into(), 0.5 + 0.06 * e as f32);
        logs.insert("loss".into(), 0.7 - 0.1 * e as f32);
        logs.insert("val_loss".into(), 0.7 - 0.07 * e as f32);
        h.push_epoch(e, &logs);
    }
    let both = dir.join("history.png");
    h.plot(&both).unwrap();
    let acc = dir.join("accuracy.png");
    h.plot_metric("accuracy", "Training and validation accuracy", &acc)
        .unwrap();
    for p in [&both, &acc] {
        let bytes = std::fs::read(p).unwrap();
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{} is not a PNG",
            p.display()
        );
        assert!(bytes.len() > 5_000, "{} is suspiciously small", p.display());
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn checkpoint_resumes_training_exactly() {
    use convnet_nn::optimizers::Adam;
    use convnet_nn::{Loss, Metric};
    clear_session();
    let dir = tmp("resume");
    let path = dir.join("ckpt.safetensors");
    let x = Tensor::rand_normal(&[8, 6, 6, 2], 0.0, 1.0, &mut Rng::new(4));
    let y = Tensor::from_fn(&[8], |i| (i % 3) as f32);
    let mut a = model(5);
    a.compile(
        Adam::default(),
        Loss::SparseCategoricalCrossentropy,
        &[Metric::Accuracy],
    )
    .unwrap();
    for _ in 0..3 {
        a.train_on_batch(&x, &y).unwrap();
    }
    a.save_checkpoint(&path).unwrap();
    a.train_on_batch(&x, &y).unwrap();
    clear_session();
    let mut b = model(6);
    b.compile(
        Adam::default(),
        Loss::SparseCategoricalCrossentropy,
        &[Metric::Accuracy],
    )
    .unwrap();
    b.load_checkpoint(&path).unwrap();
    assert_eq!(b.optimizer().unwrap().iterations(), 3);
    b.train_on_batch(&x, &y).unwrap();
    assert_eq!(a.get_weights(), b.get_weights());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn non_finite_weights_are_reported_by_name() {
    let good = Tensor::ones(&[2, 2]);
    let bad = Tensor::from_vec(&[3], vec![f32::NAN, 1.0, f32::INFINITY]).unwrap();
    let report = convnet_nn::non_finite_report(&[
        ("dense/kernel".to_string(), good),
        ("dense/bias".to_string(), bad),
    ]);
    assert_eq!(
        report,
        vec!["\"dense/bias\": 1 NaN, 1 infinite of 3 values".to_string()]
    );
}

/// The child half of the test below: save checkpoints to the path in
/// `CONVNET_KILL_SAVE` until killed.
fn save_until_killed(path: &str) -> ! {
    clear_session();
    let mut m = Sequential::new(&[32, 32, 3]);
    m.add(Conv2D::new(64, (3, 3))).unwrap();
    m.add(Flatten::new()).unwrap();
    // About 15 MB of weights: a save takes long enough to be killed in.
    m.add(Dense::new(64)).unwrap();
    loop {
        m.save_checkpoint(std::path::Path::new(path)).unwrap();
    }
}

#[test]
fn a_process_killed_while_saving_leaves_a_readable_checkpoint() {
    if let Ok(path) = std::env::var("CONVNET_KILL_SAVE") {
        save_until_killed(&path);
    }
    clear_session();
    let dir = tmp("killed");
    let path = dir.join("checkpoint.safetensors");
    // A first whole checkpoint, from the child itself (killed once the file
    // exists).
    for delay_ms in [0u64, 37, 110, 260, 500] {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "a_process_killed_while_saving_leaves_a_readable_checkpoint",
                "--nocapture",
            ])
            .env("CONVNET_KILL_SAVE", &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait for a first complete file, then kill at some point of a
        // later save.
        let start = std::time::Instant::now();
        while !path.exists() && start.elapsed().as_secs() < 60 {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let file = safetensors::load(&path)
            .unwrap_or_else(|e| panic!("after a kill at +{delay_ms} ms: {e}"));
        assert!(file.tensors.iter().any(|(k, _)| k == "dense/kernel"));
        // No temporary file is mistaken for the checkpoint; stray ones from
        // the killed save may remain beside it, never in its place.
    }
}
