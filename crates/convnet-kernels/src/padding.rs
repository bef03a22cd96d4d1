//! Padding rules shared by convolution and pooling.

use crate::{Result, TensorError};

/// How a sliding window treats the borders, as Keras's `padding` argument,
/// plus explicit (possibly asymmetric) amounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Padding {
    /// No padding: the window stays inside the input.
    #[default]
    Valid,
    /// TensorFlow's `SAME`: output size `ceil(in / stride)`; the total padding
    /// is split with the extra pixel at the bottom/right.
    Same,
    /// Explicit amounts in pixels.
    Explicit {
        /// Rows added above.
        top: usize,
        /// Rows added below.
        bottom: usize,
        /// Columns added on the left.
        left: usize,
        /// Columns added on the right.
        right: usize,
    },
}

/// Resolved padding amounts in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pads {
    /// Rows added above.
    pub top: usize,
    /// Rows added below.
    pub bottom: usize,
    /// Columns added on the left.
    pub left: usize,
    /// Columns added on the right.
    pub right: usize,
}

fn same_1d(size: usize, k: usize, s: usize) -> (usize, usize, usize) {
    let out = size.div_ceil(s);
    let total = ((out - 1) * s + k).saturating_sub(size);
    (total / 2, total - total / 2, out)
}

impl Padding {
    /// The pads and output size `(pads, out_h, out_w)` of a `kh x kw` window
    /// with strides `(sh, sw)` over an `h x w` input. `op` names the caller in
    /// errors: zero sizes, zero strides and windows larger than the padded
    /// input are refused.
    pub fn resolve(
        &self,
        op: &str,
        (h, w): (usize, usize),
        (kh, kw): (usize, usize),
        (sh, sw): (usize, usize),
    ) -> Result<(Pads, usize, usize)> {
        if kh == 0 || kw == 0 {
            return Err(TensorError::invalid(
                op,
                format!("window size {kh}x{kw} must be positive"),
            ));
        }
        if sh == 0 || sw == 0 {
            return Err(TensorError::invalid(
                op,
                format!("strides ({sh}, {sw}) must be positive"),
            ));
        }
        if h == 0 || w == 0 {
            return Err(TensorError::invalid(
                op,
                format!("input spatial size {h}x{w} must be positive"),
            ));
        }
        let pads = match *self {
            Padding::Valid => Pads::default(),
            Padding::Same => {
                let (top, bottom, _) = same_1d(h, kh, sh);
                let (left, right, _) = same_1d(w, kw, sw);
                Pads {
                    top,
                    bottom,
                    left,
                    right,
                }
            }
            Padding::Explicit {
                top,
                bottom,
                left,
                right,
            } => Pads {
                top,
                bottom,
                left,
                right,
            },
        };
        let ph = h + pads.top + pads.bottom;
        let pw = w + pads.left + pads.right;
        if kh > ph || kw > pw {
            return Err(TensorError::invalid(
                op,
                format!(
                    "window {kh}x{kw} is larger than the padded input {ph}x{pw} (input {h}x{w}, padding {self:?})"
                ),
            ));
        }
        Ok((pads, (ph - kh) / sh + 1, (pw - kw) / sw + 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_matches_tensorflow() {
        // TF: 5 wide, k 3, s 2 -> out 3, total pad 2 -> 1/1.
        let (p, oh, ow) = Padding::Same.resolve("t", (5, 6), (3, 3), (2, 2)).unwrap();
        assert_eq!((oh, ow), (3, 3));
        assert_eq!((p.top, p.bottom), (1, 1));
        // 6 wide, k 3, s 2 -> out 3, total 1 -> 0 left, 1 right.
        assert_eq!((p.left, p.right), (0, 1));
        let (p, oh, _) = Padding::Same.resolve("t", (4, 4), (2, 2), (1, 1)).unwrap();
        assert_eq!((p.top, p.bottom, oh), (0, 1, 4));
    }

    #[test]
    fn valid_and_errors() {
        let (_, oh, ow) = Padding::Valid
            .resolve("t", (150, 150), (3, 3), (1, 1))
            .unwrap();
        assert_eq!((oh, ow), (148, 148));
        let e = Padding::Valid
            .resolve("Conv2D", (2, 2), (3, 3), (1, 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("Conv2D") && e.contains("3x3"), "{e}");
        assert!(Padding::Valid.resolve("t", (4, 4), (3, 3), (0, 1)).is_err());
        assert!(Padding::Valid.resolve("t", (0, 4), (1, 1), (1, 1)).is_err());
    }
}
