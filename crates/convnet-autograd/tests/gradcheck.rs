//! Every op's backward rule checked against central finite differences, on
//! random small shapes from proptest.
//!
//! How the check works: for an op `y = f(x1, .., xk)` and a random upstream
//! gradient `u` (the shape of `y`), the scalar `L = sum(y * u)` (summed in
//! f64) has `dL/dxi = backward(u)`. We compare a sample of up to
//! `MAX_PROBES` coordinates of each input with `(L(x + h e) - L(x - h e)) / 2h`.
//!
//! Tolerance: the forward runs in f32, so each output carries a relative
//! rounding error of roughly `K * 2^-24` for a sum of K terms; with outputs
//! and upstream values of order 1 and at most a few hundred outputs, `L` is
//! off by at most ~1e-5 absolute, which dividing by `2h = 2e-2` turns into
//! ~5e-4. Truncation error of the central difference is `h^2/6 * f'''`,
//! ~2e-5 for the smooth ops here (sigmoid, tanh, softmax, batch norm, whose
//! third derivatives are O(1) on these inputs). Gradients are O(1)-O(10), so
//! we accept `|fd - analytic| <= 2e-3 + 1e-2 * max|analytic|`: an error in a
//! backward rule (a missing term, a transposed index) is O(max|analytic|)
//! and is caught, rounding is not.
//!
//! Piecewise-linear ops (ReLU, max pooling) have kinks where the difference
//! quotient is meaningless: inputs are drawn on a grid that keeps every
//! value (and every pair of pooled values) more than `2h` apart, and for a
//! fused conv+ReLU a probe whose +h/-h outputs change sign pattern is
//! skipped.

use convnet_autograd::ops::{Epilogue, Padding};
use convnet_autograd::{no_grad, Result, Tape, Var};
use convnet_tensor::{Rng, Tensor};
use proptest::prelude::*;

const H: f32 = 1e-2;
const MAX_PROBES: usize = 24;

struct Check {
    /// Skip probes whose perturbation changes which outputs are positive.
    kinky: bool,
    h: f32,
}

const SMOOTH: Check = Check { kinky: false, h: H };

fn loss_of(y: &Tensor, u: &Tensor) -> f64 {
    y.values()
        .iter()
        .zip(u.values().iter())
        .map(|(&a, &b)| a as f64 * b as f64)
        .sum()
}

fn gradcheck(
    name: &str,
    inputs: &[Tensor],
    check: &[bool],
    opts: &Check,
    seed: u64,
    f: impl Fn(&[Var]) -> Result<Var>,
) -> std::result::Result<(), TestCaseError> {
    let tape = Tape::new();
    let vars: Vec<Var> = inputs.iter().map(|t| tape.var(t.clone())).collect();
    let y = f(&vars).map_err(|e| TestCaseError::fail(format!("{name}: forward failed: {e}")))?;
    let mut rng = Rng::new(seed);
    let u = Tensor::rand_normal(y.shape(), 0.0, 1.0, &mut rng);
    let grads = tape
        .backward_with(&y, u.clone())
        .map_err(|e| TestCaseError::fail(format!("{name}: backward failed: {e}")))?;
    let eval = |xs: &[Tensor]| -> Tensor {
        no_grad(|| {
            let vs: Vec<Var> = xs.iter().map(|t| Var::constant(t.clone())).collect();
            f(&vs).expect("forward at a perturbed point").into_value()
        })
    };
    for (i, input) in inputs.iter().enumerate() {
        if !check[i] {
            continue;
        }
        let analytic = grads
            .get(&vars[i])
            .ok_or_else(|| TestCaseError::fail(format!("{name}: no gradient for input {i}")))?
            .to_vec();
        prop_assert_eq!(analytic.len(), input.len());
        let scale = analytic.iter().fold(0.0f32, |m, g| m.max(g.abs()));
        let tol = 2e-3 + 1e-2 * scale;
        let n = input.len();
        let probes: Vec<usize> = if n <= MAX_PROBES {
            (0..n).collect()
        } else {
            (0..MAX_PROBES).map(|_| rng.below(n)).collect()
        };
        for j in probes {
            let mut plus = inputs.to_vec();
            let mut minus = inputs.to_vec();
            plus[i].as_slice_mut()[j] += opts.h;
            minus[i].as_slice_mut()[j] -= opts.h;
            let (yp, ym) = (eval(&plus), eval(&minus));
            if opts.kinky {
                let changed = yp
                    .values()
                    .iter()
                    .zip(ym.values().iter())
                    .any(|(a, b)| (*a > 0.0) != (*b > 0.0));
                if changed {
                    continue;
                }
            }
            let fd = (loss_of(&yp, &u) - loss_of(&ym, &u)) / (2.0 * opts.h as f64);
            let a = analytic[j] as f64;
            prop_assert!(
                (fd - a).abs() <= tol as f64,
                "{}: input {} element {}: finite difference {} vs backward {} (tolerance {}, shape {:?})",
                name,
                i,
                j,
                fd,
                a,
                tol,
                input.shape()
            );
        }
    }
    Ok(())
}

/// Values on a grid `(k - n/2 + 0.5) * step` (integer `n/2`), shuffled:
/// distinct, `step` apart, none nearer 0 than `step / 2`.
fn grid(shape: &[usize], step: f32, rng: &mut Rng) -> Tensor {
    let n: usize = shape.iter().product();
    let half = (n / 2) as f32;
    let mut v: Vec<f32> = (0..n).map(|k| (k as f32 - half + 0.5) * step).collect();
    rng.shuffle(&mut v);
    Tensor::from_vec(shape, v).unwrap()
}

fn normal(shape: &[usize], rng: &mut Rng) -> Tensor {
    Tensor::rand_normal(shape, 0.0, 1.0, rng)
}

fn padding_strategy() -> impl Strategy<Value = Padding> {
    prop_oneof![
        Just(Padding::Valid),
        Just(Padding::Same),
        (0usize..3, 0usize..3, 0usize..3, 0usize..3).prop_map(|(top, bottom, left, right)| {
            Padding::Explicit {
                top,
                bottom,
                left,
                right,
            }
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn conv2d(n in 1usize..3, h in 1usize..8, w in 1usize..8, c in 1usize..4, f in 1usize..4,
              kh in 1usize..4, kw in 1usize..4, sh in 1usize..4, sw in 1usize..4,
              padding in padding_strategy(), bias in any::<bool>(), relu in any::<bool>(), seed in any::<u64>()) {
        // Skip geometries the op rightly refuses (window larger than the padded input).
        let probe = convnet_kernels::conv::ConvGeometry::new([n, h, w, c], [kh, kw, c, f], (sh, sw), padding);
        prop_assume!(probe.is_ok());
        let mut rng = Rng::new(seed);
        let mut inputs = vec![normal(&[n, h, w, c], &mut rng), normal(&[kh, kw, c, f], &mut rng)];
        if bias {
            inputs.push(normal(&[f], &mut rng));
        }
        let epilogue = if relu { Epilogue::Relu } else { Epilogue::None };
        let opts = Check { kinky: relu, h: H };
        gradcheck("conv2d", &inputs, &vec![true; inputs.len()], &opts, seed, |v| {
            v[0].conv2d(&v[1], v.get(2), (sh, sw), padding, epilogue)
        })?;
    }

    #[test]
    fn max_pool2d(n in 1usize..3, h in 1usize..8, w in 1usize..8, c in 1usize..4,
                  ph in 1usize..4, pw in 1usize..4, sh in 1usize..4, sw in 1usize..4,
                  padding in padding_strategy(), seed in any::<u64>()) {
        prop_assume!(padding.resolve("t", (h, w), (ph, pw), (sh, sw)).is_ok());
        let mut rng = Rng::new(seed);
        // Spacing 0.05 > 2h keeps the argmax of every window fixed under a probe.
        let x = grid(&[n, h, w, c], 0.05, &mut rng);
        gradcheck("max_pool2d", &[x], &[true], &SMOOTH, seed, |v| v[0].max_pool2d((ph, pw), (sh, sw), padding))?;
    }

    #[test]
    fn avg_pool2d(n in 1usize..3, h in 1usize..8, w in 1usize..8, c in 1usize..4,
                  ph in 1usize..4, pw in 1usize..4, sh in 1usize..4, sw in 1usize..4,
                  padding in padding_strategy(), seed in any::<u64>()) {
        prop_assume!(padding.resolve("t", (h, w), (ph, pw), (sh, sw)).is_ok());
        let mut rng = Rng::new(seed);
        let x = normal(&[n, h, w, c], &mut rng);
        gradcheck("avg_pool2d", &[x], &[true], &SMOOTH, seed, |v| v[0].avg_pool2d((ph, pw), (sh, sw), padding))?;
    }

    #[test]
    fn global_avg_pool2d(n in 1usize..3, h in 1usize..6, w in 1usize..6, c in 1usize..5, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = normal(&[n, h, w, c], &mut rng);
        gradcheck("global_avg_pool2d", &[x], &[true], &SMOOTH, seed, |v| v[0].global_avg_pool2d())?;
    }

    #[test]
    fn dense(m in 1usize..6, k in 1usize..9, units in 1usize..7, bias in any::<bool>(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let mut inputs = vec![normal(&[m, k], &mut rng), normal(&[k, units], &mut rng)];
        if bias {
            inputs.push(normal(&[units], &mut rng));
        }
        gradcheck("dense", &inputs, &vec![true; inputs.len()], &SMOOTH, seed, |v| v[0].dense(&v[1], v.get(2)))?;
    }

    #[test]
    fn activations(rows in 1usize..5, cols in 1usize..7, which in 0usize..4, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = if which == 0 { grid(&[rows, cols], 0.05, &mut rng) } else { normal(&[rows, cols], &mut rng).mul_scalar(2.0) };
        gradcheck("activation", &[x], &[true], &SMOOTH, seed, |v| match which {
            0 => v[0].relu(),
            1 => v[0].sigmoid(),
            2 => v[0].tanh(),
            _ => v[0].softmax(),
        })?;
    }

    #[test]
    fn batch_norm(n in 1usize..4, hw in 1usize..4, c in 1usize..4, center in any::<bool>(), scale in any::<bool>(),
                  training in any::<bool>(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        // At least 2 rows with spread so the batch variance is O(1).
        let rows = n * hw * hw;
        prop_assume!(!training || rows >= 2);
        let x = normal(&[n, hw, hw, c], &mut rng).mul_scalar(1.5);
        let mut inputs = vec![x];
        if scale {
            inputs.push(Tensor::rand_uniform(&[c], 0.5, 1.5, &mut rng));
        }
        if center {
            inputs.push(normal(&[c], &mut rng));
        }
        let mean = normal(&[c], &mut rng).mul_scalar(0.3);
        let var = Tensor::rand_uniform(&[c], 0.5, 2.0, &mut rng);
        gradcheck("batch_norm", &inputs, &vec![true; inputs.len()], &SMOOTH, seed, |v| {
            let gamma = if scale { Some(&v[1]) } else { None };
            let beta = if center { Some(&v[if scale { 2 } else { 1 }]) } else { None };
            if training {
                Ok(v[0].batch_norm_train(gamma, beta, 1e-3)?.0)
            } else {
                v[0].batch_norm_inference(gamma, beta, &mean, &var, 1e-3)
            }
        })?;
    }

    #[test]
    fn dropout(len in 1usize..40, rate in 0.0f32..0.9, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let x = normal(&[len], &mut rng);
        // The same mask on every evaluation: re-seed inside.
        gradcheck("dropout", &[x], &[true], &SMOOTH, seed, |v| v[0].dropout(rate, &mut Rng::new(seed ^ 1)))?;
    }

    #[test]
    fn arithmetic_broadcasts(a in 1usize..4, b in 1usize..4, which in 0usize..3, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let inputs = [normal(&[a, b, 3], &mut rng), normal(&[b, 1], &mut rng)];
        gradcheck("arith", &inputs, &[true, true], &SMOOTH, seed, |v| match which {
            0 => v[0].add(&v[1]),
            1 => v[0].sub(&v[1]),
            _ => v[0].mul(&v[1]),
        })?;
    }

    #[test]
    fn shapes_and_reductions(n in 1usize..3, h in 1usize..4, c1 in 1usize..4, c2 in 1usize..4, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let inputs = [normal(&[n, h, h, c1], &mut rng), normal(&[n, h, h, c2], &mut rng)];
        gradcheck("concat", &inputs, &[true, true], &SMOOTH, seed, |v| {
            let y = Var::concat(&[&v[0], &v[1]], 3)?.flatten()?;
            y.mul(&y)?.mul_scalar(0.5)?.add_scalar(1.0)
        })?;
        gradcheck("mean", &inputs, &[true, false], &SMOOTH, seed, |v| v[0].mul(&v[0])?.mean()?.reshape(&[1]))?;
    }

    #[test]
    fn losses(m in 1usize..5, k in 2usize..5, which in 0usize..3, seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        // Probabilities well inside (eps, 1 - eps), where the losses are smooth.
        let p = Tensor::rand_uniform(&[m, k], 0.1, 0.9, &mut rng);
        let labels: Vec<usize> = (0..m).map(|_| rng.below(k)).collect();
        let one_hot = Tensor::from_fn(&[m, k], |i| if labels[i / k] == i % k { 1.0 } else { 0.0 });
        let sparse = Tensor::from_vec(&[m], labels.iter().map(|&l| l as f32).collect()).unwrap();
        let opts = Check { kinky: false, h: 1e-3 };
        gradcheck("loss", &[p], &[true], &opts, seed, |v| match which {
            0 => v[0].binary_crossentropy(&one_hot)?.reshape(&[1]),
            1 => v[0].categorical_crossentropy(&one_hot)?.reshape(&[1]),
            _ => v[0].sparse_categorical_crossentropy(&sparse)?.reshape(&[1]),
        })?;
    }
}

/// `|a - b| <= 1e-5 * max|b|` elementwise (plus a floor for all-zero tensors).
fn assert_close(what: &str, a: &Tensor, b: &Tensor) -> std::result::Result<(), TestCaseError> {
    prop_assert_eq!(a.shape(), b.shape(), "{}: shapes", what);
    let scale = b.values().iter().fold(1e-3f32, |m, v| m.max(v.abs()));
    for (i, (x, y)) in a.values().iter().zip(b.values().iter()).enumerate() {
        prop_assert!(
            (x - y).abs() <= 1e-5 * scale,
            "{}[{}]: {} vs {}",
            what,
            i,
            x,
            y
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

    /// The fused convolution + max pooling has no backward rule of its own
    /// to check by finite differences: it must give the values and the
    /// gradients of `conv2d` then `max_pool2d`, whose rules are checked above.
    #[test]
    fn conv2d_max_pool_is_conv2d_then_max_pool2d(
        n in 1usize..4, h in 3usize..10, w in 3usize..10, c in 1usize..4, f in 1usize..5,
        k in 1usize..4, s in 1usize..3, padding in padding_strategy(),
        p in 1usize..4, ps in 1usize..3, pool_same in any::<bool>(),
        bias in any::<bool>(), relu in any::<bool>(), seed in any::<u64>()) {
        let pool_padding = if pool_same { Padding::Same } else { Padding::Valid };
        let probe = convnet_kernels::conv::ConvGeometry::new([n, h, w, c], [k, k, c, f], (s, s), padding);
        prop_assume!(probe.is_ok());
        let probe = probe.unwrap();
        prop_assume!(pool_padding.resolve("t", (probe.oh, probe.ow), (p, p), (ps, ps)).is_ok());
        let mut rng = Rng::new(seed);
        let mut inputs = vec![normal(&[n, h, w, c], &mut rng), normal(&[k, k, c, f], &mut rng)];
        if bias {
            inputs.push(normal(&[f], &mut rng));
        }
        let epilogue = if relu { Epilogue::Relu } else { Epilogue::None };
        let run = |fused: bool| -> std::result::Result<(Tensor, Vec<Tensor>), TestCaseError> {
            let tape = Tape::new();
            let v: Vec<Var> = inputs.iter().map(|t| tape.var(t.clone())).collect();
            let y = if fused {
                v[0].conv2d_max_pool(&v[1], v.get(2), ((s, s), padding), epilogue, ((p, p), (ps, ps), pool_padding))
            } else {
                v[0].conv2d(&v[1], v.get(2), (s, s), padding, epilogue)
                    .and_then(|y| y.max_pool2d((p, p), (ps, ps), pool_padding))
            }
            .map_err(|e| TestCaseError::fail(format!("forward: {e}")))?;
            let u = Tensor::rand_normal(y.shape(), 0.0, 1.0, &mut Rng::new(seed ^ 1));
            let grads = tape.backward_with(&y, u).map_err(|e| TestCaseError::fail(format!("backward: {e}")))?;
            let gs = v.iter().map(|v| grads.get(v).expect("a gradient").clone()).collect();
            Ok((y.into_value(), gs))
        };
        let (yf, gf) = run(true)?;
        let (yu, gu) = run(false)?;
        assert_close("output", &yf, &yu)?;
        for (i, (a, b)) in gf.iter().zip(&gu).enumerate() {
            assert_close(&format!("gradient of input {i}"), a, b)?;
        }
    }
}
