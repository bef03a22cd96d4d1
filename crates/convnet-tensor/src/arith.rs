//! Elementwise arithmetic with NumPy/Keras broadcasting.

use ndarray::{ArrayD, IxDyn, Zip};

use crate::{Result, Tensor, TensorError};

/// The broadcast shape of `a` and `b` under NumPy's rules (align on the right;
/// each pair of dimensions must be equal or one of them 1).
pub(crate) fn broadcast_shape(op: &str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for i in 0..rank {
        let da = if i + a.len() >= rank {
            a[i + a.len() - rank]
        } else {
            1
        };
        let db = if i + b.len() >= rank {
            b[i + b.len() - rank]
        } else {
            1
        };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(TensorError::mismatch(op, a, b, "cannot broadcast"));
        };
    }
    Ok(out)
}

impl Tensor {
    fn zip_with(&self, other: &Tensor, op: &str, f: impl Fn(f32, f32) -> f32) -> Result<Tensor> {
        let shape = broadcast_shape(op, self.shape(), other.shape())?;
        let a = self.array().broadcast(IxDyn(&shape)).ok_or_else(|| {
            TensorError::mismatch(op, self.shape(), other.shape(), "cannot broadcast")
        })?;
        let b = other.array().broadcast(IxDyn(&shape)).ok_or_else(|| {
            TensorError::mismatch(op, self.shape(), other.shape(), "cannot broadcast")
        })?;
        let mut out = ArrayD::<f32>::zeros(IxDyn(&shape));
        Zip::from(&mut out)
            .and(&a)
            .and(&b)
            .for_each(|o, &x, &y| *o = f(x, y));
        Ok(Tensor::from_array(out))
    }

    /// `self + other`, broadcasting.
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        self.zip_with(other, "add", |a, b| a + b)
    }

    /// `self - other`, broadcasting.
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        self.zip_with(other, "sub", |a, b| a - b)
    }

    /// `self * other` elementwise, broadcasting.
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        self.zip_with(other, "mul", |a, b| a * b)
    }

    /// `self / other` elementwise, broadcasting.
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        self.zip_with(other, "div", |a, b| a / b)
    }

    /// Elementwise maximum, broadcasting.
    pub fn maximum(&self, other: &Tensor) -> Result<Tensor> {
        self.zip_with(other, "maximum", f32::max)
    }

    /// `self + s` for a scalar `s`.
    pub fn add_scalar(&self, s: f32) -> Tensor {
        self.map(|x| x + s)
    }

    /// `self * s` for a scalar `s`.
    pub fn mul_scalar(&self, s: f32) -> Tensor {
        self.map(|x| x * s)
    }

    /// `self += other`, where `other` has exactly this shape. Used to
    /// accumulate gradients.
    pub fn add_assign(&mut self, other: &Tensor) -> Result<()> {
        if self.shape() != other.shape() {
            return Err(TensorError::mismatch(
                "add_assign",
                self.shape(),
                other.shape(),
                "shapes must be equal",
            ));
        }
        let o = other.values();
        for (a, b) in self.as_slice_mut().iter_mut().zip(o.iter()) {
            *a += *b;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(
            broadcast_shape("t", &[2, 1, 3], &[4, 1]).unwrap(),
            vec![2, 4, 3]
        );
        assert_eq!(broadcast_shape("t", &[], &[4, 1]).unwrap(), vec![4, 1]);
        let e = broadcast_shape("add", &[2, 3], &[4])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("add") && e.contains("(2, 3)") && e.contains("(4,)"),
            "{e}"
        );
    }

    #[test]
    fn add_broadcasts_bias() {
        let x = Tensor::from_fn(&[2, 3], |i| i as f32);
        let b = Tensor::from_vec(&[3], vec![10.0, 20.0, 30.0]).unwrap();
        assert_eq!(
            x.add(&b).unwrap().to_vec(),
            vec![10.0, 21.0, 32.0, 13.0, 24.0, 35.0]
        );
        assert_eq!(b.sub(&x).unwrap().to_vec()[3], 7.0);
        assert!(x.mul(&Tensor::zeros(&[2])).is_err());
    }
}
