#!/usr/bin/python3
"""Bring-your-own-model helper for byo_model_test.

Usage:
  byo_model.py make OUT [--variant tanh_mlp|wrong_classes|batchnorm] [--seed N]
      Scripts a model that is not one of Shoal's built-ins and saves it with torch.jit.save.
      tanh_mlp: 784-64-10 MLP with a tanh; wrong_classes: the same with 5 outputs;
      batchnorm: an MLP with a BatchNorm1d (has buffers, which Shoal refuses).
  byo_model.py check MODEL EXPECTED_JSON
      Loads MODEL with torch.jit.load and compares its state_dict with the tensors
      EXPECTED_JSON lists ({"tensors": [{"name", "shape"}], "data": FILE}: FILE holds their
      float32 values, little-endian, back to back in list order). Prints one JSON object
      {"equal", "tensors", "mismatches", "class", "training"}; exits 1 when they differ.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch


class TanhMlp(torch.nn.Module):
    def __init__(self, classes: int):
        super().__init__()
        self.hidden = torch.nn.Linear(784, 64)
        self.out = torch.nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.tanh(self.hidden(x.flatten(1))))


class BatchNormMlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = torch.nn.Linear(784, 32)
        self.norm = torch.nn.BatchNorm1d(32)
        self.out = torch.nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.norm(self.hidden(x.flatten(1)))))


def make(args):
    torch.manual_seed(args.seed)
    if args.variant == "tanh_mlp":
        model = TanhMlp(10)
    elif args.variant == "wrong_classes":
        model = TanhMlp(5)
    else:
        model = BatchNormMlp()
    torch.jit.save(torch.jit.script(model), args.out)
    print(json.dumps({"out": args.out, "variant": args.variant,
                      "parameters": [n for n, _ in model.named_parameters()]}))
    return 0


def check(args):
    with open(args.expected) as f:
        expected = json.load(f)
    data_path = os.path.join(os.path.dirname(args.expected), expected["data"])
    values = np.fromfile(data_path, dtype="<f4")
    model = torch.jit.load(args.model)
    state = model.state_dict()
    mismatches = []
    offset = 0
    names = []
    for t in expected["tensors"]:
        name, shape = t["name"], t["shape"]
        names.append(name)
        n = int(np.prod(shape)) if shape else 1
        want = torch.from_numpy(values[offset:offset + n].copy()).reshape(shape)
        offset += n
        if name not in state:
            mismatches.append(f"{name}: missing from the state_dict")
        elif list(state[name].shape) != list(shape):
            mismatches.append(f"{name}: shape {list(state[name].shape)}, expected {shape}")
        elif state[name].dtype != torch.float32:
            mismatches.append(f"{name}: dtype {state[name].dtype}")
        elif not torch.equal(state[name], want):
            diff = (state[name] - want).abs().max().item()
            mismatches.append(f"{name}: values differ (max abs diff {diff})")
    if offset != values.size:
        mismatches.append(f"{data_path} holds {values.size} values, the tensors {offset}")
    extra = sorted(set(state) - set(names))
    if extra:
        mismatches.append(f"state_dict has entries not in the version: {extra}")
    print(json.dumps({"equal": not mismatches, "tensors": list(state), "mismatches": mismatches,
                      "class": model.original_name, "training": model.training}))
    return 0 if not mismatches else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("make")
    p.add_argument("out")
    p.add_argument("--variant", choices=["tanh_mlp", "wrong_classes", "batchnorm"],
                   default="tanh_mlp")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("check")
    p.add_argument("model")
    p.add_argument("expected")
    args = parser.parse_args()
    torch.set_num_threads(1)
    return make(args) if args.command == "make" else check(args)


if __name__ == "__main__":
    sys.exit(main())
