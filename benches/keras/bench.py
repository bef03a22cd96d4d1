"""The Keras side of `cargo xtask bench --against-keras`: the figures of
issue 7 measured with TensorFlow/Keras, printed in the same form as
`cargo xtask bench` prints ours (`basic_cnn train: 123.4 images/s`).

    pip install tensorflow-cpu pillow scipy
    python3 benches/keras/bench.py [basic_cnn] [inception] [augmented]

Each figure is the median of several timed repetitions after a warm-up,
batch 32, 150x150x3, on in-memory random data (as ours). Peak memory is the
process's VmHWM after building and training the basic CNN in a fresh
interpreter (`--memory-child`). `augmented` times one epoch of the mission's
second program (100 steps x 32 from a JPEG folder through ImageDataGenerator
with shift/shear/zoom 0.2) from `--dir DIR` (a Kaggle-layout folder), by
default data/cats_and_dogs_filtered when fetched, else the bundled
data/sample, as `cargo xtask bench augmented` does.
"""
import os
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

BATCH, SIDE = 32, 150


def median_secs(warmup, reps, f):
    for _ in range(warmup):
        f()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    times.sort()
    return times[len(times) // 2]


def basic_cnn():
    L = keras.layers
    m = keras.Sequential([
        keras.Input((SIDE, SIDE, 3)),
        L.Conv2D(32, 3, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(128, 3, activation="relu"), L.MaxPooling2D(2),
        L.Flatten(), L.Dense(128, activation="relu"), L.Dense(512, activation="relu"),
        L.Dense(1, activation="sigmoid")])
    m.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    return m


def batch():
    rng = np.random.default_rng(11)
    x = rng.random((BATCH, SIDE, SIDE, 3), dtype=np.float32)
    y = (np.arange(BATCH) % 2).astype(np.float32).reshape(BATCH, 1)
    return x, y


def peak_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return -(-int(line.split()[1]) // 1024)
    return None


def bench_basic_cnn():
    m = basic_cnn()
    x, y = batch()
    train = median_secs(2, 7, lambda: m.train_on_batch(x, y))
    print(f"basic_cnn train: {BATCH / train:.1f} images/s", flush=True)
    predict = median_secs(2, 9, lambda: m.predict_on_batch(x))
    print(f"basic_cnn predict: {BATCH / predict:.1f} images/s", flush=True)
    out = subprocess.run([sys.executable, __file__, "--memory-child"],
                         capture_output=True, text=True, check=True)
    print(out.stdout, end="", flush=True)


def memory_child():
    m = basic_cnn()
    x, y = batch()
    for _ in range(5):
        m.train_on_batch(x, y)
    print(f"peak memory basic_cnn train: {peak_mib()} MiB")


def bench_inception():
    base = keras.applications.InceptionV3(input_shape=(SIDE, SIDE, 3), include_top=False,
                                          weights=None)
    for layer in base.layers:
        layer.trainable = False
    cut = keras.Model(base.input, base.get_layer("mixed7").output)
    x, y = batch()
    fwd = median_secs(2, 5, lambda: cut.predict_on_batch(x))
    print(f"inception mixed7 forward: {BATCH / fwd:.1f} images/s", flush=True)
    h = keras.layers.Flatten()(cut.output)
    h = keras.layers.Dense(1024, activation="relu")(h)
    h = keras.layers.Dropout(0.2)(h)
    h = keras.layers.Dense(1, activation="sigmoid")(h)
    model = keras.Model(base.input, h)
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=1e-4),
                  loss="binary_crossentropy", metrics=["accuracy"])
    train = median_secs(2, 5, lambda: model.train_on_batch(x, y))
    print(f"inception transfer train: {BATCH / train:.1f} images/s", flush=True)


def bench_augmented(folder):
    from keras.src.legacy.preprocessing.image import ImageDataGenerator
    gen = ImageDataGenerator(rescale=1 / 255, width_shift_range=0.2, height_shift_range=0.2,
                             shear_range=0.2, zoom_range=0.2)
    train = os.path.join(folder, "train") if os.path.isdir(os.path.join(folder, "train")) else folder
    flow = gen.flow_from_directory(train, target_size=(SIDE, SIDE), batch_size=BATCH,
                                   class_mode="binary")
    m = basic_cnn()

    # Keras 3 stops an epoch when a PyDataset runs out (63 batches of the
    # 2000 images here), whatever steps_per_epoch says; Keras 2's iterator,
    # and ours, continue into the next pass. A generator over the endless
    # iterator gives Keras the same 100 steps of 32 images as ours.
    def endless():
        while True:
            yield next(flow)

    m.fit(endless(), epochs=1, steps_per_epoch=5, verbose=0)  # warm-up
    t = time.perf_counter()
    m.fit(endless(), epochs=1, steps_per_epoch=100, verbose=0)
    print(f"augmented epoch: {time.perf_counter() - t:.1f} s", flush=True)


def main(args):
    if args[:1] == ["--memory-child"]:
        memory_child()
        return
    # convnet's `inception --half` (its frozen base in half precision) is
    # compared with Keras's float32 figures: nothing changes on this side.
    args = [a for a in args if a != "--half"]
    folder = None
    if "--dir" in args:
        i = args.index("--dir")
        folder = args[i + 1]
        del args[i:i + 2]
    tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count())
    if folder is None:
        root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
        fetched = os.path.join(root, "data", "cats_and_dogs_filtered")
        folder = fetched if os.path.isdir(fetched) else os.path.join(root, "data", "sample")
    targets = args or ["basic_cnn", "inception", "augmented"]
    for t in targets:
        if t == "basic_cnn":
            bench_basic_cnn()
        elif t == "inception":
            bench_inception()
        elif t == "augmented":
            bench_augmented(folder)
        else:
            sys.exit(f"unknown target {t}")


if __name__ == "__main__":
    main(sys.argv[1:])
