//! Reductions: sums, means and argmax over axes.

use ndarray::{ArrayD, Axis, IxDyn};

use crate::{Result, Tensor, TensorError};

impl Tensor {
    fn check_axes(&self, op: &str, axes: &[usize]) -> Result<Vec<usize>> {
        let mut sorted = axes.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != axes.len() {
            return Err(TensorError::invalid(
                op,
                format!("repeated axis in {axes:?}"),
            ));
        }
        if let Some(&a) = sorted.iter().find(|&&a| a >= self.rank()) {
            return Err(self.axis_error(op, a));
        }
        Ok(sorted)
    }

    /// Sum over `axes` (accumulated in f64). With `keepdims` the reduced axes
    /// stay with size 1.
    pub fn sum_axes(&self, axes: &[usize], keepdims: bool) -> Result<Tensor> {
        let sorted = self.check_axes("sum_axes", axes)?;
        let mut acc: ArrayD<f64> = self.array().mapv(|x| x as f64).into_dyn();
        for &a in sorted.iter().rev() {
            acc = acc.sum_axis(Axis(a));
            if keepdims {
                acc.insert_axis_inplace(Axis(a));
            }
        }
        Ok(Tensor::from_array(acc.mapv(|x| x as f32)))
    }

    /// Mean over `axes`.
    pub fn mean_axes(&self, axes: &[usize], keepdims: bool) -> Result<Tensor> {
        let sorted = self.check_axes("mean_axes", axes)?;
        let count: usize = sorted.iter().map(|&a| self.shape()[a]).product();
        if count == 0 {
            return Err(TensorError::invalid_shape(
                "mean_axes",
                self.shape(),
                "mean over an empty axis",
            ));
        }
        Ok(self
            .sum_axes(&sorted, keepdims)?
            .mul_scalar(1.0 / count as f32))
    }

    /// Sum of all elements (accumulated in f64).
    pub fn sum(&self) -> f32 {
        self.array().iter().map(|&x| x as f64).sum::<f64>() as f32
    }

    /// Mean of all elements (NaN for an empty tensor).
    pub fn mean(&self) -> f32 {
        (self.array().iter().map(|&x| x as f64).sum::<f64>() / self.len() as f64) as f32
    }

    /// Index of the largest element along `axis` (the first one on ties, NaN
    /// counted as largest), with that axis removed from the shape.
    pub fn argmax(&self, axis: usize) -> Result<ArrayD<usize>> {
        if axis >= self.rank() {
            return Err(self.axis_error("argmax", axis));
        }
        if self.shape()[axis] == 0 {
            return Err(TensorError::invalid_shape(
                "argmax",
                self.shape(),
                "argmax over an empty axis",
            ));
        }
        let out = self.array().map_axis(Axis(axis), |lane| {
            let mut best = 0;
            let mut best_v = lane[0];
            for (i, &v) in lane.iter().enumerate().skip(1) {
                if v > best_v || (v.is_nan() && !best_v.is_nan()) {
                    best = i;
                    best_v = v;
                }
            }
            best
        });
        Ok(out
            .into_dimensionality::<IxDyn>()
            .expect("dynamic dimension"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_means() {
        let t = Tensor::from_fn(&[2, 3], |i| i as f32);
        assert_eq!(
            t.sum_axes(&[0], false).unwrap().to_vec(),
            vec![3.0, 5.0, 7.0]
        );
        assert_eq!(t.sum_axes(&[1], true).unwrap().shape(), &[2, 1]);
        assert_eq!(t.mean_axes(&[0, 1], false).unwrap().item().unwrap(), 2.5);
        assert_eq!(t.sum(), 15.0);
        assert!(t.sum_axes(&[2], false).is_err());
        assert!(t.sum_axes(&[1, 1], false).is_err());
    }

    #[test]
    fn argmax_along_last_axis() {
        let t = Tensor::from_vec(&[2, 3], vec![0.1, 0.7, 0.2, 5.0, 5.0, -1.0]).unwrap();
        assert_eq!(t.argmax(1).unwrap().into_raw_vec_and_offset().0, vec![1, 0]);
    }
}
