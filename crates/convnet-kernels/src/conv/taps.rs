//! 1xk and kx1 stride-1 convolutions on small maps, without multiplying
//! the padding.
//!
//! With `same` padding, a 1x7 window on a 7-pixel-wide map reaches past the
//! edge for six of the seven output columns: 12 of the 49 taps of a row
//! land on padding, so a quarter of the im2col GEMM multiplies zeros
//! (InceptionV3's 1x7 and 7x1 layers on their 7x7 maps at 150x150 input).
//! Every output column (every output row for kx1) sees the same run of taps
//! inside the image, so its output pixels, from all the images of the
//! batch, form one GEMM over only those taps and the matching rows of the
//! kernel matrix. For 1xk those taps are consecutive pixels of an input
//! row, which the GEMM reads in place, one input row apart; for kx1 they
//! are gathered as im2col does. Each task's product goes to its own buffer;
//! a second pass writes them into the output image by image, adding bias
//! and epilogue.

use rayon::prelude::*;

use super::{forward::epilogue_tile, ConvGeometry, Epilogue};
use crate::gemm::{sgemm, sgemm_lda, Layout, Parallelism};

/// Fewest output pixels per position along the kernel's axis: below this
/// (one image of a small map) the im2col GEMM's single product is larger
/// and faster.
const MIN_GROUP_ROWS: usize = 64;

/// Most output pixels per task: each task packs its slice of the kernel
/// matrix, so tasks are as large as the balance between threads allows.
const MAX_TASK_ROWS: usize = 512;

/// The kernel's long axis and the input's extent along it.
#[derive(Debug, Clone, Copy)]
struct Axis {
    /// A kx1 kernel (along the rows) rather than 1xk (along a row).
    vertical: bool,
    /// Taps along the axis.
    k: usize,
    /// Input size along the axis.
    len: usize,
    /// Padding before the first input position.
    pad: usize,
    /// Output positions along the axis.
    out: usize,
}

impl Axis {
    /// The axis of a stride-1 1xk or kx1 convolution (`k > 1`) without
    /// padding across it, `None` for any other.
    fn of(g: &ConvGeometry) -> Option<Axis> {
        if g.sh != 1 || g.sw != 1 {
            return None;
        }
        let p = g.pads;
        match (g.kh, g.kw) {
            (1, k) if k > 1 && p.top == 0 && p.bottom == 0 => Some(Axis {
                vertical: false,
                k,
                len: g.w,
                pad: p.left,
                out: g.ow,
            }),
            (k, 1) if k > 1 && p.left == 0 && p.right == 0 => Some(Axis {
                vertical: true,
                k,
                len: g.h,
                pad: p.top,
                out: g.oh,
            }),
            _ => None,
        }
    }

    /// The taps `[j0, j1)` of output position `p` that land inside the
    /// input (empty when none does).
    fn taps(&self, p: usize) -> (usize, usize) {
        let j0 = self.pad.saturating_sub(p);
        let j1 = (self.len + self.pad).saturating_sub(p).min(self.k);
        (j0, j1.max(j0))
    }

    /// Output pixels that share a position along the axis: every image's
    /// pixels across it.
    fn group_rows(&self, g: &ConvGeometry) -> usize {
        g.n * if self.vertical { g.ow } else { g.oh }
    }
}

/// True when this path applies to `g` and pays: a 1xk or kx1 stride-1
/// convolution where at least an eighth of the im2col taps fall on padding
/// (a 7-tap kernel on maps of up to 12 pixels) and each output position
/// gathers at least [`MIN_GROUP_ROWS`] pixels.
pub(super) fn applies(g: &ConvGeometry) -> bool {
    Axis::of(g).is_some_and(|a| {
        let inside: usize = (0..a.out)
            .map(|p| {
                let (j0, j1) = a.taps(p);
                j1 - j0
            })
            .sum();
        a.group_rows(g) >= MIN_GROUP_ROWS && 8 * inside <= 7 * a.k * a.out
    })
}

/// Forward convolution of a geometry [`applies`] accepts; lengths already
/// checked. Every element of `out` is written.
pub(super) fn forward(
    g: &ConvGeometry,
    input: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
) {
    let Some(axis) = Axis::of(g) else {
        unreachable!("conv taps: called on {g:?}, which is not 1xk or kx1 with stride 1")
    };
    let (c, f) = (g.c, g.f);
    let rows = axis.group_rows(g);
    let pieces = rows.div_ceil(MAX_TASK_ROWS).max(1);
    let chunk = rows.div_ceil(pieces).max(1);
    // (position along the axis, first and end group row), position-major.
    let tasks: Vec<(usize, usize, usize)> = (0..axis.out)
        .flat_map(|p| (0..pieces).map(move |i| (p, i * chunk, ((i + 1) * chunk).min(rows))))
        .collect();
    let products: Vec<Vec<f32>> = tasks
        .par_iter()
        .map_init(Vec::new, |cols: &mut Vec<f32>, &(p, r0, r1)| {
            let (j0, j1) = axis.taps(p);
            let (m, taps) = (r1 - r0, j1 - j0);
            let kk = taps * c;
            let b = &kernel[j0 * c * f..j1 * c * f];
            let mut prod = vec![0.0; m * f];
            if m == 0 || kk == 0 {
                return prod;
            }
            if axis.vertical {
                // Group row r is pixel (r / ow, p, r % ow); its taps are
                // input rows p + j - pad, one pixel each.
                cols.resize(m * kk, 0.0);
                for (i, row) in cols[..m * kk].chunks_exact_mut(kk).enumerate() {
                    let (img, x) = ((r0 + i) / g.ow, (r0 + i) % g.ow);
                    for (t, dst) in row.chunks_exact_mut(c).enumerate() {
                        let iy = p + j0 + t - axis.pad;
                        let src = ((img * g.h + iy) * g.w + x) * c;
                        dst.copy_from_slice(&input[src..src + c]);
                    }
                }
                sgemm(
                    m,
                    kk,
                    f,
                    &cols[..m * kk],
                    Layout::RowMajor,
                    b,
                    Layout::RowMajor,
                    &mut prod,
                    false,
                    Parallelism::Sequential,
                );
            } else {
                // Group row r is pixel (r / oh, r % oh, p) and oh == h, so
                // its taps are the `taps` pixels of input row r from column
                // p + j0 - pad on: one run of `kk` values, rows w*c apart.
                let lda = g.w * c;
                let start = (r0 * g.w + p + j0 - axis.pad) * c;
                let end = start + (m - 1) * lda + kk;
                sgemm_lda(m, kk, f, &input[start..end], lda, b, &mut prod);
            }
            prod
        })
        .collect();
    out.par_chunks_mut(g.oh * g.ow * f)
        .enumerate()
        .for_each(|(img, o)| {
            for (q, row) in o.chunks_exact_mut(f).enumerate() {
                let (y, x) = (q / g.ow, q % g.ow);
                let (p, r) = if axis.vertical {
                    (y, img * g.ow + x)
                } else {
                    (x, img * g.oh + y)
                };
                let (t, i) = (p * pieces + r / chunk, r % chunk);
                row.copy_from_slice(&products[t][i * f..(i + 1) * f]);
            }
            epilogue_tile(o, f, bias, epilogue);
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Padding;

    fn geometry(input: [usize; 4], kernel: (usize, usize), padding: Padding) -> ConvGeometry {
        let [_, _, _, c] = input;
        ConvGeometry::new(input, [kernel.0, kernel.1, c, 4], (1, 1), padding).unwrap()
    }

    #[test]
    fn taps_inside_the_image() {
        let g = geometry([16, 7, 7, 2], (1, 7), Padding::Same);
        let a = Axis::of(&g).unwrap();
        let taps: Vec<_> = (0..7).map(|p| a.taps(p)).collect();
        assert_eq!(
            taps,
            [(3, 7), (2, 7), (1, 7), (0, 7), (0, 6), (0, 5), (0, 4)]
        );
        // A kernel longer than the map: some taps never land inside.
        let g = geometry([32, 3, 3, 2], (7, 1), Padding::Same);
        let a = Axis::of(&g).unwrap();
        let taps: Vec<_> = (0..3).map(|p| a.taps(p)).collect();
        assert_eq!(taps, [(3, 6), (2, 5), (1, 4)]);
    }

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// This path against im2col + GEMM, on both axes, maps narrower than
    /// the kernel, even kernels (more padding after than before) and
    /// enough images for several tasks per output position.
    #[test]
    fn matches_im2col() {
        let cases = [
            ([10, 7, 7, 5], (1, 7), 6),
            ([10, 7, 7, 5], (7, 1), 6),
            ([11, 7, 6, 3], (1, 4), 9),
            ([13, 6, 7, 3], (4, 1), 2),
            ([30, 3, 4, 2], (7, 1), 5),
            ([30, 4, 3, 2], (1, 7), 5),
            ([90, 7, 7, 3], (1, 7), 4),
            ([90, 7, 7, 3], (7, 1), 4),
        ];
        for (seed, (input, kernel, f)) in cases.into_iter().enumerate() {
            let g = ConvGeometry::new(
                input,
                [kernel.0, kernel.1, input[3], f],
                (1, 1),
                Padding::Same,
            )
            .unwrap();
            assert!(applies(&g), "{g:?}");
            let x = values(input.iter().product(), seed as u64);
            let w = values(g.kernel_shape().iter().product(), seed as u64 + 50);
            let b = values(f, seed as u64 + 99);
            let plain = super::super::Tuning {
                direct: false,
                winograd: false,
                winograd_1d: false,
                taps: false,
                half: false,
                packed: false,
                ..super::super::Tuning::for_geometry(&g)
            };
            for epilogue in [Epilogue::None, Epilogue::Relu] {
                let mut want = vec![0.0; g.rows() * f];
                super::super::forward::run(&g, &x, &w, Some(&b), epilogue, &mut want, plain);
                let mut got = vec![f32::NAN; want.len()];
                forward(&g, &x, &w, Some(&b), epilogue, &mut got);
                for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-4 * (1.0 + b.abs()),
                        "{g:?} {i}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn applies_where_padding_is_a_large_share() {
        let same = |input, kernel| applies(&geometry(input, kernel, Padding::Same));
        assert!(same([32, 7, 7, 8], (1, 7)));
        assert!(same([32, 7, 7, 8], (7, 1)));
        // 17x17 maps: a tenth of the taps on padding, not enough.
        assert!(!same([32, 17, 17, 8], (1, 7)));
        // One image: too few pixels per column.
        assert!(!same([1, 7, 7, 8], (1, 7)));
        // Not 1xk / kx1, or no padding.
        assert!(!same([32, 7, 7, 8], (3, 3)));
        assert!(!same([32, 7, 7, 8], (1, 1)));
        assert!(!applies(&geometry([32, 7, 7, 8], (1, 7), Padding::Valid)));
    }
}
