//! Image folders and augmentation, on small folders of PNG/JPEG images made here.

use std::path::Path;

use convnet_data::augment::{FillMode, ImageDataGenerator, TransformParams};
use convnet_data::directory::{load_img, ClassMode, ColorMode, FlowOptions, Interpolation};
use convnet_tensor::Rng;

/// A deterministic RGB image, every pixel distinct-ish.
fn pattern(w: u32, h: u32, salt: u8) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 7 + y * 3) as u8 ^ salt,
            (y * 11 + x) as u8,
            (x * y) as u8 ^ salt.wrapping_mul(3),
        ])
    })
}

/// cats: 3 PNGs, dogs: 2 PNGs + 1 JPEG (upper-case extension), plus a text file.
fn make_folder(root: &Path) {
    let cats = root.join("cats");
    let dogs = root.join("dogs");
    std::fs::create_dir_all(&cats).unwrap();
    std::fs::create_dir_all(&dogs).unwrap();
    for i in 0..3u32 {
        pattern(8 + i, 6 + 2 * i, i as u8)
            .save(cats.join(format!("cat{i}.png")))
            .unwrap();
    }
    for i in 0..2u32 {
        pattern(10, 9 + i, 40 + i as u8)
            .save(dogs.join(format!("dog{i}.png")))
            .unwrap();
    }
    pattern(12, 12, 99)
        .save_with_format(dogs.join("dog9.JPG"), image::ImageFormat::Jpeg)
        .unwrap();
    std::fs::write(dogs.join("notes.txt"), "not an image").unwrap();
}

fn opts(class_mode: ClassMode) -> FlowOptions {
    FlowOptions {
        target_size: (6, 5),
        batch_size: 4,
        class_mode,
        seed: Some(7),
        verbose: false,
        ..Default::default()
    }
}

#[test]
fn classes_labels_and_shapes() {
    let dir = tempfile::tempdir().unwrap();
    make_folder(dir.path());
    let gen = ImageDataGenerator::new();
    let it = gen
        .flow_from_directory(dir.path(), opts(ClassMode::Binary))
        .unwrap();
    assert_eq!(it.samples(), 6);
    assert_eq!(it.num_classes(), 2);
    assert_eq!(it.class_indices()["cats"], 0);
    assert_eq!(it.class_indices()["dogs"], 1);
    assert_eq!(it.labels(), &[0, 0, 0, 1, 1, 1]);
    assert_eq!(
        it.filenames()[5],
        Path::new("dogs").join("dog9.JPG").display().to_string()
    );
    assert_eq!(it.batches_per_epoch(), 2);
    assert_eq!(it.len(), 2);

    for mode in [
        ClassMode::Binary,
        ClassMode::Categorical,
        ClassMode::Sparse,
        ClassMode::None,
    ] {
        let mut it = gen.flow_from_directory(dir.path(), opts(mode)).unwrap();
        let order = it.pass_order(0);
        let labels: Vec<usize> = order.iter().map(|&i| it.labels()[i]).collect();
        let (x, y) = it.next().unwrap().unwrap();
        assert_eq!(x.shape(), &[4, 6, 5, 3]);
        let yv = y.values().to_vec();
        match mode {
            ClassMode::Binary => {
                assert_eq!(y.shape(), &[4, 1]);
                let want: Vec<f32> = labels[..4].iter().map(|&l| l as f32).collect();
                assert_eq!(yv, want);
            }
            ClassMode::Sparse => {
                assert_eq!(y.shape(), &[4]);
                let want: Vec<f32> = labels[..4].iter().map(|&l| l as f32).collect();
                assert_eq!(yv, want);
            }
            ClassMode::Categorical => {
                assert_eq!(y.shape(), &[4, 2]);
                for (r, &l) in labels[..4].iter().enumerate() {
                    assert_eq!(yv[r * 2 + l], 1.0);
                    assert_eq!(yv[r * 2 + 1 - l], 0.0);
                }
            }
            _ => assert_eq!(y.shape(), &[4, 0]),
        }
        // The last batch of the pass is smaller, then the next pass begins.
        let (x, _) = it.next().unwrap().unwrap();
        assert_eq!(x.shape(), &[2, 6, 5, 3]);
        let (x, _) = it.next().unwrap().unwrap();
        assert_eq!(x.shape(), &[4, 6, 5, 3]);
    }
}

#[test]
fn color_modes_and_values() {
    let dir = tempfile::tempdir().unwrap();
    make_folder(dir.path());
    let gen = ImageDataGenerator::new();
    for (mode, c) in [
        (ColorMode::Grayscale, 1),
        (ColorMode::Rgba, 4),
        (ColorMode::Rgb, 3),
    ] {
        let o = FlowOptions {
            color_mode: mode,
            ..opts(ClassMode::Sparse)
        };
        let mut it = gen.flow_from_directory(dir.path(), o).unwrap();
        let (x, _) = it.next().unwrap().unwrap();
        assert_eq!(x.shape(), &[4, 6, 5, c]);
        let v = x.values();
        assert!(v
            .iter()
            .all(|&p| (0.0..=255.0).contains(&p) && p.fract() == 0.0));
        assert!(v.iter().any(|&p| p > 1.0));
    }
}

#[test]
fn nearest_resize_and_rescale() {
    let dir = tempfile::tempdir().unwrap();
    make_folder(dir.path());
    let cat1 = dir.path().join("cats").join("cat1.png"); // 9 x 8
    let src = pattern(9, 8, 1);
    let t = load_img(&cat1, Some((4, 3)), ColorMode::Rgb, Interpolation::Nearest).unwrap();
    assert_eq!(t.shape(), &[4, 3, 3]);
    let v = t.values();
    for y in 0..4 {
        for x in 0..3 {
            let (sx, sy) = (
                ((x as f64 + 0.5) * 3.0) as u32,
                ((y as f64 + 0.5) * 2.0) as u32,
            );
            for k in 0..3 {
                assert_eq!(v[(y * 3 + x) * 3 + k], f32::from(src.get_pixel(sx, sy)[k]));
            }
        }
    }
    let b = load_img(&cat1, Some((4, 3)), ColorMode::Rgb, Interpolation::Bilinear).unwrap();
    assert_eq!(b.shape(), &[4, 3, 3]);

    // Rescale: the same batch, times 1/255.
    let o = FlowOptions {
        shuffle: false,
        ..opts(ClassMode::Binary)
    };
    let plain = ImageDataGenerator::new()
        .flow_from_directory(dir.path(), o.clone())
        .unwrap();
    let scaled = ImageDataGenerator::new()
        .rescale(1.0 / 255.0)
        .flow_from_directory(dir.path(), o)
        .unwrap();
    let (a, _) = plain.batch(0, 0).unwrap();
    let (b, _) = scaled.batch(0, 0).unwrap();
    for (p, q) in a.values().iter().zip(b.values().iter()) {
        assert_eq!(p * (1.0 / 255.0), *q);
    }
}

#[test]
fn endless_reshuffled_and_seeded() {
    let dir = tempfile::tempdir().unwrap();
    make_folder(dir.path());
    let gen = ImageDataGenerator::new();
    let o = FlowOptions {
        batch_size: 6,
        ..opts(ClassMode::Sparse)
    };
    let it = gen.flow_from_directory(dir.path(), o.clone()).unwrap();
    let orders: Vec<Vec<usize>> = (0..4).map(|p| it.pass_order(p)).collect();
    for ord in &orders {
        let mut s = ord.clone();
        s.sort();
        assert_eq!(s, (0..6).collect::<Vec<_>>());
    }
    assert!(
        orders.windows(2).any(|w| w[0] != w[1]),
        "a new order each pass"
    );
    // Ten steps (more than one pass) from two iterators with one seed agree.
    let a: Vec<_> = gen
        .flow_from_directory(dir.path(), o.clone())
        .unwrap()
        .take(10)
        .collect();
    let b: Vec<_> = gen
        .flow_from_directory(dir.path(), o.clone())
        .unwrap()
        .take(10)
        .collect();
    for (p, q) in a.iter().zip(&b) {
        let (p, q) = (p.as_ref().unwrap(), q.as_ref().unwrap());
        assert_eq!(p.0.values(), q.0.values());
        assert_eq!(p.1.values(), q.1.values());
    }
    // No shuffle: file order, every pass.
    let o = FlowOptions {
        shuffle: false,
        ..o
    };
    let it = gen.flow_from_directory(dir.path(), o).unwrap();
    assert_eq!(it.pass_order(3), (0..6).collect::<Vec<_>>());
}

#[test]
fn prefetch_and_thread_count_do_not_change_batches() {
    let dir = tempfile::tempdir().unwrap();
    make_folder(dir.path());
    let gen = ImageDataGenerator::new()
        .rotation_range(30.0)
        .width_shift_range(0.2)
        .height_shift_range(0.2)
        .shear_range(10.0)
        .zoom_range(0.2)
        .horizontal_flip(true)
        .channel_shift_range(10.0)
        .brightness_range(0.8, 1.2)
        .rescale(1.0 / 255.0);
    let run = |threads: usize, prefetch: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let o = FlowOptions {
            prefetch,
            ..opts(ClassMode::Categorical)
        };
        let it = gen.flow_from_directory(dir.path(), o).unwrap();
        pool.install(|| {
            it.take(5)
                .map(|b| {
                    let (x, y) = b.unwrap();
                    (x.values().to_vec(), y.values().to_vec())
                })
                .collect::<Vec<_>>()
        })
    };
    let one = run(1, 0);
    assert_eq!(one, run(2, 0));
    assert_eq!(one, run(2, 2));
}

fn image_3x(h: usize, w: usize) -> Vec<f32> {
    (0..h * w * 3).map(|i| (i * 37 % 251) as f32).collect()
}

#[test]
fn identity_flip_and_shift() {
    let (h, w, c) = (5, 7, 3);
    let img = image_3x(h, w);
    let gen = ImageDataGenerator::new();
    let same = gen.apply_transform(&img, h, w, c, &TransformParams::default());
    assert_eq!(same, img);
    let mut rng = Rng::new(1);
    assert_eq!(gen.random_transform(&img, h, w, c, &mut rng), img);

    let flip = TransformParams {
        flip_horizontal: true,
        ..Default::default()
    };
    let out = gen.apply_transform(&img, h, w, c, &flip);
    for r in 0..h {
        for x in 0..w {
            for k in 0..c {
                assert_eq!(out[(r * w + x) * c + k], img[(r * w + (w - 1 - x)) * c + k]);
            }
        }
    }
    let vflip = TransformParams {
        flip_vertical: true,
        ..Default::default()
    };
    let out = gen.apply_transform(&img, h, w, c, &vflip);
    assert_eq!(out[..w * c], img[(h - 1) * w * c..]);

    // ty = 2: output column x takes input column x + 2.
    let shift = TransformParams {
        ty: 2.0,
        ..Default::default()
    };
    for (mode, cval) in [(FillMode::Constant, -1.0), (FillMode::Nearest, 0.0)] {
        let g = ImageDataGenerator::new().fill_mode(mode).cval(cval);
        let out = g.apply_transform(&img, h, w, c, &shift);
        for r in 0..h {
            for x in 0..w {
                for k in 0..c {
                    let got = out[(r * w + x) * c + k];
                    let want = if x + 2 < w {
                        img[(r * w + x + 2) * c + k]
                    } else if mode == FillMode::Constant {
                        -1.0
                    } else {
                        img[(r * w + w - 1) * c + k]
                    };
                    assert!(
                        (got - want).abs() < 1e-3,
                        "{mode:?} r{r} x{x}: {got} vs {want}"
                    );
                }
            }
        }
    }
    // tx = -1: output row r takes input row r - 1; wrap brings the last row in.
    let g = ImageDataGenerator::new().fill_mode(FillMode::Wrap);
    let out = g.apply_transform(
        &img,
        h,
        w,
        c,
        &TransformParams {
            tx: -1.0,
            ..Default::default()
        },
    );
    assert_eq!(out[..w * c], img[(h - 1) * w * c..]);
    assert_eq!(out[w * c..2 * w * c], img[..w * c]);
    let g = ImageDataGenerator::new().fill_mode(FillMode::Reflect);
    let out = g.apply_transform(
        &img,
        h,
        w,
        c,
        &TransformParams {
            tx: -1.0,
            ..Default::default()
        },
    );
    assert_eq!(out[..w * c], img[..w * c]);

    // A draw is reproducible from its seed, and shifts stay in range.
    let g = ImageDataGenerator::new()
        .width_shift_range(0.2)
        .height_shift_range(3.0);
    let p = g.get_random_transform(h, w, &mut Rng::new(5));
    assert_eq!(p, g.get_random_transform(h, w, &mut Rng::new(5)));
    assert!(p.ty.abs() <= 0.2 * w as f64 && p.tx.abs() <= 3.0);
}

/// Options for the bad-input tests: file order, batches of 4.
fn bad_opts() -> FlowOptions {
    FlowOptions {
        shuffle: false,
        batch_size: 4,
        ..opts(ClassMode::Binary)
    }
}

/// Puts `bytes` at `cats/cat1a.<ext>` (between cat1 and cat2 in file
/// order) and checks that the flow skips it: the first batch is still full
/// (cat0, cat1, cat2, dog0, as if the file were not there), the pass ends
/// with 2 images, the pass's count is 1, and the next pass skips it again
/// without reading it.
fn assert_skipped(ext: &str, bytes: &[u8]) {
    let dir = tempfile::tempdir().unwrap();
    make_folder(dir.path());
    let bad = dir.path().join("cats").join(format!("cat1a.{ext}"));
    std::fs::write(&bad, bytes).unwrap();
    assert_skipped_in(dir.path(), &bad, bad_opts());
}

fn assert_skipped_in(root: &Path, bad: &Path, o: FlowOptions) {
    let gen = ImageDataGenerator::new();
    let mut it = gen.flow_from_directory(root, o.clone()).unwrap();
    assert_eq!(it.samples(), 7);
    let (x, y) = it.next().unwrap().unwrap();
    assert_eq!(
        x.shape(),
        &[4, 6, 5, 3],
        "the batch is filled from the next files"
    );
    assert_eq!(y.values().to_vec(), vec![0.0, 0.0, 0.0, 1.0]);
    let names = [
        "cats/cat0.png",
        "cats/cat1.png",
        "cats/cat2.png",
        "dogs/dog0.png",
    ];
    let size = 6 * 5 * 3;
    for (k, name) in names.iter().enumerate() {
        let want = load_img(
            root.join(name),
            Some((6, 5)),
            ColorMode::Rgb,
            o.interpolation,
        )
        .unwrap();
        assert_eq!(
            &x.values()[k * size..(k + 1) * size],
            &want.values()[..],
            "{name}"
        );
    }
    assert_eq!(it.skipped(), 1);
    assert_eq!(it.last_pass_skipped(), None);
    assert_eq!(it.skipped_files(), vec![bad.to_path_buf()]);
    let (x, y) = it.next().unwrap().unwrap();
    assert_eq!(x.shape(), &[2, 6, 5, 3], "the last batch of the pass");
    assert_eq!(y.values().to_vec(), vec![1.0, 1.0]);
    assert_eq!(it.last_pass_skipped(), Some(1));
    // The next pass skips it again, without trying it again.
    let (x, _) = it.next().unwrap().unwrap();
    assert_eq!(x.shape(), &[4, 6, 5, 3]);
    assert_eq!(it.skipped(), 1);
    assert_eq!(it.skipped_files().len(), 1);
    // Synchronous building (no prefetch) gives the same batches.
    let mut a = gen.flow_from_directory(root, o.clone()).unwrap();
    let mut b = gen
        .flow_from_directory(root, FlowOptions { prefetch: 0, ..o })
        .unwrap();
    for _ in 0..5 {
        let (p, q) = (a.next().unwrap().unwrap(), b.next().unwrap().unwrap());
        assert_eq!(p.0.values(), q.0.values());
        assert_eq!(p.1.values(), q.1.values());
    }
}

/// A small JPEG of the test pattern.
fn jpeg_bytes(w: u32, h: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    pattern(w, h, 5)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    bytes
}

/// A PNG of nothing but a header claiming `w` x `h` RGB pixels.
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        png.extend_from_slice(kind);
        png.extend_from_slice(data);
        let mut crc = flate2::Crc::new();
        crc.update(kind);
        crc.update(data);
        png.extend_from_slice(&crc.sum().to_be_bytes());
    };
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IEND", &[]);
    png
}

#[test]
fn zero_byte_file_is_skipped() {
    assert_skipped("png", b"");
}

#[test]
fn text_file_named_jpg_is_skipped() {
    assert_skipped("jpg", b"hello, this is not a JPEG at all\n");
}

#[test]
fn truncated_jpeg_is_skipped() {
    let bytes = jpeg_bytes(64, 48);
    assert_skipped("jpg", &bytes[..bytes.len() / 3]);
}

#[test]
fn huge_header_is_skipped() {
    assert_skipped("png", &png_header(100_000, 100_000));
}

#[test]
fn png_named_jpg_decodes() {
    // The content decides the format, not the extension.
    let dir = tempfile::tempdir().unwrap();
    make_folder(dir.path());
    let png = dir.path().join("cats/cat0.png");
    let jpg = dir.path().join("cats/cat5.jpg");
    std::fs::copy(&png, &jpg).unwrap();
    let a = load_img(&png, None, ColorMode::Rgb, Interpolation::Nearest).unwrap();
    let b = load_img(&jpg, None, ColorMode::Rgb, Interpolation::Nearest).unwrap();
    assert_eq!(a.values(), b.values());
    let gen = ImageDataGenerator::new();
    let o = FlowOptions {
        batch_size: 7,
        ..bad_opts()
    };
    let mut it = gen.flow_from_directory(dir.path(), o).unwrap();
    let (x, _) = it.next().unwrap().unwrap();
    assert_eq!(x.shape()[0], 7);
    assert_eq!(it.skipped(), 0);
    assert!(it.skipped_files().is_empty());
}

#[test]
fn bad_files_are_errors_naming_them_in_load_img() {
    let dir = tempfile::tempdir().unwrap();
    let jpeg = jpeg_bytes(64, 48);
    let cases: [(&str, &[u8]); 4] = [
        ("zero.png", b""),
        ("text.jpg", b"hello, not a jpeg"),
        ("trunc.jpeg", &jpeg[..jpeg.len() / 3]),
        ("huge.png", &png_header(100_000, 100_000)),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = load_img(&path, Some((4, 4)), ColorMode::Rgb, Interpolation::Nearest)
            .unwrap_err()
            .to_string();
        assert!(err.contains(name), "{err}");
    }
}

#[test]
fn pixel_limit_is_configurable() {
    // cat1 is 9 x 8 = 72 pixels: over a limit of 70, refused before decoding.
    let dir = tempfile::tempdir().unwrap();
    make_folder(dir.path());
    let cat1 = dir.path().join("cats/cat1.png");
    let err = convnet_data::directory::decode_image(&cat1, 70)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cat1.png") && err.contains("over the limit"),
        "{err}"
    );
    assert!(convnet_data::directory::decode_image(&cat1, 72).is_ok());
    let o = FlowOptions {
        max_pixels: 70,
        batch_size: 8,
        ..bad_opts()
    };
    let mut it = ImageDataGenerator::new()
        .flow_from_directory(dir.path(), o)
        .unwrap();
    // cat1 (72), cat2 (10 x 10) and the dogs (10 x 9, 10 x 10, 12 x 12) are
    // over 70 pixels: only cat0 (8 x 6) is left.
    let (x, _) = it.next().unwrap().unwrap();
    assert_eq!(x.shape()[0], 1);
    assert_eq!(it.skipped(), 5);
}

#[cfg(unix)]
#[test]
fn unreadable_file_is_skipped() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    make_folder(dir.path());
    let bad = dir.path().join("cats").join("cat1a.png");
    pattern(8, 8, 1).save(&bad).unwrap();
    std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o000)).unwrap();
    if std::fs::read(&bad).is_ok() {
        // Root (or a capability) reads it anyway: nothing to test here.
        eprintln!("note: chmod 000 does not block reads here (root?); skipping this check");
        return;
    }
    assert_skipped_in(dir.path(), &bad, bad_opts());
}

#[test]
fn file_deleted_after_the_scan_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    make_folder(dir.path());
    let bad = dir.path().join("cats").join("cat1a.png");
    pattern(8, 8, 1).save(&bad).unwrap();
    let gen = ImageDataGenerator::new();
    let mut it = gen.flow_from_directory(dir.path(), bad_opts()).unwrap();
    assert_eq!(it.samples(), 7);
    std::fs::remove_file(&bad).unwrap(); // vanished mid-epoch
    let (x, _) = it.next().unwrap().unwrap();
    assert_eq!(x.shape(), &[4, 6, 5, 3]);
    assert_eq!(it.skipped(), 1);
    assert_eq!(it.skipped_files(), vec![bad]);
}

#[test]
fn all_files_bad_is_an_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    std::fs::create_dir_all(dir.path().join("b")).unwrap();
    std::fs::write(dir.path().join("a/x.jpg"), b"").unwrap();
    std::fs::write(dir.path().join("b/y.png"), b"not a png").unwrap();
    for prefetch in [0, 2] {
        let o = FlowOptions {
            prefetch,
            ..bad_opts()
        };
        let gen = ImageDataGenerator::new();
        let mut it = gen.flow_from_directory(dir.path(), o).unwrap();
        for _ in 0..3 {
            let err = it.next().unwrap().unwrap_err().to_string();
            assert!(err.contains("none of the 2"), "{err}");
        }
        assert_eq!(it.skipped_files().len(), 2);
    }
}

#[test]
fn bad_folders_are_clear_errors() {
    let gen = ImageDataGenerator::new();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    assert!(gen
        .flow_from_directory(&missing, opts(ClassMode::Binary))
        .is_err());
    assert!(gen
        .flow_from_directory(dir.path(), opts(ClassMode::Binary))
        .is_err());
    std::fs::create_dir_all(dir.path().join("a")).unwrap();
    std::fs::create_dir_all(dir.path().join("b")).unwrap();
    let err = gen
        .flow_from_directory(dir.path(), opts(ClassMode::Sparse))
        .unwrap_err();
    assert!(err.to_string().contains("no image"), "{err}");
    // Class folders holding only files that are not images.
    std::fs::write(dir.path().join("a/readme.txt"), "hi").unwrap();
    let err = gen
        .flow_from_directory(dir.path(), opts(ClassMode::Sparse))
        .unwrap_err();
    assert!(err.to_string().contains("no image"), "{err}");
    pattern(4, 4, 0).save(dir.path().join("a/x.png")).unwrap();
    std::fs::remove_dir(dir.path().join("b")).unwrap();
    let err = gen
        .flow_from_directory(dir.path(), opts(ClassMode::Binary))
        .unwrap_err();
    assert!(err.to_string().contains("exactly 2"), "{err}");
    assert!(gen
        .flow_from_directory(dir.path(), opts(ClassMode::Sparse))
        .is_ok());
}

#[test]
fn preview_grid() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.png");
    pattern(10, 8, 3).save(&src).unwrap();
    let out = dir.path().join("grid.png");
    let gen = ImageDataGenerator::new()
        .rotation_range(40.0)
        .horizontal_flip(true);
    convnet_data::augment_preview(&src, &gen, 5, &out).unwrap();
    let grid = image::open(&out).unwrap();
    // 5 images: 3 per row, 2 rows, 2-pixel gaps.
    assert_eq!((grid.width(), grid.height()), (3 * 10 + 2 * 2, 2 * 8 + 2));
}

#[test]
fn huge_header_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    // A BMP header claiming 20000 x 20000 pixels (over the default 100 megapixel limit), 24 bits, and no pixel data.
    let mut bmp = Vec::new();
    bmp.extend_from_slice(b"BM");
    bmp.extend_from_slice(&(54u32 + 16).to_le_bytes());
    bmp.extend_from_slice(&[0; 4]);
    bmp.extend_from_slice(&54u32.to_le_bytes());
    bmp.extend_from_slice(&40u32.to_le_bytes());
    bmp.extend_from_slice(&20_000i32.to_le_bytes());
    bmp.extend_from_slice(&20_000i32.to_le_bytes());
    bmp.extend_from_slice(&1u16.to_le_bytes());
    bmp.extend_from_slice(&24u16.to_le_bytes());
    bmp.extend_from_slice(&[0; 24]);
    bmp.extend_from_slice(&[0; 16]);
    let path = dir.path().join("huge.bmp");
    std::fs::write(&path, &bmp).unwrap();
    let err = load_img(&path, Some((4, 4)), ColorMode::Rgb, Interpolation::Nearest)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("huge.bmp") && err.contains("over the limit"),
        "{err}"
    );
}

/// The plain computation of one augmented image of the flow, in `f64`:
/// the full-size image, Keras's matrix for the target size composed with
/// the resize (pixel centres aligned), bilinear, edges clamped (fill mode
/// nearest), then the rescale.
fn augmented_plain(
    full: &[f32],
    (h, w): (usize, usize),
    m: &[[f64; 3]; 3],
    (th, tw): (usize, usize),
    scale: f64,
) -> Vec<f32> {
    let (sy, sx) = (h as f64 / th as f64, w as f64 / tw as f64);
    let mut out = Vec::new();
    for r in 0..th {
        for q in 0..tw {
            let (rf, qf) = (r as f64, q as f64);
            let y = (m[0][0] * rf + m[0][1] * qf + m[0][2] + 0.5) * sy - 0.5;
            let x = (m[1][0] * rf + m[1][1] * qf + m[1][2] + 0.5) * sx - 0.5;
            let (y0, x0) = (y.floor(), x.floor());
            let (fy, fx) = (y - y0, x - x0);
            let clamp = |v: f64, n: usize| (v.max(0.0) as usize).min(n - 1);
            let (ya, yb) = (clamp(y0, h), clamp(y0 + 1.0, h));
            let (xa, xb) = (clamp(x0, w), clamp(x0 + 1.0, w));
            for k in 0..3 {
                let p = |yy: usize, xx: usize| f64::from(full[(yy * w + xx) * 3 + k]);
                let v = (1.0 - fy) * (1.0 - fx) * p(ya, xa)
                    + (1.0 - fy) * fx * p(ya, xb)
                    + fy * (1.0 - fx) * p(yb, xa)
                    + fy * fx * p(yb, xb);
                out.push((v * scale) as f32);
            }
        }
    }
    out
}

#[test]
fn augmented_batches_are_one_pass_from_the_full_size_image() {
    let dir = tempfile::tempdir().unwrap();
    for (class, w, h) in [("a", 40u32, 30u32), ("b", 37, 51)] {
        std::fs::create_dir_all(dir.path().join(class)).unwrap();
        pattern(w, h, 9)
            .save(dir.path().join(class).join("x.png"))
            .unwrap();
    }
    let gen = ImageDataGenerator::new()
        .rescale(1.0 / 255.0)
        .rotation_range(20.0)
        .width_shift_range(0.2)
        .height_shift_range(0.2)
        .shear_range(10.0)
        .zoom_range(0.2)
        .horizontal_flip(true);
    let (th, tw) = (12, 10);
    let o = FlowOptions {
        target_size: (th, tw),
        batch_size: 2,
        shuffle: false,
        seed: Some(3),
        class_mode: ClassMode::Sparse,
        verbose: false,
        ..Default::default()
    };
    let mut it = gen.flow_from_directory(dir.path(), o).unwrap();
    for pass in 0..2u64 {
        let (x, _) = it.next().unwrap().unwrap();
        for (i, path) in it.filepaths().iter().enumerate() {
            let full = load_img(path, None, ColorMode::Rgb, Interpolation::Nearest).unwrap();
            let (h, w) = (full.shape()[0], full.shape()[1]);
            // Image i of pass p draws from (seed, p, i).
            let mut rng = Rng::new(3).fork(1).fork(pass).fork(i as u64);
            let m = gen
                .get_random_transform(th, tw, &mut rng)
                .matrix(th, tw)
                .unwrap();
            let want = augmented_plain(&full.values(), (h, w), &m, (th, tw), 1.0 / 255.0);
            let size = th * tw * 3;
            let got = &x.values()[i * size..(i + 1) * size];
            let d = got
                .iter()
                .zip(&want)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0, f32::max);
            assert!(
                d <= 0.25 / 255.0,
                "pass {pass} image {i}: max difference {d}"
            );
        }
    }
}
