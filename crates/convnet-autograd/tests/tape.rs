//! Behaviour of the tape itself: reuse of a value, no-grad mode, frozen
//! parameters, errors.

use convnet_autograd::ops::{Epilogue, Padding};
use convnet_autograd::{no_grad, Tape, Var};
use convnet_tensor::Tensor;

#[test]
fn gradients_accumulate_where_a_value_is_used_twice() {
    // y = x*x + x  =>  dy/dx = 2x + 1 (InceptionV3 branches reuse their input).
    let tape = Tape::new();
    let x = tape.var(Tensor::from_vec(&[3], vec![1.0, 2.0, -3.0]).unwrap());
    let y = x.mul(&x).unwrap().add(&x).unwrap().sum().unwrap();
    let g = tape.backward(&y).unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec(), vec![3.0, 5.0, -5.0]);
}

#[test]
fn branches_joined_by_concat_sum_their_gradients() {
    let tape = Tape::new();
    let x = tape.var(Tensor::ones(&[1, 2, 2, 1]));
    let a = x.mul_scalar(2.0).unwrap();
    let b = x.mul_scalar(3.0).unwrap();
    let y = Var::concat(&[&a, &b, &x], 3).unwrap().sum().unwrap();
    let g = tape.backward(&y).unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec(), vec![6.0; 4]);
}

#[test]
fn no_grad_records_nothing() {
    let tape = Tape::new();
    let x = tape.var(Tensor::ones(&[1, 4, 4, 1]));
    let w = tape.var(Tensor::ones(&[3, 3, 1, 2]));
    let before = tape.len();
    let y = no_grad(|| {
        x.conv2d(&w, None, (1, 1), Padding::Same, Epilogue::Relu)
            .unwrap()
    });
    assert_eq!(tape.len(), before);
    assert!(!y.requires_grad());
    assert!(tape.backward(&y).is_err());
}

#[test]
fn frozen_parameters_record_nothing_and_get_no_gradient() {
    // A frozen base (constants) feeding a trainable head: only the head's ops
    // are recorded.
    let tape = Tape::new();
    let x = Var::constant(Tensor::ones(&[2, 5, 5, 1]));
    let frozen_w = Var::constant(Tensor::full(&[3, 3, 1, 2], 0.1));
    let features = x
        .conv2d(&frozen_w, None, (1, 1), Padding::Valid, Epilogue::Relu)
        .unwrap();
    assert!(!features.requires_grad());
    assert_eq!(tape.len(), 0);
    let head = tape.var(Tensor::full(&[18, 1], 0.5));
    let out = features
        .flatten()
        .unwrap()
        .dense(&head, None)
        .unwrap()
        .sum()
        .unwrap();
    // The head's leaf, the dense and the sum; flatten of a constant is not recorded.
    assert_eq!(tape.len(), 3);
    let g = tape.backward(&out).unwrap();
    assert_eq!(g.len(), 1);
    assert_eq!(g.get(&head).unwrap().shape(), &[18, 1]);
}

#[test]
fn vars_from_two_tapes_do_not_mix() {
    let (t1, t2) = (Tape::new(), Tape::new());
    let a = t1.var(Tensor::ones(&[2]));
    let b = t2.var(Tensor::ones(&[2]));
    let e = a.add(&b).unwrap_err().to_string();
    assert!(e.contains("different tapes"), "{e}");
}

#[test]
fn shape_errors_name_the_op_and_shapes() {
    let x = Var::constant(Tensor::ones(&[2, 5, 5, 3]));
    let w = Var::constant(Tensor::ones(&[3, 3, 4, 8]));
    let e = x
        .conv2d(&w, None, (1, 1), Padding::Valid, Epilogue::None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("Conv2D") && e.contains("(2, 5, 5, 3)") && e.contains("(3, 3, 4, 8)"),
        "{e}"
    );
    let big = Var::constant(Tensor::ones(&[7, 7, 3, 1]));
    let e = x
        .conv2d(&big, None, (1, 1), Padding::Valid, Epilogue::None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("larger than the padded input"), "{e}");
    let d = Var::constant(Tensor::ones(&[2, 75]));
    let e = x
        .dense(&Var::constant(Tensor::ones(&[75, 1])), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("Flatten"), "{e}");
    assert!(d
        .dense(&Var::constant(Tensor::ones(&[74, 1])), None)
        .is_err());
    let e = Var::constant(Tensor::zeros(&[0, 4, 4, 3]))
        .max_pool2d((2, 2), (2, 2), Padding::Valid)
        .unwrap_err();
    assert!(e.to_string().contains("(0, 4, 4, 3)"), "{e}");
}
