#!/usr/bin/python3
"""Evaluates an exported Shoal model (TorchScript) on the Fashion-MNIST test set from Python.

Usage: check_export.py MODEL_PT DATA_DIR [--batch N] [--limit N]

Loads MODEL_PT with torch.jit.load, reads DATA_DIR/t10k-images-idx3-ubyte.gz and
t10k-labels-idx1-ubyte.gz with gzip + numpy, scales pixels by 1/255 as model.json's
preprocessing says, and prints one JSON object: {"accuracy", "correct", "count", "batch"}.
Exits 2 with a message on stderr when a file is missing or malformed.
"""
import argparse
import gzip
import json
import os
import sys

import numpy as np
import torch


def read_idx(path, expected_magic, expected_dims):
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 + 4 * expected_dims:
        raise ValueError(f"{path}: truncated header")
    magic = int.from_bytes(data[0:4], "big")
    if magic != expected_magic:
        raise ValueError(f"{path}: magic {magic:#x}, expected {expected_magic:#x}")
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(expected_dims)]
    offset = 4 + 4 * expected_dims
    count = int(np.prod(dims))
    if len(data) - offset != count:
        raise ValueError(f"{path}: {len(data) - offset} data bytes, expected {count}")
    return np.frombuffer(data, dtype=np.uint8, offset=offset).reshape(dims)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("data_dir")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--limit", type=int, default=0)
    args = parser.parse_args()

    try:
        images = read_idx(os.path.join(args.data_dir, "t10k-images-idx3-ubyte.gz"), 0x803, 3)
        labels = read_idx(os.path.join(args.data_dir, "t10k-labels-idx1-ubyte.gz"), 0x801, 1)
    except (OSError, ValueError) as e:
        print(f"check_export.py: {e}", file=sys.stderr)
        return 2
    if images.shape[0] != labels.shape[0]:
        print("check_export.py: image and label counts differ", file=sys.stderr)
        return 2
    if args.limit > 0:
        images, labels = images[: args.limit], labels[: args.limit]

    torch.set_num_threads(1)
    model = torch.jit.load(args.model)
    model.eval()
    x_all = torch.from_numpy(images.astype(np.float32) / np.float32(255.0)).unsqueeze(1)
    y_all = torch.from_numpy(labels.astype(np.int64))
    correct = 0
    with torch.no_grad():
        for start in range(0, x_all.shape[0], args.batch):
            logits = model(x_all[start:start + args.batch])
            correct += int((logits.argmax(1) == y_all[start:start + args.batch]).sum())
    count = int(y_all.shape[0])
    print(json.dumps({"accuracy": correct / count, "correct": correct, "count": count,
                      "batch": args.batch}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
