//! im2col and col2im on row tiles: the patches of a run of output rows,
//! and adding patch gradients back into the input gradient.

use super::ConvGeometry;

/// Fill `cols` (`rows x kh*kw*c`) with the patches of output rows
/// `r0..r0+rows` (zeros where the window covers padding).
pub(super) fn im2col_tile(
    g: &ConvGeometry,
    input: &[f32],
    r0: usize,
    rows: usize,
    cols: &mut [f32],
) {
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
pub(super) fn col2im_tile(
    g: &ConvGeometry,
    dcols: &[f32],
    r0: usize,
    rows: usize,
    dx_img: &mut [f32],
) {
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
