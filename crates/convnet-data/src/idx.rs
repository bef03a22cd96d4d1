//! IDX files, the format of MNIST and Fashion-MNIST.
//!
//! An IDX file is a magic number `0x00 0x00 <type> <ndims>`, then `ndims`
//! big-endian `u32` dimensions, then the data, big-endian, row-major. The
//! type codes are `0x08` u8, `0x09` i8, `0x0B` i16, `0x0C` i32, `0x0D` f32
//! and `0x0E` f64. Files may be gzip-compressed; that is recognised by the
//! gzip magic bytes `1f 8b`, not by the file name.
//!
//! Every value is read as `f32` (bytes as is, 0..255). Reading checks the
//! header before it allocates: the dimensions' byte count is computed with
//! overflow checks and compared with the file (or, for gzip, decompression
//! stops one byte past what the dimensions need), so a short, padded or
//! malicious file is an error naming it, never a panic or a huge allocation.
//!
//! ```no_run
//! use std::path::Path;
//! use convnet_data::idx::load_mnist_dir;
//! let (x, y) = load_mnist_dir(Path::new("/usr/share/datasets/fashion-mnist"), "train")?;
//! assert_eq!(x.shape(), &[60000, 28, 28, 1]); // NHWC, values 0..255
//! assert_eq!(y.shape(), &[60000]); // class indices 0..10
//! let x = x.map(|v| v / 255.0); // rescale, as Keras users do
//! # Ok::<(), convnet_data::DataError>(())
//! ```

use std::io::Read;
use std::path::{Path, PathBuf};

use convnet_tensor::Tensor;

use crate::{DataError, Result};

/// The element type of an IDX file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdxType {
    /// `0x08`: unsigned byte.
    U8,
    /// `0x09`: signed byte.
    I8,
    /// `0x0B`: big-endian `i16`.
    I16,
    /// `0x0C`: big-endian `i32`.
    I32,
    /// `0x0D`: big-endian `f32`.
    F32,
    /// `0x0E`: big-endian `f64`.
    F64,
}

impl IdxType {
    /// The type with IDX code `code`, if there is one.
    pub fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0x08 => IdxType::U8,
            0x09 => IdxType::I8,
            0x0B => IdxType::I16,
            0x0C => IdxType::I32,
            0x0D => IdxType::F32,
            0x0E => IdxType::F64,
            _ => return None,
        })
    }

    /// The IDX code of this type.
    pub fn code(self) -> u8 {
        match self {
            IdxType::U8 => 0x08,
            IdxType::I8 => 0x09,
            IdxType::I16 => 0x0B,
            IdxType::I32 => 0x0C,
            IdxType::F32 => 0x0D,
            IdxType::F64 => 0x0E,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            IdxType::U8 | IdxType::I8 => 1,
            IdxType::I16 => 2,
            IdxType::I32 | IdxType::F32 => 4,
            IdxType::F64 => 8,
        }
    }
}

/// The contents of an IDX file, as `f32` (bytes are kept as 0..255).
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    /// The element type stored in the file.
    pub dtype: IdxType,
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

fn io_err(path: &Path, message: impl std::fmt::Display) -> DataError {
    DataError::Io {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Read an IDX file (plain or gzip).
///
/// ```no_run
/// use std::path::Path;
/// let a = convnet_data::idx::read_idx(Path::new("train-labels-idx1-ubyte.gz"))?;
/// assert_eq!(a.dims, vec![60000]);
/// # Ok::<(), convnet_data::DataError>(())
/// ```
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let raw = std::fs::read(path).map_err(|e| io_err(path, e))?;
    parse_idx(&raw, path)
}

/// Parse IDX bytes (plain or gzip); `path` names the source in errors.
///
/// ```
/// use std::path::Path;
/// // Two u8 labels, 7 and 1.
/// let bytes = [0, 0, 0x08, 1, 0, 0, 0, 2, 7, 1];
/// let a = convnet_data::idx::parse_idx(&bytes, Path::new("labels"))?;
/// assert_eq!((a.dims, a.data), (vec![2], vec![7.0, 1.0]));
/// let err = convnet_data::idx::parse_idx(&bytes[..9], Path::new("labels")).unwrap_err();
/// assert!(err.to_string().starts_with("labels: truncated"));
/// # Ok::<(), convnet_data::DataError>(())
/// ```
pub fn parse_idx(raw: &[u8], path: &Path) -> Result<IdxArray> {
    if raw.starts_with(&[0x1f, 0x8b]) {
        return parse_gzip(raw, path);
    }
    let mut body = raw;
    let h = parse_header(&mut body, path, false)?;
    if body.len() < h.need {
        return Err(h.truncated(path, body.len().to_string()));
    }
    if body.len() > h.need {
        return Err(h.trailing(path, (body.len() - h.need).to_string(), ""));
    }
    Ok(h.finish(body))
}

/// A parsed IDX header.
struct Header {
    dtype: IdxType,
    dims: Vec<usize>,
    /// Data bytes the dimensions need.
    need: usize,
    /// "file" or "decompressed data", for messages.
    unpacked: &'static str,
}

impl Header {
    fn truncated(&self, path: &Path, have: String) -> DataError {
        format_err(
            path,
            format!(
                "truncated: dimensions {:?} of {:?} need {} data bytes, the {} has {have}",
                self.dims, self.dtype, self.need, self.unpacked
            ),
        )
    }

    fn trailing(&self, path: &Path, extra: String, note: &str) -> DataError {
        format_err(
            path,
            format!(
                "{extra} trailing bytes after the {} data bytes that dimensions {:?} of {:?} describe{note}",
                self.need, self.dims, self.dtype
            ),
        )
    }

    fn finish(self, body: &[u8]) -> IdxArray {
        IdxArray {
            dtype: self.dtype,
            data: decode(self.dtype, body),
            dims: self.dims,
        }
    }
}

/// Deflate cannot compress better than about 1032:1, so a gzip file of `n`
/// bytes never decompresses to more than this. Lets us call a gzip file
/// truncated before decompressing it.
fn max_gunzipped(n: usize) -> usize {
    n.saturating_mul(1032).saturating_add(1024)
}

fn parse_gzip(raw: &[u8], path: &Path) -> Result<IdxArray> {
    let mut r = flate2::read::MultiGzDecoder::new(raw);
    let h = parse_header(&mut r, path, true)?;
    let n = raw.len();
    if h.need > max_gunzipped(n) {
        return Err(h.truncated(
            path,
            format!("at most {} (the gzip file is {n} bytes)", max_gunzipped(n)),
        ));
    }
    // Decompress at most one byte more than the dimensions need, so a file
    // (or a gzip bomb) cannot make us hold more than that.
    let mut body = Vec::with_capacity(h.need.min(n.saturating_mul(16)));
    r.by_ref()
        .take(h.need as u64 + 1)
        .read_to_end(&mut body)
        .map_err(|e| gzip_err(path, e))?;
    if body.len() > h.need {
        // Count (without keeping) what follows, up to a bound.
        let cap = h.need.max(1 << 20) as u64;
        let more = std::io::copy(&mut r.by_ref().take(cap), &mut std::io::sink())
            .map_err(|e| gzip_err(path, e))?;
        let extra = if more == cap {
            format!("more than {cap}")
        } else {
            (more + 1).to_string()
        };
        return Err(h.trailing(path, extra, " (after decompression)"));
    }
    if body.len() < h.need {
        return Err(h.truncated(path, body.len().to_string()));
    }
    Ok(h.finish(&body))
}

fn gzip_err(path: &Path, e: std::io::Error) -> DataError {
    format_err(path, format!("corrupt or truncated gzip data: {e}"))
}

/// Fill `buf` from `r`; returns how many bytes were read (fewer at EOF).
fn read_full(r: &mut impl Read, buf: &mut [u8], path: &Path) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(gzip_err(path, e)),
        }
    }
    Ok(n)
}

/// Read and check the magic number and dimensions from `r` (a plain slice
/// or a gzip decoder, `gz`).
fn parse_header(r: &mut impl Read, path: &Path, gz: bool) -> Result<Header> {
    let unpacked = if gz { "decompressed data" } else { "file" };
    let mut magic = [0u8; 4];
    let got = read_full(r, &mut magic, path)?;
    if got < 4 {
        return Err(format_err(
            path,
            format!("{unpacked} of {got} bytes is too short for an IDX header (4 bytes)"),
        ));
    }
    if magic[0] != 0 || magic[1] != 0 {
        return Err(format_err(
            path,
            format!(
                "bad magic number {:02x} {:02x} {:02x} {:02x}: not an IDX file (it should start with 00 00)",
                magic[0], magic[1], magic[2], magic[3]
            ),
        ));
    }
    let dtype = IdxType::from_code(magic[2]).ok_or_else(|| {
        format_err(
            path,
            format!(
                "unsupported IDX data type 0x{:02x} (known: 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64)",
                magic[2]
            ),
        )
    })?;
    let ndims = magic[3] as usize;
    let mut dim_bytes = vec![0u8; 4 * ndims]; // at most 1020 bytes
    let got = read_full(r, &mut dim_bytes, path)?;
    if got < dim_bytes.len() {
        return Err(format_err(
            path,
            format!(
                "truncated header: {ndims} dimensions need {} bytes, the {unpacked} has {}",
                4 + 4 * ndims,
                4 + got
            ),
        ));
    }
    let dims: Vec<usize> = dim_bytes
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let need = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .and_then(|count| count.checked_mul(dtype.size()))
        .ok_or_else(|| {
            format_err(
                path,
                format!("dimensions {dims:?} of {dtype:?} need more bytes than fit in memory (overflow)"),
            )
        })?;
    Ok(Header {
        dtype,
        dims,
        need,
        unpacked,
    })
}

fn decode(dtype: IdxType, body: &[u8]) -> Vec<f32> {
    match dtype {
        IdxType::U8 => body.iter().map(|&b| b as f32).collect(),
        IdxType::I8 => body.iter().map(|&b| b as i8 as f32).collect(),
        IdxType::I16 => body
            .chunks_exact(2)
            .map(|b| i16::from_be_bytes([b[0], b[1]]) as f32)
            .collect(),
        IdxType::I32 => body
            .chunks_exact(4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]) as f32)
            .collect(),
        IdxType::F32 => body
            .chunks_exact(4)
            .map(|b| f32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        IdxType::F64 => body
            .chunks_exact(8)
            .map(|b| f64::from_be_bytes(b.try_into().expect("8 bytes")) as f32)
            .collect(),
    }
}

/// Images of an IDX file `(n, rows, cols)` as an NHWC tensor
/// `(n, rows, cols, 1)`, values as stored (0..255 for MNIST; rescale as
/// Keras users do, `/ 255`).
///
/// ```no_run
/// use std::path::Path;
/// let x = convnet_data::idx::load_images(Path::new("t10k-images-idx3-ubyte.gz"))?;
/// assert_eq!(x.shape(), &[10000, 28, 28, 1]);
/// # Ok::<(), convnet_data::DataError>(())
/// ```
pub fn load_images(path: &Path) -> Result<Tensor> {
    let a = read_idx(path)?;
    match *a.dims.as_slice() {
        [n, r, c] => Ok(Tensor::from_vec(&[n, r, c, 1], a.data)?),
        _ => Err(format_err(
            path,
            format!(
                "expected images with dimensions (n, rows, cols), found {:?}",
                a.dims
            ),
        )),
    }
}

/// Labels of an IDX file `(n,)` as a tensor of class indices (`f32`).
///
/// ```no_run
/// use std::path::Path;
/// let y = convnet_data::idx::load_labels(Path::new("t10k-labels-idx1-ubyte.gz"))?;
/// assert_eq!(y.shape(), &[10000]);
/// # Ok::<(), convnet_data::DataError>(())
/// ```
pub fn load_labels(path: &Path) -> Result<Tensor> {
    let a = read_idx(path)?;
    match *a.dims.as_slice() {
        [n] => Ok(Tensor::from_vec(&[n], a.data)?),
        _ => Err(format_err(
            path,
            format!("expected labels with dimensions (n,), found {:?}", a.dims),
        )),
    }
}

/// `dir/stem.gz` if it exists, else `dir/stem` if it exists, else an error
/// naming both.
fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    let gz = dir.join(format!("{stem}.gz"));
    let plain = dir.join(stem);
    if gz.is_file() {
        Ok(gz)
    } else if plain.is_file() {
        Ok(plain)
    } else {
        Err(io_err(&gz, format!("not found (nor {})", plain.display())))
    }
}

/// The images and labels of an MNIST-layout folder, as the Fashion-MNIST
/// package (`/usr/share/datasets/fashion-mnist`) and the original MNIST
/// distribution lay them out. `kind` is `"train"` or `"t10k"`; the files are
/// `{kind}-images-idx3-ubyte.gz` and `{kind}-labels-idx1-ubyte.gz`, or the
/// same names without `.gz`. Returns images `(n, rows, cols, 1)` in 0..255
/// and labels `(n,)`; the two counts must agree.
///
/// ```no_run
/// use std::path::Path;
/// use convnet_data::idx::load_mnist_dir;
/// let dir = Path::new("/usr/share/datasets/fashion-mnist");
/// let (x_train, y_train) = load_mnist_dir(dir, "train")?;
/// let (x_test, y_test) = load_mnist_dir(dir, "t10k")?;
/// assert_eq!(x_test.shape(), &[10000, 28, 28, 1]);
/// # Ok::<(), convnet_data::DataError>(())
/// ```
pub fn load_mnist_dir(dir: &Path, kind: &str) -> Result<(Tensor, Tensor)> {
    let ip = find(dir, &format!("{kind}-images-idx3-ubyte"))?;
    let lp = find(dir, &format!("{kind}-labels-idx1-ubyte"))?;
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
