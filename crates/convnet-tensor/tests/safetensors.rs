//! safetensors reading and writing: round trips, hand-built F16/BF16/F64
//! files, a file written by the official Python library, every kind of bad
//! input (each error must name the file and the tensor at fault), and atomic
//! saving.
//!
//! Compatibility the other way round (the official library reading our
//! output) is checked by hand, not here, since it needs Python:
//!
//! ```text
//! pip install safetensors numpy
//! python3 -c "from safetensors.numpy import load_file; print(load_file('ours.safetensors'))"
//! ```
//!
//! on a file written by `safetensors::save` with F32 tensors of rank 0, 1, 4
//! and a zero-size dimension plus metadata (`safetensors.safe_open(...).metadata()`
//! returned it intact) with safetensors 0.8.0 / numpy 2.4.6.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use convnet_tensor::safetensors::{self, load, load_bytes, save, to_bytes, SafeTensors};
use convnet_tensor::{Tensor, TensorError};
use proptest::prelude::*;

/// A fresh, empty folder under the system temp dir.
fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("convnet-st-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A safetensors file from a header JSON string and a data buffer, built by
/// hand (the header is not padded, which readers must accept).
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Load `bytes` as "weights.safetensors", expect an error, and check that its
/// message names the file, the tensor (if given) and contains `want`.
fn expect_err(bytes: &[u8], tensor: Option<&str>, want: &str) -> String {
    let err = load_bytes(bytes, "weights.safetensors").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("weights.safetensors: "),
        "error does not name the file: {msg}"
    );
    if let Some(t) = tensor {
        assert!(
            msg.contains(&format!("tensor \"{t}\"")),
            "error does not name tensor {t}: {msg}"
        );
        match &err {
            TensorError::Format {
                tensor: Some(got), ..
            } => assert_eq!(got, t),
            other => panic!("expected a Format error for {t}, got {other:?}"),
        }
    }
    assert!(msg.contains(want), "expected {want:?} in: {msg}");
    msg
}

#[test]
fn round_trip_of_many_shapes_with_metadata() {
    let dir = temp_dir("roundtrip");
    let path = dir.join("model.safetensors");
    let scalar = Tensor::scalar(-7.5);
    let vector = Tensor::from_vec(&[3], vec![1.0, f32::MIN_POSITIVE, -0.0]).unwrap();
    let kernel = Tensor::from_fn(&[3, 3, 2, 4], |i| i as f32 * 0.1 - 3.0);
    let empty = Tensor::zeros(&[0, 5]);
    let empty2 = Tensor::zeros(&[4, 0, 2]);
    let odd = Tensor::from_vec(&[2], vec![f32::NAN, f32::INFINITY]).unwrap();
    let m = meta(&[
        ("format", "pt"),
        ("convnet", "0.1.0"),
        ("note", "ünïcode \"q\""),
    ]);
    // Given out of order: the file holds them sorted.
    let list = [
        ("z/kernel", &kernel),
        ("a", &scalar),
        ("empty", &empty),
        ("m/vector", &vector),
        ("empty2", &empty2),
        ("nan_inf", &odd),
    ];
    save(&path, &list, &m).unwrap();
    let back = load(&path).unwrap();
    assert_eq!(back.metadata, m);
    let names: Vec<&str> = back.names().collect();
    assert_eq!(
        names,
        ["a", "empty", "empty2", "m/vector", "nan_inf", "z/kernel"]
    );
    for (name, t) in list {
        let got = back.get(name).unwrap();
        assert_eq!(got.shape(), t.shape(), "{name}");
        let (g, w) = (got.to_vec(), t.to_vec());
        assert_eq!(g.len(), w.len());
        for (a, b) in g.iter().zip(&w) {
            assert_eq!(a.to_bits(), b.to_bits(), "{name}: {a} vs {b}");
        }
    }
    assert_eq!(back.get("a").unwrap().shape(), &[] as &[usize]);
    assert!(back.get("missing").is_none());
    // NaN/Inf are not a format error.
    assert!(!back.get("nan_inf").unwrap().all_finite());
    // The header is padded with spaces to a multiple of 8.
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(n % 8, 0);
    assert!(std::str::from_utf8(&bytes[8..8 + n])
        .unwrap()
        .starts_with('{'));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn empty_file_and_no_metadata() {
    let bytes = to_bytes(&[], &BTreeMap::new()).unwrap();
    let back = load_bytes(&bytes, "mem").unwrap();
    assert_eq!(back, SafeTensors::default());
    assert!(back.is_empty());
    // Without metadata there is no __metadata__ key.
    let t = Tensor::scalar(1.0);
    let bytes = to_bytes(&[("t", &t)], &BTreeMap::new()).unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains("__metadata__"));
}

#[test]
fn non_contiguous_tensors_are_written_in_logical_order() {
    let t = Tensor::from_vec(&[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let p = t.permute(&[1, 0]).unwrap();
    let back = load_bytes(&to_bytes(&[("p", &p)], &BTreeMap::new()).unwrap(), "m").unwrap();
    assert_eq!(back.get("p").unwrap().shape(), &[3, 2]);
    assert_eq!(
        back.get("p").unwrap().to_vec(),
        vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
    );
}

#[test]
fn f16_bf16_and_f64_are_converted_to_f32() {
    let f16: Vec<u8> = [0.5f32, -2.0, 65504.0, 5.960_464_5e-8]
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    // bf16 by hand: the top 16 bits of the f32.
    let bf16: Vec<u8> = [1.0f32, -3.5, 1.0e30]
        .iter()
        .flat_map(|&v| ((v.to_bits() >> 16) as u16).to_le_bytes())
        .collect();
    let f64: Vec<u8> = [0.1f64, -1.0e10]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    // Raw bit patterns too: f16 0x3C00 = 1.0, 0xFC00 = -inf; bf16 0x4049 = 3.140625.
    let raw16 = [0x00u8, 0x3C, 0x00, 0xFC];
    let rawbf = [0x49u8, 0x40];
    let mut data = Vec::new();
    let mut offsets = Vec::new();
    for part in [&f16[..], &bf16, &f64, &raw16, &rawbf] {
        offsets.push((data.len(), data.len() + part.len()));
        data.extend_from_slice(part);
    }
    let header = format!(
        r#"{{"h":{{"dtype":"F16","shape":[2,2],"data_offsets":[{},{}]}},"b":{{"dtype":"BF16","shape":[3],"data_offsets":[{},{}]}},"d":{{"dtype":"F64","shape":[2,1],"data_offsets":[{},{}]}},"r":{{"dtype":"F16","shape":[2],"data_offsets":[{},{}]}},"rb":{{"dtype":"BF16","shape":[],"data_offsets":[{},{}]}}}}"#,
        offsets[0].0,
        offsets[0].1,
        offsets[1].0,
        offsets[1].1,
        offsets[2].0,
        offsets[2].1,
        offsets[3].0,
        offsets[3].1,
        offsets[4].0,
        offsets[4].1
    );
    let st = load_bytes(&raw_file(&header, &data), "half.safetensors").unwrap();
    let h = st.get("h").unwrap();
    assert_eq!(h.shape(), &[2, 2]);
    assert_eq!(h.to_vec(), vec![0.5, -2.0, 65504.0, 5.960_464_5e-8]);
    let b = st.get("b").unwrap();
    assert_eq!(b.to_vec()[..2], [1.0, -3.5]);
    assert!((b.to_vec()[2] / 1.0e30 - 1.0).abs() < 1e-2);
    assert_eq!(st.get("d").unwrap().to_vec(), vec![0.1f32, -1.0e10]);
    assert_eq!(st.get("d").unwrap().shape(), &[2, 1]);
    assert_eq!(st.get("r").unwrap().to_vec(), vec![1.0, f32::NEG_INFINITY]);
    assert_eq!(st.get("rb").unwrap().to_vec(), vec![3.140625]);
}

/// `tests/fixtures/reference.safetensors` was written by the official Python
/// library (see `tests/fixtures/make_safetensors.py`).
#[test]
fn reads_the_reference_implementations_output() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference.safetensors");
    let st = load(&path).unwrap();
    assert_eq!(
        st.metadata,
        meta(&[("format", "np"), ("writer", "make_safetensors.py")])
    );
    assert_eq!(
        st.names().collect::<Vec<_>>(),
        ["a", "b16", "c", "conv2d/kernel", "empty"]
    );
    let a = st.get("a").unwrap();
    assert_eq!(a.shape(), &[2, 3]);
    assert_eq!(a.to_vec(), vec![-1.0, -0.5, 0.0, 0.5, 1.0, 1.5]);
    let b = st.get("b16").unwrap();
    assert_eq!(b.shape(), &[4]);
    assert_eq!(b.to_vec(), vec![0.5, -2.0, 65504.0, 2.0f32.powi(-24)]);
    let c = st.get("c").unwrap();
    assert_eq!(c.shape(), &[] as &[usize]);
    assert_eq!(c.item().unwrap(), 3.25);
    assert_eq!(st.get("empty").unwrap().shape(), &[0, 3]);
    let k = st.get("conv2d/kernel").unwrap();
    assert_eq!(k.shape(), &[1, 2, 2, 1]);
    assert_eq!(k.to_vec(), vec![1.0, -1.0, 0.25, 1e-3]);
}

// ---------------------------------------------------------------- bad input

#[test]
fn truncated_files() {
    for len in 0..8 {
        expect_err(&vec![0u8; len], None, "too short");
    }
    // A good file cut short: the header length now runs past the end, or
    // the data buffer is shorter than the offsets say.
    let t = Tensor::from_vec(&[10, 10], vec![1.0; 100]).unwrap();
    let good = to_bytes(&[("conv2d/kernel", &t)], &BTreeMap::new()).unwrap();
    expect_err(&good[..20], None, "runs past the end of the file");
    let msg = expect_err(
        &good[..good.len() - 4],
        Some("conv2d/kernel"),
        "data offsets [0, 400) end past the data buffer (396 bytes)",
    );
    assert_eq!(
        msg,
        "weights.safetensors: tensor \"conv2d/kernel\": data offsets [0, 400) end past the data buffer (396 bytes)"
    );
}

#[test]
fn huge_claimed_header_length_is_refused_without_allocating() {
    for n in [u64::MAX, u64::MAX / 2, 100_000_001, 1 << 40] {
        let mut bytes = n.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        expect_err(&bytes, None, "exceeds the limit of 100000000 bytes");
    }
    let mut bytes = 50u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}");
    expect_err(
        &bytes,
        None,
        "header length 50 runs past the end of the file (2 bytes",
    );
}

#[test]
fn header_not_json_or_not_an_object() {
    expect_err(&raw_file("not json at all", &[]), None, "not a JSON object");
    expect_err(&raw_file("{\"a\": ", &[]), None, "not valid JSON");
    expect_err(&raw_file("{} trailing", &[]), None, "not valid JSON");
    expect_err(&raw_file("[1, 2]", &[]), None, "not a JSON object");
    let mut bad_utf8 = 4u64.to_le_bytes().to_vec();
    bad_utf8.extend_from_slice(&[b'{', 0xff, 0xfe, b'}']);
    expect_err(&bad_utf8, None, "not UTF-8");
    expect_err(
        &raw_file(r#"{"__metadata__": {"k": 1}}"#, &[]),
        None,
        "__metadata__ value \"k\" is not a string",
    );
    expect_err(
        &raw_file(r#"{"__metadata__": [1]}"#, &[]),
        None,
        "__metadata__ is not an object",
    );
    expect_err(&raw_file(r#"{"w": 3}"#, &[]), Some("w"), "not an object");
}

#[test]
fn missing_or_malformed_fields() {
    let data = [0u8; 4];
    for (entry, want) in [
        (r#"{"shape":[1],"data_offsets":[0,4]}"#, "no \"dtype\""),
        (r#"{"dtype":"F32","data_offsets":[0,4]}"#, "no \"shape\""),
        (r#"{"dtype":"F32","shape":[1]}"#, "no \"data_offsets\""),
        (
            r#"{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}"#,
            "shape entry -1",
        ),
        (
            r#"{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}"#,
            "shape entry 1.5",
        ),
        (
            r#"{"dtype":"F32","shape":"1","data_offsets":[0,4]}"#,
            "not an array",
        ),
        (
            r#"{"dtype":"F32","shape":[1],"data_offsets":[0]}"#,
            "[begin, end]",
        ),
        (
            r#"{"dtype":"F32","shape":[1],"data_offsets":[0,"4"]}"#,
            "not non-negative integers",
        ),
        (
            r#"{"dtype":32,"shape":[1],"data_offsets":[0,4]}"#,
            "not a string",
        ),
    ] {
        let header = format!(r#"{{"dense/bias": {entry}}}"#);
        expect_err(&raw_file(&header, &data), Some("dense/bias"), want);
    }
}

#[test]
fn offsets_past_the_end_or_reversed() {
    expect_err(
        &raw_file(
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            &[0; 8],
        ),
        Some("w"),
        "data offsets [4, 12) end past the data buffer (8 bytes)",
    );
    expect_err(
        &raw_file(
            r#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551615]}}"#,
            &[0; 8],
        ),
        Some("w"),
        "end past the data buffer",
    );
    expect_err(
        &raw_file(
            r#"{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}"#,
            &[0; 8],
        ),
        Some("w"),
        "begin after they end",
    );
}

#[test]
fn overlapping_tensors() {
    let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let msg = expect_err(&raw_file(header, &[0; 12]), Some("b"), "overlap");
    assert!(msg.contains("tensor \"a\" [0, 8)"), "{msg}");
    // Two tensors on the same bytes.
    let header = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    expect_err(&raw_file(header, &[0; 8]), Some("b"), "overlap");
}

#[test]
fn gaps_and_trailing_bytes() {
    let header = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}"#;
    let msg = expect_err(&raw_file(header, &[0; 12]), Some("b"), "bytes [4, 8)");
    assert!(
        msg.contains("unused") && msg.contains("after tensor \"a\""),
        "{msg}"
    );
    let header = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    expect_err(&raw_file(header, &[0; 8]), Some("a"), "bytes [0, 4)");
    let header = r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
    let msg = expect_err(&raw_file(header, &[0; 7]), None, "3 trailing bytes");
    assert!(msg.contains("\"a\""), "{msg}");
    expect_err(&raw_file("{}", &[1, 2]), None, "2 trailing bytes");
}

#[test]
fn unsupported_dtypes_name_file_tensor_and_dtype() {
    for (dtype, size) in [
        ("I8", 1),
        ("U8", 1),
        ("I64", 8),
        ("BOOL", 1),
        ("F8_E4M3", 1),
        ("X", 4),
    ] {
        let header = format!(
            r#"{{"labels":{{"dtype":"{dtype}","shape":[2],"data_offsets":[0,{}]}}}}"#,
            2 * size
        );
        let msg = expect_err(
            &raw_file(&header, &vec![0; 2 * size]),
            Some("labels"),
            &format!("unsupported dtype {dtype}"),
        );
        assert!(msg.contains("F32, F16, BF16 and F64"), "{msg}");
    }
}

#[test]
fn byte_length_disagreeing_with_shape() {
    let header = r#"{"conv/kernel":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}"#;
    expect_err(
        &raw_file(header, &[0; 20]),
        Some("conv/kernel"),
        "hold 20 bytes, but shape [2, 3] of F32 needs 24",
    );
    let header = r#"{"h":{"dtype":"F16","shape":[3],"data_offsets":[0,4]}}"#;
    expect_err(&raw_file(header, &[0; 4]), Some("h"), "F16 needs 6");
}

#[test]
fn shape_product_overflow() {
    let header = r#"{"big":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}}"#;
    expect_err(
        &raw_file(header, &[0; 4]),
        Some("big"),
        "more elements than fit",
    );
    let header = format!(
        r#"{{"big":{{"dtype":"F64","shape":[{}],"data_offsets":[0,4]}}}}"#,
        usize::MAX / 2
    );
    expect_err(
        &raw_file(&header, &[0; 4]),
        Some("big"),
        "more bytes than fit",
    );
}

#[test]
fn io_errors_name_the_file() {
    let err = load(Path::new("/nonexistent/dir/w.safetensors")).unwrap_err();
    assert!(matches!(err, TensorError::Io { .. }));
    assert!(
        err.to_string()
            .starts_with("/nonexistent/dir/w.safetensors: "),
        "{err}"
    );
    let t = Tensor::scalar(1.0);
    let err = save(
        Path::new("/nonexistent/dir/w.safetensors"),
        &[("t", &t)],
        &BTreeMap::new(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/dir/w.safetensors"),
        "{err}"
    );
}

// ---------------------------------------------------------------- saving

#[test]
fn save_refuses_duplicate_and_reserved_names() {
    let t = Tensor::scalar(1.0);
    let err = to_bytes(&[("w", &t), ("b", &t), ("w", &t)], &BTreeMap::new()).unwrap_err();
    assert!(
        err.to_string().contains("two tensors are named \"w\""),
        "{err}"
    );
    let err = to_bytes(&[("__metadata__", &t)], &BTreeMap::new()).unwrap_err();
    assert!(err.to_string().contains("reserved"), "{err}");
}

#[test]
fn atomic_save_replaces_the_old_file_and_leaves_no_temp_file() {
    let dir = temp_dir("atomic");
    let path = dir.join("weights.safetensors");
    let old = Tensor::from_vec(&[2], vec![1.0, 2.0]).unwrap();
    let new = Tensor::from_fn(&[3, 3], |i| i as f32);
    save(&path, &[("w", &old)], &meta(&[("v", "1")])).unwrap();
    save(&path, &[("w", &new), ("extra", &old)], &meta(&[("v", "2")])).unwrap();
    let back = load(&path).unwrap();
    assert_eq!(back.get("w"), Some(&new));
    assert_eq!(back.metadata["v"], "2");
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        files,
        ["weights.safetensors"],
        "temporary files left behind"
    );

    // A failed save (here: the target is a folder) leaves no temp file and
    // the folder untouched.
    let sub = dir.join("sub.safetensors");
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(sub.join("keep"), b"x").unwrap();
    assert!(save(&sub, &[("w", &old)], &BTreeMap::new()).is_err());
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["sub.safetensors", "weights.safetensors"]);
    assert_eq!(std::fs::read(sub.join("keep")).unwrap(), b"x");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn concurrent_saves_to_one_path_leave_a_whole_file() {
    let dir = temp_dir("concurrent");
    let path = dir.join("w.safetensors");
    std::thread::scope(|s| {
        for k in 0..8 {
            let path = &path;
            s.spawn(move || {
                let t = Tensor::full(&[64, 64], k as f32);
                for _ in 0..5 {
                    safetensors::save(path, &[("w", &t)], &BTreeMap::new()).unwrap();
                }
            });
        }
    });
    let w = load(&path).unwrap();
    let v = w.get("w").unwrap().to_vec();
    assert!(v.iter().all(|&x| x == v[0]), "a mixture of two saves");
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    std::fs::remove_dir_all(dir).unwrap();
}

// ---------------------------------------------------------------- properties

fn arb_tensor() -> impl Strategy<Value = Tensor> {
    prop::collection::vec(0usize..5, 0..5).prop_flat_map(|shape| {
        let n: usize = shape.iter().product();
        prop::collection::vec(any::<f32>(), n)
            .prop_map(move |v| Tensor::from_vec(&shape, v).unwrap())
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn round_trip_random_shapes_and_values(
        tensors in prop::collection::btree_map("[a-z/_.0-9]{1,12}", arb_tensor(), 0..6),
        metadata in prop::collection::btree_map("[a-z]{1,8}", ".{0,16}", 0..4),
    ) {
        let list: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let bytes = to_bytes(&list, &metadata).unwrap();
        let back = load_bytes(&bytes, "prop").unwrap();
        prop_assert_eq!(&back.metadata, &metadata);
        prop_assert_eq!(back.len(), tensors.len());
        for ((name, t), (bn, bt)) in tensors.iter().zip(&back.tensors) {
            prop_assert_eq!(name, bn);
            prop_assert_eq!(t.shape(), bt.shape());
            let bits = |t: &Tensor| t.to_vec().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            prop_assert_eq!(bits(t), bits(bt));
        }
    }

    /// Any corruption of a valid file is an error or a valid parse, never a panic.
    #[test]
    fn corrupted_files_never_panic(
        t in arb_tensor(),
        pos in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = to_bytes(&[("t", &t)], &BTreeMap::new()).unwrap();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        let _ = load_bytes(&bytes, "fuzz");
        let c = cut.index(bytes.len());
        let _ = load_bytes(&bytes[..c], "fuzz");
    }
}
