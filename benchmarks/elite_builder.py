"""Speed of ``build-elite``: pages per second on a generated atlas PDF (tiny demo world figures).

    python benchmarks/elite_builder.py [--chapters 6] [--picture-side 512] [--repeats 3]

A chapter is 9 pages (13 fundus pictures, a table, a drawing, a vector figure, a repeated picture); the
default of 6 chapters is a 54-page PDF. The PDF is written first and is not timed; each timed run builds
into a fresh output folder. Prints the median wall and CPU time over the repeats (one process, one
core: the CPU figure is what a machine not shared with other jobs would see).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chapters", type=int, default=6)
    parser.add_argument("--picture-side", type=int, default=512, help="pixels a side of each embedded picture")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from fundus_vlp.demo_world.presets import demo_world_cfg
    from fundus_vlp.demo_world import build_demo_world
    from fundus_vlp.elite_builder import build_elite
    from fundus_vlp.elite_builder.sample_atlas import write_sample_atlas

    world = build_demo_world(demo_world_cfg("tiny", 0))
    with tempfile.TemporaryDirectory() as tmp:
        atlas = write_sample_atlas(world, Path(tmp) / "atlas.pdf", chapters=args.chapters,
                                   picture_side=args.picture_side)
        size_mb = atlas.path.stat().st_size / 1e6
        times, cpu, report = [], [], None
        for k in range(args.repeats):
            start, start_cpu = time.perf_counter(), time.process_time()
            report = build_elite([atlas.path], Path(tmp) / f"out{k}")
            times.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
        t, c = statistics.median(times), statistics.median(cpu)
        print(f"PDF: {atlas.pages} pages, {size_mb:.1f} MB, pictures {args.picture_side or 'native'} px")
        print(f"build-elite: wall {t:.2f} s ({atlas.pages / t:.1f} pages/s), CPU {c:.2f} s "
              f"({atlas.pages / c:.1f} pages/s per core), median of {args.repeats}; "
              f"{report.pairs} pairs, {report.rejected} rejected")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
