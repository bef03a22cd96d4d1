//! Models: building, names, shapes, summary, training, freezing, errors.

use convnet_nn::callbacks::{EarlyStopping, TerminateOnNaN};
use convnet_nn::layers::*;
use convnet_nn::optimizers::{Adam, RMSprop, SGD};
use convnet_nn::Activation::*;
use convnet_nn::{
    clear_session, set_random_seed, Apply, FitOptions, Input, Loss, Metric, Model, NnError,
    Sequential,
};
use convnet_tensor::{Rng, Tensor};

fn basic_cnn() -> Model {
    let mut model = Sequential::new(&[150, 150, 3]);
    model.add(Conv2D::new(32, (3, 3)).activation(Relu)).unwrap();
    model.add(MaxPooling2D::new((2, 2))).unwrap();
    model.add(Conv2D::new(64, (3, 3)).activation(Relu)).unwrap();
    model.add(MaxPooling2D::new((2, 2))).unwrap();
    model
        .add(Conv2D::new(128, (3, 3)).activation(Relu))
        .unwrap();
    model.add(MaxPooling2D::new((2, 2))).unwrap();
    model.add(Flatten::new()).unwrap();
    model.add(Dense::new(128).activation(Relu)).unwrap();
    model.add(Dense::new(512).activation(Relu)).unwrap();
    model.add(Dense::new(1).activation(Sigmoid)).unwrap();
    model
}

#[test]
fn basic_cnn_summary_matches_keras() {
    clear_session();
    let model = basic_cnn();
    let s = model.summary_string();
    // Keras 3 prints exactly these rows and totals for the mission's model.
    for row in [
        "│ conv2d (Conv2D)                 │ (None, 148, 148, 32)   │           896 │",
        "│ max_pooling2d (MaxPooling2D)    │ (None, 74, 74, 32)     │             0 │",
        "│ conv2d_1 (Conv2D)               │ (None, 72, 72, 64)     │        18,496 │",
        "│ conv2d_2 (Conv2D)               │ (None, 34, 34, 128)    │        73,856 │",
        "│ max_pooling2d_2 (MaxPooling2D)  │ (None, 17, 17, 128)    │             0 │",
        "│ flatten (Flatten)               │ (None, 36992)          │             0 │",
        "│ dense (Dense)                   │ (None, 128)            │     4,735,104 │",
        "│ dense_1 (Dense)                 │ (None, 512)            │        66,048 │",
        "│ dense_2 (Dense)                 │ (None, 1)              │           513 │",
        " Total params: 4,894,913 (18.67 MB)",
        " Trainable params: 4,894,913 (18.67 MB)",
        " Non-trainable params: 0 (0.00 B)",
    ] {
        assert!(s.contains(row), "missing row {row:?} in\n{s}");
    }
    assert!(s.starts_with("Model: \"sequential\""), "{s}");
}

#[test]
fn shape_errors_at_build_time_name_layers_and_shapes() {
    clear_session();
    let mut model = Sequential::new(&[28, 28, 1]);
    model.add(Conv2D::new(4, (3, 3))).unwrap();
    let e = model.add(Dense::new(10)).unwrap_err().to_string();
    assert!(
        e.contains("dense") && e.contains("(None, 26, 26, 4)") && e.contains("Flatten"),
        "{e}"
    );

    let inputs = Input::new(&[9, 9, 3]);
    let a = Conv2D::new(4, (3, 3)).apply(&inputs).unwrap();
    let b = Conv2D::new(4, (1, 1)).apply(&inputs).unwrap();
    let e = Concatenate::new()
        .apply_many(&[&a, &b])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("concatenate") && e.contains("(None, 7, 7, 4)") && e.contains("(None, 9, 9, 4)"),
        "{e}"
    );

    let e = Conv2D::new(4, (11, 11))
        .apply(&inputs)
        .unwrap_err()
        .to_string();
    assert!(e.contains("larger than the padded input"), "{e}");
}

#[test]
fn functional_model_with_branches_get_layer_and_cut() {
    clear_session();
    let inputs = Input::new(&[8, 8, 3]);
    let a = Conv2D::new(4, (1, 1))
        .activation(Relu)
        .apply(&inputs)
        .unwrap();
    let b = Conv2D::new(6, (3, 3))
        .padding(convnet_kernels::Padding::Same)
        .activation(Relu)
        .apply(&inputs)
        .unwrap();
    let p = AveragePooling2D::new((3, 3))
        .strides((1, 1))
        .padding(convnet_kernels::Padding::Same)
        .apply(&inputs)
        .unwrap();
    let mixed = Concatenate::new()
        .axis(3)
        .name("mixed0")
        .apply_many(&[&a, &b, &p])
        .unwrap();
    let x = GlobalAveragePooling2D::new().apply(&mixed).unwrap();
    let out = Dense::new(1).activation(Sigmoid).apply(&x).unwrap();
    let base = Model::new(&inputs, &out).unwrap();
    assert_eq!(
        base.get_layer("mixed0").unwrap().output().shape(),
        &[8, 8, 13]
    );
    let s = base.summary_string();
    assert!(
        s.contains("Connected to")
            && s.contains("input_layer[0][0]")
            && s.contains("mixed0 (Concatenate)"),
        "{s}"
    );

    // A new model from the base's input to a new head on mixed0, base frozen.
    let cut = base.get_layer("mixed0").unwrap().output();
    let head = Dense::new(2)
        .activation(Softmax)
        .apply(&Flatten::new().apply(&cut).unwrap())
        .unwrap();
    let mut model = Model::new(&base.input(), &head).unwrap();
    for name in ["conv2d", "conv2d_1"] {
        model.get_layer(name).unwrap().set_trainable(false);
    }
    let (trainable, frozen) = model.count_params_split();
    assert_eq!(frozen, 4 * 3 + 4 + 6 * 27 + 6);
    assert_eq!(trainable, 8 * 8 * 13 * 2 + 2);
    let before = model.get_layer("conv2d").unwrap().weights()[0]
        .value
        .clone();
    model
        .compile(
            SGD::new(0.1, 0.0, false),
            Loss::SparseCategoricalCrossentropy,
            &[Metric::Accuracy],
        )
        .unwrap();
    let x = Tensor::rand_uniform(&[4, 8, 8, 3], 0.0, 1.0, &mut Rng::new(1));
    let y = Tensor::from_vec(&[4], vec![0.0, 1.0, 1.0, 0.0]).unwrap();
    model.train_on_batch(&x, &y).unwrap();
    assert_eq!(
        model.get_layer("conv2d").unwrap().weights()[0].value,
        before,
        "a frozen layer changed"
    );
    assert_ne!(
        model.get_layer("dense_1").unwrap().weights()[0].value,
        base.get_layer("dense").unwrap().weights()[0].value
    );
}

#[test]
fn frozen_batch_norm_runs_in_inference_mode_and_keeps_its_statistics() {
    clear_session();
    let mut model = Sequential::new(&[4, 4, 2]);
    model.add(BatchNormalization::new()).unwrap();
    model.add(Flatten::new()).unwrap();
    model.add(Dense::new(1).activation(Sigmoid)).unwrap();
    model
        .compile(Adam::default(), Loss::BinaryCrossentropy, &[])
        .unwrap();
    let x = Tensor::rand_normal(&[8, 4, 4, 2], 3.0, 2.0, &mut Rng::new(2));
    let y = Tensor::ones(&[8, 1]);
    model.train_on_batch(&x, &y).unwrap();
    let bn = model.get_layer("batch_normalization").unwrap();
    let mm = bn.weights()[2].value.clone();
    // moving_mean moved 1% of the way to the batch mean (~3).
    assert!(mm.values().iter().all(|&m| m > 0.01 && m < 0.05), "{mm:?}");
    bn.set_trainable(false);
    let (t, n) = model.count_params_split();
    assert_eq!((t, n), (33, 8));
    model.train_on_batch(&x, &y).unwrap();
    assert_eq!(bn.weights()[2].value, mm);
}

#[test]
fn small_model_overfits_a_fixed_batch() {
    clear_session();
    set_random_seed(3);
    let mut rng = Rng::new(4);
    let x = Tensor::rand_normal(&[16, 6, 6, 1], 0.0, 1.0, &mut rng);
    let y = Tensor::from_fn(&[16], |i| (i % 3) as f32);
    let mut model = Sequential::new(&[6, 6, 1]);
    model.add(Conv2D::new(8, (3, 3)).activation(Relu)).unwrap();
    model.add(Flatten::new()).unwrap();
    model.add(Dense::new(32).activation(Tanh)).unwrap();
    model.add(Dense::new(3).activation(Softmax)).unwrap();
    model
        .compile(
            Adam::new(1e-2),
            Loss::SparseCategoricalCrossentropy,
            &[Metric::Accuracy],
        )
        .unwrap();
    let opts = FitOptions {
        epochs: 150,
        verbose: 0,
        ..Default::default()
    };
    let h = model.fit_arrays(&x, &y, 16, None, &opts, &mut []).unwrap();
    let loss = h.get("loss").unwrap();
    assert!(
        loss[loss.len() - 1] < 0.01,
        "final loss {}",
        loss[loss.len() - 1]
    );
    assert_eq!(h.get("accuracy").unwrap().last(), Some(&1.0));
    let eval = model.evaluate_arrays(&x, &y, 5).unwrap();
    assert!(eval["loss"] < 0.01 && eval["accuracy"] == 1.0, "{eval:?}");
}

#[test]
fn fit_reports_validation_and_early_stopping_stops() {
    clear_session();
    let mut rng = Rng::new(5);
    let x = Tensor::rand_normal(&[32, 4], 0.0, 1.0, &mut rng);
    let y = Tensor::from_fn(
        &[32, 1],
        |i| if x.to_vec()[i * 4] > 0.0 { 1.0 } else { 0.0 },
    );
    let mut model = Sequential::new(&[4]);
    model.add(Dense::new(1).activation(Sigmoid)).unwrap();
    model
        .compile(
            RMSprop::default(),
            Loss::BinaryCrossentropy,
            &[Metric::Accuracy],
        )
        .unwrap();
    let mut stop = EarlyStopping::new("val_loss", 1);
    stop.min_delta = 10.0; // nothing improves by 10: stop after 2 epochs
    let opts = FitOptions {
        epochs: 10,
        verbose: 0,
        ..Default::default()
    };
    let h = model
        .fit_arrays(&x, &y, 8, Some((&x, &y)), &opts, &mut [&mut stop])
        .unwrap();
    assert_eq!(h.epoch, vec![0, 1]);
    for k in ["loss", "accuracy", "val_loss", "val_accuracy"] {
        assert_eq!(h.get(k).map(|v| v.len()), Some(2), "{k}");
    }
    assert!(h
        .to_csv()
        .starts_with("epoch,accuracy,loss,val_accuracy,val_loss\n1,"));
}

#[test]
fn misuse_is_a_clear_error() {
    clear_session();
    let mut model = Sequential::new(&[4]);
    model.add(Dense::new(2).activation(Softmax)).unwrap();
    let x = Tensor::zeros(&[3, 4]);
    let y = Tensor::zeros(&[3]);
    let e = model.train_on_batch(&x, &y).unwrap_err().to_string();
    assert!(e.contains("compile"), "{e}");
    assert!(model
        .compile(
            Adam::new(f32::NAN),
            Loss::SparseCategoricalCrossentropy,
            &[]
        )
        .is_err());
    model
        .compile(Adam::default(), Loss::SparseCategoricalCrossentropy, &[])
        .unwrap();
    let e = model
        .train_on_batch(&x, &Tensor::zeros(&[2]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("[3, 4]") && e.contains("[2]"), "{e}");
    let e = model
        .train_on_batch(&Tensor::zeros(&[3, 5]), &y)
        .unwrap_err()
        .to_string();
    assert!(e.contains("(None, 4)"), "{e}");
    let e = model
        .train_on_batch(&x, &Tensor::full(&[3], 7.0))
        .unwrap_err()
        .to_string();
    assert!(e.contains("label 7"), "{e}");
    assert!(model
        .fit_arrays(&x, &y, 0, None, &FitOptions::default(), &mut [])
        .is_err());
    assert!(model.predict(&Tensor::zeros(&[0, 4]), 2).is_err());
    let mut empty = std::iter::empty::<(Tensor, Tensor)>();
    assert!(matches!(
        model.evaluate(&mut empty, None),
        Err(NnError::Data(_))
    ));
}

#[test]
fn terminate_on_nan_names_epoch_and_step() {
    clear_session();
    let mut model = Sequential::new(&[2]);
    model.add(Dense::new(1).activation(Sigmoid)).unwrap();
    model
        .compile(SGD::new(0.1, 0.0, false), Loss::BinaryCrossentropy, &[])
        .unwrap();
    let good = (Tensor::ones(&[2, 2]), Tensor::ones(&[2, 1]));
    let bad = (Tensor::full(&[2, 2], f32::NAN), Tensor::ones(&[2, 1]));
    let mut batches = vec![good.clone(), good.clone(), good, bad].into_iter();
    let opts = FitOptions {
        epochs: 2,
        steps_per_epoch: Some(2),
        verbose: 0,
        ..Default::default()
    };
    let e = model
        .fit_with_callbacks(&mut batches, None, &opts, &mut [&mut TerminateOnNaN])
        .unwrap_err();
    assert!(
        matches!(
            e,
            NnError::NonFiniteLoss {
                epoch: 2,
                step: 2,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn predict_is_deterministic_and_batch_size_independent() {
    clear_session();
    set_random_seed(9);
    let mut model = Sequential::new(&[5, 5, 2]);
    model.add(Conv2D::new(3, (3, 3)).activation(Relu)).unwrap();
    model.add(Dropout::new(0.5)).unwrap();
    model.add(Flatten::new()).unwrap();
    model.add(Dense::new(2)).unwrap();
    let x = Tensor::rand_normal(&[7, 5, 5, 2], 0.0, 1.0, &mut Rng::new(1));
    let a = model.predict(&x, 7).unwrap();
    let b = model.predict(&x, 2).unwrap();
    assert!(a.max_abs_diff(&b).unwrap() < 1e-6);
    assert_eq!(a.shape(), &[7, 2]);
}
