//! IDX files, the format of MNIST and Fashion-MNIST: two zero bytes, a type
//! code, the number of dimensions, the dimensions as big-endian `u32`, then
//! the data, big-endian. Files may be gzip-compressed (recognised by their
//! magic bytes, not their name).

use std::io::Read;
use std::path::{Path, PathBuf};

use convnet_tensor::Tensor;

use crate::{DataError, Result};

/// The contents of an IDX file, as `f32` (bytes are kept as 0..255).
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    /// Dimensions, e.g. `[60000, 28, 28]`.
    pub dims: Vec<usize>,
    /// The values in row-major order.
    pub data: Vec<f32>,
}

fn format_err(path: &Path, message: impl Into<String>) -> DataError {
    DataError::Format {
        path: path.display().to_string(),
        message: message.into(),
    }
}

/// Read an IDX file (plain or gzip).
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let raw = std::fs::read(path).map_err(|e| DataError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    parse_idx(&raw, path)
}

/// Parse IDX bytes (plain or gzip); `path` names the source in errors.
pub fn parse_idx(raw: &[u8], path: &Path) -> Result<IdxArray> {
    let gz;
    let bytes: &[u8] = if raw.starts_with(&[0x1f, 0x8b]) {
        gz = gunzip(raw, path)?;
        &gz
    } else {
        raw
    };
    if bytes.len() < 4 {
        return Err(format_err(
            path,
            format!("{} bytes is too short for an IDX header", bytes.len()),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(format_err(
            path,
            format!(
                "bad magic number {:02x} {:02x} {:02x} {:02x}: not an IDX file",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    let (code, ndims) = (bytes[2], bytes[3] as usize);
    let size = match code {
        0x08 | 0x09 => 1,
        0x0B => 2,
        0x0C | 0x0D => 4,
        0x0E => 8,
        other => {
            return Err(format_err(
                path,
                format!("unknown IDX data type 0x{other:02x}"),
            ))
        }
    };
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(format_err(
            path,
            format!(
                "truncated header: {ndims} dimensions need {header} bytes, the file has {}",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| {
            u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().expect("4 bytes")) as usize
        })
        .collect();
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| format_err(path, format!("dimensions {dims:?} overflow")))?;
    let need = count
        .checked_mul(size)
        .ok_or_else(|| format_err(path, format!("dimensions {dims:?} overflow")))?;
    let body = &bytes[header..];
    if body.len() < need {
        return Err(format_err(
            path,
            format!(
                "truncated: dimensions {dims:?} need {need} data bytes, the file has {}",
                body.len()
            ),
        ));
    }
    if body.len() > need {
        return Err(format_err(
            path,
            format!(
                "{} bytes after the data that dimensions {dims:?} describe",
                body.len() - need
            ),
        ));
    }
    let data: Vec<f32> = match code {
        0x08 => body.iter().map(|&b| b as f32).collect(),
        0x09 => body.iter().map(|&b| b as i8 as f32).collect(),
        0x0B => body
            .chunks_exact(2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]) as f32)
            .collect(),
        0x0C => body
            .chunks_exact(4)
            .map(|b| i32::from_be_bytes(b.try_into().expect("4")) as f32)
            .collect(),
        0x0D => body
            .chunks_exact(4)
            .map(|b| f32::from_be_bytes(b.try_into().expect("4")))
            .collect(),
        _ => body
            .chunks_exact(8)
            .map(|b| f64::from_be_bytes(b.try_into().expect("8")) as f32)
            .collect(),
    };
    Ok(IdxArray { dims, data })
}

/// Decompress, refusing output beyond 1 GiB (a decompression bomb).
fn gunzip(raw: &[u8], path: &Path) -> Result<Vec<u8>> {
    const LIMIT: u64 = 1 << 30;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw)
        .take(LIMIT + 1)
        .read_to_end(&mut out)
        .map_err(|e| format_err(path, format!("corrupt gzip data: {e}")))?;
    if out.len() as u64 > LIMIT {
        return Err(format_err(path, "decompresses to more than 1 GiB"));
    }
    Ok(out)
}

/// Images of an IDX file `(n, rows, cols)` as an NHWC tensor
/// `(n, rows, cols, 1)`, values 0..255 (rescale as Keras users do, `/ 255`).
pub fn load_images(path: &Path) -> Result<Tensor> {
    let a = read_idx(path)?;
    match *a.dims.as_slice() {
        [n, r, c] => Ok(Tensor::from_vec(&[n, r, c, 1], a.data)?),
        _ => Err(format_err(
            path,
            format!(
                "expected images (n, rows, cols), found dimensions {:?}",
                a.dims
            ),
        )),
    }
}

/// Labels of an IDX file `(n,)` as a tensor of class indices.
pub fn load_labels(path: &Path) -> Result<Tensor> {
    let a = read_idx(path)?;
    match *a.dims.as_slice() {
        [n] => Ok(Tensor::from_vec(&[n], a.data)?),
        _ => Err(format_err(
            path,
            format!("expected labels (n,), found dimensions {:?}", a.dims),
        )),
    }
}

fn find(dir: &Path, stem: &str) -> PathBuf {
    let gz = dir.join(format!("{stem}.gz"));
    if gz.exists() {
        gz
    } else {
        dir.join(stem)
    }
}

/// The images and labels of an MNIST-layout folder: `kind` is `"train"` or
/// `"t10k"`, files `{kind}-images-idx3-ubyte[.gz]` and
/// `{kind}-labels-idx1-ubyte[.gz]`. The two counts must agree.
pub fn load_mnist_dir(dir: &Path, kind: &str) -> Result<(Tensor, Tensor)> {
    let (ip, lp) = (
        find(dir, &format!("{kind}-images-idx3-ubyte")),
        find(dir, &format!("{kind}-labels-idx1-ubyte")),
    );
    let images = load_images(&ip)?;
    let labels = load_labels(&lp)?;
    if images.shape()[0] != labels.shape()[0] {
        return Err(format_err(
            &lp,
            format!(
                "{} labels for {} images in {}",
                labels.shape()[0],
                images.shape()[0],
                ip.display()
            ),
        ));
    }
    Ok((images, labels))
}
