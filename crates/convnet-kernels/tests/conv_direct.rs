//! The direct kernels for few input channels (forward and filter gradient,
//! the first layer of an image model) against textbook loops (f64), on
//! shapes chosen to reach every part of them: filter counts around their
//! register blocks (vectors of 16 and of 8, blocks of 32 filters), output
//! rows around the pixel blocks (12 with AVX-512, 4 with AVX2: whole
//! blocks and every remainder, at strides 1 and 2), windows inside the
//! input and touching the padding on every side (gathered patches),
//! strides, tiles cutting output rows anywhere (down to one pixel), batch
//! 1, with the widest build the CPU runs and the portable one (the unit
//! tests of `direct.rs` and `direct_filter.rs` check the AVX-512 and AVX2
//! builds against each other). Tolerance as in `conv.rs`: `1e-5 * sum |terms| +
//! 1e-6` per output.

use convnet_kernels::conv::{
    conv2d_backward_filter_tuned, conv2d_forward_tuned, ConvGeometry, Epilogue, Tuning,
};
use convnet_kernels::Padding;

/// Reference values and the sum of |terms| behind each.
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

    fn add(&mut self, i: usize, term: f64) {
        self.value[i] += term;
        self.magnitude[i] += term.abs();
    }

    #[track_caller]
    fn assert_close(&self, got: &[f32], what: &str) {
        assert_eq!(got.len(), self.value.len(), "{what}: length");
        for (i, ((&g, &v), &m)) in got.iter().zip(&self.value).zip(&self.magnitude).enumerate() {
            let tol = 1e-5 * m + 1e-6;
            assert!(
                (g as f64 - v).abs() <= tol,
                "{what}[{i}]: got {g}, want {v} (magnitude {m}, tolerance {tol})"
            );
        }
    }
}

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

/// `f(y index, kernel index, input index)` for every in-bounds tap and
/// filter, with `y index = pixel * f + fi`, `kernel index = tap * f + fi`.
fn for_each_term(g: &ConvGeometry, mut f: impl FnMut(usize, usize, usize)) {
    for img in 0..g.n {
        for oy in 0..g.oh {
            for ox in 0..g.ow {
                let pixel = (img * g.oh + oy) * g.ow + ox;
                for ky in 0..g.kh {
                    for kx in 0..g.kw {
                        let iy = (oy * g.sh + ky) as isize - g.pads.top as isize;
                        let ix = (ox * g.sw + kx) as isize - g.pads.left as isize;
                        if iy < 0 || ix < 0 || iy >= g.h as isize || ix >= g.w as isize {
                            continue;
                        }
                        let xi = ((img * g.h + iy as usize) * g.w + ix as usize) * g.c;
                        for ci in 0..g.c {
                            let tap = (ky * g.kw + kx) * g.c + ci;
                            for fi in 0..g.f {
                                f(pixel * g.f + fi, tap * g.f + fi, xi + ci);
                            }
                        }
                    }
                }
            }
        }
    }
}

fn naive_forward(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    b: Option<&[f32]>,
    relu: bool,
) -> Reference {
    let mut r = Reference::zeros(g.output_shape().iter().product());
    if let Some(b) = b {
        for i in 0..r.value.len() {
            r.add(i, b[i % g.f] as f64);
        }
    }
    for_each_term(g, |yi, wi, xi| r.add(yi, x[xi] as f64 * w[wi] as f64));
    if relu {
        r.value.iter_mut().for_each(|v| *v = v.max(0.0));
    }
    r
}

fn naive_filter(g: &ConvGeometry, x: &[f32], dy: &[f32]) -> (Reference, Reference) {
    let mut dw = Reference::zeros(g.kernel_shape().iter().product());
    let mut db = Reference::zeros(g.f);
    for_each_term(g, |yi, wi, xi| dw.add(wi, x[xi] as f64 * dy[yi] as f64));
    for (i, &d) in dy.iter().enumerate() {
        db.add(i % g.f, d as f64);
    }
    (dw, db)
}

/// The direct path (AVX2 where the CPU has it, and portable) at several
/// tile sizes, the default tuning among them.
fn direct_tunings(g: &ConvGeometry) -> Vec<Tuning> {
    let d = Tuning::for_geometry(g);
    assert!(
        d.direct && !d.winograd && !d.winograd_filter,
        "{g:?}: {d:?}"
    );
    let mut out = Vec::new();
    for tile_rows in [d.tile_rows, 1, 5, 13, 64] {
        for simd in [true, false] {
            out.push(Tuning {
                tile_rows,
                simd,
                ..d
            });
        }
    }
    out
}

fn check(g: &ConvGeometry, seed: u64) {
    let x = values(g.input_shape().iter().product(), seed);
    let w = values(g.kernel_shape().iter().product(), seed + 1);
    let b = values(g.f, seed + 2);
    let dy = values(g.output_shape().iter().product(), seed + 3);
    let (want_dw, want_db) = naive_filter(g, &x, &dy);
    for relu in [false, true] {
        let bias = relu.then_some(&b[..]);
        let want = naive_forward(g, &x, &w, bias, relu);
        let epilogue = if relu { Epilogue::Relu } else { Epilogue::None };
        for t in direct_tunings(g) {
            let mut y = vec![f32::NAN; dy.len()];
            conv2d_forward_tuned(g, &x, &w, bias, epilogue, &mut y, t).unwrap();
            want.assert_close(&y, &format!("forward {g:?} {t:?}"));
        }
    }
    for t in direct_tunings(g) {
        let mut dw = vec![f32::NAN; w.len()];
        let mut db = vec![f32::NAN; g.f];
        conv2d_backward_filter_tuned(g, &x, &dy, &mut dw, Some(&mut db), t).unwrap();
        want_dw.assert_close(&dw, &format!("filter gradient {g:?} {t:?}"));
        want_db.assert_close(&db, &format!("bias gradient {g:?} {t:?}"));
    }
}

fn geometry(
    input: [usize; 4],
    kernel: [usize; 3],
    strides: (usize, usize),
    p: Padding,
) -> ConvGeometry {
    let [kh, kw, f] = kernel;
    ConvGeometry::new(input, [kh, kw, input[3], f], strides, p).unwrap()
}

#[test]
fn filter_counts_around_the_register_blocks() {
    // 32 is one whole block; the others leave partial vectors, partial
    // blocks and several blocks.
    for (i, f) in [1, 5, 8, 13, 24, 31, 32, 33, 40, 64, 70]
        .into_iter()
        .enumerate()
    {
        let g = geometry([2, 9, 11, 3], [3, 3, f], (1, 1), Padding::Valid);
        check(&g, i as u64);
    }
}

#[test]
fn every_channel_count_and_padding() {
    let explicit = Padding::Explicit {
        top: 2,
        bottom: 0,
        left: 1,
        right: 2,
    };
    for c in 1..=4 {
        for p in [Padding::Valid, Padding::Same, explicit] {
            let g = geometry([1, 7, 10, c], [3, 3, 32], (1, 1), p);
            check(&g, 10 + c as u64);
        }
    }
}

#[test]
fn strides_and_other_kernel_sizes() {
    // InceptionV3's first layer (3x3 stride 2, valid, 32 filters), odd and
    // even sizes.
    for hw in [15, 16] {
        let g = geometry([2, hw, hw + 3, 3], [3, 3, 32], (2, 2), Padding::Valid);
        check(&g, 20 + hw as u64);
    }
    let g = geometry([1, 11, 12, 3], [3, 3, 32], (2, 2), Padding::Same);
    check(&g, 30);
    let g = geometry([1, 9, 13, 3], [3, 3, 16], (1, 2), Padding::Same);
    check(&g, 31);
    let g = geometry([2, 12, 9, 2], [5, 5, 20], (2, 1), Padding::Same);
    check(&g, 32);
    let g = geometry([1, 8, 9, 4], [1, 1, 32], (1, 1), Padding::Valid);
    check(&g, 33);
    let g = geometry([1, 9, 8, 3], [7, 7, 32], (3, 3), Padding::Same);
    check(&g, 34);
    // Output wider than it is tall, a single output row, a single column.
    let g = geometry([1, 3, 40, 3], [3, 3, 32], (1, 1), Padding::Valid);
    check(&g, 35);
    let g = geometry([3, 30, 3, 3], [3, 3, 32], (1, 1), Padding::Valid);
    check(&g, 36);
}

#[test]
fn rows_around_the_pixel_blocks() {
    // Output rows of 11 to 62 pixels: several whole blocks of 12 (and of
    // 4) and each remainder, read in place at the constant steps of 3
    // channels at strides 1 and 2, and with padding on both sides.
    for (i, w) in [13, 14, 15, 26, 27, 38, 64].into_iter().enumerate() {
        let g = geometry([1, 4, w, 3], [3, 3, 32], (1, 1), Padding::Valid);
        check(&g, 60 + i as u64);
    }
    for (i, w) in [25, 27, 49, 52].into_iter().enumerate() {
        let g = geometry([1, 5, w, 3], [3, 3, 32], (2, 2), Padding::Valid);
        check(&g, 70 + i as u64);
    }
    let g = geometry([1, 4, 30, 3], [3, 3, 16], (1, 1), Padding::Same);
    check(&g, 80);
    let g = geometry([1, 5, 50, 3], [3, 3, 48], (2, 2), Padding::Same);
    check(&g, 81);
}

#[test]
fn windows_wider_than_the_input() {
    // Every window touches the padding: no pixel is read in place.
    let g = geometry([2, 3, 2, 3], [3, 3, 32], (1, 1), Padding::Same);
    check(&g, 40);
    let g = geometry([1, 2, 5, 1], [5, 5, 9], (1, 1), Padding::Same);
    check(&g, 41);
}

/// Filter and bias gradients with `threads` threads.
fn filter_gradient(
    threads: usize,
    g: &ConvGeometry,
    x: &[f32],
    dy: &[f32],
    t: Tuning,
) -> (Vec<f32>, Vec<f32>) {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let mut dw = vec![0.0; g.kernel_shape().iter().product()];
        let mut db = vec![0.0; g.f];
        conv2d_backward_filter_tuned(g, x, dy, &mut dw, Some(&mut db), t).unwrap();
        (dw, db)
    })
}

#[test]
fn filter_gradient_is_bitwise_the_same_at_any_thread_count() {
    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(a, b)| a.to_bits() == b.to_bits());
    for (g, tile) in [
        (
            geometry([3, 40, 41, 3], [3, 3, 32], (1, 1), Padding::Valid),
            None,
        ),
        (
            geometry([3, 40, 41, 3], [3, 3, 33], (1, 1), Padding::Same),
            Some(97),
        ),
        (
            geometry([2, 41, 40, 3], [3, 3, 32], (2, 2), Padding::Valid),
            Some(50),
        ),
    ] {
        let x = values(g.input_shape().iter().product(), 5);
        let dy = values(g.output_shape().iter().product(), 6);
        let mut t = Tuning::for_geometry(&g);
        if let Some(rows) = tile {
            t.tile_rows = rows;
        }
        for simd in [true, false] {
            let t = Tuning { simd, ..t };
            let one = filter_gradient(1, &g, &x, &dy, t);
            for threads in [2, 3, 4] {
                let many = filter_gradient(threads, &g, &x, &dy, t);
                assert!(same(&one.0, &many.0), "{g:?} {t:?}: dW, {threads} threads");
                assert!(same(&one.1, &many.1), "{g:?} {t:?}: db, {threads} threads");
            }
        }
    }
}

#[test]
fn first_layer_of_the_basic_cnn_at_batch_1() {
    // conv1's shape (150x150x3, 32 filters 3x3, valid) with one image: the
    // direct paths against each other and against plain im2col + GEMM
    // (a full naive reference is slow here), and the default tile.
    let g = geometry([1, 150, 150, 3], [3, 3, 32], (1, 1), Padding::Valid);
    let x = values(g.input_shape().iter().product(), 50);
    let w = values(g.kernel_shape().iter().product(), 51);
    let b = values(g.f, 52);
    let dy = values(g.output_shape().iter().product(), 53);
    let d = Tuning::for_geometry(&g);
    let plain = Tuning { direct: false, ..d };
    let close = |a: &[f32], b: &[f32], tol: f32, what: &str| {
        for (i, (a, b)) in a.iter().zip(b).enumerate() {
            assert!(
                (a - b).abs() <= tol * (1.0 + b.abs()),
                "{what}[{i}]: {a} vs {b}"
            );
        }
    };
    let fwd = |t: Tuning| {
        let mut y = vec![f32::NAN; dy.len()];
        conv2d_forward_tuned(&g, &x, &w, Some(&b), Epilogue::Relu, &mut y, t).unwrap();
        y
    };
    let want = fwd(plain);
    close(&fwd(d), &want, 1e-5, "forward");
    close(
        &fwd(Tuning { simd: false, ..d }),
        &want,
        1e-5,
        "portable forward",
    );
    let filt = |t: Tuning| {
        let mut dw = vec![f32::NAN; w.len()];
        let mut db = vec![f32::NAN; g.f];
        conv2d_backward_filter_tuned(&g, &x, &dy, &mut dw, Some(&mut db), t).unwrap();
        (dw, db)
    };
    let (want_dw, want_db) = filt(plain);
    // Sums of 148 * 148 terms of about 0.25: relative to their magnitude
    // (~5000), differences of order sqrt(n) * eps.
    for t in [d, Tuning { simd: false, ..d }] {
        let (dw, db) = filt(t);
        for (i, (a, b)) in dw.iter().zip(&want_dw).enumerate() {
            assert!((a - b).abs() <= 0.05, "dW[{i}]: {a} vs {b}");
        }
        assert_eq!(db, want_db, "the bias gradient does not depend on the path");
    }
}

/// CPU seconds of all the process's threads (Linux; 0 elsewhere).
fn cpu_secs() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        / 1e9
}

/// Timing, not a check: `cargo test --release -p convnet-kernels --test
/// conv_direct -- --ignored --nocapture timing`. The forward pass and the
/// filter gradient of the basic CNN's first layer and of InceptionV3's
/// (batch 32 or `BATCH`, `LAYER=conv1` or `inception` for one, `CONV_PATH=direct` or
/// `im2col` for one path, `PASS=forward` or `filter` for one pass, `REPS`), by the direct kernels and by im2col +
/// GEMM, alternating; medians of wall time and of CPU time per core.
#[test]
#[ignore]
fn timing() {
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let reps: usize = env("REPS").parse().unwrap_or(7);
    let layers = [
        ("conv1", [32, 150, 150, 3], (1, 1)),
        ("inception", [32, 299, 299, 3], (2, 2)),
    ];
    for (name, input, strides) in layers {
        if !env("LAYER").is_empty() && env("LAYER") != name {
            continue;
        }
        let n = env("BATCH").parse().unwrap_or(input[0]);
        let g = geometry(
            [n, input[1], input[2], 3],
            [3, 3, 32],
            strides,
            Padding::Valid,
        );
        let x = values(g.input_shape().iter().product(), 1);
        let w = values(g.kernel_shape().iter().product(), 2);
        let b = values(g.f, 3);
        let dy = values(g.output_shape().iter().product(), 4);
        let mut y = vec![0.0; dy.len()];
        let (mut dw, mut db) = (vec![0.0; w.len()], vec![0.0; g.f]);
        let d = Tuning::for_geometry(&g);
        let paths = [("direct", d), ("im2col", Tuning { direct: false, ..d })];
        let gflop = g.flops() as f64 / 1e9;
        for pass in ["forward", "filter"] {
            if !env("PASS").is_empty() && env("PASS") != pass {
                continue;
            }
            let mut times = vec![(Vec::new(), Vec::new()); paths.len()];
            for rep in 0..=reps {
                for ((label, t), times) in paths.iter().zip(&mut times) {
                    if !env("CONV_PATH").is_empty() && env("CONV_PATH") != *label {
                        continue;
                    }
                    let (start, c0) = (std::time::Instant::now(), cpu_secs());
                    if pass == "forward" {
                        conv2d_forward_tuned(&g, &x, &w, Some(&b), Epilogue::Relu, &mut y, *t)
                    } else {
                        conv2d_backward_filter_tuned(&g, &x, &dy, &mut dw, Some(&mut db), *t)
                    }
                    .unwrap();
                    if rep > 0 {
                        times.0.push(start.elapsed().as_secs_f64());
                        times.1.push(cpu_secs() - c0);
                    }
                }
            }
            let threads = rayon::current_num_threads() as f64;
            for ((label, _), (wall, cpu)) in paths.iter().zip(&mut times) {
                if wall.is_empty() {
                    continue;
                }
                wall.sort_by(f64::total_cmp);
                cpu.sort_by(f64::total_cmp);
                let (w, c) = (wall[wall.len() / 2], cpu[cpu.len() / 2]);
                println!(
                    "{name} {pass} {label}: {:.1} GFLOP/s wall, {:.1} per core of CPU time \
                     ({threads} threads); best {:.1} wall, {:.1} CPU",
                    gflop / w,
                    gflop / c,
                    gflop / wall[0],
                    gflop / cpu[0]
                );
            }
        }
    }
}
