//! Keras's `ImageDataGenerator`: random augmentation of images, with the
//! parameters and semantics of Keras 2 (`keras.preprocessing.image`).
//!
//! Every geometric parameter (rotation, shifts, shear, zoom and the flips)
//! composes into ONE affine matrix about the image centre, as Keras's
//! `apply_affine_transform` / `transform_matrix_offset_center` build it, and
//! the image is resampled once with bilinear interpolation (Keras uses
//! `scipy.ndimage.affine_transform` with `order=1`, which is bilinear). Then
//! the channel shift and the brightness are applied, and last the rescale
//! ([`ImageDataGenerator::standardize`]), as Keras does.
//!
//! Images here are one `(height, width, channels)` slice of `f32`, row-major
//! (one NHWC image without its batch axis), values 0..255.
//!
//! ```
//! use convnet_data::augment::ImageDataGenerator;
//! use convnet_tensor::Rng;
//! let gen = ImageDataGenerator::new()
//!     .rescale(1.0 / 255.0)
//!     .rotation_range(40.0)
//!     .width_shift_range(0.2)
//!     .height_shift_range(0.2)
//!     .shear_range(0.2)
//!     .zoom_range(0.2)
//!     .horizontal_flip(true);
//! let image = vec![128.0f32; 8 * 8 * 3];
//! let mut rng = Rng::new(42);
//! let out = gen.random_transform(&image, 8, 8, 3, &mut rng);
//! let out = gen.standardize(out);
//! assert_eq!(out.len(), 8 * 8 * 3);
//! assert!(out.iter().all(|v| (0.0..=1.0).contains(v)));
//! ```

use convnet_tensor::Rng;

/// How points outside the input image are filled (Keras's `fill_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FillMode {
    /// `aaaaaaaa|abcd|dddddddd`: the nearest edge pixel (Keras's default).
    #[default]
    Nearest,
    /// `kkkkkkkk|abcd|kkkkkkkk`: the constant `cval`.
    Constant,
    /// `abcddcba|abcd|dcbaabcd`: mirrored about the edge (half-sample
    /// symmetric, scipy's `reflect`).
    Reflect,
    /// `abcdabcd|abcd|abcdabcd`: periodic.
    Wrap,
}

/// One random draw of the augmentation parameters, as Keras's
/// `get_random_transform` returns them. Coordinates are `(row, column)`:
/// `tx` shifts rows (height), `ty` shifts columns (width), as in Keras.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TransformParams {
    /// Rotation in degrees.
    pub theta: f64,
    /// Shift along the rows (height), in pixels. An output pixel at row `r`
    /// takes the input at row `r + tx`.
    pub tx: f64,
    /// Shift along the columns (width), in pixels. An output pixel at column
    /// `c` takes the input at column `c + ty`.
    pub ty: f64,
    /// Shear angle in degrees.
    pub shear: f64,
    /// Zoom along the rows (`> 1` zooms out).
    pub zx: f64,
    /// Zoom along the columns (`> 1` zooms out).
    pub zy: f64,
    /// Mirror left-right.
    pub flip_horizontal: bool,
    /// Mirror top-bottom.
    pub flip_vertical: bool,
    /// Added to every channel, clipped to the image's range (Keras's
    /// `apply_channel_shift`).
    pub channel_shift_intensity: Option<f32>,
    /// Brightness factor: values are multiplied by it and clipped to 0..255.
    pub brightness: Option<f32>,
}

impl Default for TransformParams {
    /// The identity transform.
    fn default() -> Self {
        TransformParams {
            theta: 0.0,
            tx: 0.0,
            ty: 0.0,
            shear: 0.0,
            zx: 1.0,
            zy: 1.0,
            flip_horizontal: false,
            flip_vertical: false,
            channel_shift_intensity: None,
            brightness: None,
        }
    }
}

type Mat3 = [[f64; 3]; 3];

const IDENTITY: Mat3 = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

fn matmul(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut out = [[0.0; 3]; 3];
    for (i, row) in out.iter_mut().enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    out
}

impl TransformParams {
    /// The 3x3 matrix that maps an output pixel `(row, col, 1)` to the input
    /// point it samples, for an image of `h` x `w` pixels: Keras's
    /// `rotation @ shift @ shear @ zoom`, moved to the centre by
    /// `transform_matrix_offset_center` (centre `(h/2 + 0.5, w/2 + 0.5)`, as
    /// Keras 2 has it), then composed with the flips (which Keras applies
    /// after the affine transform). `None` when it is the identity.
    pub fn matrix(&self, h: usize, w: usize) -> Option<[[f64; 3]; 3]> {
        let mut m: Option<Mat3> = None;
        let mut push = |b: Mat3| {
            m = Some(match m {
                None => b,
                Some(a) => matmul(&a, &b),
            })
        };
        if self.theta != 0.0 {
            let t = self.theta.to_radians();
            push([
                [t.cos(), -t.sin(), 0.0],
                [t.sin(), t.cos(), 0.0],
                [0.0, 0.0, 1.0],
            ]);
        }
        if self.tx != 0.0 || self.ty != 0.0 {
            push([[1.0, 0.0, self.tx], [0.0, 1.0, self.ty], [0.0, 0.0, 1.0]]);
        }
        if self.shear != 0.0 {
            let s = self.shear.to_radians();
            push([[1.0, -s.sin(), 0.0], [0.0, s.cos(), 0.0], [0.0, 0.0, 1.0]]);
        }
        if self.zx != 1.0 || self.zy != 1.0 {
            push([[self.zx, 0.0, 0.0], [0.0, self.zy, 0.0], [0.0, 0.0, 1.0]]);
        }
        let mut m = m.map(|m| {
            let (ox, oy) = (h as f64 / 2.0 + 0.5, w as f64 / 2.0 + 0.5);
            let offset = [[1.0, 0.0, ox], [0.0, 1.0, oy], [0.0, 0.0, 1.0]];
            let reset = [[1.0, 0.0, -ox], [0.0, 1.0, -oy], [0.0, 0.0, 1.0]];
            matmul(&matmul(&offset, &m), &reset)
        });
        if self.flip_horizontal {
            let f = [
                [1.0, 0.0, 0.0],
                [0.0, -1.0, w as f64 - 1.0],
                [0.0, 0.0, 1.0],
            ];
            m = Some(matmul(&m.unwrap_or(IDENTITY), &f));
        }
        if self.flip_vertical {
            let f = [
                [-1.0, 0.0, h as f64 - 1.0],
                [0.0, 1.0, 0.0],
                [0.0, 0.0, 1.0],
            ];
            m = Some(matmul(&m.unwrap_or(IDENTITY), &f));
        }
        m
    }
}

/// Maps a possibly out-of-range index into `0..n` by the fill mode
/// (`Constant` clamps: the caller has already decided the point is inside).
#[inline]
fn map_index(i: isize, n: usize, mode: FillMode) -> usize {
    let n = n as isize;
    match mode {
        FillMode::Nearest | FillMode::Constant => i.clamp(0, n - 1) as usize,
        FillMode::Reflect => {
            let m = i.rem_euclid(2 * n);
            (if m >= n { 2 * n - 1 - m } else { m }) as usize
        }
        FillMode::Wrap => i.rem_euclid(n) as usize,
    }
}

/// Resamples `src` (`h` x `w` x `c`) through `m` (output pixel to input
/// point) with bilinear interpolation into `out` (same size).
#[allow(clippy::too_many_arguments)]
pub fn affine_transform(
    src: &[f32],
    h: usize,
    w: usize,
    c: usize,
    m: &[[f64; 3]; 3],
    fill_mode: FillMode,
    cval: f32,
    out: &mut [f32],
) {
    assert_eq!(src.len(), h * w * c, "affine_transform: source size");
    assert_eq!(out.len(), h * w * c, "affine_transform: output size");
    const EPS: f64 = 1e-6;
    for r in 0..h {
        for col in 0..w {
            let (rf, cf) = (r as f64, col as f64);
            let y = m[0][0] * rf + m[0][1] * cf + m[0][2];
            let x = m[1][0] * rf + m[1][1] * cf + m[1][2];
            let o = &mut out[(r * w + col) * c..(r * w + col + 1) * c];
            if !y.is_finite() || !x.is_finite() {
                o.fill(cval);
                continue;
            }
            if fill_mode == FillMode::Constant
                && (y < -EPS || y > (h - 1) as f64 + EPS || x < -EPS || x > (w - 1) as f64 + EPS)
            {
                o.fill(cval);
                continue;
            }
            // Far outside, keep the floor in isize range.
            let y = y.clamp(-4.0 * h as f64 - 4.0, 5.0 * h as f64 + 4.0);
            let x = x.clamp(-4.0 * w as f64 - 4.0, 5.0 * w as f64 + 4.0);
            let (y0, x0) = (y.floor(), x.floor());
            let (fy, fx) = ((y - y0) as f32, (x - x0) as f32);
            let (y0, x0) = (y0 as isize, x0 as isize);
            let ya = map_index(y0, h, fill_mode);
            let yb = map_index(y0 + 1, h, fill_mode);
            let xa = map_index(x0, w, fill_mode);
            let xb = map_index(x0 + 1, w, fill_mode);
            let (w00, w01) = ((1.0 - fy) * (1.0 - fx), (1.0 - fy) * fx);
            let (w10, w11) = (fy * (1.0 - fx), fy * fx);
            let (p00, p01) = ((ya * w + xa) * c, (ya * w + xb) * c);
            let (p10, p11) = ((yb * w + xa) * c, (yb * w + xb) * c);
            for (k, v) in o.iter_mut().enumerate() {
                *v = w00 * src[p00 + k]
                    + w01 * src[p01 + k]
                    + w10 * src[p10 + k]
                    + w11 * src[p11 + k];
            }
        }
    }
}

/// Keras's `ImageDataGenerator`: a builder of augmentation parameters. Every
/// range defaults to 0 (no augmentation), `fill_mode` to
/// [`FillMode::Nearest`], `cval` to 0, no rescale.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageDataGenerator {
    pub(crate) rescale: Option<f32>,
    pub(crate) rotation_range: f32,
    pub(crate) width_shift_range: f32,
    pub(crate) height_shift_range: f32,
    pub(crate) shear_range: f32,
    pub(crate) zoom_range: (f32, f32),
    pub(crate) horizontal_flip: bool,
    pub(crate) vertical_flip: bool,
    pub(crate) brightness_range: Option<(f32, f32)>,
    pub(crate) channel_shift_range: f32,
    pub(crate) fill_mode: FillMode,
    pub(crate) cval: f32,
}

impl Default for ImageDataGenerator {
    fn default() -> Self {
        ImageDataGenerator {
            rescale: None,
            rotation_range: 0.0,
            width_shift_range: 0.0,
            height_shift_range: 0.0,
            shear_range: 0.0,
            zoom_range: (1.0, 1.0),
            horizontal_flip: false,
            vertical_flip: false,
            brightness_range: None,
            channel_shift_range: 0.0,
            fill_mode: FillMode::Nearest,
            cval: 0.0,
        }
    }
}

impl ImageDataGenerator {
    /// A generator that changes nothing (every range 0).
    pub fn new() -> Self {
        Self::default()
    }

    /// Multiply every value by `factor` after augmentation (e.g. `1.0/255.0`).
    pub fn rescale(mut self, factor: f32) -> Self {
        self.rescale = Some(factor);
        self
    }

    /// Rotate by a uniform random angle in `[-degrees, degrees]`.
    pub fn rotation_range(mut self, degrees: f32) -> Self {
        self.rotation_range = degrees;
        self
    }

    /// Shift horizontally by a uniform draw in `[-r, r]`: a fraction of the
    /// width when `r < 1`, pixels otherwise.
    pub fn width_shift_range(mut self, r: f32) -> Self {
        self.width_shift_range = r;
        self
    }

    /// Shift vertically by a uniform draw in `[-r, r]`: a fraction of the
    /// height when `r < 1`, pixels otherwise.
    pub fn height_shift_range(mut self, r: f32) -> Self {
        self.height_shift_range = r;
        self
    }

    /// Shear by a uniform random angle in `[-degrees, degrees]` (Keras's
    /// shear, counter-clockwise, in degrees).
    pub fn shear_range(mut self, degrees: f32) -> Self {
        self.shear_range = degrees;
        self
    }

    /// Zoom each axis independently by a uniform draw in `[1 - z, 1 + z]`.
    pub fn zoom_range(mut self, z: f32) -> Self {
        self.zoom_range = (1.0 - z, 1.0 + z);
        self
    }

    /// Zoom each axis independently by a uniform draw in `[lo, hi]`.
    pub fn zoom_range_pair(mut self, lo: f32, hi: f32) -> Self {
        self.zoom_range = (lo, hi);
        self
    }

    /// Mirror left-right with probability 1/2.
    pub fn horizontal_flip(mut self, on: bool) -> Self {
        self.horizontal_flip = on;
        self
    }

    /// Mirror top-bottom with probability 1/2.
    pub fn vertical_flip(mut self, on: bool) -> Self {
        self.vertical_flip = on;
        self
    }

    /// Multiply the values by a uniform draw in `[lo, hi]`, clipped to
    /// 0..255 (PIL's `ImageEnhance.Brightness` on the 0..255 image).
    pub fn brightness_range(mut self, lo: f32, hi: f32) -> Self {
        self.brightness_range = Some((lo, hi));
        self
    }

    /// Add a uniform draw in `[-r, r]` to every channel, clipped to the
    /// image's min..max (Keras's `channel_shift_range`).
    pub fn channel_shift_range(mut self, r: f32) -> Self {
        self.channel_shift_range = r;
        self
    }

    /// How points outside the image are filled.
    pub fn fill_mode(mut self, mode: FillMode) -> Self {
        self.fill_mode = mode;
        self
    }

    /// The value for [`FillMode::Constant`].
    pub fn cval(mut self, v: f32) -> Self {
        self.cval = v;
        self
    }

    /// Whether some random augmentation is configured (rescale aside).
    pub fn augments(&self) -> bool {
        self.rotation_range != 0.0
            || self.width_shift_range != 0.0
            || self.height_shift_range != 0.0
            || self.shear_range != 0.0
            || self.zoom_range != (1.0, 1.0)
            || self.horizontal_flip
            || self.vertical_flip
            || self.brightness_range.is_some()
            || self.channel_shift_range != 0.0
    }

    /// Draws the random parameters for an image of `h` x `w` pixels, as
    /// Keras's `get_random_transform`.
    pub fn get_random_transform(&self, h: usize, w: usize, rng: &mut Rng) -> TransformParams {
        let mut sym = |r: f32| f64::from(rng.uniform_range(-r, r));
        let theta = if self.rotation_range != 0.0 {
            sym(self.rotation_range)
        } else {
            0.0
        };
        let mut tx = 0.0;
        if self.height_shift_range != 0.0 {
            tx = sym(self.height_shift_range);
            if self.height_shift_range.abs() < 1.0 {
                tx *= h as f64;
            }
        }
        let mut ty = 0.0;
        if self.width_shift_range != 0.0 {
            ty = sym(self.width_shift_range);
            if self.width_shift_range.abs() < 1.0 {
                ty *= w as f64;
            }
        }
        let shear = if self.shear_range != 0.0 {
            sym(self.shear_range)
        } else {
            0.0
        };
        let (zx, zy) = if self.zoom_range == (1.0, 1.0) {
            (1.0, 1.0)
        } else {
            let (lo, hi) = self.zoom_range;
            (
                f64::from(rng.uniform_range(lo, hi)),
                f64::from(rng.uniform_range(lo, hi)),
            )
        };
        let flip_horizontal = self.horizontal_flip && rng.uniform() < 0.5;
        let flip_vertical = self.vertical_flip && rng.uniform() < 0.5;
        let channel_shift_intensity = (self.channel_shift_range != 0.0)
            .then(|| rng.uniform_range(-self.channel_shift_range, self.channel_shift_range));
        let brightness = self
            .brightness_range
            .map(|(lo, hi)| rng.uniform_range(lo, hi));
        TransformParams {
            theta,
            tx,
            ty,
            shear,
            zx,
            zy,
            flip_horizontal,
            flip_vertical,
            channel_shift_intensity,
            brightness,
        }
    }

    /// Applies `params` to `image` (`h` x `w` x `c`, values 0..255): one
    /// bilinear affine pass (always run, even for the identity), then the
    /// channel shift and the brightness. No rescale.
    pub fn apply_transform(
        &self,
        image: &[f32],
        h: usize,
        w: usize,
        c: usize,
        params: &TransformParams,
    ) -> Vec<f32> {
        let m = params.matrix(h, w).unwrap_or(IDENTITY);
        let mut out = vec![0.0; image.len()];
        affine_transform(image, h, w, c, &m, self.fill_mode, self.cval, &mut out);
        self.apply_intensity(&mut out, params);
        out
    }

    /// Draws parameters from `rng` and applies them (Keras's
    /// `random_transform`); the geometric pass is skipped when the draw is
    /// the identity. No rescale.
    pub fn random_transform(
        &self,
        image: &[f32],
        h: usize,
        w: usize,
        c: usize,
        rng: &mut Rng,
    ) -> Vec<f32> {
        let mut out = image.to_vec();
        self.random_transform_inplace(&mut out, h, w, c, rng);
        out
    }

    /// [`random_transform`](Self::random_transform) in place.
    pub fn random_transform_inplace(
        &self,
        image: &mut [f32],
        h: usize,
        w: usize,
        c: usize,
        rng: &mut Rng,
    ) {
        if !self.augments() {
            return;
        }
        let params = self.get_random_transform(h, w, rng);
        if let Some(m) = params.matrix(h, w) {
            let src = image.to_vec();
            affine_transform(&src, h, w, c, &m, self.fill_mode, self.cval, image);
        }
        self.apply_intensity(image, &params);
    }

    pub(crate) fn apply_intensity(&self, image: &mut [f32], params: &TransformParams) {
        if let Some(shift) = params.channel_shift_intensity {
            let lo = image.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = image.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            if lo <= hi {
                image
                    .iter_mut()
                    .for_each(|v| *v = (*v + shift).clamp(lo, hi));
            }
        }
        if let Some(b) = params.brightness {
            image
                .iter_mut()
                .for_each(|v| *v = (*v * b).clamp(0.0, 255.0));
        }
    }

    /// Applies the rescale (Keras's `standardize`), after augmentation.
    pub fn standardize(&self, mut image: Vec<f32>) -> Vec<f32> {
        self.standardize_inplace(&mut image);
        image
    }

    /// [`standardize`](Self::standardize) in place.
    pub fn standardize_inplace(&self, image: &mut [f32]) {
        if let Some(s) = self.rescale {
            image.iter_mut().for_each(|v| *v *= s);
        }
    }
}
