"""``fundus-vlp prepare``: pre-resize a dataset into a cache that training reads."""
from __future__ import annotations

import argparse
import json

HELP = """Pre-resize every image of the given dataframes once (pad-to-square at --size, optional field-of-view
crop) into --out, with a worker pool and a progress bar. Resumable: re-running skips what is done. Bad
images are skipped and reported with their dataframe row. Train on the cache with the same dataframes and
root=<out> (fundus_vlp_cache.json maps the original paths).

  fundus-vlp prepare --root /data/FUNDUS --dataframe dataframes/pretraining/*.csv --out /data/cache512 --size 512
"""


def register(sub) -> None:
    p = sub.add_parser("prepare", help="pre-resize images into a training cache", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="original image root")
    p.add_argument("--dataframe", nargs="+", required=True, help="categorical or caption CSVs")
    p.add_argument("--out", required=True, help="cache folder")
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--fov-crop", action="store_true", help="crop to the field of view before resizing")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: one per usable core)")
    p.add_argument("--json", default=None, help="write the report (incl. bad images) to this file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.prepare import prepare_dataset
    from ..runtime.files import write_text_atomic

    r = prepare_dataset(args.root, args.dataframe, args.out, args.size, args.fov_crop, args.workers)
    print(f"images: {r.total}  written: {r.written}  already cached: {r.reused}  bad: {len(r.bad)}")
    for b in r.bad[:100]:
        print(f"  skipped {b['image']} ({b['where']}): {b['reason']}")
    if len(r.bad) > 100:
        print(f"  ... {len(r.bad) - 100} more (see --json)")
    print(f"cache: {r.out} (train with root={r.out})")
    if args.json:
        write_text_atomic(args.json, json.dumps({"total": r.total, "written": r.written, "reused": r.reused,
                                                 "bad": r.bad}, indent=2))
    return 0
