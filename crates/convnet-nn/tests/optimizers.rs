//! The optimizers' first steps against Keras's own (fixtures/optimizers.json,
//! made by fixtures/make_optimizers.py with TensorFlow/Keras): three given
//! gradients applied to one weight vector, the weight compared after each
//! step. float32 on both sides: agreement to 1e-6 relative is rounding; a
//! different rule (bias correction, epsilon placement, Nesterov form) is off
//! by far more.

use convnet_nn::optimizers::{Adam, Optimizer, RMSprop, SGD};
use convnet_tensor::Tensor;
use serde_json::Value;

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

#[test]
fn first_steps_match_keras() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/optimizers.json"
    ))
    .unwrap();
    let root: Value = serde_json::from_str(&text).unwrap();
    let w0 = floats(&root["w0"]);
    let grads: Vec<Vec<f32>> = root["grads"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    let cases = root["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 6);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let p = &case["params"];
        let lr = p["learning_rate"].as_f64().map(|v| v as f32);
        let mut opt: Box<dyn Optimizer> = match case["optimizer"].as_str().unwrap() {
            "Adam" => Box::new(lr.map(Adam::new).unwrap_or_default()),
            "RMSprop" => Box::new(lr.map(RMSprop::new).unwrap_or_default()),
            "SGD" => Box::new(SGD::new(
                lr.unwrap_or(0.01),
                p["momentum"].as_f64().unwrap_or(0.0) as f32,
                p["nesterov"].as_bool().unwrap_or(false),
            )),
            other => panic!("unknown optimizer {other}"),
        };
        let mut w = Tensor::from_vec(&[w0.len()], w0.clone()).unwrap();
        for (step, (g, want)) in grads
            .iter()
            .zip(case["steps"].as_array().unwrap())
            .enumerate()
        {
            let g = Tensor::from_vec(&[g.len()], g.clone()).unwrap();
            opt.update("w", &mut w, &g).unwrap();
            opt.finish_step();
            let want = floats(want);
            for (a, b) in w.to_vec().iter().zip(&want) {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                    "{name} step {}: {a} vs Keras {b}",
                    step + 1
                );
            }
        }
        assert_eq!(opt.iterations(), 3);
    }
}

#[test]
fn state_round_trips_for_resuming() {
    let g = Tensor::from_vec(&[3], vec![0.1, -0.2, 0.3]).unwrap();
    let (mut a, mut b) = (Adam::default(), Adam::default());
    let (mut wa, mut wb) = (Tensor::ones(&[3]), Tensor::ones(&[3]));
    a.update("w", &mut wa, &g).unwrap();
    a.finish_step();
    b.load_state(&a.state()).unwrap();
    wb = wb.sub(&Tensor::ones(&[3])).unwrap().add(&wa).unwrap();
    a.update("w", &mut wa, &g).unwrap();
    b.update("w", &mut wb, &g).unwrap();
    assert_eq!(wa, wb);
    assert_eq!(b.iterations(), 1);
}
