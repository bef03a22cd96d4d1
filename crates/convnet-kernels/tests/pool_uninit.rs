//! The `_uninit` max-pooling kernels (which write into buffers that need not
//! be initialized, sparing the caller a zeroing pass) against the plain
//! ones: the same bits, every element written, on 2x2 stride-2 pooling (the
//! fast path), overlapping and padded windows, windows wholly in padding,
//! and inputs large enough to run in parallel; and the backward pass with
//! the ReLU's mask applied in the same pass.

use std::mem::MaybeUninit;

use convnet_kernels::pool::{
    max_pool2d_backward, max_pool2d_backward_masked_uninit, max_pool2d_backward_uninit,
    max_pool2d_forward, max_pool2d_forward_uninit, PoolGeometry,
};
use convnet_kernels::Padding;

fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(2862933555777941757)
        .wrapping_add(3037000493);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Garbage where the kernel must write: NaN floats, an odd index.
fn dirty<T: Copy>(len: usize, junk: T) -> Vec<MaybeUninit<T>> {
    vec![MaybeUninit::new(junk); len]
}

/// Read back a buffer the kernel wrote in full.
fn assume_written<T: Copy>(buf: &[MaybeUninit<T>]) -> Vec<T> {
    // SAFETY: every element was initialized by `dirty` and possibly
    // overwritten by the kernel.
    buf.iter().map(|v| unsafe { v.assume_init() }).collect()
}

fn check(g: &PoolGeometry, seed: u64) {
    let x = values(g.n * g.h * g.w * g.c, seed);
    let len = g.n * g.oh * g.ow * g.c;
    let (mut y, mut arg) = (vec![0.0f32; len], vec![0u32; len]);
    max_pool2d_forward(g, &x, &mut y, &mut arg).unwrap();
    let (mut yu, mut argu) = (dirty(len, f32::NAN), dirty(len, 0xdead_beef_u32));
    max_pool2d_forward_uninit(g, &x, &mut yu, &mut argu).unwrap();
    let (yu, argu) = (assume_written(&yu), assume_written(&argu));
    assert_eq!(
        y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        yu.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "forward {g:?}"
    );
    assert_eq!(arg, argu, "argmax {g:?}");

    let dy = values(len, seed + 1);
    let mut dx = vec![0.0f32; x.len()];
    max_pool2d_backward(g, &dy, &arg, &mut dx).unwrap();
    let mut dxu = dirty(x.len(), f32::NAN);
    max_pool2d_backward_uninit(g, &dy, &arg, &mut dxu).unwrap();
    let dxu = assume_written(&dxu);
    assert_eq!(
        dx.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        dxu.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "backward {g:?}"
    );
    assert!(
        dxu.iter().all(|v| v.is_finite()),
        "backward left junk {g:?}"
    );

    // The ReLU mask in the same pass: as masking the gradient first. The
    // "pooled values" here are values of both signs (and zeros).
    let out: Vec<f32> = values(len, seed + 2)
        .iter()
        .enumerate()
        .map(|(i, &v)| if i % 7 == 0 { 0.0 } else { v })
        .collect();
    let masked: Vec<f32> = dy
        .iter()
        .zip(&out)
        .map(|(&d, &o)| if o > 0.0 { d } else { 0.0 })
        .collect();
    let mut want = vec![0.0f32; x.len()];
    max_pool2d_backward(g, &masked, &arg, &mut want).unwrap();
    let mut got = dirty(x.len(), f32::NAN);
    max_pool2d_backward_masked_uninit(g, &dy, Some(&out), &arg, &mut got).unwrap();
    assert_eq!(
        want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        assume_written(&got)
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>(),
        "masked backward {g:?}"
    );
}

#[test]
fn uninit_kernels_match_the_plain_ones() {
    let cases = [
        // (n, h, w, c, pool, strides, padding)
        (2, 6, 6, 3, (2, 2), (2, 2), Padding::Valid),
        (3, 7, 5, 4, (2, 2), (2, 2), Padding::Valid),
        (2, 7, 5, 4, (2, 2), (2, 2), Padding::Same),
        (2, 6, 7, 2, (3, 3), (1, 1), Padding::Same),
        (1, 9, 8, 5, (3, 2), (2, 1), Padding::Valid),
        (2, 5, 5, 3, (2, 2), (1, 1), Padding::Valid),
        // Big enough to run image by image in parallel.
        (4, 40, 38, 16, (2, 2), (2, 2), Padding::Valid),
        (4, 40, 38, 16, (3, 3), (2, 2), Padding::Same),
    ];
    for (i, &(n, h, w, c, pool, strides, padding)) in cases.iter().enumerate() {
        let g = PoolGeometry::new([n, h, w, c], pool, strides, padding).unwrap();
        check(&g, i as u64);
    }
}

#[test]
fn uninit_kernels_write_windows_wholly_in_padding() {
    let padding = Padding::Explicit {
        top: 3,
        bottom: 0,
        left: 0,
        right: 0,
    };
    let g = PoolGeometry::new([1, 2, 2, 2], (2, 2), (2, 2), padding).unwrap();
    assert!(g.oh >= 2, "{g:?}");
    check(&g, 7);
}

#[test]
fn uninit_kernels_reject_wrong_lengths() {
    let g = PoolGeometry::new([1, 4, 4, 2], (2, 2), (2, 2), Padding::Valid).unwrap();
    let x = values(32, 1);
    let (mut y, mut arg) = (dirty(7, 0.0f32), dirty(8, 0u32));
    let e = max_pool2d_forward_uninit(&g, &x, &mut y, &mut arg).unwrap_err();
    assert!(e.to_string().contains("output"), "{e}");
    let mut dx = dirty(31, 0.0f32);
    let e = max_pool2d_backward_uninit(&g, &values(8, 2), &[0; 8], &mut dx).unwrap_err();
    assert!(e.to_string().contains("input gradient"), "{e}");
}
