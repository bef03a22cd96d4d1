//! Compute kernels on plain `f32` slices.
