//! Where pretrained weights live, and loading them with every mismatch
//! reported.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use convnet_nn::Model;
use convnet_tensor::{safetensors, Tensor};

use crate::{Result, ZooError};

/// File name of Keras's ImageNet InceptionV3 weights without the top,
/// converted to safetensors.
pub const NOTOP_FILE: &str = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.safetensors";

/// File name of Keras's ImageNet InceptionV3 weights with the top.
pub const TOP_FILE: &str = "inception_v3_weights_tf_dim_ordering_tf_kernels.safetensors";

/// The folder of converted weights: `$CONVNET_HOME`, or
/// `~/.cache/convnet` when it is not set (`.cache/convnet` under the
/// current folder if there is no home either).
pub fn convnet_home() -> PathBuf {
    if let Some(home) = std::env::var_os("CONVNET_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    let base = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_default();
    base.join(".cache").join("convnet")
}

/// Where `cargo xtask fetch-weights` puts Keras's ImageNet InceptionV3
/// weights as safetensors: [`convnet_home`] joined with
/// `inception_v3_weights_tf_dim_ordering_tf_kernels_notop.safetensors`
/// (without `_notop` for the model with its top).
///
/// Tensors in the file are keyed `{layer}/{weight}` with the layer names
/// of a fresh Keras session (`conv2d/kernel`,
/// `batch_normalization_5/moving_variance`, `predictions/bias`, ...).
pub fn weights_path(include_top: bool) -> PathBuf {
    convnet_home().join(if include_top { TOP_FILE } else { NOTOP_FILE })
}

/// Dtypes the loader takes (all read as `f32`).
const FLOAT_DTYPES: [&str; 4] = ["F32", "F16", "BF16", "F64"];

/// What a safetensors header says of one tensor.
struct HeaderEntry {
    dtype: String,
    shape: Vec<usize>,
}

/// The dtype and shape of each tensor of a safetensors file, from its
/// header alone. A file whose header cannot be read this way is handed to
/// the full reader, whose error names what is wrong.
fn read_header(path: &Path) -> Result<BTreeMap<String, HeaderEntry>> {
    let shown = path.display().to_string();
    let io = |source| ZooError::Io {
        path: shown.clone(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let parsed = (|| -> Option<serde_json::Value> {
        let mut len = [0u8; 8];
        file.read_exact(&mut len).ok()?;
        let n = u64::from_le_bytes(len);
        if n > safetensors::MAX_HEADER || n > size.saturating_sub(8) {
            return None;
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact(&mut header).ok()?;
        serde_json::from_slice(&header).ok()
    })();
    let malformed = || -> Result<BTreeMap<String, HeaderEntry>> {
        safetensors::load(path)?;
        Err(ZooError::Weights {
            path: shown.clone(),
            problems: vec!["the safetensors header cannot be read".into()],
        })
    };
    let Some(serde_json::Value::Object(obj)) = parsed else {
        return malformed();
    };
    let mut out = BTreeMap::new();
    for (name, entry) in obj {
        if name == "__metadata__" {
            continue;
        }
        let dtype = entry.get("dtype").and_then(|d| d.as_str());
        let shape = entry
            .get("shape")
            .and_then(|s| s.as_array())
            .and_then(|dims| {
                dims.iter()
                    .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                    .collect::<Option<Vec<usize>>>()
            });
        let (Some(dtype), Some(shape)) = (dtype, shape) else {
            return malformed();
        };
        out.insert(
            name,
            HeaderEntry {
                dtype: dtype.to_string(),
                shape,
            },
        );
    }
    Ok(out)
}

/// Split `conv2d_5` into (`conv2d`, 5) and `conv2d` into (`conv2d`, 0):
/// Keras's automatic names.
fn split_name(layer: &str) -> (&str, usize) {
    if let Some((base, n)) = layer.rsplit_once('_') {
        if !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = n.parse() {
                return (base, n);
            }
        }
    }
    (layer, 0)
}

/// The layer part of a `{layer}/{weight}` key.
fn layer_of(key: &str) -> &str {
    key.rsplit_once('/').map_or(key, |(l, _)| l)
}

/// For each layer of the model that has weights, the file's layer to take
/// them from, by order: the k-th `conv2d*` layer of the model gets the
/// file's k-th `conv2d*` layer (files sorted by their number), as Keras's
/// legacy loading goes by layer order. `None` where the groups differ in
/// size.
fn map_by_order(
    model_layers: &[String],
    file_layers: &BTreeSet<String>,
) -> Option<BTreeMap<String, String>> {
    let mut file_groups: BTreeMap<&str, Vec<(usize, &str)>> = BTreeMap::new();
    for l in file_layers {
        let (base, n) = split_name(l);
        file_groups.entry(base).or_default().push((n, l));
    }
    for g in file_groups.values_mut() {
        g.sort();
    }
    let mut model_groups: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for l in model_layers {
        model_groups.entry(split_name(l).0).or_default().push(l);
    }
    if model_groups.len() != file_groups.len() {
        return None;
    }
    let mut map = BTreeMap::new();
    for (base, ours) in model_groups {
        let theirs = file_groups.get(base)?;
        if theirs.len() != ours.len() {
            return None;
        }
        for (o, (_, t)) in ours.into_iter().zip(theirs) {
            map.insert(o.to_string(), t.to_string());
        }
    }
    Some(map)
}

/// Load pretrained weights from a safetensors file into `model`.
///
/// Every weight of the model must be in the file as `{layer}/{weight}`
/// with its shape and a float dtype (F32, or F16/BF16/F64 read as f32), and
/// the file must hold nothing else; otherwise nothing is loaded and the
/// error ([`ZooError::Weights`]) names the file and lists every offender:
/// missing, unexpected, wrong shape, wrong dtype.
///
/// Names are matched as they are when every weight of the model is in the
/// file. Otherwise layers are matched by order within each kind of name,
/// as Keras's legacy loading goes by layer order: the k-th `conv2d*` layer
/// of the model takes the file's k-th `conv2d*` layer (by number), so a
/// model built after other layers (its names starting at `conv2d_7`, say)
/// still loads a file written in a fresh session.
pub fn load_weights(model: &mut Model, path: &Path) -> Result<()> {
    let shown = path.display().to_string();
    let header = read_header(path)?;
    let wanted = model.weights();
    let mut model_layers: Vec<String> = Vec::new();
    for (key, _, _) in &wanted {
        let l = layer_of(key);
        if model_layers.last().map(String::as_str) != Some(l) {
            model_layers.push(l.to_string());
        }
    }
    let all_present = wanted.iter().all(|(k, _, _)| header.contains_key(k));
    let layer_map = if all_present {
        None
    } else {
        let file_layers: BTreeSet<String> =
            header.keys().map(|k| layer_of(k).to_string()).collect();
        map_by_order(&model_layers, &file_layers)
    };
    let file_key = |model_key: &str| -> String {
        match (&layer_map, model_key.rsplit_once('/')) {
            (Some(map), Some((layer, weight))) => match map.get(layer) {
                Some(theirs) => format!("{theirs}/{weight}"),
                None => model_key.to_string(),
            },
            _ => model_key.to_string(),
        }
    };
    let shape_str = |s: &[usize]| {
        let parts: Vec<String> = s.iter().map(|d| d.to_string()).collect();
        if parts.len() == 1 {
            format!("({},)", parts[0])
        } else {
            format!("({})", parts.join(", "))
        }
    };
    let mut problems = Vec::new();
    let mut pairs = Vec::with_capacity(wanted.len());
    let mut used = BTreeSet::new();
    for (key, value, _) in &wanted {
        let theirs = file_key(key);
        let named = if theirs == *key {
            format!("\"{key}\"")
        } else {
            format!("\"{theirs}\" (for the model's \"{key}\")")
        };
        match header.get(&theirs) {
            None => problems.push(format!(
                "missing {named}, shape {}",
                shape_str(value.shape())
            )),
            Some(entry) => {
                used.insert(theirs.clone());
                if !FLOAT_DTYPES.contains(&entry.dtype.as_str()) {
                    problems.push(format!(
                        "{named} has dtype {}, the model needs floats (F32, F16, BF16 or F64)",
                        entry.dtype
                    ));
                } else if entry.shape != value.shape() {
                    problems.push(format!(
                        "{named} has shape {} in the file, the model needs {}",
                        shape_str(&entry.shape),
                        shape_str(value.shape())
                    ));
                } else {
                    pairs.push((key.clone(), theirs));
                }
            }
        }
    }
    for (k, entry) in &header {
        if !used.contains(k) {
            problems.push(format!(
                "unexpected \"{k}\", shape {} (the model has no such weight)",
                shape_str(&entry.shape)
            ));
        }
    }
    if !problems.is_empty() {
        return Err(ZooError::Weights {
            path: shown,
            problems,
        });
    }
    let mut file = safetensors::load(path)?;
    let mut by_name: BTreeMap<String, Tensor> = file.tensors.drain(..).collect();
    let mut values = Vec::with_capacity(pairs.len());
    for (ours, theirs) in pairs {
        let t = by_name.remove(&theirs).ok_or_else(|| ZooError::Weights {
            path: shown.clone(),
            problems: vec![format!(
                "\"{theirs}\" vanished between two reads of the file"
            )],
        })?;
        values.push((ours, t));
    }
    for line in convnet_nn::non_finite_report(&values) {
        eprintln!("warning: {shown}: {line}");
    }
    model.set_weights(&values)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_as_keras_numbers_them() {
        assert_eq!(split_name("conv2d"), ("conv2d", 0));
        assert_eq!(split_name("conv2d_12"), ("conv2d", 12));
        assert_eq!(split_name("mixed9_1"), ("mixed9", 1));
        assert_eq!(split_name("predictions"), ("predictions", 0));
        assert_eq!(split_name("a_"), ("a_", 0));
        assert_eq!(split_name("_3"), ("_3", 0));
    }

    #[test]
    fn order_mapping_sorts_by_number() {
        let model: Vec<String> = [
            "conv2d_4",
            "conv2d_5",
            "batch_normalization_2",
            "predictions",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let file: BTreeSet<String> = [
            "conv2d_10",
            "conv2d_9",
            "batch_normalization_1",
            "predictions",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let map = map_by_order(&model, &file).unwrap();
        assert_eq!(map["conv2d_4"], "conv2d_9");
        assert_eq!(map["conv2d_5"], "conv2d_10");
        assert_eq!(map["batch_normalization_2"], "batch_normalization_1");
        assert_eq!(map["predictions"], "predictions");
        let fewer: BTreeSet<String> = ["conv2d_1".to_string()].into_iter().collect();
        assert!(map_by_order(&model, &fewer).is_none());
    }

    #[test]
    fn home_from_environment() {
        // Only this test touches CONVNET_HOME in this binary.
        std::env::set_var("CONVNET_HOME", "/tmp/some-home");
        assert_eq!(
            weights_path(false),
            PathBuf::from("/tmp/some-home").join(NOTOP_FILE)
        );
        assert_eq!(
            weights_path(true),
            PathBuf::from("/tmp/some-home").join(TOP_FILE)
        );
        std::env::remove_var("CONVNET_HOME");
        assert!(weights_path(false).ends_with(Path::new(".cache/convnet").join(NOTOP_FILE)));
    }
}
