//! `cargo xtask fetch-weights`: Keras's ImageNet weights for InceptionV3,
//! downloaded, checked against their published MD5, converted from the
//! legacy Keras HDF5 layout to safetensors keyed by our layer names, and
//! cached in `$CONVNET_HOME` (default `~/.cache/convnet`), where
//! `convnet_zoo::weights_path` finds them.
//!
//! The converted file is written to a temporary name, checked by loading it
//! into the model it is for, and only then renamed into place; a second run
//! finds it and does nothing.

use std::fs;
use std::path::{Path, PathBuf};

use convnet_nn::Model;
use convnet_zoo::inception_v3::InceptionV3;
use convnet_zoo::keras_h5;

use crate::download;

const BASE_URL: &str = "https://storage.googleapis.com/tensorflow/keras-applications/inception_v3";

/// One published weights file and the model it is for.
struct Variant {
    /// The file's name in Keras's storage.
    h5: &'static str,
    md5: &'static str,
    /// The converted file's name in `$CONVNET_HOME`.
    file: &'static str,
    /// The model to convert for (names by order, and the final check).
    build: fn() -> Result<Model, String>,
}

const NOTOP: Variant = Variant {
    h5: "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5",
    md5: "bcbd6486424b2319ff4ef7d526e38f63",
    file: convnet_zoo::NOTOP_FILE,
    build: || {
        InceptionV3::new()
            .include_top(false)
            .input_shape(299, 299, 3)
            .build()
            .map_err(|e| e.to_string())
    },
};

const TOP: Variant = Variant {
    h5: "inception_v3_weights_tf_dim_ordering_tf_kernels.h5",
    md5: "9a0d58056eeedaa3f26cb7ebd46da564",
    file: convnet_zoo::TOP_FILE,
    build: || InceptionV3::new().build().map_err(|e| e.to_string()),
};

const HELP: &str =
    "usage: cargo xtask fetch-weights [--top] [--url URL] [--from FILE.h5] [--keep-h5]

Downloads Keras's InceptionV3 ImageNet weights (without the classifier),
checks their MD5, converts them to safetensors and caches the result in
$CONVNET_HOME (default ~/.cache/convnet). Does nothing when already there.

  --top          also fetch the full model with its ImageNet classifier
  --url URL      download from URL instead of Keras's storage (http(s):// or
                 file://; with --top, the folder URL holding both files)
  --from FILE    convert a .h5 file already on disk (no download; its MD5 is
                 still checked)
  --keep-h5      keep the downloaded .h5 next to the converted file";

struct Options {
    top: bool,
    base_url: String,
    from: Option<PathBuf>,
    keep_h5: bool,
}

fn parse(args: &[String]) -> Result<Option<Options>, String> {
    let mut o = Options {
        top: false,
        base_url: BASE_URL.to_string(),
        from: None,
        keep_h5: false,
    };
    let mut url = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{flag} needs a value\n\n{HELP}"))
        };
        match a.as_str() {
            "--top" => o.top = true,
            "--keep-h5" => o.keep_h5 = true,
            "--url" => url = Some(value("--url")?),
            "--from" => o.from = Some(PathBuf::from(value("--from")?)),
            "-h" | "--help" => {
                println!("{HELP}");
                return Ok(None);
            }
            other => return Err(format!("unknown option `{other}`\n\n{HELP}")),
        }
    }
    if let Some(u) = url {
        // A URL naming the notop file itself, or the folder of both.
        o.base_url = match u.strip_suffix(&format!("/{}", NOTOP.h5)) {
            Some(base) => base.to_string(),
            None => u.trim_end_matches('/').to_string(),
        };
    }
    if o.from.is_some() && o.top {
        return Err("--from converts one file; give --top without --from".into());
    }
    Ok(Some(o))
}

/// Run `cargo xtask fetch-weights`.
pub fn run(args: &[String]) -> Result<(), String> {
    let Some(o) = parse(args)? else {
        return Ok(());
    };
    let home = convnet_zoo::convnet_home();
    fs::create_dir_all(&home).map_err(|e| format!("cannot create {}: {e}", home.display()))?;
    if let Some(from) = &o.from {
        let variant = if from.file_name().and_then(|n| n.to_str()) == Some(TOP.h5) {
            &TOP
        } else {
            &NOTOP
        };
        return fetch_one(variant, &o, &home, Some(from));
    }
    fetch_one(&NOTOP, &o, &home, None)?;
    if o.top {
        fetch_one(&TOP, &o, &home, None)?;
    }
    Ok(())
}

fn fetch_one(v: &Variant, o: &Options, home: &Path, from: Option<&Path>) -> Result<(), String> {
    let dest = home.join(v.file);
    if dest.exists() {
        println!(
            "{} is already there: nothing to do (delete it to fetch again)",
            dest.display()
        );
        return Ok(());
    }
    let h5 = match from {
        Some(p) => p.to_path_buf(),
        None => {
            let h5 = home.join(v.h5);
            if h5.exists() {
                println!("using the download already in {}", h5.display());
            } else {
                let url = format!("{}/{}", o.base_url, v.h5);
                println!("downloading {url}");
                download::fetch(&url, &h5, Some(v.md5))?;
            }
            h5
        }
    };
    let digest = download::md5_file(&h5)?;
    if digest != v.md5 {
        return Err(format!(
            "{}: MD5 {digest} differs from Keras's published {} (corrupt or wrong file{})",
            h5.display(),
            v.md5,
            if from.is_none() {
                "; delete it and run again"
            } else {
                ""
            }
        ));
    }
    let mut model = (v.build)()?;
    convert_file(&h5, &dest, &mut model)?;
    if from.is_none() && !o.keep_h5 {
        fs::remove_file(&h5).map_err(|e| format!("cannot remove {}: {e}", h5.display()))?;
    }
    println!("wrote {}", dest.display());
    Ok(())
}

/// The model's layers that have weights, in model order.
fn weight_layers(model: &Model) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (key, _, _) in model.weights() {
        let layer = key.rsplit_once('/').map_or(key.as_str(), |(l, _)| l);
        if names.last().map(String::as_str) != Some(layer) {
            names.push(layer.to_string());
        }
    }
    names
}

/// Convert the legacy Keras file `h5` to safetensors at `dest` for
/// `model` (layers matched by order): written to `dest.part`, loaded into
/// the model as a check, then renamed.
fn convert_file(h5: &Path, dest: &Path, model: &mut Model) -> Result<(), String> {
    let bytes = fs::read(h5).map_err(|e| format!("cannot read {}: {e}", h5.display()))?;
    let names = weight_layers(model);
    let out = keras_h5::convert(&bytes, &names).map_err(|e| format!("{}: {e}", h5.display()))?;
    drop(bytes);
    let part = download::part_path(dest);
    let written = (|| {
        fs::write(&part, &out).map_err(|e| format!("cannot write {}: {e}", part.display()))?;
        fs::File::open(&part)
            .and_then(|f| f.sync_all())
            .map_err(|e| format!("cannot sync {}: {e}", part.display()))?;
        convnet_zoo::load_weights(model, &part)
            .map_err(|e| format!("the converted weights do not fit the model: {e}"))?;
        fs::rename(&part, dest).map_err(|e| {
            format!(
                "cannot rename {} to {}: {e}",
                part.display(),
                dest.display()
            )
        })
    })();
    if written.is_err() {
        let _ = fs::remove_file(&part);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;
    use convnet_nn::layers::{BatchNormalization, Conv2D, Dense, GlobalAveragePooling2D};
    use convnet_nn::{clear_session, Apply, Input};

    /// The layers of `crates/convnet-zoo/tests/fixtures/h5/keras_legacy_default.h5`
    /// (`conv2d_1`, `batch_normalization_1`, `conv2d_2`,
    /// `batch_normalization_2`, `predictions`), in a fresh session's names.
    fn small() -> Result<Model, String> {
        let e = |e: convnet_nn::NnError| e.to_string();
        clear_session();
        let input = Input::new(&[8, 8, 3]);
        let x = Conv2D::new(4, (3, 3))
            .use_bias(false)
            .apply(&input)
            .map_err(e)?;
        let x = BatchNormalization::new()
            .scale(false)
            .apply(&x)
            .map_err(e)?;
        let x = Conv2D::new(2, (1, 1))
            .use_bias(false)
            .apply(&x)
            .map_err(e)?;
        let x = BatchNormalization::new()
            .scale(false)
            .apply(&x)
            .map_err(e)?;
        let x = GlobalAveragePooling2D::new().apply(&x).map_err(e)?;
        let x = Dense::new(3).name("predictions").apply(&x).map_err(e)?;
        Model::new(&input, &x).map_err(e)
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../crates/convnet-zoo/tests/fixtures/h5")
            .join(name)
    }

    fn options(base_url: String) -> Options {
        Options {
            top: false,
            base_url,
            from: None,
            keep_h5: false,
        }
    }

    /// A variant for `small()` whose published file is `h5` in a served
    /// folder, with that file's own MD5 (or `md5` when given).
    fn variant(h5: &'static str, md5: &'static str) -> Variant {
        Variant {
            h5,
            md5,
            file: "small.safetensors",
            build: small,
        }
    }

    fn leak(s: String) -> &'static str {
        Box::leak(s.into_boxed_str())
    }

    /// A served folder holding `bytes` as `name`, and a fresh home.
    fn setup(name: &str, bytes: &[u8]) -> (tempfile::TempDir, String, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        let served = t.path().join("served");
        fs::create_dir_all(&served).unwrap();
        fs::write(served.join(name), bytes).unwrap();
        let home = t.path().join("home");
        fs::create_dir_all(&home).unwrap();
        let url = format!("file://{}", served.display());
        (t, url, home)
    }

    fn listing(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn downloads_checks_converts_and_caches() {
        let bytes = fs::read(fixture("keras_legacy_default.h5")).unwrap();
        let (_t, url, home) = setup("w.h5", &bytes);
        let md5 = leak(download::md5_file(&fixture("keras_legacy_default.h5")).unwrap());
        let v = variant("w.h5", md5);
        fetch_one(&v, &options(url.clone()), &home, None).unwrap();
        // Only the converted file stays: no .h5, no .part.
        assert_eq!(listing(&home), vec!["small.safetensors".to_string()]);
        let mut m = small().unwrap();
        convnet_zoo::load_weights(&mut m, &home.join("small.safetensors")).unwrap();
        // Values follow the fixture's formula: arange(n) * 0.25 +
        // layer_index * 10 + weight_index, layer_index counting every layer
        // of the file (input_1 is 0, conv2d_1 is 1, ...).
        let w: std::collections::HashMap<String, Vec<f32>> = m
            .weights()
            .into_iter()
            .map(|(k, t, _)| (k, t.values().to_vec()))
            .collect();
        assert_eq!(&w["conv2d/kernel"][..3], &[10.0, 10.25, 10.5]);
        assert_eq!(
            w["batch_normalization/moving_variance"],
            vec![22.0, 22.25, 22.5, 22.75]
        );
        assert_eq!(w["conv2d_1/kernel"][0], 40.0);
        assert_eq!(w["predictions/bias"], vec![81.0, 81.25, 81.5]);

        // A second run does nothing, even with the source gone.
        fs::remove_dir_all(Path::new(url.trim_start_matches("file://"))).unwrap();
        fetch_one(&v, &options(url), &home, None).unwrap();
        assert_eq!(listing(&home), vec!["small.safetensors".to_string()]);
    }

    #[test]
    fn a_wrong_md5_leaves_nothing() {
        let bytes = fs::read(fixture("keras_legacy_default.h5")).unwrap();
        let (_t, url, home) = setup("w.h5", &bytes);
        let v = variant("w.h5", "00000000000000000000000000000000");
        let e = fetch_one(&v, &options(url), &home, None).unwrap_err();
        assert!(e.contains("MD5") && e.contains("differs"), "{e}");
        assert!(listing(&home).is_empty(), "{:?}", listing(&home));
    }

    #[test]
    fn a_truncated_file_is_refused() {
        let bytes = fs::read(fixture("keras_legacy_default.h5")).unwrap();
        let cut = &bytes[..bytes.len() / 2];
        let (_t, url, home) = setup("w.h5", cut);
        let md5 = leak(format!("{:x}", <md5::Md5 as md5::Digest>::digest(cut)));
        let v = variant("w.h5", md5);
        let e = fetch_one(&v, &options(url), &home, None).unwrap_err();
        assert!(e.contains("w.h5"), "{e}");
        // The download stays for inspection, the converted file never exists.
        assert_eq!(listing(&home), vec!["w.h5".to_string()]);
    }

    #[test]
    fn a_file_that_is_not_keras_weights_is_refused() {
        let path = fixture("not_keras.h5");
        let md5 = leak(download::md5_file(&path).unwrap());
        let t = tempfile::tempdir().unwrap();
        let v = variant("not_keras.h5", md5);
        let e = fetch_one(&v, &options(String::new()), t.path(), Some(&path)).unwrap_err();
        assert!(e.contains("not_keras.h5"), "{e}");
        assert!(listing(t.path()).is_empty());
    }

    #[test]
    fn weights_for_another_model_are_refused_by_name() {
        // The fixture's five layers against InceptionV3's 189.
        let path = fixture("keras_legacy_default.h5");
        let md5 = leak(download::md5_file(&path).unwrap());
        let t = tempfile::tempdir().unwrap();
        let v = Variant {
            build: NOTOP.build,
            ..variant("keras_legacy_default.h5", md5)
        };
        let e = fetch_one(&v, &options(String::new()), t.path(), Some(&path)).unwrap_err();
        assert!(e.contains("layers with weights"), "{e}");
        assert!(listing(t.path()).is_empty());
    }
}
/// The whole-size check, by hand (it needs TensorFlow and 90 MB):
/// `python3 xtask/tests/keras_inception_h5.py DIR` writes a legacy Keras
/// InceptionV3 weights file (random weights, written by Keras itself), an
/// input and Keras's mixed7 output; then `CONVNET_H5_CHECK=DIR cargo test
/// -p xtask --bin xtask -- --ignored keras_written_inception` converts the
/// file as fetch-weights does and compares our mixed7 with Keras's.
#[cfg(test)]
mod keras_written {
    use super::*;
    use convnet_tensor::Tensor;

    fn read_f32(path: &Path) -> Vec<f32> {
        fs::read(path)
            .unwrap()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    #[test]
    #[ignore = "needs the files of xtask/tests/keras_inception_h5.py (TensorFlow)"]
    fn keras_written_inception() {
        let dir = PathBuf::from(std::env::var("CONVNET_H5_CHECK").expect("CONVNET_H5_CHECK=DIR"));
        let mut m = (NOTOP.build)().unwrap();
        let out = dir.join("converted.safetensors");
        convert_file(&dir.join("inception_notop.h5"), &out, &mut m).unwrap();
        let mut base = InceptionV3::new()
            .include_top(false)
            .input_shape(150, 150, 3)
            .build()
            .unwrap();
        convnet_zoo::load_weights(&mut base, &out).unwrap();
        let last = base.get_layer("mixed7").unwrap().output();
        let cut = Model::new(&base.input(), &last).unwrap();
        let x = Tensor::from_vec(&[2, 150, 150, 3], read_f32(&dir.join("x.f32"))).unwrap();
        let got = cut.predict(&x, 2).unwrap().values().to_vec();
        let want = read_f32(&dir.join("mixed7.f32"));
        assert_eq!(got.len(), want.len());
        let max = want.iter().fold(0f32, |a, b| a.max(b.abs()));
        let err = want
            .iter()
            .zip(&got)
            .fold(0f32, |a, (w, g)| a.max((w - g).abs()));
        eprintln!(
            "mixed7: max |keras| {max}, max |ours - keras| {err}, relative {}",
            err / max
        );
        assert!(err / max < 1e-4, "relative error {}", err / max);
    }
}
