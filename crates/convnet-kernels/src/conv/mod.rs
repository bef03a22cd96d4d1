//! 2-D convolution, NHWC input, HWIO kernel, by tiled im2col + GEMM.
//!
//! Forward: `y = x (*) w + b`. Backward, the two equations of convolution
//! backprop: `dx = col2im(dy * w^T)` and `dw = im2col(x)^T * dy` (plus
//! `db = sum(dy)`).

use rayon::prelude::*;

use crate::gemm::{sgemm, Layout, Parallelism};
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

/// Rows of the output matrix per tile: one tile's im2col block
/// (`TILE_ROWS x kh*kw*c` floats) stays in L2.
const TILE_ROWS: usize = 1024;

/// Number of partial sums of the filter gradient: fixed, so the result is
/// the same whatever the thread count.
const FILTER_PARTIALS: usize = 8;

impl ConvGeometry {
    /// True when the convolution is a plain GEMM on the input rows (1x1
    /// kernel, stride 1, no padding).
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.sh == 1 && self.sw == 1 && self.pads == Pads::default()
    }

    fn check(&self, op: &str, bufs: &[(&str, [usize; 4], usize)]) -> Result<()> {
        for (what, shape, len) in bufs {
            TensorError::check_len(op, what, shape, *len)?;
        }
        Ok(())
    }
}

/// Fill `cols` (`rows x kh*kw*c`) with the patches of output rows
/// `r0..r0+rows` (zeros where the window covers padding).
fn im2col_tile(g: &ConvGeometry, input: &[f32], r0: usize, rows: usize, cols: &mut [f32]) {
    let k = g.patch_len();
    let c = g.c;
    let per_img = g.oh * g.ow;
    for (i, patch) in cols[..rows * k].chunks_mut(k).enumerate() {
        let r = r0 + i;
        let (img, rem) = (r / per_img, r % per_img);
        let (oy, ox) = (rem / g.ow, rem % g.ow);
        let base = img * g.h * g.w * c;
        for ky in 0..g.kh {
            let iy = (oy * g.sh + ky) as isize - g.pads.top as isize;
            let row = &mut patch[ky * g.kw * c..(ky + 1) * g.kw * c];
            if iy < 0 || iy >= g.h as isize {
                row.fill(0.0);
                continue;
            }
            let iy = iy as usize;
            let ix0 = (ox * g.sw) as isize - g.pads.left as isize;
            if ix0 >= 0 && ix0 as usize + g.kw <= g.w {
                // The whole row of the window is inside: one copy.
                let start = base + (iy * g.w + ix0 as usize) * c;
                row.copy_from_slice(&input[start..start + g.kw * c]);
                continue;
            }
            for kx in 0..g.kw {
                let ix = ix0 + kx as isize;
                let dst = &mut row[kx * c..(kx + 1) * c];
                if ix < 0 || ix >= g.w as isize {
                    dst.fill(0.0);
                } else {
                    let start = base + (iy * g.w + ix as usize) * c;
                    dst.copy_from_slice(&input[start..start + c]);
                }
            }
        }
    }
}

/// Add the patches `dcols` (`rows x kh*kw*c`) of output rows `r0..r0+rows`
/// back into the input gradient of image `img` (`dx_img`, `h x w x c`).
fn col2im_tile(g: &ConvGeometry, dcols: &[f32], r0: usize, rows: usize, dx_img: &mut [f32]) {
    let k = g.patch_len();
    let c = g.c;
    let per_img = g.oh * g.ow;
    for (i, patch) in dcols[..rows * k].chunks(k).enumerate() {
        let rem = (r0 + i) % per_img;
        let (oy, ox) = (rem / g.ow, rem % g.ow);
        for ky in 0..g.kh {
            let iy = (oy * g.sh + ky) as isize - g.pads.top as isize;
            if iy < 0 || iy >= g.h as isize {
                continue;
            }
            let iy = iy as usize;
            for kx in 0..g.kw {
                let ix = (ox * g.sw + kx) as isize - g.pads.left as isize;
                if ix < 0 || ix >= g.w as isize {
                    continue;
                }
                let dst = &mut dx_img[(iy * g.w + ix as usize) * c..][..c];
                let src = &patch[(ky * g.kw + kx) * c..][..c];
                dst.iter_mut().zip(src).for_each(|(d, &s)| *d += s);
            }
        }
    }
}

fn epilogue_tile(out: &mut [f32], f: usize, bias: Option<&[f32]>, epilogue: Epilogue) {
    match (bias, epilogue) {
        (None, Epilogue::None) => {}
        (Some(b), Epilogue::None) => out
            .chunks_mut(f)
            .for_each(|row| row.iter_mut().zip(b).for_each(|(v, &b)| *v += b)),
        (Some(b), Epilogue::Relu) => out.chunks_mut(f).for_each(|row| {
            row.iter_mut()
                .zip(b)
                .for_each(|(v, &b)| *v = (*v + b).max(0.0))
        }),
        (None, Epilogue::Relu) => out.iter_mut().for_each(|v| *v = v.max(0.0)),
    }
}

/// Forward convolution into `out` (`(n, oh, ow, f)`, overwritten), with an
/// optional bias `(f,)` and a fused epilogue.
///
/// The output matrix (`n*oh*ow` rows by `f` columns) is cut into row tiles;
/// rayon hands whole tiles to threads, each building the tile's im2col block
/// in its own buffer, multiplying it by the kernel matrix straight into its
/// rows of the output, and applying bias and activation while the tile is
/// in cache. No whole-batch im2col matrix is ever built.
pub fn conv2d_forward(
    g: &ConvGeometry,
    input: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
) -> Result<()> {
    g.check(
        "Conv2D",
        &[
            ("input", g.input_shape(), input.len()),
            ("kernel", g.kernel_shape(), kernel.len()),
            ("output", g.output_shape(), out.len()),
        ],
    )?;
    if let Some(b) = bias {
        TensorError::check_len("Conv2D", "bias", &[g.f], b.len())?;
    }
    let (k, f, rows) = (g.patch_len(), g.f, g.rows());
    if rows == 0 {
        return Ok(());
    }
    let pointwise = g.is_pointwise();
    out.par_chunks_mut(TILE_ROWS * f).enumerate().for_each_init(
        Vec::new,
        |cols: &mut Vec<f32>, (t, out_tile)| {
            let r0 = t * TILE_ROWS;
            let n_rows = out_tile.len() / f;
            let a: &[f32] = if pointwise {
                &input[r0 * k..(r0 + n_rows) * k]
            } else {
                cols.resize(TILE_ROWS * k, 0.0);
                im2col_tile(g, input, r0, n_rows, cols);
                &cols[..n_rows * k]
            };
            sgemm(
                n_rows,
                k,
                f,
                a,
                Layout::RowMajor,
                kernel,
                Layout::RowMajor,
                out_tile,
                false,
                Parallelism::Sequential,
            );
            epilogue_tile(out_tile, f, bias, epilogue);
        },
    );
    Ok(())
}

/// Gradient with respect to the input: `dx` (`(n, h, w, c)`, overwritten)
/// from `dy` (`(n, oh, ow, f)`) and the kernel: `dcols = dy W^T` per tile,
/// then col2im adds the patches back. Threads take whole images, so no two
/// threads add into the same pixels.
pub fn conv2d_backward_input(
    g: &ConvGeometry,
    dy: &[f32],
    kernel: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    g.check(
        "Conv2D backward (input)",
        &[
            ("output gradient", g.output_shape(), dy.len()),
            ("kernel", g.kernel_shape(), kernel.len()),
            ("input gradient", g.input_shape(), dx.len()),
        ],
    )?;
    let (k, f) = (g.patch_len(), g.f);
    let (img_in, per_img) = (g.h * g.w * g.c, g.oh * g.ow);
    if img_in == 0 {
        return Ok(());
    }
    if g.is_pointwise() {
        // dx rows = dy rows x W^T, tiled over rows.
        dx.par_chunks_mut(TILE_ROWS * k)
            .enumerate()
            .for_each(|(t, dx_tile)| {
                let r0 = t * TILE_ROWS;
                let n_rows = dx_tile.len() / k;
                sgemm(
                    n_rows,
                    f,
                    k,
                    &dy[r0 * f..(r0 + n_rows) * f],
                    Layout::RowMajor,
                    kernel,
                    Layout::Transposed,
                    dx_tile,
                    false,
                    Parallelism::Sequential,
                );
            });
        return Ok(());
    }
    dx.par_chunks_mut(img_in).enumerate().for_each_init(
        Vec::new,
        |dcols: &mut Vec<f32>, (img, dx_img)| {
            dx_img.fill(0.0);
            dcols.resize(TILE_ROWS.min(per_img) * k, 0.0);
            let mut start = 0;
            while start < per_img {
                let n_rows = TILE_ROWS.min(per_img - start);
                let r0 = img * per_img + start;
                sgemm(
                    n_rows,
                    f,
                    k,
                    &dy[r0 * f..(r0 + n_rows) * f],
                    Layout::RowMajor,
                    kernel,
                    Layout::Transposed,
                    dcols,
                    false,
                    Parallelism::Sequential,
                );
                col2im_tile(g, dcols, r0, n_rows, dx_img);
                start += n_rows;
            }
        },
    );
    Ok(())
}

/// Gradient with respect to the kernel, `dkernel` (`(kh, kw, c, f)`,
/// overwritten), and optionally the bias, `dbias` (`(f,)`, overwritten).
///
/// `dW = sum over tiles of im2col(tile)^T dY(tile)`. The tiles are split
/// into a fixed number of contiguous groups, each summed by one task into
/// its own partial; the partials are added in order at the end, so the
/// result is bitwise the same with any number of threads.
pub fn conv2d_backward_filter(
    g: &ConvGeometry,
    input: &[f32],
    dy: &[f32],
    dkernel: &mut [f32],
    dbias: Option<&mut [f32]>,
) -> Result<()> {
    g.check(
        "Conv2D backward (kernel)",
        &[
            ("input", g.input_shape(), input.len()),
            ("output gradient", g.output_shape(), dy.len()),
            ("kernel gradient", g.kernel_shape(), dkernel.len()),
        ],
    )?;
    if let Some(db) = dbias.as_deref() {
        TensorError::check_len(
            "Conv2D backward (kernel)",
            "bias gradient",
            &[g.f],
            db.len(),
        )?;
    }
    let (k, f, rows) = (g.patch_len(), g.f, g.rows());
    let tiles = rows.div_ceil(TILE_ROWS);
    let groups = FILTER_PARTIALS.min(tiles.max(1));
    let pointwise = g.is_pointwise();
    let want_bias = dbias.is_some();
    let partials: Vec<(Vec<f32>, Vec<f64>)> = (0..groups)
        .into_par_iter()
        .map(|grp| {
            let mut dw = vec![0.0f32; k * f];
            let mut db = vec![0.0f64; if want_bias { f } else { 0 }];
            let mut cols = Vec::new();
            for t in grp * tiles / groups..(grp + 1) * tiles / groups {
                let r0 = t * TILE_ROWS;
                let n_rows = TILE_ROWS.min(rows - r0);
                let a: &[f32] = if pointwise {
                    &input[r0 * k..(r0 + n_rows) * k]
                } else {
                    cols.resize(TILE_ROWS * k, 0.0);
                    im2col_tile(g, input, r0, n_rows, &mut cols);
                    &cols[..n_rows * k]
                };
                let dy_tile = &dy[r0 * f..(r0 + n_rows) * f];
                // (k x rows) x (rows x f): A stored rows x k, i.e. transposed.
                sgemm(
                    k,
                    n_rows,
                    f,
                    a,
                    Layout::Transposed,
                    dy_tile,
                    Layout::RowMajor,
                    &mut dw,
                    true,
                    Parallelism::Sequential,
                );
                if want_bias {
                    for row in dy_tile.chunks(f) {
                        db.iter_mut().zip(row).for_each(|(a, &v)| *a += v as f64);
                    }
                }
            }
            (dw, db)
        })
        .collect();
    dkernel.fill(0.0);
    let mut db_total = vec![0.0f64; if want_bias { f } else { 0 }];
    for (dw, db) in &partials {
        dkernel.iter_mut().zip(dw).for_each(|(a, &v)| *a += v);
        db_total.iter_mut().zip(db).for_each(|(a, &v)| *a += v);
    }
    if let Some(out) = dbias {
        out.iter_mut()
            .zip(&db_total)
            .for_each(|(o, &v)| *o = v as f32);
    }
    Ok(())
}
