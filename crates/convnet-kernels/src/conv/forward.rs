//! The forward pass: per row tile, im2col into a per-thread buffer, one
//! single-threaded GEMM into the tile's rows of the output, then bias and
//! activation while the tile is in cache.

use rayon::prelude::*;

use super::{direct, im2col::im2col_tile, winograd, ConvGeometry, Epilogue, Tuning};
use crate::gemm::{sgemm, Layout, Parallelism};

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
    if tuning.winograd && winograd::fits(g) {
        winograd::forward(g, input, kernel, bias, epilogue, out, tuning.winograd_tile);
        return;
    }
    if tuning.direct && direct::applies(g) {
        direct::forward(g, input, kernel, bias, epilogue, out, tuning);
        return;
    }
    let tile = tuning.tile_rows.max(1);
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
