//! ImageNet helpers of `keras.applications.inception_v3`:
//! `preprocess_input` and `decode_predictions`.

use convnet_tensor::Tensor;

use crate::imagenet_classes::CLASSES;
use crate::{Result, ZooError};

/// Keras's `inception_v3.preprocess_input` (mode `"tf"`): pixels in
/// `[0, 255]` to `[-1, 1]`, `x / 127.5 - 1`.
///
/// ```
/// use convnet_tensor::Tensor;
/// use convnet_zoo::inception_v3::preprocess_input;
/// let x = Tensor::from_vec(&[3], vec![0.0, 127.5, 255.0]).unwrap();
/// assert_eq!(preprocess_input(&x).to_vec(), vec![-1.0, 0.0, 1.0]);
/// ```
pub fn preprocess_input(x: &Tensor) -> Tensor {
    x.map(|v| v / 127.5 - 1.0)
}

/// One class of a decoded prediction, as Keras's tuple
/// `(class_name, class_description, score)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Prediction {
    /// The WordNet id, e.g. `n02504458`.
    pub wnid: &'static str,
    /// The class name as Keras gives it, e.g. `African_elephant`.
    pub name: &'static str,
    /// The model's score for the class.
    pub score: f32,
}

/// The ImageNet class at `index` (0..1000): `(WordNet id, name)`.
///
/// ```
/// assert_eq!(convnet_zoo::imagenet_class(386), Some(("n02504458", "African_elephant")));
/// assert_eq!(convnet_zoo::imagenet_class(1000), None);
/// ```
pub fn imagenet_class(index: usize) -> Option<(&'static str, &'static str)> {
    CLASSES.get(index).copied()
}

/// Keras's `decode_predictions`: for each row of `preds` (shape
/// `(samples, 1000)`), its `top` classes by score, best first.
///
/// The class table is Keras's `imagenet_class_index.json` (WordNet id and
/// name); see `imagenet_classes.py` for where it comes from.
///
/// ```
/// use convnet_tensor::Tensor;
/// use convnet_zoo::inception_v3::decode_predictions;
/// let mut scores = vec![0.0; 1000];
/// scores[386] = 0.9;
/// scores[101] = 0.1;
/// let preds = Tensor::from_vec(&[1, 1000], scores).unwrap();
/// let top = decode_predictions(&preds, 2).unwrap();
/// assert_eq!(top[0][0].name, "African_elephant");
/// assert_eq!(top[0][1].wnid, "n01871265"); // tusker
/// ```
pub fn decode_predictions(preds: &Tensor, top: usize) -> Result<Vec<Vec<Prediction>>> {
    let &[n, classes] = preds.shape() else {
        return Err(ZooError::Shape(format!(
            "decode_predictions expects a batch of predictions of shape (samples, {}), got {:?}",
            CLASSES.len(),
            preds.shape()
        )));
    };
    if classes != CLASSES.len() {
        return Err(ZooError::Shape(format!(
            "decode_predictions expects a batch of predictions of shape (samples, {}), got {:?}",
            CLASSES.len(),
            preds.shape()
        )));
    }
    let values = preds.values();
    let mut out = Vec::with_capacity(n);
    for row in values.chunks(classes) {
        let mut order: Vec<usize> = (0..classes).collect();
        order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
        out.push(
            order
                .into_iter()
                .take(top)
                .map(|i| Prediction {
                    wnid: CLASSES[i].0,
                    name: CLASSES[i].1,
                    score: row[i],
                })
                .collect(),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_table_is_keras_order() {
        // ImageNet's class indices are the WordNet ids in sorted order.
        assert!(CLASSES.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(CLASSES[0], ("n01440764", "tench"));
        assert_eq!(CLASSES[999], ("n15075141", "toilet_tissue"));
        assert!(CLASSES
            .iter()
            .all(|(_, n)| !n.is_empty() && !n.contains(' ')));
    }

    #[test]
    fn decode_refuses_wrong_shapes() {
        let bad = Tensor::zeros(&[2, 10]);
        let e = decode_predictions(&bad, 5).unwrap_err().to_string();
        assert!(e.contains("[2, 10]"), "{e}");
        assert!(decode_predictions(&Tensor::zeros(&[1000]), 5).is_err());
    }

    #[test]
    fn decode_sorts_each_row() {
        let mut v = vec![0.0f32; 2000];
        v[5] = 0.5;
        v[7] = 0.7;
        v[1000 + 999] = 1.0;
        let p = decode_predictions(&Tensor::from_vec(&[2, 1000], v).unwrap(), 3).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0][0].score, 0.7);
        assert_eq!(p[0][0].wnid, CLASSES[7].0);
        assert_eq!(p[0][1].wnid, CLASSES[5].0);
        assert_eq!(p[1][0].name, "toilet_tissue");
        assert_eq!(p[1].len(), 3);
    }
}
