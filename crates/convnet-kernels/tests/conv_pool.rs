//! The fused convolution + max pooling (computed chunk of images by chunk)
//! against the unfused kernels it stands for: convolution with bias and
//! epilogue, max pooling, then in backward the pooling gradient, the ReLU
//! mask and both convolution gradients. Several chunk sizes (one image, a
//! chunk that does not divide the batch, the whole batch), ReLU or not,
//! padding, strides, overlapping windows, and Winograd-sized channels.
//! Chunks of one image take the parallel one-image path, whose kernel
//! gradient is summed over groups of images.

use std::mem::MaybeUninit;

use convnet_kernels::activation::relu_backward;
use convnet_kernels::conv::{
    conv2d_backward_filter, conv2d_backward_input, conv2d_forward, ConvGeometry, Epilogue,
};
use convnet_kernels::conv_pool::{
    conv2d_max_pool_backward, conv2d_max_pool_forward, ConvPoolGeometry,
};
use convnet_kernels::pool::{max_pool2d_backward, max_pool2d_forward};
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

fn assume_written<T: Copy>(buf: &[MaybeUninit<T>]) -> Vec<T> {
    // SAFETY: every element was initialized when the buffer was made and
    // possibly overwritten by the kernel.
    buf.iter().map(|v| unsafe { v.assume_init() }).collect()
}

fn close(what: &str, a: &[f32], b: &[f32], rel: f32) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    let scale = b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-3);
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(
            (x - y).abs() <= rel * scale,
            "{what}[{i}]: fused {x}, unfused {y} (scale {scale})"
        );
    }
}

struct Case {
    input: [usize; 4],
    kernel: (usize, usize),
    filters: usize,
    strides: (usize, usize),
    padding: Padding,
    pool: (usize, usize),
    pool_strides: (usize, usize),
    pool_padding: Padding,
}

fn check(case: &Case, chunk: usize, epilogue: Epilogue, bias: bool, seed: u64) {
    let [_, _, _, c] = case.input;
    let cg = ConvGeometry::new(
        case.input,
        [case.kernel.0, case.kernel.1, c, case.filters],
        case.strides,
        case.padding,
    )
    .unwrap();
    let mut g = ConvPoolGeometry::new(cg, case.pool, case.pool_strides, case.pool_padding).unwrap();
    g.chunk = chunk;
    let x = values(cg.input_shape().iter().product(), seed);
    let w = values(cg.kernel_shape().iter().product(), seed + 1);
    let b = values(cg.f, seed + 2);
    let b = bias.then_some(b.as_slice());

    // Unfused.
    let mut y = vec![0.0f32; cg.output_shape().iter().product()];
    conv2d_forward(&cg, &x, &w, b, epilogue, &mut y).unwrap();
    let len: usize = g.output_shape().iter().product();
    let (mut p, mut arg) = (vec![0.0f32; len], vec![0u32; len]);
    max_pool2d_forward(&g.pool, &y, &mut p, &mut arg).unwrap();

    // Fused, into buffers full of garbage.
    let mut pf = vec![MaybeUninit::new(f32::NAN); len];
    let mut argf = vec![MaybeUninit::new(0xdead_beef_u32); len];
    conv2d_max_pool_forward(&g, &x, &w, b, epilogue, &mut pf, Some(&mut argf)).unwrap();
    // Without an argmax (inference): the same values.
    let mut pi = vec![MaybeUninit::new(f32::NAN); len];
    conv2d_max_pool_forward(&g, &x, &w, b, epilogue, &mut pi, None).unwrap();
    assert_eq!(
        assume_written(&pi)
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>(),
        assume_written(&pf)
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()
    );
    let (pf, argf) = (assume_written(&pf), assume_written(&argf));
    let what = format!("{:?} chunk {chunk} {epilogue:?} bias {bias}", g.conv);
    close(&format!("output {what}"), &pf, &p, 1e-5);
    // The argmax counts from the chunk's first image; where the choice is
    // clear (no near-tie that rounding could flip) it is the same cell.
    let (out_img, conv_img) = (g.pool.oh * g.pool.ow * g.pool.c, cg.oh * cg.ow * cg.f);
    for (i, (&a, &af)) in arg.iter().zip(&argf).enumerate() {
        let first = (i / out_img) / chunk * chunk;
        if a != u32::MAX && p[i] > 1e-3 {
            assert_eq!(
                af as usize + first * conv_img,
                a as usize,
                "argmax[{i}] {what}"
            );
        }
    }

    // Backward, unfused: pooling gradient, ReLU mask, both gradients.
    let dout = values(len, seed + 3);
    let mut dconv = vec![0.0f32; y.len()];
    max_pool2d_backward(&g.pool, &dout, &arg, &mut dconv).unwrap();
    if epilogue == Epilogue::Relu {
        let mut masked = vec![0.0f32; y.len()];
        relu_backward(&y, &dconv, &mut masked).unwrap();
        dconv = masked;
    }
    let mut dx = vec![0.0f32; x.len()];
    conv2d_backward_input(&cg, &dconv, &w, &mut dx).unwrap();
    let (mut dw, mut db) = (vec![0.0f32; w.len()], vec![0.0f32; cg.f]);
    conv2d_backward_filter(&cg, &x, &dconv, &mut dw, Some(&mut db)).unwrap();

    // Fused, into buffers full of garbage.
    let (mut dxf, mut dwf, mut dbf) = (
        vec![f32::NAN; dx.len()],
        vec![f32::NAN; dw.len()],
        vec![f32::NAN; db.len()],
    );
    conv2d_max_pool_backward(
        &g,
        &x,
        &w,
        epilogue,
        &pf,
        &argf,
        &dout,
        Some(&mut dxf),
        Some(&mut dwf),
        Some(&mut dbf),
    )
    .unwrap();
    close(&format!("input gradient {what}"), &dxf, &dx, 1e-5);
    close(&format!("kernel gradient {what}"), &dwf, &dw, 1e-5);
    close(&format!("bias gradient {what}"), &dbf, &db, 1e-5);

    // No input gradient (a first layer).
    let (mut dwn, mut dbn) = (vec![f32::NAN; dw.len()], vec![f32::NAN; db.len()]);
    conv2d_max_pool_backward(
        &g,
        &x,
        &w,
        epilogue,
        &pf,
        &argf,
        &dout,
        None,
        Some(&mut dwn),
        Some(&mut dbn),
    )
    .unwrap();
    close(
        &format!("kernel gradient, no input gradient {what}"),
        &dwn,
        &dw,
        1e-5,
    );
    close(
        &format!("bias gradient, no input gradient {what}"),
        &dbn,
        &db,
        1e-5,
    );

    // Only the bias gradient (a frozen kernel), only the input gradient.
    let mut dbo = vec![f32::NAN; db.len()];
    conv2d_max_pool_backward(
        &g,
        &x,
        &w,
        epilogue,
        &pf,
        &argf,
        &dout,
        None,
        None,
        Some(&mut dbo),
    )
    .unwrap();
    close(&format!("bias gradient alone {what}"), &dbo, &db, 1e-5);
    let mut dxo = vec![f32::NAN; dx.len()];
    conv2d_max_pool_backward(
        &g,
        &x,
        &w,
        epilogue,
        &pf,
        &argf,
        &dout,
        Some(&mut dxo),
        None,
        None,
    )
    .unwrap();
    close(&format!("input gradient alone {what}"), &dxo, &dx, 1e-5);
}

fn cases() -> Vec<Case> {
    let basic = |input: [usize; 4], filters| Case {
        input,
        kernel: (3, 3),
        filters,
        strides: (1, 1),
        padding: Padding::Valid,
        pool: (2, 2),
        pool_strides: (2, 2),
        pool_padding: Padding::Valid,
    };
    vec![
        // The basic CNN's pattern, odd conv output (pooling drops a row).
        basic([5, 11, 12, 3], 8),
        // More images than the one-image path's 8 groups: groups of 2,
        // the last of 1.
        basic([11, 6, 7, 2], 3),
        // Winograd-sized channels.
        basic([3, 10, 10, 16], 16),
        // Same padding, stride 2, overlapping 3x3 windows with stride 2.
        Case {
            input: [4, 13, 9, 5],
            kernel: (3, 3),
            filters: 6,
            strides: (2, 2),
            padding: Padding::Same,
            pool: (3, 3),
            pool_strides: (2, 2),
            pool_padding: Padding::Valid,
        },
        // Winograd layers pool each band of the convolution as it is
        // computed: bands that split an image (3 x 10 tile rows in 2
        // bands), overlapping 3x3 windows whose rows span two bands, a
        // filter count that is not a multiple of 16, padded windows, and
        // small images that bands hold several of.
        Case {
            input: [3, 42, 30, 16],
            kernel: (3, 3),
            filters: 20,
            strides: (1, 1),
            padding: Padding::Valid,
            pool: (3, 3),
            pool_strides: (2, 2),
            pool_padding: Padding::Valid,
        },
        Case {
            input: [3, 66, 30, 16],
            kernel: (3, 3),
            filters: 16,
            strides: (1, 1),
            padding: Padding::Same,
            pool: (2, 2),
            pool_strides: (2, 2),
            pool_padding: Padding::Valid,
        },
        Case {
            input: [3, 65, 31, 16],
            kernel: (3, 3),
            filters: 32,
            strides: (1, 1),
            padding: Padding::Same,
            pool: (3, 3),
            pool_strides: (2, 2),
            pool_padding: Padding::Same,
        },
        Case {
            input: [9, 7, 7, 17],
            kernel: (3, 3),
            filters: 16,
            strides: (1, 1),
            padding: Padding::Same,
            pool: (3, 3),
            pool_strides: (1, 1),
            pool_padding: Padding::Valid,
        },
        // A first layer on larger images (the one-image path with
        // several direct-kernel tiles an image): 2x2 windows, then
        // overlapping 3x3 windows with same padding.
        basic([3, 70, 68, 3], 32),
        Case {
            input: [2, 69, 68, 3],
            kernel: (3, 3),
            filters: 32,
            strides: (1, 1),
            padding: Padding::Same,
            pool: (3, 3),
            pool_strides: (2, 2),
            pool_padding: Padding::Same,
        },
        // Padded pooling windows.
        Case {
            input: [3, 8, 7, 4],
            kernel: (1, 3),
            filters: 5,
            strides: (1, 1),
            padding: Padding::Same,
            pool: (2, 2),
            pool_strides: (2, 2),
            pool_padding: Padding::Same,
        },
    ]
}

#[test]
fn fused_matches_unfused() {
    for (k, case) in cases().iter().enumerate() {
        let n = case.input[0];
        for chunk in [1, 2, n] {
            for (epilogue, bias) in [(Epilogue::Relu, true), (Epilogue::None, false)] {
                check(case, chunk, epilogue, bias, 10 * k as u64 + chunk as u64);
            }
        }
    }
}

#[test]
fn default_chunks_split_large_outputs() {
    let conv1 =
        ConvGeometry::new([32, 150, 150, 3], [3, 3, 3, 32], (1, 1), Padding::Valid).unwrap();
    let g = ConvPoolGeometry::new(conv1, (2, 2), (2, 2), Padding::Valid).unwrap();
    assert_eq!(g.output_shape(), [32, 74, 74, 32]);
    assert_eq!(
        g.chunk, 1,
        "the direct kernels (3 input channels): one image per chunk"
    );
    let conv3 =
        ConvGeometry::new([32, 36, 36, 64], [3, 3, 64, 128], (1, 1), Padding::Valid).unwrap();
    let g = ConvPoolGeometry::new(conv3, (2, 2), (2, 2), Padding::Valid).unwrap();
    assert!(g.chunk > 1 && g.chunk < 32, "chunk {}", g.chunk);
    let tiny = ConvGeometry::new([2, 6, 6, 8], [3, 3, 8, 1], (1, 1), Padding::Valid).unwrap();
    let g = ConvPoolGeometry::new(tiny, (2, 2), (2, 2), Padding::Valid).unwrap();
    assert_eq!(g.chunk, 2, "never more than the batch");
}

#[test]
fn wrong_lengths_are_refused_by_name() {
    let cg = ConvGeometry::new([2, 6, 6, 1], [3, 3, 1, 2], (1, 1), Padding::Valid).unwrap();
    let g = ConvPoolGeometry::new(cg, (2, 2), (2, 2), Padding::Valid).unwrap();
    let x = vec![0.0; 72];
    let w = vec![0.0; 18];
    let len: usize = g.output_shape().iter().product();
    let mut out = vec![MaybeUninit::new(0.0f32); len];
    let mut arg = vec![MaybeUninit::new(0u32); len - 1];
    let e = conv2d_max_pool_forward(&g, &x, &w, None, Epilogue::Relu, &mut out, Some(&mut arg))
        .unwrap_err()
        .to_string();
    assert!(e.contains("argmax"), "{e}");
    let mut arg = vec![MaybeUninit::new(0u32); len];
    let e = conv2d_max_pool_forward(
        &g,
        &x[1..],
        &w,
        None,
        Epilogue::Relu,
        &mut out,
        Some(&mut arg),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("input"), "{e}");
    let out = vec![0.0f32; len];
    let arg = vec![0u32; len];
    let mut dw = vec![0.0f32; 17];
    let e = conv2d_max_pool_backward(
        &g,
        &x,
        &w,
        Epilogue::Relu,
        &out,
        &arg,
        &out,
        None,
        Some(&mut dw),
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("kernel gradient"), "{e}");
    let mut bad = g;
    bad.chunk = 0;
    let mut out = vec![MaybeUninit::new(0.0f32); len];
    let mut arg = vec![MaybeUninit::new(0u32); len];
    assert!(
        conv2d_max_pool_forward(&bad, &x, &w, None, Epilogue::Relu, &mut out, Some(&mut arg))
            .is_err()
    );
}
