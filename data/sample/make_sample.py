#!/usr/bin/env python3
"""Build the bundled sample: two Fashion-MNIST classes in the Kaggle
Cats-vs-Dogs folder layout, as 28x28 greyscale PNG files.

    train/sandals/    1000 images  (Fashion-MNIST class 5, training set)
    train/sneakers/   1000 images  (class 7, training set)
    validation/sandals/   500 images (class 5, test set)
    validation/sneakers/  500 images (class 7, test set)

Source: Debian's `dataset-fashion-mnist` package (MIT licensed,
Zalando Research), `apt-get install -y dataset-fashion-mnist`.
Standard library only; the output is byte-for-byte reproducible.

    python3 data/sample/make_sample.py [/usr/share/datasets/fashion-mnist]
"""
import gzip
import os
import struct
import sys
import zlib

CLASSES = {5: "sandals", 7: "sneakers"}
COUNTS = {"train": 1000, "validation": 500}
SPLIT_FILES = {"train": "train", "validation": "t10k"}


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return dims, data[4 + 4 * ndim:]


def png_gray(width, height, pixels):
    """A minimal 8-bit greyscale PNG (filter type 0 on every row)."""
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    raw = b"".join(b"\x00" + pixels[y * width:(y + 1) * width] for y in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
    out = os.path.dirname(os.path.abspath(__file__))
    for split, stem in SPLIT_FILES.items():
        (n, h, w), images = read_idx(os.path.join(src, f"{stem}-images-idx3-ubyte.gz"))
        (_,), labels = read_idx(os.path.join(src, f"{stem}-labels-idx1-ubyte.gz"))
        for label, name in CLASSES.items():
            folder = os.path.join(out, split, name)
            os.makedirs(folder, exist_ok=True)
            taken = 0
            for i in range(n):
                if labels[i] != label:
                    continue
                pixels = images[i * h * w:(i + 1) * h * w]
                path = os.path.join(folder, f"{name[:-1]}.{taken}.png")
                with open(path, "wb") as f:
                    f.write(png_gray(w, h, pixels))
                taken += 1
                if taken == COUNTS[split]:
                    break
            print(f"{split}/{name}: {taken} images")


if __name__ == "__main__":
    main()
