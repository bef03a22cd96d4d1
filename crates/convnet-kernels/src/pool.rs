//! Max and average pooling (any window, stride and padding) and global
//! average pooling, NHWC.

use crate::{Padding, Pads, Result, TensorError};

/// The sizes of one pooling: input `(n, h, w, c)`, window `ph x pw`,
/// output `(n, oh, ow, c)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    /// Batch size.
    pub n: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Channels.
    pub c: usize,
    /// Window height.
    pub ph: usize,
    /// Window width.
    pub pw: usize,
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

impl PoolGeometry {
    /// The geometry of a `pool` window with `strides` over an NHWC `input`.
    pub fn new(
        input: [usize; 4],
        pool: (usize, usize),
        strides: (usize, usize),
        padding: Padding,
    ) -> Result<Self> {
        let [n, h, w, c] = input;
        if n == 0 || c == 0 {
            return Err(TensorError::invalid_shape(
                "Pooling2D",
                &input,
                "batch and channel counts must be positive",
            ));
        }
        let (pads, oh, ow) = padding.resolve("Pooling2D", (h, w), pool, strides)?;
        Ok(PoolGeometry {
            n,
            h,
            w,
            c,
            ph: pool.0,
            pw: pool.1,
            sh: strides.0,
            sw: strides.1,
            pads,
            oh,
            ow,
        })
    }

    /// Output shape `(n, oh, ow, c)`.
    pub fn output_shape(&self) -> [usize; 4] {
        [self.n, self.oh, self.ow, self.c]
    }
}

/// Max pooling. `argmax` (same length as `y`) receives, for each output, the
/// flat index into `x` of the element chosen (padded cells never win).
pub fn max_pool2d_forward(
    g: &PoolGeometry,
    x: &[f32],
    y: &mut [f32],
    argmax: &mut [u32],
) -> Result<()> {
    let _ = (g, x, y, argmax);
    todo!()
}

/// Gradient of max pooling: `dx` (overwritten) gets each `dy` at its argmax.
pub fn max_pool2d_backward(
    g: &PoolGeometry,
    dy: &[f32],
    argmax: &[u32],
    dx: &mut [f32],
) -> Result<()> {
    let _ = (g, dy, argmax, dx);
    todo!()
}

/// Average pooling; padded cells are excluded from the count (TensorFlow's rule).
pub fn avg_pool2d_forward(g: &PoolGeometry, x: &[f32], y: &mut [f32]) -> Result<()> {
    let _ = (g, x, y);
    todo!()
}

/// Gradient of average pooling: `dx` overwritten.
pub fn avg_pool2d_backward(g: &PoolGeometry, dy: &[f32], dx: &mut [f32]) -> Result<()> {
    let _ = (g, dy, dx);
    todo!()
}

/// Global average pooling `(n, h, w, c) -> (n, c)`; `hw = h * w`.
pub fn global_avg_pool2d_forward(
    n: usize,
    hw: usize,
    c: usize,
    x: &[f32],
    y: &mut [f32],
) -> Result<()> {
    let _ = (n, hw, c, x, y);
    todo!()
}

/// Gradient of global average pooling: `dx` `(n, hw, c)` overwritten.
pub fn global_avg_pool2d_backward(
    n: usize,
    hw: usize,
    c: usize,
    dy: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    let _ = (n, hw, c, dy, dx);
    todo!()
}
