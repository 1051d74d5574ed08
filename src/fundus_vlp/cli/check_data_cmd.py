"""``fundus-vlp check-data``: validate dataframes and images before a long run."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = """Validate a dataset up front: parse every dataframe (categorical `image, atributes, categories` or
image-caption files; the kind is read from the columns), check every image path stays inside the root,
exists, is non-empty and readable, and decode every image (JPEGs at reduced size, which still reads every
compressed block). Prints rows, classes and every problem with its dataframe file and row; nothing stops at
the first problem. Exit status 1 if anything is wrong. See docs/data.md, "What we check, and when".

  fundus-vlp check-data --root /data/FUNDUS --dataframe dataframes/pretraining/*.csv
  fundus-vlp check-data --root /data/FUNDUS --dataframe chinese.csv --encoding gb18030 --no-decode
"""
MAX_PRINTED = 200


def register(sub) -> None:
    from ..constants import DEFAULT_MAX_IMAGE_PIXELS

    p = sub.add_parser("check-data", help="validate dataframes and images", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="image root; dataframe paths are relative to it")
    p.add_argument("--dataframe", nargs="+", required=True, help="CSV files")
    p.add_argument("--kind", choices=("auto", "categorical", "captions"), default="auto")
    p.add_argument("--no-decode", action="store_true",
                   help="do not decode images; still resolve every path and check it exists, is non-empty and readable")
    p.add_argument("--workers", type=int, default=None, help="parallel checks (default: the usable CPU cores)")
    p.add_argument("--encoding", default="utf-8",
                   help="text encoding of the CSVs (utf-8 with or without BOM by default; e.g. latin-1, gb18030)")
    p.add_argument("--on-empty-caption", choices=("error", "skip"), default="error",
                   help="empty captions are problems (error) or dropped rows, counted (skip)")
    p.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS,
                   help=f"larger images are bad (decompression bombs); default {DEFAULT_MAX_IMAGE_PIXELS:,}")
    p.add_argument("--json", default=None, help="write the full report to this file")
    p.add_argument("--top", type=int, default=15, help="how many classes to list")
    p.set_defaults(func=run)


def print_report(report, top: int = 15) -> None:
    """The human-readable report of ``check_dataset`` / ``check_sources`` (shared with ``pretrain --dry-run``)."""
    print(f"dataframes: {len(report.kinds)} ({', '.join(sorted(set(report.kinds.values()))) or 'none readable'})")
    verb = "decoded" if report.decoded else "present and readable (not decoded)"
    print(f"rows: {report.rows}   images {verb}: {report.images_ok}")
    if report.skipped_empty_captions:
        print(f"rows dropped for an empty caption (on_empty_caption=skip): {report.skipped_empty_captions}")
    if report.classes:
        print(f"classes: {len(report.classes)} distinct category strings; most frequent:")
        for name, count in report.classes.most_common(top):
            print(f"  {count:7d}  {name}")
    if report.problem_count:
        print(f"problems: {report.problem_count}")
        for p in report.problems[:MAX_PRINTED]:
            print(f"  {p}")
        if report.problem_count > MAX_PRINTED:
            print(f"  ... {report.problem_count - MAX_PRINTED} more (see --json)")
    else:
        print("problems: none")


def run(args: argparse.Namespace) -> int:
    from ..data.check import check_dataset

    report = check_dataset(args.root, args.dataframe, args.kind, args.workers, decode=not args.no_decode,
                           encoding=args.encoding, on_empty_caption=args.on_empty_caption,
                           max_pixels=args.max_image_pixels)
    print_report(report, args.top)
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2))
    return 0 if report.ok else 1
