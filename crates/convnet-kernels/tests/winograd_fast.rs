//! Winograd's vectorised transforms (16 channels per step, interior tiles
//! without padding checks, a masked last channel block) through the public
//! functions, against f64 nested loops, on shapes the random-shape tests
//! in `conv.rs` reach rarely: several 16-channel blocks plus a remainder,
//! images wide enough for interior tiles beside edge tiles, outputs that
//! end mid-tile, and padding on some sides only.
//!
//! Tolerance as `conv.rs`'s Winograd one: `1e-5 * magnitude + 1e-6` per
//! value plus `3e-5` of the largest magnitude (the transforms mix a whole
//! tile's values); a wrong index or coefficient moves values by the size
//! of whole terms.

use convnet_kernels::conv::{
    conv2d_backward_filter_tuned, conv2d_backward_input_tuned, conv2d_forward_tuned, ConvGeometry,
    Epilogue, Tuning,
};
use convnet_kernels::Padding;

/// Deterministic values in [-1, 1).
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

/// Values and the sum of |terms| behind each.
struct Reference {
    value: Vec<f64>,
    magnitude: Vec<f64>,
}

impl Reference {
    fn zeros(len: usize) -> Self {
        Reference {
            value: vec![0.0; len],
            magnitude: vec![0.0; len],
        }
    }

    fn add(&mut self, i: usize, t: f64) {
        self.value[i] += t;
        self.magnitude[i] += t.abs();
    }

    #[track_caller]
    fn assert_close(&self, got: &[f32], what: &str) {
        assert_eq!(got.len(), self.value.len(), "{what}: length");
        let largest = self.magnitude.iter().fold(0.0f64, |a, &m| a.max(m));
        for (i, ((&g, &v), &m)) in got.iter().zip(&self.value).zip(&self.magnitude).enumerate() {
            let tol = 1e-5 * m + 1e-6 + 3e-5 * largest;
            assert!(
                (g as f64 - v).abs() <= tol,
                "{what}[{i}]: got {g}, want {v} (magnitude {m}, tolerance {tol})"
            );
        }
    }
}

/// Forward (with bias and the epilogue), input and filter gradients by
/// nested loops.
fn naive(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    b: &[f32],
    dy: &[f32],
    relu: bool,
) -> [Reference; 3] {
    let mut y = Reference::zeros(g.output_shape().iter().product());
    let mut dx = Reference::zeros(x.len());
    let mut dw = Reference::zeros(w.len());
    for i in 0..y.value.len() {
        y.add(i, b[i % g.f] as f64);
    }
    for img in 0..g.n {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                for ky in 0..3 {
                    for kx in 0..3 {
                        let iy = (oy + ky) as isize - g.pads.top as isize;
                        let ix = (ox + kx) as isize - g.pads.left as isize;
                        if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                            continue;
                        }
                        let xi = ((img * g.h + iy as usize) * g.w + ix as usize) * g.c;
                        let yi = ((img * g.oh + oy) * g.ow + ox) * g.f;
                        for ci in 0..g.c {
                            for fi in 0..g.f {
                                let wi = ((ky * 3 + kx) * g.c + ci) * g.f + fi;
                                let (xv, wv, dv) =
                                    (x[xi + ci] as f64, w[wi] as f64, dy[yi + fi] as f64);
                                y.add(yi + fi, xv * wv);
                                dx.add(xi + ci, dv * wv);
                                dw.add(wi, dv * xv);
                            }
                        }
                    }
                }
            }
        }
    }
    if relu {
        y.value.iter_mut().for_each(|v| *v = v.max(0.0));
    }
    [y, dx, dw]
}

fn check(input: [usize; 4], f: usize, padding: Padding, seed: u64) {
    let c = input[3];
    let g = ConvGeometry::new(input, [3, 3, c, f], (1, 1), padding).unwrap();
    let x = values(g.input_shape().iter().product(), seed);
    let w = values(g.kernel_shape().iter().product(), seed + 1);
    let b = values(f, seed + 2);
    let dy = values(g.output_shape().iter().product(), seed + 3);
    for relu in [false, true] {
        let [want_y, want_dx, want_dw] = naive(&g, &x, &w, &b, &dy, relu);
        let epilogue = if relu { Epilogue::Relu } else { Epilogue::None };
        for winograd_tile in [2, 4, 6] {
            let t = Tuning {
                winograd: true,
                winograd_input: true,
                winograd_filter: true,
                winograd_tile,
                ..Tuning::for_geometry(&g)
            };
            let ctx = format!("{g:?} F({winograd_tile}x{winograd_tile}) relu {relu}");
            let mut y = vec![f32::NAN; want_y.value.len()];
            conv2d_forward_tuned(&g, &x, &w, Some(&b), epilogue, &mut y, t).unwrap();
            want_y.assert_close(&y, &format!("forward {ctx}"));
            let mut dx = vec![f32::NAN; x.len()];
            conv2d_backward_input_tuned(&g, &dy, &w, &mut dx, t).unwrap();
            want_dx.assert_close(&dx, &format!("input gradient {ctx}"));
            let mut dw = vec![f32::NAN; w.len()];
            let mut db = vec![f32::NAN; f];
            conv2d_backward_filter_tuned(&g, &x, &dy, &mut dw, Some(&mut db), t).unwrap();
            want_dw.assert_close(&dw, &format!("filter gradient {ctx}"));
            for (fi, &got) in db.iter().enumerate() {
                let want: f64 = dy.iter().skip(fi).step_by(f).map(|&v| v as f64).sum();
                assert!(
                    (got as f64 - want).abs() <= 1e-4,
                    "bias gradient {ctx}[{fi}]: got {got}, want {want}"
                );
            }
        }
    }
}

#[test]
fn same_padding_with_channel_and_filter_remainders() {
    // 33 channels: two full blocks and one lane; 40 filters: 16 + 16 + 8.
    check([2, 19, 23, 33], 40, Padding::Same, 11);
}

#[test]
fn valid_with_many_interior_tiles() {
    // 24x24 outputs: whole tiles; 17 filters (a one-lane block), 48
    // channels (three full blocks).
    check([1, 26, 26, 48], 17, Padding::Valid, 12);
}

#[test]
fn padding_on_some_sides_only() {
    check(
        [3, 8, 13, 16],
        16,
        Padding::Explicit {
            top: 2,
            bottom: 0,
            left: 0,
            right: 1,
        },
        13,
    );
    check(
        [1, 17, 12, 7],
        35,
        Padding::Explicit {
            top: 0,
            bottom: 2,
            left: 2,
            right: 0,
        },
        14,
    );
}
