//! The forward pass: per row tile, im2col into a per-thread buffer, one
//! single-threaded GEMM into the tile's rows of the output, then bias and
//! activation while the tile is in cache.

use rayon::prelude::*;

use super::{
    direct, im2col::im2col_tile, taps, winograd, winograd1d, ConvGeometry, Epilogue, Tuning,
};
use crate::gemm::{sgemm, Layout, Parallelism};
use crate::gemm_f16::{self, PackedB16};
use crate::gemm_packed::{self, PackedB};

/// Add the bias and apply the epilogue to output rows `out` (`rows x f`).
pub(super) fn epilogue_tile(out: &mut [f32], f: usize, bias: Option<&[f32]>, epilogue: Epilogue) {
    match (bias, epilogue) {
        (None, Epilogue::None) => {}
        (Some(b), Epilogue::None) => out
            .chunks_exact_mut(f)
            .for_each(|row| row.iter_mut().zip(b).for_each(|(v, &b)| *v += b)),
        (Some(b), Epilogue::Relu) => out.chunks_exact_mut(f).for_each(|row| {
            row.iter_mut()
                .zip(b)
                .for_each(|(v, &b)| *v = (*v + b).max(0.0))
        }),
        (None, Epilogue::Relu) => out.iter_mut().for_each(|v| *v = v.max(0.0)),
    }
}

/// Rows per tile: at most `requested` (at least 1), with the number of
/// tiles rounded up to a multiple of the thread count and the rows shared
/// evenly among them, so that no thread is left with one tile more than
/// the others (19 tiles of 85 rows on 2 threads: 10 against 9; 20 tiles of
/// 79 rows instead).
pub(super) fn balanced_tile(rows: usize, requested: usize, threads: usize) -> usize {
    let requested = requested.max(1);
    let tiles = rows.div_ceil(requested);
    if tiles <= 1 {
        return requested;
    }
    let threads = threads.max(1);
    let tiles = tiles.div_ceil(threads) * threads;
    rows.div_ceil(tiles).max(1)
}

/// Forward convolution; lengths already checked.
pub(super) fn run(
    g: &ConvGeometry,
    input: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
    tuning: Tuning,
) {
    let (k, f) = (g.patch_len(), g.f);
    if out.is_empty() {
        return;
    }
    if tuning.winograd && winograd::fits_forward(g) {
        winograd::forward(g, input, kernel, bias, epilogue, out, tuning.winograd_tile);
        return;
    }
    if tuning.direct && direct::applies(g) {
        direct::forward(g, input, kernel, bias, epilogue, out, tuning);
        return;
    }
    if tuning.winograd_1d && winograd1d::applies(g) {
        winograd1d::forward(g, input, kernel, bias, epilogue, out);
        return;
    }
    if tuning.half {
        if let Some(packed) = PackedB16::new(kernel, k, f) {
            half(g, input, kernel, &packed, bias, epilogue, out, tuning);
            return;
        }
    }
    if tuning.taps && taps::applies(g) {
        taps::forward(g, input, kernel, bias, epilogue, out);
        return;
    }
    if tuning.packed {
        if let Some(packed) = PackedB::new(kernel, k, f) {
            single_packed(g, input, &packed, bias, epilogue, out, tuning);
            return;
        }
    }
    let tile = balanced_tile(g.rows(), tuning.tile_rows, rayon::current_num_threads());
    let pointwise = g.is_pointwise();
    out.par_chunks_mut(tile * f).enumerate().for_each_init(
        Vec::new,
        |cols: &mut Vec<f32>, (t, out_tile)| {
            let r0 = t * tile;
            let rows = out_tile.len() / f;
            let a: &[f32] = if pointwise {
                &input[r0 * k..(r0 + rows) * k]
            } else {
                cols.resize(tile * k, 0.0);
                im2col_tile(g, input, r0, rows, cols);
                &cols[..rows * k]
            };
            sgemm(
                rows,
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
}

/// The generic path with the weights packed once ([`gemm_packed`], AVX2
/// CPUs): per tile, im2col (not for a 1x1 layer), then the GEMM with bias
/// and epilogue.
fn single_packed(
    g: &ConvGeometry,
    input: &[f32],
    packed: &PackedB,
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
    tuning: Tuning,
) {
    let (k, f) = (g.patch_len(), g.f);
    debug_assert_eq!(packed.n(), f);
    let pointwise = g.is_pointwise();
    // The weights are packed once, so tiles need not be long: an im2col
    // tile that stays in L2; a 1x1 layer's tile is read in place, a chunk
    // of `KC` columns at a time.
    let width = if pointwise { k.min(gemm_packed::KC) } else { k };
    let rows = (super::TILE_BYTES / (4 * width.max(1))).clamp(48, tuning.tile_rows.max(48));
    let rows = if tuning.tile_rows < 48 {
        tuning.tile_rows
    } else {
        rows
    };
    let tile = balanced_tile(g.rows(), rows, rayon::current_num_threads());
    out.par_chunks_mut(tile * f).enumerate().for_each_init(
        Vec::new,
        |cols: &mut Vec<f32>, (t, out_tile)| {
            let r0 = t * tile;
            let rows = out_tile.len() / f;
            let a: &[f32] = if pointwise {
                &input[r0 * k..(r0 + rows) * k]
            } else {
                cols.resize(tile * k, 0.0);
                im2col_tile(g, input, r0, rows, cols);
                &cols[..rows * k]
            };
            gemm_packed::gemm(rows, a, k, packed, out_tile, bias, epilogue);
        },
    );
}

/// The generic path in half precision (`packed` is `kernel` in halves):
/// per tile, im2col (not for a 1x1 layer), the half-precision GEMM with
/// bias and epilogue, and the single-precision GEMM again for a tile whose
/// outputs overflowed.
#[allow(clippy::too_many_arguments)]
fn half(
    g: &ConvGeometry,
    input: &[f32],
    kernel: &[f32],
    packed: &PackedB16,
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
    tuning: Tuning,
) {
    let (k, f) = (g.patch_len(), g.f);
    // The weights are packed once for all tiles, so tiles need not be
    // long: an im2col tile that stays in L2 (the general path's tiles
    // hold at least 256 rows because each GEMM call packs the weights).
    let rows = (super::TILE_BYTES / (4 * k.max(1))).clamp(48, tuning.tile_rows.max(48));
    let rows = if tuning.tile_rows < 48 {
        tuning.tile_rows
    } else {
        rows
    };
    let tile = balanced_tile(g.rows(), rows, rayon::current_num_threads());
    let pointwise = g.is_pointwise();
    out.par_chunks_mut(tile * f).enumerate().for_each_init(
        || (Vec::new(), Vec::new()),
        |(cols, halves): &mut (Vec<f32>, Vec<u16>), (t, out_tile)| {
            let r0 = t * tile;
            let rows = out_tile.len() / f;
            let a: &[f32] = if pointwise {
                &input[r0 * k..(r0 + rows) * k]
            } else {
                cols.resize(tile * k, 0.0);
                im2col_tile(g, input, r0, rows, cols);
                &cols[..rows * k]
            };
            if !gemm_f16::gemm(rows, a, k, packed, halves, out_tile, bias, epilogue) {
                sgemm(
                    rows,
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
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::balanced_tile;

    #[test]
    fn balanced_tiles_cover_the_rows_evenly() {
        assert_eq!(balanced_tile(1568, 85, 2), 79);
        assert_eq!(balanced_tile(1568, 85, 1), 83);
        assert_eq!(balanced_tile(100, 200, 2), 200);
        assert_eq!(balanced_tile(0, 0, 0), 1);
        for rows in 1..300 {
            for requested in 1..40 {
                for threads in 1..5 {
                    let t = balanced_tile(rows, requested, threads);
                    let tiles = rows.div_ceil(t);
                    assert!(
                        t >= 1 && t <= requested,
                        "{rows} {requested} {threads}: {t}"
                    );
                    if tiles > 1 {
                        // Every thread gets the same number of tiles, or
                        // one fewer for the last, shorter ones.
                        assert!(tiles >= rows.div_ceil(requested), "{rows} {requested}");
                        assert!(
                            tiles * t - rows < t * threads,
                            "{rows} {requested} {threads}"
                        );
                    }
                }
            }
        }
    }
}
