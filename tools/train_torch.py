"""PyTorch reference run: train the tutorial CustomCNN on full Fashion-MNIST, to compare with cnnc.

Trains tools/custom_cnn.py's CustomCNN with the settings cnnc's `train` command defaults to (SGD
lr 0.01 momentum 0.9, batch 64, shuffled each epoch) on the data prepared as
/work/shared/data/README.md says: each 28x28 image padded by 2 zero pixels per side, the grey channel
repeated 3 times, scaled to [0,1] and normalised with mean 0.2860 std 0.3530 (padding included, so
padded pixels become -mean/std). Prints per epoch the test accuracy and the training and evaluation
seconds separately, on 2 threads. Reads the gzip IDX files directly (torchvision is not needed).

    tools/.venv/bin/python tools/train_torch.py [--data DIR] [--epochs 5] [--seed 0] [--threads 2]

DIR defaults to /usr/share/datasets/fashion-mnist (Debian's dataset-fashion-mnist package).
"""

import argparse
import gzip
import struct
import sys
import time
from pathlib import Path

try:
    import numpy as np
    import torch
    from torch import nn
except ImportError as err:
    sys.exit(f"train_torch.py needs numpy and torch ({err}); install them in tools/.venv first")

from custom_cnn import CustomCNN

MEAN = 0.2860
STD = 0.3530
IMAGE_MAGIC = 0x00000803
LABEL_MAGIC = 0x00000801


def read_idx(path, magic):
    """Return the u8 payload of a gzip IDX file as an array shaped by its header."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    found, = struct.unpack(">I", data[:4])
    if found != magic:
        sys.exit(f"{path}: IDX magic {found:#010x}, expected {magic:#010x}")
    ndim = magic & 0xFF
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    payload = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if payload.size != int(np.prod(dims)):
        sys.exit(f"{path}: {payload.size} bytes of data, header says {dims}")
    return payload.reshape(dims)


def load_split(data_dir, prefix):
    """Images as normalised float32 N x 3 x 32 x 32 and labels as int64, for 'train' or 't10k'."""
    images = read_idx(data_dir / f"{prefix}-images-idx3-ubyte.gz", IMAGE_MAGIC)
    labels = read_idx(data_dir / f"{prefix}-labels-idx1-ubyte.gz", LABEL_MAGIC)
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2))).astype(np.float32) / 255.0
    normalised = (padded - MEAN) / STD
    x = np.repeat(normalised[:, None, :, :], 3, axis=1)
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(labels.astype(np.int64))


def evaluate(model, x, y, batch_size):
    """Accuracy in percent over the whole split."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            logits = model(x[start : start + batch_size])
            correct += (logits.argmax(1) == y[start : start + batch_size]).sum().item()
    return 100.0 * correct / len(x)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x_train, y_train = load_split(args.data, "train")
    x_test, y_test = load_split(args.data, "t10k")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{len(x_train)} training / {len(x_test)} test images")

    model = CustomCNN()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(args.seed)
    print("epoch,test_acc,train_s,eval_s")
    for epoch in range(1, args.epochs + 1):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(x_train), generator=generator)
        for first in range(0, len(order), args.batch_size):
            idx = order[first : first + args.batch_size]
            optimizer.zero_grad()
            loss_fn(model(x_train[idx]), y_train[idx]).backward()
            optimizer.step()
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        acc = evaluate(model, x_test, y_test, 1000)
        eval_s = time.perf_counter() - start
        print(f"{epoch},{acc:.2f},{train_s:.1f},{eval_s:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
