//! Reading and writing the safetensors format: an 8-byte little-endian
//! header length `N`, `N` bytes of JSON header
//! (`{"__metadata__": {..}, "name": {"dtype", "shape", "data_offsets"}}`,
//! offsets relative to the data buffer after the header), then the data,
//! little-endian, row-major.
//!
//! Reading checks everything against the file's real size before it
//! allocates, and reports each problem with the file and the tensor at fault.
//! Writing is atomic: a temporary file in the same folder, fsync, rename.
//!
//! ```
//! use std::collections::BTreeMap;
//! use convnet_tensor::{safetensors, Tensor};
//! let t = Tensor::from_vec(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
//! let bytes = safetensors::to_bytes(&[("w", &t)], &BTreeMap::new()).unwrap();
//! let back = safetensors::load_bytes(&bytes, "memory").unwrap();
//! assert_eq!(back.get("w"), Some(&t));
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde_json::{Map, Value};

use crate::{Result, Tensor, TensorError};

/// Largest header accepted (the reference implementation's limit).
pub const MAX_HEADER: u64 = 100_000_000;

/// The contents of a safetensors file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SafeTensors {
    /// Tensors by name, sorted by name.
    pub tensors: Vec<(String, Tensor)>,
    /// The `__metadata__` strings.
    pub metadata: BTreeMap<String, String>,
}

impl SafeTensors {
    /// The tensor called `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }
}

/// Read a safetensors file. F32 is read as is; F16, BF16 are widened and
/// F64 narrowed to f32; other dtypes are refused.
pub fn load(path: &Path) -> Result<SafeTensors> {
    let origin = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| TensorError::io(&origin, e))?;
    load_bytes(&bytes, &origin)
}

fn dtype_size(dtype: &str) -> Option<usize> {
    Some(match dtype {
        "F32" => 4,
        "F16" | "BF16" => 2,
        "F64" => 8,
        _ => return None,
    })
}

/// Parse safetensors bytes; `origin` names the source in errors.
pub fn load_bytes(bytes: &[u8], origin: &str) -> Result<SafeTensors> {
    let bad = |tensor: Option<&str>, msg: String| TensorError::format(origin, tensor, msg);
    if bytes.len() < 8 {
        return Err(bad(
            None,
            format!(
                "{} bytes is too short for a safetensors file (no header length)",
                bytes.len()
            ),
        ));
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
    let available = bytes.len() as u64 - 8;
    if n > MAX_HEADER || n > available {
        return Err(bad(None, format!("header length {n} exceeds the file ({available} bytes after the length) or the {MAX_HEADER}-byte limit")));
    }
    let header = std::str::from_utf8(&bytes[8..8 + n as usize])
        .map_err(|e| bad(None, format!("header is not UTF-8: {e}")))?;
    let json: Value = serde_json::from_str(header.trim_end())
        .map_err(|e| bad(None, format!("header is not valid JSON: {e}")))?;
    let Value::Object(entries) = json else {
        return Err(bad(None, "header is not a JSON object".into()));
    };
    let data = &bytes[8 + n as usize..];
    let mut metadata = BTreeMap::new();
    let mut spans: Vec<(usize, usize, String)> = Vec::new();
    let mut tensors = Vec::new();
    for (name, entry) in &entries {
        if name == "__metadata__" {
            let Value::Object(m) = entry else {
                return Err(bad(None, "__metadata__ is not an object".into()));
            };
            for (k, v) in m {
                let v = v
                    .as_str()
                    .ok_or_else(|| bad(None, format!("metadata \"{k}\" is not a string")))?;
                metadata.insert(k.clone(), v.to_string());
            }
            continue;
        }
        let t = Some(name.as_str());
        let Value::Object(e) = entry else {
            return Err(bad(t, "entry is not an object".into()));
        };
        let dtype = e
            .get("dtype")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(t, "missing dtype".into()))?;
        let shape: Vec<usize> = e
            .get("shape")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(t, "missing shape".into()))?
            .iter()
            .map(|d| {
                d.as_u64()
                    .map(|d| d as usize)
                    .ok_or_else(|| bad(t, format!("shape entry {d} is not a non-negative integer")))
            })
            .collect::<Result<_>>()?;
        let offsets = e
            .get("data_offsets")
            .and_then(Value::as_array)
            .ok_or_else(|| bad(t, "missing data_offsets".into()))?;
        let (begin, end) = match offsets.as_slice() {
            [b, e] => (
                b.as_u64()
                    .ok_or_else(|| bad(t, "data_offsets are not integers".into()))?,
                e.as_u64()
                    .ok_or_else(|| bad(t, "data_offsets are not integers".into()))?,
            ),
            _ => return Err(bad(t, "data_offsets must be [begin, end]".into())),
        };
        if begin > end || end > data.len() as u64 {
            return Err(bad(
                t,
                format!(
                    "data offsets [{begin}, {end}) lie outside the data buffer ({} bytes)",
                    data.len()
                ),
            ));
        }
        let size = dtype_size(dtype).ok_or_else(|| {
            bad(
                t,
                format!("unsupported dtype {dtype} (F32, F16, BF16 and F64 are read)"),
            )
        })?;
        let count = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| bad(t, format!("shape {shape:?} overflows")))?;
        let want = count
            .checked_mul(size)
            .ok_or_else(|| bad(t, format!("shape {shape:?} overflows")))?;
        let (begin, end) = (begin as usize, end as usize);
        if end - begin != want {
            return Err(bad(
                t,
                format!(
                    "{} data bytes, but shape {shape:?} of {dtype} needs {want}",
                    end - begin
                ),
            ));
        }
        let raw = &data[begin..end];
        let values: Vec<f32> = match dtype {
            "F32" => raw
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")))
                .collect(),
            "F16" => raw
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            "BF16" => raw
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            _ => raw
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32)
                .collect(),
        };
        spans.push((begin, end, name.clone()));
        tensors.push((name.clone(), Tensor::from_vec(&shape, values)?));
    }
    // The tensors must tile the data buffer exactly: no overlap, no gap.
    spans.sort();
    let mut at = 0usize;
    for (b, e, name) in &spans {
        if *b < at {
            return Err(bad(
                Some(name),
                format!("data [{b}, {e}) overlaps the tensor before it"),
            ));
        }
        if *b > at && *e > *b {
            return Err(bad(
                Some(name),
                format!("{} unused bytes before its data at {b}", b - at),
            ));
        }
        at = at.max(*e);
    }
    if at != data.len() {
        return Err(bad(
            None,
            format!(
                "{} bytes after the last tensor's data are not covered by the header",
                data.len() - at
            ),
        ));
    }
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(SafeTensors { tensors, metadata })
}

/// Serialise tensors (as F32, sorted by name) with metadata.
pub fn to_bytes(
    tensors: &[(&str, &Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<Vec<u8>> {
    let mut sorted: Vec<(&str, &Tensor)> = tensors.to_vec();
    sorted.sort_by(|a, b| a.0.cmp(b.0));
    if let Some(w) = sorted.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(TensorError::invalid(
            "safetensors::save",
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
                "safetensors::save",
                "\"__metadata__\" is not a tensor name",
            ));
        }
        let len = t.len() * 4;
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
        .map_err(|e| TensorError::invalid("safetensors::save", e.to_string()))?;
    while json.len() % 8 != 0 {
        json.push(' ');
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

/// Write tensors to `path` atomically: the bytes go to a temporary file in
/// the same folder, which is flushed to disk and then renamed over `path`,
/// so a crash leaves either the old file or the new one, never half of one.
pub fn save(
    path: &Path,
    tensors: &[(&str, &Tensor)],
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let bytes = to_bytes(tensors, metadata)?;
    write_atomic(path, &bytes)
}

/// Write `bytes` to `path` atomically (temporary file, fsync, rename,
/// fsync of the folder).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let shown = path.display().to_string();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| TensorError::io(&shown, "not a file path"))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
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
