#!/usr/bin/env python3
"""Regenerate app/grpc_proto's Python stubs from its .proto files (benchkit.grpc_stubs)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchkit.grpc_stubs import PROTO_DIR, generate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=PROTO_DIR)
    args = parser.parse_args()
    for path in generate(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
