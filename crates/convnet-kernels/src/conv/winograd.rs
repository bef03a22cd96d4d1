//! Winograd F(m x m, 3x3) for 3x3 stride-1 convolutions, with output tiles
//! of m = 2 or m = 4: each m x m block of outputs costs (m+2)^2
//! multiplications per (input channel, filter) pair instead of 9 m^2, a
//! 2.25x cut in the GEMM work for F(2x2, 3x3) and 4x for F(4x4, 3x3), which
//! is where these layers spend their time.
//!
//! With `d` a (m+2)x(m+2) input tile, `g` a 3x3 filter and `Y` the m x m
//! output tile: `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`, summed over input channels.
//! Per band of tiles, the input transforms `V = Bᵀ d B` are laid out as
//! `P = (m+2)^2` matrices (tiles x c), the filter transforms `U = G g Gᵀ` as
//! P matrices (c x f), and P GEMMs give `M = V U`; the output transform
//! `Aᵀ M A` adds the bias and the activation while the band is in cache.
//!
//! The two backward equations follow from the same algebra:
//! - input gradient: a stride-1 convolution of `dy` with the kernel rotated
//!   by 180 degrees and its channel axes swapped, padded so the output is
//!   the input's size; it runs through the forward path above.
//! - filter gradient: `Y` is bilinear in `U` and `V`, so
//!   `dU = sum over tiles of V ⊙ (A dY Aᵀ)` (P GEMMs `Vᵀ dM` with the tiles
//!   as the inner dimension) and `dg = Gᵀ dU G`. The tiles are summed in a
//!   fixed number of groups added in order, so the result does not depend
//!   on the thread count.
//!
//! Tiles reaching past the input read zeros (that is the padding); outputs
//! of a tile past the output's edge are dropped in the forward pass and
//! count as zero gradient in the backward pass.
//!
//! The transforms are Lavin and Gray's ("Fast Algorithms for Convolutional
//! Neural Networks", 2016), with interpolation points 0, ±1, ±2 for m = 4.
//! Every transform works on `LANES` channels (or filters) at once as
//! fixed-size arrays, which the compiler keeps in vector registers.

// The small transform matrices read best written out with indices.
#![allow(clippy::needless_range_loop)]

use rayon::prelude::*;

use super::{forward::epilogue_tile, ConvGeometry, Epilogue, FILTER_PARTIALS};
use crate::gemm::{sgemm, Layout, Parallelism};
use crate::Pads;

/// Whether `g` has the shape Winograd F(2x2, 3x3) handles: 3x3, stride
/// 1, padding of at most 2 on each side.
pub(super) fn fits(g: &ConvGeometry) -> bool {
    let p = g.pads;
    g.kh == 3
        && g.kw == 3
        && g.sh == 1
        && g.sw == 1
        && p.top.max(p.bottom).max(p.left).max(p.right) <= 2
}

/// The default choice of each pass: Winograd for all three when both
/// channel counts are at least 16 (below that the transforms cost about as
/// much as the GEMM work they save). Measured against im2col + GEMM with
/// F(4x4, 3x3), one thread, CPU time (`cargo xtask bench conv --compare`
/// gives the same comparison on both cores), on a loaded Zen 4: the basic
/// CNN's conv2 (32 -> 64) 1.25x forward, 1.16x input gradient, 1.04x
/// filter gradient; conv3 (64 -> 128) 1.55x, 1.77x, 1.12x; InceptionV3's
/// 35x35 64 -> 96 1.76x, 1.98x, 1.45x; its 17x17 192 -> 192 1.27x, 1.43x,
/// 1.04x.
pub(super) fn default_passes(g: &ConvGeometry) -> (bool, bool, bool) {
    let wide = fits(g) && g.c >= 16 && g.f >= 16;
    (wide, wide, wide)
}

/// The output tile side `m` used by default for `g`: 4 (F(4x4, 3x3), 1.8x
/// fewer multiplications than m = 2) unless the output is so small that
/// the tiles past its edge waste more than they save.
pub(super) fn default_tile(g: &ConvGeometry) -> usize {
    let work = |m: usize| (m + 2) * (m + 2) * g.oh.div_ceil(m) * g.ow.div_ceil(m);
    if 10 * work(4) <= 8 * work(2) {
        4
    } else {
        2
    }
}

/// Channels (or filters) per step of the transforms: 16 floats, one
/// AVX-512 register or two AVX2 ones.
const LANES: usize = 16;

/// One Winograd variant F(M x M, 3x3): input tiles `T x T` (`T = M + 2`),
/// `P = T * T` transform points. The 1-D maps work on scalars; the 2-D
/// transforms apply them to `L` channels at once (see [`sandwich`]).
trait Variant<const M: usize, const T: usize, const P: usize> {
    /// `G`, `T x 3`: the filter transform `U = G g Gᵀ`.
    const G: [[f64; 3]; T];
    /// `Bᵀ x`: `T` values to `T`.
    fn bt(x: [f32; T]) -> [f32; T];
    /// `Aᵀ x`: `T` values to `M`.
    fn at(x: [f32; T]) -> [f32; M];
    /// `A x`: `M` values to `T`.
    fn a(x: [f32; M]) -> [f32; T];
}

/// `res = F x Fᵀ` on `L` lanes, for a `K x K` block `x` (rows of lanes) and
/// a linear map `F` (`K` values to `R`) given as `f`: `f` down every column
/// into `tmp`, then along every row of `tmp`. The innermost loops run over
/// the lanes with scalar bodies, which the compiler turns into vector
/// instructions over the channels.
#[inline(always)]
fn sandwich<const K: usize, const R: usize, const L: usize>(
    x: &[[&[f32; L]; K]; K],
    f: impl Fn([f32; K]) -> [f32; R],
    tmp: &mut [[[f32; L]; K]; R],
    res: &mut [[[f32; L]; R]; R],
) {
    for j in 0..K {
        for l in 0..L {
            let mut col = [0.0f32; K];
            for i in 0..K {
                col[i] = x[i][j][l];
            }
            let y = f(col);
            for i in 0..R {
                tmp[i][j][l] = y[i];
            }
        }
    }
    for i in 0..R {
        for l in 0..L {
            let mut row = [0.0f32; K];
            for j in 0..K {
                row[j] = tmp[i][j][l];
            }
            let y = f(row);
            for k in 0..R {
                res[i][k][l] = y[k];
            }
        }
    }
}

/// `L` values of `s` from `at`, as an array reference.
#[inline(always)]
fn lanes<const L: usize>(s: &[f32], at: usize) -> &[f32; L] {
    // The slice has exactly L elements, so the conversion cannot fail.
    s[at..at + L].try_into().unwrap()
}

/// F(2x2, 3x3).
struct F2;

impl Variant<2, 4, 16> for F2 {
    const G: [[f64; 3]; 4] = [
        [1.0, 0.0, 0.0],
        [0.5, 0.5, 0.5],
        [0.5, -0.5, 0.5],
        [0.0, 0.0, 1.0],
    ];

    #[inline(always)]
    fn bt(x: [f32; 4]) -> [f32; 4] {
        [x[0] - x[2], x[1] + x[2], x[2] - x[1], x[1] - x[3]]
    }

    #[inline(always)]
    fn at(x: [f32; 4]) -> [f32; 2] {
        [x[0] + x[1] + x[2], x[1] - x[2] - x[3]]
    }

    #[inline(always)]
    fn a(x: [f32; 2]) -> [f32; 4] {
        [x[0], x[0] + x[1], x[0] - x[1], -x[1]]
    }
}

/// F(4x4, 3x3), interpolation points 0, 1, -1, 2, -2 and infinity.
struct F4;

impl Variant<4, 6, 36> for F4 {
    const G: [[f64; 3]; 6] = [
        [1.0 / 4.0, 0.0, 0.0],
        [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
        [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
        [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
        [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
        [0.0, 0.0, 1.0],
    ];

    #[inline(always)]
    fn bt(x: [f32; 6]) -> [f32; 6] {
        // Bᵀ rows: [4 0 -5 0 1 0], [0 -4 -4 1 1 0], [0 4 -4 -1 1 0],
        // [0 -2 -1 2 1 0], [0 2 -1 -2 1 0], [0 4 0 -5 0 1].
        let x42 = x[4] - x[2];
        let x31 = 2.0 * (x[3] - x[1]);
        [
            4.0 * x[0] - 5.0 * x[2] + x[4],
            x[3] + x[4] - 4.0 * (x[1] + x[2]),
            x[4] - x[3] + 4.0 * (x[1] - x[2]),
            x42 + x31,
            x42 - x31,
            4.0 * x[1] - 5.0 * x[3] + x[5],
        ]
    }

    #[inline(always)]
    fn at(x: [f32; 6]) -> [f32; 4] {
        // Aᵀ rows: [1 1 1 1 1 0], [0 1 -1 2 -2 0], [0 1 1 4 4 0],
        // [0 1 -1 8 -8 1].
        let (s12, d12) = (x[1] + x[2], x[1] - x[2]);
        let (s34, d34) = (x[3] + x[4], x[3] - x[4]);
        [
            x[0] + s12 + s34,
            d12 + 2.0 * d34,
            s12 + 4.0 * s34,
            d12 + 8.0 * d34 + x[5],
        ]
    }

    #[inline(always)]
    fn a(x: [f32; 4]) -> [f32; 6] {
        // A = (Aᵀ)ᵀ: the columns of Aᵀ are its rows.
        let (e, o) = (x[0] + x[2], x[1] + x[3]);
        let (e4, o4) = (x[0] + 4.0 * x[2], 2.0 * (x[1] + 4.0 * x[3]));
        [x[0], e + o, e - o, e4 + o4, e4 - o4, x[3]]
    }
}

/// Tiles: `ty x tx` per image, each `m x m` outputs. Tile rows are
/// numbered through the whole batch (`img * ty + tr`), and a band (the unit
/// of work) is a range of them that may span images: small images (17x17,
/// 7x7) would otherwise give GEMMs of a handful of rows.
#[derive(Clone, Copy)]
struct Tiling {
    m: usize,
    ty: usize,
    tx: usize,
    /// Tile rows in the batch.
    rows: usize,
    /// Tile rows per band.
    band_rows: usize,
}

impl Tiling {
    /// Bands of about `bytes` of transformed tiles (V and M together),
    /// balanced so the last band is not a sliver.
    fn new(g: &ConvGeometry, m: usize, points: usize, bytes: usize) -> Self {
        let (ty, tx) = (g.oh.div_ceil(m), g.ow.div_ceil(m));
        let rows = g.n * ty;
        let target = (bytes / (points * 4 * (g.c + g.f))).clamp(16, 2048);
        let band_rows = target.div_ceil(tx.max(1)).clamp(1, rows.max(1));
        let bands = rows.div_ceil(band_rows).max(1);
        Tiling {
            m,
            ty,
            tx,
            rows,
            band_rows: rows.div_ceil(bands).max(1),
        }
    }

    fn bands(&self) -> usize {
        self.rows.div_ceil(self.band_rows)
    }

    /// Global tile rows `[r0, r1)` of band `b`.
    fn band(&self, b: usize) -> (usize, usize) {
        let r0 = b * self.band_rows;
        (r0, (r0 + self.band_rows).min(self.rows))
    }

    /// Offset (in pixels) of the first output pixel of global tile row `r`
    /// in an `(n, oh, ow)` output; `r = rows` gives the end.
    fn pixel_offset(&self, g: &ConvGeometry, r: usize) -> usize {
        let (img, tr) = (r / self.ty.max(1), r % self.ty.max(1));
        (img * g.oh + self.m * tr) * g.ow
    }

    /// The tiles of global tile rows `[r0, r1)`, numbered from 0, as
    /// `(n, image, tile row, tile column)`.
    fn tiles(
        &self,
        (r0, r1): (usize, usize),
    ) -> impl Iterator<Item = (usize, usize, usize, usize)> {
        let (tx, ty) = (self.tx, self.ty.max(1));
        (r0..r1)
            .flat_map(move |r| (0..tx).map(move |tc| (r / ty, r % ty, tc)))
            .enumerate()
            .map(|(n, (img, tr, tc))| (n, img, tr, tc))
    }
}

/// `U = G g Gᵀ` for every (channel, filter): `T * T` matrices `c x f`.
fn transform_kernel<const T: usize>(
    g: &ConvGeometry,
    gm: &[[f64; 3]; T],
    kernel: &[f32],
) -> Vec<f32> {
    let (c, f) = (g.c, g.f);
    let mut u = vec![0.0f32; T * T * c * f];
    for ch in 0..c {
        for fl in 0..f {
            let w = |i: usize, j: usize| kernel[((i * 3 + j) * c + ch) * f + fl] as f64;
            // t = G w (T x 3), then U = t Gᵀ (T x T).
            let t: [[f64; 3]; T] = std::array::from_fn(|i| {
                std::array::from_fn(|j| (0..3).map(|a| gm[i][a] * w(a, j)).sum())
            });
            for i in 0..T {
                for j in 0..T {
                    let v: f64 = (0..3).map(|b| t[i][b] * gm[j][b]).sum();
                    u[((i * T + j) * c + ch) * f + fl] = v as f32;
                }
            }
        }
    }
    u
}

/// `dg = Gᵀ dU G` for every (channel, filter), into HWIO `dkernel`.
fn untransform_kernel<const T: usize>(
    g: &ConvGeometry,
    gm: &[[f64; 3]; T],
    du: &[f32],
    dkernel: &mut [f32],
) {
    let (c, f) = (g.c, g.f);
    for ch in 0..c {
        for fl in 0..f {
            let u = |i: usize, j: usize| du[((i * T + j) * c + ch) * f + fl] as f64;
            // t = Gᵀ dU (3 x T), then dg = t G (3 x 3).
            let t: [[f64; T]; 3] = std::array::from_fn(|a| {
                std::array::from_fn(|j| (0..T).map(|i| gm[i][a] * u(i, j)).sum())
            });
            for a in 0..3 {
                for b in 0..3 {
                    let v: f64 = (0..T).map(|j| t[a][j] * gm[j][b]).sum();
                    dkernel[((a * 3 + b) * c + ch) * f + fl] = v as f32;
                }
            }
        }
    }
}

/// `V = Bᵀ d B` for the tiles of global tile rows `[r0, r1)`, into `v`
/// (`P` matrices `tiles x c`, `tiles = (r1 - r0) * tx`).
fn transform_input<const M: usize, const T: usize, const P: usize, V: Variant<M, T, P>>(
    g: &ConvGeometry,
    t: &Tiling,
    input: &[f32],
    rows: (usize, usize),
    v: &mut [f32],
) {
    let c = g.c;
    let tiles = (rows.1 - rows.0) * t.tx;
    let mut tmp = [[[0.0f32; LANES]; T]; T];
    let mut res = [[[0.0f32; LANES]; T]; T];
    let (mut tmp1, mut res1) = ([[[0.0f32; 1]; T]; T], [[[0.0f32; 1]; T]; T]);
    for (n, img, tr, tc) in t.tiles(rows) {
        let y0 = (M * tr) as isize - g.pads.top as isize;
        let x0 = (M * tc) as isize - g.pads.left as isize;
        // Offsets of the tile's pixels; None is padding.
        let mut at = [[None; T]; T];
        for i in 0..T {
            for j in 0..T {
                let (y, x) = (y0 + i as isize, x0 + j as isize);
                if y >= 0 && x >= 0 && y < g.h as isize && x < g.w as isize {
                    at[i][j] = Some(((img * g.h + y as usize) * g.w + x as usize) * c);
                }
            }
        }
        let mut ch = 0;
        while ch + LANES <= c {
            let zero = [0.0f32; LANES];
            let mut x = [[&zero; T]; T];
            for i in 0..T {
                for j in 0..T {
                    if let Some(o) = at[i][j] {
                        x[i][j] = lanes(input, o + ch);
                    }
                }
            }
            sandwich(&x, V::bt, &mut tmp, &mut res);
            for i in 0..T {
                for k in 0..T {
                    let o = ((i * T + k) * tiles + n) * c + ch;
                    v[o..o + LANES].copy_from_slice(&res[i][k]);
                }
            }
            ch += LANES;
        }
        for ch in ch..c {
            let zero = [0.0f32; 1];
            let mut x = [[&zero; T]; T];
            for i in 0..T {
                for j in 0..T {
                    if let Some(o) = at[i][j] {
                        x[i][j] = lanes(input, o + ch);
                    }
                }
            }
            sandwich(&x, V::bt, &mut tmp1, &mut res1);
            for i in 0..T {
                for k in 0..T {
                    v[((i * T + k) * tiles + n) * c + ch] = res1[i][k][0];
                }
            }
        }
    }
}

/// Forward convolution with output tiles of side `m` (2 or 4).
fn forward_with_tile(
    g: &ConvGeometry,
    input: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
    m: usize,
) {
    if m == 4 {
        forward_impl::<4, 6, 36, F4>(g, input, kernel, bias, epilogue, out)
    } else {
        forward_impl::<2, 4, 16, F2>(g, input, kernel, bias, epilogue, out)
    }
}

/// Forward convolution; lengths already checked, `fits(g)` true. `m` is
/// the output tile side, 0 to choose by shape.
pub(super) fn forward(
    g: &ConvGeometry,
    input: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
    m: usize,
) {
    let m = if m == 0 { default_tile(g) } else { m };
    forward_with_tile(g, input, kernel, bias, epilogue, out, m)
}

fn forward_impl<const M: usize, const T: usize, const P: usize, V: Variant<M, T, P>>(
    g: &ConvGeometry,
    input: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
) {
    let (c, f) = (g.c, g.f);
    let t = Tiling::new(g, M, P, 768 << 10);
    let u = transform_kernel(g, &V::G, kernel);
    // Each band's rows of the output, contiguous even across images.
    let mut bands = Vec::with_capacity(t.bands());
    let mut rest = out;
    for b in 0..t.bands() {
        let (r0, r1) = t.band(b);
        let len = (t.pixel_offset(g, r1) - t.pixel_offset(g, r0)) * f;
        let (band, tail) = std::mem::take(&mut rest).split_at_mut(len);
        bands.push((b, band));
        rest = tail;
    }
    bands.into_par_iter().for_each_init(
        || (Vec::new(), Vec::new()),
        |(v, m), (b, out_band)| {
            let (r0, r1) = t.band(b);
            let base = t.pixel_offset(g, r0);
            let tiles = (r1 - r0) * t.tx;
            v.resize(P * tiles * c, 0.0);
            m.resize(P * tiles * f, 0.0);
            transform_input::<M, T, P, V>(g, &t, input, (r0, r1), v);
            for p in 0..P {
                sgemm(
                    tiles,
                    c,
                    f,
                    &v[p * tiles * c..(p + 1) * tiles * c],
                    Layout::RowMajor,
                    &u[p * c * f..(p + 1) * c * f],
                    Layout::RowMajor,
                    &mut m[p * tiles * f..(p + 1) * tiles * f],
                    false,
                    Parallelism::Sequential,
                );
            }
            // Y = Aᵀ M A per tile, straight into the band's rows.
            let mut tmp = [[[0.0f32; LANES]; T]; M];
            let mut res = [[[0.0f32; LANES]; M]; M];
            let (mut tmp1, mut res1) = ([[[0.0f32; 1]; T]; M], [[[0.0f32; 1]; M]; M]);
            for (n, img, tr, tc) in t.tiles((r0, r1)) {
                let rows = (g.oh - M * tr).min(M);
                let cols = (g.ow - M * tc).min(M);
                let at = |i: usize, j: usize| {
                    (((img * g.oh + M * tr + i) * g.ow + M * tc + j) - base) * f
                };
                let src = |i: usize, j: usize| ((i * T + j) * tiles + n) * f;
                let mut fl = 0;
                while fl + LANES <= f {
                    let zero = [0.0f32; LANES];
                    let mut x = [[&zero; T]; T];
                    for i in 0..T {
                        for j in 0..T {
                            x[i][j] = lanes(m, src(i, j) + fl);
                        }
                    }
                    sandwich(&x, V::at, &mut tmp, &mut res);
                    for i in 0..rows {
                        for j in 0..cols {
                            let o = at(i, j) + fl;
                            out_band[o..o + LANES].copy_from_slice(&res[i][j]);
                        }
                    }
                    fl += LANES;
                }
                for fl in fl..f {
                    let zero = [0.0f32; 1];
                    let mut x = [[&zero; T]; T];
                    for i in 0..T {
                        for j in 0..T {
                            x[i][j] = lanes(m, src(i, j) + fl);
                        }
                    }
                    sandwich(&x, V::at, &mut tmp1, &mut res1);
                    for i in 0..rows {
                        for j in 0..cols {
                            out_band[at(i, j) + fl] = res1[i][j][0];
                        }
                    }
                }
            }
            epilogue_tile(out_band, f, bias, epilogue);
        },
    );
}

/// Input gradient as a forward Winograd convolution of `dy` with the
/// rotated, channel-swapped kernel; lengths already checked, `fits(g)`.
/// `m` is the output tile side, 0 to choose by shape.
pub(super) fn backward_input(
    g: &ConvGeometry,
    dy: &[f32],
    kernel: &[f32],
    dx: &mut [f32],
    m: usize,
) {
    let m = if m == 0 {
        default_tile(&input_gradient_geometry(g))
    } else {
        m
    };
    backward_input_with_tile(g, dy, kernel, dx, m)
}

/// The forward convolution whose output is the input gradient of `g`.
fn input_gradient_geometry(g: &ConvGeometry) -> ConvGeometry {
    // Output = the input's size: pads' = 2 - pads on the leading sides.
    let (top, left) = (2 - g.pads.top, 2 - g.pads.left);
    ConvGeometry {
        n: g.n,
        h: g.oh,
        w: g.ow,
        c: g.f,
        kh: 3,
        kw: 3,
        f: g.c,
        sh: 1,
        sw: 1,
        pads: Pads {
            top,
            left,
            bottom: g.h + 2 - g.oh - top,
            right: g.w + 2 - g.ow - left,
        },
        oh: g.h,
        ow: g.w,
    }
}

/// [`backward_input`] with output tiles of side `m` (2 or 4).
fn backward_input_with_tile(
    g: &ConvGeometry,
    dy: &[f32],
    kernel: &[f32],
    dx: &mut [f32],
    m: usize,
) {
    let (c, f) = (g.c, g.f);
    // w'[a][b][f][c] = w[2-a][2-b][c][f].
    let mut rotated = vec![0.0f32; 9 * c * f];
    for a in 0..3 {
        for b in 0..3 {
            for ch in 0..c {
                for fl in 0..f {
                    rotated[((a * 3 + b) * f + fl) * c + ch] =
                        kernel[(((2 - a) * 3 + (2 - b)) * c + ch) * f + fl];
                }
            }
        }
    }
    let gt = input_gradient_geometry(g);
    forward_with_tile(&gt, dy, &rotated, None, Epilogue::None, dx, m);
}

/// Filter (and bias) gradient; lengths already checked, `fits(g)`. `m` is
/// the output tile side, 0 to choose by shape.
pub(super) fn backward_filter(
    g: &ConvGeometry,
    input: &[f32],
    dy: &[f32],
    dkernel: &mut [f32],
    dbias: Option<&mut [f32]>,
    m: usize,
) {
    let m = if m == 0 { default_tile(g) } else { m };
    if m == 4 {
        backward_filter_impl::<4, 6, 36, F4>(g, input, dy, dkernel, dbias)
    } else {
        backward_filter_impl::<2, 4, 16, F2>(g, input, dy, dkernel, dbias)
    }
}

fn backward_filter_impl<const M: usize, const T: usize, const P: usize, V: Variant<M, T, P>>(
    g: &ConvGeometry,
    input: &[f32],
    dy: &[f32],
    dkernel: &mut [f32],
    dbias: Option<&mut [f32]>,
) {
    let (c, f) = (g.c, g.f);
    // Longer bands than the forward pass's (the tiles are the GEMMs' inner
    // dimension here), but not past L2 + a share of L3: 1.5 MiB against
    // 4 MiB measured 3% faster on conv2's filter gradient and 11% on
    // conv3's (alternated runs, F(4x4), batch 32).
    let t = Tiling::new(g, M, P, 1536 << 10);
    let bands = t.bands();
    let groups = FILTER_PARTIALS.min(bands.max(1));
    let want_bias = dbias.is_some();
    let partials: Vec<(Vec<f32>, Vec<f64>)> = (0..groups)
        .into_par_iter()
        .map(|grp| {
            let mut du = vec![0.0f32; P * c * f];
            let mut db = vec![0.0f64; if want_bias { f } else { 0 }];
            let (mut v, mut dm) = (Vec::new(), Vec::new());
            let mut tmp = [[[0.0f32; LANES]; M]; T];
            let mut res = [[[0.0f32; LANES]; T]; T];
            let (mut tmp1, mut res1) = ([[[0.0f32; 1]; M]; T], [[[0.0f32; 1]; T]; T]);
            for b in grp * bands / groups..(grp + 1) * bands / groups {
                let (r0, r1) = t.band(b);
                let tiles = (r1 - r0) * t.tx;
                v.resize(P * tiles * c, 0.0);
                dm.resize(P * tiles * f, 0.0);
                transform_input::<M, T, P, V>(g, &t, input, (r0, r1), &mut v);
                // dM = A dY Aᵀ per tile; outputs past the edge count as 0.
                for (n, img, tr, tc) in t.tiles((r0, r1)) {
                    let rows = (g.oh - M * tr).min(M);
                    let cols = (g.ow - M * tc).min(M);
                    let at = |i: usize, j: usize| {
                        (i < rows && j < cols)
                            .then(|| ((img * g.oh + M * tr + i) * g.ow + M * tc + j) * f)
                    };
                    let dst = |i: usize, k: usize| ((i * T + k) * tiles + n) * f;
                    let mut fl = 0;
                    while fl + LANES <= f {
                        let zero = [0.0f32; LANES];
                        let mut x = [[&zero; M]; M];
                        for i in 0..M {
                            for j in 0..M {
                                if let Some(o) = at(i, j) {
                                    x[i][j] = lanes(dy, o + fl);
                                }
                            }
                        }
                        sandwich(&x, V::a, &mut tmp, &mut res);
                        for i in 0..T {
                            for k in 0..T {
                                let o = dst(i, k) + fl;
                                dm[o..o + LANES].copy_from_slice(&res[i][k]);
                            }
                        }
                        fl += LANES;
                    }
                    for fl in fl..f {
                        let zero = [0.0f32; 1];
                        let mut x = [[&zero; M]; M];
                        for i in 0..M {
                            for j in 0..M {
                                if let Some(o) = at(i, j) {
                                    x[i][j] = lanes(dy, o + fl);
                                }
                            }
                        }
                        sandwich(&x, V::a, &mut tmp1, &mut res1);
                        for i in 0..T {
                            for k in 0..T {
                                dm[dst(i, k) + fl] = res1[i][k][0];
                            }
                        }
                    }
                }
                for p in 0..P {
                    // (c x tiles) x (tiles x f), V stored tiles x c.
                    sgemm(
                        c,
                        tiles,
                        f,
                        &v[p * tiles * c..(p + 1) * tiles * c],
                        Layout::Transposed,
                        &dm[p * tiles * f..(p + 1) * tiles * f],
                        Layout::RowMajor,
                        &mut du[p * c * f..(p + 1) * c * f],
                        true,
                        Parallelism::Sequential,
                    );
                }
                if want_bias {
                    let (lo, hi) = (t.pixel_offset(g, r0), t.pixel_offset(g, r1));
                    let mut band_db = vec![0.0f32; f];
                    for row in dy[lo * f..hi * f].chunks_exact(f) {
                        band_db.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
                    }
                    db.iter_mut()
                        .zip(&band_db)
                        .for_each(|(a, &v)| *a += v as f64);
                }
            }
            (du, db)
        })
        .collect();
    let mut du = vec![0.0f32; P * c * f];
    for (part, _) in &partials {
        du.iter_mut().zip(part).for_each(|(a, &v)| *a += v);
    }
    untransform_kernel(g, &V::G, &du, dkernel);
    if let Some(out) = dbias {
        let mut total = vec![0.0f64; f];
        for (_, db) in &partials {
            total.iter_mut().zip(db).for_each(|(a, &v)| *a += v);
        }
        out.iter_mut().zip(&total).for_each(|(o, &v)| *o = v as f32);
    }
}
