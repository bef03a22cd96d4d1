//! Winograd F(4, 7) and F(7, 7) along one axis, for the forward pass of
//! 1x7 and 7x1 stride-1 convolutions (InceptionV3's mixed4 to mixed7
//! blocks are made of them): each run of 4 outputs along the taps' axis
//! costs 10 multiplications per (input channel, filter) pair instead of
//! 28, each run of 7 costs 13 instead of 49. F(7, 7) is taken where its
//! tiles need at least 10% fewer multiplications, edge tiles counted
//! ([`tile`]): on the 7-wide maps of a 150x150 input 13 against F(4, 7)'s
//! 20 per line (whose second tile wastes an output). Alternated in one
//! process on Zen 3 (AVX2), F(7, 7) ran InceptionV3's 7x7 1x7 and 7x1
//! layers 1.21-1.43x faster than F(4, 7), and the whole frozen forward
//! pass 1.09x (pair median of 15 alternated runs of `cargo xtask bench
//! inception --forward`). Its rounding is larger: against Keras at
//! 150x150 (`tests/keras.rs`), mixed7's error was 2.2e-5 of its largest
//! value against 7.6e-6 with F(4, 7) (tolerance 1e-4).
//!
//! With `d` a run of 10 inputs, `g` the 7 taps and `y` the 4 outputs (13
//! and 7 for F(7, 7)):
//! `y = Aᵀ [(G g) ⊙ (Bᵀ d)]`, summed over input channels. Per band of
//! tiles the input transforms `V = Bᵀ d` are laid out as 10 matrices
//! (tiles x c), the filter transforms `U = G g` as 10 matrices (c x f),
//! 10 GEMMs give `M = V U`, and the output transform `Aᵀ M` adds the bias
//! and the ReLU while the band is in cache.
//!
//! F(4, 7)'s interpolation points are 0, ±1, ±2, ±1/2, ±1/3 and infinity
//! (Toom-Cook, as Lavin and Gray's 2-D transforms in [`super::winograd`];
//! F(7, 7)'s are at [`F7`]).
//! Points ±3 instead of ±1/3 gave transforms with entries up to 52 and
//! rounding errors 1.7x larger. In single precision the outputs carry
//! about 1e-5 of their size in error (the 2-D F(4x4, 3x3) about as much);
//! the tests bound it against f64 sums.
//!
//! A line along the axis is a row (1x7) or a column (7x1) of one image;
//! its outputs are cut into tiles of 4 (or 7), the last one's outputs past the
//! line's end dropped, and inputs outside the line (the padding) read as
//! zeros. Tiles are grouped so that each band of groups writes one
//! contiguous run of the output: a group is a row of tiles along a row
//! (1x7), or the tiles of 4 output rows across an image (7x1).

// The transform matrices read best written out with indices.
#![allow(clippy::needless_range_loop)]

use rayon::prelude::*;

use super::forward::balanced_tile;
#[cfg(target_arch = "x86_64")]
use super::winograd::Ymm2;
#[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
use super::winograd::Zmm;
use super::winograd::{
    blocks, lanes, multiply, pack_points, scratch, with_kernel_buffer, with_scratch, Path,
    Portable, Wide,
};
use super::{ConvGeometry, Epilogue};

/// Outputs per tile of F(4, 7).
const M: usize = 4;
/// Taps.
const R: usize = 7;
/// Inputs per tile of F(4, 7), and transform points.
const T: usize = M + R - 1;
/// Outputs per tile of F(7, 7).
const M7: usize = 7;
/// Inputs per tile of F(7, 7), and transform points.
const T7: usize = M7 + R - 1;

/// `Bᵀ`: a tile's 10 inputs to its 10 transform points.
const BT: [[f64; T]; T] = [
    [
        1.0 / 9.0,
        0.0,
        -19.0 / 12.0,
        0.0,
        35.0 / 6.0,
        0.0,
        -193.0 / 36.0,
        0.0,
        1.0,
        0.0,
    ],
    [
        0.0,
        -1.0 / 9.0,
        -1.0 / 9.0,
        53.0 / 36.0,
        53.0 / 36.0,
        -157.0 / 36.0,
        -157.0 / 36.0,
        1.0,
        1.0,
        0.0,
    ],
    [
        0.0,
        1.0 / 9.0,
        -1.0 / 9.0,
        -53.0 / 36.0,
        53.0 / 36.0,
        157.0 / 36.0,
        -157.0 / 36.0,
        -1.0,
        1.0,
        0.0,
    ],
    [
        0.0,
        -1.0 / 18.0,
        -1.0 / 36.0,
        7.0 / 9.0,
        7.0 / 18.0,
        -49.0 / 18.0,
        -49.0 / 36.0,
        2.0,
        1.0,
        0.0,
    ],
    [
        0.0,
        1.0 / 18.0,
        -1.0 / 36.0,
        -7.0 / 9.0,
        7.0 / 18.0,
        49.0 / 18.0,
        -49.0 / 36.0,
        -2.0,
        1.0,
        0.0,
    ],
    [
        0.0,
        -2.0 / 9.0,
        -4.0 / 9.0,
        41.0 / 18.0,
        41.0 / 9.0,
        -23.0 / 9.0,
        -46.0 / 9.0,
        1.0 / 2.0,
        1.0,
        0.0,
    ],
    [
        0.0,
        2.0 / 9.0,
        -4.0 / 9.0,
        -41.0 / 18.0,
        41.0 / 9.0,
        23.0 / 9.0,
        -46.0 / 9.0,
        -1.0 / 2.0,
        1.0,
        0.0,
    ],
    [
        0.0,
        -1.0 / 3.0,
        -1.0,
        7.0 / 4.0,
        21.0 / 4.0,
        -7.0 / 4.0,
        -21.0 / 4.0,
        1.0 / 3.0,
        1.0,
        0.0,
    ],
    [
        0.0,
        1.0 / 3.0,
        -1.0,
        -7.0 / 4.0,
        21.0 / 4.0,
        7.0 / 4.0,
        -21.0 / 4.0,
        -1.0 / 3.0,
        1.0,
        0.0,
    ],
    [
        0.0,
        1.0 / 9.0,
        0.0,
        -19.0 / 12.0,
        0.0,
        35.0 / 6.0,
        0.0,
        -193.0 / 36.0,
        0.0,
        1.0,
    ],
];

/// `Aᵀ`: the 10 points of a product to the tile's 4 outputs.
const AT: [[f64; T]; M] = [
    [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0],
    [
        0.0,
        1.0,
        -1.0,
        2.0,
        -2.0,
        1.0 / 2.0,
        -1.0 / 2.0,
        1.0 / 3.0,
        -1.0 / 3.0,
        0.0,
    ],
    [
        0.0,
        1.0,
        1.0,
        4.0,
        4.0,
        1.0 / 4.0,
        1.0 / 4.0,
        1.0 / 9.0,
        1.0 / 9.0,
        0.0,
    ],
    [
        0.0,
        1.0,
        -1.0,
        8.0,
        -8.0,
        1.0 / 8.0,
        -1.0 / 8.0,
        1.0 / 27.0,
        -1.0 / 27.0,
        1.0,
    ],
];

/// `G`: the 7 taps to the 10 points of the filter transform.
const G: [[f64; R]; T] = [
    [9.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [-0.25, -0.25, -0.25, -0.25, -0.25, -0.25, -0.25],
    [-0.25, 0.25, -0.25, 0.25, -0.25, 0.25, -0.25],
    [
        1.0 / 350.0,
        1.0 / 175.0,
        2.0 / 175.0,
        4.0 / 175.0,
        8.0 / 175.0,
        16.0 / 175.0,
        32.0 / 175.0,
    ],
    [
        1.0 / 350.0,
        -1.0 / 175.0,
        2.0 / 175.0,
        -4.0 / 175.0,
        8.0 / 175.0,
        -16.0 / 175.0,
        32.0 / 175.0,
    ],
    [
        128.0 / 25.0,
        64.0 / 25.0,
        32.0 / 25.0,
        16.0 / 25.0,
        8.0 / 25.0,
        4.0 / 25.0,
        2.0 / 25.0,
    ],
    [
        128.0 / 25.0,
        -64.0 / 25.0,
        32.0 / 25.0,
        -16.0 / 25.0,
        8.0 / 25.0,
        -4.0 / 25.0,
        2.0 / 25.0,
    ],
    [
        -6561.0 / 700.0,
        -2187.0 / 700.0,
        -729.0 / 700.0,
        -243.0 / 700.0,
        -81.0 / 700.0,
        -27.0 / 700.0,
        -9.0 / 700.0,
    ],
    [
        -6561.0 / 700.0,
        2187.0 / 700.0,
        -729.0 / 700.0,
        243.0 / 700.0,
        -81.0 / 700.0,
        27.0 / 700.0,
        -9.0 / 700.0,
    ],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
];

/// F(7, 7)'s `Bᵀ`: a tile's 13 inputs to its 13 transform points.
const BT7: [[f64; T7]; T7] = [
    [
        1.0 / 3.0,
        -1.0,
        -143.0 / 54.0,
        143.0 / 18.0,
        979.0 / 144.0,
        -979.0 / 48.0,
        -979.0 / 144.0,
        979.0 / 48.0,
        143.0 / 54.0,
        -143.0 / 18.0,
        -1.0 / 3.0,
        1.0,
        0.0,
    ],
    [
        0.0,
        -1.0 / 3.0,
        2.0 / 3.0,
        179.0 / 54.0,
        -125.0 / 27.0,
        -4937.0 / 432.0,
        1937.0 / 216.0,
        6811.0 / 432.0,
        -125.0 / 27.0,
        -131.0 / 18.0,
        2.0 / 3.0,
        1.0,
        0.0,
    ],
    [
        0.0,
        1.0 / 3.0,
        -4.0 / 3.0,
        -71.0 / 54.0,
        250.0 / 27.0,
        -1063.0 / 432.0,
        -1937.0 / 108.0,
        4811.0 / 432.0,
        250.0 / 27.0,
        -119.0 / 18.0,
        -4.0 / 3.0,
        1.0,
        0.0,
    ],
    [
        0.0,
        -1.0 / 6.0,
        5.0 / 12.0,
        331.0 / 216.0,
        -1385.0 / 432.0,
        -2161.0 / 432.0,
        3325.0 / 432.0,
        3131.0 / 432.0,
        -355.0 / 54.0,
        -83.0 / 18.0,
        5.0 / 3.0,
        1.0,
        0.0,
    ],
    [
        0.0,
        1.0 / 6.0,
        -7.0 / 12.0,
        -223.0 / 216.0,
        1939.0 / 432.0,
        499.0 / 432.0,
        -4655.0 / 432.0,
        859.0 / 432.0,
        497.0 / 54.0,
        -59.0 / 18.0,
        -7.0 / 3.0,
        1.0,
        0.0,
    ],
    [
        0.0,
        -2.0 / 3.0,
        2.0 / 3.0,
        179.0 / 27.0,
        -71.0 / 27.0,
        -4073.0 / 216.0,
        665.0 / 216.0,
        4267.0 / 216.0,
        -277.0 / 216.0,
        -283.0 / 36.0,
        1.0 / 6.0,
        1.0,
        0.0,
    ],
    [
        0.0,
        2.0 / 3.0,
        -10.0 / 3.0,
        37.0 / 27.0,
        355.0 / 27.0,
        -2743.0 / 216.0,
        -3325.0 / 216.0,
        3713.0 / 216.0,
        1385.0 / 216.0,
        -271.0 / 36.0,
        -5.0 / 6.0,
        1.0,
        0.0,
    ],
    [
        0.0,
        -2.0 / 9.0,
        14.0 / 27.0,
        19.0 / 9.0,
        -35.0 / 9.0,
        -57.0 / 8.0,
        637.0 / 72.0,
        751.0 / 72.0,
        -1435.0 / 216.0,
        -223.0 / 36.0,
        7.0 / 6.0,
        1.0,
        0.0,
    ],
    [
        0.0,
        2.0 / 9.0,
        -22.0 / 27.0,
        -11.0 / 9.0,
        55.0 / 9.0,
        11.0 / 24.0,
        -1001.0 / 72.0,
        341.0 / 72.0,
        2255.0 / 216.0,
        -187.0 / 36.0,
        -11.0 / 6.0,
        1.0,
        0.0,
    ],
    [
        0.0,
        -1.0 / 2.0,
        3.0 / 4.0,
        367.0 / 72.0,
        -205.0 / 48.0,
        -797.0 / 48.0,
        91.0 / 16.0,
        899.0 / 48.0,
        -5.0 / 2.0,
        -139.0 / 18.0,
        1.0 / 3.0,
        1.0,
        0.0,
    ],
    [
        0.0,
        1.0 / 2.0,
        -9.0 / 4.0,
        -43.0 / 72.0,
        205.0 / 16.0,
        -433.0 / 48.0,
        -273.0 / 16.0,
        739.0 / 48.0,
        15.0 / 2.0,
        -131.0 / 18.0,
        -1.0,
        1.0,
        0.0,
    ],
    [
        0.0,
        -1.0,
        0.0,
        143.0 / 18.0,
        0.0,
        -979.0 / 48.0,
        0.0,
        979.0 / 48.0,
        0.0,
        -143.0 / 18.0,
        0.0,
        1.0,
        0.0,
    ],
    [
        0.0,
        1.0 / 3.0,
        -1.0,
        -143.0 / 54.0,
        143.0 / 18.0,
        979.0 / 144.0,
        -979.0 / 48.0,
        -979.0 / 144.0,
        979.0 / 48.0,
        143.0 / 54.0,
        -143.0 / 18.0,
        -1.0 / 3.0,
        1.0,
    ],
];

/// F(7, 7)'s `Aᵀ`: the 13 points of a product to the tile's 7 outputs.
const AT7: [[f64; T7]; M7] = [
    [
        1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0,
    ],
    [
        0.0,
        1.0,
        -1.0,
        2.0,
        -2.0,
        1.0 / 2.0,
        -1.0 / 2.0,
        3.0 / 2.0,
        -3.0 / 2.0,
        2.0 / 3.0,
        -2.0 / 3.0,
        1.0 / 3.0,
        0.0,
    ],
    [
        0.0,
        1.0,
        1.0,
        4.0,
        4.0,
        1.0 / 4.0,
        1.0 / 4.0,
        9.0 / 4.0,
        9.0 / 4.0,
        4.0 / 9.0,
        4.0 / 9.0,
        1.0 / 9.0,
        0.0,
    ],
    [
        0.0,
        1.0,
        -1.0,
        8.0,
        -8.0,
        1.0 / 8.0,
        -1.0 / 8.0,
        27.0 / 8.0,
        -27.0 / 8.0,
        8.0 / 27.0,
        -8.0 / 27.0,
        1.0 / 27.0,
        0.0,
    ],
    [
        0.0,
        1.0,
        1.0,
        16.0,
        16.0,
        1.0 / 16.0,
        1.0 / 16.0,
        81.0 / 16.0,
        81.0 / 16.0,
        16.0 / 81.0,
        16.0 / 81.0,
        1.0 / 81.0,
        0.0,
    ],
    [
        0.0,
        1.0,
        -1.0,
        32.0,
        -32.0,
        1.0 / 32.0,
        -1.0 / 32.0,
        243.0 / 32.0,
        -243.0 / 32.0,
        32.0 / 243.0,
        -32.0 / 243.0,
        1.0 / 243.0,
        0.0,
    ],
    [
        0.0,
        1.0,
        1.0,
        64.0,
        64.0,
        1.0 / 64.0,
        1.0 / 64.0,
        729.0 / 64.0,
        729.0 / 64.0,
        64.0 / 729.0,
        64.0 / 729.0,
        1.0 / 729.0,
        1.0,
    ],
];

/// F(7, 7)'s `G`: the 7 taps to the 13 points of the filter transform.
const G7: [[f64; R]; T7] = [
    [3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [
        12.0 / 25.0,
        12.0 / 25.0,
        12.0 / 25.0,
        12.0 / 25.0,
        12.0 / 25.0,
        12.0 / 25.0,
        12.0 / 25.0,
    ],
    [
        -6.0 / 25.0,
        6.0 / 25.0,
        -6.0 / 25.0,
        6.0 / 25.0,
        -6.0 / 25.0,
        6.0 / 25.0,
        -6.0 / 25.0,
    ],
    [
        3.0 / 2800.0,
        3.0 / 1400.0,
        3.0 / 700.0,
        3.0 / 350.0,
        3.0 / 175.0,
        6.0 / 175.0,
        12.0 / 175.0,
    ],
    [
        -3.0 / 3920.0,
        3.0 / 1960.0,
        -3.0 / 980.0,
        3.0 / 490.0,
        -3.0 / 245.0,
        6.0 / 245.0,
        -12.0 / 245.0,
    ],
    [
        384.0 / 35.0,
        192.0 / 35.0,
        96.0 / 35.0,
        48.0 / 35.0,
        24.0 / 35.0,
        12.0 / 35.0,
        6.0 / 35.0,
    ],
    [
        -384.0 / 175.0,
        192.0 / 175.0,
        -96.0 / 175.0,
        48.0 / 175.0,
        -24.0 / 175.0,
        12.0 / 175.0,
        -6.0 / 175.0,
    ],
    [
        -384.0 / 15925.0,
        -576.0 / 15925.0,
        -864.0 / 15925.0,
        -1296.0 / 15925.0,
        -1944.0 / 15925.0,
        -2916.0 / 15925.0,
        -4374.0 / 15925.0,
    ],
    [
        384.0 / 25025.0,
        -576.0 / 25025.0,
        864.0 / 25025.0,
        -1296.0 / 25025.0,
        1944.0 / 25025.0,
        -2916.0 / 25025.0,
        4374.0 / 25025.0,
    ],
    [
        -177147.0 / 36400.0,
        -59049.0 / 18200.0,
        -19683.0 / 9100.0,
        -6561.0 / 4550.0,
        -2187.0 / 2275.0,
        -1458.0 / 2275.0,
        -972.0 / 2275.0,
    ],
    [
        59049.0 / 36400.0,
        -19683.0 / 18200.0,
        6561.0 / 9100.0,
        -2187.0 / 4550.0,
        729.0 / 2275.0,
        -486.0 / 2275.0,
        324.0 / 2275.0,
    ],
    [
        -118098.0 / 13475.0,
        -39366.0 / 13475.0,
        -13122.0 / 13475.0,
        -4374.0 / 13475.0,
        -1458.0 / 13475.0,
        -486.0 / 13475.0,
        -162.0 / 13475.0,
    ],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
];

/// One tile size of the transforms: its `Bᵀ`, `Aᵀ` and `G`.
trait Variant<const M: usize, const T: usize> {
    const BT: [[f64; T]; T];
    const AT: [[f64; T]; M];
    const G: [[f64; R]; T];
}

/// F(4, 7): 10 points per 4 outputs.
struct F4;

impl Variant<M, T> for F4 {
    const BT: [[f64; T]; T] = BT;
    const AT: [[f64; T]; M] = AT;
    const G: [[f64; R]; T] = G;
}

/// F(7, 7): 13 points per 7 outputs (1.54x fewer multiplications than
/// F(4, 7) on a 7-wide line, whose second F(4, 7) tile wastes an output),
/// on the points 0, ±1, ±2, ±1/2, ±3/2, ±2/3, 1/3 and infinity. A numpy
/// model in f32 (160 ReLU channels, worst of 300 tiles) put its rounding
/// at 4.2e-5 of the tile's largest output against 2.6e-5 for F(4, 7);
/// ±1/3 with ±3/2 and 2/3 gave 7.2e-5, ±3 with ±1/4 2.3e-4.
struct F7;

impl Variant<M7, T7> for F7 {
    const BT: [[f64; T7]; T7] = BT7;
    const AT: [[f64; T7]; M7] = AT7;
    const G: [[f64; R]; T7] = G7;
}

/// Bytes of transformed tiles (V and M together) per band: a band's GEMMs
/// read them from L2.
const BAND_BYTES: usize = 1 << 20;

/// The taps' axis of a 1x7 or 7x1 layer, and how its tiles lie in memory.
#[derive(Clone, Copy, Debug)]
struct Axis {
    /// Outputs per tile (4 or 7).
    m: usize,
    /// 7x1: the taps run down the columns.
    vertical: bool,
    /// Input and output length along the axis.
    len_in: usize,
    len_out: usize,
    /// Padding before the first input along the axis.
    pad: usize,
    /// Tiles per line.
    tiles: usize,
    /// Elements between neighbours along the axis, input and output.
    in_step: usize,
    out_step: usize,
    /// Groups of tiles, and tiles per group.
    groups: usize,
    per_group: usize,
}

impl Axis {
    /// The axis of `g` when it is 1x7 or 7x1 with stride 1 and no padding
    /// across the taps' axis, cut into tiles of `m` outputs.
    fn of(g: &ConvGeometry, m: usize) -> Option<Axis> {
        if g.sh != 1 || g.sw != 1 || g.oh == 0 || g.ow == 0 || g.n == 0 {
            return None;
        }
        let p = g.pads;
        if g.kh == 1 && g.kw == R && p.top == 0 && p.bottom == 0 {
            let tiles = g.ow.div_ceil(m);
            Some(Axis {
                m,
                vertical: false,
                len_in: g.w,
                len_out: g.ow,
                pad: p.left,
                tiles,
                in_step: g.c,
                out_step: g.f,
                groups: g.n * g.oh,
                per_group: tiles,
            })
        } else if g.kw == 1 && g.kh == R && p.left == 0 && p.right == 0 {
            let tiles = g.oh.div_ceil(m);
            Some(Axis {
                m,
                vertical: true,
                len_in: g.h,
                len_out: g.oh,
                pad: p.top,
                tiles,
                in_step: g.w * g.c,
                out_step: g.ow * g.f,
                groups: g.n * tiles,
                per_group: g.ow,
            })
        } else {
            None
        }
    }

    /// Offset of group `gi`'s first output (`gi = groups`: the end).
    fn group_start(&self, g: &ConvGeometry, gi: usize) -> usize {
        if self.vertical {
            let (img, ty) = (gi / self.tiles, gi % self.tiles);
            (img * g.oh + self.m * ty) * g.ow * g.f
        } else {
            gi * g.ow * g.f
        }
    }

    /// Tile `k` of group `gi`: the offsets of its line's first input and
    /// first output, and its first output's position along the line.
    fn tile(&self, g: &ConvGeometry, gi: usize, k: usize) -> (usize, usize, usize) {
        if self.vertical {
            let (img, ty) = (gi / self.tiles, gi % self.tiles);
            (
                (img * g.h * g.w + k) * g.c,
                (img * g.oh * g.ow + k) * g.f,
                self.m * ty,
            )
        } else {
            (gi * g.w * g.c, gi * g.ow * g.f, self.m * k)
        }
    }
}

/// Whether the forward pass of `g` runs here: 1x7 or 7x1, stride 1, no
/// padding across the taps, and at least 16 input channels and 16
/// filters (below that the transforms cost about as much as they save,
/// as for the 2-D transforms).
pub(super) fn applies(g: &ConvGeometry) -> bool {
    Axis::of(g, M).is_some() && g.c >= 16 && g.f >= 16
}

/// `U = G g` for every (channel, filter): 10 matrices `c x f`, one point
/// per task. In single precision: its rounding (7 terms, coefficients
/// below 10) is a hundredth of the input and output transforms'.
/// Every element of `u` (`T * c * f` values) is written.
fn transform_kernel<const M: usize, const T: usize, V: Variant<M, T>>(
    c: usize,
    f: usize,
    kernel: &[f32],
    path: Path,
    u: &mut [f32],
) {
    let cf = c * f;
    assert_eq!(
        u.len(),
        T * cf,
        "Winograd F({M}, 7): kernel transform buffer"
    );
    u.par_chunks_mut(cf.max(1))
        .enumerate()
        .for_each(|(p, up)| match path {
            // SAFETY: Path::Avx512 is only chosen on a CPU with AVX-512F.
            #[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
            Path::Avx512 => unsafe { kernel_point_avx512(&V::G[p], kernel, up) },
            // SAFETY: Path::Avx2 is only chosen on a CPU with AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Path::Avx2 => unsafe { kernel_point_avx2(&V::G[p], kernel, up) },
            // SAFETY: the portable lanes run anywhere.
            Path::Portable => unsafe { kernel_point::<Portable>(&V::G[p], kernel, up) },
        });
}

/// One point of [`transform_kernel`] (its row `gp` of `G`) into `up`
/// (`c x f` values).
///
/// # Safety
/// `W` must run on this CPU (see [`Path`]).
#[inline(always)]
unsafe fn kernel_point<W: Wide>(gp: &[f64; R], kernel: &[f32], up: &mut [f32]) {
    let cf = up.len();
    assert!(kernel.len() >= R * cf);
    for (e, lanes_used) in blocks(cf) {
        let mask = W::mask(lanes_used);
        let mut acc = W::zero();
        for (k, &w) in gp.iter().enumerate() {
            if w != 0.0 {
                // SAFETY: tap k's `cf` values lie in `kernel` (asserted),
                // e + lanes_used <= cf.
                acc = unsafe { W::load(kernel.as_ptr().add(k * cf + e), mask) }.madd(w as f32, acc);
            }
        }
        // SAFETY: e + lanes_used <= cf = up.len().
        unsafe { acc.store(up.as_mut_ptr().add(e), mask) };
    }
}

/// [`kernel_point`] with AVX-512.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
#[target_feature(enable = "avx512f")]
unsafe fn kernel_point_avx512(gp: &[f64; R], kernel: &[f32], up: &mut [f32]) {
    // SAFETY: the caller guarantees AVX-512F.
    unsafe { kernel_point::<Zmm>(gp, kernel, up) }
}

/// [`kernel_point`] with AVX2 and FMA.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_point_avx2(gp: &[f64; R], kernel: &[f32], up: &mut [f32]) {
    // SAFETY: the caller guarantees AVX2 and FMA.
    unsafe { kernel_point::<Ymm2>(gp, kernel, up) }
}

/// `V = Bᵀ d` for the tiles of groups `[g0, g1)`, into `v` (10 matrices
/// `tiles x c`). Tiles wholly inside their line load without checks.
///
/// # Safety
/// `W` must run on this CPU (see [`Path`]).
#[inline(always)]
unsafe fn input_band<W: Wide, const M: usize, const T: usize, V: Variant<M, T>>(
    g: &ConvGeometry,
    a: &Axis,
    input: &[f32],
    (g0, g1): (usize, usize),
    v: &mut [f32],
) {
    let c = g.c;
    let stride = (g1 - g0) * a.per_group * c;
    assert!(v.len() >= T * stride && input.len() >= g.n * g.h * g.w * c);
    let (src, dst) = (input.as_ptr(), v.as_mut_ptr());
    let len = a.len_in as isize;
    let mut n = 0;
    for gi in g0..g1 {
        for k in 0..a.per_group {
            let (base, _, pos) = a.tile(g, gi, k);
            let x0 = pos as isize - a.pad as isize;
            let inside = x0 >= 0 && x0 + T as isize <= len;
            for (ch, lanes_used) in blocks(c) {
                let mask = W::mask(lanes_used);
                // SAFETY: every load is of a position inside the line
                // (checked per tile, or per position at the ends), whose
                // `c` channels lie inside `input` (asserted), with
                // ch + lanes_used <= c; tile n's points lie inside `v`
                // (asserted, n < tiles).
                unsafe {
                    let d: [W; T] = lanes(|j| {
                        let x = x0 + j as isize;
                        if inside || (x >= 0 && x < len) {
                            W::load(src.add(base + x as usize * a.in_step + ch), mask)
                        } else {
                            W::zero()
                        }
                    });
                    let out = dst.add(n * c + ch);
                    for i in 0..T {
                        let mut acc = W::zero();
                        for j in 0..T {
                            if V::BT[i][j] != 0.0 {
                                acc = d[j].madd(V::BT[i][j] as f32, acc);
                            }
                        }
                        acc.store(out.add(i * stride), mask);
                    }
                }
            }
            n += 1;
        }
    }
}

/// `y = Aᵀ M` for the tiles of groups `[g0, g1)` from `m` (10 matrices
/// `tiles x f`), plus `bias` and the ReLU when `relu`, into `out` (the
/// band's outputs, from offset `base`). A tile's outputs past its line's
/// end are dropped.
///
/// # Safety
/// `W` must run on this CPU (see [`Path`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn output_band<W: Wide, const M: usize, const T: usize, V: Variant<M, T>>(
    g: &ConvGeometry,
    a: &Axis,
    (g0, g1): (usize, usize),
    m: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
    base: usize,
) {
    let f = g.f;
    let stride = (g1 - g0) * a.per_group * f;
    assert!(m.len() >= T * stride);
    assert!(base == a.group_start(g, g0) && out.len() >= a.group_start(g, g1) - base);
    assert!(bias.is_none_or(|b| b.len() >= f));
    let (src, dst) = (m.as_ptr(), out.as_mut_ptr());
    let mut n = 0;
    for gi in g0..g1 {
        for k in 0..a.per_group {
            let (_, line, pos) = a.tile(g, gi, k);
            let valid = (a.len_out - pos).min(M);
            for (fl, lanes_used) in blocks(f) {
                let mask = W::mask(lanes_used);
                // SAFETY: tile n's points lie in m (asserted), with
                // fl + lanes_used <= f; its outputs, positions below
                // len_out of a line of group gi, lie in the band, which
                // ends at group_start(g1) (asserted).
                unsafe {
                    let b = bias.map_or(W::zero(), |b| W::load(b.as_ptr().add(fl), mask));
                    let from = src.add(n * f + fl);
                    let mv: [W; T] = lanes(|p| W::load(from.add(p * stride), mask));
                    for i in 0..valid {
                        let mut y = W::zero();
                        for p in 0..T {
                            if V::AT[i][p] != 0.0 {
                                y = mv[p].madd(V::AT[i][p] as f32, y);
                            }
                        }
                        let y = y.add(b);
                        let y = if relu { y.relu() } else { y };
                        y.store(dst.add(line + (pos + i) * a.out_step + fl - base), mask);
                    }
                }
            }
            n += 1;
        }
    }
}

/// [`input_band`] with AVX-512.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
#[target_feature(enable = "avx512f")]
unsafe fn input_avx512<const M: usize, const T: usize, V: Variant<M, T>>(
    g: &ConvGeometry,
    a: &Axis,
    input: &[f32],
    groups: (usize, usize),
    v: &mut [f32],
) {
    // SAFETY: the caller guarantees AVX-512F.
    unsafe { input_band::<Zmm, M, T, V>(g, a, input, groups, v) }
}

/// [`output_band`] with AVX-512.
///
/// # Safety
/// The CPU must have AVX-512F.
#[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn output_avx512<const M: usize, const T: usize, V: Variant<M, T>>(
    g: &ConvGeometry,
    a: &Axis,
    groups: (usize, usize),
    m: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
    base: usize,
) {
    // SAFETY: the caller guarantees AVX-512F.
    unsafe { output_band::<Zmm, M, T, V>(g, a, groups, m, bias, relu, out, base) }
}

/// [`input_band`] with AVX2 and FMA.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn input_avx2<const M: usize, const T: usize, V: Variant<M, T>>(
    g: &ConvGeometry,
    a: &Axis,
    input: &[f32],
    groups: (usize, usize),
    v: &mut [f32],
) {
    // SAFETY: the caller guarantees AVX2 and FMA.
    unsafe { input_band::<Ymm2, M, T, V>(g, a, input, groups, v) }
}

/// [`output_band`] with AVX2 and FMA.
///
/// # Safety
/// The CPU must have AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn output_avx2<const M: usize, const T: usize, V: Variant<M, T>>(
    g: &ConvGeometry,
    a: &Axis,
    groups: (usize, usize),
    m: &[f32],
    bias: Option<&[f32]>,
    relu: bool,
    out: &mut [f32],
    base: usize,
) {
    // SAFETY: the caller guarantees AVX2 and FMA.
    unsafe { output_band::<Ymm2, M, T, V>(g, a, groups, m, bias, relu, out, base) }
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
    forward_on(
        g,
        input,
        kernel,
        bias,
        epilogue,
        out,
        Path::detect(),
        tile(g),
    )
}

/// Outputs per tile for `g`: 7 where F(7, 7)'s tiles need at least 10%
/// fewer multiplications than F(4, 7)'s, counting the outputs past the
/// line's end (lines of 7 and 14 outputs, 17, 19-21, ...), else 4.
fn tile(g: &ConvGeometry) -> usize {
    let len = if g.kh == 1 { g.ow } else { g.oh };
    if 10 * (len.div_ceil(M7) * T7) <= 9 * (len.div_ceil(M) * T) {
        M7
    } else {
        M
    }
}

/// [`forward`] with the transforms of `path` and tiles of `m` outputs (4
/// or 7).
#[allow(clippy::too_many_arguments)]
fn forward_on(
    g: &ConvGeometry,
    input: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
    path: Path,
    m: usize,
) {
    if m == M7 {
        forward_with::<M7, T7, F7>(g, input, kernel, bias, epilogue, out, path)
    } else {
        forward_with::<M, T, F4>(g, input, kernel, bias, epilogue, out, path)
    }
}

/// [`forward_on`] with the tile size of `V`.
#[allow(clippy::too_many_arguments)]
fn forward_with<const M: usize, const T: usize, V: Variant<M, T>>(
    g: &ConvGeometry,
    input: &[f32],
    kernel: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
    path: Path,
) {
    let Some(a) = Axis::of(g, M) else {
        unreachable!("Winograd F({M}, 7): called on {g:?}, which is not 1x7 or 7x1 with stride 1")
    };
    let (c, f) = (g.c, g.f);
    with_kernel_buffer(T * c * f, |u| {
        transform_kernel::<M, T, V>(c, f, kernel, path, u);
        forward_bands::<M, T, V>(g, &a, input, u, bias, epilogue, out, path)
    })
}

/// [`forward_on`]'s bands, with the kernel transforms `u`.
#[allow(clippy::too_many_arguments)]
fn forward_bands<const M: usize, const T: usize, V: Variant<M, T>>(
    g: &ConvGeometry,
    a: &Axis,
    input: &[f32],
    u: &[f32],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: &mut [f32],
    path: Path,
) {
    let (c, f) = (g.c, g.f);
    let relu = epilogue == Epilogue::Relu;
    // Groups per band: about BAND_BYTES of transformed tiles, the same
    // number of bands for each thread.
    let tile_bytes = T * 4 * (c + f);
    let want = (BAND_BYTES / tile_bytes.max(1) / a.per_group.max(1)).max(1);
    let per_band = balanced_tile(a.groups, want, rayon::current_num_threads());
    let mut bands = Vec::with_capacity(a.groups.div_ceil(per_band));
    let mut rest = out;
    for g0 in (0..a.groups).step_by(per_band) {
        let g1 = (g0 + per_band).min(a.groups);
        let len = a.group_start(g, g1) - a.group_start(g, g0);
        let (band, tail) = std::mem::take(&mut rest).split_at_mut(len);
        bands.push(((g0, g1), band));
        rest = tail;
    }
    let packed = pack_points(T, c, f, u);
    bands.into_par_iter().for_each(|(groups, out)| {
        with_scratch(|v, m, _| {
            let tiles = (groups.1 - groups.0) * a.per_group;
            let v = scratch(v, T * tiles * c);
            let m = scratch(m, T * tiles * f);
            let base = a.group_start(g, groups.0);
            match path {
                // SAFETY: Path::Avx512 is only chosen on a CPU with AVX-512F.
                #[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
                Path::Avx512 => unsafe { input_avx512::<M, T, V>(g, a, input, groups, v) },
                // SAFETY: Path::Avx2 is only chosen on a CPU with AVX2 and FMA.
                #[cfg(target_arch = "x86_64")]
                Path::Avx2 => unsafe { input_avx2::<M, T, V>(g, a, input, groups, v) },
                // SAFETY: the portable lanes run anywhere.
                Path::Portable => unsafe {
                    input_band::<Portable, M, T, V>(g, a, input, groups, v)
                },
            }
            multiply(T, tiles, (c, f), v, u, packed.as_deref(), m);
            match path {
                // SAFETY: Path::Avx512 is only chosen on a CPU with AVX-512F.
                #[cfg(all(target_arch = "x86_64", avx512_intrinsics))]
                Path::Avx512 => unsafe {
                    output_avx512::<M, T, V>(g, a, groups, m, bias, relu, out, base)
                },
                // SAFETY: Path::Avx2 is only chosen on a CPU with AVX2 and FMA.
                #[cfg(target_arch = "x86_64")]
                Path::Avx2 => unsafe {
                    output_avx2::<M, T, V>(g, a, groups, m, bias, relu, out, base)
                },
                // SAFETY: the portable lanes run anywhere.
                Path::Portable => unsafe {
                    output_band::<Portable, M, T, V>(g, a, groups, m, bias, relu, out, base)
                },
            }
        })
    });
}

#[cfg(test)]
mod tests {
    //! Every build of the transforms ([`Path`]) against f64 sums, on rows
    //! and columns with tiles past the line's end, padding on either side
    //! or none, channel counts that are not multiples of 16, and lines
    //! shorter than a tile.

    use super::*;
    use crate::Padding;

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

    /// The convolution by nested loops: `(value, sum of |terms|)` per
    /// output.
    fn naive(g: &ConvGeometry, x: &[f32], w: &[f32], bias: &[f32]) -> Vec<(f64, f64)> {
        let mut y = vec![(0.0f64, 0.0f64); g.n * g.oh * g.ow * g.f];
        for img in 0..g.n {
            for oy in 0..g.oh {
                for ox in 0..g.ow {
                    let yi = ((img * g.oh + oy) * g.ow + ox) * g.f;
                    for (fl, b) in bias.iter().enumerate() {
                        y[yi + fl] = (*b as f64, b.abs() as f64);
                    }
                    for ky in 0..g.kh {
                        for kx in 0..g.kw {
                            let iy = (oy + ky) as isize - g.pads.top as isize;
                            let ix = (ox + kx) as isize - g.pads.left as isize;
                            if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                                continue;
                            }
                            let xi = ((img * g.h + iy as usize) * g.w + ix as usize) * g.c;
                            for ch in 0..g.c {
                                for fl in 0..g.f {
                                    let wi = ((ky * g.kw + kx) * g.c + ch) * g.f + fl;
                                    let t = x[xi + ch] as f64 * w[wi] as f64;
                                    y[yi + fl].0 += t;
                                    y[yi + fl].1 += t.abs();
                                }
                            }
                        }
                    }
                }
            }
        }
        y
    }

    fn check(input: [usize; 4], kernel: (usize, usize), f: usize, padding: Padding, seed: u64) {
        let [n, h, w, c] = input;
        let g = ConvGeometry::new(input, [kernel.0, kernel.1, c, f], (1, 1), padding).unwrap();
        assert!(Axis::of(&g, M).is_some(), "{g:?}");
        let x = values(n * h * w * c, seed);
        let k = values(R * c * f, seed + 1);
        let bias = values(f, seed + 2);
        let want = naive(&g, &x, &k, &bias);
        let largest = want.iter().fold(0.0f64, |a, &(_, m)| a.max(m));
        for (path, m) in Path::available()
            .into_iter()
            .flat_map(|p| [(p, M), (p, M7)])
        {
            for epilogue in [Epilogue::None, Epilogue::Relu] {
                let mut y = vec![f32::NAN; want.len()];
                forward_on(&g, &x, &k, Some(&bias), epilogue, &mut y, path, m);
                for (i, (&got, &(v, m))) in y.iter().zip(&want).enumerate() {
                    let v = if epilogue == Epilogue::Relu {
                        v.max(0.0)
                    } else {
                        v
                    };
                    let tol = 2e-5 * m + 1e-6 + 2e-5 * largest;
                    assert!(
                        (got as f64 - v).abs() <= tol,
                        "F({m}, 7) {path:?} {epilogue:?} {g:?}: output {i} is {got}, want {v} (tolerance {tol})"
                    );
                }
            }
        }
    }

    #[test]
    fn rows_with_same_padding() {
        // 7 outputs per row: two tiles, the second one's last output
        // dropped; 35 channels (a 3-lane block), 19 filters.
        check([2, 3, 7, 35], (1, 7), 19, Padding::Same, 1);
    }

    #[test]
    fn columns_with_same_padding() {
        check([2, 7, 3, 35], (7, 1), 19, Padding::Same, 2);
    }

    #[test]
    fn long_lines_and_full_blocks() {
        check([1, 2, 23, 16], (1, 7), 32, Padding::Same, 3);
        check([1, 23, 2, 32], (7, 1), 16, Padding::Same, 4);
    }

    #[test]
    fn without_padding_and_uneven_padding() {
        check([1, 2, 13, 17], (1, 7), 17, Padding::Valid, 5);
        check([1, 13, 2, 17], (7, 1), 17, Padding::Valid, 6);
        let uneven = Padding::Explicit {
            top: 0,
            bottom: 0,
            left: 5,
            right: 1,
        };
        check([1, 2, 5, 16], (1, 7), 16, uneven, 7);
        let uneven = Padding::Explicit {
            top: 1,
            bottom: 6,
            left: 0,
            right: 0,
        };
        check([1, 3, 2, 16], (7, 1), 16, uneven, 8);
    }

    #[test]
    fn every_line_length_up_to_two_tiles_and_more() {
        // Lines of 1 to 15 outputs: shorter than a tile, one tile, a
        // tile and a remainder, two tiles and more (of 4 and of 7).
        for len in 1..=15 {
            check([1, 2, len, 16], (1, 7), 16, Padding::Same, 20 + len as u64);
            check([1, len, 2, 16], (7, 1), 16, Padding::Same, 40 + len as u64);
        }
    }

    /// F(7, 7) on the lines where its tiles need 10% fewer
    /// multiplications: 7 outputs (13 points against 20), 14 (26 against
    /// 40), 17 (InceptionV3 at 299x299: 39 against 50); F(4, 7) on 8
    /// (20 against 26) and 4 (10 against 13).
    #[test]
    fn tile_follows_the_multiplications() {
        let geo = |len: usize, vertical: bool| {
            let (input, kernel) = if vertical {
                ([1, len, 3, 16], [7, 1, 16, 16])
            } else {
                ([1, 3, len, 16], [1, 7, 16, 16])
            };
            ConvGeometry::new(input, kernel, (1, 1), Padding::Same).unwrap()
        };
        for vertical in [false, true] {
            for (len, want) in [(7, M7), (14, M7), (17, M7), (8, M), (4, M), (1, M)] {
                assert_eq!(tile(&geo(len, vertical)), want, "{len} {vertical}");
            }
        }
    }

    #[test]
    fn applies_to_1x7_and_7x1_with_enough_channels() {
        let geo = |input: [usize; 4], kernel: (usize, usize), f: usize, padding| {
            ConvGeometry::new(input, [kernel.0, kernel.1, input[3], f], (1, 1), padding).unwrap()
        };
        assert!(applies(&geo([32, 7, 7, 160], (1, 7), 160, Padding::Same)));
        assert!(applies(&geo([32, 7, 7, 160], (7, 1), 192, Padding::Same)));
        assert!(applies(&geo(
            [32, 17, 17, 128],
            (7, 1),
            128,
            Padding::Valid
        )));
        // Few channels or filters, other kernels, strides.
        assert!(!applies(&geo([32, 7, 7, 8], (1, 7), 160, Padding::Same)));
        assert!(!applies(&geo([32, 7, 7, 160], (1, 7), 8, Padding::Same)));
        assert!(!applies(&geo([32, 7, 7, 16], (1, 3), 16, Padding::Same)));
        assert!(!applies(&geo([32, 7, 7, 16], (7, 7), 16, Padding::Same)));
        let strided =
            ConvGeometry::new([32, 7, 7, 16], [1, 7, 16, 16], (2, 2), Padding::Same).unwrap();
        assert!(!applies(&strided));
        // Padding across the taps' axis.
        let across = Padding::Explicit {
            top: 1,
            bottom: 0,
            left: 3,
            right: 3,
        };
        assert!(!applies(&geo([32, 7, 7, 16], (1, 7), 16, across)));
    }
}
