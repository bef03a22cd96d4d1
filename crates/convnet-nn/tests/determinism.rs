//! Same seed, same data: bitwise-identical weights after training, whatever
//! the number of threads (every reduction runs in a fixed order). The model
//! is large enough that the parallel paths run (parallel convolution tiles,
//! the filter gradient's fixed partial sums, Winograd, chunked optimizer
//! updates, dropout masks).

use convnet_nn::layers::{Conv2D, Dense, Dropout, Flatten, MaxPooling2D};
use convnet_nn::optimizers::Adam;
use convnet_nn::Activation::{Relu, Sigmoid};
use convnet_nn::{clear_session, set_random_seed, FitOptions, Loss, Metric, Sequential};
use convnet_tensor::{Rng, Tensor};

/// Trains a small CNN for two epochs in a pool of `threads` threads and
/// returns every weight's bytes.
fn train(threads: usize) -> Vec<(String, Vec<u8>)> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        clear_session();
        set_random_seed(7);
        let mut m = Sequential::new(&[24, 24, 3]);
        m.add(Conv2D::new(16, (3, 3)).activation(Relu)).unwrap();
        // 16 -> 16 channels, 3x3: the Winograd forward and input gradient.
        m.add(Conv2D::new(16, (3, 3)).activation(Relu)).unwrap();
        m.add(MaxPooling2D::new((2, 2))).unwrap();
        // 16 -> 64 channels then 64 -> 64: the Winograd filter gradient.
        m.add(Conv2D::new(64, (3, 3)).activation(Relu)).unwrap();
        m.add(Conv2D::new(64, (3, 3)).activation(Relu)).unwrap();
        m.add(Flatten::new()).unwrap();
        m.add(Dense::new(32).activation(Relu)).unwrap();
        m.add(Dropout::new(0.3)).unwrap();
        m.add(Dense::new(1).activation(Sigmoid)).unwrap();
        m.compile(
            Adam::default(),
            Loss::BinaryCrossentropy,
            &[Metric::Accuracy],
        )
        .unwrap();
        let mut rng = Rng::new(3);
        let x = Tensor::rand_uniform(&[48, 24, 24, 3], 0.0, 1.0, &mut rng);
        let y: Vec<f32> = (0..48).map(|i| (i % 2) as f32).collect();
        let y = Tensor::from_vec(&[48, 1], y).unwrap();
        let options = FitOptions {
            epochs: 2,
            verbose: 0,
            seed: 11,
            ..FitOptions::default()
        };
        m.fit_arrays(&x, &y, 16, None, &options, &mut []).unwrap();
        m.weights()
            .into_iter()
            .map(|(name, t, _)| {
                let bytes = t.values().iter().flat_map(|v| v.to_le_bytes()).collect();
                (name, bytes)
            })
            .collect()
    })
}

#[test]
fn same_weights_with_one_two_and_three_threads() {
    let one = train(1);
    assert!(!one.is_empty());
    for threads in [2, 3] {
        let other = train(threads);
        assert_eq!(one.len(), other.len());
        for ((name, a), (name_b, b)) in one.iter().zip(&other) {
            assert_eq!(name, name_b);
            assert!(
                a == b,
                "weight {name} differs between 1 and {threads} threads"
            );
        }
    }
}
