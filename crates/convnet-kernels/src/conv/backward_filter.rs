//! The filter and bias gradients: `dW = sum over tiles of im2col(tile)^T
//! dY(tile)`, `db = column sums of dY`. The tiles are split into a fixed
//! number of contiguous groups ([`FILTER_PARTIALS`], whatever the thread
//! count); each group is summed by one task into its own partial, and the
//! partials are added in group order at the end, so the result is bitwise
//! the same with any number of threads.
//!
//! Layers with few input channels (the first layer of an image model) use
//! the direct kernel of `direct_filter.rs` on each tile instead of im2col +
//! GEMM; the tiles and their grouping are the same.

use rayon::prelude::*;

use super::{
    direct, direct_filter::FilterGradient, im2col::im2col_tile, winograd, ConvGeometry, Tuning,
    FILTER_PARTIALS,
};
use crate::gemm::{sgemm, Layout, Parallelism};

/// Filter (and bias) gradient; lengths already checked.
pub(super) fn run(
    g: &ConvGeometry,
    input: &[f32],
    dy: &[f32],
    dkernel: &mut [f32],
    dbias: Option<&mut [f32]>,
    tuning: Tuning,
) {
    if tuning.winograd_filter && winograd::fits(g) {
        winograd::backward_filter(g, input, dy, dkernel, dbias, tuning.winograd_tile);
        return;
    }
    let (k, f, rows) = (g.patch_len(), g.f, g.rows());
    let tile = tuning.tile_rows.max(1);
    let tiles = rows.div_ceil(tile);
    let groups = FILTER_PARTIALS.min(tiles.max(1));
    let pointwise = g.is_pointwise();
    let want_bias = dbias.is_some();
    let direct =
        (tuning.direct && direct::applies(g)).then(|| FilterGradient::new(g, input, tuning));
    let partials: Vec<(Vec<f32>, Vec<f64>)> = (0..groups)
        .into_par_iter()
        .map(|grp| {
            let mut dw = vec![0.0f32; k * f];
            let mut db = vec![0.0f64; if want_bias { f } else { 0 }];
            let mut tile_db = vec![0.0f32; f];
            let mut cols = Vec::new();
            let mut scratch = Default::default();
            for t in grp * tiles / groups..(grp + 1) * tiles / groups {
                let r0 = t * tile;
                let n_rows = tile.min(rows - r0);
                let dy_tile = &dy[r0 * f..(r0 + n_rows) * f];
                if let Some(d) = &direct {
                    d.add_tile(r0, dy_tile, &mut dw, &mut scratch);
                } else {
                    let a: &[f32] = if pointwise {
                        &input[r0 * k..(r0 + n_rows) * k]
                    } else {
                        cols.resize(tile * k, 0.0);
                        im2col_tile(g, input, r0, n_rows, &mut cols);
                        &cols[..n_rows * k]
                    };
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
                }
                if want_bias {
                    // f32 sums within a tile (vectorised), f64 across tiles.
                    column_sums(dy_tile, f, &mut tile_db);
                    db.iter_mut()
                        .zip(&tile_db)
                        .for_each(|(a, &v)| *a += v as f64);
                }
            }
            (dw, db)
        })
        .collect();
    dkernel.fill(0.0);
    for (dw, _) in &partials {
        dkernel.iter_mut().zip(dw).for_each(|(a, &v)| *a += v);
    }
    if let Some(out) = dbias {
        let mut total = vec![0.0f64; f];
        for (_, db) in &partials {
            total.iter_mut().zip(db).for_each(|(a, &v)| *a += v);
        }
        out.iter_mut().zip(&total).for_each(|(o, &v)| *o = v as f32);
    }
}

/// `sums[j]` = the sum of column `j` of `m` (`rows x f`), row by row.
///
/// The sums of up to `W` columns at once stay in registers while the rows
/// stream by (summed in place in `sums`, each row waited for the store of
/// the previous one).
fn column_sums(m: &[f32], f: usize, sums: &mut [f32]) {
    fn block<const W: usize>(m: &[f32], f: usize, c0: usize, sums: &mut [f32]) {
        let mut acc = [0.0f32; W];
        for row in m.chunks_exact(f) {
            let row: &[f32; W] = row[c0..c0 + W].try_into().unwrap();
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v;
            }
        }
        sums[c0..c0 + W].copy_from_slice(&acc);
    }
    let mut c0 = 0;
    while c0 < f {
        match f - c0 {
            32.. => block::<32>(m, f, c0, sums),
            8.. => block::<8>(m, f, c0, sums),
            _ => block::<1>(m, f, c0, sums),
        }
        c0 += match f - c0 {
            32.. => 32,
            8.. => 8,
            _ => 1,
        };
    }
}
