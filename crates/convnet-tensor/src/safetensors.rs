//! Reading and writing the [safetensors] format, with our own parser so that
//! every check and every error message is under our control.
//!
//! A safetensors file is
//!
//! 1. `N`, the header length, as a little-endian `u64` (8 bytes);
//! 2. `N` bytes of UTF-8 JSON, an object:
//!    `{"__metadata__": {"key": "value", ..}, "name": {"dtype": "F32",
//!    "shape": [..], "data_offsets": [begin, end]}, ..}`, padded with spaces;
//! 3. the data buffer: every tensor's values, little-endian, row-major, at
//!    `data_offsets` counted from the start of this buffer. The tensors must
//!    cover the buffer exactly, with no overlap, gap or trailing bytes.
//!
//! Reading checks everything against the real size of the input before it
//! allocates anything the header asks for, and reports each problem as a
//! [`TensorError::Format`] naming the file and, where there is one, the
//! tensor at fault, e.g.
//! `weights.safetensors: tensor "conv2d/kernel": data offsets [0, 400) end
//! past the data buffer (396 bytes)`. It never panics on bad input.
//! `F32` is read as is, `F16` and `BF16` are widened to `f32`, `F64` is
//! narrowed to `f32`; every other dtype is refused. NaN and infinity are
//! values like any other here (callers may warn about them).
//!
//! Writing produces `F32` tensors sorted by name, as the reference
//! implementation does, and is atomic: a temporary file in the same folder,
//! `fsync`, rename over the target, `fsync` of the folder.
//!
//! ```
//! use std::collections::BTreeMap;
//! use convnet_tensor::{safetensors, Tensor};
//! let t = Tensor::from_vec(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
//! let bytes = safetensors::to_bytes(&[("w", &t)], &BTreeMap::new()).unwrap();
//! let back = safetensors::load_bytes(&bytes, "memory").unwrap();
//! assert_eq!(back.get("w"), Some(&t));
//! ```
//!
//! [safetensors]: https://huggingface.co/docs/safetensors

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Map, Value};

use crate::{Result, Tensor, TensorError};

/// Largest header accepted, in bytes (the reference implementation's limit).
pub const MAX_HEADER: u64 = 100_000_000;

/// The contents of a safetensors file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SafeTensors {
    /// The tensors with their names, sorted by name.
    pub tensors: Vec<(String, Tensor)>,
    /// The string pairs of the header's `__metadata__` (empty if absent).
    pub metadata: BTreeMap<String, String>,
}

impl SafeTensors {
    /// The tensor called `name`, if the file has one.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use convnet_tensor::{safetensors, Tensor};
    /// let b = Tensor::from_vec(&[3], vec![0.5, 0.0, -1.0]).unwrap();
    /// let bytes = safetensors::to_bytes(&[("dense/bias", &b)], &BTreeMap::new()).unwrap();
    /// let file = safetensors::load_bytes(&bytes, "memory").unwrap();
    /// assert_eq!(file.get("dense/bias").unwrap().to_vec(), vec![0.5, 0.0, -1.0]);
    /// assert!(file.get("dense/kernel").is_none());
    /// ```
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors
            .binary_search_by(|(n, _)| n.as_str().cmp(name))
            .ok()
            .map(|i| &self.tensors[i].1)
    }

    /// The tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|(n, _)| n.as_str())
    }

    /// Number of tensors.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether the file holds no tensors.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
}

/// Read the safetensors file at `path`.
///
/// Errors name the file (and the tensor at fault): an unreadable file is a
/// [`TensorError::Io`], bad contents a [`TensorError::Format`] (see the
/// [module documentation](self) for what is checked).
///
/// ```
/// use std::collections::BTreeMap;
/// use convnet_tensor::{safetensors, Tensor};
/// let path = std::env::temp_dir().join(format!("doc-load-{}.safetensors", std::process::id()));
/// let k = Tensor::from_vec(&[1, 1, 1, 2], vec![0.25, -0.5]).unwrap();
/// safetensors::save(&path, &[("conv2d/kernel", &k)], &BTreeMap::new()).unwrap();
/// let file = safetensors::load(&path).unwrap();
/// assert_eq!(file.get("conv2d/kernel"), Some(&k));
/// std::fs::remove_file(&path).unwrap();
/// ```
pub fn load(path: &Path) -> Result<SafeTensors> {
    let origin = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| TensorError::io(&origin, e))?;
    load_bytes(&bytes, &origin)
}

/// Bytes per element of the dtypes we can read as `f32`.
fn dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "F32" => 4,
        "F16" | "BF16" => 2,
        "F64" => 8,
        _ => return None,
    })
}

/// One header entry, checked against the data buffer but not yet decoded.
struct Entry<'a> {
    name: &'a str,
    dtype: &'a str,
    shape: Vec<usize>,
    begin: usize,
    end: usize,
}

/// Parse safetensors bytes; `origin` names the source (a file name, say) in
/// errors. The same checks as [`load`].
///
/// ```
/// use convnet_tensor::safetensors;
/// // A header claiming more bytes than there are.
/// let mut bytes = 1000u64.to_le_bytes().to_vec();
/// bytes.extend_from_slice(b"{}");
/// let err = safetensors::load_bytes(&bytes, "weights.safetensors").unwrap_err();
/// assert!(err.to_string().starts_with("weights.safetensors: header length 1000"));
/// ```
pub fn load_bytes(bytes: &[u8], origin: &str) -> Result<SafeTensors> {
    let bad = |tensor: Option<&str>, msg: String| TensorError::format(origin, tensor, msg);
    if bytes.len() < 8 {
        return Err(bad(
            None,
            format!(
                "{} bytes is too short for a safetensors file (it starts with an 8-byte header length)",
                bytes.len()
            ),
        ));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let available = bytes.len() - 8;
    if n > MAX_HEADER {
        return Err(bad(
            None,
            format!("header length {n} exceeds the limit of {MAX_HEADER} bytes"),
        ));
    }
    // n <= MAX_HEADER, so it fits a usize.
    let n = n as usize;
    if n > available {
        return Err(bad(
            None,
            format!("header length {n} runs past the end of the file ({available} bytes after the length)"),
        ));
    }
    let header = std::str::from_utf8(&bytes[8..8 + n])
        .map_err(|e| bad(None, format!("header is not UTF-8: {e}")))?;
    if !header.starts_with('{') {
        return Err(bad(
            None,
            "header is not a JSON object (it must start with '{')".into(),
        ));
    }
    let json: Value = serde_json::from_str(header)
        .map_err(|e| bad(None, format!("header is not valid JSON: {e}")))?;
    let Value::Object(map) = &json else {
        return Err(bad(None, "header is not a JSON object".into()));
    };
    let data = &bytes[8 + n..];

    let mut metadata = BTreeMap::new();
    let mut entries = Vec::with_capacity(map.len());
    for (name, value) in map {
        if name == "__metadata__" {
            metadata = parse_metadata(value, origin)?;
        } else {
            entries.push(parse_entry(name, value, data.len(), origin)?);
        }
    }
    check_coverage(&mut entries, data.len(), origin)?;

    // Every range is now known to lie inside `data` and to have exactly the
    // bytes its shape needs, so decoding cannot fail or over-allocate.
    let mut tensors = Vec::with_capacity(entries.len());
    for e in &entries {
        let values = decode(e.dtype, &data[e.begin..e.end]);
        let t =
            Tensor::from_vec(&e.shape, values).map_err(|err| bad(Some(e.name), err.to_string()))?;
        tensors.push((e.name.to_string(), t));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(SafeTensors { tensors, metadata })
}

fn parse_metadata(value: &Value, origin: &str) -> Result<BTreeMap<String, String>> {
    let Value::Object(m) = value else {
        return Err(TensorError::format(
            origin,
            None,
            format!("__metadata__ is not an object of strings but {value}"),
        ));
    };
    m.iter()
        .map(|(k, v)| match v {
            Value::String(s) => Ok((k.clone(), s.clone())),
            other => Err(TensorError::format(
                origin,
                None,
                format!("__metadata__ value \"{k}\" is not a string but {other}"),
            )),
        })
        .collect()
}

fn parse_entry<'a>(
    name: &'a str,
    value: &'a Value,
    data_len: usize,
    origin: &str,
) -> Result<Entry<'a>> {
    let bad = |msg: String| TensorError::format(origin, Some(name), msg);
    let Value::Object(e) = value else {
        return Err(bad(format!("header entry is not an object but {value}")));
    };
    let dtype = match e.get("dtype") {
        None => return Err(bad("header entry has no \"dtype\"".into())),
        Some(Value::String(s)) => s.as_str(),
        Some(other) => return Err(bad(format!("dtype {other} is not a string"))),
    };
    let size = dtype_size(dtype).ok_or_else(|| {
        bad(format!(
            "unsupported dtype {dtype} (only F32, F16, BF16 and F64 can be read as f32)"
        ))
    })?;
    let shape: Vec<usize> = match e.get("shape") {
        None => return Err(bad("header entry has no \"shape\"".into())),
        Some(Value::Array(dims)) => dims
            .iter()
            .map(|d| {
                d.as_u64()
                    .and_then(|d| usize::try_from(d).ok())
                    .ok_or_else(|| bad(format!("shape entry {d} is not a non-negative integer")))
            })
            .collect::<Result<_>>()?,
        Some(other) => return Err(bad(format!("shape {other} is not an array"))),
    };
    let (begin, end) = match e.get("data_offsets") {
        None => return Err(bad("header entry has no \"data_offsets\"".into())),
        Some(Value::Array(o)) => match o.as_slice() {
            [b, e] => match (b.as_u64(), e.as_u64()) {
                (Some(b), Some(e)) => (b, e),
                _ => {
                    return Err(bad(format!(
                        "data_offsets [{b}, {e}] are not non-negative integers"
                    )))
                }
            },
            _ => {
                return Err(bad(format!(
                    "data_offsets must be [begin, end], found {} numbers",
                    o.len()
                )))
            }
        },
        Some(other) => return Err(bad(format!("data_offsets {other} is not an array"))),
    };
    if begin > end {
        return Err(bad(format!(
            "data offsets [{begin}, {end}) begin after they end"
        )));
    }
    if end > data_len as u64 {
        return Err(bad(format!(
            "data offsets [{begin}, {end}) end past the data buffer ({data_len} bytes)"
        )));
    }
    let (begin, end) = (begin as usize, end as usize);
    let count = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| {
            bad(format!(
                "shape {shape:?} has more elements than fit in memory"
            ))
        })?;
    let want = count.checked_mul(size).ok_or_else(|| {
        bad(format!(
            "shape {shape:?} of {dtype} needs more bytes than fit in memory"
        ))
    })?;
    if end - begin != want {
        return Err(bad(format!(
            "data offsets [{begin}, {end}) hold {} bytes, but shape {shape:?} of {dtype} needs {want} ({count} x {size})",
            end - begin
        )));
    }
    Ok(Entry {
        name,
        dtype,
        shape,
        begin,
        end,
    })
}

/// The tensors must tile the data buffer exactly: sorted by offset, each
/// begins where the previous one ends, and the last ends at the buffer's end.
fn check_coverage(entries: &mut [Entry<'_>], data_len: usize, origin: &str) -> Result<()> {
    entries.sort_by(|a, b| (a.begin, a.end, a.name).cmp(&(b.begin, b.end, b.name)));
    let mut at = 0usize;
    let mut prev: Option<&Entry<'_>> = None;
    for e in entries.iter() {
        if e.begin < at {
            let p = prev.expect("at > 0 only after an entry");
            return Err(TensorError::format(
                origin,
                Some(e.name),
                format!(
                    "data offsets [{}, {}) overlap those of tensor \"{}\" [{}, {})",
                    e.begin, e.end, p.name, p.begin, p.end
                ),
            ));
        }
        if e.begin > at {
            let after = prev
                .map(|p| format!(" (after tensor \"{}\")", p.name))
                .unwrap_or_default();
            return Err(TensorError::format(
                origin,
                Some(e.name),
                format!(
                    "data offsets [{}, {}) leave bytes [{at}, {}) of the data buffer unused{after}; the tensors must cover it exactly",
                    e.begin, e.end, e.begin
                ),
            ));
        }
        at = e.end;
        prev = Some(e);
    }
    if at != data_len {
        let what = match prev {
            Some(p) => format!("after the last tensor \"{}\" (which ends at {at})", p.name),
            None => "but the header lists no tensors".to_string(),
        };
        return Err(TensorError::format(
            origin,
            None,
            format!(
                "{} trailing bytes in the data buffer ({data_len} bytes) {what}; the tensors must cover it exactly",
                data_len - at
            ),
        ));
    }
    Ok(())
}

/// Decode `raw` (whose length is a multiple of the dtype's size) to `f32`.
fn decode(dtype: &str, raw: &[u8]) -> Vec<f32> {
    match dtype {
        "F32" => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        "F16" => raw
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        "BF16" => raw
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        "F64" => raw
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect(),
        other => unreachable!("dtype {other} was refused while parsing the header"),
    }
}

/// Serialise `tensors` (as `F32`, sorted by name) and `metadata` to the bytes
/// of a safetensors file. The header is padded with spaces to a multiple of
/// 8 bytes, so the data buffer is aligned. Duplicate names and the reserved
/// name `__metadata__` are errors.
///
/// ```
/// use std::collections::BTreeMap;
/// use convnet_tensor::{safetensors, Tensor};
/// let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
/// let bytes = safetensors::to_bytes(&[("x", &Tensor::scalar(2.0))], &meta).unwrap();
/// let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
/// assert_eq!(n % 8, 0);
/// assert_eq!(bytes.len(), 8 + n + 4);
/// assert_eq!(safetensors::load_bytes(&bytes, "mem").unwrap().metadata, meta);
/// ```
pub fn to_bytes(
    tensors: &[(&str, &Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    const OP: &str = "safetensors::save";
    let mut sorted: Vec<(&str, &Tensor)> = tensors.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    if let Some(w) = sorted.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(TensorError::invalid(
            OP,
            format!("two tensors are named \"{}\"", w[0].0),
        ));
    }
    let mut header = Map::new();
    if !metadata.is_empty() {
        let m: Map<String, Value> = metadata
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        header.insert("__metadata__".into(), Value::Object(m));
    }
    let mut offset = 0usize;
    for (name, t) in &sorted {
        if *name == "__metadata__" {
            return Err(TensorError::invalid(
                OP,
                "\"__metadata__\" is reserved and cannot name a tensor",
            ));
        }
        let len = t
            .len()
            .checked_mul(4)
            .ok_or_else(|| TensorError::invalid(OP, format!("tensor \"{name}\" is too large")))?;
        let mut e = Map::new();
        e.insert("dtype".into(), Value::String("F32".into()));
        e.insert(
            "shape".into(),
            Value::Array(t.shape().iter().map(|&d| Value::from(d as u64)).collect()),
        );
        e.insert(
            "data_offsets".into(),
            Value::Array(vec![
                Value::from(offset as u64),
                Value::from((offset + len) as u64),
            ]),
        );
        header.insert(name.to_string(), Value::Object(e));
        offset += len;
    }
    let mut json = serde_json::to_string(&Value::Object(header))
        .map_err(|e| TensorError::invalid(OP, e.to_string()))?;
    while json.len() % 8 != 0 {
        json.push(' ');
    }
    if json.len() as u64 > MAX_HEADER {
        return Err(TensorError::invalid(
            OP,
            format!(
                "the header would be {} bytes, over the {MAX_HEADER}-byte limit readers accept",
                json.len()
            ),
        ));
    }
    let mut out = Vec::with_capacity(8 + json.len() + offset);
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(json.as_bytes());
    for (_, t) in &sorted {
        for v in t.values().iter() {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    Ok(out)
}

/// Write `tensors` (as `F32`, sorted by name) and `metadata` to `path` as a
/// safetensors file, atomically (see [`write_atomic`]): a crash leaves
/// either the old file or the new one, never half of one.
///
/// ```
/// use std::collections::BTreeMap;
/// use convnet_tensor::{safetensors, Tensor};
/// let path = std::env::temp_dir().join(format!("doc-save-{}.safetensors", std::process::id()));
/// let w = Tensor::from_vec(&[2], vec![1.0, 2.0]).unwrap();
/// safetensors::save(&path, &[("w", &w)], &BTreeMap::new()).unwrap();
/// assert_eq!(safetensors::load(&path).unwrap().get("w"), Some(&w));
/// // Duplicate names are refused.
/// assert!(safetensors::save(&path, &[("w", &w), ("w", &w)], &BTreeMap::new()).is_err());
/// std::fs::remove_file(&path).unwrap();
/// ```
pub fn save(
    path: &Path,
    tensors: &[(&str, &Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let bytes = to_bytes(tensors, metadata)?;
    write_atomic(path, &bytes)
}

/// Distinguishes the temporary files of concurrent saves in one process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Write `bytes` to `path` atomically: write a temporary file
/// `.{name}.tmp-{pid}-{n}` in the same folder, `sync_all` it, rename it over
/// `path`, then `fsync` the folder so the rename itself is durable (best
/// effort: where a folder cannot be opened or synced, as on some platforms,
/// that step is skipped). On failure the temporary file is removed and the
/// old `path`, if any, is untouched.
///
/// ```
/// use convnet_tensor::safetensors::write_atomic;
/// let path = std::env::temp_dir().join(format!("doc-atomic-{}.bin", std::process::id()));
/// write_atomic(&path, b"old").unwrap();
/// write_atomic(&path, b"new").unwrap();
/// assert_eq!(std::fs::read(&path).unwrap(), b"new");
/// std::fs::remove_file(&path).unwrap();
/// ```
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let shown = path.display().to_string();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| TensorError::io(&shown, "not a file path"))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        #[cfg(unix)]
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(TensorError::io(&shown, e));
    }
    Ok(())
}
