//! Pooling: max, average (padded cells excluded from the count, as
//! TensorFlow) and global average.

use convnet_kernels::pool::{
    avg_pool2d_backward, avg_pool2d_forward, global_avg_pool2d_backward, global_avg_pool2d_forward,
    max_pool2d_backward_uninit, max_pool2d_forward_uninit, PoolGeometry,
};
use convnet_kernels::Padding;
use convnet_tensor::{Result, Tensor};

use super::{fill, uninit_vec};
use crate::{Backward, Var};

struct MaxPoolBackward {
    g: PoolGeometry,
    argmax: Vec<u32>,
}

impl Backward for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "MaxPooling2D"
    }

    fn backward(&self, dy: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let g = &self.g;
        let shape = [g.n, g.h, g.w, g.c];
        // Written in full by the kernel, image by image: no zeroing pass.
        let dx = uninit_vec(shape.iter().product(), |dx| {
            max_pool2d_backward_uninit(g, &dy.values(), &self.argmax, dx)
        })?;
        Ok(vec![Some(Tensor::from_vec(&shape, dx)?)])
    }
}

struct AvgPoolBackward {
    g: PoolGeometry,
}

impl Backward for AvgPoolBackward {
    fn name(&self) -> &'static str {
        "AveragePooling2D"
    }

    fn backward(&self, dy: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let g = &self.g;
        let dx = fill(&[g.n, g.h, g.w, g.c], |dx| {
            avg_pool2d_backward(g, &dy.values(), dx)
        })?;
        Ok(vec![Some(dx)])
    }
}

struct GlobalAvgPoolBackward {
    shape: [usize; 4],
}

impl Backward for GlobalAvgPoolBackward {
    fn name(&self) -> &'static str {
        "GlobalAveragePooling2D"
    }

    fn backward(&self, dy: &Tensor, _needs: &[bool]) -> Result<Vec<Option<Tensor>>> {
        let [n, h, w, c] = self.shape;
        let dx = fill(&self.shape, |dx| {
            global_avg_pool2d_backward(n, h * w, c, &dy.values(), dx)
        })?;
        Ok(vec![Some(dx)])
    }
}

impl Var {
    /// Max pooling of an NHWC value with a `pool` window, `strides` and `padding`.
    pub fn max_pool2d(
        &self,
        pool: (usize, usize),
        strides: (usize, usize),
        padding: Padding,
    ) -> Result<Var> {
        let g = PoolGeometry::new(self.value().nhwc("MaxPooling2D")?, pool, strides, padding)?;
        // Both outputs are written in full by the kernel: no zeroing pass.
        let len = g.output_shape().iter().product();
        let mut argmax = Vec::new();
        let y = uninit_vec(len, |y| {
            argmax = uninit_vec(len, |argmax| {
                max_pool2d_forward_uninit(&g, &self.value().values(), y, argmax)
            })?;
            Ok(())
        })?;
        let y = Tensor::from_vec(&g.output_shape(), y)?;
        Var::from_op("MaxPooling2D", &[self], y, || MaxPoolBackward { g, argmax })
    }

    /// Average pooling of an NHWC value; padded cells do not count.
    pub fn avg_pool2d(
        &self,
        pool: (usize, usize),
        strides: (usize, usize),
        padding: Padding,
    ) -> Result<Var> {
        let g = PoolGeometry::new(
            self.value().nhwc("AveragePooling2D")?,
            pool,
            strides,
            padding,
        )?;
        let y = fill(&g.output_shape(), |y| {
            avg_pool2d_forward(&g, &self.value().values(), y)
        })?;
        Var::from_op("AveragePooling2D", &[self], y, || AvgPoolBackward { g })
    }

    /// Global average pooling `(n, h, w, c) -> (n, c)`.
    pub fn global_avg_pool2d(&self) -> Result<Var> {
        let shape = self.value().nhwc("GlobalAveragePooling2D")?;
        let [n, h, w, c] = shape;
        let y = fill(&[n, c], |y| {
            global_avg_pool2d_forward(n, h * w, c, &self.value().values(), y)
        })?;
        Var::from_op("GlobalAveragePooling2D", &[self], y, || {
            GlobalAvgPoolBackward { shape }
        })
    }
}
