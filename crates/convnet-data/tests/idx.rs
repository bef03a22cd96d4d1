//! IDX reading: round trips of every type, plain and gzip, every kind of bad
//! file (each error must name the file), and the real Fashion-MNIST when it
//! is installed (`apt-get install -y dataset-fashion-mnist`).

use std::io::Write;
use std::path::{Path, PathBuf};

use convnet_data::idx::{
    load_images, load_labels, load_mnist_dir, parse_idx, read_idx, IdxArray, IdxType,
};
use convnet_data::DataError;
use proptest::prelude::*;

fn idx_bytes(code: u8, dims: &[u32], body: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, code, dims.len() as u8];
    for d in dims {
        v.extend_from_slice(&d.to_be_bytes());
    }
    v.extend_from_slice(body);
    v
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

/// A fresh, empty folder under the system temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("convnet-idx-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Parse `bytes` (plain, then gzipped) as "bad.idx", expect an error naming
/// the file and containing `want`.
fn expect_err(bytes: &[u8], want: &str) {
    for (what, b) in [("plain", bytes.to_vec()), ("gzip", gzip(bytes))] {
        let e = parse_idx(&b, Path::new("data/bad.idx")).unwrap_err();
        assert!(matches!(e, DataError::Format { .. }), "{what}: {e:?}");
        let e = e.to_string();
        assert!(
            e.starts_with("data/bad.idx: ") && e.contains(want),
            "{what}: expected {want:?} in {e}"
        );
    }
}

#[test]
fn reads_every_type_plain_and_gzip() {
    let cases: Vec<(u8, IdxType, Vec<u8>, Vec<f32>)> = vec![
        (
            0x08,
            IdxType::U8,
            vec![0, 1, 128, 255],
            vec![0.0, 1.0, 128.0, 255.0],
        ),
        (
            0x09,
            IdxType::I8,
            vec![0, 1, 0x80, 0xff],
            vec![0.0, 1.0, -128.0, -1.0],
        ),
        (
            0x0B,
            IdxType::I16,
            [1i16, -2, 300, i16::MIN]
                .iter()
                .flat_map(|v| v.to_be_bytes())
                .collect(),
            vec![1.0, -2.0, 300.0, -32768.0],
        ),
        (
            0x0C,
            IdxType::I32,
            [1i32, -2, 70000, -1]
                .iter()
                .flat_map(|v| v.to_be_bytes())
                .collect(),
            vec![1.0, -2.0, 70000.0, -1.0],
        ),
        (
            0x0D,
            IdxType::F32,
            [1.5f32, -2.0, 0.1, f32::MAX]
                .iter()
                .flat_map(|v| v.to_be_bytes())
                .collect(),
            vec![1.5, -2.0, 0.1, f32::MAX],
        ),
        (
            0x0E,
            IdxType::F64,
            [1.5f64, -2.0, 0.1, 1e300]
                .iter()
                .flat_map(|v| v.to_be_bytes())
                .collect(),
            vec![1.5, -2.0, 0.1, f32::INFINITY],
        ),
    ];
    for (code, dtype, body, want) in cases {
        assert_eq!(dtype.code(), code);
        assert_eq!(IdxType::from_code(code), Some(dtype));
        let plain = idx_bytes(code, &[2, 2], &body);
        for bytes in [plain.clone(), gzip(&plain)] {
            let a = parse_idx(&bytes, Path::new("x")).unwrap();
            assert_eq!(
                a,
                IdxArray {
                    dtype,
                    dims: vec![2, 2],
                    data: want.clone()
                }
            );
        }
    }
}

#[test]
fn mnist_folder_gzip_and_plain_names() {
    let dir = temp_dir("ok");
    let images: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8 * 10).collect();
    std::fs::write(
        dir.join("train-images-idx3-ubyte.gz"),
        gzip(&idx_bytes(8, &[2, 3, 4], &images)),
    )
    .unwrap();
    std::fs::write(
        dir.join("train-labels-idx1-ubyte"),
        idx_bytes(8, &[2], &[7, 1]),
    )
    .unwrap();
    let (x, y) = load_mnist_dir(&dir, "train").unwrap();
    assert_eq!(x.shape(), &[2, 3, 4, 1]);
    assert_eq!(x.to_vec()[23], 230.0);
    assert_eq!(x.to_vec()[5], 50.0);
    assert_eq!(y.shape(), &[2]);
    assert_eq!(y.to_vec(), vec![7.0, 1.0]);
    // read_idx on a file, and the .gz name wins when both exist.
    let a = read_idx(&dir.join("train-labels-idx1-ubyte")).unwrap();
    assert_eq!(a.dims, vec![2]);
    std::fs::write(
        dir.join("train-labels-idx1-ubyte.gz"),
        gzip(&idx_bytes(8, &[2], &[3, 4])),
    )
    .unwrap();
    let (_, y) = load_mnist_dir(&dir, "train").unwrap();
    assert_eq!(y.to_vec(), vec![3.0, 4.0]);
    // A gzip file under a plain name is recognised by its magic bytes.
    std::fs::write(
        dir.join("odd-name.idx"),
        gzip(&idx_bytes(8, &[1, 1, 1], &[9])),
    )
    .unwrap();
    assert_eq!(
        load_images(&dir.join("odd-name.idx")).unwrap().to_vec(),
        vec![9.0]
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn too_short_and_bad_magic() {
    expect_err(&[], "0 bytes is too short");
    expect_err(&[0, 0, 8], "3 bytes is too short");
    expect_err(
        &[0x12, 0x34, 8, 1, 0, 0, 0, 1, 5],
        "bad magic number 12 34 08 01",
    );
    // A PNG is not an IDX file.
    expect_err(b"\x89PNG\r\n\x1a\n", "bad magic number 89 50");
}

#[test]
fn unsupported_dtype() {
    for code in [0x00u8, 0x0A, 0x0F, 0x42, 0xff] {
        expect_err(
            &idx_bytes(code, &[1], &[0; 8]),
            &format!("unsupported IDX data type 0x{code:02x}"),
        );
    }
}

#[test]
fn truncated_header_and_data() {
    expect_err(
        &[0, 0, 8, 3, 0, 0, 0, 2, 0],
        "truncated header: 3 dimensions need 16 bytes",
    );
    expect_err(
        &idx_bytes(8, &[2, 2], &[1, 2, 3]),
        "truncated: dimensions [2, 2] of U8 need 4 data bytes",
    );
    expect_err(&idx_bytes(0x0C, &[3], &[0; 11]), "need 12 data bytes");
    // Huge claimed dimensions are refused before anything is allocated.
    expect_err(
        &idx_bytes(8, &[60000, 60000, 60000], &[1, 2, 3]),
        "need 216000000000000 data bytes",
    );
    let e = parse_idx(
        &gzip(&idx_bytes(0x0E, &[60000, 60000, 100], &[1, 2, 3])),
        Path::new("bomb.gz"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("bomb.gz: truncated") && e.contains("at most"),
        "{e}"
    );
}

#[test]
fn dimension_overflow() {
    expect_err(
        &idx_bytes(8, &[u32::MAX, u32::MAX, u32::MAX], &[]),
        "overflow",
    );
    expect_err(&idx_bytes(0x0E, &[u32::MAX, u32::MAX], &[]), "overflow");
}

#[test]
fn trailing_bytes() {
    expect_err(
        &idx_bytes(8, &[2], &[1, 2, 3]),
        "1 trailing bytes after the 2 data bytes",
    );
    let e = parse_idx(&idx_bytes(8, &[2], &[0; 102]), Path::new("t.idx"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("100 trailing bytes"), "{e}");
    let e = parse_idx(&gzip(&idx_bytes(8, &[2], &[0; 102])), Path::new("t.gz"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("100 trailing bytes") && e.contains("after decompression"),
        "{e}"
    );
    // Trailing garbage after the gzip stream is also refused.
    let mut bytes = gzip(&idx_bytes(8, &[2], &[1, 2]));
    bytes.extend_from_slice(b"garbage");
    let e = parse_idx(&bytes, Path::new("g.gz"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("g.gz: corrupt or truncated gzip"), "{e}");
}

#[test]
fn corrupt_or_truncated_gzip() {
    let e = parse_idx(&[0x1f, 0x8b, 8, 0, 1, 2, 3], Path::new("c.gz"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("c.gz: corrupt or truncated gzip"), "{e}");
    let good = gzip(&idx_bytes(8, &[100], &[7; 100]));
    for cut in [good.len() - 1, good.len() - 8, good.len() / 2] {
        let e = parse_idx(&good[..cut], Path::new("cut.gz"))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cut.gz: "), "{e}");
    }
    // A flipped bit in the CRC is caught.
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 6] ^= 1;
    let e = parse_idx(&bad, Path::new("crc.gz"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("crc.gz: corrupt"), "{e}");
}

#[test]
fn count_mismatch_wrong_rank_and_missing_files() {
    let dir = temp_dir("mismatch");
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        idx_bytes(8, &[2, 1, 1], &[1, 2]),
    )
    .unwrap();
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte.gz"),
        gzip(&idx_bytes(8, &[3], &[1, 2, 3])),
    )
    .unwrap();
    let e = load_mnist_dir(&dir, "t10k").unwrap_err().to_string();
    assert!(
        e.contains("t10k-labels-idx1-ubyte.gz: 3 labels for 2 images in")
            && e.contains("t10k-images-idx3-ubyte"),
        "{e}"
    );
    let e = load_images(&dir.join("t10k-labels-idx1-ubyte.gz"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("t10k-labels-idx1-ubyte.gz: expected images"),
        "{e}"
    );
    let e = load_labels(&dir.join("t10k-images-idx3-ubyte"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("t10k-images-idx3-ubyte: expected labels"), "{e}");
    let e = load_mnist_dir(&dir, "train").unwrap_err();
    assert!(matches!(e, DataError::Io { .. }));
    let e = e.to_string();
    assert!(
        e.contains("train-images-idx3-ubyte.gz: not found (nor ")
            && e.contains("train-images-idx3-ubyte)"),
        "{e}"
    );
    let e = read_idx(Path::new("/nonexistent/x.idx"))
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("/nonexistent/x.idx: "), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// u8 files of any shape round-trip, plain and gzip.
    #[test]
    fn u8_round_trip(dims in prop::collection::vec(0u32..6, 0..4), seed in any::<u8>()) {
        let n: usize = dims.iter().map(|&d| d as usize).product();
        let body: Vec<u8> = (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
        let plain = idx_bytes(8, &dims, &body);
        for bytes in [plain.clone(), gzip(&plain)] {
            let a = parse_idx(&bytes, Path::new("p")).unwrap();
            prop_assert_eq!(a.dims, dims.iter().map(|&d| d as usize).collect::<Vec<_>>());
            prop_assert_eq!(a.data, body.iter().map(|&b| b as f32).collect::<Vec<_>>());
        }
    }

    /// Any corruption is an error or a valid parse, never a panic.
    #[test]
    fn corrupted_files_never_panic(
        bytes in prop::collection::vec(any::<u8>(), 0..64),
        dims in prop::collection::vec(any::<u32>(), 0..4),
        code in prop::sample::select(vec![0x08u8, 0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x10]),
    ) {
        let b = idx_bytes(code, &dims, &bytes);
        let _ = parse_idx(&b, Path::new("f"));
        let _ = parse_idx(&gzip(&b), Path::new("f"));
        let _ = parse_idx(&bytes, Path::new("f"));
    }
}

#[test]
fn real_fashion_mnist_when_installed() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.exists() {
        eprintln!(
            "note: {} not found (apt-get install -y dataset-fashion-mnist); skipping",
            dir.display()
        );
        return;
    }
    // The Debian package ships train-{images-idx3,labels-idx1}-ubyte.gz and
    // t10k-{images-idx3,labels-idx1}-ubyte.gz.
    let (x, y) = load_mnist_dir(dir, "train").unwrap();
    assert_eq!(x.shape(), &[60000, 28, 28, 1]);
    assert_eq!(y.shape(), &[60000]);
    let labels = y.values();
    assert!(labels
        .iter()
        .all(|&l| (0.0..10.0).contains(&l) && l.fract() == 0.0));
    // The first training image is an ankle boot (class 9), the second a
    // T-shirt/top (0); each class has 6000 training images.
    assert_eq!(labels[..2], [9.0, 0.0]);
    let mut counts = [0usize; 10];
    labels.iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts, [6000; 10]);
    let px = x.values();
    assert!(px
        .iter()
        .all(|&v| (0.0..=255.0).contains(&v) && v.fract() == 0.0));
    assert_eq!(x.max_abs(), 255.0);
    let mean = px.iter().map(|&v| v as f64).sum::<f64>() / px.len() as f64;
    // The training set's well-known mean pixel: 0.2860 of 255 = 72.94.
    assert!((mean / 255.0 - 0.2860).abs() < 1e-3, "mean {mean}");

    let (x, y) = load_mnist_dir(dir, "t10k").unwrap();
    assert_eq!(x.shape(), &[10000, 28, 28, 1]);
    assert_eq!(y.shape(), &[10000]);
    let labels = y.values();
    // The first test image is also an ankle boot; 1000 of each class.
    assert_eq!(labels[0], 9.0);
    let mut counts = [0usize; 10];
    labels.iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts, [1000; 10]);
}
