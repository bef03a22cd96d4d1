//! 2-D convolution, NHWC input, HWIO kernel, by tiled im2col + GEMM.
//!
//! Forward: `y = x (*) w + b`. Backward, the two equations of convolution
//! backprop: `dx = col2im(dy * w^T)` and `dw = im2col(x)^T * dy` (plus
//! `db = sum(dy)`).

use crate::{Padding, Pads, Result, TensorError};

/// A fused elementwise epilogue applied while an output tile is in cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Epilogue {
    /// Nothing (bias only, if any).
    #[default]
    None,
    /// `max(0, .)` after the bias.
    Relu,
}

/// The sizes of one convolution: input `(n, h, w, c)`, kernel `(kh, kw, c, f)`,
/// output `(n, oh, ow, f)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Batch size.
    pub n: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Input channels.
    pub c: usize,
    /// Kernel height.
    pub kh: usize,
    /// Kernel width.
    pub kw: usize,
    /// Output channels (filters).
    pub f: usize,
    /// Vertical stride.
    pub sh: usize,
    /// Horizontal stride.
    pub sw: usize,
    /// Resolved padding.
    pub pads: Pads,
    /// Output height.
    pub oh: usize,
    /// Output width.
    pub ow: usize,
}

impl ConvGeometry {
    /// The geometry of an NHWC `input` shape convolved with an HWIO `kernel`
    /// shape. Refuses zero sizes, zero strides, mismatched channel counts and
    /// kernels larger than the padded input, naming both shapes.
    pub fn new(
        input: [usize; 4],
        kernel: [usize; 4],
        strides: (usize, usize),
        padding: Padding,
    ) -> Result<Self> {
        let op = "Conv2D";
        let [n, h, w, c] = input;
        let [kh, kw, kc, f] = kernel;
        if kc != c {
            return Err(TensorError::mismatch(
                op,
                &input,
                &kernel,
                format!("the kernel expects {kc} input channels, the input has {c}"),
            ));
        }
        if n == 0 || c == 0 || f == 0 {
            return Err(TensorError::mismatch(
                op,
                &input,
                &kernel,
                "batch, channel and filter counts must be positive",
            ));
        }
        let (pads, oh, ow) =
            padding
                .resolve(op, (h, w), (kh, kw), strides)
                .map_err(|e| match e {
                    TensorError::InvalidArgument { op, message } => TensorError::InvalidArgument {
                        op,
                        message: format!("{message}; input {:?}, kernel {:?}", input, kernel),
                    },
                    other => other,
                })?;
        Ok(ConvGeometry {
            n,
            h,
            w,
            c,
            kh,
            kw,
            f,
            sh: strides.0,
            sw: strides.1,
            pads,
            oh,
            ow,
        })
    }

    /// Input shape `(n, h, w, c)`.
    pub fn input_shape(&self) -> [usize; 4] {
        [self.n, self.h, self.w, self.c]
    }

    /// Kernel shape `(kh, kw, c, f)`.
    pub fn kernel_shape(&self) -> [usize; 4] {
        [self.kh, self.kw, self.c, self.f]
    }

    /// Output shape `(n, oh, ow, f)`.
    pub fn output_shape(&self) -> [usize; 4] {
        [self.n, self.oh, self.ow, self.f]
    }

    /// Rows of the im2col matrix / output matrix: `n * oh * ow`.
    pub fn rows(&self) -> usize {
        self.n * self.oh * self.ow
    }

    /// Columns of the im2col matrix: `kh * kw * c`.
    pub fn patch_len(&self) -> usize {
        self.kh * self.kw * self.c
    }

    /// Floating-point operations of one forward pass, `2*N*OH*OW*KH*KW*C*F`.
    pub fn flops(&self) -> u64 {
        2 * (self.rows() as u64) * (self.patch_len() as u64) * self.f as u64
    }
}

/// Forward convolution into `out` (`(n, oh, ow, f)`, overwritten), with an
/// optional bias `(f,)` and a fused epilogue.
pub fn conv2d_forward(
    g: &ConvGeometry,
    input: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
) -> Result<()> {
    let _ = (g, input, kernel, bias, epilogue, out);
    todo!("conv2d_forward")
}

/// Gradient with respect to the input: `dx` (`(n, h, w, c)`, overwritten)
/// from `dy` (`(n, oh, ow, f)`) and the kernel.
pub fn conv2d_backward_input(
    g: &ConvGeometry,
    dy: &[f32],
    kernel: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    let _ = (g, dy, kernel, dx);
    todo!("conv2d_backward_input")
}

/// Gradient with respect to the kernel, `dkernel` (`(kh, kw, c, f)`,
/// overwritten), and optionally the bias, `dbias` (`(f,)`, overwritten).
pub fn conv2d_backward_filter(
    g: &ConvGeometry,
    input: &[f32],
    dy: &[f32],
    dkernel: &mut [f32],
    dbias: Option<&mut [f32]>,
) -> Result<()> {
    let _ = (g, input, dy, dkernel, dbias);
    todo!("conv2d_backward_filter")
}
