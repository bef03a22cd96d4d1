//! The gradient of one variable as [`Tape::backward`](crate::Tape::backward)
//! hands it over: a dense tensor, or the kernel gradient of a `Dense` layer
//! kept as the product `x^T dy` of two small factors.
//!
//! The factored form saves memory traffic where the gradient is far bigger
//! than its factors (a `(37632, 1024)` kernel trained on batches of 32: 154
//! MB against 5 MB): instead of writing the gradient out and reading it
//! back, an optimizer computes it a block of rows at a time
//! ([`Gradient::with_chunk`]) and applies each block while it is in cache.
//! Anything else (adding it to another gradient, reading it as a tensor)
//! materializes it, with the same kernel, so every consumer sees the same
//! bits.

use std::cell::RefCell;

use convnet_kernels::dense::{outer_product, outer_rows};
use convnet_tensor::{Result, Tensor, TensorError};

/// A gradient: dense, or an unevaluated outer product `x^T dy`.
#[derive(Clone, Debug)]
pub struct Gradient {
    repr: Repr,
}

#[derive(Clone, Debug)]
enum Repr {
    /// Always contiguous.
    Dense(Tensor),
    Outer(OuterProduct),
}

/// `x^T dy` for `x` `(m, k)` and `dy` `(m, n)`: a `(k, n)` matrix (the
/// kernel gradient of `y = x w + b`), both factors contiguous.
#[derive(Clone, Debug)]
pub struct OuterProduct {
    x: Tensor,
    dy: Tensor,
    shape: [usize; 2],
}

impl OuterProduct {
    /// `x^T dy`.
    ///
    /// # Errors
    /// Factors that are not matrices with the same number of rows.
    pub fn new(x: Tensor, dy: Tensor) -> Result<Self> {
        let op = "OuterProduct";
        let (k, n) = match (x.shape(), dy.shape()) {
            (&[m, k], &[m2, n]) if m == m2 => (k, n),
            _ => {
                return Err(TensorError::mismatch(
                    op,
                    x.shape(),
                    dy.shape(),
                    "x^T dy needs matrices x (m, k) and dy (m, n)",
                ))
            }
        };
        Ok(OuterProduct {
            x: contiguous(x),
            dy: contiguous(dy),
            shape: [k, n],
        })
    }

    /// `(k, n)`.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The factors `(x, dy)`.
    pub fn factors(&self) -> (&Tensor, &Tensor) {
        (&self.x, &self.dy)
    }

    /// `(m, k, n)`.
    fn dims(&self) -> (usize, usize, usize) {
        (self.x.shape()[0], self.shape[0], self.shape[1])
    }

    /// The contiguous values of both factors.
    fn slices(&self) -> Result<(&[f32], &[f32])> {
        let op = "OuterProduct";
        let x = self
            .x
            .as_slice()
            .ok_or_else(|| TensorError::invalid(op, "x is not contiguous"))?;
        let dy = self
            .dy
            .as_slice()
            .ok_or_else(|| TensorError::invalid(op, "dy is not contiguous"))?;
        Ok((x, dy))
    }

    /// Rows `k0..k0 + out.len() / n` into `out`, overwritten (see
    /// [`convnet_kernels::dense::outer_rows`]).
    ///
    /// # Errors
    /// A block that is not whole rows inside the matrix.
    pub fn rows_into(&self, k0: usize, out: &mut [f32]) -> Result<()> {
        let ((x, dy), (m, k, n)) = (self.slices()?, self.dims());
        outer_rows(m, k, n, x, dy, k0, out)
    }

    /// The product as a tensor, with the kernel of
    /// [`OuterProduct::rows_into`] (the same bits).
    ///
    /// # Errors
    /// Only if the invariants of the factors were broken (not expected).
    pub fn to_tensor(&self) -> Result<Tensor> {
        let ((x, dy), (m, k, n)) = (self.slices()?, self.dims());
        let mut out = Vec::with_capacity(k * n);
        out.resize(k * n, 0.0f32);
        outer_product(m, k, n, x, dy, &mut out)?;
        Tensor::from_vec(&self.shape, out)
    }
}

fn contiguous(t: Tensor) -> Tensor {
    if t.is_contiguous() {
        t
    } else {
        t.contiguous()
    }
}

thread_local! {
    /// Where [`Gradient::with_chunk`] computes blocks of an outer product.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl From<Tensor> for Gradient {
    fn from(t: Tensor) -> Self {
        Gradient::dense(t)
    }
}

impl From<OuterProduct> for Gradient {
    fn from(p: OuterProduct) -> Self {
        Gradient {
            repr: Repr::Outer(p),
        }
    }
}

impl Gradient {
    /// A dense gradient (made contiguous if it is not).
    pub fn dense(t: Tensor) -> Self {
        Gradient {
            repr: Repr::Dense(contiguous(t)),
        }
    }

    /// The gradient's shape.
    pub fn shape(&self) -> &[usize] {
        match &self.repr {
            Repr::Dense(t) => t.shape(),
            Repr::Outer(p) => p.shape(),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.shape().iter().product()
    }

    /// True if it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The tensor, if the gradient is dense.
    pub fn as_dense(&self) -> Option<&Tensor> {
        match &self.repr {
            Repr::Dense(t) => Some(t),
            Repr::Outer(_) => None,
        }
    }

    /// The factors, if the gradient is an unevaluated outer product.
    pub fn as_outer(&self) -> Option<&OuterProduct> {
        match &self.repr {
            Repr::Dense(_) => None,
            Repr::Outer(p) => Some(p),
        }
    }

    /// The gradient as a tensor (computed if it is factored).
    ///
    /// # Errors
    /// As [`OuterProduct::to_tensor`].
    pub fn to_tensor(&self) -> Result<Tensor> {
        match &self.repr {
            Repr::Dense(t) => Ok(t.clone()),
            Repr::Outer(p) => p.to_tensor(),
        }
    }

    /// The gradient as a tensor, taken out.
    ///
    /// # Errors
    /// As [`OuterProduct::to_tensor`].
    pub fn into_tensor(self) -> Result<Tensor> {
        match self.repr {
            Repr::Dense(t) => Ok(t),
            Repr::Outer(p) => p.to_tensor(),
        }
    }

    /// `self += other`, both materialized first (a sum of gradients is
    /// dense).
    ///
    /// # Errors
    /// Different shapes.
    pub fn add_assign(&mut self, other: Gradient) -> Result<()> {
        let mut sum = match &mut self.repr {
            Repr::Dense(t) => std::mem::replace(t, Tensor::zeros(&[0])),
            Repr::Outer(p) => p.to_tensor()?,
        };
        let added = match other.repr {
            Repr::Dense(t) => sum.add_assign(&t),
            Repr::Outer(p) => sum.add_assign(&p.to_tensor()?),
        };
        self.repr = Repr::Dense(sum);
        added
    }

    /// The length of the chunks [`Gradient::with_chunk`] serves, near
    /// `target`: `target` for a dense gradient, whole rows for an outer
    /// product. Element-wise consumers split their own buffers the same way.
    pub fn chunk_len(&self, target: usize) -> usize {
        match &self.repr {
            Repr::Outer(p) if p.shape[1] > 0 => (target / p.shape[1]).max(1) * p.shape[1],
            _ => target.max(1),
        }
    }

    /// `f` of chunk `index` (elements `index * chunk_len ..`, at most
    /// `chunk_len` of them, in row-major order) of the gradient, computed
    /// on the spot for an outer product (into a buffer of the calling
    /// thread, reused). `chunk_len` must come from
    /// [`Gradient::chunk_len`].
    ///
    /// # Errors
    /// A chunk past the end, or a `chunk_len` that does not cut an outer
    /// product into whole rows.
    pub fn with_chunk<R>(
        &self,
        index: usize,
        chunk_len: usize,
        f: impl FnOnce(&[f32]) -> R,
    ) -> Result<R> {
        let op = "Gradient::with_chunk";
        let total = self.len();
        let start = index.saturating_mul(chunk_len);
        if chunk_len == 0 || (start >= total && total > 0) {
            return Err(TensorError::invalid(
                op,
                format!("chunk {index} of {chunk_len} values is outside {total} values"),
            ));
        }
        let end = (start + chunk_len).min(total);
        match &self.repr {
            Repr::Dense(t) => {
                let values = t
                    .as_slice()
                    .ok_or_else(|| TensorError::invalid(op, "dense gradient not contiguous"))?;
                Ok(f(&values[start..end]))
            }
            Repr::Outer(p) => {
                let n = p.shape[1];
                if chunk_len % n != 0 {
                    return Err(TensorError::invalid(
                        op,
                        format!("chunks of {chunk_len} values are not whole rows of {n}"),
                    ));
                }
                let k0 = start / n;
                SCRATCH.with(|cell| match cell.try_borrow_mut() {
                    Ok(mut buf) => {
                        buf.resize(end - start, 0.0);
                        p.rows_into(k0, &mut buf[..end - start])?;
                        Ok(f(&buf[..end - start]))
                    }
                    // Called from inside `f`: a buffer of its own.
                    Err(_) => {
                        let mut buf = vec![0.0f32; end - start];
                        p.rows_into(k0, &mut buf)?;
                        Ok(f(&buf))
                    }
                })
            }
        }
    }
}
