#!/usr/bin/env python3
"""Checks the house's layering (docs/architecture.md): a folder's sources include only from
their own folder and from lower floors, and the libraries link the same way. Prints every
include that goes sideways or up and exits 1 if there is one.

    scripts/check-layers.py [REPO]
"""
import os
import re
import subprocess
import sys

# Lowest first. A folder may use folders on lower floors only (never its own floor's others).
FLOORS = {
    "base": 0,
    "security": 1, "data": 1, "model": 1, "privacy": 1,
    "nn": 2, "protocols": 2, "store": 2,
    "evaluator": 3,
    "coordinator": 4, "worker": 4,
    "tools": 5, "bench": 5,
}
INCLUDE = re.compile(r'^\s*#\s*include\s+"([a-z_]+)/')


def main():
    repo = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    files = subprocess.check_output(["git", "-C", repo, "ls-files", "*.h", "*.cc"],
                                    text=True).split()
    bad = []
    for f in files:
        top = f.split("/")[0]
        if top not in FLOORS:
            continue  # tests/, fuzz/: they may use anything
        with open(os.path.join(repo, f), encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                m = INCLUDE.match(line)
                if not m or m.group(1) not in FLOORS or m.group(1) == top:
                    continue
                if FLOORS[m.group(1)] >= FLOORS[top]:
                    bad.append(f"{f}:{n}: {top} (floor {FLOORS[top]}) includes {m.group(1)} "
                               f"(floor {FLOORS[m.group(1)]}): {line.strip()}")
    for b in bad:
        print(b)
    print(f"check-layers: {len(files)} files, {len(bad)} includes against the floors")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
