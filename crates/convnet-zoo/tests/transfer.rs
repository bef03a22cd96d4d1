//! The mission's transfer learning on a small input: a frozen InceptionV3
//! base cut at mixed7 under a new head. Frozen layers must not change,
//! hold no optimizer state, record nothing for backward, and their batch
//! normalisation must run in inference mode.
//!
//! One test in this binary: it turns on the autograd profile (process-wide)
//! to see which backward rules ran.

use convnet_nn::layers::{Dense, Dropout, Flatten};
use convnet_nn::optimizers::Adam;
use convnet_nn::{clear_session, set_random_seed, Activation, Apply, Loss, Metric, Model};
use convnet_tensor::{Rng, Tensor};
use convnet_zoo::inception_v3::InceptionV3;

fn transfer(dropout: f32) -> (Model, Model) {
    clear_session();
    set_random_seed(5);
    let mut base = InceptionV3::new()
        .include_top(false)
        .input_shape(75, 75, 3)
        .build()
        .unwrap();
    base.set_trainable(false);
    let last = base.get_layer("mixed7").unwrap().output();
    assert_eq!(last.shape(), &[3, 3, 768]);
    let x = Flatten::new().apply(&last).unwrap();
    let x = Dense::new(16)
        .activation(Activation::Relu)
        .apply(&x)
        .unwrap();
    let x = Dropout::new(dropout).apply(&x).unwrap();
    let x = Dense::new(1)
        .activation(Activation::Sigmoid)
        .apply(&x)
        .unwrap();
    let mut model = Model::new(&base.input(), &x).unwrap();
    model
        .compile(
            Adam::new(1e-2),
            Loss::BinaryCrossentropy,
            &[Metric::Accuracy],
        )
        .unwrap();
    (base, model)
}

fn base_weights(model: &Model) -> Vec<(String, Tensor)> {
    model
        .get_weights()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("dense"))
        .collect()
}

#[test]
fn frozen_base_stays_frozen_and_records_nothing() {
    std::env::set_var("CONVNET_PROFILE", "1");
    let mut rng = Rng::new(9);
    // Inputs as the mission feeds them: pixels rescaled by 1/255.
    let x = Tensor::rand_uniform(&[4, 75, 75, 3], 0.0, 1.0, &mut rng);
    let y = Tensor::from_vec(&[4, 1], vec![0.0, 1.0, 1.0, 0.0]).unwrap();

    // Without dropout, the training loss (before the step) equals the
    // inference loss only if the frozen batch norms use their moving
    // statistics, as Keras's do.
    let (_base, mut model) = transfer(0.0);
    let eval = model.evaluate_arrays(&x, &y, 4).unwrap()["loss"];
    let before = base_weights(&model);
    let head_before = model.get_layer("dense").unwrap().weights()[0].value.clone();
    let train = model.train_on_batch(&x, &y).unwrap()["loss"];
    assert!(
        (train - eval).abs() < 1e-5 * eval.abs().max(1.0),
        "training loss {train} vs inference loss {eval}"
    );
    assert_eq!(base_weights(&model), before, "a frozen weight changed");
    assert_ne!(
        model.get_layer("dense").unwrap().weights()[0].value,
        head_before,
        "the head did not train"
    );
    let state = model.optimizer().unwrap().state();
    assert!(!state.is_empty());
    for key in state.keys() {
        assert!(
            key.starts_with("dense") || !key.contains('/'),
            "optimizer state for a frozen weight: {key}"
        );
    }
    // Backward ran only through the head: no rule of the base was recorded.
    let report = convnet_autograd::profile::report();
    let backward: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("backward"))
        .collect();
    assert!(
        backward.iter().any(|l| l.contains("Dense")),
        "no Dense backward in:\n{report}"
    );
    for l in &backward {
        for base_op in ["Conv2D", "BatchNormalization", "concat", "pool"] {
            assert!(!l.contains(base_op), "the frozen base was recorded: {l}");
        }
    }

    // The check above can fail: with the base trainable, its batch norms
    // use batch statistics in training and the two losses part.
    let (_base, mut model) = transfer(0.0);
    model.set_trainable(true);
    let eval = model.evaluate_arrays(&x, &y, 4).unwrap()["loss"];
    let train = model.train_on_batch(&x, &y).unwrap()["loss"];
    assert!((train - eval).abs() > 1e-4, "{train} vs {eval}");

    // The mission's head, with dropout 0.2, learns. (A randomly initialised
    // base gives nearly the same tiny features for every image, so the
    // labels here are all ones: learnable by the head's bias alone.)
    let (_base, mut model) = transfer(0.2);
    let ones = Tensor::ones(&[4, 1]);
    let first = model.evaluate_arrays(&x, &ones, 4).unwrap()["loss"];
    for _ in 0..5 {
        model.train_on_batch(&x, &ones).unwrap();
    }
    let last = model.evaluate_arrays(&x, &ones, 4).unwrap()["loss"];
    assert!(last.is_finite() && last < first, "loss {first} -> {last}");
}
