//! Outputs and gradients of every op type against values computed by
//! TensorFlow/Keras itself (`golden/make_golden.py` made `golden/golden.json`;
//! see `golden/README.md`).
//!
//! Each case gives the inputs, the op's parameters, TensorFlow's output, an
//! upstream gradient `u`, and TensorFlow's gradients of `sum(output * u)`.
//! Tolerance: float32 on both sides with different summation orders, so a
//! relative error of 1e-4 of each tensor's largest magnitude (plus 1e-6
//! absolute for tensors that are nearly zero) is rounding, and any
//! difference in semantics (padding split, pooling count, clipping, variance)
//! is far larger.

use std::collections::HashMap;

use convnet_autograd::ops::{Epilogue, Padding};
use convnet_autograd::{Tape, Var};
use convnet_tensor::Tensor;
use serde_json::Value;

fn tensor(v: &Value) -> Tensor {
    let shape: Vec<usize> = v["shape"]
        .as_array()
        .expect("shape")
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let data: Vec<f32> = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|d| d.as_f64().unwrap() as f32)
        .collect();
    Tensor::from_vec(&shape, data).expect("consistent fixture")
}

fn pair(v: &Value) -> (usize, usize) {
    let a = v.as_array().expect("pair");
    (
        a[0].as_u64().unwrap() as usize,
        a[1].as_u64().unwrap() as usize,
    )
}

fn padding(v: &Value) -> Padding {
    match v.as_str().expect("padding") {
        "valid" => Padding::Valid,
        "same" => Padding::Same,
        other => panic!("unknown padding {other}"),
    }
}

fn assert_close(case: &str, what: &str, ours: &Tensor, theirs: &Tensor) {
    assert_eq!(ours.shape(), theirs.shape(), "{case}: {what}: shape");
    let diff = ours.max_abs_diff(theirs).unwrap();
    let tol = 1e-4 * theirs.max_abs() + 1e-6;
    assert!(
        diff <= tol,
        "{case}: {what}: max difference {diff} > {tol}\n ours   {ours:?}\n theirs {theirs:?}"
    );
}

#[test]
fn ops_match_tensorflow() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/golden.json"
    ))
    .expect("golden.json (regenerate with tests/golden/make_golden.py)");
    let root: Value = serde_json::from_str(&text).expect("valid JSON");
    let cases = root["cases"].as_array().expect("cases");
    assert!(cases.len() >= 20, "only {} golden cases", cases.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let op = case["op"].as_str().unwrap();
        *seen.entry(op.to_string()).or_default() += 1;
        let p = &case["params"];
        let tape = Tape::new();
        let inputs: HashMap<String, (Tensor, Var)> = case["inputs"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                let t = tensor(v);
                (k.clone(), (t.clone(), tape.var(t)))
            })
            .collect();
        let var = |k: &str| {
            &inputs
                .get(k)
                .unwrap_or_else(|| panic!("{name}: input {k}"))
                .1
        };
        let value = |k: &str| {
            &inputs
                .get(k)
                .unwrap_or_else(|| panic!("{name}: input {k}"))
                .0
        };
        let opt = |k: &str| inputs.get(k).map(|(_, v)| v);
        let out = match op {
            "conv2d" => var("x").conv2d(
                var("w"),
                opt("b"),
                pair(&p["strides"]),
                padding(&p["padding"]),
                Epilogue::None,
            ),
            "max_pool2d" => var("x").max_pool2d(
                pair(&p["pool"]),
                pair(&p["strides"]),
                padding(&p["padding"]),
            ),
            "avg_pool2d" => var("x").avg_pool2d(
                pair(&p["pool"]),
                pair(&p["strides"]),
                padding(&p["padding"]),
            ),
            "global_avg_pool2d" => var("x").global_avg_pool2d(),
            "dense" => var("x").dense(var("w"), opt("b")),
            "relu" => var("x").relu(),
            "sigmoid" => var("x").sigmoid(),
            "tanh" => var("x").tanh(),
            "softmax" => var("x").softmax(),
            "concat" => Var::concat(&[var("a"), var("b")], p["axis"].as_u64().unwrap() as usize),
            "add" => var("a").add(var("b")),
            "binary_crossentropy" => var("y_pred").binary_crossentropy(value("y_true")),
            "categorical_crossentropy" => var("y_pred").categorical_crossentropy(value("y_true")),
            "sparse_categorical_crossentropy" => {
                var("y_pred").sparse_categorical_crossentropy(value("y_true"))
            }
            "batch_norm" => {
                let eps = p["epsilon"].as_f64().unwrap() as f32;
                let momentum = p["momentum"].as_f64().unwrap() as f32;
                let (gamma, beta) = (opt("gamma"), opt("beta"));
                if p["training"].as_bool().unwrap() {
                    let (y, stats) = var("x").batch_norm_train(gamma, beta, eps).unwrap();
                    // Keras's moving averages: moving * momentum + batch * (1 - momentum),
                    // with the variance as golden/README.md records.
                    let extra = &case["extra"];
                    let mm = value("moving_mean");
                    let mv = value("moving_var");
                    let blend = |moving: &Tensor, batch: &Tensor| {
                        moving
                            .mul_scalar(momentum)
                            .add(&batch.mul_scalar(1.0 - momentum))
                            .unwrap()
                    };
                    assert_close(
                        name,
                        "new moving mean",
                        &blend(mm, &stats.mean),
                        &tensor(&extra["new_moving_mean"]),
                    );
                    assert_close(
                        name,
                        "new moving variance",
                        &blend(mv, &stats.var),
                        &tensor(&extra["new_moving_var"]),
                    );
                    Ok(y)
                } else {
                    var("x").batch_norm_inference(
                        gamma,
                        beta,
                        value("moving_mean"),
                        value("moving_var"),
                        eps,
                    )
                }
            }
            other => panic!("{name}: unknown op {other}"),
        }
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_close(name, "output", out.value(), &tensor(&case["output"]));
        let grads = tape.backward_with(&out, tensor(&case["upstream"])).unwrap();
        for (k, want) in case["grads"].as_object().unwrap() {
            let got = grads
                .get(var(k))
                .unwrap_or_else(|| panic!("{name}: no gradient for {k}"));
            assert_close(name, &format!("gradient of {k}"), got, &tensor(want));
        }
    }
    for op in [
        "conv2d",
        "max_pool2d",
        "avg_pool2d",
        "global_avg_pool2d",
        "dense",
        "relu",
        "sigmoid",
        "tanh",
        "softmax",
        "batch_norm",
        "concat",
        "add",
        "binary_crossentropy",
        "categorical_crossentropy",
        "sparse_categorical_crossentropy",
    ] {
        assert!(seen.contains_key(op), "no golden case for {op}");
    }
}
