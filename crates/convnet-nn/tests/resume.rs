//! An interrupted `fit` resumed from `BackupAndRestore`'s checkpoint ends
//! with the same weights, bit for bit, as an uninterrupted run: weights,
//! optimizer state, batch-norm statistics, epoch, dropout masks and data
//! order all continue where they stopped.

use convnet_nn::callbacks::{BackupAndRestore, Callback, Control};
use convnet_nn::layers::*;
use convnet_nn::optimizers::Adam;
use convnet_nn::Activation::*;
use convnet_nn::{
    clear_session, set_random_seed, FitOptions, Logs, Loss, Metric, Model, NnError, Sequential,
};
use convnet_tensor::{Rng, Tensor};

fn model(seed: u64) -> Model {
    clear_session();
    set_random_seed(seed);
    let mut m = Sequential::new(&[6, 6, 2]);
    m.add(Conv2D::new(4, (3, 3))).unwrap();
    m.add(BatchNormalization::new()).unwrap();
    m.add(ActivationLayer::new(Relu)).unwrap();
    m.add(Flatten::new()).unwrap();
    m.add(Dropout::new(0.3)).unwrap();
    m.add(Dense::new(3).activation(Softmax)).unwrap();
    m.compile(
        Adam::new(0.01),
        Loss::SparseCategoricalCrossentropy,
        &[Metric::Accuracy],
    )
    .unwrap();
    m
}

/// Fails `fit` at the end of epoch `at`, as a crash would (no
/// `on_train_end`, so the backup stays).
struct Crash {
    at: usize,
}

impl Callback for Crash {
    fn on_epoch_end(
        &mut self,
        epoch: usize,
        _logs: &Logs,
        _m: &Model,
    ) -> convnet_nn::Result<Control> {
        if epoch == self.at {
            return Err(NnError::Usage("simulated crash".into()));
        }
        Ok(Control::Continue)
    }
}

fn data() -> (Tensor, Tensor) {
    let x = Tensor::rand_normal(&[20, 6, 6, 2], 0.0, 1.0, &mut Rng::new(4));
    let y = Tensor::from_fn(&[20], |i| (i % 3) as f32);
    (x, y)
}

fn options() -> FitOptions {
    FitOptions {
        epochs: 5,
        verbose: 0,
        seed: 11,
        ..Default::default()
    }
}

#[test]
fn a_resumed_run_ends_where_an_uninterrupted_one_does() {
    let (x, y) = data();
    let dir = tempfile::tempdir().unwrap();

    let mut whole = model(1);
    let h = whole
        .fit_arrays(&x, &y, 6, None, &options(), &mut [])
        .unwrap();
    assert_eq!(h.get("loss").unwrap().len(), 5);

    // Interrupted after epoch 2 (the backup of epoch 2 is written first).
    let mut backup = BackupAndRestore::new(dir.path());
    let mut first = model(1);
    let e = first
        .fit_arrays(
            &x,
            &y,
            6,
            None,
            &options(),
            &mut [&mut backup, &mut Crash { at: 2 }],
        )
        .unwrap_err();
    assert!(e.to_string().contains("simulated crash"), "{e}");
    assert!(backup.path().exists());

    // A new process: another initialisation, restored from the backup.
    let mut backup = BackupAndRestore::new(dir.path());
    let mut resumed = model(99);
    assert_ne!(resumed.get_weights(), first.get_weights());
    let h = resumed
        .fit_arrays(&x, &y, 6, None, &options(), &mut [&mut backup])
        .unwrap();
    assert_eq!(backup.restored_epochs, 2);
    assert_eq!(h.get("loss").unwrap().len(), 3, "epochs 3 to 5");
    assert_eq!(resumed.get_weights(), whole.get_weights());
    assert_eq!(resumed.optimizer().unwrap().iterations(), 5 * 4);
    // Training completed: the backup is gone.
    assert!(!backup.path().exists());
}

#[test]
fn a_checkpoint_without_an_epoch_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let backup = BackupAndRestore::new(dir.path());
    let m = model(1);
    m.save_checkpoint(&backup.path()).unwrap();
    let (x, y) = data();
    let mut m = model(1);
    let e = m
        .fit_arrays(
            &x,
            &y,
            6,
            None,
            &options(),
            &mut [&mut BackupAndRestore::new(dir.path())],
        )
        .unwrap_err();
    assert!(e.to_string().contains("epochs_done"), "{e}");
}
