//! 2-D convolution (Keras's `Conv2D`), with an optional fused ReLU.
//!
//! Forward: `y = act(x (*) w + b)`. Backward, the two equations of
//! convolution backprop, after masking `dy` by the ReLU if fused:
//! `dx = col2im(dy w^T)` and `dw = im2col(x)^T dy`, `db = sum(dy)`.

use convnet_kernels::activation::{relu_backward, relu_backward_in_place};
use convnet_kernels::conv::{
    conv2d_backward_filter, conv2d_backward_input, conv2d_forward_uninit_with, ConvGeometry,
    Epilogue, Precision,
};
use convnet_kernels::Padding;
use convnet_tensor::{Result, Tensor, TensorError};

use super::{fill, uninit_vec};
use crate::{Backward, Var};

struct Conv2dBackward {
    g: ConvGeometry,
    x: Tensor,
    w: Tensor,
    has_bias: bool,
    /// The output, kept when a ReLU is fused (its mask).
    relu_out: Option<Tensor>,
}

impl Backward for Conv2dBackward {
    fn name(&self) -> &'static str {
        "Conv2D"
    }

    fn backward(&self, dy: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let dy = match &self.relu_out {
            // The fused ReLU's mask, in parallel chunks.
            Some(y) => fill(dy.shape(), |masked| {
                relu_backward(&y.values(), &dy.values(), masked)
            })?,
            None => dy.clone(),
        };
        self.gradients(&dy, needs)
    }

    fn backward_owned(&self, mut dy: Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        if let Some(y) = &self.relu_out {
            // Masked in place: no second buffer the size of the output.
            relu_backward_in_place(&y.values(), dy.as_slice_mut())?;
        }
        self.gradients(&dy, needs)
    }
}

impl Conv2dBackward {
    /// The gradients from `dy`, already masked by the fused ReLU.
    fn gradients(&self, dy: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let dyv = dy.values();
        let dx = if needs[0] {
            Some(fill(&self.g.input_shape(), |dx| {
                conv2d_backward_input(&self.g, &dyv, &self.w.values(), dx)
            })?)
        } else {
            None
        };
        let need_b = self.has_bias && needs.get(2).copied().unwrap_or(false);
        let (dw, db) = if needs[1] || need_b {
            let mut dw = vec![0.0f32; self.g.kernel_shape().iter().product()];
            let mut db = vec![0.0f32; if need_b { self.g.f } else { 0 }];
            conv2d_backward_filter(
                &self.g,
                &self.x.values(),
                &dyv,
                &mut dw,
                need_b.then_some(db.as_mut_slice()),
            )?;
            (
                if needs[1] {
                    Some(Tensor::from_vec(&self.g.kernel_shape(), dw)?)
                } else {
                    None
                },
                if need_b {
                    Some(Tensor::from_vec(&[self.g.f], db)?)
                } else {
                    None
                },
            )
        } else {
            (None, None)
        };
        let mut out = vec![dx, dw];
        if self.has_bias {
            out.push(db);
        }
        Ok(out)
    }
}

impl Var {
    /// 2-D convolution of this NHWC value with an HWIO kernel `w`
    /// `(kh, kw, in, out)`, an optional bias `(out,)`, `strides` and
    /// `padding`, and an optional fused ReLU.
    ///
    /// ```
    /// use convnet_autograd::{ops::{Epilogue, Padding}, Var};
    /// use convnet_tensor::Tensor;
    /// let x = Var::constant(Tensor::ones(&[1, 5, 5, 3]));
    /// let w = Var::constant(Tensor::ones(&[3, 3, 3, 8]));
    /// let y = x.conv2d(&w, None, (2, 2), Padding::Same, Epilogue::None).unwrap();
    /// assert_eq!(y.shape(), &[1, 3, 3, 8]);
    /// ```
    pub fn conv2d(
        &self,
        w: &Var,
        b: Option<&Var>,
        strides: (usize, usize),
        padding: Padding,
        epilogue: Epilogue,
    ) -> Result<Var> {
        self.conv2d_with(w, b, strides, padding, epilogue, Precision::Single)
    }

    /// [`Var::conv2d`] with the forward pass in the given [`Precision`]
    /// (the backward pass, if any, is in single precision).
    pub fn conv2d_with(
        &self,
        w: &Var,
        b: Option<&Var>,
        strides: (usize, usize),
        padding: Padding,
        epilogue: Epilogue,
        precision: Precision,
    ) -> Result<Var> {
        let op = "Conv2D";
        let g = geometry(op, self, w, b, strides, padding)?;
        let (xv, wv) = (self.value().values(), w.value().values());
        let bv = b.map(|b| b.value().values());
        // Written in full by the kernel: no zeroing pass first.
        let y = uninit_vec(g.output_shape().iter().product(), |out| {
            conv2d_forward_uninit_with(&g, &xv, &wv, bv.as_deref(), epilogue, out, precision)
        })?;
        let y = Tensor::from_vec(&g.output_shape(), y)?;
        let mut inputs = vec![self, w];
        if let Some(b) = b {
            inputs.push(b);
        }
        let relu_out = matches!(epilogue, Epilogue::Relu).then(|| y.clone());
        Var::from_op(op, &inputs, y, || Conv2dBackward {
            g,
            x: self.value().clone(),
            w: w.value().clone(),
            has_bias: b.is_some(),
            relu_out,
        })
    }
}

/// The geometry of convolving `x` (NHWC) by the HWIO kernel `w` with an
/// optional bias, refusing a kernel that is not rank 4 or a bias that is
/// not one value per filter (errors name `op`).
pub(super) fn geometry(
    op: &str,
    x: &Var,
    w: &Var,
    b: Option<&Var>,
    strides: (usize, usize),
    padding: Padding,
) -> Result<ConvGeometry> {
    let xs = x.value().nhwc(op)?;
    let ws: [usize; 4] = w.shape().try_into().map_err(|_| {
        TensorError::invalid_shape(
            op,
            w.shape(),
            "the kernel must be rank 4 (kernel_h, kernel_w, in_channels, filters)",
        )
    })?;
    let g = ConvGeometry::new(xs, ws, strides, padding)?;
    if let Some(b) = b {
        if b.shape() != [g.f] {
            return Err(TensorError::mismatch(
                op,
                b.shape(),
                &[g.f],
                "the bias must have one value per filter",
            ));
        }
    }
    Ok(g)
}
