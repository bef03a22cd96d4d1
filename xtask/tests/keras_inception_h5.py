"""Writes, into the folder given, what the ignored test
`keras_written_inception` (xtask/src/fetch_weights.rs) needs to check
`cargo xtask fetch-weights`'s conversion at full size against Keras itself:

- inception_notop.h5: InceptionV3 (include_top=False, 299x299x3) with
  random weights, in the legacy Keras HDF5 layout (as the published ImageNet
  files), written by Keras's own legacy writer;
- x.f32: two 150x150x3 inputs (raw little-endian float32);
- mixed7.f32: Keras's output at mixed7 for them, with the same weights.

    pip install tensorflow-cpu h5py
    python3 xtask/tests/keras_inception_h5.py /tmp/h5check
    CONVNET_H5_CHECK=/tmp/h5check cargo test -p xtask --bin xtask -- --ignored keras_written_inception
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras.src.legacy.saving import legacy_h5_format  # noqa: E402

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
keras.utils.set_random_seed(0)
full = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(299, 299, 3))
# Non-trivial batch-norm statistics, so that a misplaced weight shows.
rng = np.random.RandomState(1)
for layer in full.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
        beta, mean, var = layer.get_weights()
        layer.set_weights([
            rng.uniform(-0.2, 0.2, beta.shape).astype("float32"),
            rng.uniform(-0.2, 0.2, mean.shape).astype("float32"),
            rng.uniform(0.5, 1.5, var.shape).astype("float32"),
        ])
with h5py.File(os.path.join(out, "inception_notop.h5"), "w") as f:
    legacy_h5_format.save_weights_to_hdf5_group(f, full)
small = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(150, 150, 3))
small.set_weights(full.get_weights())
x = rng.uniform(-1, 1, (2, 150, 150, 3)).astype("float32")
cut = keras.Model(small.input, small.get_layer("mixed7").output)
y = cut.predict(x, verbose=0)
x.astype("<f4").tofile(os.path.join(out, "x.f32"))
y.astype("<f4").tofile(os.path.join(out, "mixed7.f32"))
print("wrote", out, y.shape, float(np.abs(y).max()))
