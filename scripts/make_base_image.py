#!/usr/bin/env python3
"""Push the busybox base image (made from Debian's busybox-static) to a registry.

There is no Docker Hub here: the examples build FROM this image. It is pushed
as REGISTRY/kanipy-test/busybox with tags :oci, :docker and :multi (see
tests/fixtures/images.py, which makes it without using kanipy).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures.images import build_and_push_busybox  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--registry", required=True, help="HOST:PORT of a plain-HTTP registry")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        refs = build_and_push_busybox(Path(tmp), args.registry)
    print(refs.oci)


if __name__ == "__main__":
    main()
