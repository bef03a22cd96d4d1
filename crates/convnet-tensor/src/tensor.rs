use std::borrow::Cow;
use std::fmt;

use ndarray::{ArcArray, ArrayD, ArrayViewD, Axis, IxDyn, Slice};

use crate::{Result, Shape, TensorError};

/// An n-dimensional `f32` tensor. Images are NHWC.
///
/// Storage is a reference-counted `ndarray` array: cloning a tensor is cheap
/// and shares the data until one side writes (copy on write). A tensor may be
/// a strided view (after [`Tensor::permute`], say); kernels ask for
/// [`Tensor::values`], which is contiguous and borrows whenever it can.
#[derive(Clone, PartialEq)]
pub struct Tensor {
    data: ArcArray<f32, IxDyn>,
}

impl Tensor {
    /// A tensor filled with zeros.
    pub fn zeros(shape: &[usize]) -> Self {
        Self::full(shape, 0.0)
    }

    /// A tensor filled with ones.
    pub fn ones(shape: &[usize]) -> Self {
        Self::full(shape, 1.0)
    }

    /// A tensor filled with `value`.
    pub fn full(shape: &[usize], value: f32) -> Self {
        Tensor {
            data: ArcArray::from_elem(IxDyn(shape), value),
        }
    }

    /// A rank-0 tensor.
    pub fn scalar(value: f32) -> Self {
        Self::full(&[], value)
    }

    /// A tensor of `shape` over `data` in row-major (C) order.
    ///
    /// Fails if `data.len()` is not the product of `shape`.
    pub fn from_vec(shape: &[usize], data: Vec<f32>) -> Result<Self> {
        TensorError::check_len("Tensor::from_vec", "data", shape, data.len())?;
        let arr = ArrayD::from_shape_vec(IxDyn(shape), data)
            .map_err(|e| TensorError::invalid_shape("Tensor::from_vec", shape, e.to_string()))?;
        Ok(Tensor {
            data: arr.into_shared(),
        })
    }

    /// A tensor of `shape` whose element at flat index `i` is `f(i)`.
    pub fn from_fn(shape: &[usize], f: impl FnMut(usize) -> f32) -> Self {
        let n: usize = shape.iter().product();
        let v: Vec<f32> = (0..n).map(f).collect();
        Self::from_vec(shape, v).expect("length equals the shape's product by construction")
    }

    /// Wrap an `ndarray` array.
    pub fn from_array(array: ArrayD<f32>) -> Self {
        Tensor {
            data: array.into_shared(),
        }
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        self.data.shape()
    }

    /// The shape as a printable [`Shape`].
    pub fn shape_obj(&self) -> Shape {
        Shape::from(self.shape())
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.data.ndim()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True if the tensor has no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Size of axis `axis`.
    pub fn dim(&self, axis: usize) -> Result<usize> {
        self.shape()
            .get(axis)
            .copied()
            .ok_or_else(|| self.axis_error("Tensor::dim", axis))
    }

    /// The four dimensions of an NHWC tensor, or an error naming `op` if the
    /// tensor is not rank 4.
    pub fn nhwc(&self, op: &str) -> Result<[usize; 4]> {
        match *self.shape() {
            [n, h, w, c] => Ok([n, h, w, c]),
            _ => Err(TensorError::invalid_shape(
                op,
                self.shape(),
                "expected a rank-4 NHWC tensor (batch, height, width, channels)",
            )),
        }
    }

    /// True if the elements are stored contiguously in row-major order.
    pub fn is_contiguous(&self) -> bool {
        self.data.is_standard_layout()
    }

    /// The elements in row-major order: borrowed when the tensor is
    /// contiguous, copied otherwise.
    pub fn values(&self) -> Cow<'_, [f32]> {
        match self.data.as_slice() {
            Some(s) => Cow::Borrowed(s),
            None => Cow::Owned(self.data.iter().copied().collect()),
        }
    }

    /// The elements as a slice, if the tensor is contiguous.
    pub fn as_slice(&self) -> Option<&[f32]> {
        self.data.as_slice()
    }

    /// The elements as a mutable slice, made contiguous and unshared first.
    pub fn as_slice_mut(&mut self) -> &mut [f32] {
        if !self.is_contiguous() {
            *self = self.contiguous();
        }
        self.data
            .as_slice_mut()
            .expect("a standard-layout array has a slice")
    }

    /// A contiguous tensor with the same elements (cheap if already so).
    pub fn contiguous(&self) -> Tensor {
        if self.is_contiguous() {
            self.clone()
        } else {
            Tensor {
                data: self.data.as_standard_layout().into_owned().into_shared(),
            }
        }
    }

    /// The elements in row-major order, as a new vector.
    pub fn to_vec(&self) -> Vec<f32> {
        self.values().into_owned()
    }

    /// The elements in row-major order, without a copy when this tensor holds
    /// the only reference to contiguous data.
    pub fn into_vec(self) -> Vec<f32> {
        let c = self.contiguous();
        let owned = c.data.into_owned();
        if owned.is_standard_layout() {
            let (v, offset) = owned.into_raw_vec_and_offset();
            match offset {
                Some(0) | None => v,
                Some(o) => v[o..].to_vec(),
            }
        } else {
            owned.iter().copied().collect()
        }
    }

    /// A read-only `ndarray` view.
    pub fn view(&self) -> ArrayViewD<'_, f32> {
        self.data.view()
    }

    /// The underlying shared array.
    pub fn array(&self) -> &ArcArray<f32, IxDyn> {
        &self.data
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        if self.len() == 1 {
            Ok(*self.data.iter().next().expect("one element"))
        } else {
            Err(TensorError::invalid_shape(
                "Tensor::item",
                self.shape(),
                "only a tensor with exactly one element has an item",
            ))
        }
    }

    /// The same elements under a new shape. One dimension may be given as
    /// `usize::MAX` to be inferred, as `-1` in Keras's `Reshape`.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        let op = "Tensor::reshape";
        let mut dims = shape.to_vec();
        let unknown: Vec<usize> = (0..dims.len()).filter(|&i| dims[i] == usize::MAX).collect();
        if unknown.len() > 1 {
            return Err(TensorError::invalid(
                op,
                "at most one dimension can be inferred",
            ));
        }
        if let Some(&u) = unknown.first() {
            let known: usize = dims.iter().filter(|&&d| d != usize::MAX).product();
            if known == 0 || self.len() % known != 0 {
                return Err(TensorError::mismatch(
                    op,
                    self.shape(),
                    shape,
                    "cannot infer the missing dimension",
                ));
            }
            dims[u] = self.len() / known;
        }
        if dims.iter().product::<usize>() != self.len() {
            return Err(TensorError::mismatch(
                op,
                self.shape(),
                &dims,
                "the number of elements must stay the same",
            ));
        }
        let c = self.contiguous();
        let data = c
            .data
            .into_shape_with_order(IxDyn(&dims))
            .map_err(|e| TensorError::mismatch(op, self.shape(), &dims, e.to_string()))?;
        Ok(Tensor { data })
    }

    /// Flatten every axis after the first: `(n, h, w, c)` becomes `(n, h*w*c)`.
    pub fn flatten_batch(&self) -> Result<Tensor> {
        let n = self.dim(0)?;
        let rest = self.shape()[1..].iter().product();
        self.reshape(&[n, rest])
    }

    /// Axes reordered: axis `i` of the result is axis `axes[i]` of `self`.
    /// The result is a strided view sharing the data.
    pub fn permute(&self, axes: &[usize]) -> Result<Tensor> {
        let op = "Tensor::permute";
        let mut seen = vec![false; self.rank()];
        if axes.len() != self.rank() {
            return Err(TensorError::invalid(
                op,
                format!(
                    "{} axes given for a tensor of shape {}",
                    axes.len(),
                    self.shape_obj()
                ),
            ));
        }
        for &a in axes {
            if a >= self.rank() || seen[a] {
                return Err(TensorError::invalid(
                    op,
                    format!(
                        "{axes:?} is not a permutation of the axes of shape {}",
                        self.shape_obj()
                    ),
                ));
            }
            seen[a] = true;
        }
        Ok(Tensor {
            data: self.data.clone().permuted_axes(IxDyn(axes)),
        })
    }

    /// Rows `start..end` of the batch (first) axis, sharing the data.
    pub fn slice_batch(&self, start: usize, end: usize) -> Result<Tensor> {
        self.slice_axis(0, start, end)
    }

    /// Indices `start..end` of axis `axis`, sharing the data.
    pub fn slice_axis(&self, axis: usize, start: usize, end: usize) -> Result<Tensor> {
        let size = self.dim(axis)?;
        if start > end || end > size {
            return Err(TensorError::invalid(
                "Tensor::slice_axis",
                format!(
                    "range {start}..{end} is outside axis {axis} of shape {}",
                    self.shape_obj()
                ),
            ));
        }
        let mut data = self.data.clone();
        data.slice_axis_inplace(Axis(axis), Slice::from(start..end));
        Ok(Tensor { data })
    }

    /// Rows of the batch axis picked by `indices` (in that order), copied.
    pub fn select_batch(&self, indices: &[usize]) -> Result<Tensor> {
        let n = self.dim(0)?;
        if let Some(&bad) = indices.iter().find(|&&i| i >= n) {
            return Err(TensorError::invalid(
                "Tensor::select_batch",
                format!(
                    "index {bad} is out of range for batch size {n} (shape {})",
                    self.shape_obj()
                ),
            ));
        }
        Ok(Tensor {
            data: self.data.select(Axis(0), indices).into_shared(),
        })
    }

    /// Tensors joined along `axis`; every other dimension must agree.
    pub fn concat(tensors: &[&Tensor], axis: usize) -> Result<Tensor> {
        let op = "Tensor::concat";
        let first = tensors
            .first()
            .ok_or_else(|| TensorError::invalid(op, "nothing to concatenate"))?;
        if axis >= first.rank() {
            return Err(first.axis_error(op, axis));
        }
        for t in &tensors[1..] {
            let ok = t.rank() == first.rank()
                && t.shape()
                    .iter()
                    .zip(first.shape())
                    .enumerate()
                    .all(|(i, (a, b))| i == axis || a == b);
            if !ok {
                return Err(TensorError::mismatch(
                    op,
                    first.shape(),
                    t.shape(),
                    format!("all dimensions except axis {axis} must agree"),
                ));
            }
        }
        // Row-major output, block by block (`ndarray::concatenate` along an
        // inner axis returns a non-standard layout that every consumer then
        // copies element by element: 10x slower InceptionV3 blocks).
        let outer: usize = first.shape()[..axis].iter().product();
        let parts: Vec<(Cow<'_, [f32]>, usize)> = tensors
            .iter()
            .map(|t| (t.values(), t.shape()[axis..].iter().product()))
            .collect();
        let mut shape = first.shape().to_vec();
        shape[axis] = tensors.iter().map(|t| t.shape()[axis]).sum();
        let mut data = Vec::with_capacity(shape.iter().product());
        for o in 0..outer {
            for (values, block) in &parts {
                data.extend_from_slice(&values[o * block..(o + 1) * block]);
            }
        }
        Tensor::from_vec(&shape, data)
    }

    /// A new tensor with `f` applied to every element.
    pub fn map(&self, f: impl Fn(f32) -> f32) -> Tensor {
        Tensor {
            data: self.data.map(|&x| f(x)).into_shared(),
        }
    }

    /// Apply `f` to every element in place.
    pub fn map_inplace(&mut self, f: impl Fn(f32) -> f32) {
        self.data.mapv_inplace(f);
    }

    /// True if every element is finite.
    pub fn all_finite(&self) -> bool {
        self.data.iter().all(|x| x.is_finite())
    }

    /// Largest absolute difference to `other` (shapes must match).
    pub fn max_abs_diff(&self, other: &Tensor) -> Result<f32> {
        if self.shape() != other.shape() {
            return Err(TensorError::mismatch(
                "Tensor::max_abs_diff",
                self.shape(),
                other.shape(),
                "",
            ));
        }
        Ok(self
            .data
            .iter()
            .zip(other.data.iter())
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs())))
    }

    /// Largest absolute value (0 for an empty tensor).
    pub fn max_abs(&self) -> f32 {
        self.data.iter().fold(0.0f32, |m, x| m.max(x.abs()))
    }

    pub(crate) fn axis_error(&self, op: &str, axis: usize) -> TensorError {
        TensorError::AxisOutOfRange {
            op: op.to_string(),
            axis,
            shape: self.shape_obj(),
        }
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tensor{} ", self.shape_obj())?;
        if self.len() <= 64 {
            write!(f, "{:?}", self.to_vec())
        } else {
            let v = self.values();
            write!(
                f,
                "[{:?}, {:?}, {:?}, ... {:?}]",
                v[0],
                v[1],
                v[2],
                v[v.len() - 1]
            )
        }
    }
}

impl From<ArrayD<f32>> for Tensor {
    fn from(a: ArrayD<f32>) -> Self {
        Tensor::from_array(a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reshape_infers_and_refuses() {
        let t = Tensor::from_fn(&[2, 3, 4], |i| i as f32);
        assert_eq!(t.reshape(&[6, usize::MAX]).unwrap().shape(), &[6, 4]);
        let e = t.reshape(&[5, 5]).unwrap_err().to_string();
        assert!(e.contains("(2, 3, 4)") && e.contains("(5, 5)"), "{e}");
    }

    #[test]
    fn permute_then_values_is_transposed() {
        let t = Tensor::from_fn(&[2, 3], |i| i as f32);
        let p = t.permute(&[1, 0]).unwrap();
        assert!(!p.is_contiguous());
        assert_eq!(p.values().to_vec(), vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        assert_eq!(
            p.reshape(&[6]).unwrap().to_vec(),
            vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
        );
    }

    #[test]
    fn slice_and_concat_round_trip() {
        let t = Tensor::from_fn(&[4, 2, 2, 3], |i| i as f32);
        let a = t.slice_batch(0, 1).unwrap();
        let b = t.slice_batch(1, 4).unwrap();
        assert_eq!(Tensor::concat(&[&a, &b], 0).unwrap(), t);
        let c = Tensor::concat(&[&t, &t], 3).unwrap();
        assert_eq!(c.shape(), &[4, 2, 2, 6]);
        assert_eq!(c.to_vec()[3..6], t.to_vec()[0..3]);
        let err = Tensor::concat(&[&t, &a.reshape(&[1, 4, 3]).unwrap()], 0).unwrap_err();
        assert!(err.to_string().contains("Tensor::concat"));
        assert!(t.slice_batch(3, 5).is_err());
    }

    #[test]
    fn into_vec_of_a_slice_is_the_slice() {
        let t = Tensor::from_fn(&[4, 2], |i| i as f32);
        let s = t.slice_batch(2, 4).unwrap();
        assert_eq!(s.into_vec(), vec![4.0, 5.0, 6.0, 7.0]);
    }

    #[test]
    fn nhwc_refuses_other_ranks() {
        let e = Tensor::zeros(&[3, 3])
            .nhwc("Conv2D")
            .unwrap_err()
            .to_string();
        assert!(e.contains("Conv2D") && e.contains("(3, 3)"), "{e}");
    }
}
