//! The input gradient: per tile of output rows, `dcols = dy_tile W^T`, then
//! col2im adds the patches back. Threads take whole images, so no two
//! threads add into the same pixels; 1x1 stride-1 unpadded convolutions are
//! one GEMM per row tile straight into `dx`.

use rayon::prelude::*;

use super::{im2col::col2im_tile, winograd, ConvGeometry, Tuning};
use crate::gemm::{sgemm, Layout, Parallelism};

/// Input gradient; lengths already checked.
pub(super) fn run(g: &ConvGeometry, dy: &[f32], kernel: &[f32], dx: &mut [f32], tuning: Tuning) {
    let (k, f) = (g.patch_len(), g.f);
    let (img_in, per_img) = (g.h * g.w * g.c, g.oh * g.ow);
    if dx.is_empty() {
        return;
    }
    if tuning.winograd_input && winograd::fits(g) {
        winograd::backward_input(g, dy, kernel, dx, tuning.winograd_tile);
        return;
    }
    let tile = tuning.tile_rows.max(1);
    if g.is_pointwise() {
        // dx rows = dy rows x W^T, tiled over rows.
        dx.par_chunks_mut(tile * k)
            .enumerate()
            .for_each(|(t, dx_tile)| {
                let r0 = t * tile;
                let rows = dx_tile.len() / k;
                sgemm(
                    rows,
                    f,
                    k,
                    &dy[r0 * f..(r0 + rows) * f],
                    Layout::RowMajor,
                    kernel,
                    Layout::Transposed,
                    dx_tile,
                    false,
                    Parallelism::Sequential,
                );
            });
        return;
    }
    dx.par_chunks_mut(img_in).enumerate().for_each_init(
        Vec::new,
        |dcols: &mut Vec<f32>, (img, dx_img)| {
            dx_img.fill(0.0);
            dcols.resize(tile.min(per_img) * k, 0.0);
            let mut start = 0;
            while start < per_img {
                let rows = tile.min(per_img - start);
                let r0 = img * per_img + start;
                sgemm(
                    rows,
                    f,
                    k,
                    &dy[r0 * f..(r0 + rows) * f],
                    Layout::RowMajor,
                    kernel,
                    Layout::Transposed,
                    dcols,
                    false,
                    Parallelism::Sequential,
                );
                col2im_tile(g, dcols, r0, rows, dx_img);
                start += rows;
            }
        },
    );
}
