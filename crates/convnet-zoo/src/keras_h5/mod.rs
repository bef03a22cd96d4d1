//! Keras's legacy HDF5 weight files (`model.save_weights("x.h5")` in
//! Keras 2, and the published `keras.applications` weights such as
//! `inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5`), read in pure
//! Rust and converted to safetensors. Behind the `keras-h5` feature.
//!
//! The layout read: the root group (or its `model_weights` group, in a
//! whole-model file) has the attribute `layer_names` (every layer in model
//! order, weightless ones too; or `layer_names0`, `layer_names1`, ... when
//! Keras split a large attribute); each layer's group has `weight_names`
//! (such as `conv2d_1/kernel:0`), and each weight is the dataset at
//! `<layer>/<weight name>` (`conv2d_1/conv2d_1/kernel:0`). Strings may be
//! fixed- or variable-length; weights may be float16, float32 or float64
//! (read as `f32`), stored compact, contiguous or chunked without
//! compression.
//!
//! Keras loads such files by layer order, not by name, and the published
//! files number layers from 1 (`conv2d_1`) where a fresh Keras session
//! starts at none (`conv2d`); [`convert`] pairs the file's layers with the
//! names given kind by kind, in the order of their numbers (see
//! [`map_layers`]).
//!
//! ```no_run
//! use convnet_zoo::keras_h5;
//! let bytes = std::fs::read("inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5")?;
//! for layer in keras_h5::read_layers(&bytes)?.iter().take(3) {
//!     for w in &layer.weights {
//!         println!("{} {} {:?}", layer.name, w.key, w.shape);
//!     }
//! }
//! let names: Vec<String> = vec!["conv2d".into(), "batch_normalization".into() /* ... */];
//! let safetensors = keras_h5::convert(&bytes, &names)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! No input makes these functions panic; every failure is an [`H5Error`]
//! naming the part of the file at fault, and nothing is allocated beyond
//! what the file's bytes can hold.

mod hdf5;

use std::collections::{BTreeMap, HashMap};

use convnet_tensor::{safetensors, Tensor};

/// Why a file could not be read or converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum H5Error {
    /// The bytes are not an HDF5 file at all.
    #[error("not an HDF5 file: {0}")]
    NotHdf5(String),
    /// A part of the file contradicts the HDF5 format (or is truncated).
    #[error("malformed HDF5 file: {part}: {detail}")]
    Malformed { part: String, detail: String },
    /// A valid HDF5 feature this reader does not implement.
    #[error("unsupported HDF5 feature in {part}: {detail}")]
    Unsupported { part: String, detail: String },
    /// A readable HDF5 file without Keras's legacy weights layout.
    #[error("not a Keras legacy weights file: {0}")]
    NotKeras(String),
    /// The file's layers do not match the names asked for.
    #[error("the file's layers do not match the model's: {0}")]
    Mapping(String),
    /// The safetensors output could not be written.
    #[error("writing safetensors: {0}")]
    Safetensors(String),
}

impl H5Error {
    /// The same error, its location prefixed with `ctx` (a layer, a
    /// weight).
    fn within(self, ctx: &str) -> H5Error {
        match self {
            H5Error::Malformed { part, detail } => H5Error::Malformed {
                part: format!("{ctx}: {part}"),
                detail,
            },
            H5Error::Unsupported { part, detail } => H5Error::Unsupported {
                part: format!("{ctx}: {part}"),
                detail,
            },
            H5Error::NotKeras(m) => H5Error::NotKeras(format!("{ctx}: {m}")),
            other => other,
        }
    }
}

/// One weight of a layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Weight {
    /// Its name in the file (`conv2d_1/kernel:0`).
    pub name: String,
    /// Its key in the converted file: the part after the last `/`, without
    /// `:0` (`kernel`, `bias`, `gamma`, `beta`, `moving_mean`,
    /// `moving_variance`); see [`weight_key`].
    pub key: String,
    /// Its shape (Keras's: a kernel is `[h, w, in, out]`).
    pub shape: Vec<usize>,
    /// Its values, row-major, as `f32`.
    pub values: Vec<f32>,
}

/// One layer of the file, in the order of `layer_names`.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// Its name in the file (`conv2d_1`).
    pub name: String,
    /// Its weights in the order of `weight_names` (empty for activation,
    /// pooling, ... layers).
    pub weights: Vec<Weight>,
}

/// The key of a weight named `name` in the file: the part after the last
/// `/`, without a `:N` suffix (`conv2d_1/kernel:0` -> `kernel`).
pub fn weight_key(name: &str) -> &str {
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.rsplit_once(':') {
        Some((k, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => k,
        _ => last,
    }
}

/// Split `conv2d_5` into (`conv2d`, 5); `conv2d` stays itself.
fn base_name(layer: &str) -> &str {
    match layer.rsplit_once('_') {
        Some((base, n))
            if !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) =>
        {
            base
        }
        _ => layer,
    }
}

/// The string values of attribute `name` of the object at `obj`, or of
/// `name0`, `name1`, ... (Keras splits attributes over 64 KB this way);
/// `None` when there is neither.
fn string_attr(f: &hdf5::File<'_>, obj: u64, name: &str) -> Result<Option<Vec<String>>, H5Error> {
    let attrs = f.attributes(obj)?;
    if let Some(a) = attrs.iter().find(|a| a.name == name) {
        return f.attribute_strings(a).map(Some);
    }
    let mut out: Option<Vec<String>> = None;
    for i in 0.. {
        let chunk = format!("{name}{i}");
        match attrs.iter().find(|a| a.name == chunk) {
            Some(a) => out
                .get_or_insert_with(Vec::new)
                .extend(f.attribute_strings(a)?),
            None => break,
        }
    }
    Ok(out)
}

/// Every layer of a Keras legacy weights file, in file (model) order, with
/// its weights; layers without weights are included with none.
pub fn read_layers(bytes: &[u8]) -> Result<Vec<Layer>, H5Error> {
    let f = hdf5::File::open(bytes)?;
    let root_links: HashMap<String, u64> = f.links(f.root())?.into_iter().collect();
    let mut group = f.root();
    let mut links = root_links;
    let mut layer_names = string_attr(&f, group, "layer_names")?;
    if layer_names.is_none() {
        if let Some(&mw) = links.get("model_weights") {
            // A whole-model file (`model.save("x.h5")`).
            layer_names = string_attr(&f, mw, "layer_names")
                .map_err(|e| e.within("group \"model_weights\""))?;
            group = mw;
            links = f.links(mw)?.into_iter().collect();
        }
    }
    let Some(layer_names) = layer_names else {
        let hint = if links.contains_key("layers") || links.contains_key("vars") {
            " (it looks like a Keras 3 `.weights.h5` file, which this reader does not take)"
        } else {
            ""
        };
        return Err(H5Error::NotKeras(format!(
            "the root group has no attribute \"layer_names\"{hint}"
        )));
    };
    let _ = group;
    // Datasets shared by layers (hard links) could multiply what is read:
    // the values read may take at most twice the file (float16 -> f32).
    let mut budget = bytes.len().saturating_mul(2);
    let mut out = Vec::new();
    for name in layer_names {
        let ctx = format!("layer \"{name}\"");
        let &g = links.get(&name).ok_or_else(|| {
            H5Error::NotKeras(format!(
                "{ctx} is listed in \"layer_names\" but has no group"
            ))
        })?;
        let weight_names = string_attr(&f, g, "weight_names")
            .map_err(|e| e.within(&ctx))?
            .ok_or_else(|| H5Error::NotKeras(format!("{ctx} has no attribute \"weight_names\"")))?;
        let mut weights = Vec::new();
        for wn in weight_names {
            let wctx = format!("{ctx}, weight \"{wn}\"");
            let ds = f
                .lookup(g, &wn)
                .map_err(|e| e.within(&wctx))?
                .ok_or_else(|| H5Error::NotKeras(format!("{wctx}: no dataset at that path")))?;
            let (shape, values) = f.read_f32(ds).map_err(|e| e.within(&wctx))?;
            budget = budget
                .checked_sub(values.len().saturating_mul(4))
                .ok_or_else(|| H5Error::Malformed {
                    part: wctx.clone(),
                    detail: "the weights read add up to more than twice the file's size \
                             (datasets shared between layers?)"
                        .into(),
                })?;
            weights.push(Weight {
                key: weight_key(&wn).to_string(),
                name: wn,
                shape,
                values,
            });
        }
        out.push(Layer { name, weights });
    }
    Ok(out)
}

/// Pairs each layer of the file that has weights (in file order) with one
/// of `names` (the model's layers that have weights, named as a fresh
/// Keras session names them): `(file layer, model layer)`.
///
/// Layers pair up by kind (the name without its `_N` suffix: `conv2d_12`
/// is a `conv2d`) and, within a kind, by their number: Keras numbers layers
/// in the order the building code creates them, so the k-th `conv2d` of the
/// file (`conv2d_1` in the published files, numbered from 1) is the k-th
/// `conv2d` of the model (`conv2d`, numbered from none). This is the pairing
/// Keras's own order-based loading gives for a model built by the same
/// code, and it does not depend on how `model.layers` was sorted when the
/// file was written (by depth in Keras, which is not creation order for
/// InceptionV3's branches).
///
/// Errors when a kind's counts differ between the file and the model.
pub fn map_layers(layers: &[Layer], names: &[String]) -> Result<Vec<(String, String)>, H5Error> {
    let with: Vec<&Layer> = layers.iter().filter(|l| !l.weights.is_empty()).collect();
    if with.len() != names.len() {
        return Err(H5Error::Mapping(format!(
            "the file has {} layers with weights (first: {}), the model {} (first: {})",
            with.len(),
            with.iter()
                .take(3)
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            names.len(),
            names
                .iter()
                .take(3)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    // Per kind, the names sorted by their number (none sorts first).
    fn by_kind<'a>(names: impl Iterator<Item = &'a str>) -> BTreeMap<&'a str, Vec<&'a str>> {
        let mut kinds: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for n in names {
            kinds.entry(base_name(n)).or_default().push(n);
        }
        for v in kinds.values_mut() {
            v.sort_by_key(|n| (number(n), *n));
        }
        kinds
    }
    let file_kinds = by_kind(with.iter().map(|l| l.name.as_str()));
    let model_kinds = by_kind(names.iter().map(String::as_str));
    let mut problems = Vec::new();
    let kinds: std::collections::BTreeSet<&str> = file_kinds
        .keys()
        .chain(model_kinds.keys())
        .copied()
        .collect();
    let mut to_model: HashMap<&str, &str> = HashMap::new();
    for kind in kinds {
        let theirs = file_kinds.get(kind).map_or(&[][..], Vec::as_slice);
        let ours = model_kinds.get(kind).map_or(&[][..], Vec::as_slice);
        if theirs.len() != ours.len() {
            problems.push(format!(
                "{} \"{kind}\" layers in the file, {} in the model",
                theirs.len(),
                ours.len()
            ));
            continue;
        }
        to_model.extend(theirs.iter().copied().zip(ours.iter().copied()));
    }
    if !problems.is_empty() {
        return Err(H5Error::Mapping(format!(
            "the file's layers do not match the model's: {}",
            problems.join("; ")
        )));
    }
    with.iter()
        .map(|l| {
            let ours = to_model.get(l.name.as_str()).ok_or_else(|| {
                H5Error::Mapping(format!("layer \"{}\" appears twice in the file", l.name))
            })?;
            Ok((l.name.clone(), ours.to_string()))
        })
        .collect()
}

/// The `N` of a name ending `_N`, 0 for none (so `conv2d` sorts before
/// `conv2d_1`).
fn number(layer: &str) -> u64 {
    if base_name(layer) == layer {
        return 0;
    }
    layer
        .rsplit_once('_')
        .and_then(|(_, n)| n.parse::<u64>().ok())
        .map_or(u64::MAX, |n| n.saturating_add(1))
}

/// Safetensors bytes of `layers` renamed by [`map_layers`]: one `F32`
/// tensor `{model layer}/{weight key}` per weight.
pub fn to_safetensors(layers: Vec<Layer>, names: &[String]) -> Result<Vec<u8>, H5Error> {
    let pairs = map_layers(&layers, names)?;
    let mut tensors: Vec<(String, Tensor)> = Vec::new();
    let with = layers.into_iter().filter(|l| !l.weights.is_empty());
    for (layer, (_, target)) in with.zip(&pairs) {
        let mut keys = std::collections::HashSet::new();
        for w in layer.weights {
            if !keys.insert(w.key.clone()) {
                return Err(H5Error::Mapping(format!(
                    "layer \"{}\" has two weights named \"{}\"",
                    layer.name, w.key
                )));
            }
            let t = Tensor::from_vec(&w.shape, w.values)
                .map_err(|e| H5Error::Safetensors(format!("{}: {e}", w.name)))?;
            tensors.push((format!("{target}/{}", w.key), t));
        }
    }
    let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let meta = BTreeMap::from([("source".to_string(), "keras legacy HDF5".to_string())]);
    safetensors::to_bytes(&refs, &meta).map_err(|e| H5Error::Safetensors(e.to_string()))
}

/// Converts a Keras legacy weights file to safetensors bytes, its layers
/// with weights renamed to `names` kind by kind (see [`map_layers`]): keys are
/// `{name}/{weight}`, such as `conv2d/kernel` or
/// `batch_normalization_5/moving_variance`.
pub fn convert(bytes: &[u8], names: &[String]) -> Result<Vec<u8>, H5Error> {
    to_safetensors(read_layers(bytes)?, names)
}
