//! Every optimizer applies a factored kernel gradient (`x^T dy`, computed
//! block by block inside the update) with exactly the bits it gets from the
//! materialized gradient tensor, over several steps and both forms mixed;
//! and a model with a big Dense layer trains the same either way.

use convnet_autograd::{Gradient, OuterProduct};
use convnet_nn::optimizers::{Adam, Optimizer, RMSprop, SGD};
use convnet_tensor::Tensor;

fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn tensor(shape: &[usize], seed: u64) -> Tensor {
    Tensor::from_vec(shape, values(shape.iter().product(), seed)).unwrap()
}

fn optimizers() -> Vec<(&'static str, Box<dyn Optimizer>)> {
    vec![
        ("SGD", Box::new(SGD::new(0.1, 0.0, false))),
        ("SGD momentum", Box::new(SGD::new(0.1, 0.9, false))),
        ("SGD Nesterov", Box::new(SGD::new(0.1, 0.9, true))),
        ("Adam", Box::new(Adam::new(0.01))),
        ("RMSprop", Box::new(RMSprop::new(0.01))),
    ]
}

#[test]
fn factored_and_materialized_updates_are_bitwise_equal() {
    // 3000 rows of 70: several parallel chunks (whole rows of 70 near
    // 65536 values), a partial last one, tiles with leftover columns.
    let (m, k, n) = (6, 3000, 70);
    for ((name, mut fused), (_, mut plain)) in optimizers().into_iter().zip(optimizers()) {
        let mut w_fused = tensor(&[k, n], 1);
        let mut w_plain = w_fused.clone();
        for step in 0..3u64 {
            let p =
                OuterProduct::new(tensor(&[m, k], 10 + step), tensor(&[m, n], 20 + step)).unwrap();
            let dense = p.to_tensor().unwrap();
            fused
                .update_gradient("dense/kernel", &mut w_fused, &Gradient::from(p))
                .unwrap();
            plain.update("dense/kernel", &mut w_plain, &dense).unwrap();
            fused.finish_step();
            plain.finish_step();
            assert!(
                w_fused.to_vec() == w_plain.to_vec(),
                "{name}: weights differ after step {step}"
            );
        }
        assert!(
            w_fused.to_vec() != tensor(&[k, n], 1).to_vec(),
            "{name}: no update"
        );
        let (sf, sp) = (fused.state(), plain.state());
        assert_eq!(sf.len(), sp.len());
        for (key, t) in &sf {
            assert!(t.to_vec() == sp[key].to_vec(), "{name}: slot {key} differs");
        }
    }
}

#[test]
fn factored_gradient_of_the_wrong_shape_is_an_error() {
    let p = OuterProduct::new(tensor(&[2, 5], 1), tensor(&[2, 4], 2)).unwrap();
    for (name, mut opt) in optimizers() {
        let mut w = tensor(&[4, 5], 3);
        let e = opt.update_gradient("w", &mut w, &Gradient::from(p.clone()));
        assert!(e.is_err(), "{name}");
    }
}

/// An optimizer that only knows dense gradients: the trait's default
/// `update_gradient` materializes factored ones first (the unfused path).
struct Materializing(Box<dyn Optimizer>);

impl Optimizer for Materializing {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn learning_rate(&self) -> f32 {
        self.0.learning_rate()
    }
    fn set_learning_rate(&mut self, lr: f32) {
        self.0.set_learning_rate(lr)
    }
    fn iterations(&self) -> u64 {
        self.0.iterations()
    }
    fn update(&mut self, key: &str, param: &mut Tensor, grad: &Tensor) -> convnet_nn::Result<()> {
        self.0.update(key, param, grad)
    }
    fn finish_step(&mut self) {
        self.0.finish_step()
    }
    fn state(&self) -> std::collections::BTreeMap<String, Tensor> {
        self.0.state()
    }
    fn load_state(
        &mut self,
        state: &std::collections::BTreeMap<String, Tensor>,
    ) -> convnet_nn::Result<()> {
        self.0.load_state(state)
    }
}

#[test]
fn training_is_the_same_fused_or_not() {
    use convnet_nn::layers::{Dense, Dropout};
    use convnet_nn::{clear_session, set_random_seed, Activation, Loss, Metric, Sequential};
    let (batch, features) = (8, 60);
    let x = tensor(&[batch, features], 40);
    let y = Tensor::from_vec(&[batch, 1], (0..batch).map(|i| (i % 2) as f32).collect()).unwrap();
    for ((name, fused), (_, plain)) in optimizers().into_iter().zip(optimizers()) {
        // Same names and same initial weights for both.
        let build = || {
            clear_session();
            set_random_seed(3);
            let mut model = Sequential::new(&[features]);
            model
                .add(Dense::new(48).activation(Activation::Relu))
                .unwrap();
            model.add(Dropout::new(0.2)).unwrap();
            model
                .add(Dense::new(1).activation(Activation::Sigmoid))
                .unwrap();
            model
        };
        let mut a = build();
        let mut b = build();
        for ((_, wa), (_, wb)) in a.get_weights().iter().zip(b.get_weights()) {
            assert!(wa.to_vec() == wb.to_vec());
        }
        a.compile(
            BoxedOptimizer(fused),
            Loss::BinaryCrossentropy,
            &[Metric::Accuracy],
        )
        .unwrap();
        b.compile(
            Materializing(plain),
            Loss::BinaryCrossentropy,
            &[Metric::Accuracy],
        )
        .unwrap();
        for step in 0..3 {
            let la = a.train_on_batch(&x, &y).unwrap();
            let lb = b.train_on_batch(&x, &y).unwrap();
            assert_eq!(
                la.get("loss"),
                lb.get("loss"),
                "{name}: loss at step {step}"
            );
        }
        for ((ka, wa), (_, wb)) in a.get_weights().iter().zip(b.get_weights()) {
            assert!(wa.to_vec() == wb.to_vec(), "{name}: {ka} differs");
        }
    }
}

/// A boxed optimizer that passes factored gradients on (the fused path).
struct BoxedOptimizer(Box<dyn Optimizer>);

impl Optimizer for BoxedOptimizer {
    fn name(&self) -> &'static str {
        self.0.name()
    }
    fn learning_rate(&self) -> f32 {
        self.0.learning_rate()
    }
    fn set_learning_rate(&mut self, lr: f32) {
        self.0.set_learning_rate(lr)
    }
    fn iterations(&self) -> u64 {
        self.0.iterations()
    }
    fn update(&mut self, key: &str, param: &mut Tensor, grad: &Tensor) -> convnet_nn::Result<()> {
        self.0.update(key, param, grad)
    }
    fn update_gradient(
        &mut self,
        key: &str,
        param: &mut Tensor,
        grad: &Gradient,
    ) -> convnet_nn::Result<()> {
        if param.shape() == [60, 48] {
            assert!(
                grad.as_outer().is_some(),
                "{key}: the first Dense kernel's gradient should come factored"
            );
        }
        self.0.update_gradient(key, param, grad)
    }
    fn finish_step(&mut self) {
        self.0.finish_step()
    }
    fn state(&self) -> std::collections::BTreeMap<String, Tensor> {
        self.0.state()
    }
    fn load_state(
        &mut self,
        state: &std::collections::BTreeMap<String, Tensor>,
    ) -> convnet_nn::Result<()> {
        self.0.load_state(state)
    }
}
