//! The pure-Rust reader of Keras's legacy HDF5 weight files, on the fixtures
//! of `tests/fixtures/h5/make_h5.py` (values follow a formula recomputed
//! here), and on damaged files: truncated, bytes flipped, garbage. None may
//! panic or allocate much more than the file's size.
#![cfg(feature = "keras-h5")]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use convnet_tensor::safetensors;
use convnet_zoo::keras_h5::{self, H5Error, Layer};

/// Records the largest single allocation made on a thread while its
/// `TRACK` is set.
struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
}

fn record(size: usize) {
    if TRACK.try_with(Cell::get).unwrap_or(false) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

/// `f()`, and the largest single allocation it made.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.store(0, Ordering::Relaxed);
    TRACK.with(|t| t.set(true));
    let r = f();
    TRACK.with(|t| t.set(false));
    (r, LARGEST.load(Ordering::Relaxed))
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/h5")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

type Spec = Vec<(String, Vec<(&'static str, Vec<usize>)>)>;

/// The layers of `make_h5.py`'s `LAYERS`.
fn small() -> Spec {
    let l = |n: &str, w: Vec<(&'static str, Vec<usize>)>| (n.to_string(), w);
    vec![
        l("input_1", vec![]),
        l("conv2d_1", vec![("kernel", vec![3, 3, 3, 4])]),
        l(
            "batch_normalization_1",
            vec![
                ("beta", vec![4]),
                ("moving_mean", vec![4]),
                ("moving_variance", vec![4]),
            ],
        ),
        l("activation_1", vec![]),
        l("conv2d_2", vec![("kernel", vec![1, 1, 4, 2])]),
        l(
            "batch_normalization_2",
            vec![
                ("beta", vec![2]),
                ("moving_mean", vec![2]),
                ("moving_variance", vec![2]),
            ],
        ),
        l("activation_2", vec![]),
        l("mixed0", vec![]),
        l(
            "predictions",
            vec![("kernel", vec![2, 3]), ("bias", vec![3])],
        ),
    ]
}

/// `make_h5.py`'s `many_layers(n)`.
fn many(n: usize) -> Spec {
    let mut out: Spec = Vec::new();
    let mut i = 1;
    while out.len() < n {
        out.push((
            format!("conv2d_{i}"),
            vec![("kernel", vec![1, 1, 1, 2]), ("bias", vec![2])],
        ));
        out.push((
            format!("batch_normalization_{i}"),
            ["gamma", "beta", "moving_mean", "moving_variance"]
                .iter()
                .map(|&w| (w, vec![2]))
                .collect(),
        ));
        out.push((format!("activation_{i}"), vec![]));
        i += 1;
    }
    out.truncate(n);
    out
}

fn value(layer: usize, weight: usize, k: usize) -> f32 {
    (k as f64 * 0.25 + layer as f64 * 10.0 + weight as f64) as f32
}

/// Every layer, weight name, key, shape and value as the spec says.
fn check(layers: &[Layer], spec: &Spec) {
    check_names(layers, spec, ":0")
}

/// [`check`], weight names ending in `suffix` (`:0` in Keras 2, none in 3).
fn check_names(layers: &[Layer], spec: &Spec, suffix: &str) {
    let names: Vec<&str> = layers.iter().map(|l| l.name.as_str()).collect();
    let want: Vec<&str> = spec.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, want);
    for (li, (layer, (name, weights))) in layers.iter().zip(spec).enumerate() {
        assert_eq!(layer.weights.len(), weights.len(), "{name}");
        for (wi, (w, (key, shape))) in layer.weights.iter().zip(weights).enumerate() {
            assert_eq!(w.name, format!("{name}/{key}{suffix}"));
            assert_eq!(&w.key, key);
            assert_eq!(&w.shape, shape, "{name}/{key}");
            let n: usize = shape.iter().product();
            assert_eq!(w.values.len(), n, "{name}/{key}");
            for (k, &v) in w.values.iter().enumerate() {
                assert_eq!(v, value(li, wi, k), "{name}/{key}[{k}]");
            }
        }
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Our model's names for `small()`'s layers with weights.
fn small_targets() -> Vec<String> {
    strings(&[
        "conv2d",
        "batch_normalization",
        "conv2d_1",
        "batch_normalization_1",
        "predictions",
    ])
}

#[test]
fn h5py_default_layout_reads() {
    check(
        &keras_h5::read_layers(&fixture("keras_legacy_default.h5")).unwrap(),
        &small(),
    );
}

#[test]
fn file_after_a_user_block_reads() {
    check(
        &keras_h5::read_layers(&fixture("keras_userblock.h5")).unwrap(),
        &small(),
    );
}

#[test]
fn libver_latest_layout_reads() {
    check(
        &keras_h5::read_layers(&fixture("keras_legacy_latest.h5")).unwrap(),
        &small(),
    );
}

#[test]
fn vlen_strings_compact_f64_f16_big_endian_read() {
    check(
        &keras_h5::read_layers(&fixture("keras_vlen.h5")).unwrap(),
        &small(),
    );
}

#[test]
fn uncompressed_chunked_dataset_reads() {
    check(
        &keras_h5::read_layers(&fixture("keras_chunked.h5")).unwrap(),
        &small(),
    );
}

#[test]
fn many_layers_multilevel_btree_and_split_attribute_read() {
    let mut spec: Spec = many(30)
        .into_iter()
        .filter(|(_, w)| !w.is_empty())
        .collect();
    while spec.len() < 300 {
        spec.push((format!("activation_{}", spec.len()), vec![]));
    }
    check(
        &keras_h5::read_layers(&fixture("keras_many.h5")).unwrap(),
        &spec,
    );
}

#[test]
fn many_layers_dense_links_and_attributes_read() {
    check(
        &keras_h5::read_layers(&fixture("keras_many_latest.h5")).unwrap(),
        &many(64),
    );
}

/// The model of `make_keras_h5.py`.
fn keras3_model() -> Spec {
    let l = |n: &str, w: Vec<(&'static str, Vec<usize>)>| (n.to_string(), w);
    vec![
        l("input_layer", vec![]),
        l("conv2d", vec![("kernel", vec![3, 3, 3, 4])]),
        l(
            "batch_normalization",
            vec![
                ("beta", vec![4]),
                ("moving_mean", vec![4]),
                ("moving_variance", vec![4]),
            ],
        ),
        l("activation", vec![]),
        l("max_pooling2d", vec![]),
        l("global_average_pooling2d", vec![]),
        l(
            "predictions",
            vec![("kernel", vec![4, 3]), ("bias", vec![3])],
        ),
    ]
}

#[test]
fn files_written_by_keras_itself_read() {
    for file in ["keras3_legacy_weights.h5", "keras3_legacy_model.h5"] {
        let bytes = fixture(file);
        check_names(&keras_h5::read_layers(&bytes).unwrap(), &keras3_model(), "");
        let names = strings(&["conv2d", "batch_normalization", "predictions"]);
        let st = keras_h5::convert(&bytes, &names).unwrap();
        let st = safetensors::load_bytes(&st, file).unwrap();
        assert_eq!(st.len(), 6);
        let k = st.get("predictions/kernel").unwrap();
        assert_eq!(k.shape(), &[4, 3]);
        assert_eq!(k.values()[11], 60.0 + 11.0 * 0.25);
    }
}

#[test]
fn converts_to_safetensors_renamed_by_order() {
    for file in [
        "keras_legacy_default.h5",
        "keras_legacy_latest.h5",
        "keras_vlen.h5",
    ] {
        let out = keras_h5::convert(&fixture(file), &small_targets()).unwrap();
        let st = safetensors::load_bytes(&out, file).unwrap();
        let mut names: Vec<&str> = st.names().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "batch_normalization/beta",
                "batch_normalization/moving_mean",
                "batch_normalization/moving_variance",
                "batch_normalization_1/beta",
                "batch_normalization_1/moving_mean",
                "batch_normalization_1/moving_variance",
                "conv2d/kernel",
                "conv2d_1/kernel",
                "predictions/bias",
                "predictions/kernel",
            ],
            "{file}"
        );
        // conv2d_1 in the file (layer 1) is conv2d here; conv2d_2 (layer 4)
        // is conv2d_1.
        let k = st.get("conv2d/kernel").unwrap();
        assert_eq!(k.shape(), &[3, 3, 3, 4]);
        let v = k.values();
        assert_eq!((v[0], v[1], v[107]), (10.0, 10.25, 10.0 + 107.0 * 0.25));
        let k = st.get("conv2d_1/kernel").unwrap();
        assert_eq!(k.shape(), &[1, 1, 4, 2]);
        assert_eq!(k.values()[7], 40.0 + 7.0 * 0.25);
        let b = st.get("batch_normalization_1/moving_variance").unwrap();
        assert_eq!(b.values().to_vec(), vec![52.0, 52.25]);
        let b = st.get("predictions/bias").unwrap();
        assert_eq!(b.values().to_vec(), vec![81.0, 81.25, 81.5]);
    }
}

#[test]
fn many_layers_convert_with_keras3_names() {
    let bytes = fixture("keras_many_latest.h5");
    let mut names = Vec::new();
    for (n, w) in many(64) {
        if w.is_empty() {
            continue;
        }
        // conv2d_1 -> conv2d, conv2d_2 -> conv2d_1, ...
        let (base, i) = n.rsplit_once('_').unwrap();
        let i: usize = i.parse().unwrap();
        names.push(if i == 1 {
            base.to_string()
        } else {
            format!("{base}_{}", i - 1)
        });
    }
    let out = keras_h5::convert(&bytes, &names).unwrap();
    let st = safetensors::load_bytes(&out, "many").unwrap();
    assert_eq!(st.len(), 22 * 2 + 21 * 4);
    // The file's batch_normalization_21 is layer 61.
    let g = st.get("batch_normalization_20/gamma").unwrap();
    assert_eq!(g.values().to_vec(), vec![610.0, 610.25]);
}

#[test]
fn layer_count_or_kind_mismatch_is_refused() {
    let bytes = fixture("keras_legacy_default.h5");
    let mut fewer = small_targets();
    fewer.pop();
    let e = keras_h5::convert(&bytes, &fewer).unwrap_err();
    assert!(matches!(e, H5Error::Mapping(_)), "{e}");
    assert!(e.to_string().contains("5 layers with weights"), "{e}");
    // A model with one Dense more and one BatchNormalization less.
    let mut other = small_targets();
    other.retain(|n| n != "batch_normalization_1");
    other.push("dense".to_string());
    let e = keras_h5::convert(&bytes, &other).unwrap_err();
    assert!(matches!(e, H5Error::Mapping(_)), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("2 \"batch_normalization\" layers in the file, 1 in the model"),
        "{e}"
    );
    assert!(
        e.contains("0 \"dense\" layers in the file, 1 in the model"),
        "{e}"
    );
}

#[test]
fn layers_pair_by_kind_and_number_not_by_list_order() {
    // Keras writes `layer_names` sorted by depth, which for branching models
    // (InceptionV3) is not the order the layers were created and numbered
    // in; the model's own list may be in yet another order. The k-th conv2d
    // of the file is the k-th conv2d of the model whatever the lists' order.
    let bytes = fixture("keras_legacy_default.h5");
    let mut shuffled = small_targets();
    shuffled.reverse();
    let out = keras_h5::convert(&bytes, &shuffled).unwrap();
    let straight = keras_h5::convert(&bytes, &small_targets()).unwrap();
    assert_eq!(out, straight);
    let st = safetensors::load_bytes(&out, "small").unwrap();
    // The file's conv2d_2 (layer 4 of the file) is the model's conv2d_1.
    assert_eq!(st.get("conv2d_1/kernel").unwrap().values()[0], 40.0);
}

#[test]
fn not_keras_and_not_hdf5_are_refused_clearly() {
    let e = keras_h5::read_layers(&fixture("not_keras.h5")).unwrap_err();
    assert!(matches!(e, H5Error::NotKeras(_)), "{e}");
    assert!(e.to_string().contains("layer_names"), "{e}");
    for bytes in [
        &b""[..],
        b"\x89HDF",
        b"PK\x03\x04 a zip file, not HDF5 at all",
    ] {
        let e = keras_h5::read_layers(bytes).unwrap_err();
        assert!(matches!(e, H5Error::NotHdf5(_)), "{e}");
    }
    // A safetensors file is not HDF5 either.
    let st = keras_h5::convert(&fixture("keras_legacy_default.h5"), &small_targets()).unwrap();
    assert!(matches!(
        keras_h5::read_layers(&st),
        Err(H5Error::NotHdf5(_))
    ));
}

#[test]
fn compressed_dataset_is_refused_naming_the_layer_and_filter() {
    let e = keras_h5::read_layers(&fixture("keras_gzip.h5")).unwrap_err();
    let H5Error::Unsupported { part, detail } = &e else {
        panic!("{e}");
    };
    assert!(part.contains("layer \"conv2d_1\""), "{e}");
    assert!(part.contains("conv2d_1/kernel:0"), "{e}");
    assert!(detail.contains("gzip"), "{e}");
}

#[test]
fn weight_keys() {
    assert_eq!(keras_h5::weight_key("conv2d_1/kernel:0"), "kernel");
    assert_eq!(
        keras_h5::weight_key("batch_normalization_3/moving_variance:0"),
        "moving_variance"
    );
    assert_eq!(keras_h5::weight_key("a/b/bias:12"), "bias");
    assert_eq!(keras_h5::weight_key("dense_W"), "dense_W");
    assert_eq!(keras_h5::weight_key("x:y"), "x:y");
}

const FILES: [&str; 10] = [
    "keras_userblock.h5",
    "keras3_legacy_weights.h5",
    "keras3_legacy_model.h5",
    "keras_legacy_default.h5",
    "keras_legacy_latest.h5",
    "keras_vlen.h5",
    "keras_many.h5",
    "keras_many_latest.h5",
    "keras_chunked.h5",
    "keras_gzip.h5",
];

#[test]
fn truncated_files_are_errors() {
    for file in FILES {
        let bytes = fixture(file);
        let step = (bytes.len() / 400).max(1);
        let mut cuts: Vec<usize> = (0..bytes.len()).step_by(step).collect();
        cuts.extend(bytes.len().saturating_sub(64)..bytes.len());
        for cut in cuts {
            let r = keras_h5::read_layers(&bytes[..cut]);
            assert!(r.is_err(), "{file} cut at {cut} of {} read", bytes.len());
        }
    }
}

/// Reads and converts damaged `bytes`, checking that whatever is read is
/// whole, and that no single allocation is much larger than the file (the
/// legitimate largest: the converted output, about twice the file).
fn damaged(bytes: &[u8], what: &str) {
    let names = small_targets();
    let (r, big) = largest_allocation(|| keras_h5::read_layers(bytes));
    let bound = 8 * bytes.len() + (1 << 16);
    assert!(
        big <= bound,
        "{what}: an allocation of {big} bytes for a file of {}",
        bytes.len()
    );
    if let Ok(layers) = r {
        for l in &layers {
            for w in &l.weights {
                assert_eq!(w.values.len(), w.shape.iter().product::<usize>(), "{what}");
            }
        }
        let (r, big) = largest_allocation(|| keras_h5::convert(bytes, &names));
        assert!(
            big <= bound,
            "{what}: an allocation of {big} bytes for a file of {}",
            bytes.len()
        );
        if let Ok(st) = r {
            safetensors::load_bytes(&st, what).unwrap();
        }
    }
}

#[test]
fn flipped_bytes_and_garbage_never_panic_nor_over_allocate() {
    for file in FILES {
        let bytes = fixture(file);
        // A sample of positions (every one of the smaller files).
        let step = (bytes.len() / 2500).max(1);
        for pos in (0..bytes.len()).step_by(step) {
            for flip in [0xFFu8, 0x01] {
                let mut b = bytes.clone();
                b[pos] ^= flip;
                damaged(&b, &format!("{file} with byte {pos} ^ {flip:#x}"));
            }
        }
    }
    // Garbage, and garbage after a valid superblock.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let head = fixture("keras_legacy_default.h5");
    for len in [0usize, 1, 7, 8, 9, 64, 100, 512, 600, 4096] {
        for i in 0..50 {
            let mut b: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            damaged(&b, &format!("garbage {len}/{i}"));
            let n = head.len().min(96).min(b.len());
            b[..n].copy_from_slice(&head[..n]);
            damaged(&b, &format!("superblock and garbage {len}/{i}"));
        }
    }
}

/// Keras 2 numbering (`conv2d_1` first) to a fresh Keras 3 session's
/// (`conv2d` first).
fn keras3_name(file_name: &str) -> String {
    match file_name.rsplit_once('_') {
        Some((base, n)) if n.parse::<usize>().is_ok() => match n.parse::<usize>().unwrap() {
            1 => base.to_string(),
            k => format!("{base}_{}", k - 1),
        },
        _ => file_name.to_string(),
    }
}

/// The full-size InceptionV3 file (Keras's own, or the stand-in of
/// `make_inception_h5.py`), named by `KERAS_H5_INCEPTION`: 94 convolutions
/// and 94 batch normalizations, converted to Keras 3 names.
#[test]
#[ignore = "needs KERAS_H5_INCEPTION=<inception_v3 ..._notop.h5> (see make_inception_h5.py)"]
fn inception_sized_file() {
    let path = std::env::var("KERAS_H5_INCEPTION").expect("KERAS_H5_INCEPTION");
    let bytes = std::fs::read(&path).unwrap();
    let t = std::time::Instant::now();
    let layers = keras_h5::read_layers(&bytes).unwrap();
    eprintln!("{path}: {} layers read in {:?}", layers.len(), t.elapsed());
    let with: Vec<&Layer> = layers.iter().filter(|l| !l.weights.is_empty()).collect();
    assert_eq!(with.len(), 188);
    let params: usize = with
        .iter()
        .flat_map(|l| &l.weights)
        .map(|w| w.values.len())
        .sum();
    // Keras's count for InceptionV3 without top: 21,802,784.
    assert_eq!(params, 21_802_784);
    let first = &with[0].weights[0];
    assert_eq!(
        (first.name.as_str(), &first.shape[..]),
        ("conv2d_1/kernel:0", &[3, 3, 3, 32][..])
    );
    if first.values[1] == 1.001 {
        // The stand-in: values follow its formula.
        for (li, l) in layers.iter().enumerate() {
            for w in &l.weights {
                for k in [0, w.values.len() / 2, w.values.len() - 1] {
                    assert_eq!(w.values[k], (k as f64 * 1e-3 + li as f64) as f32);
                }
            }
        }
    }
    let names: Vec<String> = with.iter().map(|l| keras3_name(&l.name)).collect();
    assert_eq!(names[0], "conv2d");
    assert_eq!(
        names.iter().rfind(|n| n.starts_with("conv2d")).unwrap(),
        "conv2d_93"
    );
    let t = std::time::Instant::now();
    let st = keras_h5::convert(&bytes, &names).unwrap();
    eprintln!("converted in {:?}: {} bytes", t.elapsed(), st.len());
    let st = safetensors::load_bytes(&st, &path).unwrap();
    assert_eq!(st.len(), 94 + 94 * 3);
    assert_eq!(st.get("conv2d/kernel").unwrap().shape(), &[3, 3, 3, 32]);
    assert_eq!(
        st.get("batch_normalization_93/moving_variance")
            .unwrap()
            .shape(),
        &[192]
    );
}

#[test]
fn damaged_v2_metadata_fails_its_checksum() {
    let bytes = fixture("keras_legacy_latest.h5");
    // The superblock (version 3, 48 bytes) and the root's "OHDR" after it.
    assert_eq!(&bytes[48..52], b"OHDR");
    for (pos, part) in [(20, "superblock"), (60, "object header at address 48")] {
        let mut b = bytes.clone();
        b[pos] ^= 0x04;
        let e = keras_h5::read_layers(&b).unwrap_err();
        let H5Error::Malformed { part: p, detail } = &e else {
            panic!("{e}");
        };
        assert!(p.contains(part) && detail.contains("checksum"), "{e}");
    }
}
