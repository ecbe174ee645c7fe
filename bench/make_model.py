#!/usr/bin/python3
"""Writes the bench's large bring-your-own model: a 784-8192-2304-10 ReLU MLP scripted with
TorchScript (about 25.3M float32 parameters, 101 MB), for the bytes-on-the-wire section.

Usage: make_model.py OUT.pt   (needs Debian's python3-torch)
"""
import sys

import torch


class WideMlp(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(784, 8192)
        self.fc2 = torch.nn.Linear(8192, 2304)
        self.fc3 = torch.nn.Linear(2304, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.fc1(x.flatten(1)))
        return self.fc3(torch.relu(self.fc2(x)))


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    torch.manual_seed(1)
    model = WideMlp()
    torch.jit.save(torch.jit.script(model), sys.argv[1])
    print(sum(p.numel() for p in model.parameters()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
