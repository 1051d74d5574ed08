"""``fundus-vlp demo`` (being assembled)."""
from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    p = sub.add_parser("demo", help="(not available yet) run the demo")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print("fundus-vlp demo: not available yet", file=sys.stderr)
    return 2
