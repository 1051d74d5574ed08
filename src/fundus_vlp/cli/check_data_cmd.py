"""``fundus-vlp check-data``: validate dataframes and images before a long run."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = """Validate a dataset up front: parse every dataframe (categorical `image, atributes, categories` or
image-caption files), check every image path stays inside the root, and decode every image. Prints rows,
classes and every missing/corrupt file with its dataframe row. Exit status 1 if anything is wrong.

  fundus-vlp check-data --root /data/FUNDUS --dataframe dataframes/pretraining/*.csv
"""


def register(sub) -> None:
    p = sub.add_parser("check-data", help="validate dataframes and images", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="image root; dataframe paths are relative to it")
    p.add_argument("--dataframe", nargs="+", required=True, help="CSV files")
    p.add_argument("--kind", choices=("auto", "categorical", "captions"), default="auto")
    p.add_argument("--no-decode", action="store_true", help="only parse the dataframes and resolve paths")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--json", default=None, help="write the full report to this file")
    p.add_argument("--top", type=int, default=15, help="how many classes to list")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..data.check import check_dataset

    report = check_dataset(args.root, args.dataframe, args.kind, args.workers, decode=not args.no_decode)
    print(f"dataframes: {len(report.kinds)} ({', '.join(sorted(set(report.kinds.values()))) or 'none readable'})")
    print(f"rows: {report.rows}   images decoded OK: {report.images_ok}")
    if report.classes:
        print(f"classes: {len(report.classes)} distinct category strings; most frequent:")
        for name, count in report.classes.most_common(args.top):
            print(f"  {count:7d}  {name}")
    if report.problems:
        print(f"problems: {len(report.problems)}")
        for p in report.problems[:200]:
            print(f"  {p.where}: {p.path} {p.reason}".rstrip())
        if len(report.problems) > 200:
            print(f"  ... {len(report.problems) - 200} more (see --json)")
    else:
        print("problems: none")
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2))
    return 0 if report.ok else 1
