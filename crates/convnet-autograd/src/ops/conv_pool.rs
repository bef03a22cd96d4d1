//! A 2-D convolution (optional bias, optional fused ReLU) followed by max
//! pooling, as one op: the convolution's output, four times the size of
//! the pooled one, is never kept (see `convnet_kernels::conv_pool`).
//!
//! Forward: `y = maxpool(act(x (*) w + b))`. Backward: the pooled gradient
//! goes to each window's argmax, masked by the ReLU (a pooled value of 0
//! passed nothing), then the two equations of convolution backprop,
//! `dx = col2im(dc w^T)` and `dw = im2col(x)^T dc`, `db = sum(dc)`.

use convnet_kernels::conv::Epilogue;
use convnet_kernels::conv_pool::{
    conv2d_max_pool_backward, conv2d_max_pool_forward, ConvPoolGeometry,
};
use convnet_kernels::Padding;
use convnet_tensor::{Result, Tensor};

use super::{fill, uninit_vec};
use crate::{is_grad_enabled, Backward, Var};

struct ConvPoolBackward {
    g: ConvPoolGeometry,
    epilogue: Epilogue,
    x: Tensor,
    w: Tensor,
    has_bias: bool,
    y: Tensor,
    argmax: Vec<u32>,
}

impl Backward for ConvPoolBackward {
    fn name(&self) -> &'static str {
        "Conv2D+MaxPooling2D"
    }

    fn backward(&self, dy: &Tensor, needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let c = &self.g.conv;
        let need_w = needs[1];
        let need_b = self.has_bias && needs.get(2).copied().unwrap_or(false);
        let mut dw = need_w.then(|| vec![0.0f32; c.kernel_shape().iter().product()]);
        let mut db = need_b.then(|| vec![0.0f32; c.f]);
        let (xv, wv, yv, dyv) = (
            self.x.values(),
            self.w.values(),
            self.y.values(),
            dy.values(),
        );
        let mut run = |dx: Option<&mut [f32]>| {
            conv2d_max_pool_backward(
                &self.g,
                &xv,
                &wv,
                self.epilogue,
                &yv,
                &self.argmax,
                &dyv,
                dx,
                dw.as_deref_mut(),
                db.as_deref_mut(),
            )
        };
        let dx = if needs[0] {
            Some(fill(&c.input_shape(), |dx| run(Some(dx)))?)
        } else {
            run(None)?;
            None
        };
        let mut out = vec![
            dx,
            dw.map(|dw| Tensor::from_vec(&c.kernel_shape(), dw))
                .transpose()?,
        ];
        if self.has_bias {
            out.push(db.map(|db| Tensor::from_vec(&[c.f], db)).transpose()?);
        }
        Ok(out)
    }
}

impl Var {
    /// 2-D convolution of this NHWC value with an HWIO kernel `w`, an
    /// optional bias `(out,)`, `strides` and `padding` and an optional
    /// fused ReLU, followed by max pooling with a `pool` window,
    /// `pool_strides` and `pool_padding`: the value of `conv2d` then
    /// `max_pool2d`, without keeping the convolution's output.
    ///
    /// ```
    /// use convnet_autograd::{ops::{Epilogue, Padding}, Var};
    /// use convnet_tensor::Tensor;
    /// let x = Var::constant(Tensor::ones(&[1, 8, 8, 3]));
    /// let w = Var::constant(Tensor::ones(&[3, 3, 3, 4]));
    /// let y = x
    ///     .conv2d_max_pool(
    ///         &w,
    ///         None,
    ///         ((1, 1), Padding::Valid),
    ///         Epilogue::Relu,
    ///         ((2, 2), (2, 2), Padding::Valid),
    ///     )
    ///     .unwrap();
    /// assert_eq!(y.shape(), &[1, 3, 3, 4]);
    /// ```
    #[allow(clippy::type_complexity)]
    pub fn conv2d_max_pool(
        &self,
        w: &Var,
        b: Option<&Var>,
        conv: ((usize, usize), Padding),
        epilogue: Epilogue,
        pool: ((usize, usize), (usize, usize), Padding),
    ) -> Result<Var> {
        let op = "Conv2D+MaxPooling2D";
        let cg = super::conv2d::geometry(op, self, w, b, conv.0, conv.1)?;
        let g = ConvPoolGeometry::new(cg, pool.0, pool.1, pool.2)?;
        let (xv, wv) = (self.value().values(), w.value().values());
        let bv = b.map(|b| b.value().values());
        let len = g.output_shape().iter().product();
        // Both outputs are written in full by the kernel: no zeroing pass.
        // The argmax only when the backward pass will need it.
        let record = is_grad_enabled()
            && [Some(self), Some(w), b]
                .iter()
                .flatten()
                .any(|v| v.requires_grad());
        let mut argmax = Vec::new();
        let y = uninit_vec(len, |y| {
            if record {
                argmax = uninit_vec(len, |a| {
                    conv2d_max_pool_forward(&g, &xv, &wv, bv.as_deref(), epilogue, y, Some(a))
                })?;
                Ok(())
            } else {
                conv2d_max_pool_forward(&g, &xv, &wv, bv.as_deref(), epilogue, y, None)
            }
        })?;
        let y = Tensor::from_vec(&g.output_shape(), y)?;
        let mut inputs = vec![self, w];
        if let Some(b) = b {
            inputs.push(b);
        }
        let saved = y.clone();
        Var::from_op(op, &inputs, y, || ConvPoolBackward {
            g,
            epilogue,
            x: self.value().clone(),
            w: w.value().clone(),
            has_bias: b.is_some(),
            y: saved,
            argmax,
        })
    }
}
