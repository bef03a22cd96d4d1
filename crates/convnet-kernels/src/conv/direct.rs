//! A direct kernel for layers with few input channels (the first layer of
//! an image model: `c = 3`, `k = 27`), where the GEMM's inner dimension is
//! too small for a packed GEMM to pay.

use super::{ConvGeometry, Epilogue, Tuning};

/// Whether the direct kernel handles `g`.
pub(super) fn applies(_g: &ConvGeometry) -> bool {
    false
}

/// Forward convolution by the direct kernel; lengths already checked.
pub(super) fn forward(
    _g: &ConvGeometry,
    _input: &[f32],
    _kernel: &[f32],
    _bias: Option<&[f32]>,
    _epilogue: Epilogue,
    _out: &mut [f32],
    _tuning: Tuning,
) {
    unreachable!("direct::applies is false")
}
