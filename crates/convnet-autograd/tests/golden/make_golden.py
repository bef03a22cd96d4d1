"""Reference outputs and gradients computed by TensorFlow/Keras itself, for
crates/convnet-autograd/tests/golden.rs.

Each case: inputs, op parameters, TensorFlow's output, a random upstream
gradient u, and TensorFlow's gradients of sum(output * u) with respect to
each differentiable input. Losses are scalars with u = 1.

Regenerate (from the repository root):
    pip install tensorflow-cpu
    python3 crates/convnet-autograd/tests/golden/make_golden.py
"""

import json
import os

import numpy as np
import tensorflow as tf
import keras

rng = np.random.default_rng(20261128)
cases = []


def t(a):
    a = np.asarray(a, dtype=np.float32)
    return {"shape": list(a.shape), "data": [float(v) for v in a.reshape(-1)]}


def normal(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def distinct(*shape):
    """Distinct values (no ties for max pooling), shuffled."""
    n = int(np.prod(shape))
    v = (rng.permutation(n).astype(np.float32) - n / 2) * 0.1
    return v.reshape(shape)


def run(name, op, params, inputs, fn, grad_keys, extra=None, upstream=None):
    variables = {k: tf.Variable(v) for k, v in inputs.items()}
    with tf.GradientTape() as tape:
        out = fn(**variables)
        u = upstream if upstream is not None else normal(*out.shape)
        loss = tf.reduce_sum(out * u)
    grads = tape.gradient(loss, [variables[k] for k in grad_keys])
    case = {
        "name": name,
        "op": op,
        "params": params,
        "inputs": {k: t(v) for k, v in inputs.items()},
        "output": t(out.numpy()),
        "upstream": t(u),
        "grads": {k: t(g.numpy()) for k, g in zip(grad_keys, grads)},
    }
    if extra is not None:
        case["extra"] = {k: t(v) for k, v in extra().items()}
    cases.append(case)


# conv2d: tf.nn.conv2d (+ bias), NHWC, HWIO kernels.
for name, xs, ws, strides, padding, bias in [
    ("conv2d_3x3_valid_s1_bias", (2, 6, 7, 3), (3, 3, 3, 4), 1, "valid", True),
    ("conv2d_3x3_same_s2_bias", (2, 7, 8, 2), (3, 3, 2, 3), 2, "same", True),
    ("conv2d_3x3_same_s2_even", (1, 6, 8, 2), (3, 3, 2, 2), 2, "same", False),
    ("conv2d_1x1_nobias", (2, 4, 5, 3), (1, 1, 3, 5), 1, "valid", False),
    ("conv2d_1x3_same", (1, 5, 6, 2), (1, 3, 2, 3), 1, "same", True),
    ("conv2d_3x1_same", (1, 5, 6, 2), (3, 1, 2, 3), 1, "same", True),
    ("conv2d_1x7_same", (1, 3, 8, 2), (1, 7, 2, 2), 1, "same", False),
    ("conv2d_7x1_same", (1, 8, 3, 2), (7, 1, 2, 2), 1, "same", False),
    ("conv2d_3x3_valid_s2", (2, 7, 7, 2), (3, 3, 2, 2), 2, "valid", False),
    ("conv2d_5x5_same_s1_even", (1, 6, 6, 2), (5, 5, 2, 3), 1, "same", True),
]:
    inputs = {"x": normal(*xs), "w": normal(*ws)}
    if bias:
        inputs["b"] = normal(ws[3])

    def conv(x, w, b=None, strides=strides, padding=padding):
        y = tf.nn.conv2d(x, w, strides=strides, padding=padding.upper())
        return y + b if b is not None else y

    run(name, "conv2d", {"strides": [strides, strides], "padding": padding}, inputs, conv, list(inputs))

# Pooling through the Keras layers.
for op, layer in [("max_pool2d", keras.layers.MaxPooling2D), ("avg_pool2d", keras.layers.AveragePooling2D)]:
    configs = (
        [(2, 2, "valid", (2, 7, 7, 3)), (3, 2, "valid", (1, 7, 8, 2)), (3, 1, "same", (2, 5, 6, 2)), (3, 2, "same", (1, 6, 7, 2))]
        if op == "max_pool2d"
        else [(3, 1, "same", (2, 5, 6, 2)), (2, 2, "valid", (1, 6, 7, 3)), (3, 2, "same", (1, 7, 6, 2))]
    )
    for pool, stride, padding, xs in configs:
        lay = layer(pool_size=pool, strides=stride, padding=padding)
        run(
            f"{op}_{pool}x{pool}_s{stride}_{padding}",
            op,
            {"pool": [pool, pool], "strides": [stride, stride], "padding": padding},
            {"x": distinct(*xs)},
            lambda x, lay=lay: lay(x),
            ["x"],
        )

run("global_avg_pool2d", "global_avg_pool2d", {}, {"x": normal(2, 3, 4, 5)},
    lambda x: keras.layers.GlobalAveragePooling2D()(x), ["x"])

run("dense", "dense", {}, {"x": normal(3, 5), "w": normal(5, 4), "b": normal(4)},
    lambda x, w, b: tf.matmul(x, w) + b, ["x", "w", "b"])

big = np.concatenate([normal(2, 6), np.array([[30.0, -30.0, 12.0, -12.0, 0.0, 80.0]], np.float32)])
for act in ["relu", "sigmoid", "tanh"]:
    x = distinct(3, 6) if act == "relu" else big
    run(act, act, {}, {"x": x}, lambda x, act=act: getattr(keras.activations, act)(x), ["x"])
run("softmax", "softmax", {"axis": -1}, {"x": normal(3, 5) * 3}, lambda x: keras.activations.softmax(x), ["x"])

# Batch normalization through the Keras layer.
for name, training, center, scale in [
    ("batch_norm_train", True, True, True),
    ("batch_norm_train_noscale", True, True, False),
    ("batch_norm_inference", False, True, True),
]:
    c = 3
    x = normal(2, 4, 3, c) * 2 + 1
    inputs = {"x": x}
    if scale:
        inputs["gamma"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
    if center:
        inputs["beta"] = normal(c)
    inputs["moving_mean"] = normal(c) * 0.3
    inputs["moving_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
    layer = keras.layers.BatchNormalization(epsilon=1e-3, momentum=0.99, center=center, scale=scale)
    layer.build(x.shape)
    weights = ([inputs["gamma"]] if scale else []) + ([inputs["beta"]] if center else [])
    layer.set_weights(weights + [inputs["moving_mean"], inputs["moving_var"]])
    xv = tf.Variable(x)
    params = {"x": xv}
    if scale:
        params["gamma"] = layer.gamma
    if center:
        params["beta"] = layer.beta
    with tf.GradientTape() as tape:
        out = layer(xv, training=training)
        u = normal(*out.shape)
        loss = tf.reduce_sum(out * u)
    grads = tape.gradient(loss, list(params.values()))
    case = {
        "name": name,
        "op": "batch_norm",
        "params": {"training": training, "epsilon": 1e-3, "momentum": 0.99, "center": center, "scale": scale},
        "inputs": {k: t(v) for k, v in inputs.items()},
        "output": t(out.numpy()),
        "upstream": t(u),
        "grads": {k: t(g.numpy()) for k, g in zip(params, grads)},
    }
    if training:
        # Which batch variance feeds the moving average: biased (divide by n) or unbiased (n - 1)?
        n = x.size // c
        bv = x.reshape(-1, c).astype(np.float64).var(axis=0)
        new_mv = layer.moving_variance.numpy().astype(np.float64)
        mv0 = inputs["moving_var"].astype(np.float64)
        err_b = np.abs(mv0 * 0.99 + bv * 0.01 - new_mv).max()
        err_u = np.abs(mv0 * 0.99 + bv * n / (n - 1) * 0.01 - new_mv).max()
        print(f"{name}: moving var vs biased update err {err_b:.2e}, vs unbiased err {err_u:.2e}")
        assert err_b < 1e-5 < err_u, "moving variance update is not the biased batch variance"
    # Moving statistics after the call (unchanged by an inference call).
    case["extra"] = {"new_moving_mean": t(layer.moving_mean.numpy()), "new_moving_var": t(layer.moving_variance.numpy())}
    cases.append(case)

run("concat", "concat", {"axis": 3}, {"a": normal(2, 3, 3, 2), "b": normal(2, 3, 3, 4)},
    lambda a, b: keras.layers.Concatenate(axis=3)([a, b]), ["a", "b"])
run("add", "add", {}, {"a": normal(2, 3, 3, 2), "b": normal(2, 3, 3, 2)},
    lambda a, b: keras.layers.Add()([a, b]), ["a", "b"])

one = np.float32(1.0)
y_true = np.array([[1], [0], [1], [0], [1], [0]], np.float32)
y_pred = np.array([[0.9], [0.2], [1e-9], [1 - 1e-9], [0.5], [0.03]], np.float32)
run("binary_crossentropy", "binary_crossentropy", {"from_logits": False},
    {"y_true": y_true, "y_pred": y_pred},
    lambda y_true, y_pred: keras.losses.BinaryCrossentropy()(y_true, y_pred), ["y_pred"], upstream=one)

p = tf.nn.softmax(normal(4, 5) * 2).numpy()
p[0] = [1e-9, 1 - 4e-9, 1e-9, 1e-9, 1e-9]  # label prob rounds to 1.0: clipped at 1 - 1e-7
p[1] = [1e-9, 0.5, 0.3, 0.15, 0.05]  # label prob 1e-9: clipped at 1e-7, the other entries not
labels = np.array([1, 0, 3, 4])
onehot = np.eye(5, dtype=np.float32)[labels]
run("categorical_crossentropy", "categorical_crossentropy", {"from_logits": False},
    {"y_true": onehot, "y_pred": p},
    lambda y_true, y_pred: keras.losses.CategoricalCrossentropy()(y_true, y_pred), ["y_pred"], upstream=one)
run("sparse_categorical_crossentropy", "sparse_categorical_crossentropy", {"from_logits": False},
    {"y_true": labels.astype(np.float32), "y_pred": p},
    lambda y_true, y_pred: keras.losses.SparseCategoricalCrossentropy()(y_true, y_pred), ["y_pred"], upstream=one)

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden.json")
with open(out, "w") as f:
    json.dump({"tensorflow_version": tf.__version__, "keras_version": keras.__version__, "cases": cases}, f)
print(f"wrote {len(cases)} cases to {out}")
