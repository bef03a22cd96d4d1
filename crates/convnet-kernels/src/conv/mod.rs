//! 2-D convolution, NHWC input, HWIO kernel, by tiled im2col + GEMM.
//!
//! Forward: `y = x (*) w + b`. Backward, the two equations of convolution
//! backprop: `dx = col2im(dy * w^T)` and `dw = im2col(x)^T * dy` (plus
//! `db = sum(dy)`).
//!
//! The output matrix (`n*oh*ow` rows by `f` columns) is cut into row tiles
//! small enough that one tile's im2col block stays in L2; rayon hands whole
//! tiles to threads, each running a single-threaded GEMM. No whole-batch
//! im2col matrix is ever built. The files beside this one hold one concept
//! each: im2col/col2im on tiles, the forward pass, the two gradients, a
//! direct forward kernel for layers with few input channels (the first
//! layer of an image model) and the vector lanes it is written in,
//! Winograd F(2x2, 3x3) / F(4x4, 3x3) for 3x3 stride-1 layers with enough
//! channels (all three passes) and F(2x2, 5x5) for the forward pass of 5x5
//! ones, Winograd F(4, 7) or F(7, 7) along the taps for the
//! forward pass of 1x7 / 7x1 stride-1 layers with enough channels, and a
//! forward pass for other 1xk / kx1 layers on small maps that skips the
//! taps on padding. [`Precision::Half`] runs the
//! im2col + GEMM path (1x1 layers included) through a half-precision GEMM
//! on CPUs with AVX512-FP16 (`crate::gemm_f16`).

mod backward_filter;
mod backward_input;
mod direct;
mod direct_filter;
mod forward;
mod im2col;
mod simd;
mod taps;
mod winograd;
mod winograd1d;

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

impl ConvGeometry {
    /// True when the convolution is a plain GEMM on the input rows (1x1
    /// kernel, stride 1, no padding).
    pub fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.sh == 1 && self.sw == 1 && self.pads == Pads::default()
    }

    /// True when the default [`Tuning`] computes the forward pass and the
    /// filter gradient with the direct kernels (few input channels): their
    /// cost per image does not depend on how many images a call gets, so a
    /// caller may hand them one image at a time.
    pub(crate) fn uses_direct(&self) -> bool {
        Tuning::for_geometry(self).direct && direct::applies(self)
    }

    /// Refuses a hand-made geometry whose sizes do not fit together (the
    /// fields are public), then checks each buffer's length.
    fn check(&self, op: &str, bufs: &[(&str, &[usize], usize)]) -> Result<()> {
        let out = |size: usize, lo: usize, hi: usize, k: usize, s: usize| {
            let padded = size + lo + hi;
            (k > 0 && s > 0 && padded >= k).then(|| (padded - k) / s + 1)
        };
        let (p, oh, ow) = (self.pads, self.oh, self.ow);
        if out(self.h, p.top, p.bottom, self.kh, self.sh) != Some(oh)
            || out(self.w, p.left, p.right, self.kw, self.sw) != Some(ow)
        {
            return Err(TensorError::invalid(
                op,
                format!(
                    "inconsistent geometry: input {:?}, kernel {:?}, strides ({}, {}), {:?} \
                     do not give output {:?}",
                    self.input_shape(),
                    self.kernel_shape(),
                    self.sh,
                    self.sw,
                    p,
                    self.output_shape()
                ),
            ));
        }
        for (what, shape, len) in bufs {
            TensorError::check_len(op, what, shape, *len)?;
        }
        Ok(())
    }
}

/// How a convolution is cut up and which inner kernels it uses. Chosen by
/// [`Tuning::for_geometry`]; tests and benchmarks may override it (through
/// the `*_tuned` functions) to exercise several tiles or every path on small
/// shapes. Not a stable API.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Output rows per tile (at least 1).
    pub tile_rows: usize,
    /// Use the direct kernels for few input channels where they apply:
    /// the forward pass and the filter gradient (the input gradient uses
    /// im2col + GEMM or Winograd).
    pub direct: bool,
    /// Let the direct kernel use the CPU's vector extensions when present
    /// (`false`: the portable code only).
    pub simd: bool,
    /// Use Winograd (F(2x2, 3x3), F(4x4, 3x3) or F(6x6, 3x3), see
    /// `winograd_tile`) for the forward pass of 3x3 stride-1 convolutions,
    /// and F(2x2, 5x5) or F(4x4, 5x5) for that of 5x5 stride-1 ones.
    pub winograd: bool,
    /// The same for the input gradient.
    pub winograd_input: bool,
    /// The same for the filter gradient.
    pub winograd_filter: bool,
    /// Winograd's output tile side: 2 for F(2x2, 3x3), 4 for F(4x4, 3x3)
    /// (1.8x fewer multiplications, about 10x the rounding error), 6 for
    /// F(6x6, 3x3) (1.27x fewer again, about twice F(4x4, 3x3)'s error;
    /// the filter gradient takes 4 instead), 0 to choose by shape. 5x5
    /// layers take 2 or 4 (6 means 4).
    pub winograd_tile: usize,
    /// Use Winograd F(4, 7) or F(7, 7) along the taps for the forward pass
    /// of 1x7 and 7x1 stride-1 convolutions (10 multiplications per 4
    /// outputs instead of 28, or 13 per 7 instead of 49), with at least 16
    /// channels and filters.
    pub winograd_1d: bool,
    /// Compute the forward pass of 1xk / kx1 stride-1 layers on small maps
    /// (where an eighth or more of the im2col taps fall on padding) one
    /// GEMM per output column (row), over only the taps inside the image.
    pub taps: bool,
    /// Compute the im2col + GEMM forward pass (1x1 layers included) in
    /// half precision ([`Precision::Half`]) where the CPU can; Winograd and
    /// the direct kernels stay in single precision.
    pub half: bool,
    /// Compute the im2col + GEMM forward pass (1x1 layers included) with
    /// the weights packed once per call for every tile, where the CPU's
    /// widest vectors are AVX2 (elsewhere the `gemm` crate's kernel).
    pub packed: bool,
}

/// Bytes of one tile's im2col block that should stay in L2 (half of a
/// 512 KiB-1 MiB L2, leaving room for the packed kernel and the output rows).
pub(super) const TILE_BYTES: usize = 256 * 1024;

/// Fewest rows per tile: each tile's GEMM packs the whole kernel matrix
/// again, which with wide patches (InceptionV3's 3x3 stride-2 288 -> 384
/// convolution has a 4 MB kernel matrix) cost as much as 64 rows of
/// multiplication. With at least 256 rows, InceptionV3's layers ran at
/// (GFLOP/s, one call on both cores, minimum of 40, two runs alike):
/// 3x3/2 288 -> 384 254 -> 288, 7x1 192 -> 192 264 -> 288, 1x7 160 -> 160
/// 260 -> 288, 5x5 48 -> 64 259 -> 268, 1x1 768 -> 192 297 -> 321.
const MIN_TILE_ROWS: usize = 256;

/// Number of partial sums of the filter gradient: fixed, so the result is
/// the same whatever the thread count.
const FILTER_PARTIALS: usize = 8;

impl Tuning {
    /// The default choice for `g`.
    pub fn for_geometry(g: &ConvGeometry) -> Self {
        let k = g.patch_len().max(1);
        let tile_rows = (TILE_BYTES / (4 * k)).clamp(MIN_TILE_ROWS, 4096);
        let (winograd, winograd_input, winograd_filter) = winograd::default_passes(g);
        Tuning {
            tile_rows,
            direct: true,
            simd: true,
            winograd,
            winograd_input,
            winograd_filter,
            winograd_tile: 0,
            winograd_1d: winograd1d::applies(g),
            taps: true,
            half: false,
            packed: true,
        }
    }
}

const FWD: &str = "Conv2D";
const BWD_INPUT: &str = "Conv2D backward (input)";
const BWD_FILTER: &str = "Conv2D backward (kernel)";

/// Forward convolution into `out` (`(n, oh, ow, f)`, overwritten), with an
/// optional bias `(f,)` and a fused epilogue.
///
/// `input` is NHWC `(n, h, w, c)`, `kernel` HWIO `(kh, kw, c, f)`. Wrong
/// buffer lengths are refused with a [`TensorError::LengthMismatch`] naming
/// the buffer.
///
/// The output matrix (`n*oh*ow` rows by `f` columns) is cut into row tiles;
/// rayon hands whole tiles to threads, each building the tile's im2col block
/// in its own buffer, multiplying it by the kernel matrix straight into its
/// rows of the output, and applying bias and activation while the tile is
/// in cache. 1x1 stride-1 unpadded convolutions multiply the input rows
/// directly; layers with few input channels use a direct kernel.
pub fn conv2d_forward(
    g: &ConvGeometry,
    input: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
) -> Result<()> {
    conv2d_forward_tuned(
        g,
        input,
        kernel,
        bias,
        epilogue,
        out,
        Tuning::for_geometry(g),
    )
}

/// [`conv2d_forward`] into a buffer that need not be initialised (the
/// spare capacity of a fresh `Vec`): on `Ok`, every element of `out` has
/// been written, so a caller may `set_len` over it and skip zeroing a
/// buffer the kernels overwrite anyway.
///
/// ```
/// use convnet_kernels::conv::{conv2d_forward_uninit, ConvGeometry, Epilogue};
/// use convnet_kernels::Padding;
/// let g = ConvGeometry::new([1, 4, 4, 1], [3, 3, 1, 2], (1, 1), Padding::Valid).unwrap();
/// let (x, w) = (vec![1.0f32; 16], vec![0.5f32; 18]);
/// let mut y: Vec<f32> = Vec::with_capacity(8);
/// conv2d_forward_uninit(&g, &x, &w, None, Epilogue::None, &mut y.spare_capacity_mut()[..8]).unwrap();
/// // SAFETY: the call returned `Ok`, so all 8 elements were written.
/// unsafe { y.set_len(8) };
/// assert_eq!(y, vec![4.5f32; 8]);
/// ```
pub fn conv2d_forward_uninit(
    g: &ConvGeometry,
    input: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [std::mem::MaybeUninit<f32>],
) -> Result<()> {
    conv2d_forward_uninit_with(g, input, kernel, bias, epilogue, out, Precision::Single)
}

/// [`conv2d_forward_uninit`] in the given [`Precision`].
pub fn conv2d_forward_uninit_with(
    g: &ConvGeometry,
    input: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [std::mem::MaybeUninit<f32>],
    precision: Precision,
) -> Result<()> {
    // SAFETY: `MaybeUninit<f32>` has the layout of `f32`. Every path of the
    // forward pass stores each output element before anything reads it:
    // the GEMM runs without accumulating (it does not read its output),
    // the half-precision GEMM stores every row and column of its blocks
    // (and a tile it computes again goes through the GEMM), the direct
    // kernels store their register blocks, Winograd's output transform
    // stores every pixel of every band (tests fill the buffer with NaN
    // first and find none left); only then do the epilogues read.
    let out = unsafe { &mut *(out as *mut [std::mem::MaybeUninit<f32>] as *mut [f32]) };
    conv2d_forward_with(g, input, kernel, bias, epilogue, out, precision)
}

/// The arithmetic of a forward convolution ([`conv2d_forward_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// `f32` throughout.
    #[default]
    Single,
    /// For layers computed by im2col + GEMM (1x1 layers, strided and
    /// larger kernels: not the 3x3, 5x5, 1x7 and 7x1 stride-1 layers that
    /// Winograd computes, nor the direct kernels of the first layer): inputs and
    /// weights rounded to IEEE half precision, products summed in half
    /// precision 64 at a time, those sums in `f32`. About 1.3-1.6x the
    /// speed of `f32` on CPUs with AVX512-FP16 (Intel Sapphire Rapids and
    /// later), at the cost of errors of about 1e-3 of the outputs' size;
    /// elsewhere, and for weights beyond half precision's range, the same
    /// as `Single`. A tile whose outputs overflow half precision is
    /// computed again in `f32`.
    Half,
}

/// [`conv2d_forward`] in the given [`Precision`].
///
/// ```
/// use convnet_kernels::conv::{conv2d_forward_with, ConvGeometry, Epilogue, Precision};
/// use convnet_kernels::Padding;
/// let g = ConvGeometry::new([1, 2, 2, 3], [1, 1, 3, 2], (1, 1), Padding::Valid).unwrap();
/// let (x, w) = (vec![0.5f32; 12], vec![0.25f32; 6]);
/// let mut y = vec![0.0; 8];
/// conv2d_forward_with(&g, &x, &w, None, Epilogue::Relu, &mut y, Precision::Half).unwrap();
/// // 0.5 and 0.25 are exact in half precision, and so is the sum.
/// assert_eq!(y, vec![0.375f32; 8]);
/// ```
pub fn conv2d_forward_with(
    g: &ConvGeometry,
    input: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
    precision: Precision,
) -> Result<()> {
    let tuning = Tuning {
        half: precision == Precision::Half,
        ..Tuning::for_geometry(g)
    };
    conv2d_forward_tuned(g, input, kernel, bias, epilogue, out, tuning)
}

/// [`conv2d_forward`] with an explicit [`Tuning`].
#[doc(hidden)]
pub fn conv2d_forward_tuned(
    g: &ConvGeometry,
    input: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
    tuning: Tuning,
) -> Result<()> {
    g.check(
        FWD,
        &[
            ("input", &g.input_shape(), input.len()),
            ("kernel", &g.kernel_shape(), kernel.len()),
            ("output", &g.output_shape(), out.len()),
        ],
    )?;
    if let Some(b) = bias {
        TensorError::check_len(FWD, "bias", &[g.f], b.len())?;
    }
    forward::run(g, input, kernel, bias, epilogue, out, tuning);
    Ok(())
}

/// What consumes each band of a banded forward pass: the band's item, its
/// output rows `[first, end)` (numbered through the batch) and their values.
pub(crate) type BandSink<'a, S> = dyn Fn(S, (usize, usize), &[f32]) + Sync + 'a;

/// The bands the default forward pass computes `g` in, when it runs
/// through Winograd (`None` otherwise): each band's output rows `[first,
/// end)`, numbered through the batch (`image * oh + row`), in order,
/// covering every row once. [`conv2d_forward_bands`] hands them out.
pub(crate) fn forward_bands(g: &ConvGeometry) -> Option<Vec<(usize, usize)>> {
    let t = Tuning::for_geometry(g);
    let some = g.n > 0 && g.oh > 0 && g.ow > 0 && g.f > 0;
    (some && t.winograd && winograd::fits(g)).then(|| winograd::forward_band_rows(g))
}

/// The forward convolution of `g` band by band (bands as
/// [`forward_bands`] gives them, which must be `Some`): each band's output
/// rows (`rows x ow x f` values, bias and epilogue applied) go to `sink`,
/// with that band's item of `items` and its row range, while they are in
/// cache; they are not kept. Buffer lengths are checked as in
/// [`conv2d_forward`].
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv2d_forward_bands<S: Send>(
    g: &ConvGeometry,
    input: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    items: Vec<S>,
    sink: &BandSink<'_, S>,
) -> Result<()> {
    g.check(
        FWD,
        &[
            ("input", &g.input_shape(), input.len()),
            ("kernel", &g.kernel_shape(), kernel.len()),
        ],
    )?;
    if let Some(b) = bias {
        TensorError::check_len(FWD, "bias", &[g.f], b.len())?;
    }
    if forward_bands(g).is_none_or(|b| b.len() != items.len()) {
        return Err(TensorError::invalid(
            FWD,
            "banded forward pass without Winograd bands to match",
        ));
    }
    winograd::forward_bands(g, input, kernel, bias, epilogue, items, sink);
    Ok(())
}

/// Gradient with respect to the input: `dx` (`(n, h, w, c)`, overwritten)
/// from `dy` (`(n, oh, ow, f)`) and the kernel `(kh, kw, c, f)`.
///
/// Per tile of output rows, `dcols = dy_tile W^T`, then col2im adds the
/// patches back into `dx`. Threads take whole images, so no two threads add
/// into the same pixels. Wrong buffer lengths are refused with a
/// [`TensorError::LengthMismatch`] naming the buffer.
pub fn conv2d_backward_input(
    g: &ConvGeometry,
    dy: &[f32],
    kernel: &[f32],
    dx: &mut [f32],
) -> Result<()> {
    conv2d_backward_input_tuned(g, dy, kernel, dx, Tuning::for_geometry(g))
}

/// [`conv2d_backward_input`] with an explicit [`Tuning`].
#[doc(hidden)]
pub fn conv2d_backward_input_tuned(
    g: &ConvGeometry,
    dy: &[f32],
    kernel: &[f32],
    dx: &mut [f32],
    tuning: Tuning,
) -> Result<()> {
    g.check(
        BWD_INPUT,
        &[
            ("output gradient", &g.output_shape(), dy.len()),
            ("kernel", &g.kernel_shape(), kernel.len()),
            ("input gradient", &g.input_shape(), dx.len()),
        ],
    )?;
    backward_input::run(g, dy, kernel, dx, tuning);
    Ok(())
}

/// Gradient with respect to the kernel, `dkernel` (`(kh, kw, c, f)`,
/// overwritten), and optionally the bias, `dbias` (`(f,)`, overwritten),
/// from the forward `input` and `dy` (`(n, oh, ow, f)`).
///
/// `dW = sum over tiles of im2col(tile)^T dY(tile)`. The tiles are split
/// into a fixed number of contiguous groups, each summed by one task into
/// its own partial; the partials are added in order at the end, so the
/// result is bitwise the same with any number of threads. Wrong buffer
/// lengths are refused with a [`TensorError::LengthMismatch`] naming the
/// buffer.
pub fn conv2d_backward_filter(
    g: &ConvGeometry,
    input: &[f32],
    dy: &[f32],
    dkernel: &mut [f32],
    dbias: Option<&mut [f32]>,
) -> Result<()> {
    conv2d_backward_filter_tuned(g, input, dy, dkernel, dbias, Tuning::for_geometry(g))
}

/// [`conv2d_backward_filter`] with an explicit [`Tuning`].
#[doc(hidden)]
pub fn conv2d_backward_filter_tuned(
    g: &ConvGeometry,
    input: &[f32],
    dy: &[f32],
    dkernel: &mut [f32],
    dbias: Option<&mut [f32]>,
    tuning: Tuning,
) -> Result<()> {
    g.check(
        BWD_FILTER,
        &[
            ("input", &g.input_shape(), input.len()),
            ("output gradient", &g.output_shape(), dy.len()),
            ("kernel gradient", &g.kernel_shape(), dkernel.len()),
        ],
    )?;
    if let Some(db) = dbias.as_deref() {
        TensorError::check_len(BWD_FILTER, "bias gradient", &[g.f], db.len())?;
    }
    backward_filter::run(g, input, dy, dkernel, dbias, tuning);
    Ok(())
}
