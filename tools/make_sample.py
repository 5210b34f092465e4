#!/usr/bin/env python3
"""Regenerate data/fashion-mnist-sample/ from Debian's full Fashion-MNIST.

The sample is class-balanced and keeps the original order: the first 600 training
images of each class (6,000 in all) and the first 100 test images of each class
(1,000 in all), written in the original IDX format, gzip-compressed with a zero
timestamp so that the output is byte-for-byte reproducible.

Usage: python3 tools/make_sample.py [SOURCE_DIR] [OUT_DIR]
  SOURCE_DIR defaults to /usr/share/datasets/fashion-mnist
  (apt-get install dataset-fashion-mnist), OUT_DIR to data/fashion-mnist-sample.
Standard library only; tested with Python 3.11.
"""

import gzip
import hashlib
import os
import struct
import sys

TRAIN_PER_CLASS = 600
TEST_PER_CLASS = 100
CLASSES = 10


def read_idx(path, magic):
    with gzip.open(path, "rb") as f:
        data = f.read()
    (found,) = struct.unpack(">I", data[:4])
    if found != magic:
        sys.exit(f"{path}: magic 0x{found:08x}, expected 0x{magic:08x}")
    ndims = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndims, data[4 : 4 + 4 * ndims])
    payload = data[4 + 4 * ndims :]
    record = 1
    for d in dims[1:]:
        record *= d
    if len(payload) != dims[0] * record:
        sys.exit(f"{path}: payload is {len(payload)} bytes, expected {dims[0] * record}")
    return dims, [payload[i * record : (i + 1) * record] for i in range(dims[0])]


def write_idx(path, magic, dims, records):
    header = struct.pack(">I" + "I" * len(dims), magic, *dims)
    # mtime=0 and no file name in the header: the same input always gives the same bytes.
    with open(path, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", compresslevel=9, fileobj=raw, mtime=0) as f:
            f.write(header)
            for r in records:
                f.write(r)


def subset(src, out, prefix, per_class):
    img_dims, images = read_idx(os.path.join(src, f"{prefix}-images-idx3-ubyte.gz"), 0x803)
    _, labels = read_idx(os.path.join(src, f"{prefix}-labels-idx1-ubyte.gz"), 0x801)
    taken = [0] * CLASSES
    keep = []
    for i, label in enumerate(labels):
        c = label[0]
        if taken[c] < per_class:
            taken[c] += 1
            keep.append(i)
    if taken != [per_class] * CLASSES:
        sys.exit(f"{prefix}: not enough images per class: {taken}")
    n = len(keep)
    write_idx(
        os.path.join(out, f"{prefix}-images-idx3-ubyte.gz"),
        0x803,
        (n, img_dims[1], img_dims[2]),
        [images[i] for i in keep],
    )
    write_idx(os.path.join(out, f"{prefix}-labels-idx1-ubyte.gz"), 0x801, (n,), [labels[i] for i in keep])
    return n, keep[-1]


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
    out = sys.argv[2] if len(sys.argv) > 2 else "data/fashion-mnist-sample"
    os.makedirs(out, exist_ok=True)
    for prefix, per_class in (("train", TRAIN_PER_CLASS), ("t10k", TEST_PER_CLASS)):
        n, last = subset(src, out, prefix, per_class)
        print(f"{prefix}: {n} images (indices up to {last} of the original set)")
    for name in sorted(os.listdir(out)):
        if name.endswith(".gz"):
            path = os.path.join(out, name)
            with open(path, "rb") as f:
                gz = f.read()
            raw = gzip.decompress(gz)
            print(
                f"{name}: {len(gz)} bytes, sha256 {hashlib.sha256(gz).hexdigest()}, "
                f"uncompressed {len(raw)} bytes, md5 {hashlib.md5(raw).hexdigest()}"
            )


if __name__ == "__main__":
    main()
