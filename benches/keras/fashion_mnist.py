"""The Keras side of the Fashion-MNIST comparison in README.md: the same model
and settings as examples/fashion_mnist.rs, timed by Keras's own epoch lines.

    pip install tensorflow-cpu
    python3 benches/keras/fashion_mnist.py
"""
import gzip, time, numpy as np, os
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf, keras
d = "/usr/share/datasets/fashion-mnist/"
def imgs(f):
    with gzip.open(d + f) as g: return np.frombuffer(g.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1).astype("float32") / 255
def labs(f):
    with gzip.open(d + f) as g: return np.frombuffer(g.read(), np.uint8, offset=8)
x, y = imgs("train-images-idx3-ubyte.gz"), labs("train-labels-idx1-ubyte.gz")
xt, yt = imgs("t10k-images-idx3-ubyte.gz"), labs("t10k-labels-idx1-ubyte.gz")
m = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(),
    keras.layers.Conv2D(64, 3, activation="relu"), keras.layers.MaxPooling2D(), keras.layers.Flatten(),
    keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10, activation="softmax")])
m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
m.fit(x, y, batch_size=64, epochs=int(os.environ.get("EPOCHS", "5")), verbose=2)
print("test", m.evaluate(xt, yt, verbose=0))
