//! The factored kernel gradient of `Dense` (`x^T dy` left unevaluated):
//! handed over only where it is the variable's whole gradient, the same
//! bits as its materialized form whichever way it is read, and close to
//! the plain product.

use convnet_autograd::{Gradient, OuterProduct, Tape};
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

/// `x^T dy` in f64, and `sum |x dy|` per element.
fn naive(x: &Tensor, dy: &Tensor) -> (Vec<f64>, Vec<f64>) {
    let (m, k, n) = (x.shape()[0], x.shape()[1], dy.shape()[1]);
    let (x, dy) = (x.to_vec(), dy.to_vec());
    let (mut c, mut s) = (vec![0.0; k * n], vec![0.0; k * n]);
    for t in 0..m {
        for p in 0..k {
            for j in 0..n {
                let v = x[t * k + p] as f64 * dy[t * n + j] as f64;
                c[p * n + j] += v;
                s[p * n + j] += v.abs();
            }
        }
    }
    (c, s)
}

#[test]
fn dense_kernel_gradient_is_factored_and_reads_the_same() {
    let (m, k, n) = (5, 70, 40);
    let tape = Tape::new();
    let x = tape.var(tensor(&[m, k], 1));
    let w = tape.var(tensor(&[k, n], 2));
    let b = tape.var(tensor(&[n], 3));
    let y = x.dense(&w, Some(&b)).unwrap();
    let seed = tensor(&[m, n], 4);
    let mut grads = tape.backward_with(&y, seed.clone()).unwrap();
    let g = grads.gradient(&w).unwrap().clone();
    let p = g
        .as_outer()
        .expect("a small batch's kernel gradient stays factored");
    assert_eq!(p.shape(), &[k, n]);
    // Every reading gives the same bits.
    let dense = g.to_tensor().unwrap();
    assert!(grads.get(&w).unwrap() == &dense);
    let len = g.chunk_len(1000);
    assert_eq!(len % n, 0);
    let mut chunks = Vec::new();
    for i in 0..g.len().div_ceil(len) {
        g.with_chunk(i, len, |c| chunks.extend_from_slice(c))
            .unwrap();
    }
    assert!(chunks == dense.to_vec());
    assert!(grads.take(&w).unwrap() == dense);
    assert!(grads.take_gradient(&w).is_none());
    // And it is x^T dy, to f32 rounding: m terms, bound (m + 2) 2^-23 sum|x dy|.
    let (want, scale) = naive(x.value(), &seed);
    for ((&got, &w), &s) in dense.to_vec().iter().zip(&want).zip(&scale) {
        let tol = (m + 2) as f64 * f64::from(f32::EPSILON) * s + 1e-30;
        assert!((got as f64 - w).abs() <= tol, "{got} vs {w}");
    }
    // The other gradients are dense.
    assert!(grads.gradient(&x).unwrap().as_dense().is_some());
    assert!(grads.gradient(&b).unwrap().as_dense().is_some());
}

#[test]
fn summed_or_forwarded_gradients_are_dense() {
    let (m, k, n) = (4, 10, 33);
    // The same kernel used twice: the sum of two outer products.
    let tape = Tape::new();
    let x1 = tape.var(tensor(&[m, k], 5));
    let x2 = tape.var(tensor(&[m, k], 6));
    let w = tape.var(tensor(&[k, n], 7));
    let loss = x1
        .dense(&w, None)
        .unwrap()
        .add(&x2.dense(&w, None).unwrap())
        .unwrap()
        .sum()
        .unwrap();
    let grads = tape.backward(&loss).unwrap();
    let g = grads.gradient(&w).unwrap();
    assert!(g.as_dense().is_some(), "a sum of gradients is dense");
    let ones = Tensor::ones(&[m, n]);
    let mut want = OuterProduct::new(x1.value().clone(), ones.clone())
        .unwrap()
        .to_tensor()
        .unwrap();
    want.add_assign(
        &OuterProduct::new(x2.value().clone(), ones)
            .unwrap()
            .to_tensor()
            .unwrap(),
    )
    .unwrap();
    assert!(g.as_dense().unwrap() == &want);

    // A kernel computed from a variable: its gradient flows on, dense.
    let tape = Tape::new();
    let x = tape.var(tensor(&[m, k], 8));
    let v = tape.var(tensor(&[k, n], 9));
    let w = v.mul(&v).unwrap();
    let loss = x.dense(&w, None).unwrap().sum().unwrap();
    let grads = tape.backward(&loss).unwrap();
    assert!(grads.gradient(&v).unwrap().as_dense().is_some());
}

#[test]
fn big_batches_and_narrow_layers_stay_dense() {
    for (m, n) in [(129, 40), (8, 31)] {
        let tape = Tape::new();
        let x = tape.var(tensor(&[m, 12], 10));
        let w = tape.var(tensor(&[12, n], 11));
        let loss = x.dense(&w, None).unwrap().sum().unwrap();
        let grads = tape.backward(&loss).unwrap();
        assert!(
            grads.gradient(&w).unwrap().as_dense().is_some(),
            "({m}, {n})"
        );
    }
}

#[test]
fn gradient_sums_and_errors() {
    let p = OuterProduct::new(tensor(&[3, 4], 12), tensor(&[3, 5], 13)).unwrap();
    let mut g = Gradient::from(p.clone());
    g.add_assign(Gradient::from(p.clone())).unwrap();
    let mut twice = p.to_tensor().unwrap();
    twice.add_assign(&p.to_tensor().unwrap()).unwrap();
    assert!(g.as_dense().unwrap() == &twice);
    assert!(OuterProduct::new(tensor(&[3, 4], 1), tensor(&[2, 5], 2)).is_err());
    assert!(OuterProduct::new(tensor(&[12], 1), tensor(&[2, 5], 2)).is_err());
    let f = Gradient::from(p);
    assert!(
        f.with_chunk(0, 7, |_| ()).is_err(),
        "chunks must be whole rows"
    );
    assert!(f.with_chunk(4, 5, |_| ()).is_err(), "past the end");
    assert!(f.with_chunk(3, 5, |c| c.len()).unwrap() == 5);
}
