//! Winograd F(2x2, 3x3) for 3x3 stride-1 convolutions: each 2x2 block of
//! outputs costs 16 multiplications per (input channel, filter) pair instead
//! of 36, a 2.25x cut in the GEMM work, which is where these layers spend
//! their time.
//!
//! With `d` a 4x4 input tile, `g` a 3x3 filter and `Y` the 2x2 output tile:
//! `Y = Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A`, summed over input channels. Per band of
//! tiles, the input transforms `V = Bᵀ d B` are laid out as 16 matrices
//! (tiles x c), the filter transforms `U = G g Gᵀ` as 16 matrices (c x f),
//! and 16 GEMMs give `M = V U`; the output transform `Aᵀ M A` adds the bias
//! and the activation while the band is in cache.
//!
//! The two backward equations follow from the same algebra:
//! - input gradient: a stride-1 convolution of `dy` with the kernel rotated
//!   by 180 degrees and its channel axes swapped, padded so the output is
//!   the input's size; it runs through the forward path above.
//! - filter gradient: `Y` is bilinear in `U` and `V`, so
//!   `dU = sum over tiles of V ⊙ (A dY Aᵀ)` (16 GEMMs `Vᵀ dM` with the tiles
//!   as the inner dimension) and `dg = Gᵀ dU G`. The tiles are summed in a
//!   fixed number of groups added in order, so the result does not depend
//!   on the thread count.
//!
//! Tiles reaching past the input read zeros (that is the padding); outputs
//! of a tile past the output's edge are dropped in the forward pass and
//! count as zero gradient in the backward pass.

// The small transform matrices read best written out with indices.
#![allow(clippy::needless_range_loop)]

use rayon::prelude::*;

use super::{forward::epilogue_tile, ConvGeometry, Epilogue, FILTER_PARTIALS};
use crate::gemm::{sgemm, Layout, Parallelism};
use crate::Pads;

/// Number of transform points of F(2x2, 3x3): 4x4.
const P: usize = 16;

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

/// The default choice of each pass (measured on the basic CNN's layers
/// with `cargo xtask bench conv --compare`, AVX2): the transforms cost
/// about as much as the GEMM work they save unless the channel counts are
/// large; the gradients gain or lose by shape (see the figures below).
pub(super) fn default_passes(g: &ConvGeometry) -> (bool, bool, bool) {
    let wide = fits(g) && g.c >= 16 && g.f >= 16;
    let forward = wide;
    // Measured ratios against im2col (AVX2, quiet machine): input gradient
    // 1.1x at c = 32, f = 64 but 0.7x at c = 64, f = 128; filter gradient
    // 0.9x at c = 32, 1.1-1.2x at c = 64; forward 1.0x and 1.5x.
    let input = wide && g.c < 64;
    let filter = wide && g.c >= 64;
    (forward, input, filter)
}

/// Tiles: `ty x tx` per image, each 2x2 outputs.
#[derive(Clone, Copy)]
struct Tiling {
    ty: usize,
    tx: usize,
    /// Tile rows per band (a band is the unit of work).
    band_rows: usize,
}

impl Tiling {
    /// Bands of about `bytes` of transformed tiles (V and M together).
    fn new(g: &ConvGeometry, bytes: usize) -> Self {
        let (ty, tx) = (g.oh.div_ceil(2), g.ow.div_ceil(2));
        let target = (bytes / (P * 4 * (g.c + g.f))).clamp(16, 2048);
        let band_rows = target.div_ceil(tx.max(1)).clamp(1, ty.max(1));
        Tiling { ty, tx, band_rows }
    }

    fn bands(&self) -> usize {
        self.ty.div_ceil(self.band_rows)
    }

    /// Tile rows `[r0, r1)` of band `b`.
    fn band(&self, b: usize) -> (usize, usize) {
        let r0 = b * self.band_rows;
        (r0, (r0 + self.band_rows).min(self.ty))
    }
}

/// `U = G g Gᵀ` for every (channel, filter): 16 matrices `c x f`.
fn transform_kernel(g: &ConvGeometry, kernel: &[f32]) -> Vec<f32> {
    let (c, f) = (g.c, g.f);
    let mut u = vec![0.0f32; P * c * f];
    let at = |i: usize, j: usize, ch: usize, fl: usize| kernel[((i * 3 + j) * c + ch) * f + fl];
    for ch in 0..c {
        for fl in 0..f {
            // t = G g (4x3), then U = t Gᵀ (4x4).
            let mut t = [[0.0f32; 3]; 4];
            for j in 0..3 {
                let (g0, g1, g2) = (at(0, j, ch, fl), at(1, j, ch, fl), at(2, j, ch, fl));
                t[0][j] = g0;
                t[1][j] = 0.5 * (g0 + g1 + g2);
                t[2][j] = 0.5 * (g0 - g1 + g2);
                t[3][j] = g2;
            }
            for (i, t) in t.iter().enumerate() {
                let row = [
                    t[0],
                    0.5 * (t[0] + t[1] + t[2]),
                    0.5 * (t[0] - t[1] + t[2]),
                    t[2],
                ];
                for (j, v) in row.into_iter().enumerate() {
                    u[((i * 4 + j) * c + ch) * f + fl] = v;
                }
            }
        }
    }
    u
}

/// `dg = Gᵀ dU G` for every (channel, filter), into HWIO `dkernel`.
fn untransform_kernel(g: &ConvGeometry, du: &[f32], dkernel: &mut [f32]) {
    let (c, f) = (g.c, g.f);
    for ch in 0..c {
        for fl in 0..f {
            let u = |i: usize, j: usize| du[((i * 4 + j) * c + ch) * f + fl];
            // t = Gᵀ dU (3x4), then dg = t G (3x3).
            let mut t = [[0.0f32; 4]; 3];
            for j in 0..4 {
                let (u0, u1, u2, u3) = (u(0, j), u(1, j), u(2, j), u(3, j));
                t[0][j] = u0 + 0.5 * (u1 + u2);
                t[1][j] = 0.5 * (u1 - u2);
                t[2][j] = 0.5 * (u1 + u2) + u3;
            }
            for (i, t) in t.iter().enumerate() {
                let row = [
                    t[0] + 0.5 * (t[1] + t[2]),
                    0.5 * (t[1] - t[2]),
                    0.5 * (t[1] + t[2]) + t[3],
                ];
                for (j, v) in row.into_iter().enumerate() {
                    dkernel[((i * 3 + j) * c + ch) * f + fl] = v;
                }
            }
        }
    }
}

/// `V = Bᵀ d B` for the tiles of tile rows `[r0, r1)` of image `img`, into
/// `v` (16 matrices `tiles x c`, `tiles = (r1 - r0) * tx`).
fn transform_input(
    g: &ConvGeometry,
    t: &Tiling,
    input: &[f32],
    img: usize,
    (r0, r1): (usize, usize),
    zeros: &[f32],
    v: &mut [f32],
) {
    let c = g.c;
    let tiles = (r1 - r0) * t.tx;
    let image = &input[img * g.h * g.w * c..(img + 1) * g.h * g.w * c];
    let pixel = |y: isize, x: isize| -> &[f32] {
        if y < 0 || x < 0 || y >= g.h as isize || x >= g.w as isize {
            zeros
        } else {
            let at = (y as usize * g.w + x as usize) * c;
            &image[at..at + c]
        }
    };
    for (n, (tr, tc)) in (r0..r1)
        .flat_map(|tr| (0..t.tx).map(move |tc| (tr, tc)))
        .enumerate()
    {
        let y0 = (2 * tr) as isize - g.pads.top as isize;
        let x0 = (2 * tc) as isize - g.pads.left as isize;
        let d: [[&[f32]; 4]; 4] = std::array::from_fn(|i| {
            std::array::from_fn(|j| &pixel(y0 + i as isize, x0 + j as isize)[..c])
        });
        // The 16 destinations of this tile, one per transform point.
        let mut blocks = v.chunks_exact_mut(tiles * c);
        let dst: [&mut [f32]; P] = std::array::from_fn(|_| {
            let blk = blocks.next().unwrap_or_default();
            &mut blk[n * c..(n + 1) * c]
        });
        // Eight channels at a time as fixed-size arrays (which the compiler
        // keeps in vector registers), then the remainder one by one.
        let mut ch = 0;
        while ch + LANES <= c {
            let e: [[[f32; LANES]; 4]; 4] = std::array::from_fn(|i| {
                std::array::from_fn(|j| std::array::from_fn(|l| d[i][j][ch + l]))
            });
            let v = input_points(&e);
            for (p, out) in v.iter().enumerate() {
                dst[p][ch..ch + LANES].copy_from_slice(out);
            }
            ch += LANES;
        }
        for ch in ch..c {
            let e: [[[f32; 1]; 4]; 4] =
                std::array::from_fn(|i| std::array::from_fn(|j| [d[i][j][ch]]));
            let v = input_points(&e);
            for (p, out) in v.iter().enumerate() {
                dst[p][ch] = out[0];
            }
        }
    }
}

/// Channels per step of the input transform.
const LANES: usize = 8;

/// `V = Bᵀ d B` for `L` channels at once: `e[i][j]` is the tile's pixel
/// `(i, j)`; returns the 16 points, row-major.
#[inline(always)]
fn input_points<const L: usize>(e: &[[[f32; L]; 4]; 4]) -> [[f32; L]; P] {
    let lanes = |f: &dyn Fn(usize) -> f32| -> [f32; L] { std::array::from_fn(f) };
    // tmp = Bᵀ d (rows), then V = tmp B (columns).
    let mut tmp = [[[0.0f32; L]; 4]; 4];
    for j in 0..4 {
        tmp[0][j] = lanes(&|l| e[0][j][l] - e[2][j][l]);
        tmp[1][j] = lanes(&|l| e[1][j][l] + e[2][j][l]);
        tmp[2][j] = lanes(&|l| e[2][j][l] - e[1][j][l]);
        tmp[3][j] = lanes(&|l| e[1][j][l] - e[3][j][l]);
    }
    let mut v = [[0.0f32; L]; P];
    for (i, r) in tmp.iter().enumerate() {
        v[i * 4] = lanes(&|l| r[0][l] - r[2][l]);
        v[i * 4 + 1] = lanes(&|l| r[1][l] + r[2][l]);
        v[i * 4 + 2] = lanes(&|l| r[2][l] - r[1][l]);
        v[i * 4 + 3] = lanes(&|l| r[1][l] - r[3][l]);
    }
    v
}

/// Forward convolution; lengths already checked, `fits(g)` true.
pub(super) fn forward(
    g: &ConvGeometry,
    input: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
) {
    let (c, f) = (g.c, g.f);
    let t = Tiling::new(g, 768 << 10);
    let u = transform_kernel(g, kernel);
    let img_len = g.oh * g.ow * f;
    let band_len = 2 * t.band_rows * g.ow * f;
    out.par_chunks_mut(img_len)
        .enumerate()
        .for_each(|(img, out_img)| {
            out_img.par_chunks_mut(band_len).enumerate().for_each_init(
                || (Vec::new(), Vec::new()),
                |(v, m), (b, out_band)| {
                    let (r0, r1) = t.band(b);
                    let tiles = (r1 - r0) * t.tx;
                    v.resize(P * tiles * c, 0.0);
                    m.resize(P * tiles * f, 0.0);
                    transform_input(g, &t, input, img, (r0, r1), zeros_of(c), v);
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
                    for (n, (tr, tc)) in (r0..r1)
                        .flat_map(|tr| (0..t.tx).map(move |tc| (tr, tc)))
                        .enumerate()
                    {
                        let src: [&[f32]; P] = std::array::from_fn(|p| {
                            &m[(p * tiles + n) * f..(p * tiles + n + 1) * f]
                        });
                        let rows = (g.oh - 2 * tr).min(2);
                        let cols = (g.ow - 2 * tc).min(2);
                        let oy = 2 * (tr - r0);
                        let at = |i: usize, j: usize| ((oy + i) * g.ow + 2 * tc + j) * f;
                        if rows == 2 && cols == 2 {
                            // Whole tile: two output rows, two pixels each.
                            let (top, bottom) = out_band.split_at_mut(at(1, 0));
                            let top = &mut top[at(0, 0)..at(0, 0) + 2 * f];
                            let bottom = &mut bottom[..2 * f];
                            let (y00, y01) = top.split_at_mut(f);
                            let (y10, y11) = bottom.split_at_mut(f);
                            for fl in 0..f {
                                let y = output_tile(&src, fl);
                                y00[fl] = y[0][0];
                                y01[fl] = y[0][1];
                                y10[fl] = y[1][0];
                                y11[fl] = y[1][1];
                            }
                        } else {
                            for fl in 0..f {
                                let y = output_tile(&src, fl);
                                for (i, yr) in y.iter().enumerate().take(rows) {
                                    for (j, &val) in yr.iter().enumerate().take(cols) {
                                        out_band[at(i, j) + fl] = val;
                                    }
                                }
                            }
                        }
                    }
                    epilogue_tile(out_band, f, bias, epilogue);
                },
            );
        });
}

/// `Aᵀ M A` at filter `fl` of one tile, from its 16 transform points.
#[inline(always)]
fn output_tile(src: &[&[f32]; P], fl: usize) -> [[f32; 2]; 2] {
    let e = |i: usize, j: usize| src[i * 4 + j][fl];
    let mut tmp = [[0.0f32; 4]; 2];
    for j in 0..4 {
        tmp[0][j] = e(0, j) + e(1, j) + e(2, j);
        tmp[1][j] = e(1, j) - e(2, j) - e(3, j);
    }
    [
        [
            tmp[0][0] + tmp[0][1] + tmp[0][2],
            tmp[0][1] - tmp[0][2] - tmp[0][3],
        ],
        [
            tmp[1][0] + tmp[1][1] + tmp[1][2],
            tmp[1][1] - tmp[1][2] - tmp[1][3],
        ],
    ]
}

/// A slice of `c` zeros (the padding), shared by every call.
fn zeros_of(c: usize) -> &'static [f32] {
    use std::sync::OnceLock;
    static ZEROS: OnceLock<Vec<f32>> = OnceLock::new();
    const MAX: usize = 1 << 16;
    let z = ZEROS.get_or_init(|| vec![0.0f32; MAX]);
    if c <= MAX {
        &z[..c]
    } else {
        // More channels than any real layer has: leak one buffer of that
        // size rather than fail (it happens at most once per size).
        Box::leak(vec![0.0f32; c].into_boxed_slice())
    }
}

/// Input gradient as a forward Winograd convolution of `dy` with the
/// rotated, channel-swapped kernel; lengths already checked, `fits(g)`.
pub(super) fn backward_input(g: &ConvGeometry, dy: &[f32], kernel: &[f32], dx: &mut [f32]) {
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
    // Output = the input's size: pads' = 2 - pads on the leading sides.
    let (top, left) = (2 - g.pads.top, 2 - g.pads.left);
    let gt = ConvGeometry {
        n: g.n,
        h: g.oh,
        w: g.ow,
        c: f,
        kh: 3,
        kw: 3,
        f: c,
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
    };
    forward(&gt, dy, &rotated, None, Epilogue::None, dx);
}

/// Filter (and bias) gradient; lengths already checked, `fits(g)`.
pub(super) fn backward_filter(
    g: &ConvGeometry,
    input: &[f32],
    dy: &[f32],
    dkernel: &mut [f32],
    dbias: Option<&mut [f32]>,
) {
    let (c, f) = (g.c, g.f);
    // Long bands: the tiles are the GEMMs' inner dimension here.
    let t = Tiling::new(g, 4 << 20);
    let items: Vec<(usize, usize)> = (0..g.n)
        .flat_map(|img| (0..t.bands()).map(move |b| (img, b)))
        .collect();
    let groups = FILTER_PARTIALS.min(items.len().max(1));
    let want_bias = dbias.is_some();
    let partials: Vec<(Vec<f32>, Vec<f64>)> = (0..groups)
        .into_par_iter()
        .map(|grp| {
            let mut du = vec![0.0f32; P * c * f];
            let mut db = vec![0.0f64; if want_bias { f } else { 0 }];
            let (mut v, mut dm) = (Vec::new(), Vec::new());
            let part = &items[grp * items.len() / groups..(grp + 1) * items.len() / groups];
            for &(img, b) in part {
                let (r0, r1) = t.band(b);
                let tiles = (r1 - r0) * t.tx;
                v.resize(P * tiles * c, 0.0);
                dm.resize(P * tiles * f, 0.0);
                transform_input(g, &t, input, img, (r0, r1), zeros_of(c), &mut v);
                // dM = A dY Aᵀ per tile; outputs past the edge count as 0.
                let dy_img = &dy[img * g.oh * g.ow * f..(img + 1) * g.oh * g.ow * f];
                for (n, (tr, tc)) in (r0..r1)
                    .flat_map(|tr| (0..t.tx).map(move |tc| (tr, tc)))
                    .enumerate()
                {
                    let rows = (g.oh - 2 * tr).min(2);
                    let cols = (g.ow - 2 * tc).min(2);
                    let at = |i: usize, j: usize| {
                        (i < rows && j < cols).then(|| ((2 * tr + i) * g.ow + 2 * tc + j) * f)
                    };
                    let ix = [[at(0, 0), at(0, 1)], [at(1, 0), at(1, 1)]];
                    for fl in 0..f {
                        let d = |i: usize, j: usize| ix[i][j].map_or(0.0, |o| dy_img[o + fl]);
                        let (d00, d01, d10, d11) = (d(0, 0), d(0, 1), d(1, 0), d(1, 1));
                        // A dY (4x2), then times Aᵀ (4x4).
                        let s = [
                            [d00, d01],
                            [d00 + d10, d01 + d11],
                            [d00 - d10, d01 - d11],
                            [-d10, -d11],
                        ];
                        for (i, r) in s.iter().enumerate() {
                            let row = [r[0], r[0] + r[1], r[0] - r[1], -r[1]];
                            for (j, val) in row.into_iter().enumerate() {
                                dm[((i * 4 + j) * tiles + n) * f + fl] = val;
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
                    let (lo, hi) = (2 * r0, (2 * r1).min(g.oh));
                    let mut band_db = vec![0.0f32; f];
                    for row in dy_img[lo * g.ow * f..hi * g.ow * f].chunks_exact(f) {
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
    untransform_kernel(g, &du, dkernel);
    if let Some(out) = dbias {
        let mut total = vec![0.0f64; f];
        for (_, db) in &partials {
            total.iter_mut().zip(db).for_each(|(a, &v)| *a += v);
        }
        out.iter_mut().zip(&total).for_each(|(o, &v)| *o = v as f32);
    }
}
