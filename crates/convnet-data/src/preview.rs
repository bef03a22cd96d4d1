//! `augment_preview`: one image under several random augmentations, as a PNG
//! grid (the picture every augmentation tutorial shows).

use std::path::Path;

use convnet_tensor::Rng;

use crate::augment::ImageDataGenerator;
use crate::directory::{load_img, ColorMode, Interpolation};
use crate::{DataError, Result};

/// Writes to `out_png` a grid of `n` random augmentations of the image at
/// `image_path` (at its own size, rgb), `ceil(sqrt(n))` per row, with a
/// 2-pixel white gap. The rescale is not applied (the picture shows 0..255).
/// The draws come from seed 0; see [`augment_preview_seeded`].
pub fn augment_preview(
    image_path: impl AsRef<Path>,
    generator: &ImageDataGenerator,
    n: usize,
    out_png: impl AsRef<Path>,
) -> Result<()> {
    augment_preview_seeded(image_path, generator, n, out_png, 0)
}

/// [`augment_preview`] with the draws taken from `seed`.
pub fn augment_preview_seeded(
    image_path: impl AsRef<Path>,
    generator: &ImageDataGenerator,
    n: usize,
    out_png: impl AsRef<Path>,
    seed: u64,
) -> Result<()> {
    let out_png = out_png.as_ref();
    let img = load_img(image_path, None, ColorMode::Rgb, Interpolation::Nearest)?;
    let (h, w) = (img.shape()[0], img.shape()[1]);
    let src = img.values().to_vec();
    let n = n.max(1);
    let cols = (n as f64).sqrt().ceil() as usize;
    let rows = n.div_ceil(cols);
    const GAP: usize = 2;
    let (gw, gh) = (cols * w + (cols - 1) * GAP, rows * h + (rows - 1) * GAP);
    let mut grid = image::RgbImage::from_pixel(gw as u32, gh as u32, image::Rgb([255, 255, 255]));
    let rng = Rng::new(seed);
    for i in 0..n {
        let out = generator.random_transform(&src, h, w, 3, &mut rng.fork(i as u64));
        let (ox, oy) = ((i % cols) * (w + GAP), (i / cols) * (h + GAP));
        for y in 0..h {
            for x in 0..w {
                let p = &out[(y * w + x) * 3..(y * w + x) * 3 + 3];
                let px = image::Rgb([0, 1, 2].map(|k| p[k].round().clamp(0.0, 255.0) as u8));
                grid.put_pixel((ox + x) as u32, (oy + y) as u32, px);
            }
        }
    }
    grid.save_with_format(out_png, image::ImageFormat::Png)
        .map_err(|e| DataError::Io {
            path: out_png.display().to_string(),
            message: e.to_string(),
        })
}
