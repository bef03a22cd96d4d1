//! InceptionV3's architecture: parameter counts, shapes and names as Keras
//! reports them, and the mission's transfer-learning model's summary.

use convnet_nn::layers::{Dense, Dropout, Flatten};
use convnet_nn::{clear_session, Activation, Apply, Model};
use convnet_zoo::inception_v3::{InceptionV3, Pooling};
use convnet_zoo::ZooError;

/// The mission's model: frozen notop base at 150x150, cut at mixed7, new head.
fn transfer_model() -> (Model, Model) {
    clear_session();
    let mut base = InceptionV3::new()
        .include_top(false)
        .input_shape(150, 150, 3)
        .build()
        .unwrap();
    base.set_trainable(false);
    let last = base.get_layer("mixed7").unwrap().output();
    let x = Flatten::new().apply(&last).unwrap();
    let x = Dense::new(1024)
        .activation(Activation::Relu)
        .apply(&x)
        .unwrap();
    let x = Dropout::new(0.2).apply(&x).unwrap();
    let x = Dense::new(1)
        .activation(Activation::Sigmoid)
        .apply(&x)
        .unwrap();
    let model = Model::new(&base.input(), &x).unwrap();
    (base, model)
}

#[test]
fn transfer_model_summary_as_keras() {
    let (_base, model) = transfer_model();
    let s = model.summary_string();
    assert!(s.contains("Total params: 47,512,481 (181.25 MB)"), "{s}");
    assert!(
        s.contains("Trainable params: 38,537,217 (147.01 MB)"),
        "{s}"
    );
    assert!(
        s.contains("Non-trainable params: 8,975,264 (34.24 MB)"),
        "{s}"
    );
    let mixed7 = s
        .lines()
        .find(|l| l.contains("mixed7 (Concatenate)"))
        .expect("a mixed7 row");
    assert!(mixed7.contains("(None, 7, 7, 768)"), "{mixed7}");
    assert_eq!(model.count_params_split(), (38_537_217, 8_975_264));
    // Keras counts 233 layers with the input layer.
    assert_eq!(model.layer_names().len(), 232);
}

#[test]
fn notop_and_top_parameter_counts() {
    clear_session();
    let notop = InceptionV3::new()
        .include_top(false)
        .input_shape(150, 150, 3)
        .build()
        .unwrap();
    // Keras: 21,802,784 total, 34,432 non-trainable (BN moving statistics).
    assert_eq!(notop.count_params(), 21_802_784);
    assert_eq!(notop.count_params_split().1, 34_432);
    assert_eq!(notop.output_shape(), vec![3, 3, 2048]);
    let names = notop.layer_names();
    assert_eq!(names.len(), 310); // 311 in Keras, with the input layer.
    for expected in [
        "conv2d",
        "conv2d_93",
        "batch_normalization_93",
        "activation_93",
        "average_pooling2d_8",
        "max_pooling2d_3",
        "concatenate_1",
        "mixed9_0",
        "mixed9_1",
        "mixed10",
    ] {
        assert!(names.iter().any(|n| n == expected), "no layer {expected}");
    }
    assert!(!names.iter().any(|n| n == "conv2d_94"));

    clear_session();
    let top = InceptionV3::new().build().unwrap();
    assert_eq!(top.count_params(), 23_851_784);
    assert_eq!(top.output_shape(), vec![1000]);
    let names = top.layer_names();
    assert_eq!(&names[names.len() - 2..], ["avg_pool", "predictions"]);
}

#[test]
fn shapes_at_the_minimum_size_and_pooling() {
    let shapes = |pooling| {
        InceptionV3::new()
            .include_top(false)
            .input_shape(75, 75, 3)
            .pooling(pooling)
            .build()
            .unwrap()
            .output_shape()
    };
    assert_eq!(shapes(Pooling::None), vec![1, 1, 2048]);
    assert_eq!(shapes(Pooling::Avg), vec![2048]);
    assert_eq!(shapes(Pooling::Max), vec![2048]);
    let m = InceptionV3::new()
        .input_shape(75, 75, 1)
        .classes(7)
        .build()
        .unwrap();
    assert_eq!(m.output_shape(), vec![7]);
    assert_eq!(
        m.get_layer("mixed2").unwrap().output().shape(),
        &[7, 7, 288]
    );
}

#[test]
fn refuses_bad_options_naming_them() {
    let err = InceptionV3::new()
        .include_top(false)
        .input_shape(74, 150, 3)
        .build()
        .err()
        .unwrap();
    assert!(matches!(err, ZooError::Options { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("InceptionV3") && msg.contains("at least 75"),
        "{msg}"
    );
    let msg = InceptionV3::new()
        .classes(0)
        .build()
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("classes"), "{msg}");
    let msg = InceptionV3::new()
        .input_shape(80, 80, 0)
        .build()
        .err()
        .unwrap()
        .to_string();
    assert!(msg.contains("channels"), "{msg}");
}
