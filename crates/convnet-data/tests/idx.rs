//! IDX reading: round trips, gzip, every kind of bad file, and the real
//! Fashion-MNIST when it is installed.

use std::io::Write;
use std::path::{Path, PathBuf};

use convnet_data::idx::{load_images, load_labels, load_mnist_dir, parse_idx, read_idx};

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

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("convnet-idx-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn reads_plain_and_gzip_and_a_mnist_folder() {
    let dir = temp_dir("ok");
    let images: Vec<u8> = (0..2 * 3 * 4).map(|i| i as u8).collect();
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
    assert_eq!(x.to_vec()[23], 23.0);
    assert_eq!(y.to_vec(), vec![7.0, 1.0]);
    let f = parse_idx(
        &idx_bytes(0x0D, &[2], &[0x3f, 0x80, 0, 0, 0xc0, 0, 0, 0]),
        Path::new("f"),
    )
    .unwrap();
    assert_eq!(f.data, vec![1.0, -2.0]);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_files_are_errors_naming_the_file() {
    let p = Path::new("bad.idx");
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![1, 2, 3], "too short"),
        (vec![0x12, 0x34, 8, 1, 0, 0, 0, 1, 5], "bad magic"),
        (idx_bytes(0x42, &[1], &[0]), "unknown IDX data type"),
        (vec![0, 0, 8, 3, 0, 0], "truncated header"),
        (idx_bytes(8, &[2, 2], &[1, 2, 3]), "truncated"),
        (idx_bytes(8, &[2], &[1, 2, 3]), "after the data"),
        (
            idx_bytes(8, &[u32::MAX, u32::MAX, u32::MAX], &[]),
            "overflow",
        ),
        (vec![0x1f, 0x8b, 8, 0, 1, 2, 3], "corrupt gzip"),
    ];
    for (bytes, want) in cases {
        let e = parse_idx(&bytes, p).unwrap_err().to_string();
        assert!(
            e.starts_with("bad.idx: ") && e.contains(want),
            "{want}: {e}"
        );
    }
    let e = read_idx(Path::new("/nonexistent/x.idx"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/x.idx"), "{e}");
}

#[test]
fn count_mismatch_and_wrong_rank_are_errors() {
    let dir = temp_dir("mismatch");
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte"),
        idx_bytes(8, &[2, 1, 1], &[1, 2]),
    )
    .unwrap();
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte"),
        idx_bytes(8, &[3], &[1, 2, 3]),
    )
    .unwrap();
    let e = load_mnist_dir(&dir, "t10k").unwrap_err().to_string();
    assert!(e.contains("3 labels for 2 images"), "{e}");
    assert!(load_images(&dir.join("t10k-labels-idx1-ubyte")).is_err());
    assert!(load_labels(&dir.join("t10k-images-idx3-ubyte")).is_err());
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn real_fashion_mnist_when_installed() {
    let dir = Path::new("/usr/share/datasets/fashion-mnist");
    if !dir.exists() {
        eprintln!(
            "Fashion-MNIST not installed (apt-get install -y dataset-fashion-mnist); skipping"
        );
        return;
    }
    let (x, y) = load_mnist_dir(dir, "t10k").unwrap();
    assert_eq!(x.shape(), &[10000, 28, 28, 1]);
    assert_eq!(y.shape(), &[10000]);
    assert!(y
        .values()
        .iter()
        .all(|&l| (0.0..10.0).contains(&l) && l.fract() == 0.0));
    // Fashion-MNIST's test set: the first image is an ankle boot (9), and
    // each class has exactly 1000 images.
    assert_eq!(y.values()[0], 9.0);
    let mut counts = [0usize; 10];
    y.values().iter().for_each(|&l| counts[l as usize] += 1);
    assert_eq!(counts, [1000; 10]);
    assert!(x.max_abs() == 255.0);
}
