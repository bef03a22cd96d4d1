//! Random initialisers, drawn from a seeded [`Rng`].

use crate::{Rng, Tensor};

/// Which fan a variance-scaling initialiser divides by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FanMode {
    /// Fan in.
    FanIn,
    /// Fan out.
    FanOut,
    /// Mean of fan in and fan out (Glorot).
    FanAvg,
}

/// Fan in and fan out of a weight of `shape`, computed as Keras does: for a
/// dense kernel `(in, out)` they are `in` and `out`; for a convolution kernel
/// `(kh, kw, in, out)` both are multiplied by the receptive field `kh*kw`.
pub fn fans(shape: &[usize]) -> (usize, usize) {
    match shape.len() {
        0 => (1, 1),
        1 => (shape[0], shape[0]),
        2 => (shape[0], shape[1]),
        r => {
            let receptive: usize = shape[..r - 2].iter().product();
            (shape[r - 2] * receptive, shape[r - 1] * receptive)
        }
    }
}

impl Tensor {
    /// Uniform in `[lo, hi)`.
    pub fn rand_uniform(shape: &[usize], lo: f32, hi: f32, rng: &mut Rng) -> Tensor {
        Tensor::from_fn(shape, |_| rng.uniform_range(lo, hi))
    }

    /// Normal with the given mean and standard deviation.
    pub fn rand_normal(shape: &[usize], mean: f32, std: f32, rng: &mut Rng) -> Tensor {
        Tensor::from_fn(shape, |_| mean + std * rng.normal())
    }

    /// Keras's `GlorotUniform`: uniform in `[-l, l]`, `l = sqrt(6 / (fan_in + fan_out))`.
    ///
    /// ```
    /// use convnet_tensor::{Rng, Tensor};
    /// let w = Tensor::glorot_uniform(&[3, 3, 3, 32], &mut Rng::new(0));
    /// let limit = (6.0f32 / (27.0 + 288.0)).sqrt();
    /// assert!(w.max_abs() <= limit);
    /// ```
    pub fn glorot_uniform(shape: &[usize], rng: &mut Rng) -> Tensor {
        Self::variance_scaling_uniform(shape, 1.0, FanMode::FanAvg, rng)
    }

    /// Keras's `HeNormal` is truncated; this is the plain `HeUniform`:
    /// uniform in `[-l, l]`, `l = sqrt(6 / fan_in)`.
    pub fn he_uniform(shape: &[usize], rng: &mut Rng) -> Tensor {
        Self::variance_scaling_uniform(shape, 2.0, FanMode::FanIn, rng)
    }

    /// Keras's `VarianceScaling` with a uniform distribution:
    /// `l = sqrt(3 * scale / fan)`.
    pub fn variance_scaling_uniform(
        shape: &[usize],
        scale: f32,
        mode: FanMode,
        rng: &mut Rng,
    ) -> Tensor {
        let (fan_in, fan_out) = fans(shape);
        let fan = match mode {
            FanMode::FanIn => fan_in as f32,
            FanMode::FanOut => fan_out as f32,
            FanMode::FanAvg => (fan_in + fan_out) as f32 / 2.0,
        };
        let limit = (3.0 * scale / fan.max(1.0)).sqrt();
        Tensor::rand_uniform(shape, -limit, limit, rng)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keras_fans() {
        assert_eq!(fans(&[3, 3, 3, 32]), (27, 288));
        assert_eq!(fans(&[128, 10]), (128, 10));
    }

    #[test]
    fn glorot_is_seeded_and_bounded() {
        let a = Tensor::glorot_uniform(&[64, 32], &mut Rng::new(9));
        let b = Tensor::glorot_uniform(&[64, 32], &mut Rng::new(9));
        assert_eq!(a, b);
        let l = (6.0f32 / 96.0).sqrt();
        assert!(a.max_abs() <= l && a.max_abs() > 0.9 * l);
    }
}
