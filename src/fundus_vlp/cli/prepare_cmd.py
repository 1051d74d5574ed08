"""``fundus-vlp prepare``: pre-resize a dataset into a cache (issue 5: not available yet)."""
from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    p = sub.add_parser("prepare", help="(not available yet) pre-resize images into a training cache",
                       description="NOT AVAILABLE YET: will pre-resize a dataset (pad-to-square, optional FOV crop) "
                                   "into a cache that training reads.")
    p.add_argument("args", nargs="*")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print("fundus-vlp prepare: not available yet in this version.", file=sys.stderr)
    return 2
